//! Booking: practitioners, schedules, slots and appointments (the Doctolib flow).
//!
//! The component owns the PostgreSQL schema `booking` and plugs into the `pulse` binary through
//! [`pulse_kit::component::Component`]. Rules live in [`domain`] (no I/O); [`store`] is the
//! PostgreSQL adapter, [`search`] the cached search, [`http`] and [`grpc`] the APIs.

pub mod domain;
pub mod grpc;
pub mod http;
pub mod search;
pub mod seed;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use prometheus_client::metrics::counter::Counter;
use pulse_kit::component::{Component, ComponentContext, ConsumerSpec, Job};
use pulse_kit::consumer::{ConsumerConfig, EventHandler, HandlerError};
use pulse_kit::envelope::EventEnvelope;
use pulse_kit::redis::RedisLock;
use sqlx::PgConnection;
use sqlx::migrate::Migrator;

static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// Consumer group that keeps search results fresh.
pub const SEARCH_CACHE_GROUP: &str = "booking-search-cache";

/// The booking component.
#[derive(Debug, Default, Clone, Copy)]
pub struct Booking;

/// Booking's parts built for one process.
pub struct Parts {
    /// Data access.
    pub store: store::Store,
    /// Search and cache.
    pub search: Arc<search::Search>,
}

/// Builds booking's store and search for `ctx` (also used by `pulse seed`).
pub fn parts(ctx: &ComponentContext) -> Parts {
    Parts {
        store: store::Store::new(ctx.db.clone(), ctx.outbox.clone(), Arc::clone(&ctx.country)),
        search: Arc::new(search::Search::new(
            ctx.db.clone(),
            ctx.redis.clone(),
            Arc::clone(&ctx.country),
            &ctx.keyspace,
        )),
    }
}

/// Drops cached search results when an appointment changes.
struct SearchInvalidator {
    search: Arc<search::Search>,
}

#[async_trait]
impl EventHandler for SearchInvalidator {
    async fn handle(
        &self,
        _tx: &mut PgConnection,
        event: &EventEnvelope,
    ) -> Result<(), HandlerError> {
        if event.event_type.starts_with("Appointment") {
            self.search.invalidate().await?;
        }
        Ok(())
    }
}

impl Component for Booking {
    fn name(&self) -> &'static str {
        "booking"
    }

    fn description(&self) -> &'static str {
        "Booking: practitioners, schedules, slots and appointments (the Doctolib flow)."
    }

    fn migrations(&self) -> &'static Migrator {
        &MIGRATIONS
    }

    fn routes(&self, ctx: &ComponentContext) -> axum::Router {
        let parts = parts(ctx);
        let lock_bypassed = Counter::default();
        ctx.metrics.register(
            "booking_slot_lock_bypassed",
            "Bookings decided by the database guard alone because Redis was unreachable",
            lock_bypassed.clone(),
        );
        ctx.metrics.register(
            "booking_search_db_queries",
            "Database queries run by practitioner searches (cache misses)",
            parts.search.db_queries.clone(),
        );
        ctx.metrics.register(
            "booking_search_cache_hits",
            "Practitioner searches answered from the cache",
            parts.search.cache_hits.clone(),
        );
        http::routes(http::AppState {
            store: parts.store,
            search: parts.search,
            redis: ctx.redis.clone(),
            locks: Arc::new(RedisLock::new()),
            country: Arc::clone(&ctx.country),
            keyspace: ctx.keyspace.clone(),
            lock_bypassed,
        })
    }

    fn grpc(
        &self,
        ctx: &ComponentContext,
        routes: &mut tonic::service::RoutesBuilder,
    ) -> Vec<&'static str> {
        let parts = parts(ctx);
        routes.add_service(
            pulse_proto::booking::v1::availability_server::AvailabilityServer::new(
                grpc::AvailabilityService::new(parts.store, Arc::clone(&ctx.country)),
            ),
        );
        vec!["booking.v1.Availability"]
    }

    fn openapi(&self) -> Option<utoipa::openapi::OpenApi> {
        use utoipa::OpenApi;
        Some(http::BookingApi::openapi())
    }

    fn consumers(&self, ctx: &ComponentContext) -> Vec<ConsumerSpec> {
        let parts = parts(ctx);
        let mut config = ConsumerConfig::new(SEARCH_CACHE_GROUP, ctx.outbox.topic());
        config.fetch_max_wait = Duration::from_millis(200);
        vec![ConsumerSpec {
            config,
            handler: Arc::new(SearchInvalidator {
                search: parts.search,
            }),
        }]
    }

    fn jobs(&self, ctx: &ComponentContext) -> Vec<Job> {
        let slots = parts(ctx);
        let geo = parts(ctx);
        vec![
            Job::new("booking-slot-horizon", move |shutdown| async move {
                // Keeps every schedule's slots reaching the horizon, and rebuilds changed ones.
                loop {
                    match slots.store.extend_slots(50).await {
                        Ok(50) => continue,
                        Ok(_) => {}
                        Err(err) => tracing::warn!(error = %err, "slot job round failed"),
                    }
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(60)) => {}
                        () = shutdown.cancelled() => return,
                    }
                }
            }),
            Job::new("booking-geo-index", move |shutdown| async move {
                // Redis keeps nothing on disk: reload the GEO index at start and now and then.
                loop {
                    match geo.store.positions().await {
                        Ok(positions) => {
                            if let Err(err) = geo.search.index_positions(&positions).await {
                                tracing::debug!(error = %err, "GEO index sync skipped");
                            }
                        }
                        Err(err) => tracing::warn!(error = %err, "GEO index sync failed"),
                    }
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(300)) => {}
                        () = shutdown.cancelled() => return,
                    }
                }
            }),
        ]
    }
}
