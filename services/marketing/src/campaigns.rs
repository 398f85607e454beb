//! Campaign administration shared by the gRPC `CampaignAdmin` service and the admin HTTP
//! endpoints: PostgreSQL holds the definition and the durable sales, Redis the live counters.
//!
//! Redis's counters are never created from the configured stock: a campaign Redis does not know
//! (new, or lost with Redis's data) is rebuilt from its durable sales (`seckill_sales`, written
//! from ordering's events), under the campaign's lock, by one script that acts only if the
//! campaign is still missing. Redis being unreachable rebuilds nothing: the script must run.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::domain::{self, CampaignSpec, Invalid, Phase};
use crate::seckill::{Counts, LoadSpec, RebuildMode, Rebuilt, Seckill};
use crate::store::{CampaignRow, Store, StoreError};

/// Why a campaign operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    /// No such campaign.
    #[error("campaign `{0}` does not exist")]
    NotFound(String),
    /// Bad input.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// Redis is unreachable (the definition may be saved; retrying loads it).
    #[error("Redis is unavailable: {0}")]
    Redis(#[from] redis::RedisError),
    /// PostgreSQL failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A campaign with its live state.
#[derive(Debug, Clone)]
pub struct CampaignStatus {
    /// Definition.
    pub row: CampaignRow,
    /// Phase now.
    pub phase: Phase,
    /// Counters from Redis (`None` when Redis could not be read).
    pub counts: Option<Counts>,
}

impl CampaignStatus {
    fn new(row: CampaignRow, counts: Option<Counts>, now: DateTime<Utc>) -> Self {
        // Unknown counters never make a campaign look sold out.
        let remaining = counts.map_or(1, |c| c.remaining);
        let phase = domain::phase(
            row.starts_at,
            row.ends_at,
            row.closed_at.is_some(),
            remaining,
            now,
        );
        Self { row, phase, counts }
    }
}

fn load_spec(row: &CampaignRow) -> LoadSpec<'_> {
    LoadSpec {
        id: &row.id,
        stock: row.stock_u32(),
        starts_at: row.starts_at,
        ends_at: row.ends_at,
        closed: row.closed_at.is_some(),
        per_user_limit: row.limit_u32(),
        price_minor: row.price_minor,
        currency: &row.currency,
    }
}

/// Campaign administration.
#[derive(Debug, Clone)]
pub struct Campaigns {
    store: Store,
    seckill: Arc<Seckill>,
}

impl Campaigns {
    /// Over marketing's store and Redis.
    pub fn new(store: Store, seckill: Arc<Seckill>) -> Self {
        Self { store, seckill }
    }

    /// Creates or updates a campaign and loads it into Redis (never resetting what was sold).
    #[tracing::instrument(skip_all, fields(campaign = %spec.id))]
    pub async fn upsert(&self, spec: CampaignSpec) -> Result<CampaignStatus, CampaignError> {
        let spec = spec.validated()?;
        let row = self.store.upsert_campaign(&spec).await?;
        let counts = self.load(&row).await?;
        Ok(CampaignStatus::new(row, Some(counts), Utc::now()))
    }

    /// A campaign's status. With `strict`, a Redis failure is an error; otherwise the counters
    /// are left out. A campaign Redis has lost is loaded again.
    #[tracing::instrument(skip(self))]
    pub async fn status(&self, id: &str, strict: bool) -> Result<CampaignStatus, CampaignError> {
        domain::check_campaign_id(id)?;
        let row = self
            .store
            .campaign(id)
            .await?
            .ok_or_else(|| CampaignError::NotFound(id.to_owned()))?;
        let counts = match self.counts(&row).await {
            Ok(counts) => Some(counts),
            Err(err) if strict => return Err(err),
            Err(err) => {
                tracing::warn!(error = %err, campaign = id, "campaign counters unavailable");
                None
            }
        };
        Ok(CampaignStatus::new(row, counts, Utc::now()))
    }

    async fn counts(&self, row: &CampaignRow) -> Result<Counts, CampaignError> {
        match self.seckill.counts(&row.id).await? {
            Some(counts) => Ok(counts),
            None => self.load(row).await,
        }
    }

    /// Puts `row`'s definition into Redis: an update when Redis knows the campaign, else a
    /// rebuild from its durable sales.
    async fn load(&self, row: &CampaignRow) -> Result<Counts, CampaignError> {
        for _ in 0..3 {
            if let Some(counts) = self.seckill.update(&load_spec(row)).await? {
                return Ok(counts);
            }
            if let Rebuilt::Done { counts, .. } =
                self.rebuild(&row.id, RebuildMode::Missing).await?
            {
                return Ok(counts);
            }
            // Rebuilt by someone else in between: update that.
        }
        Err(CampaignError::Redis(redis::RedisError::from((
            redis::ErrorKind::IoError,
            "the campaign keeps vanishing from Redis",
        ))))
    }

    /// Rebuilds a campaign's Redis counters from its durable sales (see [`RebuildMode`]), holding
    /// the campaign's lock so that no sale changes meanwhile.
    #[tracing::instrument(skip(self))]
    pub async fn rebuild(&self, id: &str, mode: RebuildMode) -> Result<Rebuilt, CampaignError> {
        let mut tx = self.store.begin().await?;
        let row = self
            .store
            .lock_campaign(&mut tx, id)
            .await?
            .ok_or_else(|| CampaignError::NotFound(id.to_owned()))?;
        let sales = self
            .store
            .sales_of(&mut tx, id, mode == RebuildMode::Merge)
            .await?;
        let rebuilt = self.seckill.rebuild(&load_spec(&row), &sales, mode).await?;
        tx.commit().await.map_err(StoreError::from)?;
        if let Rebuilt::Done { counts, kept } = rebuilt {
            if mode == RebuildMode::Missing && sales.is_empty() {
                // A new campaign (or one that never sold): nothing was lost.
                tracing::info!(campaign = id, "campaign loaded into Redis");
                return Ok(rebuilt);
            }
            tracing::warn!(
                campaign = id,
                ?mode,
                sold = counts.sold,
                remaining = counts.remaining,
                kept,
                "seckill counters rebuilt from the durable sales"
            );
        }
        Ok(rebuilt)
    }

    /// Campaigns ending after `since`, with their status (counters best effort).
    pub async fn list(
        &self,
        since: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<CampaignStatus>, CampaignError> {
        let rows = self.store.campaigns_ending_after(since, limit).await?;
        let now = Utc::now();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let counts = self.seckill.counts(&row.id).await.ok().flatten();
            out.push(CampaignStatus::new(row, counts, now));
        }
        Ok(out)
    }

    /// Ends a campaign now (idempotent).
    #[tracing::instrument(skip(self))]
    pub async fn close(&self, id: &str) -> Result<CampaignStatus, CampaignError> {
        domain::check_campaign_id(id)?;
        let row = self
            .store
            .close_campaign(id)
            .await?
            .ok_or_else(|| CampaignError::NotFound(id.to_owned()))?;
        if !self.seckill.close(id).await? {
            self.load(&row).await?;
        }
        let counts = self.seckill.counts(id).await?;
        Ok(CampaignStatus::new(row, counts, Utc::now()))
    }

    /// Retires campaigns that ended more than a day ago: ordering stops reading their streams and
    /// their keys expire a week later. Returns how many.
    pub async fn retire_ended(&self) -> Result<usize, CampaignError> {
        let since = Utc::now() - chrono::Duration::days(1);
        let current: std::collections::HashSet<String> = self
            .store
            .campaigns_ending_after(since, 100_000)
            .await?
            .into_iter()
            .map(|row| row.id)
            .collect();
        let mut retired = 0;
        for campaign in self.seckill.registered().await? {
            if !current.contains(&campaign) {
                self.seckill
                    .retire(&campaign, std::time::Duration::from_secs(7 * 24 * 3600))
                    .await?;
                tracing::info!(%campaign, "ended campaign retired from Redis");
                retired += 1;
            }
        }
        Ok(retired)
    }

    /// Rebuilds the Redis counters of every current campaign Redis lost (its keys are missing)
    /// or holds older than the durable record (fewer sold than the live durable sales, e.g.
    /// restored from an old snapshot), from the durable sales; returns how many. An unreachable
    /// Redis is an error and rebuilds nothing.
    pub async fn reload_missing(&self) -> Result<usize, CampaignError> {
        let since = Utc::now() - chrono::Duration::hours(1);
        let live = self.store.live_sales(since).await?;
        let mut rebuilt = 0;
        for row in self.store.campaigns_ending_after(since, 10_000).await? {
            let durable = live.get(&row.id).copied().unwrap_or(0);
            let mode = match self.seckill.counts(&row.id).await? {
                None => RebuildMode::Missing,
                Some(counts) if i64::from(counts.sold) < durable => {
                    tracing::warn!(campaign = %row.id, redis_sold = counts.sold, durable, "Redis counts fewer sales than the durable record");
                    RebuildMode::Merge
                }
                Some(_) => continue,
            };
            if matches!(self.rebuild(&row.id, mode).await?, Rebuilt::Done { .. }) {
                rebuilt += 1;
            }
        }
        Ok(rebuilt)
    }

    /// Gives back in Redis the units of cancelled sales it could not give back when their
    /// `OrderCancelled` was applied (Redis failed then); returns how many were settled.
    pub async fn release_cancelled(&self) -> Result<usize, CampaignError> {
        let mut settled = 0;
        for (order, campaign) in self.store.unreleased_sales(100).await? {
            let mut tx = self.store.begin().await?;
            if self.store.share_campaign(&mut tx, &campaign).await? {
                let released = self.seckill.release(&campaign, order).await?;
                tracing::info!(%order, %campaign, released, "cancelled seckill sale given back late");
            }
            self.store.sale_released(&mut tx, order).await?;
            tx.commit().await.map_err(StoreError::from)?;
            settled += 1;
        }
        Ok(settled)
    }
}
