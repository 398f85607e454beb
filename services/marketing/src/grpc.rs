//! gRPC services: `marketing.v1.CampaignAdmin` (for the operator) and `marketing.v1.Vouchers`
//! (for ordering). tonic enforces the caller's `grpc-timeout`.

use chrono::{DateTime, Utc};
use pulse_proto::marketing::v1 as pb;
use pulse_proto::time::{from_timestamp, to_timestamp};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::campaigns::{CampaignError, CampaignStatus, Campaigns};
use crate::domain::{self, CampaignSpec, Phase, Rejection};
use crate::store::{Store, StoreError};

/// A required timestamp field of a request.
fn required_time(field: &str, ts: Option<prost_types::Timestamp>) -> Result<DateTime<Utc>, Status> {
    let ts = ts.ok_or_else(|| Status::invalid_argument(format!("`{field}` is required")))?;
    from_timestamp(&ts).map_err(|err| Status::invalid_argument(format!("`{field}`: {err}")))
}

fn phase(phase: Phase) -> pb::CampaignPhase {
    match phase {
        Phase::Scheduled => pb::CampaignPhase::Scheduled,
        Phase::Active => pb::CampaignPhase::Active,
        Phase::SoldOut => pb::CampaignPhase::SoldOut,
        Phase::Ended => pb::CampaignPhase::Ended,
    }
}

fn status_message(status: CampaignStatus) -> Result<pb::CampaignStatus, Status> {
    let counts = status
        .counts
        .ok_or_else(|| Status::unavailable("campaign counters unavailable (Redis)"))?;
    Ok(pb::CampaignStatus {
        campaign_id: status.row.id.clone(),
        phase: phase(status.phase).into(),
        stock: status.row.stock_u32(),
        sold: counts.sold,
        remaining: counts.remaining,
        starts_at: Some(to_timestamp(status.row.starts_at)),
        ends_at: Some(to_timestamp(status.row.ends_at)),
        closed: status.row.closed_at.is_some(),
    })
}

/// `UNAVAILABLE` for the database outages that HTTP answers with 503, `INTERNAL` for any other
/// failure ([`pulse_kit::grpc::status_from_error`]).
impl From<StoreError> for Status {
    fn from(err: StoreError) -> Self {
        pulse_kit::grpc::status_from_error(&err)
    }
}

impl From<CampaignError> for Status {
    fn from(err: CampaignError) -> Self {
        match err {
            CampaignError::NotFound(_) => Status::not_found(err.to_string()),
            CampaignError::Invalid(invalid) => Status::invalid_argument(invalid.to_string()),
            CampaignError::Redis(err) => Status::unavailable(format!("Redis unavailable: {err}")),
            CampaignError::Store(err) => err.into(),
        }
    }
}

/// `marketing.v1.CampaignAdmin`.
pub struct CampaignAdminService {
    campaigns: Campaigns,
}

impl CampaignAdminService {
    /// Over the campaign administration.
    pub fn new(campaigns: Campaigns) -> Self {
        Self { campaigns }
    }
}

#[tonic::async_trait]
impl pb::campaign_admin_server::CampaignAdmin for CampaignAdminService {
    async fn upsert(
        &self,
        request: Request<pb::UpsertCampaignRequest>,
    ) -> Result<Response<pb::CampaignStatus>, Status> {
        let r = request.into_inner();
        let spec = CampaignSpec {
            starts_at: required_time("starts_at", r.starts_at)?,
            ends_at: required_time("ends_at", r.ends_at)?,
            id: r.campaign_id,
            voucher_title: r.voucher_title,
            voucher_value_minor: r.voucher_value_minor,
            currency: r.currency,
            price_minor: r.price_minor,
            stock: r.stock,
            per_user_limit: r.per_user_limit,
        };
        let status = self.campaigns.upsert(spec).await?;
        Ok(Response::new(status_message(status)?))
    }

    async fn get_status(
        &self,
        request: Request<pb::GetCampaignStatusRequest>,
    ) -> Result<Response<pb::CampaignStatus>, Status> {
        let status = self
            .campaigns
            .status(&request.get_ref().campaign_id, true)
            .await?;
        Ok(Response::new(status_message(status)?))
    }

    async fn close(
        &self,
        request: Request<pb::CloseCampaignRequest>,
    ) -> Result<Response<pb::CampaignStatus>, Status> {
        let status = self.campaigns.close(&request.get_ref().campaign_id).await?;
        Ok(Response::new(status_message(status)?))
    }
}

/// `marketing.v1.Vouchers`.
pub struct VouchersService {
    store: Store,
}

impl VouchersService {
    /// Over marketing's store.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

fn rejection(rejection: Rejection) -> pb::VoucherRejection {
    match rejection {
        Rejection::NotFound => pb::VoucherRejection::NotFound,
        Rejection::NotOwner => pb::VoucherRejection::NotOwner,
        Rejection::NotAvailable => pb::VoucherRejection::NotAvailable,
        Rejection::CurrencyMismatch => pb::VoucherRejection::CurrencyMismatch,
    }
}

fn check_amount(amount: i64) -> Result<(), Status> {
    if (0..=domain::MAX_AMOUNT_MINOR).contains(&amount) {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "`amount_minor` must be from 0 to {}",
            domain::MAX_AMOUNT_MINOR
        )))
    }
}

fn parse_order(text: &str) -> Result<Uuid, Status> {
    text.parse()
        .map_err(|_| Status::invalid_argument(format!("`order_id` must be a UUID, got `{text}`")))
}

#[tonic::async_trait]
impl pb::vouchers_server::Vouchers for VouchersService {
    async fn validate(
        &self,
        request: Request<pb::ValidateVoucherRequest>,
    ) -> Result<Response<pb::ValidateVoucherResponse>, Status> {
        let r = request.into_inner();
        check_amount(r.amount_minor)?;
        let Ok(voucher) = r.voucher_id.parse::<Uuid>() else {
            return Ok(Response::new(pb::ValidateVoucherResponse {
                valid: false,
                discount_minor: 0,
                rejection: pb::VoucherRejection::NotFound.into(),
                title: String::new(),
            }));
        };
        let answer = match self
            .store
            .validate(voucher, &r.user_id, r.amount_minor, &r.currency)
            .await?
        {
            Ok((discount, title)) => pb::ValidateVoucherResponse {
                valid: true,
                discount_minor: discount,
                rejection: pb::VoucherRejection::Unspecified.into(),
                title,
            },
            Err(why) => pb::ValidateVoucherResponse {
                valid: false,
                discount_minor: 0,
                rejection: rejection(why).into(),
                title: String::new(),
            },
        };
        Ok(Response::new(answer))
    }

    async fn redeem(
        &self,
        request: Request<pb::RedeemVoucherRequest>,
    ) -> Result<Response<pb::RedeemVoucherResponse>, Status> {
        let r = request.into_inner();
        check_amount(r.amount_minor)?;
        let order = parse_order(&r.order_id)?;
        let voucher = r
            .voucher_id
            .parse::<Uuid>()
            .map_err(|_| Status::failed_precondition(Rejection::NotFound.to_string()))?;
        match self
            .store
            .hold(voucher, &r.user_id, order, r.amount_minor, &r.currency)
            .await?
        {
            Ok(discount) => Ok(Response::new(pb::RedeemVoucherResponse {
                discount_minor: discount,
            })),
            Err(why) => Err(Status::failed_precondition(why.to_string())),
        }
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseVoucherRequest>,
    ) -> Result<Response<pb::ReleaseVoucherResponse>, Status> {
        let r = request.into_inner();
        let order = parse_order(&r.order_id)?;
        let Ok(voucher) = r.voucher_id.parse::<Uuid>() else {
            return Ok(Response::new(pb::ReleaseVoucherResponse {
                released: false,
            }));
        };
        let released = self.store.release(voucher, order).await?;
        Ok(Response::new(pb::ReleaseVoucherResponse { released }))
    }
}
