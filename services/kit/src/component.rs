//! The one interface every component implements to plug into the `pulse` binary.
//!
//! A component builds its [`Parts`] once per process — routes, gRPC services, Kafka consumers,
//! background jobs — and names its migrations; the server wires them to shared listeners and to
//! the component's own schema, outbox relay and idempotency store. Adding a component touches
//! one list in `pulse`.

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

/// Why a component could not build its parts. The message names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A setting holds no usable value.
    #[error(transparent)]
    Setting(#[from] crate::settings::SettingError),
    /// A part could not be built for another reason.
    #[error("{component}: {message}")]
    Part {
        /// The component.
        component: &'static str,
        /// What went wrong.
        message: String,
    },
}

/// Adds one service to the process's gRPC routes.
type AddService = Box<dyn FnOnce(&mut tonic::service::RoutesBuilder) + Send>;

/// The gRPC services of a component, with the names gRPC health reports them under.
#[derive(Default)]
pub struct GrpcServices {
    adders: Vec<AddService>,
    names: Vec<&'static str>,
}

impl GrpcServices {
    /// Adds a tonic service.
    pub fn add<S>(&mut self, service: S) -> &mut Self
    where
        S: tower::Service<http::Request<tonic::body::Body>, Error = std::convert::Infallible>
            + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.adders.push(Box::new(move |routes| {
            routes.add_service(service);
        }));
        self.names.push(S::NAME);
        self
    }

    /// The services' names (`booking.v1.Availability`).
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }

    /// Adds the services to the process's gRPC routes.
    pub fn register(self, routes: &mut tonic::service::RoutesBuilder) {
        for add in self.adders {
            add(routes);
        }
    }
}

/// Operations named by method and route template (`POST /v1/seckill/{campaign}/orders`), as the
/// router matched them ([`axum::extract::MatchedPath`]); a short list, searched in place.
#[derive(Debug, Clone, Default)]
pub struct Operations(std::sync::Arc<[(axum::http::Method, String)]>);

impl Operations {
    /// The list of `operations`.
    pub fn new<'a>(operations: impl IntoIterator<Item = (axum::http::Method, &'a str)>) -> Self {
        Self(
            operations
                .into_iter()
                .map(|(method, route)| (method, route.to_owned()))
                .collect(),
        )
    }

    /// Whether `method` on `route` is one of them.
    pub fn contains(&self, method: &axum::http::Method, route: &str) -> bool {
        self.0.iter().any(|(m, r)| m == method && r == route)
    }
}

/// What a component runs in this process, built once by [`Component::build`].
#[derive(Default)]
pub struct Parts {
    /// Public HTTP routes.
    pub routes: Router,
    /// gRPC services.
    pub grpc: GrpcServices,
    /// Kafka consumers.
    pub consumers: Vec<ConsumerSpec>,
    /// Background jobs.
    pub jobs: Vec<Job>,
    /// Operations (method, route template) whose flow keeps its own `Idempotency-Key`
    /// records in the atomic step that makes its effect: the kit's middleware checks and hands
    /// the key over but neither looks it up nor stores an answer (see
    /// [`IdempotencyStore::kept_by_flow`](crate::idempotency::IdempotencyStore::kept_by_flow)).
    pub keys_kept_by_flow: Vec<(axum::http::Method, &'static str)>,
    /// Operations whose `Idempotency-Key` is looked up only after a handler that made no effect
    /// (see [`IdempotencyStore::looked_up_after`](crate::idempotency::IdempotencyStore::looked_up_after)).
    pub keys_looked_up_after: Vec<(axum::http::Method, &'static str)>,
    /// Operations whose flow limits a signed-in caller's rate itself, in the same atomic step
    /// as its effect: the edge rate limit does not spend a second Redis round trip on them
    /// (see [`RateLimiter::limited_by_flow`](crate::ratelimit::RateLimiter::limited_by_flow)).
    pub rate_limited_by_flow: Vec<(axum::http::Method, &'static str)>,
    /// Operations the edge rate limit never checks, for any caller: answers served from
    /// memory (the web app's embedded files), cheaper to serve than a Redis round trip to limit.
    pub not_rate_limited: Vec<(axum::http::Method, &'static str)>,
}

/// A Pulse component (identity, booking, marketing, ordering, notifier).
///
/// Settings are read before the component exists (its constructor takes them), so a component
/// only builds: [`Component::build`] runs once per process and turns the context into the
/// component's [`Parts`]: its flow services, wrapped in the adapters that serve them.
pub trait Component: Send + Sync {
    /// Name, `--target` value and PostgreSQL schema.
    fn name(&self) -> &'static str;

    /// One-line description, shown by `pulse --help`.
    fn description(&self) -> &'static str;

    /// The component's own migrations (versions above the kit's reserved range).
    fn migrations(&self) -> &'static Migrator;

    /// Whether the component keeps state in PostgreSQL. One that does not (the web app) gets no
    /// schema, outbox relay or idempotency records, and a process of such components only is
    /// ready whether or not PostgreSQL answers.
    fn uses_database(&self) -> bool {
        true
    }

    /// OpenAPI description of the routes for the deployment's `country` (limits that depend
    /// on it, such as its phone numbers, are stated for it); the server merges every
    /// component's into `/openapi.json`.
    fn openapi(&self, _country: &CountryConfig) -> Option<utoipa::openapi::OpenApi> {
        None
    }

    /// Builds the parts that run in this process; a part that cannot be built stops start-up.
    fn build(&self, ctx: &ComponentContext) -> Result<Parts, BuildError>;
}
