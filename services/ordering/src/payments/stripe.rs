//! A Stripe-compatible [`PaymentProvider`]: Checkout Sessions for payments, Refunds, session
//! expiry; form-encoded requests with a bearer secret key and an `Idempotency-Key` per order.
//! The base URL is configurable (`PULSE_STRIPE_BASE_URL`), so a compatible service or a local
//! fake can stand in for `https://api.stripe.com`.

use std::time::Duration;

use async_trait::async_trait;
use pulse_kit::settings::Secret;
use serde::Deserialize;
use uuid::Uuid;

use super::{Checkout, CheckoutRequest, PaymentError, PaymentProvider, Refund, RefundStatus};

/// The Stripe-compatible adapter.
#[derive(Debug, Clone)]
pub struct StripeProvider {
    http: reqwest::Client,
    base_url: String,
    api_key: Secret,
    return_url: String,
}

#[derive(Debug, Deserialize)]
struct SessionReply {
    id: String,
    #[serde(default)]
    url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RefundReply {
    id: String,
    #[serde(default)]
    status: Option<RefundStatus>,
}

#[derive(Debug, Deserialize)]
struct ErrorReply {
    error: ErrorBody,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
}

impl StripeProvider {
    /// An adapter calling `base_url` (`https://api.stripe.com`) with `api_key`; `return_url` is
    /// where the buyer lands after paying or giving up (`{ORDER_ID}` is replaced by the order).
    pub fn new(base_url: &str, api_key: Secret, return_url: &str) -> Result<Self, PaymentError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| PaymentError::Unavailable(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key,
            return_url: return_url.to_owned(),
        })
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        idempotency_key: &str,
        form: &[(String, String)],
    ) -> Result<T, PaymentError> {
        let response = self
            .http
            .post(format!("{}{path}", self.base_url))
            .bearer_auth(self.api_key.expose())
            .header("Idempotency-Key", idempotency_key)
            .form(form)
            .send()
            .await
            .map_err(|e| PaymentError::Unavailable(e.to_string()))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| PaymentError::Unavailable(e.to_string()))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| PaymentError::Unavailable(format!("unexpected answer: {e}")));
        }
        let message = serde_json::from_slice::<ErrorReply>(&bytes)
            .ok()
            .and_then(|r| r.error.message)
            .unwrap_or_else(|| format!("HTTP {status}"));
        if status.is_client_error() && status.as_u16() != 429 {
            Err(PaymentError::Rejected(message))
        } else {
            Err(PaymentError::Unavailable(message))
        }
    }
}

fn field(name: &str, value: impl ToString) -> (String, String) {
    (name.to_owned(), value.to_string())
}

#[async_trait]
impl PaymentProvider for StripeProvider {
    fn name(&self) -> &'static str {
        "stripe"
    }

    async fn create_checkout(&self, request: &CheckoutRequest) -> Result<Checkout, PaymentError> {
        let order = request.order_id.to_string();
        let back = self.return_url.replace("{ORDER_ID}", &order);
        let form = vec![
            field("mode", "payment"),
            field("client_reference_id", &order),
            field("success_url", &back),
            field("cancel_url", &back),
            field("metadata[order_id]", &order),
            field("payment_intent_data[metadata][order_id]", &order),
            field("line_items[0][quantity]", 1),
            field(
                "line_items[0][price_data][currency]",
                request.currency.to_ascii_lowercase(),
            ),
            field(
                "line_items[0][price_data][unit_amount]",
                request.amount_minor,
            ),
            field(
                "line_items[0][price_data][product_data][name]",
                &request.description,
            ),
        ];
        let session: SessionReply = self
            .post(
                "/v1/checkout/sessions",
                &format!("pulse-checkout-{order}"),
                &form,
            )
            .await?;
        Ok(Checkout {
            url: session.url.unwrap_or_default(),
            session_id: session.id,
        })
    }

    async fn refund(&self, order_id: Uuid, payment_intent: &str) -> Result<Refund, PaymentError> {
        let form = vec![
            field("payment_intent", payment_intent),
            field("metadata[order_id]", order_id),
        ];
        let refund: RefundReply = self
            .post("/v1/refunds", &format!("pulse-refund-{order_id}"), &form)
            .await?;
        Ok(Refund {
            refund_id: refund.id,
            status: refund.status.unwrap_or(RefundStatus::Pending),
        })
    }

    async fn expire_checkout(&self, session_id: &str) -> Result<(), PaymentError> {
        let path = format!("/v1/checkout/sessions/{session_id}/expire");
        match self
            .post::<serde_json::Value>(&path, &format!("pulse-expire-{session_id}"), &[])
            .await
        {
            // A session already completed or expired cannot be expired: nothing to do.
            Ok(_) | Err(PaymentError::Rejected(_)) => Ok(()),
            Err(err) => Err(err),
        }
    }
}
