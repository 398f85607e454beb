//! Payments: the [`PaymentProvider`] port, its Stripe-compatible adapter ([`stripe`]), the
//! sandbox used for local runs ([`sandbox`]), webhook signatures ([`signature`]) and the webhook
//! events ordering understands ([`WebhookEvent`]).

pub mod sandbox;
pub mod signature;
pub mod stripe;

use async_trait::async_trait;
use serde_json::Value;
use uuid::Uuid;

/// What to charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutRequest {
    /// The order (also sent as `client_reference_id` and `metadata[order_id]`).
    pub order_id: Uuid,
    /// Amount, minor units.
    pub amount_minor: i64,
    /// ISO 4217 code (upper case; providers that want lower case get it lowered).
    pub currency: String,
    /// What the buyer sees.
    pub description: String,
}

/// A started checkout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    /// The provider's session id.
    pub session_id: String,
    /// Where the buyer pays.
    pub url: String,
}

/// A refund the provider accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    /// The provider's refund id.
    pub refund_id: String,
    /// The provider's status (`succeeded`, `pending`).
    pub status: String,
}

/// Why the provider did not do it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// The provider refused the request (its message).
    #[error("the payment provider refused: {0}")]
    Rejected(String),
    /// The provider could not be reached or failed; retry later.
    #[error("the payment provider is unavailable: {0}")]
    Unavailable(String),
}

/// A payment service provider.
#[async_trait]
pub trait PaymentProvider: Send + Sync + 'static {
    /// Short name stored on orders (`stripe`, `sandbox`).
    fn name(&self) -> &'static str;

    /// Starts a hosted checkout for an order. Idempotent per order.
    async fn create_checkout(&self, request: &CheckoutRequest) -> Result<Checkout, PaymentError>;

    /// Refunds the payment of an order in full. Idempotent per order.
    async fn refund(&self, order_id: Uuid, payment_intent: &str) -> Result<Refund, PaymentError>;

    /// Expires a checkout that must not be paid any more (its order was cancelled). Best effort.
    async fn expire_checkout(&self, session_id: &str) -> Result<(), PaymentError>;
}

/// How a webhook names its order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderRef {
    /// By id (`client_reference_id` or `metadata.order_id`).
    Id(Uuid),
    /// By checkout session.
    Session(String),
    /// By payment intent.
    PaymentIntent(String),
}

/// A webhook event ordering understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookEvent {
    /// A checkout finished (`checkout.session.completed`, `…async_payment_succeeded`).
    CheckoutCompleted {
        /// Provider event id.
        event_id: String,
        /// Event type.
        event_type: String,
        /// The order.
        order: OrderRef,
        /// The session.
        session_id: String,
        /// The payment intent (needed to refund).
        payment_intent: Option<String>,
        /// Whether the money is there (`payment_status = paid`).
        paid: bool,
        /// Amount charged, minor units.
        amount_minor: Option<i64>,
        /// Currency charged (upper case).
        currency: Option<String>,
    },
    /// A charge was refunded (`charge.refunded`), possibly from the provider's dashboard.
    Refunded {
        /// Provider event id.
        event_id: String,
        /// Event type.
        event_type: String,
        /// The order.
        order: OrderRef,
    },
    /// Any other event: acknowledged, not applied.
    Other {
        /// Provider event id.
        event_id: String,
        /// Event type.
        event_type: String,
    },
}

/// Why a webhook body is not an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a webhook event: {0}")]
pub struct BadEvent(pub String);

fn text(value: &Value, pointer: &str) -> Option<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn order_ref(object: &Value) -> Option<OrderRef> {
    let by_id = text(object, "/client_reference_id")
        .or_else(|| text(object, "/metadata/order_id"))
        .and_then(|s| s.parse::<Uuid>().ok())
        .map(OrderRef::Id);
    by_id.or_else(|| text(object, "/payment_intent").map(OrderRef::PaymentIntent))
}

impl WebhookEvent {
    /// Parses a Stripe-shaped event (`{id, type, data: {object}}`).
    pub fn parse(body: &[u8]) -> Result<Self, BadEvent> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| BadEvent(format!("invalid JSON: {e}")))?;
        let event_id = text(&value, "/id").ok_or_else(|| BadEvent("no `id`".into()))?;
        let event_type = text(&value, "/type").ok_or_else(|| BadEvent("no `type`".into()))?;
        let object = value
            .pointer("/data/object")
            .filter(|o| o.is_object())
            .ok_or_else(|| BadEvent("no `data.object`".into()))?;
        Ok(match event_type.as_str() {
            "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
                let session_id =
                    text(object, "/id").ok_or_else(|| BadEvent("no session `id`".into()))?;
                Self::CheckoutCompleted {
                    order: order_ref(object).unwrap_or(OrderRef::Session(session_id.clone())),
                    session_id,
                    payment_intent: text(object, "/payment_intent"),
                    paid: text(object, "/payment_status").as_deref() == Some("paid"),
                    amount_minor: object.pointer("/amount_total").and_then(Value::as_i64),
                    currency: text(object, "/currency").map(|c| c.to_ascii_uppercase()),
                    event_id,
                    event_type,
                }
            }
            "charge.refunded" => Self::Refunded {
                order: order_ref(object).ok_or_else(|| {
                    BadEvent("the charge names no order or payment intent".into())
                })?,
                event_id,
                event_type,
            },
            _ => Self::Other {
                event_id,
                event_type,
            },
        })
    }

    /// The provider's event id.
    pub fn id(&self) -> &str {
        match self {
            Self::CheckoutCompleted { event_id, .. }
            | Self::Refunded { event_id, .. }
            | Self::Other { event_id, .. } => event_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn checkout_completions_name_their_order() {
        let order = Uuid::now_v7();
        let body = json!({
            "id": "evt_1", "type": "checkout.session.completed",
            "data": {"object": {"id": "cs_1", "client_reference_id": order.to_string(),
                     "payment_intent": "pi_1", "payment_status": "paid",
                     "amount_total": 990, "currency": "eur"}}
        });
        let event = WebhookEvent::parse(body.to_string().as_bytes()).expect("event");
        assert_eq!(
            event,
            WebhookEvent::CheckoutCompleted {
                event_id: "evt_1".into(),
                event_type: "checkout.session.completed".into(),
                order: OrderRef::Id(order),
                session_id: "cs_1".into(),
                payment_intent: Some("pi_1".into()),
                paid: true,
                amount_minor: Some(990),
                currency: Some("EUR".into()),
            }
        );
        assert_eq!(event.id(), "evt_1");
    }

    #[test]
    fn refunds_fall_back_to_the_payment_intent_and_others_are_kept_aside() {
        let body = json!({"id": "evt_2", "type": "charge.refunded",
                          "data": {"object": {"id": "ch_1", "payment_intent": "pi_9"}}});
        assert!(matches!(
            WebhookEvent::parse(body.to_string().as_bytes()),
            Ok(WebhookEvent::Refunded { order: OrderRef::PaymentIntent(pi), .. }) if pi == "pi_9"
        ));
        let body = json!({"id": "evt_3", "type": "customer.created", "data": {"object": {}}});
        assert!(matches!(
            WebhookEvent::parse(body.to_string().as_bytes()),
            Ok(WebhookEvent::Other { .. })
        ));
    }

    #[test]
    fn bodies_that_are_not_events_say_why() {
        assert!(WebhookEvent::parse(b"nope").is_err());
        assert!(WebhookEvent::parse(br#"{"type":"x","data":{"object":{}}}"#).is_err());
        assert!(WebhookEvent::parse(br#"{"id":"e","type":"x"}"#).is_err());
    }
}
