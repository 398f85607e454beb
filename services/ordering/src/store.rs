//! PostgreSQL adapter of ordering: products, orders, payment events. Every statement binds its
//! values. Writes that belong to a business flow take the flow's transaction (`tx`): the flows
//! ([`crate::checkout`], [`crate::payments`]) begin it, decide, and commit, so a state change
//! and its outbox event always commit together.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use pulse_kit::outbox::{Outbox, OutboxError};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::domain::{
    AmountError, Amounts, CancelReason, OrderKind, OrderStatus, ProductDraft, Transition,
};
use crate::payments::OrderRef;

/// Event: an order exists.
pub const ORDER_CREATED: &str = "OrderCreated";
/// Event: an order was paid.
pub const ORDER_PAID: &str = "OrderPaid";
/// Event: an order was cancelled; its stock is back.
pub const ORDER_CANCELLED: &str = "OrderCancelled";
/// Event: an order was refunded.
pub const ORDER_REFUNDED: &str = "OrderRefunded";

/// The event an order publishes when `transition` moves it.
pub fn event_of(transition: Transition) -> &'static str {
    match transition {
        Transition::Pay => ORDER_PAID,
        Transition::Cancel => ORDER_CANCELLED,
        Transition::Refund => ORDER_REFUNDED,
    }
}

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
        status: OrderStatus,
        /// What was attempted.
        action: Transition,
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
    /// What it buys.
    pub kind: OrderKind,
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
    pub status: OrderStatus,
    /// Cancelled if unpaid at this time.
    pub payment_deadline: DateTime<Utc>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Paid.
    pub paid_at: Option<DateTime<Utc>>,
    /// Cancelled.
    pub cancelled_at: Option<DateTime<Utc>>,
    /// Why it was cancelled.
    pub cancel_reason: Option<CancelReason>,
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

/// The payload of every order event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderEvent {
    /// The order.
    pub order_id: Uuid,
    /// What it buys.
    pub kind: OrderKind,
    /// Status after the event.
    pub status: OrderStatus,
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
    pub reason: Option<CancelReason>,
}

impl From<&OrderRow> for OrderEvent {
    fn from(row: &OrderRow) -> Self {
        Self {
            order_id: row.id,
            kind: row.kind,
            status: row.status,
            user_id: row.user_subject.clone(),
            campaign_id: row.campaign_id.clone(),
            product_id: row.product_id,
            quantity: row.quantity,
            amount_minor: row.amount_minor,
            currency: row.currency.clone(),
            voucher_id: row.voucher_id,
            reason: row.cancel_reason,
        }
    }
}

/// When an order must be paid by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// This long after the database's current time.
    After(std::time::Duration),
    /// At this time.
    At(DateTime<Utc>),
}

/// An order to write.
#[derive(Debug, Clone)]
pub struct NewOrder<'a> {
    /// Its id.
    pub id: Uuid,
    /// What it buys.
    pub kind: OrderKind,
    /// Buyer.
    pub user: &'a str,
    /// Campaign (seckill orders).
    pub campaign_id: Option<&'a str>,
    /// Product (product orders).
    pub product_id: Option<Uuid>,
    /// Its amounts.
    pub amounts: Amounts,
    /// Currency.
    pub currency: &'a str,
    /// Voucher held for it.
    pub voucher_id: Option<Uuid>,
    /// Its status (see [`OrderStatus::of_new_order`]).
    pub status: OrderStatus,
    /// Its payment deadline.
    pub deadline: Deadline,
}

const ORDER_COLUMNS: &str = "id, kind, user_subject, campaign_id, product_id, quantity, unit_price_minor, subtotal_minor, discount_minor, amount_minor, currency, voucher_id, status, payment_deadline, created_at, paid_at, cancelled_at, cancel_reason, refunded_at, payment_provider, checkout_session_id, checkout_url, payment_intent_id, refund_id";
const PRODUCT_COLUMNS: &str = "id, name, price_minor, currency, stock, created_at, updated_at";

fn int(n: impl TryInto<i32>) -> i32 {
    n.try_into().unwrap_or(i32::MAX)
}

/// Labels of `pulse_ordering_orders_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// The status an order reached (`PENDING_PAYMENT`, `PAID`, …).
    pub status: &'static str,
}

/// Ordering's tables.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    outbox: Outbox,
    reached: Family<StatusLabels, Counter>,
}

impl Store {
    /// The store over ordering's pool and outbox.
    pub fn new(pool: PgPool, outbox: Outbox) -> Self {
        let reached = Family::default();
        pulse_kit::metrics::preset(
            &reached,
            OrderStatus::ALL.iter().map(|status| StatusLabels {
                status: status.as_str(),
            }),
        );
        Self {
            pool,
            outbox,
            reached,
        }
    }

    /// Orders that reached each status (`pulse_ordering_orders_total{status}`), counted when
    /// the statement that writes the status succeeds: a transaction that fails to commit after
    /// it (rare) is counted too.
    pub fn orders_reached(&self) -> &Family<StatusLabels, Counter> {
        &self.reached
    }

    fn count(&self, status: OrderStatus) {
        self.reached
            .get_or_create(&StatusLabels {
                status: status.as_str(),
            })
            .inc();
    }

    /// Begins a flow's transaction.
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, OrderError> {
        Ok(self.pool.begin().await?)
    }

    /// Appends `event_type` about `row` to the outbox, in `tx`.
    pub async fn publish(
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

    /// Appends the creation events of new `orders` (and the payment event of those paid at
    /// once, right after its creation), in `tx`, in one statement.
    pub async fn publish_created(
        &self,
        tx: &mut PgConnection,
        orders: &[OrderRow],
    ) -> Result<(), OrderError> {
        let keys: Vec<String> = orders.iter().map(|row| row.id.to_string()).collect();
        let mut events = Vec::with_capacity(orders.len());
        for (row, key) in orders.iter().zip(&keys) {
            events.push((key.as_str(), ORDER_CREATED, OrderEvent::from(row)));
            if row.status == OrderStatus::Paid {
                events.push((key.as_str(), ORDER_PAID, OrderEvent::from(row)));
            }
        }
        self.outbox.append_all(tx, &events).await?;
        Ok(())
    }

    // ---------------------------------------------------------------------------- products

    /// Creates a product, in `tx`.
    pub async fn create_product(
        &self,
        tx: &mut PgConnection,
        product: &ProductDraft,
        currency: &str,
    ) -> Result<ProductRow, OrderError> {
        Ok(sqlx::query_as::<_, ProductRow>(&format!(
            "INSERT INTO products (id, name, price_minor, currency, stock) VALUES ($1, $2, $3, $4, $5)
             RETURNING {PRODUCT_COLUMNS}"
        ))
        .bind(pulse_kit::new_id())
        .bind(&product.name)
        .bind(product.price_minor)
        .bind(currency)
        .bind(product.stock)
        .fetch_one(&mut *tx)
        .await?)
    }

    /// Replaces a product's name, price and stock, in `tx`.
    pub async fn update_product(
        &self,
        tx: &mut PgConnection,
        id: Uuid,
        product: &ProductDraft,
    ) -> Result<ProductRow, OrderError> {
        sqlx::query_as::<_, ProductRow>(&format!(
            "UPDATE products SET name = $2, price_minor = $3, stock = $4, updated_at = now()
             WHERE id = $1 RETURNING {PRODUCT_COLUMNS}"
        ))
        .bind(id)
        .bind(&product.name)
        .bind(product.price_minor)
        .bind(product.stock)
        .fetch_optional(&mut *tx)
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

    /// Takes `quantity` units of a product with one conditional `UPDATE … WHERE stock >= n`
    /// (never below zero, whatever runs at the same time); returns its price and currency.
    pub async fn take_stock(
        &self,
        tx: &mut PgConnection,
        product: Uuid,
        quantity: u32,
    ) -> Result<(i64, String), OrderError> {
        let taken: Option<(i64, String)> = sqlx::query_as(
            "UPDATE products SET stock = stock - $2, updated_at = now()
             WHERE id = $1 AND stock >= $2 RETURNING price_minor, currency",
        )
        .bind(product)
        .bind(int(quantity))
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(taken) = taken {
            return Ok(taken);
        }
        let stock: Option<i32> = sqlx::query_scalar("SELECT stock FROM products WHERE id = $1")
            .bind(product)
            .fetch_optional(&mut *tx)
            .await?;
        Err(match stock {
            None => OrderError::ProductNotFound(product),
            Some(available) => OrderError::OutOfStock { available },
        })
    }

    /// Gives `quantity` units of a product back.
    pub async fn return_stock(
        &self,
        tx: &mut PgConnection,
        product: Uuid,
        quantity: i64,
    ) -> Result<(), OrderError> {
        sqlx::query("UPDATE products SET stock = stock + $2, updated_at = now() WHERE id = $1")
            .bind(product)
            .bind(int(quantity))
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    // ------------------------------------------------------------------------------ orders

    /// Writes orders (one or a batch) in one statement; returns those written, in the order of
    /// `news` (one whose id exists already is left out).
    pub async fn insert_orders(
        &self,
        tx: &mut PgConnection,
        news: &[NewOrder<'_>],
    ) -> Result<Vec<OrderRow>, OrderError> {
        if news.is_empty() {
            return Ok(Vec::new());
        }
        let column = |f: &dyn Fn(&NewOrder<'_>) -> i64| news.iter().map(f).collect::<Vec<i64>>();
        let (ats, afters): (Vec<Option<DateTime<Utc>>>, Vec<Option<f64>>) = news
            .iter()
            .map(|new| match new.deadline {
                Deadline::At(at) => (Some(at), None),
                Deadline::After(timeout) => (None, Some(timeout.as_secs_f64())),
            })
            .unzip();
        let inserted = sqlx::query_as::<_, OrderRow>(&format!(
            "INSERT INTO orders (id, kind, user_subject, campaign_id, product_id, quantity, unit_price_minor,
                                 subtotal_minor, discount_minor, amount_minor, currency, voucher_id, status,
                                 payment_deadline, paid_at)
             SELECT id, kind, user_subject, campaign_id, product_id, quantity, unit_price_minor,
                    subtotal_minor, discount_minor, amount_minor, currency, voucher_id, status,
                    coalesce(deadline_at, now() + make_interval(secs => deadline_after)),
                    CASE WHEN status = $16 THEN now() END
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::int[], $7::bigint[],
                         $8::bigint[], $9::bigint[], $10::bigint[], $11::text[], $12::uuid[], $13::text[],
                         $14::timestamptz[], $15::float8[])
                  AS n (id, kind, user_subject, campaign_id, product_id, quantity, unit_price_minor,
                        subtotal_minor, discount_minor, amount_minor, currency, voucher_id, status,
                        deadline_at, deadline_after)
             ON CONFLICT (id) DO NOTHING
             RETURNING {ORDER_COLUMNS}"
        ))
        .bind(news.iter().map(|n| n.id).collect::<Vec<Uuid>>())
        .bind(news.iter().map(|n| n.kind.as_str()).collect::<Vec<&str>>())
        .bind(news.iter().map(|n| n.user).collect::<Vec<&str>>())
        .bind(news.iter().map(|n| n.campaign_id).collect::<Vec<Option<&str>>>())
        .bind(news.iter().map(|n| n.product_id).collect::<Vec<Option<Uuid>>>())
        .bind(news.iter().map(|n| int(n.amounts.quantity)).collect::<Vec<i32>>())
        .bind(column(&|n| n.amounts.unit_price_minor))
        .bind(column(&|n| n.amounts.subtotal_minor))
        .bind(column(&|n| n.amounts.discount_minor))
        .bind(column(&|n| n.amounts.amount_minor))
        .bind(news.iter().map(|n| n.currency).collect::<Vec<&str>>())
        .bind(news.iter().map(|n| n.voucher_id).collect::<Vec<Option<Uuid>>>())
        .bind(news.iter().map(|n| n.status.as_str()).collect::<Vec<&str>>())
        .bind(ats)
        .bind(afters)
        .bind(OrderStatus::Paid.as_str())
        .fetch_all(&mut *tx)
        .await?;
        // RETURNING gives no order: put the rows back in the order of `news`.
        let mut by_id: HashMap<Uuid, OrderRow> =
            inserted.into_iter().map(|row| (row.id, row)).collect();
        let rows: Vec<OrderRow> = news.iter().filter_map(|n| by_id.remove(&n.id)).collect();
        for row in &rows {
            self.count(row.status);
        }
        Ok(rows)
    }

    /// One order.
    pub async fn order(&self, id: Uuid) -> Result<OrderRow, OrderError> {
        sqlx::query_as::<_, OrderRow>(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(OrderError::OrderNotFound(id))
    }

    /// The order holding checkout `session`, if one does (read without a lock).
    pub async fn order_by_session(&self, session: &str) -> Result<Option<OrderRow>, OrderError> {
        Ok(sqlx::query_as::<_, OrderRow>(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE checkout_session_id = $1"
        ))
        .bind(session)
        .fetch_optional(&self.pool)
        .await?)
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

    /// Locks one order in `tx`.
    pub async fn lock_order(
        &self,
        tx: &mut PgConnection,
        id: Uuid,
    ) -> Result<OrderRow, OrderError> {
        sqlx::query_as::<_, OrderRow>(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 FOR UPDATE"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(OrderError::OrderNotFound(id))
    }

    /// Locks the order a webhook names, if there is one.
    pub async fn lock_by_ref(
        &self,
        tx: &mut PgConnection,
        order: &OrderRef,
    ) -> Result<Option<OrderRow>, OrderError> {
        let (column, value) = match order {
            OrderRef::Id(id) => ("id", id.to_string()),
            OrderRef::Session(session) => ("checkout_session_id", session.clone()),
            OrderRef::PaymentIntent(intent) => ("payment_intent_id", intent.clone()),
        };
        let cast = if column == "id" { "uuid" } else { "text" };
        Ok(sqlx::query_as::<_, OrderRow>(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE {column} = $1::{cast} FOR UPDATE"
        ))
        .bind(value)
        .fetch_optional(&mut *tx)
        .await?)
    }

    /// Locks up to `limit` unpaid orders past their deadline. `SKIP LOCKED` lets many replicas
    /// sweep at once without taking the same order.
    pub async fn lock_expired(
        &self,
        tx: &mut PgConnection,
        limit: i64,
    ) -> Result<Vec<OrderRow>, OrderError> {
        // The status is a literal, not a parameter, so the partial index on unpaid orders
        // serves the query.
        let unpaid = OrderStatus::PendingPayment.as_str();
        Ok(sqlx::query_as::<_, OrderRow>(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders
             WHERE status = '{unpaid}' AND payment_deadline <= now()
             ORDER BY payment_deadline LIMIT $1 FOR UPDATE SKIP LOCKED"
        ))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?)
    }

    /// Sets a locked order's status (and the time it got there, and why when cancelled).
    pub async fn set_status(
        &self,
        tx: &mut PgConnection,
        id: Uuid,
        status: OrderStatus,
        reason: Option<CancelReason>,
    ) -> Result<OrderRow, OrderError> {
        let row = sqlx::query_as::<_, OrderRow>(&format!(
            "UPDATE orders SET status = $2, updated_at = now(),
                    paid_at = CASE WHEN $4 THEN now() ELSE paid_at END,
                    cancelled_at = CASE WHEN $5 THEN now() ELSE cancelled_at END,
                    cancel_reason = CASE WHEN $5 THEN $3 ELSE cancel_reason END,
                    refunded_at = CASE WHEN $6 THEN now() ELSE refunded_at END
             WHERE id = $1 RETURNING {ORDER_COLUMNS}"
        ))
        .bind(id)
        .bind(status)
        .bind(reason)
        .bind(status == OrderStatus::Paid)
        .bind(status == OrderStatus::Cancelled)
        .bind(status == OrderStatus::Refunded)
        .fetch_one(&mut *tx)
        .await?;
        self.count(status);
        Ok(row)
    }

    /// Remembers the checkout started for an order still unpaid; `None` if it is not unpaid.
    pub async fn attach_checkout(
        &self,
        tx: &mut PgConnection,
        id: Uuid,
        provider: &str,
        session_id: &str,
        url: &str,
    ) -> Result<Option<OrderRow>, OrderError> {
        Ok(sqlx::query_as::<_, OrderRow>(&format!(
            "UPDATE orders SET payment_provider = $2, checkout_session_id = $3, checkout_url = $4, updated_at = now()
             WHERE id = $1 AND status = $5 RETURNING {ORDER_COLUMNS}"
        ))
        .bind(id)
        .bind(provider)
        .bind(session_id)
        .bind(url)
        .bind(OrderStatus::PendingPayment)
        .fetch_optional(&mut *tx)
        .await?)
    }

    /// Remembers the payment to refund, unless one is known already.
    pub async fn record_payment_intent(
        &self,
        tx: &mut PgConnection,
        id: Uuid,
        intent: &str,
    ) -> Result<(), OrderError> {
        sqlx::query(
            "UPDATE orders SET payment_intent_id = coalesce(payment_intent_id, $2) WHERE id = $1",
        )
        .bind(id)
        .bind(intent)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    /// Remembers the refund of an order's payment, unless one is known already.
    pub async fn record_refund(
        &self,
        tx: &mut PgConnection,
        id: Uuid,
        refund_id: &str,
    ) -> Result<(), OrderError> {
        sqlx::query(
            "UPDATE orders SET refund_id = coalesce(refund_id, $2), updated_at = now() WHERE id = $1",
        )
        .bind(id)
        .bind(refund_id)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    /// Cancelled orders that were paid late and whose money is not sent back yet.
    pub async fn late_payments(&self, limit: i64) -> Result<Vec<(Uuid, String)>, OrderError> {
        Ok(sqlx::query_as(
            "SELECT id, payment_intent_id FROM orders
             WHERE status = $2 AND payment_intent_id IS NOT NULL AND refund_id IS NULL
             ORDER BY cancelled_at LIMIT $1",
        )
        .bind(limit)
        .bind(OrderStatus::Cancelled)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records a webhook event for an order; `false` if it was recorded before.
    pub async fn record_payment_event(
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
}
