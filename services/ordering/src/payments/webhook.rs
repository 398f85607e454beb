//! The provider's webhook events: what ordering understands of them ([`WebhookEvent`]), and
//! what one means for the order it names ([`decide`], a pure function over typed values).

use serde_json::Value;
use uuid::Uuid;

use crate::domain::{OrderStatus, Transition};
use crate::store::OrderRow;

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

/// Event types of a finished checkout.
pub const CHECKOUT_COMPLETED: [&str; 2] = [
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
];
/// Event type of a refunded charge.
pub const CHARGE_REFUNDED: &str = "charge.refunded";

/// A UUID in its hyphenated form (JSON Schema's `format: uuid`), at `pointer`.
fn uuid_at(object: &Value, pointer: &str) -> Option<Uuid> {
    text(object, pointer)
        .filter(|s| s.len() == 36)
        .and_then(|s| s.parse::<Uuid>().ok())
}

/// The order a checkout or charge names: `client_reference_id`, else `metadata.order_id`
/// (order ids), else `payment_intent`.
fn order_ref(object: &Value) -> Option<OrderRef> {
    uuid_at(object, "/client_reference_id")
        .or_else(|| uuid_at(object, "/metadata/order_id"))
        .map(OrderRef::Id)
        .or_else(|| text(object, "/payment_intent").map(OrderRef::PaymentIntent))
}

/// The JSON Schema of the events [`WebhookEvent::parse`] takes: `id`, `type` and
/// `data.object`; a checkout names its session, a refunded charge its order or payment.
pub fn event_schema() -> Value {
    let text = serde_json::json!({ "type": "string", "minLength": 1 });
    let uuid = serde_json::json!({ "type": "string", "format": "uuid" });
    let object_is = |schema: Value| serde_json::json!({ "properties": { "data": { "properties": { "object": schema } } } });
    serde_json::json!({
        "type": "object",
        "description": "A Stripe-shaped event: `{id, type, data: {object}}`. Checkouts (`checkout.session.completed`, `checkout.session.async_payment_succeeded`) and refunded charges (`charge.refunded`) are applied to the order they name; any other type is acknowledged and ignored.",
        "required": ["id", "type", "data"],
        "properties": {
            "id": { "description": "The provider's event id; an event comes into effect once", "type": "string", "minLength": 1 },
            "type": text,
            "data": {
                "type": "object",
                "required": ["object"],
                "properties": { "object": { "type": "object" } }
            }
        },
        "allOf": [
            {
                "if": { "properties": { "type": { "enum": CHECKOUT_COMPLETED } } },
                "then": object_is(serde_json::json!({
                    "required": ["id"],
                    "properties": { "id": text }
                }))
            },
            {
                "if": { "properties": { "type": { "const": CHARGE_REFUNDED } } },
                "then": object_is(serde_json::json!({
                    "anyOf": [
                        { "required": ["client_reference_id"], "properties": { "client_reference_id": uuid } },
                        { "required": ["metadata"], "properties": { "metadata": {
                            "type": "object", "required": ["order_id"], "properties": { "order_id": uuid }
                        } } },
                        { "required": ["payment_intent"], "properties": { "payment_intent": text } }
                    ]
                }))
            }
        ]
    })
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
            t if CHECKOUT_COMPLETED.contains(&t) => {
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
            CHARGE_REFUNDED => Self::Refunded {
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

    /// The provider's event type.
    pub fn event_type(&self) -> &str {
        match self {
            Self::CheckoutCompleted { event_type, .. }
            | Self::Refunded { event_type, .. }
            | Self::Other { event_type, .. } => event_type,
        }
    }

    /// The order it is about, if it is about one.
    pub fn order(&self) -> Option<&OrderRef> {
        match self {
            Self::CheckoutCompleted { order, .. } | Self::Refunded { order, .. } => Some(order),
            Self::Other { .. } => None,
        }
    }

    /// The payment a completed checkout made (what a refund needs).
    pub fn payment_intent(&self) -> Option<&str> {
        match self {
            Self::CheckoutCompleted { payment_intent, .. } => payment_intent.as_deref(),
            _ => None,
        }
    }
}

/// What a webhook event means for the order it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The order is paid now.
    Pay,
    /// The order is refunded now.
    Refund,
    /// The checkout finished without the money (a payment method that settles later).
    NotPaidYet,
    /// The amount or currency charged is not the order's: nothing changes.
    AmountMismatch,
    /// The order was paid already (or refunded since).
    AlreadyPaid,
    /// Paid after the order was cancelled: the money must go back, when the payment is known.
    LatePayment {
        /// What to refund.
        payment_intent: Option<String>,
    },
    /// Nothing to change.
    Ignore,
}

impl Decision {
    /// The move it makes the order take, and the outcome when the order made it already.
    pub fn transition(&self) -> Option<(Transition, WebhookOutcome)> {
        match self {
            Self::Pay => Some((Transition::Pay, WebhookOutcome::AlreadyPaid)),
            Self::Refund => Some((Transition::Refund, WebhookOutcome::Ignored)),
            _ => None,
        }
    }

    /// The outcome the decision stands for (recorded with the event, and answered).
    pub fn outcome(&self) -> WebhookOutcome {
        match self {
            Self::Pay => WebhookOutcome::Paid,
            Self::Refund => WebhookOutcome::Refunded,
            Self::NotPaidYet => WebhookOutcome::NotPaidYet,
            Self::AmountMismatch => WebhookOutcome::AmountMismatch,
            Self::AlreadyPaid => WebhookOutcome::AlreadyPaid,
            Self::LatePayment { .. } => WebhookOutcome::LatePayment,
            Self::Ignore => WebhookOutcome::Ignored,
        }
    }
}

/// Decides what `event` means for `order`, the order it names. Pure: the caller locks the order,
/// records the decision with the event, and applies it.
pub fn decide(event: &WebhookEvent, order: &OrderRow) -> Decision {
    match event {
        WebhookEvent::CheckoutCompleted {
            paid,
            payment_intent,
            amount_minor,
            currency,
            ..
        } => {
            let matches = amount_minor.is_none_or(|a| a == order.amount_minor)
                && currency.as_ref().is_none_or(|c| *c == order.currency);
            if !paid {
                Decision::NotPaidYet
            } else if !matches {
                Decision::AmountMismatch
            } else {
                match order.status {
                    OrderStatus::PendingPayment => Decision::Pay,
                    OrderStatus::Paid | OrderStatus::Refunded => Decision::AlreadyPaid,
                    OrderStatus::Cancelled => Decision::LatePayment {
                        payment_intent: payment_intent.clone(),
                    },
                }
            }
        }
        WebhookEvent::Refunded { .. } if order.status == OrderStatus::Paid => Decision::Refund,
        WebhookEvent::Refunded { .. } | WebhookEvent::Other { .. } => Decision::Ignore,
    }
}

/// What handling a webhook did (the `outcome` of its answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// The order is paid.
    Paid,
    /// The order is refunded.
    Refunded,
    /// This event was handled before: nothing changed.
    Duplicate,
    /// The order was paid already.
    AlreadyPaid,
    /// Paid after the order was cancelled; the refund is not done yet (the sweeper retries).
    LatePayment,
    /// Paid after the order was cancelled, and refunded.
    LatePaymentRefunded,
    /// The amount or currency charged is not the order's.
    AmountMismatch,
    /// The checkout finished without the money.
    NotPaidYet,
    /// Nothing to do.
    Ignored,
}

impl WebhookOutcome {
    /// Its name in answers and in the record of events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Paid => "paid",
            Self::Refunded => "refunded",
            Self::Duplicate => "duplicate",
            Self::AlreadyPaid => "already-paid",
            Self::LatePayment => "late-payment",
            Self::LatePaymentRefunded => "late-payment-refunded",
            Self::AmountMismatch => "amount-mismatch",
            Self::NotPaidYet => "not-paid-yet",
            Self::Ignored => "ignored",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_event_schema_takes_exactly_the_events_that_parse() {
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&event_schema())
            .expect("a valid schema");
        let order = "0f8fad5b-d9cb-469f-a165-70867728950e";
        let types = [
            json!("checkout.session.completed"),
            json!("checkout.session.async_payment_succeeded"),
            json!("charge.refunded"),
            json!("customer.created"),
            json!(""),
            json!(7),
        ];
        let objects = [
            json!({}),
            json!({ "id": "cs_1" }),
            json!({ "id": "" }),
            json!({ "id": 5 }),
            json!({ "client_reference_id": order }),
            json!({ "client_reference_id": order.replace('-', "") }),
            json!({ "client_reference_id": "not-an-order", "metadata": { "order_id": order } }),
            json!({ "metadata": { "order_id": "nope" } }),
            json!({ "metadata": [] }),
            json!({ "payment_intent": "pi_1" }),
            json!({ "payment_intent": "" }),
            json!({ "id": "cs_2", "client_reference_id": order, "payment_status": "paid" }),
            json!([]),
            json!("text"),
        ];
        let mut events = vec![json!(null), json!([]), json!({}), json!({ "id": "evt" })];
        for event_type in &types {
            for object in &objects {
                for id in [json!("evt_1"), json!(""), json!(null)] {
                    events.push(
                        json!({ "id": id, "type": event_type, "data": { "object": object } }),
                    );
                }
                events.push(json!({ "id": "evt_2", "type": event_type, "data": object }));
            }
        }
        let mut parsed = 0;
        for event in &events {
            let body = serde_json::to_vec(event).expect("JSON");
            let ok = WebhookEvent::parse(&body).is_ok();
            parsed += usize::from(ok);
            assert_eq!(validator.is_valid(event), ok, "{event}");
        }
        assert!(parsed >= 20, "only {parsed} events parsed");
    }

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

    fn order(status: OrderStatus) -> OrderRow {
        let now = chrono::Utc::now();
        OrderRow {
            id: Uuid::now_v7(),
            kind: crate::domain::OrderKind::Product,
            user_subject: "ann".into(),
            campaign_id: None,
            product_id: Some(Uuid::now_v7()),
            quantity: 1,
            unit_price_minor: 990,
            subtotal_minor: 990,
            discount_minor: 0,
            amount_minor: 990,
            currency: "EUR".into(),
            voucher_id: None,
            status,
            payment_deadline: now,
            created_at: now,
            paid_at: None,
            cancelled_at: None,
            cancel_reason: None,
            refunded_at: None,
            payment_provider: None,
            checkout_session_id: None,
            checkout_url: None,
            payment_intent_id: None,
            refund_id: None,
        }
    }

    fn completed(paid: bool, amount: i64, currency: &str) -> WebhookEvent {
        WebhookEvent::CheckoutCompleted {
            event_id: "evt".into(),
            event_type: "checkout.session.completed".into(),
            order: OrderRef::Session("cs".into()),
            session_id: "cs".into(),
            payment_intent: Some("pi".into()),
            paid,
            amount_minor: Some(amount),
            currency: Some(currency.into()),
        }
    }

    #[test]
    fn a_completed_checkout_pays_an_unpaid_order_once_and_only_with_the_right_amount() {
        use OrderStatus::*;
        let ok = completed(true, 990, "EUR");
        assert_eq!(decide(&ok, &order(PendingPayment)), Decision::Pay);
        assert_eq!(decide(&ok, &order(Paid)), Decision::AlreadyPaid);
        assert_eq!(decide(&ok, &order(Refunded)), Decision::AlreadyPaid);
        assert_eq!(
            decide(&ok, &order(Cancelled)),
            Decision::LatePayment {
                payment_intent: Some("pi".into())
            }
        );
        assert_eq!(
            decide(&completed(false, 990, "EUR"), &order(PendingPayment)),
            Decision::NotPaidYet
        );
        for wrong in [completed(true, 991, "EUR"), completed(true, 990, "USD")] {
            assert_eq!(
                decide(&wrong, &order(PendingPayment)),
                Decision::AmountMismatch
            );
        }
    }

    #[test]
    fn a_refund_applies_to_paid_orders_only_and_other_events_change_nothing() {
        let refunded = WebhookEvent::Refunded {
            event_id: "evt".into(),
            event_type: "charge.refunded".into(),
            order: OrderRef::PaymentIntent("pi".into()),
        };
        assert_eq!(
            decide(&refunded, &order(OrderStatus::Paid)),
            Decision::Refund
        );
        for status in [
            OrderStatus::PendingPayment,
            OrderStatus::Cancelled,
            OrderStatus::Refunded,
        ] {
            assert_eq!(decide(&refunded, &order(status)), Decision::Ignore);
        }
        let other = WebhookEvent::Other {
            event_id: "evt".into(),
            event_type: "customer.created".into(),
        };
        assert_eq!(
            decide(&other, &order(OrderStatus::PendingPayment)),
            Decision::Ignore
        );
        assert_eq!(Decision::Pay.outcome().as_str(), "paid");
        assert_eq!(Decision::Ignore.outcome().as_str(), "ignored");
    }

    #[test]
    fn bodies_that_are_not_events_say_why() {
        assert!(WebhookEvent::parse(b"nope").is_err());
        assert!(WebhookEvent::parse(br#"{"type":"x","data":{"object":{}}}"#).is_err());
        assert!(WebhookEvent::parse(br#"{"id":"e","type":"x"}"#).is_err());
    }
}
