//! Reacts to ordering's events (topic `pulse.<keyspace>.ordering.events`, group
//! [`crate::ORDER_EVENTS_GROUP`]). Database effects go through the consumer's transaction; the
//! Redis effects are idempotent per order, so a redelivered or duplicated event changes nothing.
//!
//! - `OrderCreated` with a voucher: the held voucher becomes used. Of a seckill order: the sale
//!   is recorded durably (`seckill_sales`, what Redis is rebuilt from when it loses its data),
//!   and counted in Redis if Redis had lost its reservation.
//! - `OrderPaid` of a seckill order: its voucher goes into the buyer's wallet (`VoucherIssued`),
//!   the sale is marked paid, and the reservation can no longer be given back.
//! - `OrderCancelled`: a seckill order's sale is marked cancelled, it gives its stock back and
//!   frees the buyer's slot; a voucher the order used is given back.
//! - `OrderRefunded`: the voucher a seckill order bought is revoked (unless in use); a voucher the
//!   order used is given back.
//!
//! A seckill event holds its campaign in share mode ([`Store::share_campaign`]) for its
//! transaction, so it never interleaves with a rebuild of the campaign's Redis counters. Redis
//! failing never loses the durable record: the counters are repaired from it (a rebuild, or the
//! late release of a cancelled sale by the campaign upkeep job).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use pulse_kit::consumer::{BatchEvent, BatchFailure, EventHandler, HandlerError};
use pulse_kit::envelope::EventEnvelope;
use serde::Deserialize;
use sqlx::PgConnection;
use tracing::Instrument;
use uuid::Uuid;

use crate::seckill::{Adopted, Seckill};
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

    /// Makes Redis count newly recorded sales whose reservations it lost (best effort: when
    /// Redis fails, the campaign upkeep job sees fewer sold in Redis than recorded and
    /// rebuilds). One round trip per campaign.
    async fn adopt(&self, sales: &[&OrderEvent]) {
        let mut by_campaign: BTreeMap<&str, Vec<&OrderEvent>> = BTreeMap::new();
        for order in sales {
            let campaign = order.campaign_id.as_deref().unwrap_or_default();
            by_campaign.entry(campaign).or_default().push(order);
        }
        for (campaign, orders) in by_campaign {
            let pairs: Vec<(Uuid, &str)> = orders
                .iter()
                .map(|order| (order.order_id, order.user_id.as_str()))
                .collect();
            let outcomes = match self.seckill.adopt(campaign, &pairs).await {
                Ok(outcomes) => outcomes,
                Err(err) => {
                    tracing::warn!(campaign, sales = pairs.len(), error = %err, "could not check the sales in Redis; the upkeep job will");
                    continue;
                }
            };
            for (order, outcome) in orders.iter().zip(outcomes) {
                match outcome {
                    Adopted::Known | Adopted::Missing => {}
                    Adopted::Adopted => {
                        tracing::warn!(order = %order.order_id, campaign, "an order whose reservation Redis lost is counted again");
                    }
                    Adopted::Oversold => {
                        tracing::error!(order = %order.order_id, campaign, "an order whose reservation Redis lost is counted again, and the campaign is oversold");
                    }
                }
            }
        }
    }
}

#[async_trait]
impl EventHandler for OrderEventsHandler {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        event: &EventEnvelope,
    ) -> Result<(), HandlerError> {
        self.apply(tx, event, &mut HashMap::new()).await
    }

    /// Each event as [`EventHandler::handle`] does, but a campaign is share-locked once for
    /// the batch, and the sales of the batch's new seckill orders (a sale's winners) are
    /// recorded in one statement, first: an order's creation comes before anything else of it.
    async fn handle_batch(
        &self,
        tx: &mut PgConnection,
        events: &[BatchEvent<'_>],
    ) -> Result<(), BatchFailure> {
        let mut campaigns = HashMap::new();
        let mut created = Vec::new();
        let mut rest = Vec::with_capacity(events.len());
        for (at, batched) in events.iter().enumerate() {
            match new_sale(batched.event) {
                Ok(Some(order)) => created.push((at, order)),
                Ok(None) => rest.push((at, batched)),
                Err(error) => return Err(BatchFailure { at, error }),
            }
        }
        let mut sales = Vec::with_capacity(created.len());
        for (at, order) in &created {
            let campaign = order.campaign_id.as_deref().unwrap_or_default();
            let known = self
                .share(tx, campaign, &mut campaigns)
                .await
                .map_err(|error| BatchFailure { at: *at, error })?;
            if known {
                sales.push((order.order_id, campaign, order.user_id.as_str()));
            } else {
                tracing::warn!(order = %order.order_id, campaign, "seckill order of an unknown campaign");
            }
        }
        let recorded = self
            .store
            .record_sales(tx, &sales)
            .await
            .map_err(BatchFailure::of_batch)?;
        let new_sales: Vec<&OrderEvent> = created
            .iter()
            .map(|(_, order)| order)
            .filter(|order| recorded.contains(&order.order_id))
            .collect();
        self.adopt(&new_sales).await;
        for (at, batched) in rest {
            self.apply(tx, batched.event, &mut campaigns)
                .instrument(batched.span.clone())
                .await
                .map_err(|error| BatchFailure { at, error })?;
        }
        Ok(())
    }
}

/// The order of `event` if it is a new seckill order (its sale to record), `None` for any other
/// event; an error when an order event does not parse.
fn new_sale(event: &EventEnvelope) -> Result<Option<OrderEvent>, HandlerError> {
    if event.event_type != "OrderCreated" {
        return Ok(None);
    }
    let order: OrderEvent = event.payload_as()?;
    let seckill =
        order.kind == "SECKILL" && order.campaign_id.is_some() && order.voucher_id.is_none();
    Ok(seckill.then_some(order))
}

impl OrderEventsHandler {
    /// Holds `campaign` in share mode for the transaction (once: `campaigns` remembers the
    /// campaigns held, and whether marketing knows them); `false` for an unknown campaign.
    async fn share(
        &self,
        tx: &mut PgConnection,
        campaign: &str,
        campaigns: &mut HashMap<String, bool>,
    ) -> Result<bool, HandlerError> {
        if let Some(&known) = campaigns.get(campaign) {
            return Ok(known);
        }
        let known = self.store.share_campaign(tx, campaign).await?;
        campaigns.insert(campaign.to_owned(), known);
        Ok(known)
    }

    /// Applies one event; `campaigns` holds the campaigns this transaction has share-locked
    /// already, and whether marketing knows them.
    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &EventEnvelope,
        campaigns: &mut HashMap<String, bool>,
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
        // Seckill events of a campaign marketing does not know change nothing of seckill.
        let seckill_campaign = match seckill_campaign {
            Some(campaign) => {
                if !self.share(tx, campaign, campaigns).await? {
                    tracing::warn!(order = %order.order_id, campaign, "seckill order of an unknown campaign");
                    None
                } else {
                    Some(campaign)
                }
            }
            None => None,
        };
        match kind {
            "OrderCreated" => {
                if let Some(voucher) = order.voucher_id
                    && !self.store.confirm(tx, voucher, order.order_id).await?
                {
                    tracing::warn!(%voucher, order = %order.order_id, "voucher used by an order but held by another one");
                }
                if let Some(campaign) = seckill_campaign
                    && self
                        .store
                        .record_sale(tx, order.order_id, campaign, &order.user_id)
                        .await?
                {
                    self.adopt(&[&order]).await;
                }
            }
            "OrderPaid" => {
                if let Some(campaign) = seckill_campaign {
                    self.store
                        .sale_paid(tx, order.order_id, campaign, &order.user_id)
                        .await?;
                    let issued = self
                        .store
                        .issue_voucher(tx, order.order_id, &order.user_id, campaign)
                        .await?;
                    if issued.is_none() {
                        tracing::debug!(order = %order.order_id, "voucher already issued");
                    }
                    // Best effort: a paid order is never cancelled, and a rebuild leaves paid
                    // sales out of the releasable ones.
                    if let Err(err) = self.seckill.settle(campaign, order.order_id).await {
                        tracing::warn!(order = %order.order_id, error = %err, "could not settle a paid reservation in Redis");
                    }
                }
            }
            "OrderCancelled" => {
                if let Some(campaign) = seckill_campaign
                    && self
                        .store
                        .sale_cancelled(tx, order.order_id, campaign, &order.user_id)
                        .await?
                {
                    match self.seckill.release(campaign, order.order_id).await {
                        Ok(released) => {
                            self.store.sale_released(tx, order.order_id).await?;
                            tracing::info!(order = %order.order_id, campaign, released, "seckill reservation given back");
                        }
                        // Recorded as not given back yet: the campaign upkeep job retries.
                        Err(err) => {
                            tracing::warn!(order = %order.order_id, campaign, error = %err, "seckill reservation not given back yet; retried later");
                        }
                    }
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
