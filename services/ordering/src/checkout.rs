//! Placing orders: [`Checkout`] for products bought at the normal price (over HTTP), and
//! [`SeckillCheckout`] for the orders of seckill reservations (from marketing's streams).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pulse_kit::idempotency::BeforeCommit;
use pulse_marketing::reservation::Reservation;
use sqlx::PgConnection;
use tracing::field::Empty;
use uuid::Uuid;

use crate::domain::{self, Amounts, InvalidInput, OrderKind, OrderStatus};
use crate::marketing_client::{MarketingClient, VoucherCallError};
use crate::permit::{PermitError, Permits};
use crate::store::{Deadline, NewOrder, OrderError, OrderRow, ProductRow, Store};

/// A product order to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRequest {
    /// The product.
    pub product_id: Uuid,
    /// Units (checked against the product: 1 to [`domain::MAX_QUANTITY`], within the largest
    /// amount).
    pub quantity: u32,
    /// A voucher of the buyer's to take off the price.
    pub voucher_id: Option<Uuid>,
}

/// Why an order was not placed.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    /// The product, its stock or the database said no.
    #[error(transparent)]
    Order(#[from] OrderError),
    /// A request value breaks a rule.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// Marketing refused the voucher, or could not be asked.
    #[error(transparent)]
    Voucher(#[from] VoucherCallError),
    /// Every permit of the product stayed taken for the whole wait.
    #[error(transparent)]
    ProductBusy(#[from] PermitError),
}

/// A voucher held for an order, and what it takes off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HeldVoucher {
    id: Uuid,
    discount_minor: i64,
}

/// Places product orders: validates and holds the buyer's voucher at marketing (over gRPC,
/// behind the circuit breaker), admits the buyer with the product's Redis permit, then takes
/// the stock with a conditional `UPDATE … WHERE stock >= n` and writes the order and its
/// `OrderCreated` event in one transaction. If the order is not placed after the voucher was
/// held, the hold is released (compensation).
///
/// [`Checkout::place_product_order`] writes in exactly one transaction, under the permit, in
/// one private function: `begin → take stock → order → events → hook → commit`. The caller's
/// [`BeforeCommit`] hook (the idempotency record of the request, for crash safety) runs in that
/// transaction right before its `commit`, where the code says "before commit". A failing hook
/// (a concurrent request with the same key committed first) rolls the order back, stock
/// included, and the voucher hold is released like on any other failure.
#[derive(Debug, Clone)]
pub struct Checkout {
    store: Store,
    permits: Arc<Permits>,
    marketing: MarketingClient,
    payment_timeout: Duration,
}

impl Checkout {
    /// The flow over `store`, with the product `permits` and `marketing`'s vouchers; orders must
    /// be paid within `payment_timeout`.
    pub fn new(
        store: Store,
        permits: Arc<Permits>,
        marketing: MarketingClient,
        payment_timeout: Duration,
    ) -> Self {
        Self {
            store,
            permits,
            marketing,
            payment_timeout,
        }
    }

    /// Places `buyer`'s order; `hook` runs in its transaction right before the commit. An
    /// order with nothing left to pay is paid at once.
    #[tracing::instrument(skip_all, fields(product = %request.product_id, order = Empty))]
    pub async fn place_product_order(
        &self,
        buyer: &str,
        request: &OrderRequest,
        hook: impl BeforeCommit<OrderRow>,
    ) -> Result<OrderRow, CheckoutError> {
        let product = self.store.product(request.product_id).await?;
        let before = domain::amounts(product.price_minor, request.quantity, 0)
            .map_err(|err| InvalidInput::new("quantity", err.to_string()))?;
        let order_id = pulse_kit::new_id();
        tracing::Span::current().record("order", tracing::field::display(order_id));
        let voucher = match request.voucher_id {
            Some(voucher) => Some(
                self.hold_voucher(voucher, buyer, order_id, before.subtotal_minor, &product)
                    .await?,
            ),
            None => None,
        };
        let placed = self
            .write_order(order_id, buyer, &product, request.quantity, voucher, hook)
            .await;
        if placed.is_err()
            && let Some(voucher) = voucher
        {
            self.release_voucher(voucher, order_id).await;
        }
        placed
    }

    /// Checks the voucher with marketing, then holds it for the order.
    async fn hold_voucher(
        &self,
        voucher: Uuid,
        buyer: &str,
        order: Uuid,
        subtotal_minor: i64,
        product: &ProductRow,
    ) -> Result<HeldVoucher, VoucherCallError> {
        let currency = &product.currency;
        let validation = self
            .marketing
            .validate(voucher, buyer, subtotal_minor, currency)
            .await?;
        if validation.unknown {
            return Err(VoucherCallError::NotFound(voucher));
        }
        if !validation.valid {
            return Err(VoucherCallError::Rejected(validation.rejection));
        }
        let discount_minor = self
            .marketing
            .redeem(voucher, buyer, order, subtotal_minor, currency)
            .await?;
        Ok(HeldVoucher {
            id: voucher,
            discount_minor,
        })
    }

    /// Gives a held voucher back after the order did not happen (best effort: marketing also
    /// gives back holds no order confirmed).
    async fn release_voucher(&self, voucher: HeldVoucher, order: Uuid) {
        if let Err(err) = self.marketing.release(voucher.id, order).await {
            tracing::warn!(voucher = %voucher.id, %order, error = %err, "voucher not released now; its hold will expire");
        }
    }

    /// The order's transaction, under the product's permit.
    async fn write_order(
        &self,
        id: Uuid,
        buyer: &str,
        product: &ProductRow,
        quantity: u32,
        voucher: Option<HeldVoucher>,
        hook: impl BeforeCommit<OrderRow>,
    ) -> Result<OrderRow, CheckoutError> {
        let permit = self.permits.acquire(product.id).await?;
        let written = self
            .write_order_admitted(id, buyer, product.id, quantity, voucher, hook)
            .await;
        permit.release().await;
        Ok(written?)
    }

    /// `begin → take stock → order → events → hook → commit`.
    async fn write_order_admitted(
        &self,
        id: Uuid,
        buyer: &str,
        product: Uuid,
        quantity: u32,
        voucher: Option<HeldVoucher>,
        hook: impl BeforeCommit<OrderRow>,
    ) -> Result<OrderRow, OrderError> {
        let mut tx = self.store.begin().await?;
        let (price, currency) = self.store.take_stock(&mut tx, product, quantity).await?;
        let amounts = domain::amounts(price, quantity, voucher.map_or(0, |v| v.discount_minor))?;
        let new = NewOrder {
            id,
            kind: OrderKind::Product,
            user: buyer,
            campaign_id: None,
            product_id: Some(product),
            amounts,
            currency: &currency,
            voucher_id: voucher.map(|v| v.id),
            status: OrderStatus::of_new_order(amounts.amount_minor),
            deadline: Deadline::After(self.payment_timeout),
        };
        // A fresh id: an order with it cannot exist already.
        let order = create(&self.store, &mut tx, std::slice::from_ref(&new))
            .await?
            .pop()
            .ok_or(OrderError::Db(sqlx::Error::RowNotFound))?;
        // Before commit.
        hook.run(&mut tx, &order).await?;
        tx.commit().await?;
        Ok(order)
    }
}

/// Writes new orders with `OrderCreated` (and `OrderPaid` when there is nothing to pay), in
/// `tx`, one statement for the orders and one for their events whatever their number; returns
/// those written (an order whose id exists already is left out).
async fn create(
    store: &Store,
    tx: &mut PgConnection,
    news: &[NewOrder<'_>],
) -> Result<Vec<OrderRow>, OrderError> {
    let orders = store.insert_orders(tx, news).await?;
    store.publish_created(tx, &orders).await?;
    Ok(orders)
}

/// Turns seckill reservations into orders, once per reservation: the order takes the id the
/// reservation carries, so a reservation delivered again creates nothing. Its payment deadline
/// runs from the reservation time.
///
/// [`SeckillCheckout::place`] owns one transaction, `begin → order → events → commit`, and
/// [`SeckillCheckout::place_all`] one for a batch; a record that must commit with the orders goes
/// right before their `commit`, where the code says "before commit".
#[derive(Debug, Clone)]
pub struct SeckillCheckout {
    store: Store,
    payment_timeout: Duration,
}

impl SeckillCheckout {
    /// The flow over `store`; orders must be paid within `payment_timeout` of their reservation.
    pub fn new(store: Store, payment_timeout: Duration) -> Self {
        Self {
            store,
            payment_timeout,
        }
    }

    /// Creates the order of `reservation`; `true` if this call created it.
    #[tracing::instrument(skip_all, fields(order = %reservation.order_id, campaign = %reservation.campaign))]
    pub async fn place(&self, reservation: &Reservation) -> Result<bool, OrderError> {
        let mut tx = self.store.begin().await?;
        if create(&self.store, &mut tx, &[self.new_order(reservation)])
            .await?
            .is_empty()
        {
            return Ok(false);
        }
        // Before commit.
        tx.commit().await?;
        Ok(true)
    }

    /// Creates the orders of `reservations` in one transaction (a crowd of winners costs one
    /// commit per batch, not one per order); for each, `true` if this call created it. On an
    /// error nothing was created: [`SeckillCheckout::place`] each one to find the one at fault.
    #[tracing::instrument(skip_all, fields(orders = reservations.len()))]
    pub async fn place_all(&self, reservations: &[Reservation]) -> Result<Vec<bool>, OrderError> {
        let news: Vec<NewOrder<'_>> = reservations.iter().map(|r| self.new_order(r)).collect();
        let mut tx = self.store.begin().await?;
        let orders = create(&self.store, &mut tx, &news).await?;
        // Before commit.
        tx.commit().await?;
        // A reservation delivered twice in one batch was created once.
        let mut created: HashSet<Uuid> = orders.iter().map(|order| order.id).collect();
        Ok(reservations
            .iter()
            .map(|r| created.remove(&r.order_id))
            .collect())
    }

    /// The order a reservation becomes: its id, buyer and price; payable within the payment
    /// timeout of the reservation time.
    fn new_order<'r>(&self, reservation: &'r Reservation) -> NewOrder<'r> {
        let reserved_at = DateTime::<Utc>::from_timestamp_millis(reservation.reserved_at_ms)
            .unwrap_or_else(Utc::now);
        let deadline = reserved_at
            + chrono::Duration::from_std(self.payment_timeout).unwrap_or(chrono::Duration::MAX);
        let amounts = Amounts::single(reservation.price_minor);
        NewOrder {
            id: reservation.order_id,
            kind: OrderKind::Seckill,
            user: &reservation.user,
            campaign_id: Some(&reservation.campaign),
            product_id: None,
            amounts,
            currency: &reservation.currency,
            voucher_id: None,
            status: OrderStatus::of_new_order(amounts.amount_minor),
            deadline: Deadline::At(deadline),
        }
    }
}
