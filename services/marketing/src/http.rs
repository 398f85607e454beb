//! Marketing's HTTP API: campaigns (admin mirror of `CampaignAdmin`), the seckill endpoint and
//! the wallet.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use pulse_kit::auth::{Admin, Principal};
use pulse_kit::idempotency::IdempotencyKey;
use pulse_kit::problem::{ApiJson, ApiPath, Problem};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::attempts::{Attempts, Refusal};
use crate::campaigns::{CampaignError, CampaignStatus, Campaigns};
use crate::domain::{CampaignSpec, Phase, VoucherStatus};
use crate::store::{Store, StoreError, VoucherRow};

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// Campaign administration.
    pub campaigns: Campaigns,
    /// Seckill attempts.
    pub attempts: Attempts,
    /// Tables.
    pub store: Store,
}

/// The seckill attempt's route template: its flow keeps its own `Idempotency-Key` records and
/// limits each user's rate (see [`crate::seckill::RESERVE_SCRIPT`]).
pub const SECKILL_ROUTE: &str = "/v1/seckill/{campaign}/orders";

/// The routes.
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/v1/campaigns", get(list_campaigns))
        .route("/v1/campaigns/{id}", get(get_campaign).put(put_campaign))
        .route("/v1/campaigns/{id}/close", post(close_campaign))
        .route(SECKILL_ROUTE, post(seckill))
        .route("/v1/vouchers", get(wallet))
        .route("/v1/vouchers/{id}", get(get_voucher))
        .with_state(Arc::new(state))
}

impl From<CampaignError> for Problem {
    fn from(err: CampaignError) -> Self {
        match err {
            CampaignError::NotFound(_) => campaign_not_found(&err.to_string()),
            CampaignError::Invalid(invalid) => {
                let problem = if invalid.combination {
                    Problem::invalid_combination(invalid.to_string())
                } else {
                    Problem::unprocessable(invalid.to_string())
                };
                problem.with("field", invalid.field.clone())
            }
            CampaignError::Redis(err) => {
                tracing::warn!(error = %err, "Redis unavailable for a campaign operation");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "campaign-store-unavailable",
                    "Campaign counters unavailable",
                )
                .with_detail("the seckill store (Redis) is unreachable; retry shortly")
            }
            CampaignError::Store(err) => err.into(),
        }
    }
}

impl From<StoreError> for Problem {
    fn from(err: StoreError) -> Self {
        Problem::from_error(&err)
    }
}

fn campaign_not_found(detail: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "campaign-not-found",
        "Campaign not found",
    )
    .with_detail(detail)
}

// ------------------------------------------------------------------------------- campaigns

/// The schemas of campaign ids and of [`CampaignInput`]'s fields, from the limits
/// [`crate::domain`] checks (utoipa's attributes take literals only).
pub mod schemas {
    use pulse_kit::openapi::{integer_schema, nullable_integer_schema};
    use utoipa::openapi::schema::{Object, ObjectBuilder, SchemaType, Type};
    use utoipa::openapi::{RefOr, Schema};

    use crate::domain::{
        CAMPAIGN_ID_PATTERN, MAX_AMOUNT_MINOR, MAX_CAMPAIGN_ID_LEN, MAX_PER_USER_LIMIT, MAX_STOCK,
        MAX_VOUCHER_TITLE,
    };

    /// A campaign id (`pulse-fr/summer-sale`), as `check_campaign_id` accepts it.
    pub struct CampaignId;

    impl utoipa::PartialSchema for CampaignId {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::String))
                .min_length(Some(1))
                .max_length(Some(MAX_CAMPAIGN_ID_LEN))
                .pattern(Some(CAMPAIGN_ID_PATTERN))
                .description(Some("campaign id, `/` percent-encoded in a path"))
                .into()
        }
    }

    impl utoipa::ToSchema for CampaignId {}

    pub(super) fn voucher_title() -> Object {
        pulse_kit::text::schema(MAX_VOUCHER_TITLE, "Title of the voucher buyers get")
    }

    pub(super) fn voucher_value() -> Object {
        integer_schema(
            1,
            MAX_AMOUNT_MINOR,
            "What the voucher is worth, minor units",
        )
    }

    pub(super) fn price() -> Object {
        integer_schema(0, MAX_AMOUNT_MINOR, "What a buyer pays, minor units")
    }

    pub(super) fn stock() -> Object {
        integer_schema(
            1,
            i64::from(MAX_STOCK),
            "Total stock (sold vouchers included)",
        )
    }

    pub(super) fn per_user_limit() -> Object {
        nullable_integer_schema(
            0,
            i64::from(MAX_PER_USER_LIMIT),
            "Vouchers one user may buy (null or 0: 1)",
        )
    }

    pub(super) fn currency() -> Object {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .enum_values(Some(pulse_kit::config::known_currencies()))
            .description(Some("ISO 4217 code of value and price"))
            .build()
    }
}

/// Body of `PUT /v1/campaigns/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CampaignInput {
    /// Title of the voucher buyers get.
    #[schema(schema_with = schemas::voucher_title)]
    pub voucher_title: String,
    /// What the voucher is worth, minor units.
    #[schema(schema_with = schemas::voucher_value)]
    pub voucher_value_minor: i64,
    /// ISO 4217 code of value and price.
    #[schema(schema_with = schemas::currency)]
    pub currency: String,
    /// What a buyer pays, minor units.
    #[schema(schema_with = schemas::price)]
    pub price_minor: i64,
    /// Total stock (sold vouchers included).
    #[schema(schema_with = schemas::stock)]
    pub stock: u32,
    /// Vouchers one user may buy (default 1).
    #[serde(default)]
    #[schema(schema_with = schemas::per_user_limit)]
    pub per_user_limit: Option<u32>,
    /// Start of the sale (RFC 3339).
    pub starts_at: DateTime<Utc>,
    /// End of the sale (RFC 3339, exclusive).
    pub ends_at: DateTime<Utc>,
}

/// A campaign and its live state.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CampaignView {
    /// Id.
    pub id: String,
    /// Voucher title.
    pub voucher_title: String,
    /// Voucher value, minor units.
    pub voucher_value_minor: i64,
    /// Currency.
    pub currency: String,
    /// Price, minor units.
    pub price_minor: i64,
    /// Total stock.
    pub stock: u32,
    /// Per-user limit.
    pub per_user_limit: u32,
    /// Start (UTC).
    pub starts_at: DateTime<Utc>,
    /// End (UTC).
    pub ends_at: DateTime<Utc>,
    /// Whether it was closed.
    pub closed: bool,
    /// Phase now.
    pub phase: Phase,
    /// Vouchers reserved (null when the counters are unavailable).
    pub sold: Option<u32>,
    /// Vouchers left (null when the counters are unavailable).
    pub remaining: Option<u32>,
}

impl From<CampaignStatus> for CampaignView {
    fn from(status: CampaignStatus) -> Self {
        let row = status.row;
        Self {
            stock: row.stock_u32(),
            per_user_limit: row.limit_u32(),
            closed: row.closed_at.is_some(),
            id: row.id,
            voucher_title: row.voucher_title,
            voucher_value_minor: row.voucher_value_minor,
            currency: row.currency,
            price_minor: row.price_minor,
            starts_at: row.starts_at,
            ends_at: row.ends_at,
            phase: status.phase,
            sold: status.counts.map(|c| c.sold),
            remaining: status.counts.map(|c| c.remaining),
        }
    }
}

/// A list of campaigns.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CampaignList {
    /// Campaigns not ended for more than a day, soonest first.
    pub items: Vec<CampaignView>,
}

/// Creates or updates a campaign (role `admin`); mirrors `CampaignAdmin/Upsert`.
///
/// The role is checked before the body is read (401, then 403, then 4xx). Idempotent: the same
/// spec again gives the same campaign.
#[utoipa::path(put, path = "/v1/campaigns/{id}", tag = "marketing", request_body = CampaignInput,
    params(("id" = schemas::CampaignId, Path)),
    responses((status = 200, body = CampaignView), (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 403, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json"),
              (status = 503, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn put_campaign(
    State(app): State<Arc<AppState>>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<CampaignInput>,
) -> Result<ApiJson<CampaignView>, Problem> {
    let spec = CampaignSpec {
        id,
        voucher_title: input.voucher_title,
        voucher_value_minor: input.voucher_value_minor,
        currency: input.currency,
        price_minor: input.price_minor,
        stock: input.stock,
        per_user_limit: input.per_user_limit.unwrap_or(1),
        starts_at: input.starts_at,
        ends_at: input.ends_at,
    };
    Ok(ApiJson(app.campaigns.upsert(spec).await?.into()))
}

/// One campaign with its phase and counters.
#[utoipa::path(get, path = "/v1/campaigns/{id}", tag = "marketing",
    params(("id" = schemas::CampaignId, Path)),
    responses((status = 200, body = CampaignView), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn get_campaign(
    State(app): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<CampaignView>, Problem> {
    Ok(ApiJson(app.campaigns.status(&id, false).await?.into()))
}

/// Campaigns that are scheduled, running, or ended less than a day ago.
#[utoipa::path(get, path = "/v1/campaigns", tag = "marketing",
    responses((status = 200, body = CampaignList)))]
pub async fn list_campaigns(
    State(app): State<Arc<AppState>>,
) -> Result<ApiJson<CampaignList>, Problem> {
    let since = Utc::now() - chrono::Duration::days(1);
    let items = app.campaigns.list(since, 200).await?;
    Ok(ApiJson(CampaignList {
        items: items.into_iter().map(Into::into).collect(),
    }))
}

/// Ends a campaign now (role `admin`); mirrors `CampaignAdmin/Close`.
///
/// Closing is idempotent: closing a closed campaign answers its state again.
#[utoipa::path(post, path = "/v1/campaigns/{id}/close", tag = "marketing",
    params(("id" = schemas::CampaignId, Path)),
    responses((status = 200, body = CampaignView), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn close_campaign(
    State(app): State<Arc<AppState>>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<CampaignView>, Problem> {
    Ok(ApiJson(app.campaigns.close(&id).await?.into()))
}

// --------------------------------------------------------------------------------- seckill

/// Answer of a won seckill attempt.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeckillAccepted {
    /// The order being created (UUIDv7); poll `GET /v1/orders/{orderId}`.
    pub order_id: Uuid,
    /// The campaign.
    pub campaign_id: String,
    /// Always `RESERVED`: the voucher is yours once the order is paid.
    pub status: String,
}

impl From<Refusal> for Problem {
    fn from(refusal: Refusal) -> Self {
        let (status, slug, title, detail) = match &refusal {
            Refusal::RateLimited { retry_after_secs } => {
                let problem = Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "seckill-rate-limited",
                    "Too many attempts",
                )
                .with_detail(format!(
                    "you are trying too often; retry in {retry_after_secs} s"
                ));
                return problem.with_retry_after(*retry_after_secs);
            }
            Refusal::UnknownCampaign(_) => return campaign_not_found(&refusal.to_string()),
            Refusal::SoldOut => (
                StatusCode::CONFLICT,
                "seckill-sold-out",
                "Sold out",
                "every voucher of this campaign is taken; unpaid ones come back when their payment time runs out",
            ),
            Refusal::AlreadyBought => (
                StatusCode::CONFLICT,
                "seckill-already-bought",
                "Already bought",
                "you already bought as many vouchers of this campaign as one person may",
            ),
            Refusal::NotStarted => (
                StatusCode::CONFLICT,
                "seckill-not-started",
                "Not started",
                "this campaign has not started yet; try again at its start time",
            ),
            Refusal::Ended => (
                StatusCode::CONFLICT,
                "seckill-ended",
                "Campaign ended",
                "this campaign is over",
            ),
            Refusal::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "seckill-unavailable",
                "Seckill unavailable",
                "the seckill store is unreachable, so nothing was reserved; retry shortly",
            ),
        };
        Problem::new(status, slug, title).with_detail(detail)
    }
}

/// Tries to buy one voucher of a seckill campaign (any signed-in user). One Redis script decides
/// atomically; the order is created asynchronously: poll `GET /v1/orders/{orderId}`.
///
/// With an `Idempotency-Key` (the kit's middleware checks it, 400 `idempotency-key-invalid` when
/// malformed, and hands it over), a retry (the client lost the `202`) answers `202` with the same
/// order id: the reservation script keeps caller + key → order id for 24 hours, atomically with
/// the reservation, so this holds even if the server died right after reserving. A key belongs
/// to one campaign; a refusal has no effect and is not kept, so a retry of a refused attempt
/// is decided again (a voucher given back may be won).
#[utoipa::path(post, path = "/v1/seckill/{campaign}/orders", tag = "marketing",
    params(("campaign" = schemas::CampaignId, Path),
           ("Idempotency-Key" = Option<String>, Header, description = "unique per purchase; retry with the same key to get the same reservation back")),
    responses((status = 202, body = SeckillAccepted),
              (status = 400, body = Problem, content_type = "application/problem+json", description = "idempotency-key-invalid"),
              (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json", description = "campaign-not-found"),
              (status = 409, body = Problem, content_type = "application/problem+json", description = "seckill-sold-out, seckill-already-bought, seckill-not-started or seckill-ended: what the campaign's state allows"),
              (status = 429, body = Problem, content_type = "application/problem+json", description = "seckill-rate-limited: more attempts per second than the country allows one user (Retry-After)"),
              (status = 503, body = Problem, content_type = "application/problem+json", description = "seckill-unavailable: Redis is down, nothing was reserved")),
    security(("bearer" = [])))]
pub async fn seckill(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    key: Option<IdempotencyKey>,
    ApiPath(campaign): ApiPath<String>,
) -> Result<Response, Problem> {
    let reserved = app
        .attempts
        .attempt(
            &campaign,
            principal.subject(),
            key.as_ref().map(IdempotencyKey::key),
        )
        .await?;
    let order_id = reserved.order_id;
    let mut response = (
        StatusCode::ACCEPTED,
        ApiJson(SeckillAccepted {
            order_id,
            campaign_id: campaign,
            status: "RESERVED".into(),
        }),
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/orders/{order_id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

// -------------------------------------------------------------------------------- vouchers

/// A voucher in the caller's wallet.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VoucherView {
    /// Id (pass it as `voucherId` when ordering products).
    pub id: Uuid,
    /// The campaign it came from.
    pub campaign_id: String,
    /// Title.
    pub title: String,
    /// Value, minor units.
    pub value_minor: i64,
    /// Currency.
    pub currency: String,
    /// Status.
    pub status: VoucherStatus,
    /// The order holding or using it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<Uuid>,
    /// The seckill order that bought it.
    pub bought_with_order_id: Uuid,
    /// When it was issued (UTC).
    pub issued_at: DateTime<Utc>,
}

impl From<VoucherRow> for VoucherView {
    fn from(row: VoucherRow) -> Self {
        Self {
            id: row.id,
            campaign_id: row.campaign_id,
            title: row.title,
            value_minor: row.value_minor,
            currency: row.currency,
            status: VoucherStatus::parse(&row.status).unwrap_or(VoucherStatus::Revoked),
            order_id: row.order_id,
            bought_with_order_id: row.source_order_id,
            issued_at: row.issued_at,
        }
    }
}

/// The caller's wallet.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VoucherList {
    /// Newest first.
    pub items: Vec<VoucherView>,
}

/// The caller's vouchers.
#[utoipa::path(get, path = "/v1/vouchers", tag = "marketing",
    responses((status = 200, body = VoucherList), (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn wallet(
    State(app): State<Arc<AppState>>,
    principal: Principal,
) -> Result<ApiJson<VoucherList>, Problem> {
    let rows = app.store.wallet(principal.subject(), 500).await?;
    Ok(ApiJson(VoucherList {
        items: rows.into_iter().map(Into::into).collect(),
    }))
}

/// One of the caller's vouchers.
#[utoipa::path(get, path = "/v1/vouchers/{id}", tag = "marketing", params(("id" = Uuid, Path)),
    responses((status = 200, body = VoucherView), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get_voucher(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<VoucherView>, Problem> {
    let id: Uuid = id.parse().map_err(|_| {
        Problem::bad_request(format!("id: `{id}` is not a UUID")).with("field", "id")
    })?;
    match app.store.voucher(id).await? {
        Some(row) if row.owner_subject == principal.subject() || principal.has_role("admin") => {
            Ok(ApiJson(row.into()))
        }
        _ => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "voucher-not-found",
            "Voucher not found",
        )
        .with_detail(format!("voucher {id} is not in your wallet"))),
    }
}

/// The OpenAPI document of marketing's endpoints.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(put_campaign, get_campaign, list_campaigns, close_campaign, seckill, wallet, get_voucher),
    components(schemas(Problem, schemas::CampaignId, CampaignInput, CampaignView, CampaignList, Phase, SeckillAccepted,
                       VoucherView, VoucherList, VoucherStatus)),
    tags((name = "marketing", description = "Seckill campaigns and vouchers"))
)]
pub struct MarketingApi;
