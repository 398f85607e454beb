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
