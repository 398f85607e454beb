//! Marketing: seckill campaigns, vouchers and wallets.
//!
//! The component owns the PostgreSQL schema `marketing` and plugs into the `pulse` binary through
//! [`pulse_kit::component::Component`]. Rules live in [`domain`] (no I/O); the flows are
//! [`campaigns`] (administration, Redis counters rebuilt from durable sales) and [`attempts`]
//! (one user's seckill try); [`store`] is the PostgreSQL adapter, [`seckill`] the Redis side (one
//! Lua script per seckill attempt), [`reservation`] the stream contract ordering reads, [`http`]
//! and [`grpc`] the APIs, and [`events`] reacts to ordering's events (vouchers into wallets,
//! stock given back).

pub mod attempts;
pub mod campaigns;
pub mod domain;
pub mod events;
pub mod grpc;
pub mod http;
pub mod reservation;
pub mod seckill;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;

use prometheus_client::metrics::family::Family;
use pulse_kit::component::{BuildError, Component, ComponentContext, ConsumerSpec, Job, Parts};
use pulse_kit::config::CountryConfig;
use pulse_kit::consumer::ConsumerConfig;
use pulse_kit::kafka::events_topic;
use sqlx::migrate::Migrator;

/// The component's migrations.
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// Consumer group that applies ordering's events (vouchers, stock given back).
pub const ORDER_EVENTS_GROUP: &str = "marketing-orders";

/// A voucher hold no `OrderCreated` confirmed within this long is given back.
pub const HOLD_TTL: Duration = Duration::from_secs(15 * 60);

/// The marketing component.
#[derive(Debug, Default, Clone, Copy)]
pub struct Marketing;

/// Marketing's flows and stores, built once per process.
pub struct Services {
    /// Tables.
    pub store: store::Store,
    /// Redis side of seckill.
    pub seckill: Arc<seckill::Seckill>,
    /// Campaign administration.
    pub campaigns: campaigns::Campaigns,
}

/// Builds marketing's services for `ctx` (also used by tests that drive them directly).
pub fn services(ctx: &ComponentContext) -> Services {
    let store = store::Store::new(ctx.db.clone(), ctx.outbox.clone());
    // One user's attempts per second at a campaign, with a burst of as many again.
    let per_second = ctx.country.rate_limits.seckill_attempts_per_second;
    let seckill = Arc::new(
        seckill::Seckill::new(ctx.redis.clone(), &ctx.keyspace)
            .with_attempt_rate(pulse_kit::ratelimit::Gcra::new(per_second, per_second)),
    );
    Services {
        campaigns: campaigns::Campaigns::new(store.clone(), Arc::clone(&seckill)),
        store,
        seckill,
    }
}

impl Component for Marketing {
    fn name(&self) -> &'static str {
        "marketing"
    }

    fn description(&self) -> &'static str {
        "Marketing: seckill campaigns, vouchers and wallets."
    }

    fn migrations(&self) -> &'static Migrator {
        &MIGRATIONS
    }

    fn openapi(&self, _country: &CountryConfig) -> Option<utoipa::openapi::OpenApi> {
        use utoipa::OpenApi;
        Some(http::MarketingApi::openapi())
    }

    fn build(&self, ctx: &ComponentContext) -> Result<Parts, BuildError> {
        use pulse_proto::marketing::v1::campaign_admin_server::CampaignAdminServer;
        use pulse_proto::marketing::v1::vouchers_server::VouchersServer;
        let services = services(ctx);
        let outcomes = Family::default();
        ctx.metrics.register(
            "marketing_seckill_attempts",
            "Seckill attempts by outcome",
            Clone::clone(&outcomes),
        );
        let missing = Arc::new(tokio::sync::Notify::new());
        let mut parts = Parts {
            routes: http::routes(http::AppState {
                campaigns: services.campaigns.clone(),
                attempts: attempts::Attempts::new(
                    Arc::clone(&services.seckill),
                    outcomes,
                    Arc::clone(&missing),
                ),
                store: services.store.clone(),
            }),
            // The reservation script keeps the attempt's key and limits the user's rate in
            // its one round trip: no database record, no second Redis call per attempt.
            keys_kept_by_flow: vec![(Method::POST, http::SECKILL_ROUTE)],
            rate_limited_by_flow: vec![(Method::POST, http::SECKILL_ROUTE)],
            ..Parts::default()
        };
        parts
            .grpc
            .add(CampaignAdminServer::new(grpc::CampaignAdminService::new(
                services.campaigns.clone(),
            )))
            .add(VouchersServer::new(grpc::VouchersService::new(
                services.store.clone(),
            )));
        let mut config =
            ConsumerConfig::new(ORDER_EVENTS_GROUP, &events_topic(&ctx.keyspace, "ordering"));
        config.fetch_max_wait = Duration::from_millis(200);
        parts.consumers.push(ConsumerSpec {
            config,
            handler: Arc::new(events::OrderEventsHandler::new(
                services.store.clone(),
                Arc::clone(&services.seckill),
            )),
        });
        parts.jobs = vec![
            campaign_upkeep(services.campaigns, missing),
            voucher_hold_expiry(services.store),
        ];
        Ok(parts)
    }
}

/// Every 10 s, and at most once a second sooner when a seckill attempt found a campaign missing
/// from Redis: rebuilds the counters of campaigns Redis lost (from the durable sales), gives
/// back cancelled sales Redis could not give back at the time, and retires ended campaigns.
fn campaign_upkeep(campaigns: campaigns::Campaigns, missing: Arc<tokio::sync::Notify>) -> Job {
    Job::new("marketing-campaign-reload", move |shutdown| async move {
        loop {
            if let Err(err) = campaigns.reload_missing().await {
                tracing::debug!(error = %err, "campaign reload skipped");
            }
            if let Err(err) = campaigns.release_cancelled().await {
                tracing::debug!(error = %err, "late seckill releases skipped");
            }
            if let Err(err) = campaigns.retire_ended().await {
                tracing::debug!(error = %err, "campaign retirement skipped");
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = shutdown.cancelled() => return,
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(9)) => {}
                () = missing.notified() => {}
                () = shutdown.cancelled() => return,
            }
        }
    })
}

/// Gives back voucher holds of orders that were never written, every 30 s.
fn voucher_hold_expiry(store: store::Store) -> Job {
    Job::new("marketing-voucher-holds", move |shutdown| async move {
        loop {
            match store.expire_holds(HOLD_TTL).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(released = n, "expired voucher holds given back"),
                Err(err) => tracing::warn!(error = %err, "voucher hold expiry failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(30)) => {}
                () = shutdown.cancelled() => return,
            }
        }
    })
}
