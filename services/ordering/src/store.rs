//! PostgreSQL adapter of ordering: products, orders, payment events, the sweeper's query.
//! Every state change commits together with its outbox event; every statement binds its values.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pulse_kit::outbox::{Outbox, OutboxError};
use pulse_marketing::reservation::Reservation;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::{self, AmountError, OrderKind, OrderStatus, Outcome, Transition};
use crate::payments::OrderRef;

/// Event: an order exists.
pub const ORDER_CREATED: &str = "OrderCreated";
/// Event: an order was paid.
pub const ORDER_PAID: &str = "OrderPaid";
/// Event: an order was cancelled; its stock is back.
pub const ORDER_CANCELLED: &str = "OrderCancelled";
/// Event: an order was refunded.
pub const ORDER_REFUNDED: &str = "OrderRefunded";

/// Why an order operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// No such product.
    #[error("product {0} does not exist")]
    ProductNotFound(Uuid),
    /// Not enough stock.
    #[error("not enough stock: {available} left")]
    OutOfStock {
        /// Units left.
        available: i32,
    },
    /// No such order (or not the caller's).
    #[error("order {0} does not exist")]
    OrderNotFound(Uuid),
    /// The order's status does not allow it.
    #[error("order {id} is {status}: {action} is not possible")]
    WrongStatus {
        /// The order.
        id: Uuid,
        /// Its status.
        status: &'static str,
        /// What was attempted.
        action: &'static str,
    },
    /// Amounts do not add up.
    #[error(transparent)]
    Amount(#[from] AmountError),
    /// Database failure.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Outbox failure.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}

/// A product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductRow {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Price, minor units.
    pub price_minor: i64,
    /// ISO 4217 currency.
    pub currency: String,
    /// Units in stock.
    pub stock: i32,
    /// Created (UTC).
    pub created_at: DateTime<Utc>,
    /// Last changed (UTC).
    pub updated_at: DateTime<Utc>,
}

/// An order.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OrderRow {
    /// Id.
    pub id: Uuid,
    /// `SECKILL` or `PRODUCT`.
    pub kind: String,
    /// Buyer.
    pub user_subject: String,
    /// Campaign (seckill).
    pub campaign_id: Option<String>,
    /// Product (product orders).
    pub product_id: Option<Uuid>,
    /// Units.
    pub quantity: i32,
    /// Unit price.
    pub unit_price_minor: i64,
    /// unit × quantity.
    pub subtotal_minor: i64,
    /// Voucher discount.
    pub discount_minor: i64,
    /// To pay.
    pub amount_minor: i64,
    /// Currency.
    pub currency: String,
    /// Voucher used.
    pub voucher_id: Option<Uuid>,
    /// Status.
    pub status: String,
    /// Cancelled if unpaid at this time.
    pub payment_deadline: DateTime<Utc>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Paid.
    pub paid_at: Option<DateTime<Utc>>,
    /// Cancelled.
    pub cancelled_at: Option<DateTime<Utc>>,
    /// Why it was cancelled.
    pub cancel_reason: Option<String>,
    /// Refunded.
    pub refunded_at: Option<DateTime<Utc>>,
    /// Provider that holds its payment.
    pub payment_provider: Option<String>,
    /// Checkout session.
    pub checkout_session_id: Option<String>,
    /// Checkout URL.
    pub checkout_url: Option<String>,
    /// Payment intent (to refund).
    pub payment_intent_id: Option<String>,
    /// Refund id.
    pub refund_id: Option<String>,
}

impl OrderRow {
    /// The parsed status.
    pub fn status(&self) -> OrderStatus {
        OrderStatus::parse(&self.status).unwrap_or(OrderStatus::Cancelled)
    }

    /// The parsed kind.
    pub fn kind(&self) -> OrderKind {
        OrderKind::parse(&self.kind).unwrap_or(OrderKind::Product)
    }
}

/// The payload of every order event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderEvent {
    /// The order.
    pub order_id: Uuid,
    /// `SECKILL` or `PRODUCT`.
    pub kind: String,
    /// Status after the event.
    pub status: String,
    /// Buyer.
    pub user_id: String,
    /// Campaign (seckill orders).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<String>,
    /// Product (product orders).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_id: Option<Uuid>,
    /// Units.
    pub quantity: i32,
    /// What the buyer pays, minor units.
    pub amount_minor: i64,
    /// Currency.
    pub currency: String,
    /// Voucher used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voucher_id: Option<Uuid>,
    /// Why it was cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl From<&OrderRow> for OrderEvent {
    fn from(row: &OrderRow) -> Self {
        Self {
            order_id: row.id,
            kind: row.kind.clone(),
            status: row.status.clone(),
            user_id: row.user_subject.clone(),
            campaign_id: row.campaign_id.clone(),
            product_id: row.product_id,
            quantity: row.quantity,
            amount_minor: row.amount_minor,
            currency: row.currency.clone(),
            voucher_id: row.voucher_id,
            reason: row.cancel_reason.clone(),
        }
    }
}

/// A product order to place.
#[derive(Debug, Clone)]
pub struct NewProductOrder {
    /// Its id.
    pub id: Uuid,
    /// Buyer.
    pub user: String,
    /// Product.
    pub product_id: Uuid,
    /// Units.
    pub quantity: u32,
    /// Voucher held for it, and what it takes off.
    pub voucher: Option<(Uuid, i64)>,
    /// Payment time allowed.
    pub payment_timeout: Duration,
}

/// What a webhook did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// The order changed.
    Applied(Box<OrderRow>),
    /// This event was applied before: nothing changed.
    Duplicate,
    /// Recorded, nothing to change (`outcome` says why).
    NoChange(&'static str),
    /// No order matches: nothing recorded.
    UnknownOrder,
    /// Paid after its order was cancelled: the money must go back.
    LatePayment {
        /// The order.
        order: Uuid,
        /// What to refund.
        payment_intent: String,
    },
}

const ORDER_COLUMNS: &str = "id, kind, user_subject, campaign_id, product_id, quantity, unit_price_minor, subtotal_minor, discount_minor, amount_minor, currency, voucher_id, status, payment_deadline, created_at, paid_at, cancelled_at, cancel_reason, refunded_at, payment_provider, checkout_session_id, checkout_url, payment_intent_id, refund_id";
const PRODUCT_COLUMNS: &str = "id, name, price_minor, currency, stock, created_at, updated_at";

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Ordering's tables.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    outbox: Outbox,
}

impl Store {
    /// The store over ordering's pool and outbox.
    pub fn new(pool: PgPool, outbox: Outbox) -> Self {
        Self { pool, outbox }
    }

    async fn publish(
        &self,
        tx: &mut PgConnection,
        event_type: &str,
        row: &OrderRow,
    ) -> Result<(), OrderError> {
        self.outbox
            .append(tx, &row.id.to_string(), event_type, &OrderEvent::from(row))
            .await?;
        Ok(())
    }

    // ---------------------------------------------------------------------------- products

    /// Creates a product.
    pub async fn create_product(
        &self,
        name: &str,
        price_minor: i64,
        currency: &str,
        stock: i32,
    ) -> Result<ProductRow, OrderError> {
        Ok(sqlx::query_as::<_, ProductRow>(&format!(
            "INSERT INTO products (id, name, price_minor, currency, stock) VALUES ($1, $2, $3, $4, $5)
             RETURNING {PRODUCT_COLUMNS}"
        ))
        .bind(pulse_kit::new_id())
        .bind(name)
        .bind(price_minor)
        .bind(currency)
        .bind(stock)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Replaces a product's name, price and stock.
    pub async fn update_product(
        &self,
        id: Uuid,
        name: &str,
        price_minor: i64,
        stock: i32,
    ) -> Result<ProductRow, OrderError> {
        sqlx::query_as::<_, ProductRow>(&format!(
            "UPDATE products SET name = $2, price_minor = $3, stock = $4, updated_at = now()
             WHERE id = $1 RETURNING {PRODUCT_COLUMNS}"
        ))
        .bind(id)
        .bind(name)
        .bind(price_minor)
        .bind(stock)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(OrderError::ProductNotFound(id))
    }

    /// One product.
    pub async fn product(&self, id: Uuid) -> Result<ProductRow, OrderError> {
        sqlx::query_as::<_, ProductRow>(&format!(
            "SELECT {PRODUCT_COLUMNS} FROM products WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(OrderError::ProductNotFound(id))
    }

    /// Products by name.
    pub async fn products(&self, limit: i64) -> Result<Vec<ProductRow>, OrderError> {
        Ok(sqlx::query_as::<_, ProductRow>(&format!(
            "SELECT {PRODUCT_COLUMNS} FROM products ORDER BY name, id LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    // ------------------------------------------------------------------------------ orders

    /// Places a product order: takes the stock with one conditional `UPDATE … WHERE stock >= n`,
    /// writes the order and its `OrderCreated` event, all in one transaction. An order with
    /// nothing to pay is paid at once.
    pub async fn place_product_order(&self, new: &NewProductOrder) -> Result<OrderRow, OrderError> {
        let quantity = i32::try_from(new.quantity).unwrap_or(i32::MAX);
        let mut tx = self.pool.begin().await?;
        let taken: Option<(i64, String)> = sqlx::query_as(
            "UPDATE products SET stock = stock - $2, updated_at = now()
             WHERE id = $1 AND stock >= $2 RETURNING price_minor, currency",
        )
        .bind(new.product_id)
        .bind(quantity)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((price, currency)) = taken else {
            let stock: Option<i32> = sqlx::query_scalar("SELECT stock FROM products WHERE id = $1")
                .bind(new.product_id)
                .fetch_optional(&mut *tx)
                .await?;
            return Err(match stock {
                None => OrderError::ProductNotFound(new.product_id),
                Some(available) => OrderError::OutOfStock { available },
            });
        };
        let amounts = domain::amounts(price, new.quantity, new.voucher.map_or(0, |(_, d)| d))?;
        let paid = amounts.amount_minor == 0;
        let row = sqlx::query_as::<_, OrderRow>(&format!(
            "INSERT INTO orders (id, kind, user_subject, product_id, quantity, unit_price_minor, subtotal_minor,
                                 discount_minor, amount_minor, currency, voucher_id, status, payment_deadline, paid_at)
             VALUES ($1, 'PRODUCT', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
                     now() + make_interval(secs => $12), CASE WHEN $13 THEN now() END)
             RETURNING {ORDER_COLUMNS}"
        ))
        .bind(new.id)
        .bind(&new.user)
        .bind(new.product_id)
        .bind(quantity)
        .bind(amounts.unit_price_minor)
        .bind(amounts.subtotal_minor)
        .bind(amounts.discount_minor)
        .bind(amounts.amount_minor)
        .bind(&currency)
        .bind(new.voucher.map(|(v, _)| v))
        .bind(if paid {
            OrderStatus::Paid.as_str()
        } else {
            OrderStatus::PendingPayment.as_str()
        })
        .bind(seconds(new.payment_timeout))
        .bind(paid)
        .fetch_one(&mut *tx)
        .await?;
        self.publish(&mut tx, ORDER_CREATED, &row).await?;
        if paid {
            self.publish(&mut tx, ORDER_PAID, &row).await?;
        }
        tx.commit().await?;
        Ok(row)
    }

    /// Creates the order of a seckill reservation, idempotently on its id; `true` if this call
    /// created it. Its payment deadline runs from the reservation time.
    pub async fn create_seckill_order(
        &self,
        reservation: &Reservation,
        payment_timeout: Duration,
    ) -> Result<bool, OrderError> {
        let reserved_at = DateTime::<Utc>::from_timestamp_millis(reservation.reserved_at_ms)
            .unwrap_or_else(Utc::now);
        let deadline = reserved_at
            + chrono::Duration::from_std(payment_timeout).unwrap_or(chrono::Duration::MAX);
        let paid = reservation.price_minor == 0;
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query_as::<_, OrderRow>(&format!(
            "INSERT INTO orders (id, kind, user_subject, campaign_id, quantity, unit_price_minor, subtotal_minor,
                                 discount_minor, amount_minor, currency, status, payment_deadline, paid_at)
             VALUES ($1, 'SECKILL', $2, $3, 1, $4, $4, 0, $4, $5, $6, $7, CASE WHEN $8 THEN now() END)
             ON CONFLICT (id) DO NOTHING
             RETURNING {ORDER_COLUMNS}"
        ))
        .bind(reservation.order_id)
        .bind(&reservation.user)
        .bind(&reservation.campaign)
        .bind(reservation.price_minor)
        .bind(&reservation.currency)
        .bind(if paid {
            OrderStatus::Paid.as_str()
        } else {
            OrderStatus::PendingPayment.as_str()
        })
        .bind(deadline)
        .bind(paid)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        self.publish(&mut tx, ORDER_CREATED, &row).await?;
        if paid {
            self.publish(&mut tx, ORDER_PAID, &row).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// One order.
    pub async fn order(&self, id: Uuid) -> Result<OrderRow, OrderError> {
        sqlx::query_as::<_, OrderRow>(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(OrderError::OrderNotFound(id))
    }

    /// A buyer's orders, newest first.
    pub async fn orders_of(&self, user: &str, limit: i64) -> Result<Vec<OrderRow>, OrderError> {
        Ok(sqlx::query_as::<_, OrderRow>(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE user_subject = $1 ORDER BY created_at DESC, id LIMIT $2"
        ))
        .bind(user)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Remembers the checkout started for an unpaid order.
    pub async fn attach_checkout(
        &self,
        id: Uuid,
        provider: &str,
        session_id: &str,
        url: &str,
    ) -> Result<OrderRow, OrderError> {
        let row = sqlx::query_as::<_, OrderRow>(&format!(
            "UPDATE orders SET payment_provider = $2, checkout_session_id = $3, checkout_url = $4, updated_at = now()
             WHERE id = $1 AND status = 'PENDING_PAYMENT' RETURNING {ORDER_COLUMNS}"
        ))
        .bind(id)
        .bind(provider)
        .bind(session_id)
        .bind(url)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(row),
            None => {
                let order = self.order(id).await?;
                Err(OrderError::WrongStatus {
                    id,
                    status: order.status().as_str(),
                    action: "paying",
                })
            }
        }
    }

    /// Moves an order along `transition` in `tx` (locked), with the transition's event.
    async fn transition(
        &self,
        tx: &mut PgConnection,
        order: &OrderRow,
        transition: Transition,
        reason: Option<&str>,
    ) -> Result<Option<OrderRow>, OrderError> {
        let (status, event) = match domain::apply(order.status(), transition) {
            Outcome::Moves(status) => (
                status,
                match transition {
                    Transition::Pay => ORDER_PAID,
                    Transition::Cancel => ORDER_CANCELLED,
                    Transition::Refund => ORDER_REFUNDED,
                },
            ),
            Outcome::AlreadyDone => return Ok(None),
            Outcome::Refused => {
                return Err(OrderError::WrongStatus {
                    id: order.id,
                    status: order.status().as_str(),
                    action: match transition {
                        Transition::Pay => "paying",
                        Transition::Cancel => "cancelling",
                        Transition::Refund => "refunding",
                    },
                });
            }
        };
        let row = sqlx::query_as::<_, OrderRow>(&format!(
            "UPDATE orders SET status = $2, updated_at = now(),
                    paid_at = CASE WHEN $2 = 'PAID' THEN now() ELSE paid_at END,
                    cancelled_at = CASE WHEN $2 = 'CANCELLED' THEN now() ELSE cancelled_at END,
                    cancel_reason = CASE WHEN $2 = 'CANCELLED' THEN $3 ELSE cancel_reason END,
                    refunded_at = CASE WHEN $2 = 'REFUNDED' THEN now() ELSE refunded_at END
             WHERE id = $1 RETURNING {ORDER_COLUMNS}"
        ))
        .bind(order.id)
        .bind(status.as_str())
        .bind(reason)
        .fetch_one(&mut *tx)
        .await?;
        self.publish(tx, event, &row).await?;
        Ok(Some(row))
    }

    async fn lock(&self, tx: &mut PgConnection, id: Uuid) -> Result<OrderRow, OrderError> {
        sqlx::query_as::<_, OrderRow>(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 FOR UPDATE"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(OrderError::OrderNotFound(id))
    }

    /// Cancels unpaid orders in one transaction, giving product stock back (products in id
    /// order, so concurrent sweepers cannot deadlock), each with its `OrderCancelled`.
    async fn cancel_locked(
        &self,
        tx: &mut PgConnection,
        mut orders: Vec<OrderRow>,
        reason: &str,
    ) -> Result<Vec<OrderRow>, OrderError> {
        orders.sort_by_key(|o| o.id);
        let mut returned: BTreeMap<Uuid, i64> = BTreeMap::new();
        let mut cancelled = Vec::with_capacity(orders.len());
        for order in &orders {
            if let Some(row) = self
                .transition(tx, order, Transition::Cancel, Some(reason))
                .await?
            {
                if let Some(product) = row.product_id {
                    *returned.entry(product).or_default() += i64::from(row.quantity);
                }
                cancelled.push(row);
            }
        }
        for (product, quantity) in returned {
            sqlx::query("UPDATE products SET stock = stock + $2, updated_at = now() WHERE id = $1")
                .bind(product)
                .bind(i32::try_from(quantity).unwrap_or(i32::MAX))
                .execute(&mut *tx)
                .await?;
        }
        Ok(cancelled)
    }

    /// The durable sweeper's step: cancels up to `limit` unpaid orders past their deadline.
    /// `FOR UPDATE SKIP LOCKED` lets many replicas sweep at once without taking the same order.
    pub async fn sweep_expired(&self, limit: i64) -> Result<Vec<OrderRow>, OrderError> {
        let mut tx = self.pool.begin().await?;
        let expired = sqlx::query_as::<_, OrderRow>(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders
             WHERE status = 'PENDING_PAYMENT' AND payment_deadline <= now()
             ORDER BY payment_deadline LIMIT $1 FOR UPDATE SKIP LOCKED"
        ))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        if expired.is_empty() {
            return Ok(Vec::new());
        }
        let cancelled = self
            .cancel_locked(&mut tx, expired, "payment-timeout")
            .await?;
        tx.commit().await?;
        Ok(cancelled)
    }

    /// Cancels one unpaid order of `user` (idempotent).
    pub async fn cancel(&self, id: Uuid, user: &str) -> Result<OrderRow, OrderError> {
        let mut tx = self.pool.begin().await?;
        let order = self.lock(&mut tx, id).await?;
        if order.user_subject != user {
            return Err(OrderError::OrderNotFound(id));
        }
        let mut cancelled = self
            .cancel_locked(&mut tx, vec![order.clone()], "cancelled-by-buyer")
            .await?;
        tx.commit().await?;
        Ok(cancelled.pop().unwrap_or(order))
    }

    /// Marks a paid order refunded (after the provider accepted the refund), with
    /// `OrderRefunded`.
    pub async fn mark_refunded(&self, id: Uuid, refund_id: &str) -> Result<OrderRow, OrderError> {
        let mut tx = self.pool.begin().await?;
        let order = self.lock(&mut tx, id).await?;
        let row = self
            .transition(&mut tx, &order, Transition::Refund, None)
            .await?;
        sqlx::query("UPDATE orders SET refund_id = coalesce(refund_id, $2) WHERE id = $1")
            .bind(id)
            .bind(refund_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        match row {
            Some(row) => Ok(OrderRow {
                refund_id: row.refund_id.or_else(|| Some(refund_id.to_owned())),
                ..row
            }),
            None => self.order(id).await,
        }
    }

    /// Records the refund of a payment that arrived after its order was cancelled.
    pub async fn record_late_refund(&self, id: Uuid, refund_id: &str) -> Result<(), OrderError> {
        sqlx::query("UPDATE orders SET refund_id = $2, updated_at = now() WHERE id = $1")
            .bind(id)
            .bind(refund_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Cancelled orders that were paid late and whose money is not sent back yet.
    pub async fn late_payments(&self, limit: i64) -> Result<Vec<(Uuid, String)>, OrderError> {
        Ok(sqlx::query_as(
            "SELECT id, payment_intent_id FROM orders
             WHERE status = 'CANCELLED' AND payment_intent_id IS NOT NULL AND refund_id IS NULL
             ORDER BY cancelled_at LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn find_for_webhook(
        &self,
        tx: &mut PgConnection,
        order: &OrderRef,
    ) -> Result<Option<OrderRow>, OrderError> {
        let query = |column: &str| {
            format!("SELECT {ORDER_COLUMNS} FROM orders WHERE {column} = $1 FOR UPDATE")
        };
        let found = match order {
            OrderRef::Id(id) => {
                sqlx::query_as::<_, OrderRow>(&query("id"))
                    .bind(*id)
                    .fetch_optional(&mut *tx)
                    .await?
            }
            OrderRef::Session(session) => {
                sqlx::query_as::<_, OrderRow>(&query("checkout_session_id"))
                    .bind(session)
                    .fetch_optional(&mut *tx)
                    .await?
            }
            OrderRef::PaymentIntent(intent) => {
                sqlx::query_as::<_, OrderRow>(&query("payment_intent_id"))
                    .bind(intent)
                    .fetch_optional(&mut *tx)
                    .await?
            }
        };
        Ok(found)
    }

    async fn record_event(
        &self,
        tx: &mut PgConnection,
        event_id: &str,
        event_type: &str,
        order: Uuid,
        outcome: &str,
    ) -> Result<bool, OrderError> {
        let inserted = sqlx::query(
            "INSERT INTO payment_events (provider_event_id, event_type, order_id, outcome)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(event_id)
        .bind(event_type)
        .bind(order)
        .bind(outcome)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// Applies a completed checkout: the order becomes `PAID` with `OrderPaid`, once per event
    /// id and once per order.
    #[allow(clippy::too_many_arguments)]
    pub async fn apply_checkout_completed(
        &self,
        event_id: &str,
        event_type: &str,
        order: &OrderRef,
        paid: bool,
        payment_intent: Option<&str>,
        amount_minor: Option<i64>,
        currency: Option<&str>,
    ) -> Result<WebhookOutcome, OrderError> {
        let mut tx = self.pool.begin().await?;
        let Some(row) = self.find_for_webhook(&mut tx, order).await? else {
            return Ok(WebhookOutcome::UnknownOrder);
        };
        let matches = amount_minor.is_none_or(|a| a == row.amount_minor)
            && currency.is_none_or(|c| c == row.currency);
        let (outcome, result) = if !paid {
            ("not-paid-yet", WebhookOutcome::NoChange("not-paid-yet"))
        } else if !matches {
            tracing::error!(order = %row.id, ?amount_minor, ?currency, "webhook amount differs from the order; not marking it paid");
            (
                "amount-mismatch",
                WebhookOutcome::NoChange("amount-mismatch"),
            )
        } else {
            match row.status() {
                OrderStatus::PendingPayment => ("paid", WebhookOutcome::NoChange("paid")),
                OrderStatus::Paid | OrderStatus::Refunded => {
                    ("already-paid", WebhookOutcome::NoChange("already-paid"))
                }
                OrderStatus::Cancelled => match payment_intent {
                    Some(intent) => (
                        "late-payment",
                        WebhookOutcome::LatePayment {
                            order: row.id,
                            payment_intent: intent.to_owned(),
                        },
                    ),
                    None => ("late-payment", WebhookOutcome::NoChange("late-payment")),
                },
            }
        };
        if !self
            .record_event(&mut tx, event_id, event_type, row.id, outcome)
            .await?
        {
            return Ok(WebhookOutcome::Duplicate);
        }
        if let Some(intent) = payment_intent {
            sqlx::query(
                "UPDATE orders SET payment_intent_id = coalesce(payment_intent_id, $2) WHERE id = $1",
            )
            .bind(row.id)
            .bind(intent)
            .execute(&mut *tx)
            .await?;
        }
        let result = if outcome == "paid" {
            match self
                .transition(&mut tx, &row, Transition::Pay, None)
                .await?
            {
                Some(paid) => WebhookOutcome::Applied(Box::new(paid)),
                None => WebhookOutcome::NoChange("already-paid"),
            }
        } else {
            result
        };
        tx.commit().await?;
        Ok(result)
    }

    /// Applies a refund made at the provider: a paid order becomes `REFUNDED`, once.
    pub async fn apply_refunded(
        &self,
        event_id: &str,
        event_type: &str,
        order: &OrderRef,
    ) -> Result<WebhookOutcome, OrderError> {
        let mut tx = self.pool.begin().await?;
        let Some(row) = self.find_for_webhook(&mut tx, order).await? else {
            return Ok(WebhookOutcome::UnknownOrder);
        };
        let refundable = row.status() == OrderStatus::Paid;
        let outcome = if refundable { "refunded" } else { "ignored" };
        if !self
            .record_event(&mut tx, event_id, event_type, row.id, outcome)
            .await?
        {
            return Ok(WebhookOutcome::Duplicate);
        }
        let result = if refundable {
            match self
                .transition(&mut tx, &row, Transition::Refund, None)
                .await?
            {
                Some(row) => WebhookOutcome::Applied(Box::new(row)),
                None => WebhookOutcome::NoChange("ignored"),
            }
        } else {
            WebhookOutcome::NoChange("ignored")
        };
        tx.commit().await?;
        Ok(result)
    }
}
