//! Ordering's client of `marketing.v1.Vouchers`: every call has a deadline, transient failures
//! are retried a bounded number of times with jittered backoff, and a circuit breaker in front
//! answers at once while marketing keeps failing, so orders fail fast instead of piling up.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use pulse_kit::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
use pulse_proto::marketing::v1 as pb;
use pulse_proto::marketing::v1::vouchers_client::VouchersClient;
use tonic::transport::Channel;
use tonic::{Code, Status};
use uuid::Uuid;

/// Why a voucher call did not give an answer to act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoucherCallError {
    /// Marketing answered: the voucher cannot be used (its reason).
    #[error("{0}")]
    Rejected(String),
    /// Marketing knows no such voucher.
    #[error("no voucher {0}")]
    NotFound(Uuid),
    /// Marketing did not answer in time or failed, even after retries.
    #[error("marketing is unavailable: {0}")]
    Unavailable(String),
    /// The breaker is open: marketing was not called.
    #[error("marketing is failing; calls are paused for {0:?}")]
    CircuitOpen(Duration),
}

/// What `Validate` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    /// Usable?
    pub valid: bool,
    /// What it takes off.
    pub discount_minor: i64,
    /// Why not, when not.
    pub rejection: String,
    /// Not usable because marketing knows no such voucher.
    pub unknown: bool,
}

/// The client.
#[derive(Debug, Clone)]
pub struct MarketingClient {
    client: VouchersClient<Channel>,
    timeout: Duration,
    retries: u32,
    breaker: Arc<CircuitBreaker>,
    open_gauge: Option<Gauge>,
}

/// Codes that say marketing (or the way to it) is in trouble: retried, and counted by the
/// breaker. Everything else is an answer.
fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Unknown
            | Code::Internal
            | Code::Cancelled
    )
}

impl MarketingClient {
    /// A client of `url` (`http://marketing:50051`); connects lazily.
    pub fn new(
        url: &str,
        timeout: Duration,
        retries: u32,
        breaker: BreakerConfig,
    ) -> Result<Self, tonic::transport::Error> {
        let channel = pulse_kit::grpc::lazy_channel(url, timeout)?;
        Ok(Self {
            client: VouchersClient::new(channel),
            timeout,
            retries,
            breaker: Arc::new(CircuitBreaker::new(breaker)),
            open_gauge: None,
        })
    }

    /// Mirrors the breaker's state into `gauge` (1 while open) after every call.
    #[must_use]
    pub fn with_open_gauge(mut self, gauge: Gauge) -> Self {
        self.open_gauge = Some(gauge);
        self
    }

    fn report_state(&self) {
        if let Some(gauge) = &self.open_gauge {
            gauge.set(i64::from(self.breaker.state() == BreakerState::Open));
        }
    }

    /// The breaker's state (for metrics and tests).
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// Sends `request` through `call` (one of the client's methods), with the deadline, the
    /// retries and the breaker.
    async fn call<R, T, F, Fut>(
        &self,
        what: &str,
        request: R,
        call: F,
    ) -> Result<T, VoucherCallError>
    where
        R: Clone,
        F: Fn(VouchersClient<Channel>, tonic::Request<R>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let result = self
            .call_with_retries(what, |client, timeout| {
                let mut request = tonic::Request::new(request.clone());
                request.set_timeout(timeout);
                call(client, request)
            })
            .await;
        self.report_state();
        result
    }

    async fn call_with_retries<T, F, Fut>(&self, what: &str, call: F) -> Result<T, VoucherCallError>
    where
        F: Fn(VouchersClient<Channel>, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut backoff = Duration::from_millis(25);
        let mut last = String::new();
        for attempt in 0..=self.retries {
            let permit = self
                .breaker
                .try_acquire()
                .map_err(|open| VoucherCallError::CircuitOpen(open.retry_in))?;
            // The deadline travels as `grpc-timeout`; the local timer also covers connecting.
            let answer =
                tokio::time::timeout(self.timeout, call(self.client.clone(), self.timeout))
                    .await
                    .unwrap_or_else(|_| {
                        Err(Status::deadline_exceeded("no answer within the deadline"))
                    });
            match answer {
                Ok(response) => {
                    permit.success();
                    return Ok(response.into_inner());
                }
                Err(status) if is_transient(&status) => {
                    permit.failure();
                    last = format!("{:?}: {}", status.code(), status.message());
                    tracing::warn!(call = what, attempt, error = %last, "marketing call failed");
                    if attempt < self.retries {
                        let jitter = rand::random_range(0..=backoff.as_millis() as u64);
                        tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
                        backoff *= 2;
                    }
                }
                Err(status) => {
                    permit.success();
                    return Err(VoucherCallError::Rejected(status.message().to_owned()));
                }
            }
        }
        Err(VoucherCallError::Unavailable(last))
    }

    /// `Vouchers/Validate`.
    pub async fn validate(
        &self,
        voucher: Uuid,
        user: &str,
        amount_minor: i64,
        currency: &str,
    ) -> Result<Validation, VoucherCallError> {
        let request = pb::ValidateVoucherRequest {
            voucher_id: voucher.to_string(),
            user_id: user.to_owned(),
            amount_minor,
            currency: currency.to_owned(),
        };
        let answer = self
            .call("Validate", request, |mut client, request| async move {
                client.validate(request).await
            })
            .await?;
        let rejection = match answer.rejection() {
            pb::VoucherRejection::Unspecified => String::new(),
            pb::VoucherRejection::NotFound => "no such voucher".into(),
            pb::VoucherRejection::NotOwner => "the voucher belongs to someone else".into(),
            pb::VoucherRejection::NotAvailable => {
                "the voucher is already used or held by another order".into()
            }
            pb::VoucherRejection::CurrencyMismatch => {
                "the voucher is in another currency than the product".into()
            }
        };
        Ok(Validation {
            valid: answer.valid,
            discount_minor: answer.discount_minor,
            unknown: answer.rejection() == pb::VoucherRejection::NotFound,
            rejection,
        })
    }

    /// `Vouchers/Redeem`: holds the voucher for `order`; returns the discount.
    pub async fn redeem(
        &self,
        voucher: Uuid,
        user: &str,
        order: Uuid,
        amount_minor: i64,
        currency: &str,
    ) -> Result<i64, VoucherCallError> {
        let request = pb::RedeemVoucherRequest {
            voucher_id: voucher.to_string(),
            user_id: user.to_owned(),
            order_id: order.to_string(),
            amount_minor,
            currency: currency.to_owned(),
        };
        let answer = self
            .call("Redeem", request, |mut client, request| async move {
                client.redeem(request).await
            })
            .await?;
        Ok(answer.discount_minor)
    }

    /// `Vouchers/Release`: gives the voucher back if `order` holds it.
    pub async fn release(&self, voucher: Uuid, order: Uuid) -> Result<bool, VoucherCallError> {
        let request = pb::ReleaseVoucherRequest {
            voucher_id: voucher.to_string(),
            order_id: order.to_string(),
        };
        let answer = self
            .call("Release", request, |mut client, request| async move {
                client.release(request).await
            })
            .await?;
        Ok(answer.released)
    }
}
