//! Marketing: seckill campaigns, vouchers and wallets.
//!
//! The component owns the PostgreSQL schema `marketing` and plugs into the `pulse` binary through
//! [`pulse_kit::component::Component`]. Rules live in [`domain`] (no I/O); [`store`] is the
//! PostgreSQL adapter, [`seckill`] the Redis side (one Lua script per seckill attempt),
//! [`reservation`] the stream contract ordering reads, [`http`] and [`grpc`] the APIs, and
//! [`events`] reacts to ordering's events (vouchers into wallets, stock given back).

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

use prometheus_client::metrics::family::Family;
use pulse_kit::component::{Component, ComponentContext, ConsumerSpec, Job};
use pulse_kit::consumer::ConsumerConfig;
use pulse_kit::kafka::events_topic;
use sqlx::migrate::Migrator;

static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// Consumer group that applies ordering's events (vouchers, stock given back).
pub const ORDER_EVENTS_GROUP: &str = "marketing-orders";

/// A voucher hold no `OrderCreated` confirmed within this long is given back.
pub const HOLD_TTL: Duration = Duration::from_secs(15 * 60);

/// The marketing component.
#[derive(Debug, Default, Clone, Copy)]
pub struct Marketing;

/// Marketing's parts built for one process.
pub struct Parts {
    /// Tables.
    pub store: store::Store,
    /// Redis side of seckill.
    pub seckill: Arc<seckill::Seckill>,
    /// Campaign administration.
    pub campaigns: campaigns::Campaigns,
}

/// Builds marketing's parts for `ctx`.
pub fn parts(ctx: &ComponentContext) -> Parts {
    let store = store::Store::new(ctx.db.clone(), ctx.outbox.clone());
    let seckill = Arc::new(seckill::Seckill::new(ctx.redis.clone(), &ctx.keyspace));
    Parts {
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

    fn routes(&self, ctx: &ComponentContext) -> axum::Router {
        let parts = parts(ctx);
        let outcomes = Family::default();
        ctx.metrics.register(
            "marketing_seckill_attempts",
            "Seckill attempts by outcome",
            Clone::clone(&outcomes),
        );
        // One user's attempts per second, with a burst of as many again.
        let per_second = ctx.country.rate_limits.seckill_attempts_per_second;
        let attempts = Arc::new(pulse_kit::ratelimit::RateLimiter::new(
            ctx.redis.clone(),
            &ctx.keyspace,
            per_second,
            per_second,
            false,
        ));
        http::routes(http::AppState {
            campaigns: parts.campaigns,
            seckill: parts.seckill,
            store: parts.store,
            outcomes,
            attempts,
        })
    }

    fn grpc(
        &self,
        ctx: &ComponentContext,
        routes: &mut tonic::service::RoutesBuilder,
    ) -> Vec<&'static str> {
        use pulse_proto::marketing::v1::campaign_admin_server::CampaignAdminServer;
        use pulse_proto::marketing::v1::vouchers_server::VouchersServer;
        let parts = parts(ctx);
        routes.add_service(CampaignAdminServer::new(grpc::CampaignAdminService::new(
            parts.campaigns,
        )));
        routes.add_service(VouchersServer::new(grpc::VouchersService::new(parts.store)));
        vec!["marketing.v1.CampaignAdmin", "marketing.v1.Vouchers"]
    }

    fn openapi(&self) -> Option<utoipa::openapi::OpenApi> {
        use utoipa::OpenApi;
        Some(http::MarketingApi::openapi())
    }

    fn consumers(&self, ctx: &ComponentContext) -> Vec<ConsumerSpec> {
        let parts = parts(ctx);
        let mut config =
            ConsumerConfig::new(ORDER_EVENTS_GROUP, &events_topic(&ctx.keyspace, "ordering"));
        config.fetch_max_wait = Duration::from_millis(200);
        vec![ConsumerSpec {
            config,
            handler: Arc::new(events::OrderEventsHandler::new(parts.store, parts.seckill)),
        }]
    }

    fn jobs(&self, ctx: &ComponentContext) -> Vec<Job> {
        let reload = parts(ctx);
        let holds = parts(ctx);
        vec![
            Job::new("marketing-campaign-reload", move |shutdown| async move {
                // Redis keeps nothing on disk: campaigns it lost are loaded again.
                loop {
                    if let Err(err) = reload.campaigns.reload_missing().await {
                        tracing::debug!(error = %err, "campaign reload skipped");
                    }
                    if let Err(err) = reload.campaigns.retire_ended().await {
                        tracing::debug!(error = %err, "campaign retirement skipped");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(10)) => {}
                        () = shutdown.cancelled() => return,
                    }
                }
            }),
            Job::new("marketing-voucher-holds", move |shutdown| async move {
                // Holds of orders that were never written are given back.
                loop {
                    match holds.store.expire_holds(HOLD_TTL).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(released = n, "expired voucher holds given back"),
                        Err(err) => tracing::warn!(error = %err, "voucher hold expiry failed"),
                    }
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(30)) => {}
                        () = shutdown.cancelled() => return,
                    }
                }
            }),
        ]
    }
}
