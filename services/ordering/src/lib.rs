//! Ordering: products, stock, orders and payments.
//!
//! The component owns the PostgreSQL schema `ordering` and plugs into the `pulse` binary through
//! [`pulse_kit::component::Component`]. Rules live in [`domain`] (no I/O). Each business flow is
//! one service that owns its transaction, locks, rules and compensation: [`catalogue`] writes
//! products, [`checkout`] places orders (products over HTTP, seckill reservations from
//! [`reservations`]), [`payments`] pays, cancels, refunds and applies the provider's webhooks
//! (the [`sweeper`] calls it for unpaid orders past their deadline). [`store`] is the
//! PostgreSQL adapter, [`permit`] the per-product concurrency permit, [`marketing_client`]
//! marketing's vouchers over gRPC behind a circuit breaker, and [`http`] is the thin API over
//! the flows. Settings are read once, before the
//! component exists ([`settings`], [`Ordering::read`]).

pub mod catalogue;
pub mod checkout;
pub mod domain;
pub mod http;
pub mod marketing_client;
pub mod payments;
pub mod permit;
pub mod reservations;
pub mod settings;
pub mod store;
pub mod sweeper;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use pulse_kit::component::{BuildError, Component, ComponentContext, Job, Parts};
use pulse_kit::config::CountryConfig;
use pulse_kit::metrics::Metrics;
use pulse_kit::server::ServerSettings;
use pulse_kit::settings::{Env, SettingError, ordering as vars};
use sqlx::migrate::Migrator;

use crate::checkout::{Checkout, SeckillCheckout};
use crate::marketing_client::MarketingClient;
use crate::payments::Payments;
use crate::permit::{PermitMetrics, Permits};
use crate::reservations::{ReservationConsumer, ReservationMetrics};
use crate::settings::OrderingSettings;
use crate::sweeper::Sweeper;

/// The component's migrations (`pulse migrate` needs them without ordering's settings).
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// The ordering component.
#[derive(Debug, Clone)]
pub struct Ordering {
    settings: Arc<OrderingSettings>,
}

impl Ordering {
    /// Ordering with these settings.
    pub fn new(settings: OrderingSettings) -> Self {
        Self {
            settings: Arc::new(settings),
        }
    }

    /// Ordering configured from `env` for the server `server` (see [`OrderingSettings::read`]);
    /// the error names the variable at fault.
    pub fn read(env: &Env, server: &ServerSettings) -> Result<Self, SettingError> {
        Ok(Self::new(OrderingSettings::read(env, server)?))
    }

    /// The settings.
    pub fn settings(&self) -> &OrderingSettings {
        &self.settings
    }
}

/// Ordering's metrics, registered once per process.
struct OrderingMetrics {
    permits: PermitMetrics,
    breaker_open: Gauge,
    webhooks_refused: Counter,
    reservations: ReservationMetrics,
    expired: Counter,
}

impl OrderingMetrics {
    fn register(registry: &Metrics) -> Self {
        let this = Self {
            permits: PermitMetrics::default(),
            breaker_open: Gauge::default(),
            webhooks_refused: Counter::default(),
            reservations: ReservationMetrics::default(),
            expired: Counter::default(),
        };
        let (permits, reservations) = (&this.permits, &this.reservations);
        for (name, help, gauge) in [
            (
                "ordering_stock_writers_max",
                "Most buyers this process had inside a stock transaction at once",
                &permits.max_in_flight,
            ),
            (
                "ordering_marketing_breaker_open",
                "1 while the circuit breaker in front of marketing is open",
                &this.breaker_open,
            ),
        ] {
            registry.register(name, help, gauge.clone());
        }
        for (name, help, counter) in [
            (
                "ordering_product_permit_bypassed",
                "Orders placed without a product permit because Redis was unreachable",
                &permits.bypassed,
            ),
            (
                "ordering_product_permit_busy",
                "Buyers turned away because every permit of the product stayed taken",
                &permits.busy,
            ),
            (
                "ordering_webhooks_refused",
                "Webhooks refused (bad or stale signature, malformed, unknown order)",
                &this.webhooks_refused,
            ),
            (
                "ordering_reservations_created",
                "Orders created from seckill reservations",
                &reservations.created,
            ),
            (
                "ordering_reservations_duplicate",
                "Reservations whose order existed already",
                &reservations.duplicates,
            ),
            (
                "ordering_reservations_failures",
                "Failed attempts to turn a reservation into an order",
                &reservations.failures,
            ),
            (
                "ordering_reservations_claimed",
                "Reservations claimed from idle consumers",
                &reservations.claimed,
            ),
            (
                "ordering_reservations_dead_lettered",
                "Reservations moved to a dead-letter stream",
                &reservations.dead_lettered,
            ),
            (
                "ordering_orders_expired",
                "Unpaid orders cancelled by the sweeper",
                &this.expired,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        this
    }
}

impl Component for Ordering {
    fn name(&self) -> &'static str {
        "ordering"
    }

    fn description(&self) -> &'static str {
        "Ordering: products, stock, orders and payments."
    }

    fn migrations(&self) -> &'static Migrator {
        &MIGRATIONS
    }

    fn openapi(&self, _country: &CountryConfig) -> Option<utoipa::openapi::OpenApi> {
        use utoipa::OpenApi;
        Some(http::OrderingApi::openapi())
    }

    /// Builds the store, permits, marketing client, payment provider and metrics once, and the
    /// flows over them: the HTTP routes (with the sandbox's checkout pages when it is the
    /// provider), the seckill reservation consumer and the sweeper.
    fn build(&self, ctx: &ComponentContext) -> Result<Parts, BuildError> {
        let s = &self.settings;
        let metrics = OrderingMetrics::register(&ctx.metrics);
        let store = store::Store::new(ctx.db.clone(), ctx.outbox.clone());
        ctx.metrics.register(
            "ordering_orders",
            "Orders that reached each status",
            store.orders_reached().clone(),
        );
        let payment_timeout =
            Duration::from_secs(u64::from(ctx.country.ordering.payment_timeout_seconds));
        let permits = Arc::new(Permits::new(
            ctx.redis.clone(),
            &ctx.keyspace,
            s.product_permits,
            s.permit_ttl,
            s.permit_wait,
            metrics.permits,
        ));
        let marketing = MarketingClient::new(
            &s.marketing_grpc_url,
            s.marketing_timeout,
            s.marketing_retries,
            s.marketing_breaker,
        )
        .map_err(|err| {
            SettingError::new(
                &vars::MARKETING_GRPC_URL,
                format!("`{}` is not usable: {err}", s.marketing_grpc_url),
            )
        })?
        .with_open_gauge(metrics.breaker_open);
        let provider = payments::provider::from_settings(&s.payment, &s.webhook_secrets)?;
        let payments = Payments::new(
            store.clone(),
            provider,
            s.webhook_secrets.clone(),
            metrics.webhooks_refused,
        );
        let sandbox_pages =
            payments::provider::sandbox_checkout(&s.payment, &s.webhook_secrets, store.clone())?;
        let checkout = Checkout::new(store.clone(), permits, marketing, payment_timeout);
        let mut routes = http::routes(http::AppState {
            store: store.clone(),
            catalogue: catalogue::Catalogue::new(store.clone()),
            checkout,
            payments: payments.clone(),
            country: Arc::clone(&ctx.country),
        });
        if let Some(pages) = sandbox_pages {
            routes = routes.merge(http::sandbox_routes(pages, Arc::clone(&ctx.country)));
        }
        let consumer = ReservationConsumer::new(
            ctx.redis.clone(),
            &ctx.keyspace,
            SeckillCheckout::new(store, payment_timeout),
            s.reservations,
            &format!("ordering-{}", uuid::Uuid::new_v4().simple()),
            metrics.reservations,
        );
        let sweeper = Sweeper::new(payments, s.sweep_interval, metrics.expired);
        Ok(Parts {
            routes,
            jobs: vec![
                Job::new("ordering-seckill-reservations", move |shutdown| {
                    consumer.run(shutdown)
                }),
                Job::new("ordering-payment-sweeper", move |shutdown| {
                    sweeper.run(shutdown)
                }),
            ],
            ..Parts::default()
        })
    }
}
