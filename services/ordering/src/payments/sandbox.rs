//! The sandbox payment provider, for local runs and development tenants: a stand-in for a hosted
//! checkout that moves no money but gives the buyer, and ordering, the journey a real provider
//! gives. Never use it in production: anyone can have any order paid.
//!
//! - **Checkout.** Paying an order starts the session `cs_sandbox_<order>` (one per order, like
//!   the real provider's idempotent creation). Its checkout URL is a page ordering serves itself,
//!   [`CHECKOUT_PATH`]`/{session}`, relative so that it works behind any host (the country's
//!   Ingress routes `/v1/payments*` to ordering; `./dev up` serves everything on one port).
//! - **The page** (`http/sandbox_page.rs`, over [`SandboxCheckout`]) shows the order and its
//!   amount, and two buttons. **Pay** sends the signed `checkout.session.completed` webhook
//!   (Stripe's body and `Stripe-Signature`, retried like a provider) to ordering's webhook, waits
//!   a few seconds for it to be acknowledged, and sends the buyer back to the return URL with a
//!   303. Its event id is the session's, so pressing Pay twice (or Pay while the sandbox pays by
//!   itself) is one event, applied once; Pay on a paid order only sends the buyer back.
//!   **Cancel** is the buyer leaving the hosted checkout (Stripe's back link, the `cancel_url`):
//!   a real provider sends no event then and keeps the session open, so the sandbox sends
//!   nothing either and only sends the buyer back. The order stays `PENDING_PAYMENT`: the buyer
//!   may come back to the same checkout and pay until the order's deadline, or cancel the order
//!   in the app (`POST /v1/orders/{id}/cancel`); unpaid at its deadline, the sweeper cancels it
//!   and gives its stock back. Ordering's state machine has no "payment abandoned" status, and
//!   cancelling on a mere back click would take from the buyer what a real provider leaves open.
//! - **Expiry.** When ordering expires a checkout (its order was cancelled by the sweeper or by
//!   its buyer), the sandbox sends `checkout.session.expired`, as Stripe does when a session is
//!   expired; ordering acknowledges it and changes nothing (the order is cancelled already). The
//!   page of an expired or paid session answers 409 with words, an unknown session 404.
//! - **Paying by itself.** With `PULSE_PAYMENT_SANDBOX_DELAY_MS` set (tests and benches that need
//!   paid orders without a buyer), every checkout is also paid that long after it starts, with
//!   the same event; a checkout this process expired meanwhile is not paid.
//!
//! Every replica serves every session: what the page needs comes from ordering's own orders
//! table (the order holding the session) and from the session id, never from one process's
//! memory. The webhook goes to `PULSE_PAYMENT_SANDBOX_WEBHOOK_URL` (this process by default),
//! whose handler applies it to the shared tables. Refunds succeed at once.

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
use crate::domain::OrderStatus;
use crate::store::{OrderError, OrderRow, Store};

/// Where the checkout pages are served: `{CHECKOUT_PATH}/{session}` shows one, `…/pay` and
/// `…/cancel` take its buttons.
pub const CHECKOUT_PATH: &str = "/v1/payments/sandbox/checkout";
/// The provider's name, stored on the orders it holds.
pub const PROVIDER: &str = "sandbox";
/// Event type of a paid checkout.
const COMPLETED: &str = "checkout.session.completed";
/// Event type of an expired checkout.
const EXPIRED: &str = "checkout.session.expired";
/// Prefix of the sandbox's session ids; the order id follows (32 hex digits).
const SESSION_PREFIX: &str = "cs_sandbox_";
/// How long Pay waits for ordering to acknowledge the payment before sending the buyer back
/// anyway (the webhook is retried in the background, and the order page shows it once paid).
const PAY_WAIT: Duration = Duration::from_secs(5);
/// Deliveries of one event before giving up.
const ATTEMPTS: u32 = 6;

/// The session of `order`'s sandbox checkout.
pub fn session_id(order: Uuid) -> String {
    format!("{SESSION_PREFIX}{}", order.simple())
}

/// The order a sandbox session id names, if it is one.
fn order_of_session(session: &str) -> Option<Uuid> {
    let hex = session.strip_prefix(SESSION_PREFIX)?;
    if hex.len() != 32 {
        return None;
    }
    Uuid::try_parse(hex).ok()
}

/// What a checkout charges.
struct Charge<'a> {
    order: Uuid,
    amount_minor: i64,
    currency: &'a str,
}

impl<'a> Charge<'a> {
    fn of_request(request: &'a CheckoutRequest) -> Self {
        Self {
            order: request.order_id,
            amount_minor: request.amount_minor,
            currency: &request.currency,
        }
    }

    fn of_order(order: &'a OrderRow) -> Self {
        Self {
            order: order.id,
            amount_minor: order.amount_minor,
            currency: &order.currency,
        }
    }
}

/// The signed body of a paid checkout: Stripe's `checkout.session.completed`, the body the
/// sandbox always sent. Its event id is derived from the session (it was random), so every way
/// of paying one session is one event, which ordering applies once.
fn completed_event(charge: &Charge<'_>) -> String {
    let order = charge.order;
    session_event(
        order,
        "completed",
        COMPLETED,
        json!({
            "payment_intent": format!("pi_sandbox_{}", order.simple()),
            "payment_status": "paid",
            "amount_total": charge.amount_minor,
            "currency": charge.currency.to_ascii_lowercase(),
        }),
    )
}

/// The signed body of an expired checkout: Stripe's `checkout.session.expired`.
fn expired_event(order: Uuid) -> String {
    session_event(
        order,
        "expired",
        EXPIRED,
        json!({"payment_status": "unpaid", "status": "expired"}),
    )
}

/// A Stripe event of `event_type` about `order`'s checkout session (id `evt_sandbox_<name>_…`),
/// whose session object carries `fields` besides its id, order reference and metadata.
fn session_event(order: Uuid, name: &str, event_type: &str, fields: serde_json::Value) -> String {
    let mut session = json!({
        "id": session_id(order),
        "object": "checkout.session",
        "client_reference_id": order.to_string(),
        "metadata": {"order_id": order.to_string()},
    });
    if let (Some(session), serde_json::Value::Object(fields)) = (session.as_object_mut(), fields) {
        session.extend(fields);
    }
    json!({
        "id": format!("evt_sandbox_{name}_{}", order.simple()),
        "object": "event",
        "type": event_type,
        "created": Utc::now().timestamp(),
        "data": {"object": session},
    })
    .to_string()
}

/// Sends the sandbox's events to ordering's webhook, signed like Stripe signs them.
#[derive(Debug, Clone)]
pub struct SandboxWebhooks {
    http: reqwest::Client,
    url: String,
    secret: Secret,
}

impl SandboxWebhooks {
    /// Events to `url`, signed with `secret`.
    pub fn new(url: &str, secret: Secret) -> Result<Self, PaymentError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| PaymentError::Unavailable(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            url: url.to_owned(),
            secret,
        })
    }

    /// Delivers a signed event, retrying with backoff until it is acknowledged (2xx) or refused
    /// for good (4xx), at most [`ATTEMPTS`] times; whether it was acknowledged.
    async fn deliver(&self, body: String) -> bool {
        let mut backoff = Duration::from_millis(200);
        for attempt in 1..=ATTEMPTS {
            let header = signature::header(
                &[self.secret.expose().as_bytes()],
                Utc::now().timestamp(),
                body.as_bytes(),
            );
            let sent = self
                .http
                .post(&self.url)
                .header(signature::SIGNATURE_HEADER, header)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => return true,
                Ok(r) if r.status().is_client_error() => {
                    tracing::warn!(status = %r.status(), "sandbox webhook refused");
                    return false;
                }
                Ok(r) => {
                    tracing::warn!(attempt, status = %r.status(), "sandbox webhook failed; retrying")
                }
                Err(err) => {
                    tracing::warn!(attempt, error = %err, "sandbox webhook not delivered; retrying")
                }
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        false
    }

    /// Delivers `body` in a task of its own, which outlives the request that sent it (a buyer
    /// closing the page does not stop the retries).
    fn send(&self, body: String) -> tokio::task::JoinHandle<bool> {
        let webhooks = self.clone();
        tokio::spawn(async move { webhooks.deliver(body).await })
    }
}

/// The sandbox provider (the [`PaymentProvider`] port).
#[derive(Debug, Clone)]
pub struct SandboxProvider {
    webhooks: SandboxWebhooks,
    auto_pay_after: Option<Duration>,
    /// Sessions this process expired: only for paying by itself, which must not pay them.
    expired: Arc<Mutex<HashSet<String>>>,
}

impl SandboxProvider {
    /// A sandbox whose checkouts are paid on their page, sending `webhooks`; with
    /// `auto_pay_after`, each checkout is also paid by itself that long after it starts.
    pub fn new(webhooks: SandboxWebhooks, auto_pay_after: Option<Duration>) -> Self {
        Self {
            webhooks,
            auto_pay_after,
            expired: Arc::default(),
        }
    }

    fn is_expired(&self, session: &str) -> bool {
        self.expired
            .lock()
            .map(|set| set.contains(session))
            .unwrap_or(false)
    }
}

#[async_trait]
impl PaymentProvider for SandboxProvider {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn create_checkout(&self, request: &CheckoutRequest) -> Result<Checkout, PaymentError> {
        let session_id = session_id(request.order_id);
        if let Some(delay) = self.auto_pay_after {
            let body = completed_event(&Charge::of_request(request));
            let sandbox = self.clone();
            let session = session_id.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if sandbox.is_expired(&session) {
                    tracing::info!(%session, "sandbox checkout expired before payment");
                    return;
                }
                sandbox.webhooks.deliver(body).await;
            });
        }
        Ok(Checkout {
            url: format!("{CHECKOUT_PATH}/{session_id}"),
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
        if let Some(order) = order_of_session(session_id) {
            drop(self.webhooks.send(expired_event(order)));
        }
        Ok(())
    }
}

/// Where a checkout session is, as its page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Waiting for the buyer: the order is unpaid and its deadline not passed.
    Open,
    /// Paid (its order is `PAID`, or `REFUNDED` since).
    Paid,
    /// Nobody may pay it any more: its order was cancelled, or its deadline passed.
    Expired,
}

/// A sandbox checkout session, read from the order that holds it.
#[derive(Debug, Clone)]
pub struct Session {
    /// Its id.
    pub id: String,
    /// The order it pays.
    pub order: OrderRow,
    /// Where it is.
    pub state: SessionState,
    /// The product's name, for product orders (when the product is still known).
    pub product_name: Option<String>,
    /// Where the buyer goes back to: the order's page in the web app.
    pub return_url: String,
}

/// Why a checkout page cannot do what the buyer asked.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No order holds a sandbox session with this id.
    #[error("no sandbox checkout session has this id")]
    Unknown,
    /// The session is paid or expired: its buttons do nothing any more.
    #[error("the checkout session is finished ({:?})", .0.state)]
    Finished(Box<Session>),
    /// The database failed.
    #[error(transparent)]
    Order(#[from] OrderError),
}

/// The flow behind the sandbox's checkout pages: reads a session from ordering's tables, pays
/// it (the signed webhook) or lets the buyer leave (see the [module](self) for what Cancel
/// does and why).
#[derive(Debug, Clone)]
pub struct SandboxCheckout {
    store: Store,
    webhooks: SandboxWebhooks,
    return_url: String,
}

impl SandboxCheckout {
    /// Pages over `store`, paying through `webhooks`, sending buyers back to `return_url`
    /// (`{ORDER_ID}` is replaced by the order).
    pub fn new(store: Store, webhooks: SandboxWebhooks, return_url: &str) -> Self {
        Self {
            store,
            webhooks,
            return_url: return_url.to_owned(),
        }
    }

    /// Where buyers go back to, `{ORDER_ID}` not replaced.
    pub fn return_url_template(&self) -> &str {
        &self.return_url
    }

    /// Where the buyer of `order` goes back to.
    pub fn return_url(&self, order: Uuid) -> String {
        self.return_url.replace("{ORDER_ID}", &order.to_string())
    }

    /// The session `id`, without its product's name.
    async fn find(&self, id: &str) -> Result<Session, SessionError> {
        if order_of_session(id).is_none() {
            return Err(SessionError::Unknown);
        }
        let order = self
            .store
            .order_by_session(id)
            .await?
            .filter(|order| order.payment_provider.as_deref() == Some(PROVIDER))
            .ok_or(SessionError::Unknown)?;
        let state = match order.status {
            OrderStatus::PendingPayment if order.payment_deadline > Utc::now() => {
                SessionState::Open
            }
            OrderStatus::PendingPayment | OrderStatus::Cancelled => SessionState::Expired,
            OrderStatus::Paid | OrderStatus::Refunded => SessionState::Paid,
        };
        Ok(Session {
            id: id.to_owned(),
            return_url: self.return_url(order.id),
            order,
            state,
            product_name: None,
        })
    }

    /// The session `id`, as its page shows it (in any state).
    pub async fn session(&self, id: &str) -> Result<Session, SessionError> {
        let mut session = self.find(id).await?;
        if let Some(product) = session.order.product_id {
            session.product_name = match self.store.product(product).await {
                Ok(product) => Some(product.name),
                Err(OrderError::ProductNotFound(_)) => None,
                Err(err) => return Err(err.into()),
            };
        }
        Ok(session)
    }

    /// The Pay button: sends the signed `checkout.session.completed` of an open session and
    /// waits (a few seconds at most) for ordering to acknowledge it; a paid session is left as
    /// it is. Returns where to send the buyer. An expired session is [`SessionError::Finished`].
    pub async fn pay(&self, id: &str) -> Result<String, SessionError> {
        let session = self.find(id).await?;
        match session.state {
            SessionState::Open => {
                let delivery = self
                    .webhooks
                    .send(completed_event(&Charge::of_order(&session.order)));
                match tokio::time::timeout(PAY_WAIT, delivery).await {
                    Ok(Ok(true)) => {}
                    _ => tracing::warn!(
                        order = %session.order.id,
                        "the sandbox payment is not acknowledged yet; the buyer goes back before it is"
                    ),
                }
                Ok(session.return_url)
            }
            SessionState::Paid => Ok(session.return_url),
            SessionState::Expired => Err(SessionError::Finished(Box::new(session))),
        }
    }

    /// The Cancel button: the buyer leaves an open checkout, which stays open (nothing is sent,
    /// the order stays unpaid until it is paid or its deadline passes). Returns where to send
    /// the buyer. A paid or expired session is [`SessionError::Finished`].
    pub async fn cancel(&self, id: &str) -> Result<String, SessionError> {
        let session = self.find(id).await?;
        match session.state {
            SessionState::Open => Ok(session.return_url),
            SessionState::Paid | SessionState::Expired => {
                Err(SessionError::Finished(Box::new(session)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payments::WebhookEvent;

    #[test]
    fn session_ids_name_their_order_and_nothing_else_does() {
        let order = Uuid::now_v7();
        let session = session_id(order);
        assert_eq!(order_of_session(&session), Some(order));
        for other in [
            "",
            "cs_sandbox_",
            "cs_test_0123",
            &format!("cs_sandbox_{order}"),
            &format!("cs_sandbox_{}0", order.simple()),
            "cs_sandbox_zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
        ] {
            assert_eq!(order_of_session(other), None, "{other}");
        }
    }

    #[test]
    fn the_events_are_what_ordering_understands_and_one_per_session() {
        let order = Uuid::now_v7();
        let charge = Charge {
            order,
            amount_minor: 1990,
            currency: "EUR",
        };
        let paid = completed_event(&charge);
        let again = completed_event(&charge);
        let event = WebhookEvent::parse(paid.as_bytes()).expect("completed");
        assert_eq!(
            event.id(),
            WebhookEvent::parse(again.as_bytes()).expect("again").id()
        );
        assert!(matches!(
            event,
            WebhookEvent::CheckoutCompleted { paid: true, amount_minor: Some(1990), ref currency, .. }
                if currency.as_deref() == Some("EUR")
        ));
        assert_eq!(
            event.payment_intent(),
            Some(format!("pi_sandbox_{}", order.simple()).as_str())
        );
        let expired = WebhookEvent::parse(expired_event(order).as_bytes()).expect("expired");
        assert_eq!(expired.event_type(), EXPIRED);
        assert!(expired.order().is_none(), "acknowledged, not applied");
    }
}
