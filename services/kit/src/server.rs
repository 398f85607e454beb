//! Runs a set of components in one process: one HTTP listener, one gRPC listener (with gRPC
//! health), one admin listener (`/livez`, `/readyz`, `/metrics`), plus each component's outbox
//! relay, consumers and jobs; drains gracefully on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::{Extension, Router};
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

use crate::auth::jwks::Jwks;
use crate::auth::{
    Algorithm, AuthError, Authenticator, algorithm_name, is_asymmetric, parse_algorithm,
};
use crate::component::{BuildError, Component, ComponentContext};
use crate::config::CountryConfig;
use crate::consumer::Consumer;
use crate::health::{Check, Health};
use crate::idempotency::{self, IdempotencyStore};
use crate::kafka::KafkaHandle;
use crate::metrics::Metrics;
use crate::outbox::{Outbox, OutboxRelay, RelayConfig};
use crate::redis::RedisHandle;
use crate::settings::{Env, Secret, SettingError, server as vars};
use crate::{db, http, problem, ratelimit};

/// How tokens are verified (`PULSE_JWT_*`, `PULSE_JWKS_*`).
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// Expected `iss`.
    pub issuer: String,
    /// The allow-list of token algorithms; the token's header never decides.
    pub algorithms: Vec<Algorithm>,
    /// Shared secret for HS256 (local development, tests).
    pub secret: Option<Secret>,
    /// Identity's JWK set, for ES256, EdDSA and RS256.
    pub jwks_url: Option<String>,
    /// Minimum time between two fetches of the JWK set.
    pub jwks_refresh_interval: Duration,
}

impl JwtSettings {
    /// Reads `PULSE_JWT_ALGORITHMS`, `PULSE_JWT_ISSUER`, `PULSE_JWT_SECRET`, `PULSE_JWKS_URL`
    /// and `PULSE_JWKS_REFRESH_SECONDS`; fails naming the variable when an algorithm is
    /// unknown (or `none`), when HS256 is accepted without a secret of at least 32 bytes, or
    /// when an asymmetric algorithm is accepted without a well-formed JWKS URL.
    pub fn read(env: &Env) -> Result<Self, SettingError> {
        let mut algorithms = Vec::new();
        for name in env.list(&vars::JWT_ALGORITHMS) {
            let algorithm = parse_algorithm(&name).map_err(|_| {
                let why = if name.eq_ignore_ascii_case("none") {
                    "unsigned tokens are never accepted"
                } else {
                    "not a supported algorithm"
                };
                SettingError::new(
                    &vars::JWT_ALGORITHMS,
                    format!("`{name}`: {why}; list some of HS256, ES256, EdDSA, RS256"),
                )
            })?;
            if !algorithms.contains(&algorithm) {
                algorithms.push(algorithm);
            }
        }
        if algorithms.is_empty() {
            algorithms.push(Algorithm::HS256);
        }
        let secret = env.secret(&vars::JWT_SECRET);
        if algorithms.contains(&Algorithm::HS256) {
            match &secret {
                None => {
                    return Err(SettingError::new(
                        &vars::JWT_SECRET,
                        "required when PULSE_JWT_ALGORITHMS holds HS256 (at least 32 bytes); for tokens from identity, set PULSE_JWT_ALGORITHMS=EdDSA and PULSE_JWKS_URL instead",
                    ));
                }
                Some(secret) if secret.expose().len() < 32 => {
                    return Err(SettingError::new(
                        &vars::JWT_SECRET,
                        "the HS256 secret must be at least 32 bytes",
                    ));
                }
                Some(_) => {}
            }
        }
        let jwks_url = match env.text(&vars::JWKS_URL) {
            Some(url) => Some(env.url(&vars::JWKS_URL, &url)?),
            None => None,
        };
        if jwks_url.is_none()
            && let Some(asymmetric) = algorithms.iter().find(|a| is_asymmetric(**a))
        {
            return Err(SettingError::new(
                &vars::JWKS_URL,
                format!(
                    "required when PULSE_JWT_ALGORITHMS holds {}: identity's JWK set, like http://identity.pulse-fr.svc:8080/.well-known/jwks.json",
                    algorithm_name(*asymmetric)
                ),
            ));
        }
        Ok(Self {
            issuer: env
                .text(&vars::JWT_ISSUER)
                .unwrap_or_else(|| "pulse".to_owned()),
            algorithms,
            secret,
            jwks_url,
            jwks_refresh_interval: Duration::from_secs(env.number(
                &vars::JWKS_REFRESH_SECONDS,
                5,
                0,
                3600,
            )?),
        })
    }

    /// HS256 only, with `secret`: local development and tests.
    pub fn hs256(secret: &str, issuer: &str) -> Self {
        Self {
            issuer: issuer.to_owned(),
            algorithms: vec![Algorithm::HS256],
            secret: Some(Secret::new(secret)),
            jwks_url: None,
            jwks_refresh_interval: Duration::from_secs(5),
        }
    }

    /// The authenticator for `country`: HS256 with the secret, the asymmetric algorithms with
    /// the JWK set at `jwks_url` (fetched when the first token needs it).
    pub fn authenticator(&self, country: &str) -> Result<Authenticator, AuthError> {
        let jwks = match &self.jwks_url {
            Some(url) if self.algorithms.iter().any(|a| is_asymmetric(*a)) => {
                Some(Arc::new(Jwks::new(url, self.jwks_refresh_interval)?))
            }
            _ => None,
        };
        Authenticator::new(
            &self.issuer,
            country,
            &self.algorithms,
            self.secret.as_ref().map(|s| s.expose().as_bytes()),
            jwks,
        )
    }
}

/// Process-level settings (everything that is not country configuration).
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// The country's database (`postgres://…/pulse_fr`); it holds a password.
    pub database_url: Secret,
    /// Redis (`redis://127.0.0.1:6379`); it may hold a password.
    pub redis_url: Secret,
    /// Kafka bootstrap brokers.
    pub kafka_brokers: Vec<String>,
    /// Public HTTP listener.
    pub http_addr: SocketAddr,
    /// gRPC listener.
    pub grpc_addr: SocketAddr,
    /// Admin listener (probes, metrics).
    pub admin_addr: SocketAddr,
    /// Token verification.
    pub jwt: JwtSettings,
    /// How long readiness fails before listeners close, so load balancers stop sending traffic.
    pub drain_delay: Duration,
    /// Connections per component pool.
    pub db_max_connections: u32,
    /// Partitions of topics the process creates.
    pub kafka_partitions: i32,
    /// Trust the first `X-Forwarded-For` hop as the client address (behind an ingress).
    pub trust_forwarded_for: bool,
    /// Optional instance name when several deployments of one country share Redis and Kafka;
    /// it is added to key and topic names (see [`ComponentContext::keyspace`]).
    pub instance: Option<String>,
    /// Development-only parts (sandbox providers) may run. Never set in production.
    pub development_mode: bool,
}

impl ServerSettings {
    /// Reads the server's settings (`PULSE_DATABASE_URL`, `PULSE_HTTP_ADDR`, …) from `env`.
    pub fn read(env: &Env) -> Result<Self, SettingError> {
        let instance = env.text(&vars::INSTANCE);
        if let Some(name) = &instance
            && !valid_instance(name)
        {
            return Err(SettingError::new(
                &vars::INSTANCE,
                format!("`{name}`: use up to 20 lower-case letters, digits and `-`"),
            ));
        }
        let kafka_brokers = env.list(&vars::KAFKA_BROKERS);
        Ok(Self {
            database_url: Secret::new(env.required(&vars::DATABASE_URL)?),
            redis_url: env
                .secret(&vars::REDIS_URL)
                .unwrap_or_else(|| Secret::new("redis://127.0.0.1:6379")),
            kafka_brokers: if kafka_brokers.is_empty() {
                vec!["127.0.0.1:9092".to_owned()]
            } else {
                kafka_brokers
            },
            http_addr: env.parse(&vars::HTTP_ADDR, ([0, 0, 0, 0], 8080).into())?,
            grpc_addr: env.parse(&vars::GRPC_ADDR, ([0, 0, 0, 0], 50051).into())?,
            admin_addr: env.parse(&vars::ADMIN_ADDR, ([0, 0, 0, 0], 9090).into())?,
            jwt: JwtSettings::read(env)?,
            drain_delay: Duration::from_secs(env.number(&vars::DRAIN_SECONDS, 5, 0, 600)?),
            db_max_connections: env.number(&vars::DB_MAX_CONNECTIONS, 10, 1, 1000)?,
            kafka_partitions: env.number(&vars::KAFKA_PARTITIONS, 3, 1, 1000)?,
            trust_forwarded_for: env.flag(&vars::TRUST_FORWARDED_FOR, false)?,
            instance,
            development_mode: env.flag(&vars::DEVELOPMENT_MODE, false)?,
        })
    }
}

fn valid_instance(name: &str) -> bool {
    name.len() <= 20
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The keyspace of a deployment: the country slug, plus `-<instance>`.
pub fn keyspace(country: &CountryConfig, instance: Option<&str>) -> Result<String, ServerError> {
    match instance {
        None | Some("") => Ok(country.slug()),
        Some(name) => {
            if valid_instance(name) {
                Ok(format!("{}-{name}", country.slug()))
            } else {
                Err(ServerError::Instance(name.to_owned()))
            }
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Bad JWT settings.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Bad database settings.
    #[error(transparent)]
    Db(#[from] db::DbError),
    /// Bad Redis URL.
    #[error("invalid Redis URL: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// The instance name is not usable in key and topic names.
    #[error("invalid instance name `{0}`: use up to 20 lower-case letters, digits and `-`")]
    Instance(String),
    /// A component could not build its parts.
    #[error("cannot build `{component}`: {source}")]
    Build {
        /// The component.
        component: &'static str,
        /// The cause.
        source: BuildError,
    },
    /// The components' OpenAPI documents could not be turned into JSON.
    #[error("cannot serialise the OpenAPI document: {0}")]
    OpenApi(serde_json::Error),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// A started server.
pub struct RunningServer {
    /// Where HTTP is served.
    pub http_addr: SocketAddr,
    /// Where gRPC is served.
    pub grpc_addr: SocketAddr,
    /// Where probes and metrics are served.
    pub admin_addr: SocketAddr,
    health: Arc<Health>,
    grpc_health: tonic_health::server::HealthReporter,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    drain_delay: Duration,
}

impl RunningServer {
    /// Readiness state.
    pub fn health(&self) -> Arc<Health> {
        Arc::clone(&self.health)
    }

    /// Drains and stops: readiness fails at once, listeners close after the drain delay,
    /// in-flight requests finish, background tasks stop (bounded by 30 s).
    pub async fn shutdown(mut self) {
        tracing::info!("draining");
        self.health.start_draining();
        self.grpc_health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        tokio::time::sleep(self.drain_delay).await;
        self.shutdown.cancel();
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(30), all)
            .await
            .is_err()
        {
            tracing::warn!("background tasks did not stop within 30 s; aborting them");
            self.tasks.abort_all();
        }
        tracing::info!("stopped");
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// Starts `components` for `country`.
pub async fn start(
    settings: &ServerSettings,
    country: CountryConfig,
    components: Vec<Arc<dyn Component>>,
) -> Result<RunningServer, ServerError> {
    let keyspace = keyspace(&country, settings.instance.as_deref())?;
    let country = Arc::new(country);
    let auth = Arc::new(settings.jwt.authenticator(&country.code)?);
    let metrics = Arc::new(Metrics::new());
    auth.register_metrics(&metrics);
    let redis = RedisHandle::new(settings.redis_url.expose())?;
    let kafka = KafkaHandle::new(settings.kafka_brokers.clone());
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();

    let (grpc_health, grpc_health_service) = tonic_health::server::health_reporter();
    let mut grpc_routes = tonic::service::Routes::builder();
    grpc_routes.add_service(grpc_health_service);
    let mut public = Router::new();
    let mut limited_by_flow = Vec::new();
    let mut not_rate_limited = Vec::new();
    let mut openapi = base_openapi();
    let mut route_owners = http::RouteOwners::default();

    for component in &components {
        let name = component.name();
        let db_options = db::schema_options(settings.database_url.expose(), name)?;
        let pool = db::schema_pool(
            settings.database_url.expose(),
            name,
            settings.db_max_connections,
        )?;
        let ctx = ComponentContext {
            name,
            country: Arc::clone(&country),
            keyspace: keyspace.clone(),
            db: pool.clone(),
            db_options: db_options.clone(),
            redis: redis.clone(),
            kafka: kafka.clone(),
            metrics: Arc::clone(&metrics),
            auth: Arc::clone(&auth),
            outbox: Outbox::new(&country.code, &keyspace, name),
        };
        let mut keys = IdempotencyStore::new(pool.clone());
        if let Some(doc) = component.openapi(&country) {
            let value = serde_json::to_value(&doc).map_err(ServerError::OpenApi)?;
            route_owners.add_documented(name, &value);
            keys = keys.for_operations(crate::openapi::keyed_operations(&value));
            openapi.merge(doc);
        }
        let parts = component.build(&ctx).map_err(|source| ServerError::Build {
            component: name,
            source,
        })?;
        limited_by_flow.extend(parts.rate_limited_by_flow);
        not_rate_limited.extend(parts.not_rate_limited);
        if !component.uses_database() {
            // No schema: nothing to relay, no idempotency records, no pool to watch.
            public = public.merge(parts.routes);
            register_grpc(&grpc_health, &mut grpc_routes, parts.grpc).await;
            for job in parts.jobs {
                tracing::info!(component = name, job = %job.name, "starting job");
                tasks.spawn((job.run)(shutdown.clone()));
            }
            continue;
        }
        let keys = keys
            .kept_by_flow(parts.keys_kept_by_flow)
            .looked_up_after(parts.keys_looked_up_after);
        public = public.merge(idempotency::layer(parts.routes, keys));
        register_grpc(&grpc_health, &mut grpc_routes, parts.grpc).await;
        let relay = OutboxRelay::new(
            name,
            pool.clone(),
            db_options.clone(),
            kafka.clone(),
            Arc::clone(&metrics),
            RelayConfig {
                partitions: settings.kafka_partitions,
                ..RelayConfig::default()
            },
        );
        tasks.spawn(relay.run(shutdown.clone()));
        tasks.spawn(Arc::clone(&metrics).watch_pool(name, pool.clone(), shutdown.clone()));
        for spec in parts.consumers {
            let mut config = spec.config;
            config.partitions = settings.kafka_partitions;
            let consumer = Consumer::new(
                pool.clone(),
                db_options.clone(),
                kafka.clone(),
                spec.handler,
                Arc::clone(&metrics),
                config,
            );
            tasks.spawn(consumer.run(shutdown.clone()));
        }
        for job in parts.jobs {
            tracing::info!(component = name, job = %job.name, "starting job");
            tasks.spawn((job.run)(shutdown.clone()));
        }
        tasks.spawn(prune_idempotency_keys(pool, shutdown.clone()));
    }
    grpc_health
        .set_service_status("", ServingStatus::Serving)
        .await;
    // What the kit's layers answer is added to every operation once, here.
    let mut openapi = serde_json::to_value(&openapi).map_err(ServerError::OpenApi)?;
    crate::openapi::complete(&mut openapi);
    let openapi = Arc::new(openapi);

    let database_decides = components.iter().any(|c| c.uses_database());
    let health = Health::new(dependency_checks(
        settings,
        &redis,
        &kafka,
        database_decides,
    )?);
    metrics.register(
        "dependency_up",
        "Whether a dependency answered its last check (1) or not (0); only the database decides readiness",
        health.dependency_gauge(),
    );
    redis.register_metrics(&metrics);
    let limiter = Arc::new(
        ratelimit::RateLimiter::new(
            redis.clone(),
            &keyspace,
            country.rate_limits.requests_per_second,
            country.rate_limits.burst,
            settings.trust_forwarded_for,
        )
        .limited_by_flow(limited_by_flow)
        .not_limited(not_rate_limited),
    );
    metrics.register(
        "rate_limited_requests",
        "Requests refused with 429",
        limiter.limited.clone(),
    );
    metrics.register(
        "rate_limit_unavailable",
        "Requests let through unchecked because Redis did not answer",
        limiter.unavailable.clone(),
    );
    metrics.register(
        "rate_limit_leases",
        "Leases of a client's tokens taken from Redis (a busy client spends each from memory)",
        limiter.leases_taken.clone(),
    );
    tasks.spawn({
        let checker = health.spawn_checker(Duration::from_secs(1), shutdown.clone());
        async move {
            let _ = checker.await;
        }
    });

    let public = http::with_observability(
        public
            .route("/v1/me", axum::routing::get(whoami))
            .route(
                "/openapi.json",
                axum::routing::get(move || {
                    let doc = Arc::clone(&openapi);
                    async move { axum::Json(doc.as_ref().clone()) }
                }),
            )
            .merge(health.router())
            .fallback(problem::not_found_fallback)
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&limiter),
                ratelimit::middleware,
            ))
            .layer(axum::middleware::from_fn(crate::auth::authenticate))
            .layer(Extension(Arc::clone(&auth))),
        Arc::clone(&metrics),
        route_owners,
    );
    let admin = http::admin_router(&health, Arc::clone(&metrics));

    let http_listener = bind(settings.http_addr).await?;
    let admin_listener = bind(settings.admin_addr).await?;
    let grpc_listener = bind(settings.grpc_addr).await?;
    let http_addr = local_addr(&http_listener, settings.http_addr);
    let admin_addr = local_addr(&admin_listener, settings.admin_addr);
    let grpc_addr = local_addr(&grpc_listener, settings.grpc_addr);

    let token = shutdown.clone();
    tasks.spawn(async move {
        if let Err(err) = http::serve(http_listener, public, token).await {
            tracing::error!(error = %err, "HTTP server failed");
        }
    });
    let token = shutdown.clone();
    tasks.spawn(async move {
        if let Err(err) = http::serve(admin_listener, admin, token).await {
            tracing::error!(error = %err, "admin server failed");
        }
    });
    let token = shutdown.clone();
    let routes = grpc_routes.routes();
    tasks.spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(grpc_listener);
        let served = tonic::transport::Server::builder()
            .layer(crate::grpc::TraceLayer)
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, token.cancelled_owned())
            .await;
        if let Err(err) = served {
            tracing::error!(error = %err, "gRPC server failed");
        }
    });
    tracing::info!(%http_addr, %grpc_addr, %admin_addr, country = %country.code,
        components = ?components.iter().map(|c| c.name()).collect::<Vec<_>>(), "serving");

    Ok(RunningServer {
        http_addr,
        grpc_addr,
        admin_addr,
        health,
        grpc_health,
        shutdown,
        tasks,
        drain_delay: settings.drain_delay,
    })
}

/// The document every component's paths are merged into: info, the bearer scheme, `/v1/me`.
fn base_openapi() -> utoipa::openapi::OpenApi {
    use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
    let mut doc = utoipa::openapi::OpenApiBuilder::new()
        .info(
            utoipa::openapi::InfoBuilder::new()
                .title("Pulse")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Appointment booking and ordering, one country per deployment. Errors are application/problem+json (RFC 9457).",
                ))
                .build(),
        )
        .build();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .build(),
        ),
    );
    doc
}

/// `GET /v1/me`: who the bearer token says the caller is (lets a client check its token).
async fn whoami(principal: crate::auth::Principal) -> axum::Json<serde_json::Value> {
    let claims = principal.claims;
    axum::Json(serde_json::json!({
        "subject": claims.sub,
        "roles": claims.roles,
        "country": claims.country,
        "expiresAt": claims.exp,
    }))
}

fn local_addr(listener: &TcpListener, fallback: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(fallback)
}

/// Readiness requires the database only: without it nothing works. Redis and Kafka are
/// checked and reported (`/readyz` body, `pulse_dependency_up`) but a pod without them still
/// serves: Redis has fallbacks behind its breaker, the outbox holds events for Kafka.
/// Adds a component's gRPC services to the process's routes and reports them serving.
async fn register_grpc(
    health: &tonic_health::server::HealthReporter,
    routes: &mut tonic::service::RoutesBuilder,
    services: crate::component::GrpcServices,
) {
    for service in services.names() {
        health
            .set_service_status(*service, ServingStatus::Serving)
            .await;
    }
    services.register(routes);
}

/// The dependency checks of `/readyz`: PostgreSQL decides readiness when `database_decides`
/// (some component keeps its state there), else it is only reported, like Redis and Kafka.
fn dependency_checks(
    settings: &ServerSettings,
    redis: &RedisHandle,
    kafka: &KafkaHandle,
    database_decides: bool,
) -> Result<Vec<Check>, ServerError> {
    let options = db::schema_options(settings.database_url.expose(), "public")?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy_with(options);
    let redis = redis.clone();
    let kafka = kafka.clone();
    let postgres = move || {
        let pool = pool.clone();
        async move {
            sqlx::query("SELECT 1")
                .execute(&pool)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    };
    Ok(vec![
        if database_decides {
            Check::new("postgres", postgres)
        } else {
            Check::reported("postgres", postgres)
        },
        Check::reported("redis", move || {
            let redis = redis.clone();
            async move { redis.ping().await.map_err(|e| e.to_string()) }
        }),
        Check::reported("kafka", move || {
            let kafka = kafka.clone();
            async move { kafka.ping().await.map_err(|e| e.to_string()) }
        }),
    ])
}

async fn prune_idempotency_keys(pool: sqlx::PgPool, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
            () = shutdown.cancelled() => return,
        }
        match idempotency::prune(&pool, Duration::from_secs(24 * 3600)).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "pruned idempotency keys"),
            Err(err) => tracing::warn!(error = %err, "pruning idempotency keys failed"),
        }
    }
}
