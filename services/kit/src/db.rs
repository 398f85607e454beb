//! PostgreSQL: one database per country, one schema per component.
//!
//! A component's pool sets `search_path` to its own schema, so its SQL names its own tables
//! unqualified and cannot reach another component's by accident. The kit's tables (outbox,
//! idempotency keys, consumer offsets) are created in every component's schema by the kit's
//! migrations, which run together with the component's own.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migration, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

/// Highest migration version reserved for the kit; components number theirs above it
/// (by convention with a `YYYYMMDDHHMMSS` timestamp).
pub const KIT_MIGRATION_MAX_VERSION: i64 = 999;

static KIT_MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// Why the database could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL is not a PostgreSQL URL.
    #[error("invalid database URL: {0}")]
    Url(sqlx::Error),
    /// The schema name is not a plain identifier.
    #[error("invalid schema name `{0}`: use lower-case letters, digits and `_`")]
    Schema(String),
    /// A component migration uses a version reserved for the kit.
    #[error(
        "migration {version} of schema `{schema}` is in the kit's reserved range 1..={KIT_MIGRATION_MAX_VERSION}"
    )]
    ReservedVersion {
        /// The schema.
        schema: String,
        /// The offending version.
        version: i64,
    },
    /// Talking to PostgreSQL failed.
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration of schema `{schema}` failed: {source}")]
    Migrate {
        /// The schema.
        schema: String,
        /// The cause.
        source: sqlx::migrate::MigrateError,
    },
}

fn check_schema(schema: &str) -> Result<(), DbError> {
    let ok = !schema.is_empty()
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(DbError::Schema(schema.to_owned()))
    }
}

/// Connection options for `database_url` whose sessions use `schema` only.
pub fn schema_options(database_url: &str, schema: &str) -> Result<PgConnectOptions, DbError> {
    check_schema(schema)?;
    let options = PgConnectOptions::from_str(database_url).map_err(DbError::Url)?;
    Ok(options.options([("search_path", schema)]))
}

/// A pooled connection idle at least this long is pinged before it is handed out.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// A lazily connecting pool bound to `schema`: start-up does not fail while PostgreSQL is down;
/// readiness reports it instead.
///
/// A connection is checked (a round trip) before it is handed out only when it sat idle for
/// [`PING_IF_IDLE_FOR`] or longer. sqlx's default checks every one, which on a busy pool adds a
/// round trip to each acquisition (sqlx also checks each connection as it comes back, and
/// closes one that fails: a connection broken by a PostgreSQL restart fails at most the one
/// statement that was using it).
pub fn schema_pool(
    database_url: &str,
    schema: &str,
    max_connections: u32,
) -> Result<PgPool, DbError> {
    let options = schema_options(database_url, schema)?;
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(3))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with(options))
}

/// Creates `schema` if needed and applies the kit's and the component's migrations to it.
pub async fn migrate(
    database_url: &str,
    schema: &str,
    component: &'static Migrator,
) -> Result<(), DbError> {
    check_schema(schema)?;
    if let Some(bad) = component
        .iter()
        .find(|m| m.version <= KIT_MIGRATION_MAX_VERSION)
    {
        return Err(DbError::ReservedVersion {
            schema: schema.to_owned(),
            version: bad.version,
        });
    }
    let options = PgConnectOptions::from_str(database_url).map_err(DbError::Url)?;
    let mut conn = PgConnection::connect_with(&options).await?;
    // The name was checked above to be a plain identifier; identifiers cannot be bound.
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .execute(&mut conn)
        .await?;
    conn.close().await?;

    let mut migrations: Vec<Migration> = KIT_MIGRATIONS.iter().cloned().collect();
    migrations.extend(component.iter().cloned());
    let combined = Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    };
    let mut conn = PgConnection::connect_with(&schema_options(database_url, schema)?).await?;
    combined
        .run_direct(&mut conn)
        .await
        .map_err(|source| DbError::Migrate {
            schema: schema.to_owned(),
            source,
        })?;
    conn.close().await?;
    Ok(())
}

/// Runs `work`, a flow's transaction from `BEGIN` to `COMMIT` (or rollback), in a
/// `db.transaction` span (`db.system.name` `postgresql`, `pulse.flow` the flow's name) that
/// starts when `work` first runs, not when it is built: time spent before (waiting for a lock
/// the flow takes first, say) is not the transaction's. Events appended to the outbox inside
/// continue the trace from this span.
pub async fn in_transaction_span<F: Future>(flow: &'static str, work: F) -> F::Output {
    use tracing::Instrument;
    work.instrument(tracing::info_span!(
        "db.transaction",
        db.system.name = "postgresql",
        pulse.flow = flow
    ))
    .await
}

/// A 64-bit advisory lock key for `name` (stable across processes and versions).
pub fn advisory_key(name: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(name.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked() {
        assert!(check_schema("booking").is_ok());
        assert!(check_schema("kit_test_1").is_ok());
        for bad in ["", "Booking", "a;drop", "1abc", "a-b"] {
            assert!(check_schema(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn advisory_keys_are_stable_and_distinct() {
        assert_eq!(
            advisory_key("outbox:booking"),
            advisory_key("outbox:booking")
        );
        assert_ne!(
            advisory_key("outbox:booking"),
            advisory_key("outbox:ordering")
        );
    }

    #[test]
    fn kit_migrations_stay_in_their_range() {
        assert!(
            KIT_MIGRATIONS
                .iter()
                .all(|m| m.version <= KIT_MIGRATION_MAX_VERSION)
        );
    }
}
