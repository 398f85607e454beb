//! The sandbox payment provider for local runs: every checkout is paid by itself after a short
//! delay, and the sandbox delivers a real signed `checkout.session.completed` webhook (Stripe's
//! format and signature) to the configured webhook URL, retrying like a provider would. Refunds
//! succeed at once. Never use it in production: anyone can have an order paid.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use pulse_kit::settings::Secret;
use serde_json::json;
use uuid::Uuid;

use super::signature;
use super::{Checkout, CheckoutRequest, PaymentError, PaymentProvider, Refund, RefundStatus};

/// The sandbox provider.
#[derive(Debug, Clone)]
pub struct SandboxProvider {
    http: reqwest::Client,
    webhook_url: String,
    secret: Secret,
    delay: Duration,
    expired: Arc<Mutex<HashSet<String>>>,
}

impl SandboxProvider {
    /// A sandbox that pays every checkout after `delay` and tells `webhook_url`, signing with
    /// `secret`.
    pub fn new(webhook_url: &str, secret: Secret, delay: Duration) -> Result<Self, PaymentError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| PaymentError::Unavailable(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            webhook_url: webhook_url.to_owned(),
            secret,
            delay,
            expired: Arc::default(),
        })
    }

    fn is_expired(&self, session: &str) -> bool {
        self.expired
            .lock()
            .map(|set| set.contains(session))
            .unwrap_or(false)
    }

    /// Delivers a signed event, retrying with backoff until it is acknowledged (2xx) or refused
    /// for good (4xx), at most 6 times.
    async fn deliver(&self, body: String) {
        let mut backoff = Duration::from_millis(200);
        for attempt in 1..=6 {
            let header = signature::header(
                &[self.secret.expose().as_bytes()],
                Utc::now().timestamp(),
                body.as_bytes(),
            );
            let sent = self
                .http
                .post(&self.webhook_url)
                .header(signature::SIGNATURE_HEADER, header)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => return,
                Ok(r) if r.status().is_client_error() => {
                    tracing::warn!(status = %r.status(), "sandbox webhook refused");
                    return;
                }
                Ok(r) => {
                    tracing::warn!(attempt, status = %r.status(), "sandbox webhook failed; retrying")
                }
                Err(err) => {
                    tracing::warn!(attempt, error = %err, "sandbox webhook not delivered; retrying")
                }
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
}

#[async_trait]
impl PaymentProvider for SandboxProvider {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    async fn create_checkout(&self, request: &CheckoutRequest) -> Result<Checkout, PaymentError> {
        // One session per order, like the real provider's idempotent creation.
        let session_id = format!("cs_sandbox_{}", request.order_id.simple());
        let payment_intent = format!("pi_sandbox_{}", request.order_id.simple());
        let body = json!({
            "id": format!("evt_sandbox_{}", Uuid::now_v7().simple()),
            "object": "event",
            "type": "checkout.session.completed",
            "created": Utc::now().timestamp(),
            "data": {"object": {
                "id": session_id,
                "object": "checkout.session",
                "client_reference_id": request.order_id.to_string(),
                "metadata": {"order_id": request.order_id.to_string()},
                "payment_intent": payment_intent,
                "payment_status": "paid",
                "amount_total": request.amount_minor,
                "currency": request.currency.to_ascii_lowercase(),
            }}
        })
        .to_string();
        let sandbox = self.clone();
        let session = session_id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(sandbox.delay).await;
            if sandbox.is_expired(&session) {
                tracing::info!(%session, "sandbox checkout expired before payment");
                return;
            }
            sandbox.deliver(body).await;
        });
        Ok(Checkout {
            url: format!("https://sandbox.pulse.invalid/checkout/{session_id}"),
            session_id,
        })
    }

    async fn refund(&self, order_id: Uuid, _payment_intent: &str) -> Result<Refund, PaymentError> {
        Ok(Refund {
            refund_id: format!("re_sandbox_{}", order_id.simple()),
            status: RefundStatus::Succeeded,
        })
    }

    async fn expire_checkout(&self, session_id: &str) -> Result<(), PaymentError> {
        if let Ok(mut set) = self.expired.lock() {
            set.insert(session_id.to_owned());
        }
        Ok(())
    }
}
