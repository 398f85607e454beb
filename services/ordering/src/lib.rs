//! Ordering: products, stock, orders and payments.
//!
//! The component owns the PostgreSQL schema `ordering` and plugs into the `pulse` binary through
//! [`pulse_kit::component::Component`]. Rules live in [`domain`] (no I/O); [`store`] is the
//! PostgreSQL adapter; [`reservations`] turns seckill reservations (Redis Streams) into orders;
//! [`permit`] is the per-product concurrency permit; [`marketing_client`] calls marketing's
//! vouchers over gRPC behind a circuit breaker; [`payments`] holds the provider port, the
//! Stripe-compatible adapter and the sandbox; [`sweeper`] cancels unpaid orders; [`http`] is the
//! API. Settings come from the environment ([`settings`]).

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
use pulse_kit::component::{Component, ComponentContext, Job};
use sqlx::migrate::Migrator;

use crate::payments::PaymentProvider;
use crate::settings::{OrderingSettings, PaymentSettings, SettingsError};

static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// The ordering component.
#[derive(Debug, Clone)]
pub struct Ordering {
    settings: Arc<OrderingSettings>,
}

impl Default for Ordering {
    /// Local defaults (see [`OrderingSettings::default`]).
    fn default() -> Self {
        Self::new(OrderingSettings::default())
    }
}

impl Ordering {
    /// Ordering with these settings.
    pub fn new(settings: OrderingSettings) -> Self {
        Self {
            settings: Arc::new(settings),
        }
    }

    /// Ordering configured from the environment (`PULSE_…`, see [`settings`]).
    pub fn try_from_env() -> Result<Self, SettingsError> {
        Ok(Self::new(OrderingSettings::from_env()?))
    }

    /// Ordering configured from the environment; a bad variable is logged and the defaults are
    /// used. `pulse serve` checks the environment with [`Ordering::try_from_env`] first, so a bad
    /// value stops start-up there.
    pub fn from_env() -> Self {
        Self::try_from_env().unwrap_or_else(|err| {
            tracing::debug!(error = %err, "invalid ordering settings; using the defaults");
            Self::default()
        })
    }

    /// The settings.
    pub fn settings(&self) -> &OrderingSettings {
        &self.settings
    }

    fn provider(&self) -> Arc<dyn PaymentProvider> {
        let secret = self
            .settings
            .webhook_secrets
            .first()
            .cloned()
            .unwrap_or_default();
        let built: Result<Arc<dyn PaymentProvider>, payments::PaymentError> =
            match &self.settings.payment {
                PaymentSettings::Sandbox { webhook_url, delay } => {
                    payments::sandbox::SandboxProvider::new(webhook_url, &secret, *delay)
                        .map(|p| Arc::new(p) as Arc<dyn PaymentProvider>)
                }
                PaymentSettings::Stripe {
                    base_url,
                    api_key,
                    return_url,
                } => payments::stripe::StripeProvider::new(base_url, api_key, return_url)
                    .map(|p| Arc::new(p) as Arc<dyn PaymentProvider>),
            };
        built.unwrap_or_else(|err| {
            tracing::error!(error = %err, "payment provider unavailable");
            Arc::new(Unavailable(err.to_string()))
        })
    }

    fn store(ctx: &ComponentContext) -> store::Store {
        store::Store::new(ctx.db.clone(), ctx.outbox.clone())
    }

    fn payment_timeout(ctx: &ComponentContext) -> Duration {
        Duration::from_secs(u64::from(ctx.country.ordering.payment_timeout_seconds))
    }
}

/// A provider that could not be built: every call answers unavailable.
struct Unavailable(String);

#[async_trait::async_trait]
impl PaymentProvider for Unavailable {
    fn name(&self) -> &'static str {
        "unavailable"
    }

    async fn create_checkout(
        &self,
        _request: &payments::CheckoutRequest,
    ) -> Result<payments::Checkout, payments::PaymentError> {
        Err(payments::PaymentError::Unavailable(self.0.clone()))
    }

    async fn refund(
        &self,
        _order_id: uuid::Uuid,
        _payment_intent: &str,
    ) -> Result<payments::Refund, payments::PaymentError> {
        Err(payments::PaymentError::Unavailable(self.0.clone()))
    }

    async fn expire_checkout(&self, _session_id: &str) -> Result<(), payments::PaymentError> {
        Err(payments::PaymentError::Unavailable(self.0.clone()))
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

    fn routes(&self, ctx: &ComponentContext) -> axum::Router {
        let s = &self.settings;
        let permit_metrics = permit::PermitMetrics::default();
        ctx.metrics.register(
            "ordering_product_permit_bypassed",
            "Orders placed without a product permit because Redis was unreachable",
            permit_metrics.bypassed.clone(),
        );
        ctx.metrics.register(
            "ordering_product_permit_busy",
            "Buyers turned away because every permit of the product stayed taken",
            permit_metrics.busy.clone(),
        );
        ctx.metrics.register(
            "ordering_stock_writers_max",
            "Most buyers this process had inside a stock transaction at once",
            permit_metrics.max_in_flight.clone(),
        );
        let permits = Arc::new(permit::Permits::new(
            ctx.redis.clone(),
            &ctx.keyspace,
            s.product_permits,
            s.permit_ttl,
            s.permit_wait,
            permit_metrics,
        ));
        let marketing = match marketing_client::MarketingClient::new(
            &s.marketing_grpc_url,
            s.marketing_timeout,
            s.marketing_retries,
            s.marketing_breaker,
        ) {
            Ok(client) => client,
            Err(err) => {
                tracing::error!(error = %err, url = %s.marketing_grpc_url, "invalid marketing URL; using the local default");
                // The settings check rejects bad URLs; this keeps the component usable anyway.
                match marketing_client::MarketingClient::new(
                    "http://127.0.0.1:50051",
                    s.marketing_timeout,
                    s.marketing_retries,
                    s.marketing_breaker,
                ) {
                    Ok(client) => client,
                    Err(_) => return axum::Router::new(),
                }
            }
        };
        let breaker_open = Gauge::<i64>::default();
        ctx.metrics.register(
            "ordering_marketing_breaker_open",
            "1 while the circuit breaker in front of marketing is open",
            breaker_open.clone(),
        );
        let marketing = marketing.with_open_gauge(breaker_open);
        let webhooks_refused = Counter::default();
        ctx.metrics.register(
            "ordering_webhooks_refused",
            "Webhooks refused (bad or stale signature, malformed, unknown order)",
            webhooks_refused.clone(),
        );
        http::routes(http::AppState {
            store: Self::store(ctx),
            permits,
            marketing,
            provider: self.provider(),
            webhook_secrets: Arc::new(s.webhook_secrets.clone()),
            country: Arc::clone(&ctx.country),
            webhooks_refused,
        })
    }

    fn openapi(&self) -> Option<utoipa::openapi::OpenApi> {
        use utoipa::OpenApi;
        Some(http::OrderingApi::openapi())
    }

    fn jobs(&self, ctx: &ComponentContext) -> Vec<Job> {
        let metrics = reservations::ReservationMetrics::default();
        for (name, help, counter) in [
            (
                "ordering_reservations_created",
                "Orders created from seckill reservations",
                &metrics.created,
            ),
            (
                "ordering_reservations_duplicate",
                "Reservations whose order existed already",
                &metrics.duplicates,
            ),
            (
                "ordering_reservations_failures",
                "Failed attempts to turn a reservation into an order",
                &metrics.failures,
            ),
            (
                "ordering_reservations_claimed",
                "Reservations claimed from idle consumers",
                &metrics.claimed,
            ),
            (
                "ordering_reservations_dead_lettered",
                "Reservations moved to a dead-letter stream",
                &metrics.dead_lettered,
            ),
        ] {
            ctx.metrics.register(name, help, counter.clone());
        }
        let cancelled = Counter::default();
        ctx.metrics.register(
            "ordering_orders_expired",
            "Unpaid orders cancelled by the sweeper",
            cancelled.clone(),
        );
        let consumer = reservations::ReservationConsumer::new(
            ctx.redis.clone(),
            &ctx.keyspace,
            Self::store(ctx),
            Self::payment_timeout(ctx),
            self.settings.reservations,
            &format!("ordering-{}", uuid::Uuid::new_v4().simple()),
            metrics,
        );
        let sweeper = sweeper::Sweeper::new(
            Self::store(ctx),
            self.provider(),
            self.settings.sweep_interval,
            cancelled,
        );
        vec![
            Job::new("ordering-seckill-reservations", move |shutdown| {
                consumer.run(shutdown)
            }),
            Job::new("ordering-payment-sweeper", move |shutdown| {
                sweeper.run(shutdown)
            }),
        ]
    }
}
