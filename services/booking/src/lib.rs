//! Booking: practitioners, schedules, slots and appointments (the Doctolib flow).
//!
//! The component owns the PostgreSQL schema `booking` and plugs into the `pulse` binary through
//! [`pulse_kit::component::Component`]. [`Booking::build`](Component::build) builds its
//! [`Services`] once per process and wraps them in adapters:
//!
//! - [`domain`]: rules and the types that parse input, free of I/O;
//! - [`appointments`] and [`practitioners`]: one flow service per business flow, each owning its
//!   transactions (see [`flow`]);
//! - [`store`] (PostgreSQL), [`search`] (cached search, Redis GEO index);
//! - adapters: [`http`], [`grpc`], [`events`] (outbox payloads, search-cache consumer), [`jobs`].

pub mod appointments;
pub mod domain;
pub mod events;
pub mod flow;
pub mod grpc;
pub mod http;
pub mod jobs;
pub mod practitioners;
pub mod search;
pub mod seed;
pub mod store;

use std::sync::Arc;

use pulse_kit::component::{BuildError, Component, ComponentContext, GrpcServices, Parts};
use pulse_kit::config::CountryConfig;
use pulse_kit::metrics::Metrics;
use pulse_proto::booking::v1::availability_server::AvailabilityServer;
use sqlx::migrate::Migrator;

pub use events::SEARCH_CACHE_GROUP;

/// The component's migrations.
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// The booking component.
#[derive(Debug, Default, Clone, Copy)]
pub struct Booking;

/// Booking's services for one process: the flows and what they stand on. Cheap to clone (they
/// share their pools, caches and counters).
#[derive(Clone)]
pub struct Services {
    /// Data access.
    pub store: store::Store,
    /// Search and its cache.
    pub search: Arc<search::Search>,
    /// The appointment flow.
    pub appointments: appointments::Appointments,
    /// The practitioner flow.
    pub practitioners: practitioners::Practitioners,
}

impl Services {
    /// Builds booking's services for `ctx` (also for one-off commands such as `pulse seed`). Their
    /// metrics are registered only by [`Booking::build`](Component::build).
    pub fn new(ctx: &ComponentContext) -> Self {
        let store = store::Store::new(ctx.db.clone(), ctx.outbox.clone());
        let search = Arc::new(search::Search::new(
            ctx.db.clone(),
            ctx.redis.clone(),
            Arc::clone(&ctx.country),
            &ctx.keyspace,
        ));
        Self {
            appointments: appointments::Appointments::new(
                store.clone(),
                Arc::clone(&ctx.country),
                ctx.redis.clone(),
                &ctx.keyspace,
            ),
            practitioners: practitioners::Practitioners::new(
                store.clone(),
                Arc::clone(&search),
                Arc::clone(&ctx.country),
            ),
            store,
            search,
        }
    }

    fn register_metrics(&self, metrics: &Metrics) {
        metrics.register(
            "booking_slot_lock_bypassed",
            "Bookings decided by the database guard alone because Redis was unreachable",
            self.appointments.lock_bypassed().clone(),
        );
        metrics.register(
            "booking_appointments",
            "Appointments booked, cancelled and rescheduled, and bookings refused because the slot was taken (conflict)",
            self.appointments.outcomes().clone(),
        );
        metrics.register(
            "booking_search_db_queries",
            "Database queries run by practitioner searches (cache misses)",
            self.search.db_queries.clone(),
        );
        metrics.register(
            "booking_search_cache_hits",
            "Practitioner searches answered from the cache",
            self.search.cache_hits.clone(),
        );
        metrics.register(
            "booking_search_near_cache_hits",
            "Practitioner searches answered from the replica's own near-cache, without Redis (also counted as cache hits)",
            self.search.near_hits.clone(),
        );
    }
}

/// Booking's Redis keys start with this; one hash tag per keyspace keeps them on one Redis
/// Cluster slot.
pub(crate) fn redis_prefix(keyspace: &str) -> String {
    format!("{{booking:{keyspace}}}")
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

    fn openapi(&self, _country: &CountryConfig) -> Option<utoipa::openapi::OpenApi> {
        use utoipa::OpenApi;
        Some(http::BookingApi::openapi())
    }

    fn build(&self, ctx: &ComponentContext) -> Result<Parts, BuildError> {
        let services = Services::new(ctx);
        services.register_metrics(&ctx.metrics);
        let mut grpc = GrpcServices::default();
        grpc.add(AvailabilityServer::new(grpc::AvailabilityService::new(
            services.appointments.clone(),
            services.practitioners.clone(),
            Arc::clone(&ctx.country),
        )));
        Ok(Parts {
            keys_looked_up_after: vec![(axum::http::Method::POST, http::BOOK_ROUTE)],
            routes: http::routes(http::AppState {
                appointments: services.appointments,
                practitioners: services.practitioners.clone(),
                search: Arc::clone(&services.search),
                country: Arc::clone(&ctx.country),
            }),
            grpc,
            consumers: vec![events::search_invalidation(
                ctx.outbox.topic(),
                services.search,
            )],
            jobs: vec![
                jobs::slot_horizon(services.practitioners.clone()),
                jobs::geo_index(services.practitioners),
            ],
            ..Parts::default()
        })
    }
}
