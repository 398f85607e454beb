//! What the API reads and writes: request bodies (parsed into the flows' types) and the JSON
//! views of products, orders and payments.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::checkout::OrderRequest;
use crate::domain::{CancelReason, InvalidInput, OrderKind, OrderStatus, ProductDraft};
pub use crate::payments::PaymentStarted;
use crate::payments::WebhookOutcome;
use crate::store::{OrderRow, ProductRow};

/// Body of `POST /v1/products` and `PUT /v1/products/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProductInput {
    /// Name (1 to 200 characters).
    #[schema(schema_with = product_name_schema)]
    pub name: String,
    /// Price in minor units of the country's currency.
    #[schema(schema_with = price_schema)]
    pub price_minor: i64,
    /// Units in stock.
    #[schema(schema_with = stock_schema)]
    pub stock: u32,
}

// The schemas of the input, from the limits `ProductDraft::parse` checks.
fn product_name_schema() -> utoipa::openapi::schema::Object {
    pulse_kit::text::schema(crate::domain::MAX_PRODUCT_NAME, "Name")
}
fn price_schema() -> utoipa::openapi::schema::Object {
    pulse_kit::openapi::integer_schema(
        0,
        crate::domain::MAX_AMOUNT_MINOR,
        "Price in minor units of the country's currency",
    )
}
fn stock_schema() -> utoipa::openapi::schema::Object {
    pulse_kit::openapi::integer_schema(0, i64::from(crate::domain::MAX_STOCK), "Units in stock")
}

impl ProductInput {
    /// The checked product.
    pub fn draft(&self) -> Result<ProductDraft, InvalidInput> {
        ProductDraft::parse(&self.name, self.price_minor, self.stock)
    }
}

/// A list of products.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProductList {
    /// By name.
    pub items: Vec<ProductRow>,
}

/// An order.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderView {
    /// Id.
    pub id: Uuid,
    /// What it buys.
    pub kind: OrderKind,
    /// Status.
    pub status: OrderStatus,
    /// Campaign (seckill orders).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<String>,
    /// Product (product orders).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_id: Option<Uuid>,
    /// Units.
    pub quantity: i32,
    /// Unit price, minor units.
    pub unit_price_minor: i64,
    /// Before the voucher.
    pub subtotal_minor: i64,
    /// What the voucher took off.
    pub discount_minor: i64,
    /// To pay.
    pub amount_minor: i64,
    /// ISO 4217 currency.
    pub currency: String,
    /// Voucher used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voucher_id: Option<Uuid>,
    /// Unpaid at this time, the order is cancelled (UTC).
    pub payment_deadline: DateTime<Utc>,
    /// The same in the country's time zone (RFC 3339 with offset).
    pub payment_deadline_local: String,
    /// Created (UTC).
    pub created_at: DateTime<Utc>,
    /// Paid (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paid_at: Option<DateTime<Utc>>,
    /// Cancelled (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelled_at: Option<DateTime<Utc>>,
    /// Why: `payment-timeout` or `cancelled-by-buyer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<CancelReason>,
    /// Refunded (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refunded_at: Option<DateTime<Utc>>,
    /// Where to pay, once a payment was started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkout_url: Option<String>,
}

impl OrderView {
    /// The view of `row`, with its deadline also in `tz`.
    pub fn from_row(row: OrderRow, tz: chrono_tz::Tz) -> Self {
        Self {
            payment_deadline_local: row
                .payment_deadline
                .with_timezone(&tz)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            id: row.id,
            kind: row.kind,
            status: row.status,
            campaign_id: row.campaign_id,
            product_id: row.product_id,
            quantity: row.quantity,
            unit_price_minor: row.unit_price_minor,
            subtotal_minor: row.subtotal_minor,
            discount_minor: row.discount_minor,
            amount_minor: row.amount_minor,
            currency: row.currency,
            voucher_id: row.voucher_id,
            payment_deadline: row.payment_deadline,
            created_at: row.created_at,
            paid_at: row.paid_at,
            cancelled_at: row.cancelled_at,
            cancel_reason: row.cancel_reason,
            refunded_at: row.refunded_at,
            checkout_url: row.checkout_url,
        }
    }
}

/// Body of `POST /v1/orders`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderInput {
    /// The product.
    pub product_id: Uuid,
    /// Units (1 to 100, default 1).
    #[serde(default = "one")]
    #[schema(schema_with = quantity_schema)]
    pub quantity: u32,
    /// A voucher from the caller's wallet to take off the price.
    #[serde(default)]
    pub voucher_id: Option<Uuid>,
}

fn one() -> u32 {
    1
}

fn quantity_schema() -> utoipa::openapi::schema::Object {
    let mut schema = pulse_kit::openapi::integer_schema(
        1,
        i64::from(crate::domain::MAX_QUANTITY),
        "Units (default 1)",
    );
    schema.default = Some(serde_json::json!(1));
    schema
}

impl OrderInput {
    /// What to ask the checkout for.
    pub fn request(&self) -> OrderRequest {
        OrderRequest {
            product_id: self.product_id,
            quantity: self.quantity,
            voucher_id: self.voucher_id,
        }
    }
}

/// A list of orders.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderList {
    /// Newest first.
    pub items: Vec<OrderView>,
}

/// The body of the payment provider's webhook, as the document states it
/// ([`crate::payments::webhook::event_schema`]); the handler reads the raw bytes, which the
/// signature covers.
pub struct WebhookEventBody;

impl utoipa::PartialSchema for WebhookEventBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::Schema::Object(pulse_kit::openapi::json_schema(
            crate::payments::webhook::event_schema(),
        ))
        .into()
    }
}

impl utoipa::ToSchema for WebhookEventBody {}

/// The webhook's answer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAck {
    /// Always true.
    pub received: bool,
    /// What happened: `paid`, `refunded`, `duplicate`, `already-paid`, `late-payment`,
    /// `amount-mismatch`, `not-paid-yet`, `ignored`.
    pub outcome: String,
}

impl From<WebhookOutcome> for WebhookAck {
    fn from(outcome: WebhookOutcome) -> Self {
        Self {
            received: true,
            outcome: outcome.as_str().to_owned(),
        }
    }
}
