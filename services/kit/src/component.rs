//! The one interface every component implements to plug into the `pulse` binary.
//!
//! A component contributes routes, gRPC services, Kafka consumers, background jobs and its
//! migrations; the server wires them to shared listeners and to the component's own schema,
//! outbox relay and idempotency store. Adding a component touches one list in `pulse`.

use std::sync::Arc;

use axum::Router;
use futures::future::BoxFuture;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnectOptions;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::config::CountryConfig;
use crate::consumer::{ConsumerConfig, EventHandler};
use crate::kafka::KafkaHandle;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::redis::RedisHandle;

/// What a component gets to build its parts with.
#[derive(Clone)]
pub struct ComponentContext {
    /// The component's name (also its schema).
    pub name: &'static str,
    /// The country this deployment serves.
    pub country: Arc<CountryConfig>,
    /// Names Redis keys and Kafka topics: the country's slug (`fr`), plus `-<instance>` when
    /// several deployments of one country share Redis and Kafka (staging beside production).
    pub keyspace: String,
    /// Pool whose sessions see only the component's schema.
    pub db: PgPool,
    /// Connection options of that schema (for dedicated sessions).
    pub db_options: PgConnectOptions,
    /// Redis.
    pub redis: RedisHandle,
    /// Kafka.
    pub kafka: KafkaHandle,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Token verification for this country.
    pub auth: Arc<Authenticator>,
    /// The component's outbox.
    pub outbox: Outbox,
}

impl ComponentContext {
    /// A context for one-off commands (seeding, maintenance) outside a running server. Its
    /// authenticator accepts no token.
    pub fn standalone(
        name: &'static str,
        country: CountryConfig,
        database_url: &str,
        redis_url: &str,
        kafka_brokers: Vec<String>,
    ) -> Result<Self, crate::server::ServerError> {
        let secret = uuid::Uuid::new_v4().to_string().repeat(2);
        let keyspace = country.slug();
        Ok(Self {
            name,
            auth: Arc::new(Authenticator::hs256(
                secret.as_bytes(),
                "pulse-standalone",
                &country.code,
            )?),
            outbox: Outbox::new(&country.code, &keyspace, name),
            keyspace,
            country: Arc::new(country),
            db: crate::db::schema_pool(database_url, name, 4)?,
            db_options: crate::db::schema_options(database_url, name)?,
            redis: RedisHandle::new(redis_url)?,
            kafka: KafkaHandle::new(kafka_brokers),
            metrics: Arc::new(Metrics::new()),
        })
    }
}

/// A Kafka consumer a component wants to run.
pub struct ConsumerSpec {
    /// Group, topic and tuning.
    pub config: ConsumerConfig,
    /// What to do with each event.
    pub handler: Arc<dyn EventHandler>,
}

/// A long-running background job; it must return soon after its token is cancelled.
pub struct Job {
    /// Name, for logs.
    pub name: String,
    /// The job.
    pub run: Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, ()> + Send>,
}

impl Job {
    /// A job called `name`.
    pub fn new<F, Fut>(name: &str, run: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        Self {
            name: name.to_owned(),
            run: Box::new(move |token| Box::pin(run(token))),
        }
    }
}

/// A Pulse component (identity, booking, marketing, ordering, notifier).
pub trait Component: Send + Sync {
    /// Name, `--target` value and PostgreSQL schema.
    fn name(&self) -> &'static str;

    /// One-line description, shown by `pulse --help`.
    fn description(&self) -> &'static str;

    /// The component's own migrations (versions above the kit's reserved range).
    fn migrations(&self) -> &'static Migrator;

    /// Public HTTP routes.
    fn routes(&self, _ctx: &ComponentContext) -> Router {
        Router::new()
    }

    /// gRPC services, with the names under which gRPC health reports them.
    fn grpc(
        &self,
        _ctx: &ComponentContext,
        _routes: &mut tonic::service::RoutesBuilder,
    ) -> Vec<&'static str> {
        Vec::new()
    }

    /// OpenAPI description of the routes; the server merges every component's into
    /// `/openapi.json`.
    fn openapi(&self) -> Option<utoipa::openapi::OpenApi> {
        None
    }

    /// Kafka consumers.
    fn consumers(&self, _ctx: &ComponentContext) -> Vec<ConsumerSpec> {
        Vec::new()
    }

    /// Background jobs.
    fn jobs(&self, _ctx: &ComponentContext) -> Vec<Job> {
        Vec::new()
    }
}
