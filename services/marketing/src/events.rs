//! Reacts to ordering's events (topic `pulse.<keyspace>.ordering.events`, group
//! [`crate::ORDER_EVENTS_GROUP`]). Database effects go through the consumer's transaction; the
//! Redis effects are idempotent per order, so a redelivered or duplicated event changes nothing.
//!
//! - `OrderCreated` with a voucher: the held voucher becomes used.
//! - `OrderPaid` of a seckill order: its voucher goes into the buyer's wallet (`VoucherIssued`),
//!   and the reservation can no longer be given back.
//! - `OrderCancelled`: a seckill order gives its stock back and frees the buyer's slot; a voucher
//!   the order used is given back.
//! - `OrderRefunded`: the voucher a seckill order bought is revoked (unless in use); a voucher the
//!   order used is given back.

use std::sync::Arc;

use async_trait::async_trait;
use pulse_kit::consumer::{EventHandler, HandlerError};
use pulse_kit::envelope::EventEnvelope;
use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::seckill::Seckill;
use crate::store::{self, Store};

/// The fields of ordering's order events marketing needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderEvent {
    /// The order.
    pub order_id: Uuid,
    /// `SECKILL` or `PRODUCT`.
    pub kind: String,
    /// The buyer.
    pub user_id: String,
    /// The campaign of a seckill order.
    #[serde(default)]
    pub campaign_id: Option<String>,
    /// The voucher a product order used.
    #[serde(default)]
    pub voucher_id: Option<Uuid>,
}

/// Applies ordering's events.
pub struct OrderEventsHandler {
    store: Store,
    seckill: Arc<Seckill>,
}

impl OrderEventsHandler {
    /// Over marketing's store and Redis.
    pub fn new(store: Store, seckill: Arc<Seckill>) -> Self {
        Self { store, seckill }
    }
}

#[async_trait]
impl EventHandler for OrderEventsHandler {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        event: &EventEnvelope,
    ) -> Result<(), HandlerError> {
        let kind = event.event_type.as_str();
        if !matches!(
            kind,
            "OrderCreated" | "OrderPaid" | "OrderCancelled" | "OrderRefunded"
        ) {
            return Ok(());
        }
        let order: OrderEvent = event.payload_as()?;
        let seckill_campaign = order
            .campaign_id
            .as_deref()
            .filter(|_| order.kind == "SECKILL");
        match kind {
            "OrderCreated" => {
                if let Some(voucher) = order.voucher_id
                    && !self.store.confirm(tx, voucher, order.order_id).await?
                {
                    tracing::warn!(%voucher, order = %order.order_id, "voucher used by an order but held by another one");
                }
            }
            "OrderPaid" => {
                if let Some(campaign) = seckill_campaign {
                    let issued = self
                        .store
                        .issue_voucher(tx, order.order_id, &order.user_id, campaign)
                        .await?;
                    if issued.is_none() {
                        tracing::debug!(order = %order.order_id, "voucher already issued");
                    }
                    self.seckill.settle(campaign, order.order_id).await?;
                }
            }
            "OrderCancelled" => {
                if let Some(campaign) = seckill_campaign {
                    let released = self.seckill.release(campaign, order.order_id).await?;
                    tracing::info!(order = %order.order_id, campaign, released, "seckill reservation given back");
                }
                if let Some(voucher) = order.voucher_id {
                    store::release_in(tx, voucher, order.order_id).await?;
                }
            }
            _ => {
                if seckill_campaign.is_some() {
                    self.store.revoke_bought_by(tx, order.order_id).await?;
                }
                if let Some(voucher) = order.voucher_id {
                    store::release_in(tx, voucher, order.order_id).await?;
                }
            }
        }
        Ok(())
    }
}
