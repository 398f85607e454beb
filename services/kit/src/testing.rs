//! Helpers for tests that run against the real servers `./dev test` provides
//! (`PULSE_PG_URL`, `PULSE_REDIS_URL`, `PULSE_KAFKA_BROKERS`). Not for production code.

pub mod providers;
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

/// What `pulse serve --target all` needs besides the servers, for a test: the sandbox providers
/// writing into `dir` (identity's texts to `identity-sms.jsonl` and e-mails to
/// `identity-email.jsonl`, notifier's texts to `notifier-sms.jsonl`), the sandbox payment
/// provider signing with `webhook_secret`, and identity's keyring secret (written to
/// `dir/keyring`).
pub fn sandbox_env(
    dir: &std::path::Path,
    webhook_secret: &str,
) -> Vec<(&'static str, std::ffi::OsString)> {
    let keyring = dir.join("keyring");
    std::fs::write(&keyring, unique("keyring-secret-of-a-test-run"))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", keyring.display()));
    let file = |name: &str| dir.join(name).into_os_string();
    vec![
        ("PULSE_PAYMENT_PROVIDER", "sandbox".into()),
        ("PULSE_PAYMENT_WEBHOOK_SECRET", webhook_secret.into()),
        (
            "PULSE_IDENTITY_KEYRING_SECRET_FILE",
            keyring.into_os_string(),
        ),
        ("PULSE_IDENTITY_SMS_PROVIDER", "sandbox".into()),
        (
            "PULSE_IDENTITY_SANDBOX_SMS_FILE",
            file("identity-sms.jsonl"),
        ),
        (
            "PULSE_IDENTITY_SANDBOX_EMAIL_FILE",
            file("identity-email.jsonl"),
        ),
        ("PULSE_NOTIFIER_SMS_PROVIDER", "sandbox".into()),
        (
            "PULSE_NOTIFIER_SANDBOX_SMS_FILE",
            file("notifier-sms.jsonl"),
        ),
    ]
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
    /// Creates an empty database, named after the time it was made (so the databases of test
    /// processes that ended before they could drop theirs are dropped later, by
    /// [`drop_forgotten_databases`]).
    pub async fn create() -> Self {
        let name = format!(
            "pulse_test_{}_{}",
            unix_seconds(),
            &uuid::Uuid::new_v4().simple().to_string()[..16]
        );
        let server = pg_server_url();
        let mut admin = connect(&format!("{server}/postgres")).await;
        if rand::random_range(0..20u8) == 0 {
            drop_forgotten_databases(&mut admin).await;
        }
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

/// How long a test database may live before any test process drops it as forgotten (longer
/// than any test may run: nextest ends a test after five minutes).
const FORGOTTEN_AFTER_SECS: u64 = 1800;

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Drops the test databases made more than [`FORGOTTEN_AFTER_SECS`] ago.
async fn drop_forgotten_databases(admin: &mut PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'pulse\\_test\\_%'")
            .fetch_all(&mut *admin)
            .await
            .unwrap_or_default();
    let cutoff = unix_seconds().saturating_sub(FORGOTTEN_AFTER_SECS);
    for name in names {
        let made = name
            .strip_prefix("pulse_test_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        // Only names this code makes (digits, hex, underscores): safe as an identifier.
        let well_formed = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if well_formed && made.is_some_and(|made| made < cutoff) {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut *admin)
                .await;
        }
    }
}

impl Drop for TestDatabase {
    /// Drops the database from a thread of its own, waiting for it at most two seconds. It can
    /// take longer only when the test's runtime, blocked here, froze a connection in the middle
    /// of its handshake: PostgreSQL then cannot drop the database until that backend gives up
    /// (`authentication_timeout`, a minute). Rather than stall the test, the drop goes on in the
    /// background, and a later test drops the database if this process ends first.
    fn drop(&mut self) {
        let name = self.name.clone();
        let server = pg_server_url();
        let (done, dropped) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
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
            let _ = done.send(());
        });
        let _ = dropped.recv_timeout(std::time::Duration::from_secs(2));
    }
}

/// Server settings for a test server: every listener on a free loopback port, HS256 tokens
/// signed with [`TEST_JWT_SECRET`] by [`TEST_JWT_ISSUER`], no drain delay, and a unique
/// `instance` so parallel tests never share Redis keys or Kafka topics.
pub fn server_settings(database_url: &str, redis_url: &str) -> crate::server::ServerSettings {
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    crate::server::ServerSettings {
        database_url: crate::settings::Secret::new(database_url),
        redis_url: crate::settings::Secret::new(redis_url),
        kafka_brokers: kafka_brokers(),
        http_addr: any,
        grpc_addr: any,
        admin_addr: any,
        jwt: crate::server::JwtSettings::hs256(TEST_JWT_SECRET, TEST_JWT_ISSUER),
        drain_delay: std::time::Duration::ZERO,
        db_max_connections: 20,
        kafka_partitions: 1,
        trust_forwarded_for: false,
        instance: Some(format!(
            "t{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        )),
        development_mode: true,
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

/// Token settings that accept what identity signs (ES256 and EdDSA, keys from the JWK set at
/// `jwks_url`, refreshed at most once per `refresh_interval`) and, as [`server_settings`] does,
/// HS256 tokens from [`token`].
pub fn jwks_jwt_settings(
    jwks_url: &str,
    refresh_interval: std::time::Duration,
) -> crate::server::JwtSettings {
    use crate::auth::Algorithm;
    crate::server::JwtSettings {
        algorithms: vec![Algorithm::HS256, Algorithm::ES256, Algorithm::EdDSA],
        jwks_url: Some(jwks_url.to_owned()),
        jwks_refresh_interval: refresh_interval,
        ..crate::server::JwtSettings::hs256(TEST_JWT_SECRET, TEST_JWT_ISSUER)
    }
}

/// A signing key like identity's (ES256 or EdDSA) with its public JWK: mints the tokens that
/// servers verify through a JWK set ([`TestJwks`]).
pub struct TestSigningKey {
    /// The key's `kid`: its RFC 7638 thumbprint, unless replaced by [`TestSigningKey::with_kid`].
    pub kid: String,
    /// ES256 or EdDSA.
    pub algorithm: crate::auth::Algorithm,
    encoding: jsonwebtoken::EncodingKey,
    jwk: crate::auth::jwks::Jwk,
    public_key: Vec<u8>,
}

impl std::fmt::Debug for TestSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestSigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl TestSigningKey {
    /// A new random Ed25519 key (`EdDSA`).
    pub fn ed25519() -> Self {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let signing = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        let der = signing
            .to_pkcs8_der()
            .unwrap_or_else(|e| panic!("Ed25519 key to PKCS#8: {e}"));
        let public_key = signing.verifying_key().to_bytes();
        Self::assemble(
            crate::auth::Algorithm::EdDSA,
            jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
            crate::auth::jwks::ed25519_jwk(&public_key),
            public_key.to_vec(),
        )
    }

    /// A new random P-256 key (`ES256`).
    pub fn es256() -> Self {
        use p256::pkcs8::EncodePrivateKey;
        // Nearly every 32-byte string is a valid scalar; draw again in the rare other case.
        let signing = loop {
            if let Ok(key) = p256::ecdsa::SigningKey::from_slice(&rand::random::<[u8; 32]>()) {
                break key;
            }
        };
        let der = signing
            .to_pkcs8_der()
            .unwrap_or_else(|e| panic!("P-256 key to PKCS#8: {e}"));
        let point = signing.verifying_key().to_encoded_point(false);
        let coordinate = |c: Option<&p256::FieldBytes>| -> [u8; 32] {
            c.and_then(|bytes| <[u8; 32]>::try_from(&bytes[..]).ok())
                .unwrap_or_else(|| panic!("an uncompressed P-256 point has 32-byte coordinates"))
        };
        let (x, y) = (coordinate(point.x()), coordinate(point.y()));
        Self::assemble(
            crate::auth::Algorithm::ES256,
            jsonwebtoken::EncodingKey::from_ec_der(der.as_bytes()),
            crate::auth::jwks::p256_jwk(&x, &y),
            point.as_bytes().to_vec(),
        )
    }

    fn assemble(
        algorithm: crate::auth::Algorithm,
        encoding: jsonwebtoken::EncodingKey,
        jwk: crate::auth::jwks::Jwk,
        public_key: Vec<u8>,
    ) -> Self {
        Self {
            kid: jwk.common.key_id.clone().unwrap_or_default(),
            algorithm,
            encoding,
            jwk,
            public_key,
        }
    }

    /// The same key under another `kid` (in its tokens and its JWK).
    #[must_use]
    pub fn with_kid(mut self, kid: &str) -> Self {
        kid.clone_into(&mut self.kid);
        self.jwk.common.key_id = Some(kid.to_owned());
        self
    }

    /// The public JWK, as identity publishes it.
    pub fn jwk(&self) -> crate::auth::jwks::Jwk {
        self.jwk.clone()
    }

    /// The raw public key: 32 bytes for Ed25519, the uncompressed SEC1 point for P-256.
    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    /// A token of `claims`, its header naming this key's algorithm and `kid`.
    pub fn mint(&self, claims: &crate::auth::Claims) -> String {
        let mut header = jsonwebtoken::Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .unwrap_or_else(|e| panic!("signing a test token: {e}"))
    }

    /// A token for `subject` with `roles` in `country`, issued by [`TEST_JWT_ISSUER`], valid
    /// for an hour.
    pub fn token(&self, subject: &str, roles: &[&str], country: &str) -> String {
        let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
        self.mint(&crate::auth::claims_for(
            subject,
            &roles,
            country,
            TEST_JWT_ISSUER,
            std::time::Duration::from_secs(3600),
        ))
    }
}

/// A JWK set served on a loopback port, as identity serves it: the test changes the keys,
/// takes it down, slows it, and counts how often it was fetched.
pub struct TestJwks {
    /// `http://127.0.0.1:<port>/.well-known/jwks.json`.
    pub url: String,
    state: std::sync::Arc<JwksServerState>,
    server: tokio::task::JoinHandle<()>,
}

struct JwksServerState {
    keys: std::sync::Mutex<crate::auth::jwks::JwkSet>,
    fetches: std::sync::atomic::AtomicUsize,
    down: std::sync::atomic::AtomicBool,
    cache_control: std::sync::Mutex<String>,
    delay: std::sync::Mutex<std::time::Duration>,
}

impl TestJwks {
    /// Serves the public keys of `keys` with `Cache-Control: public, max-age=60`.
    pub async fn start(keys: &[&TestSigningKey]) -> Self {
        use std::sync::atomic::Ordering;
        let state = std::sync::Arc::new(JwksServerState {
            keys: std::sync::Mutex::new(key_set(keys)),
            fetches: std::sync::atomic::AtomicUsize::new(0),
            down: std::sync::atomic::AtomicBool::new(false),
            cache_control: std::sync::Mutex::new("public, max-age=60".to_owned()),
            delay: std::sync::Mutex::new(std::time::Duration::ZERO),
        });
        let served = std::sync::Arc::clone(&state);
        let router = axum::Router::new().route(
            crate::auth::jwks::JWKS_PATH,
            axum::routing::get(move || {
                let state = std::sync::Arc::clone(&served);
                async move {
                    use axum::response::IntoResponse;
                    state.fetches.fetch_add(1, Ordering::SeqCst);
                    let delay = *lock(&state.delay);
                    tokio::time::sleep(delay).await;
                    if state.down.load(Ordering::SeqCst) {
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response();
                    }
                    let set = lock(&state.keys).clone();
                    let cache_control = lock(&state.cache_control).clone();
                    (
                        [(axum::http::header::CACHE_CONTROL, cache_control)],
                        axum::Json(set),
                    )
                        .into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap_or_else(|e| panic!("JWKS test server: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("JWKS test server: {e}"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            url: format!("http://{addr}{}", crate::auth::jwks::JWKS_PATH),
            state,
            server,
        }
    }

    /// Publishes the public keys of `keys` instead of the current ones.
    pub fn publish(&self, keys: &[&TestSigningKey]) {
        *lock(&self.state.keys) = key_set(keys);
    }

    /// Publishes `set` as it is (keys a verifier should skip, for example).
    pub fn publish_set(&self, set: crate::auth::jwks::JwkSet) {
        *lock(&self.state.keys) = set;
    }

    /// How many times the set was requested.
    pub fn fetches(&self) -> usize {
        self.state.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// While `down`, every request is answered 503 (and still counted).
    pub fn set_down(&self, down: bool) {
        self.state
            .down
            .store(down, std::sync::atomic::Ordering::SeqCst);
    }

    /// The `Cache-Control` of the answers.
    pub fn set_cache_control(&self, value: &str) {
        value.clone_into(&mut lock(&self.state.cache_control));
    }

    /// How long each answer takes.
    pub fn set_delay(&self, delay: std::time::Duration) {
        *lock(&self.state.delay) = delay;
    }
}

impl Drop for TestJwks {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn key_set(keys: &[&TestSigningKey]) -> crate::auth::jwks::JwkSet {
    crate::auth::jwks::JwkSet {
        keys: keys.iter().map(|key| key.jwk()).collect(),
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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

/// A loopback port nothing listens on now, for settings that must name a server's own ports in
/// advance. It is picked below the ephemeral range (32768 and up on Linux), so no outgoing
/// connection takes it before the server binds it, and reserved for ten minutes across every
/// test process of the machine ([`reserve_port`]), so two tests running at once never get the
/// same one (a server binds its ports only after its migrations, seconds later).
pub fn free_port() -> u16 {
    loop {
        let port = 20_000 + rand::random_range(0..12_000u16);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() && reserve_port(port) {
            return port;
        }
    }
}

/// How long a port handed out by [`free_port`] stays reserved, in seconds.
const PORT_RESERVATION_SECS: u64 = 600;

/// Reserves `port` for this window of [`PORT_RESERVATION_SECS`] by creating a file named after
/// it and the window (creation is atomic: one process wins); a port reserved in the previous
/// window is not handed out either. `false` if someone holds it.
fn reserve_port(port: u16) -> bool {
    let dir = std::env::temp_dir().join("pulse-test-ports");
    if std::fs::create_dir_all(&dir).is_err() {
        return true;
    }
    let window = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / PORT_RESERVATION_SECS);
    if dir
        .join(format!("{port}.{}", window.saturating_sub(1)))
        .exists()
    {
        return false;
    }
    let taken = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dir.join(format!("{port}.{window}")))
        .is_ok();
    if taken && rand::random_range(0..100u8) == 0 {
        forget_old_reservations(&dir, window);
    }
    taken
}

/// Removes reservations older than the previous window (now and then, so the directory stays
/// small).
fn forget_old_reservations(dir: &Path, window: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let old = name
            .to_str()
            .and_then(|n| n.split_once('.'))
            .and_then(|(_, w)| w.parse::<u64>().ok())
            .is_some_and(|w| w + 1 < window);
        if old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Waits until `check` holds (polling every 100 ms, slow enough for the per-client rate limit
/// when polling over HTTP), or fails the test after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The last segment of a problem's `type` (`slot-taken`).
pub fn problem_kind(problem: &serde_json::Value) -> String {
    problem["type"]
        .as_str()
        .and_then(|t| t.rsplit('/').next())
        .unwrap_or_default()
        .to_owned()
}

/// A Pulse server for one test: its own database (migrated for its components), the real Redis
/// and Kafka, its own keyspace, HS256 tokens from [`token`]. Every component's test harness is
/// this one, plus that component's own request helpers.
pub struct TestApp {
    /// The test's database (dropped with the app).
    pub db: TestDatabase,
    /// The running server; `None` after [`TestApp::stop`].
    pub server: Option<crate::server::RunningServer>,
    /// `http://127.0.0.1:<port>` of the public listener.
    pub base: String,
    /// `http://127.0.0.1:<port>` of the admin listener.
    pub admin_base: String,
    /// The gRPC listener.
    pub grpc: std::net::SocketAddr,
    /// An HTTP client with a large idle pool (tests race many requests).
    pub client: reqwest::Client,
    /// The country served.
    pub country: crate::config::CountryConfig,
    /// The keyspace of this server's Redis keys and Kafka topics.
    pub keyspace: String,
    /// A small pool on the test database, for checks straight from PostgreSQL.
    pub pool: sqlx::PgPool,
}

impl TestApp {
    /// Starts `components` for `country` with [`server_settings`].
    pub async fn start(
        components: Vec<std::sync::Arc<dyn crate::component::Component>>,
        country: crate::config::CountryConfig,
    ) -> Self {
        Self::start_with(components, country, |_| {}).await
    }

    /// Starts `components` for `country` after `configure` has adjusted the settings (a private
    /// Redis, fixed ports, pool sizes). The database URL is the test database's.
    pub async fn start_with(
        components: Vec<std::sync::Arc<dyn crate::component::Component>>,
        country: crate::config::CountryConfig,
        configure: impl FnOnce(&mut crate::server::ServerSettings),
    ) -> Self {
        let db = TestDatabase::create().await;
        Self::start_on(db, components, country, configure).await
    }

    /// Like [`TestApp::start_with`], on an existing database (components built in advance with
    /// its URL, for example).
    pub async fn start_on(
        db: TestDatabase,
        components: Vec<std::sync::Arc<dyn crate::component::Component>>,
        country: crate::config::CountryConfig,
        configure: impl FnOnce(&mut crate::server::ServerSettings),
    ) -> Self {
        // Logs of the server under test, when RUST_LOG asks for them.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        for component in &components {
            crate::db::migrate(&db.url, component.name(), component.migrations())
                .await
                .unwrap_or_else(|e| panic!("migrating {}: {e}", component.name()));
        }
        let mut settings = server_settings(&db.url, &redis_url());
        configure(&mut settings);
        let keyspace = crate::server::keyspace(&country, settings.instance.as_deref())
            .unwrap_or_else(|e| panic!("test keyspace: {e}"));
        let server = crate::server::start(&settings, country.clone(), components)
            .await
            .unwrap_or_else(|e| panic!("test server: {e}"));
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(512)
            .build()
            .unwrap_or_else(|e| panic!("HTTP client: {e}"));
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(&db.url)
            .await
            .unwrap_or_else(|e| panic!("test pool: {e}"));
        Self {
            base: format!("http://{}", server.http_addr),
            admin_base: format!("http://{}", server.admin_addr),
            grpc: server.grpc_addr,
            server: Some(server),
            db,
            client,
            country,
            keyspace,
            pool,
        }
    }

    /// Drains and stops the server (the database stays until the app is dropped).
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    /// A token of this country for `subject` with `roles`.
    pub fn token(&self, subject: &str, roles: &[&str]) -> String {
        token(subject, roles, &self.country.code)
    }

    /// An `admin` token.
    pub fn admin(&self) -> String {
        self.token("admin-1", &["admin"])
    }

    /// A plain Redis connection.
    pub async fn redis(&self) -> ::redis::aio::MultiplexedConnection {
        redis_connection().await
    }

    /// The sum of metric `name` on the admin listener.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.admin_base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /metrics: {e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("reading /metrics: {e}"));
        metric_value(&text, name)
    }

    /// `method path` with an optional bearer token and JSON body: (status, JSON body or null).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// `GET path` with an optional token.
    pub async fn get(&self, token: Option<&str>, path: &str) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::GET, path, token, None).await
    }

    /// `POST path` with an optional token and body.
    pub async fn post(
        &self,
        token: Option<&str>,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::POST, path, token, body).await
    }
}

// Private servers for the tests that break them: a test never kills the shared servers.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The 6-digit code of the last message to `to` in a sandbox JSON-lines file (identity's SMS
/// and e-mail sandboxes write `{"to":…,"body":…}` lines).
pub fn last_code_in(path: &Path, to: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let message = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .rev()
        .find(|m| m["to"] == to)?;
    let body = message["body"].as_str()?;
    body.as_bytes()
        .windows(6)
        .find(|w| w.iter().all(u8::is_ascii_digit))
        .map(|w| String::from_utf8_lossy(w).into_owned())
}

/// A directory under the system's temporary directory, removed when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `<tmp>/pulse-<prefix>-<random>`.
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(unique(&format!("pulse-{prefix}")));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        Self(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether something accepts connections on `127.0.0.1:port`.
pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// Waits until `port` accepts connections; fails the test after `within`.
pub fn wait_port(port: u16, what: &str, within: Duration) {
    let started = Instant::now();
    while !port_open(port) {
        assert!(
            started.elapsed() < within,
            "{what} did not listen on 127.0.0.1:{port} within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How a [`PrivateRedis`] keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing on disk: a restart starts empty.
    None,
    /// Append-only file, fsync every second (what seckill needs in production): a restart
    /// reloads everything but the last second or so of writes. While an fsync is slow (a busy
    /// disk) Redis postpones even the AOF write for up to 2 s, so a `kill -9` can lose writes it
    /// already answered.
    AppendOnly,
    /// Append-only file written and fsynced before Redis answers: a restart loses nothing it
    /// acknowledged, however busy the disk.
    AppendOnlyAlways,
}

/// A `redis-server` of one test on its own port, with its own directory.
#[derive(Debug)]
pub struct PrivateRedis {
    /// Its port on 127.0.0.1.
    pub port: u16,
    persistence: Persistence,
    dir: TempDir,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts it on a free port and waits until it listens.
    pub fn start(persistence: Persistence) -> Self {
        Self::start_on(free_port(), persistence)
    }

    /// Starts it on `port` and waits until it listens.
    pub fn start_on(port: u16, persistence: Persistence) -> Self {
        let mut redis = Self {
            port,
            persistence,
            dir: TempDir::new("redis"),
            child: None,
        };
        redis.start_again();
        redis
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9`: no shutdown, no last fsync.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory (so with [`Persistence::AppendOnly`] it
    /// reloads its append-only file) and waits until it listens.
    pub fn start_again(&mut self) {
        self.kill();
        let dir = self.dir.path().display().to_string();
        let port = self.port.to_string();
        let mut args = vec![
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--dir",
            &dir,
            "--save",
            "",
        ];
        match self.persistence {
            Persistence::None => args.extend(["--appendonly", "no"]),
            Persistence::AppendOnly => {
                args.extend(["--appendonly", "yes", "--appendfsync", "everysec"]);
            }
            Persistence::AppendOnlyAlways => {
                args.extend(["--appendonly", "yes", "--appendfsync", "always"]);
            }
        }
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (./dev test installs it)");
        self.child = Some(child);
        wait_port(self.port, "redis-server", Duration::from_secs(10));
    }

    /// A plain connection (not Pulse's handle), for checking keys.
    pub async fn connection(&self) -> ::redis::aio::MultiplexedConnection {
        let client = ::redis::Client::open(self.url()).expect("url");
        let started = Instant::now();
        loop {
            // A Redis reloading its append-only file answers LOADING for a moment.
            let attempt = async {
                let mut conn = client.get_multiplexed_async_connection().await?;
                ::redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await?;
                Ok::<_, ::redis::RedisError>(conn)
            };
            match tokio::time::timeout(Duration::from_secs(2), attempt).await {
                Ok(Ok(conn)) => return conn,
                outcome => assert!(
                    started.elapsed() < Duration::from_secs(15),
                    "private Redis on {} does not answer: {outcome:?}",
                    self.port
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
