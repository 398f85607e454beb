//! Helpers for tests that run against the real servers `./dev test` provides
//! (`PULSE_PG_URL`, `PULSE_REDIS_URL`, `PULSE_KAFKA_BROKERS`). Not for production code.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

/// PostgreSQL server URL without a database (`postgres://pulse:pulse@127.0.0.1:5432`).
pub fn pg_server_url() -> String {
    std::env::var("PULSE_PG_URL")
        .unwrap_or_else(|_| "postgres://pulse:pulse@127.0.0.1:5432".to_owned())
}

/// Redis URL.
pub fn redis_url() -> String {
    std::env::var("PULSE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Kafka bootstrap brokers.
pub fn kafka_brokers() -> Vec<String> {
    std::env::var("PULSE_KAFKA_BROKERS")
        .unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// `prefix` plus a random suffix, for topics, groups and keys that tests must not share.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A database created for one test and dropped when the value is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    /// Its name.
    pub name: String,
    /// Its URL.
    pub url: String,
}

impl TestDatabase {
    /// Creates an empty database.
    pub async fn create() -> Self {
        let name = format!("pulse_test_{}", uuid::Uuid::new_v4().simple());
        let server = pg_server_url();
        let mut admin = connect(&format!("{server}/postgres")).await;
        // The name is generated above from hex digits only; identifiers cannot be bound.
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name} on {server}: {e}"));
        admin.close().await.ok();
        Self {
            url: format!("{server}/{name}"),
            name,
        }
    }
}

async fn connect(url: &str) -> PgConnection {
    let options = PgConnectOptions::from_str(url)
        .unwrap_or_else(|e| panic!("bad PULSE_PG_URL {url}: {e}"))
        .disable_statement_logging();
    PgConnection::connect_with(&options)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot connect to PostgreSQL at {url} (run the tests with `./dev test`): {e}")
        })
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let server = pg_server_url();
        // Dropping runs outside the test's runtime, which may be shutting down.
        let dropped = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let mut admin = connect(&format!("{server}/postgres")).await;
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await;
                admin.close().await.ok();
            });
        });
        let _ = dropped.join();
    }
}

/// Server settings for a test server: every listener on a free loopback port, HS256 tokens
/// signed with [`TEST_JWT_SECRET`] by [`TEST_JWT_ISSUER`], no drain delay, and a unique
/// `instance` so parallel tests never share Redis keys or Kafka topics.
pub fn server_settings(database_url: &str, redis_url: &str) -> crate::server::ServerSettings {
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    crate::server::ServerSettings {
        database_url: database_url.to_owned(),
        redis_url: redis_url.to_owned(),
        kafka_brokers: kafka_brokers(),
        http_addr: any,
        grpc_addr: any,
        admin_addr: any,
        jwt: crate::server::JwtSettings {
            issuer: TEST_JWT_ISSUER.into(),
            algorithm: "HS256".into(),
            secret: Some(TEST_JWT_SECRET.into()),
            public_key_pem: None,
        },
        drain_delay: std::time::Duration::ZERO,
        db_max_connections: 20,
        kafka_partitions: 1,
        trust_forwarded_for: false,
        instance: Some(format!(
            "t{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        )),
    }
}

/// The HS256 secret of [`server_settings`].
pub const TEST_JWT_SECRET: &str = "pulse-test-secret-pulse-test-secret-0123";
/// The issuer of [`server_settings`].
pub const TEST_JWT_ISSUER: &str = "pulse-test";

/// A token for `subject` with `roles` in `country`, valid for an hour, accepted by servers
/// started with [`server_settings`].
pub fn token(subject: &str, roles: &[&str], country: &str) -> String {
    let auth =
        crate::auth::Authenticator::hs256(TEST_JWT_SECRET.as_bytes(), TEST_JWT_ISSUER, country)
            .unwrap_or_else(|e| panic!("test key: {e}"));
    let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
    auth.mint(&crate::auth::claims_for(
        subject,
        &roles,
        country,
        TEST_JWT_ISSUER,
        std::time::Duration::from_secs(3600),
    ))
    .unwrap_or_else(|e| panic!("test token: {e}"))
}

/// France with the defaults, a year-long booking horizon, and rate limits high enough for
/// load from one address.
pub fn france() -> crate::config::CountryConfig {
    let vars = [
        ("CODE", "FR"),
        ("TIMEZONE", "Europe/Paris"),
        ("CURRENCY", "EUR"),
        ("LOCALE", "fr-FR"),
        ("BOOKING__HORIZON_DAYS", "366"),
        ("RATE_LIMITS__REQUESTS_PER_SECOND", "1000000"),
        ("RATE_LIMITS__BURST", "1000000"),
    ];
    crate::config::CountryConfig::from_env_vars(vars.iter().map(|(k, v)| {
        (
            format!("{}{k}", crate::config::COUNTRY_ENV_PREFIX),
            (*v).to_owned(),
        )
    }))
    .unwrap_or_else(|e| panic!("test country: {e}"))
}

/// The sum of every sample of metric `name` in a Prometheus text exposition (all label sets).
pub fn metric_value(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A plain Redis connection to [`redis_url`], for tests that inspect keys and streams.
pub async fn redis_connection() -> ::redis::aio::MultiplexedConnection {
    ::redis::Client::open(redis_url())
        .unwrap_or_else(|e| panic!("bad PULSE_REDIS_URL: {e}"))
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| {
            panic!("cannot connect to Redis (run the tests with `./dev test`): {e}")
        })
}
