//! Payments of orders: the [`Payments`] flow (starting a checkout, refunds, cancellations,
//! the provider's webhooks), the [`PaymentProvider`] port ([`provider`]), its Stripe-compatible
//! adapter ([`stripe`]), the sandbox used for local runs with its checkout page ([`sandbox`]),
//! webhook signatures ([`signature`]) and the webhook events ordering understands
//! ([`webhook`]).

pub mod provider;
pub mod sandbox;
pub mod signature;
pub mod stripe;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use pulse_kit::idempotency::BeforeCommit;
use pulse_kit::settings::Secret;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use tracing::field::Empty;
use uuid::Uuid;

pub use provider::{
    Checkout, CheckoutRequest, PaymentError, PaymentProvider, Refund, RefundStatus,
};
pub use webhook::{BadEvent, Decision, OrderRef, WebhookEvent, WebhookOutcome};

use crate::domain::{self, CancelReason, OrderStatus, Outcome, Transition};
use crate::store::{self, OrderError, OrderRow, Store};
use signature::SignatureError;

/// What a refund of an order with nothing paid is recorded as.
const NOTHING_TO_REFUND: &str = "nothing-to-refund";

/// Why a payment operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PaymentsError {
    /// The order does not allow it, or the database failed.
    #[error(transparent)]
    Order(#[from] OrderError),
    /// The provider did not do it.
    #[error(transparent)]
    Provider(#[from] PaymentError),
    /// Too late to pay: the sweeper is about to cancel the order.
    #[error("the time to pay this order is over; it is being cancelled")]
    DeadlinePassed,
    /// A paid order whose payment the provider never named: it cannot be refunded from here.
    #[error(
        "the provider's payment for this order is not known; refund it from the provider's dashboard"
    )]
    PaymentUnknown,
}

/// Why a webhook was not handled.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// No signature header.
    #[error("the Stripe-Signature header is missing")]
    MissingSignature,
    /// The signature does not hold.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The body is not an event.
    #[error(transparent)]
    Malformed(#[from] BadEvent),
    /// The event names no known order (the event id).
    #[error("event {0} names no known order")]
    UnknownOrder(String),
    /// The database failed.
    #[error(transparent)]
    Order(#[from] OrderError),
}

impl WebhookError {
    /// Whether the webhook was refused (as opposed to failing on our side).
    fn refused(&self) -> bool {
        !matches!(self, Self::Order(_))
    }
}

/// A started payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentStarted {
    /// The order.
    pub order_id: Uuid,
    /// Provider (`stripe`, `sandbox`).
    pub provider: String,
    /// Checkout session.
    pub session_id: String,
    /// Where the buyer pays: the provider's page (an absolute URL), or for the sandbox a path
    /// on this API's origin (`/v1/payments/sandbox/checkout/{session}`).
    pub checkout_url: String,
    /// Pay before this time (UTC).
    pub payment_deadline: DateTime<Utc>,
}

impl PaymentStarted {
    /// The payment started for `order`, if one was.
    fn of(order: &OrderRow) -> Option<Self> {
        Some(Self {
            order_id: order.id,
            provider: order.payment_provider.clone()?,
            session_id: order.checkout_session_id.clone()?,
            checkout_url: order.checkout_url.clone().unwrap_or_default(),
            payment_deadline: order.payment_deadline,
        })
    }
}

/// What a webhook's transaction left to do.
enum Applied {
    /// Nothing more.
    Done(WebhookOutcome),
    /// A late payment to send back.
    RefundDue { order: Uuid, payment_intent: String },
}

/// The payment flow of orders: pay (a checkout session at the provider), cancel (by the buyer,
/// or by the sweeper past the deadline, giving the stock back), refund, and the provider's
/// webhooks (signature, then one pure [`webhook::decide`] over the event and its order).
///
/// Every write method owns exactly one transaction: `begin → lock the order → decide with
/// [`domain::apply`] → write the change and its outbox event → hook → commit`. The caller's
/// [`BeforeCommit`] hook (the idempotency record of the request, for crash safety) runs in that
/// transaction right before its `commit`, where the code says "before commit"; if it fails (a
/// concurrent request with the same key committed first), the change rolls back. Calls to the
/// provider stay outside the transaction: before it (creating a checkout, refunding; both
/// idempotent per order at the provider, so a retry or a concurrent duplicate gets the same
/// session or refund), or after the commit as compensation (expiring a checkout nobody may pay
/// any more). The one exception is a payment that arrives after its order was cancelled: the
/// webhook's transaction records the event, then the money is sent back and the refund
/// recorded in a transaction of its own (the sweeper retries it until it is).
#[derive(Clone)]
pub struct Payments {
    store: Store,
    provider: Arc<dyn PaymentProvider>,
    webhook_secrets: Arc<[Secret]>,
    webhooks_refused: Counter,
}

impl Payments {
    /// The flow over `store` and `provider`; webhooks must be signed with one of
    /// `webhook_secrets`; refused webhooks are counted in `webhooks_refused`.
    pub fn new(
        store: Store,
        provider: Arc<dyn PaymentProvider>,
        webhook_secrets: Vec<Secret>,
        webhooks_refused: Counter,
    ) -> Self {
        Self {
            store,
            provider,
            webhook_secrets: webhook_secrets.into(),
            webhooks_refused,
        }
    }

    /// Starts (or returns the already started) payment of one of `buyer`'s unpaid orders;
    /// `hook` runs in the transaction that stores the checkout. The provider's checkout is
    /// idempotent per order (the same session for a retry or a concurrent duplicate). If the
    /// checkout cannot be stored and the order does not hold it, it is expired at the provider
    /// so nobody pays it.
    #[tracing::instrument(skip_all, fields(order = %id))]
    pub async fn pay(
        &self,
        id: Uuid,
        buyer: &str,
        hook: impl BeforeCommit<PaymentStarted>,
    ) -> Result<PaymentStarted, PaymentsError> {
        let order = self.store.order(id).await?;
        if order.user_subject != buyer {
            return Err(OrderError::OrderNotFound(id).into());
        }
        if order.status != OrderStatus::PendingPayment {
            return Err(wrong_status(&order, Transition::Pay).into());
        }
        if let Some(started) = PaymentStarted::of(&order) {
            return Ok(started);
        }
        if order.payment_deadline <= Utc::now() {
            return Err(PaymentsError::DeadlinePassed);
        }
        let checkout = self
            .provider
            .create_checkout(&CheckoutRequest::for_order(&order))
            .await?;
        let attached = self.attach_checkout(id, &checkout, hook).await;
        if attached.is_err() && !self.holds_checkout(id, &checkout.session_id).await {
            self.provider
                .expire_checkout(&checkout.session_id)
                .await
                .ok();
        }
        attached
    }

    /// Whether order `id` holds the checkout `session`: a concurrent request stored the same
    /// (idempotent) session, which must stay payable. When the order cannot be read, it is
    /// assumed to: a checkout left open can only pay this order.
    async fn holds_checkout(&self, id: Uuid, session: &str) -> bool {
        match self.store.order(id).await {
            Ok(order) => order.checkout_session_id.as_deref() == Some(session),
            Err(_) => true,
        }
    }

    async fn attach_checkout(
        &self,
        id: Uuid,
        checkout: &Checkout,
        hook: impl BeforeCommit<PaymentStarted>,
    ) -> Result<PaymentStarted, PaymentsError> {
        let provider = self.provider.name();
        let mut tx = self.store.begin().await?;
        let attached = self
            .store
            .attach_checkout(&mut tx, id, provider, &checkout.session_id, &checkout.url)
            .await?;
        let Some(order) = attached else {
            let order = self.store.lock_order(&mut tx, id).await?;
            return Err(wrong_status(&order, Transition::Pay).into());
        };
        let started = PaymentStarted {
            order_id: id,
            provider: provider.to_owned(),
            session_id: checkout.session_id.clone(),
            checkout_url: checkout.url.clone(),
            payment_deadline: order.payment_deadline,
        };
        // Before commit.
        hook.run(&mut tx, &started)
            .await
            .map_err(OrderError::from)?;
        tx.commit().await.map_err(OrderError::from)?;
        Ok(started)
    }

    /// Cancels one of `buyer`'s unpaid orders (again: nothing changes); its stock is given back
    /// and its checkout, if any, expired. `hook` runs in the cancellation's transaction.
    #[tracing::instrument(skip_all, fields(order = %id))]
    pub async fn cancel(
        &self,
        id: Uuid,
        buyer: &str,
        hook: impl BeforeCommit<OrderRow>,
    ) -> Result<OrderRow, OrderError> {
        let mut tx = self.store.begin().await?;
        let order = self.store.lock_order(&mut tx, id).await?;
        if order.user_subject != buyer {
            return Err(OrderError::OrderNotFound(id));
        }
        let mut cancelled = self
            .cancel_locked(&mut tx, vec![order.clone()], CancelReason::CancelledByBuyer)
            .await?;
        let order = cancelled.pop().unwrap_or(order);
        // Before commit.
        hook.run(&mut tx, &order).await?;
        tx.commit().await?;
        self.expire_checkout(&order).await;
        Ok(order)
    }

    /// The sweeper's step: cancels up to `limit` unpaid orders past their deadline (many
    /// replicas may run it at once: each order goes to one), then expires their checkouts.
    #[tracing::instrument(skip(self))]
    pub async fn cancel_expired(&self, limit: i64) -> Result<Vec<OrderRow>, OrderError> {
        let mut tx = self.store.begin().await?;
        let expired = self.store.lock_expired(&mut tx, limit).await?;
        if expired.is_empty() {
            return Ok(Vec::new());
        }
        let cancelled = self
            .cancel_locked(&mut tx, expired, CancelReason::PaymentTimeout)
            .await?;
        tx.commit().await?;
        for order in &cancelled {
            tracing::info!(order = %order.id, kind = %order.kind, "unpaid order cancelled");
            self.expire_checkout(order).await;
        }
        Ok(cancelled)
    }

    /// Refunds a paid order in full: the provider first (idempotent per order), then
    /// `REFUNDED` with `OrderRefunded`; `hook` runs in that transaction. A refunded order is
    /// answered as it is.
    #[tracing::instrument(skip_all, fields(order = %id))]
    pub async fn refund(
        &self,
        id: Uuid,
        hook: impl BeforeCommit<OrderRow>,
    ) -> Result<OrderRow, PaymentsError> {
        let order = self.store.order(id).await?;
        match order.status {
            OrderStatus::Refunded => return Ok(order),
            OrderStatus::Paid => {}
            _ => return Err(wrong_status(&order, Transition::Refund).into()),
        }
        let refund_id = match &order.payment_intent_id {
            Some(intent) => self.provider.refund(id, intent).await?.refund_id,
            // Paid without a payment (nothing to pay): nothing to send back.
            None if order.amount_minor == 0 => NOTHING_TO_REFUND.to_owned(),
            None => return Err(PaymentsError::PaymentUnknown),
        };
        let mut tx = self.store.begin().await?;
        let order = self.store.lock_order(&mut tx, id).await?;
        self.store.record_refund(&mut tx, id, &refund_id).await?;
        let refunded = match self
            .transition(&mut tx, &order, Transition::Refund, None)
            .await?
        {
            Some(order) => order,
            // Refunded meanwhile: answered as it is now.
            None => self.store.lock_order(&mut tx, id).await?,
        };
        // Before commit.
        hook.run(&mut tx, &refunded)
            .await
            .map_err(OrderError::from)?;
        tx.commit().await.map_err(OrderError::from)?;
        Ok(refunded)
    }

    /// Handles one webhook: checks its signature against the raw `body`, parses it, and applies
    /// it to its order once per event id. Refusals are counted and logged.
    #[tracing::instrument(skip_all, fields(event = Empty, order = Empty))]
    pub async fn handle_webhook(
        &self,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<WebhookOutcome, WebhookError> {
        let handled = self.handle_verified(signature, body).await;
        if let Err(err) = &handled
            && err.refused()
        {
            self.webhooks_refused.inc();
            tracing::warn!(error = %err, "webhook refused");
        }
        handled
    }

    async fn handle_verified(
        &self,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<WebhookOutcome, WebhookError> {
        let header = signature.ok_or(WebhookError::MissingSignature)?;
        let secrets: Vec<&[u8]> = self
            .webhook_secrets
            .iter()
            .map(|s| s.expose().as_bytes())
            .collect();
        signature::verify(header, body, &secrets, Utc::now().timestamp())?;
        let event = WebhookEvent::parse(body)?;
        tracing::Span::current().record("event", event.id());
        let Some(order) = event.order() else {
            return Ok(WebhookOutcome::Ignored);
        };
        match self.apply_event(&event, order).await? {
            Applied::Done(outcome) => Ok(outcome),
            Applied::RefundDue {
                order,
                payment_intent,
            } => Ok(if self.refund_late(order, &payment_intent).await? {
                WebhookOutcome::LatePaymentRefunded
            } else {
                WebhookOutcome::LatePayment
            }),
        }
    }

    /// The webhook's transaction: locks the order, decides, records the event (once per event
    /// id), applies the decision.
    async fn apply_event(
        &self,
        event: &WebhookEvent,
        order: &OrderRef,
    ) -> Result<Applied, WebhookError> {
        let mut tx = self.store.begin().await?;
        let Some(order) = self.store.lock_by_ref(&mut tx, order).await? else {
            return Err(WebhookError::UnknownOrder(event.id().to_owned()));
        };
        tracing::Span::current().record("order", tracing::field::display(order.id));
        let decision = webhook::decide(event, &order);
        if decision == Decision::AmountMismatch {
            tracing::error!(order = %order.id, ?event, "webhook amount differs from the order; not marking it paid");
        }
        let recorded = self
            .store
            .record_payment_event(
                &mut tx,
                event.id(),
                event.event_type(),
                order.id,
                decision.outcome().as_str(),
            )
            .await?;
        if !recorded {
            return Ok(Applied::Done(WebhookOutcome::Duplicate));
        }
        if let Some(intent) = event.payment_intent() {
            self.store
                .record_payment_intent(&mut tx, order.id, intent)
                .await?;
        }
        let applied = match (decision.transition(), decision) {
            (Some((transition, unchanged)), decision) => {
                let moved = self.transition(&mut tx, &order, transition, None).await?;
                Applied::Done(if moved.is_some() {
                    decision.outcome()
                } else {
                    unchanged
                })
            }
            (
                None,
                Decision::LatePayment {
                    payment_intent: Some(payment_intent),
                },
            ) => Applied::RefundDue {
                order: order.id,
                payment_intent,
            },
            (None, other) => Applied::Done(other.outcome()),
        };
        // Before commit.
        tx.commit().await.map_err(OrderError::from)?;
        Ok(applied)
    }

    /// Sends back payments that arrived after their order was cancelled and were not refunded
    /// yet (the webhook tries at once; the sweeper calls this to retry).
    #[tracing::instrument(skip(self))]
    pub async fn refund_late_payments(&self, limit: i64) -> Result<(), OrderError> {
        for (order, intent) in self.store.late_payments(limit).await? {
            if let Err(err) = self.refund_late(order, &intent).await {
                tracing::warn!(%order, error = %err, "late refund not recorded");
            }
        }
        Ok(())
    }

    /// Refunds a late payment and records the refund; `false` if the provider did not refund
    /// it yet.
    #[tracing::instrument(skip(self, payment_intent))]
    async fn refund_late(&self, order: Uuid, payment_intent: &str) -> Result<bool, OrderError> {
        let refund = match self.provider.refund(order, payment_intent).await {
            Ok(refund) => refund,
            Err(err) => {
                tracing::warn!(%order, error = %err, "late payment not refunded yet; the sweeper retries");
                return Ok(false);
            }
        };
        let mut tx = self.store.begin().await?;
        self.store
            .record_refund(&mut tx, order, &refund.refund_id)
            .await?;
        // Before commit.
        tx.commit().await?;
        Ok(true)
    }

    /// Moves a locked order along `transition` (with its event), per the state machine;
    /// `None` if it was there already.
    async fn transition(
        &self,
        tx: &mut PgConnection,
        order: &OrderRow,
        transition: Transition,
        reason: Option<CancelReason>,
    ) -> Result<Option<OrderRow>, OrderError> {
        match domain::apply(order.status, transition) {
            Outcome::Moves(status) => {
                let row = self.store.set_status(tx, order.id, status, reason).await?;
                self.store
                    .publish(tx, store::event_of(transition), &row)
                    .await?;
                Ok(Some(row))
            }
            Outcome::AlreadyDone => Ok(None),
            Outcome::Refused => Err(wrong_status(order, transition)),
        }
    }

    /// Cancels locked unpaid orders, giving product stock back (products in id order, so
    /// concurrent cancellations cannot deadlock); returns those that changed.
    async fn cancel_locked(
        &self,
        tx: &mut PgConnection,
        mut orders: Vec<OrderRow>,
        reason: CancelReason,
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
            self.store.return_stock(tx, product, quantity).await?;
        }
        Ok(cancelled)
    }

    /// Expires the checkout of an order nobody may pay any more (best effort).
    async fn expire_checkout(&self, order: &OrderRow) {
        if let Some(session) = &order.checkout_session_id
            && let Err(err) = self.provider.expire_checkout(session).await
        {
            tracing::warn!(order = %order.id, error = %err, "could not expire the checkout");
        }
    }
}

fn wrong_status(order: &OrderRow, action: Transition) -> OrderError {
    OrderError::WrongStatus {
        id: order.id,
        status: order.status,
        action,
    }
}
