//! The settings contract: every process setting `pulse` reads, defined once.
//!
//! A [`Setting`] is one environment variable with its meaning and default. The process reads
//! them through one [`Env`], once, at start-up, into typed settings structs (the server's in
//! [`crate::server::ServerSettings::read`], each component's in its own settings module); a bad
//! value fails start-up with a [`SettingError`] that names the variable. The operator writes the
//! same [`Setting`]s into a country's ConfigMap and Deployments, so renaming one breaks the build
//! or a test, not a deployment. Values that are secrets are held in [`Secret`], whose `Debug`
//! and `Display` never show them.
//!
//! [`Env`] remembers what was read, so a test can check that everything the operator sets is
//! read by `pulse serve`, and that nothing it requires is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

/// One environment variable that `pulse` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The variable (`PULSE_DATABASE_URL`).
    pub var: &'static str,
    /// What it means, for `--help` and error messages.
    pub help: &'static str,
    /// Whether the value is a secret: never logged, never shown by `Debug`.
    pub secret: bool,
}

impl Setting {
    const fn plain(var: &'static str, help: &'static str) -> Self {
        Self {
            var,
            help,
            secret: false,
        }
    }

    const fn secret(var: &'static str, help: &'static str) -> Self {
        Self {
            var,
            help,
            secret: true,
        }
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.var)
    }
}

/// A value that must not be printed: `Debug` and `Display` show `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that needs it (a key, a connection).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A variable that does not hold a usable value. Its message starts with the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {message}")]
pub struct SettingError {
    /// The variable.
    pub var: &'static str,
    /// What is wrong and what to put instead.
    pub message: String,
}

impl SettingError {
    /// An error about `setting`.
    pub fn new(setting: &Setting, message: impl Into<String>) -> Self {
        Self {
            var: setting.var,
            message: message.into(),
        }
    }
}

type Source = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Where settings come from: the process environment, or a map (tests, the operator's check).
/// It records every variable read.
#[derive(Clone)]
pub struct Env {
    source: Source,
    names: Arc<dyn Fn() -> Vec<String> + Send + Sync>,
    read: Arc<Mutex<BTreeSet<String>>>,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env").finish_non_exhaustive()
    }
}

impl Env {
    /// The process environment.
    pub fn process() -> Self {
        Self {
            source: Arc::new(|name| std::env::var(name).ok()),
            names: Arc::new(|| std::env::vars().map(|(name, _)| name).collect()),
            read: Arc::default(),
        }
    }

    /// The variables of `vars` only.
    pub fn from_map<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        let map: Arc<BTreeMap<String, String>> = Arc::new(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        let names = Arc::clone(&map);
        Self {
            source: Arc::new(move |name| map.get(name).cloned()),
            names: Arc::new(move || names.keys().cloned().collect()),
            read: Arc::default(),
        }
    }

    fn get(&self, setting: &Setting) -> Option<String> {
        self.mark(setting.var);
        (self.source)(setting.var)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn mark(&self, var: &str) {
        if let Ok(mut read) = self.read.lock() {
            read.insert(var.to_owned());
        }
    }

    /// The value, if set and not blank.
    pub fn text(&self, setting: &Setting) -> Option<String> {
        self.get(setting)
    }

    /// The value, or an error saying that it is required and why.
    pub fn required(&self, setting: &Setting) -> Result<String, SettingError> {
        self.get(setting)
            .ok_or_else(|| SettingError::new(setting, format!("required ({})", setting.help)))
    }

    /// A secret value, if set.
    pub fn secret(&self, setting: &Setting) -> Option<Secret> {
        self.get(setting).map(Secret)
    }

    /// A value parsed with `FromStr`, or `default` when unset.
    pub fn parse<T>(&self, setting: &Setting, default: T) -> Result<T, SettingError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.get(setting) {
            None => Ok(default),
            Some(raw) => raw
                .parse()
                .map_err(|err| SettingError::new(setting, format!("`{raw}` is not usable: {err}"))),
        }
    }

    /// A whole number within `min..=max`, or `default` when unset.
    pub fn number<T>(
        &self,
        setting: &Setting,
        default: T,
        min: T,
        max: T,
    ) -> Result<T, SettingError>
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
    {
        match self.get(setting) {
            None => Ok(default),
            Some(raw) => match raw.parse::<T>() {
                Ok(value) if value >= min && value <= max => Ok(value),
                _ => Err(SettingError::new(
                    setting,
                    format!("`{raw}` is not a whole number between {min} and {max}"),
                )),
            },
        }
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`), or `default` when unset.
    pub fn flag(&self, setting: &Setting, default: bool) -> Result<bool, SettingError> {
        match self.get(setting) {
            None => Ok(default),
            Some(raw) => match raw.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(SettingError::new(
                    setting,
                    format!("`{raw}` is not a boolean: use true or false"),
                )),
            },
        }
    }

    /// An `http://` or `https://` URL with a host, or `default` when unset.
    pub fn url(&self, setting: &Setting, default: &str) -> Result<String, SettingError> {
        let value = self.get(setting).unwrap_or_else(|| default.to_owned());
        check_url(&value).map_err(|why| {
            SettingError::new(
                setting,
                format!("`{value}` is not an http(s) URL like http://host:port ({why})"),
            )
        })?;
        Ok(value)
    }

    /// A URL whose default is this process's own listener at `addr`, plus `path` (a component
    /// calling another one that runs in the same process under `--target all`). Required when
    /// the listener's port is chosen at start-up (port 0).
    pub fn local_url(
        &self,
        setting: &Setting,
        addr: std::net::SocketAddr,
        path: &str,
    ) -> Result<String, SettingError> {
        if addr.port() == 0 && self.get(setting).is_none() {
            return Err(SettingError::new(
                setting,
                format!(
                    "required: its default is this process's own listener, whose port ({addr}) is chosen at start-up"
                ),
            ));
        }
        self.url(setting, &format!("http://127.0.0.1:{}{path}", addr.port()))
    }

    /// A comma-separated list (blank items dropped), empty when unset.
    pub fn list(&self, setting: &Setting) -> Vec<String> {
        self.get(setting)
            .map(|raw| {
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every variable that starts with `prefix`, with its value (all marked as read).
    pub fn with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for name in (self.names)() {
            if name.starts_with(prefix)
                && let Some(value) = (self.source)(&name)
            {
                self.mark(&name);
                out.push((name, value));
            }
        }
        out
    }

    /// Every variable read so far.
    pub fn read(&self) -> BTreeSet<String> {
        self.read.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// Checks that `value` is an absolute `http(s)` URL with a host and, at most, a port and a path.
fn check_url(value: &str) -> Result<(), &'static str> {
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
        .ok_or("it must start with http:// or https://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err("credentials do not belong in the URL");
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
            (host, Some(port))
        }
        _ => (authority, None),
    };
    let host_ok = !host.is_empty()
        && (host.starts_with('[') && host.ends_with(']')
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_'));
    if !host_ok {
        return Err("the host is missing or has characters a host name cannot have");
    }
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err("the port must be a number from 1 to 65535");
    }
    if rest.contains(char::is_whitespace) {
        return Err("it contains spaces");
    }
    Ok(())
}

/// The server's settings (every target reads them).
pub mod server {
    use super::Setting;

    /// Components to run.
    pub const TARGET: Setting = Setting::plain(
        "PULSE_TARGET",
        "components to run: `all` or a comma-separated list",
    );
    /// The country's configuration file.
    pub const COUNTRY_FILE: Setting = Setting::plain(
        "PULSE_COUNTRY_FILE",
        "YAML file with the country configuration (a CountryTenant or a bare config); PULSE_COUNTRY__* variables override it",
    );
    /// The country's database.
    pub const DATABASE_URL: Setting = Setting::secret(
        "PULSE_DATABASE_URL",
        "PostgreSQL database of the country, postgres://user:password@host:5432/pulse_fr",
    );
    /// Redis.
    pub const REDIS_URL: Setting = Setting::secret(
        "PULSE_REDIS_URL",
        "Redis URL, redis://host:6379 (default redis://127.0.0.1:6379)",
    );
    /// Kafka.
    pub const KAFKA_BROKERS: Setting = Setting::plain(
        "PULSE_KAFKA_BROKERS",
        "Kafka bootstrap brokers, comma-separated (default 127.0.0.1:9092)",
    );
    /// Public HTTP listener.
    pub const HTTP_ADDR: Setting = Setting::plain(
        "PULSE_HTTP_ADDR",
        "public HTTP listener (default 0.0.0.0:8080)",
    );
    /// gRPC listener.
    pub const GRPC_ADDR: Setting =
        Setting::plain("PULSE_GRPC_ADDR", "gRPC listener (default 0.0.0.0:50051)");
    /// Admin listener.
    pub const ADMIN_ADDR: Setting = Setting::plain(
        "PULSE_ADMIN_ADDR",
        "admin listener: /livez, /readyz, /metrics (default 0.0.0.0:9090)",
    );
    /// Drain delay.
    pub const DRAIN_SECONDS: Setting = Setting::plain(
        "PULSE_DRAIN_SECONDS",
        "seconds readiness fails before the listeners close on SIGTERM (default 5)",
    );
    /// Pool size.
    pub const DB_MAX_CONNECTIONS: Setting = Setting::plain(
        "PULSE_DB_MAX_CONNECTIONS",
        "connections per component pool (default 10)",
    );
    /// Partitions of created topics.
    pub const KAFKA_PARTITIONS: Setting = Setting::plain(
        "PULSE_KAFKA_PARTITIONS",
        "partitions of the topics this process creates (default 3)",
    );
    /// Instance name.
    pub const INSTANCE: Setting = Setting::plain(
        "PULSE_INSTANCE",
        "instance name, when several deployments of one country share Redis and Kafka (added to Redis keys and Kafka topics)",
    );
    /// Trust `X-Forwarded-For`.
    pub const TRUST_FORWARDED_FOR: Setting = Setting::plain(
        "PULSE_TRUST_FORWARDED_FOR",
        "take the client address for rate limits from the first X-Forwarded-For hop (behind an ingress; default false)",
    );
    /// Migrate on start.
    pub const MIGRATE_ON_START: Setting = Setting::plain(
        "PULSE_MIGRATE_ON_START",
        "apply migrations before serving (default false)",
    );
    /// Development mode.
    pub const DEVELOPMENT_MODE: Setting = Setting::plain(
        "PULSE_DEVELOPMENT_MODE",
        "allow development-only parts such as the sandbox payment provider (default false; never in production)",
    );
    /// JWT issuer.
    pub const JWT_ISSUER: Setting =
        Setting::plain("PULSE_JWT_ISSUER", "expected token issuer (default pulse)");
    /// The token algorithms accepted.
    pub const JWT_ALGORITHMS: Setting = Setting::plain(
        "PULSE_JWT_ALGORITHMS",
        "comma-separated allow-list of token signature algorithms: HS256, ES256, EdDSA, RS256 (default HS256); the token's header never decides",
    );
    /// HS256 secret.
    pub const JWT_SECRET: Setting = Setting::secret(
        "PULSE_JWT_SECRET",
        "HS256 shared secret, at least 32 bytes (required when PULSE_JWT_ALGORITHMS holds HS256: local development and tests)",
    );
    /// Identity's JWKS.
    pub const JWKS_URL: Setting = Setting::plain(
        "PULSE_JWKS_URL",
        "identity's JWK set, http://identity.pulse-fr.svc:8080/.well-known/jwks.json in a cluster (required when PULSE_JWT_ALGORITHMS holds ES256, EdDSA or RS256)",
    );
    /// Minimum time between two JWKS refreshes.
    pub const JWKS_REFRESH_SECONDS: Setting = Setting::plain(
        "PULSE_JWKS_REFRESH_SECONDS",
        "minimum seconds between two fetches of the JWK set, however many tokens name an unknown key (default 5)",
    );

    /// Every server setting.
    pub const ALL: &[&Setting] = &[
        &TARGET,
        &COUNTRY_FILE,
        &DATABASE_URL,
        &REDIS_URL,
        &KAFKA_BROKERS,
        &HTTP_ADDR,
        &GRPC_ADDR,
        &ADMIN_ADDR,
        &DRAIN_SECONDS,
        &DB_MAX_CONNECTIONS,
        &KAFKA_PARTITIONS,
        &INSTANCE,
        &TRUST_FORWARDED_FOR,
        &MIGRATE_ON_START,
        &DEVELOPMENT_MODE,
        &JWT_ISSUER,
        &JWT_ALGORITHMS,
        &JWT_SECRET,
        &JWKS_URL,
        &JWKS_REFRESH_SECONDS,
    ];
}

/// Ordering's settings (the operator writes some of them).
pub mod ordering {
    use super::Setting;

    /// Marketing's gRPC endpoint.
    pub const MARKETING_GRPC_URL: Setting = Setting::plain(
        "PULSE_MARKETING_GRPC_URL",
        "marketing's gRPC endpoint, http://marketing.pulse-fr.svc:50051 in a cluster (default: this process's gRPC port)",
    );
    /// Deadline of a call to marketing.
    pub const MARKETING_GRPC_TIMEOUT_MS: Setting = Setting::plain(
        "PULSE_MARKETING_GRPC_TIMEOUT_MS",
        "deadline of one call to marketing, in ms (default 800)",
    );
    /// Retries of a call to marketing.
    pub const MARKETING_GRPC_RETRIES: Setting = Setting::plain(
        "PULSE_MARKETING_GRPC_RETRIES",
        "retries of a call to marketing that failed for a transient reason (default 2)",
    );
    /// Breaker threshold.
    pub const MARKETING_BREAKER_FAILURES: Setting = Setting::plain(
        "PULSE_MARKETING_BREAKER_FAILURES",
        "failed calls in a row that open the circuit breaker in front of marketing (default 5)",
    );
    /// Breaker open time.
    pub const MARKETING_BREAKER_OPEN_SECONDS: Setting = Setting::plain(
        "PULSE_MARKETING_BREAKER_OPEN_SECONDS",
        "how long an open breaker answers 503 before a trial call (default 5)",
    );
    /// Payment provider.
    pub const PAYMENT_PROVIDER: Setting = Setting::plain(
        "PULSE_PAYMENT_PROVIDER",
        "payment provider: `stripe`, or `sandbox` (a local checkout page where anyone pays any order with no real money; needs PULSE_DEVELOPMENT_MODE=true)",
    );
    /// Webhook secrets.
    pub const PAYMENT_WEBHOOK_SECRET: Setting = Setting::secret(
        "PULSE_PAYMENT_WEBHOOK_SECRET",
        "webhook signing secret(s), comma-separated to accept several during a rotation (random for sandbox, required for stripe)",
    );
    /// Stripe API key.
    pub const STRIPE_API_KEY: Setting = Setting::secret(
        "PULSE_STRIPE_API_KEY",
        "the provider's secret API key, sk_… (stripe)",
    );
    /// Stripe base URL.
    pub const STRIPE_BASE_URL: Setting = Setting::plain(
        "PULSE_STRIPE_BASE_URL",
        "API base URL of the Stripe-compatible provider (default https://api.stripe.com)",
    );
    /// Return URL.
    pub const PAYMENT_RETURN_URL: Setting = Setting::plain(
        "PULSE_PAYMENT_RETURN_URL",
        "where the buyer lands after the checkout; {ORDER_ID} is replaced (stripe: an absolute URL, default this process's /v1/orders/{ORDER_ID}; sandbox: an absolute URL or a path on the API's origin, default /#/orders/{ORDER_ID}, the web app's order page)",
    );
    /// Sandbox webhook URL.
    pub const PAYMENT_SANDBOX_WEBHOOK_URL: Setting = Setting::plain(
        "PULSE_PAYMENT_SANDBOX_WEBHOOK_URL",
        "where the sandbox sends its webhooks (default: this process's HTTP port)",
    );
    /// Sandbox delay.
    pub const PAYMENT_SANDBOX_DELAY_MS: Setting = Setting::plain(
        "PULSE_PAYMENT_SANDBOX_DELAY_MS",
        "set: the sandbox pays every checkout by itself this many ms after it starts (tests, benches); unset: the buyer pays or cancels on the sandbox's checkout page",
    );
    /// Permits per product.
    pub const PRODUCT_PERMITS: Setting = Setting::plain(
        "PULSE_ORDERING_PRODUCT_PERMITS",
        "buyers of one product allowed to reach PostgreSQL at once (default 16)",
    );
    /// Permit wait.
    pub const PERMIT_WAIT_MS: Setting = Setting::plain(
        "PULSE_ORDERING_PERMIT_WAIT_MS",
        "how long a buyer waits for a permit before a 503, in ms (default 2000)",
    );
    /// Permit counter expiry.
    pub const PERMIT_TTL_SECONDS: Setting = Setting::plain(
        "PULSE_ORDERING_PERMIT_TTL_SECONDS",
        "expiry of a product's permit counter, a fuse against crashed holders (default 10)",
    );
    /// Reservation claim idle time.
    pub const RESERVATION_CLAIM_IDLE_MS: Setting = Setting::plain(
        "PULSE_ORDERING_RESERVATION_CLAIM_IDLE_MS",
        "a reservation unacknowledged this long is claimed by another consumer, in ms (default 30000)",
    );
    /// Reservation deliveries.
    pub const RESERVATION_MAX_DELIVERIES: Setting = Setting::plain(
        "PULSE_ORDERING_RESERVATION_MAX_DELIVERIES",
        "deliveries after which a failing reservation goes to the dead-letter stream (default 5)",
    );
    /// Sweeper interval.
    pub const SWEEP_INTERVAL_MS: Setting = Setting::plain(
        "PULSE_ORDERING_SWEEP_INTERVAL_MS",
        "how often unpaid orders past their deadline are looked for, in ms (default 1000)",
    );

    /// Every ordering setting.
    pub const ALL: &[&Setting] = &[
        &MARKETING_GRPC_URL,
        &MARKETING_GRPC_TIMEOUT_MS,
        &MARKETING_GRPC_RETRIES,
        &MARKETING_BREAKER_FAILURES,
        &MARKETING_BREAKER_OPEN_SECONDS,
        &PAYMENT_PROVIDER,
        &PAYMENT_WEBHOOK_SECRET,
        &STRIPE_API_KEY,
        &STRIPE_BASE_URL,
        &PAYMENT_RETURN_URL,
        &PAYMENT_SANDBOX_WEBHOOK_URL,
        &PAYMENT_SANDBOX_DELAY_MS,
        &PRODUCT_PERMITS,
        &PERMIT_WAIT_MS,
        &PERMIT_TTL_SECONDS,
        &RESERVATION_CLAIM_IDLE_MS,
        &RESERVATION_MAX_DELIVERIES,
        &SWEEP_INTERVAL_MS,
    ];
}

/// Identity's settings (the operator writes some of them).
pub mod identity {
    use super::Setting;

    /// File holding the keyring secret.
    pub const KEYRING_SECRET_FILE: Setting = Setting::plain(
        "PULSE_IDENTITY_KEYRING_SECRET_FILE",
        "file with the secret (at least 32 bytes) that seals identity's token-signing keys and keys the hashes of one-time codes; a mounted Kubernetes Secret in a cluster",
    );
    /// Algorithm of new signing keys.
    pub const SIGNING_ALGORITHM: Setting = Setting::plain(
        "PULSE_IDENTITY_SIGNING_ALGORITHM",
        "algorithm of identity's access-token signing keys: EdDSA (default) or ES256",
    );
    /// Scheduled key rotation.
    pub const KEY_ROTATION_DAYS: Setting = Setting::plain(
        "PULSE_IDENTITY_KEY_ROTATION_DAYS",
        "days after which identity's signing key is replaced by a new one (default 30)",
    );
    /// Access-token lifetime.
    pub const ACCESS_TOKEN_SECONDS: Setting = Setting::plain(
        "PULSE_IDENTITY_ACCESS_TOKEN_SECONDS",
        "lifetime of an access token, in seconds (default 900)",
    );
    /// Refresh-token lifetime.
    pub const REFRESH_TOKEN_DAYS: Setting = Setting::plain(
        "PULSE_IDENTITY_REFRESH_TOKEN_DAYS",
        "lifetime of a refresh token, in days; each refresh issues a new one (default 30)",
    );
    /// SMS provider.
    pub const SMS_PROVIDER: Setting = Setting::plain(
        "PULSE_IDENTITY_SMS_PROVIDER",
        "SMS provider of sign-in codes: `twilio` (a Twilio-compatible HTTP API), or `sandbox` (writes messages to a file; needs PULSE_DEVELOPMENT_MODE=true, and is then the default)",
    );
    /// SMS API base URL.
    pub const SMS_BASE_URL: Setting = Setting::plain(
        "PULSE_IDENTITY_SMS_BASE_URL",
        "API base URL of the Twilio-compatible SMS provider (default https://api.twilio.com)",
    );
    /// SMS account.
    pub const SMS_ACCOUNT: Setting = Setting::plain(
        "PULSE_IDENTITY_SMS_ACCOUNT",
        "account SID at the SMS provider (twilio)",
    );
    /// SMS auth token.
    pub const SMS_AUTH_TOKEN: Setting = Setting::secret(
        "PULSE_IDENTITY_SMS_AUTH_TOKEN",
        "auth token of the SMS provider account (twilio)",
    );
    /// SMS sender.
    pub const SMS_FROM: Setting = Setting::plain(
        "PULSE_IDENTITY_SMS_FROM",
        "sender of the SMS, an E.164 number like +33700000000 (twilio)",
    );
    /// Sandbox SMS file.
    pub const SANDBOX_SMS_FILE: Setting = Setting::plain(
        "PULSE_IDENTITY_SANDBOX_SMS_FILE",
        "where the sandbox SMS provider appends each message as a JSON line (default sms-sandbox.jsonl)",
    );
    /// Sandbox e-mail file.
    pub const SANDBOX_EMAIL_FILE: Setting = Setting::plain(
        "PULSE_IDENTITY_SANDBOX_EMAIL_FILE",
        "where e-mail verification codes are appended as JSON lines in development mode (default email-sandbox.jsonl), when PULSE_IDENTITY_SMTP_URL is unset",
    );
    /// SMTP server of verification codes.
    pub const SMTP_URL: Setting = Setting::secret(
        "PULSE_IDENTITY_SMTP_URL",
        "SMTP server that sends e-mail verification codes, with its credentials: `smtps://user:password@host:465`, `smtp://user:password@host:587?tls=required` or, on loopback only, `smtp://127.0.0.1:1025`; unset: the sandbox file in development mode, else e-mail addresses cannot be verified (503)",
    );
    /// Sender of verification codes.
    pub const EMAIL_FROM: Setting = Setting::plain(
        "PULSE_IDENTITY_EMAIL_FROM",
        "sender of e-mail verification codes, `Name <address>` (default `Pulse <no-reply@pulse.invalid>`)",
    );
    /// Per-address send limit.
    pub const OTP_SENDS_PER_ADDRESS_PER_HOUR: Setting = Setting::plain(
        "PULSE_IDENTITY_OTP_SENDS_PER_ADDRESS_PER_HOUR",
        "sign-in codes one client address may request per hour, whatever the phones (default 20)",
    );

    /// Every identity setting.
    pub const ALL: &[&Setting] = &[
        &KEYRING_SECRET_FILE,
        &SIGNING_ALGORITHM,
        &KEY_ROTATION_DAYS,
        &ACCESS_TOKEN_SECONDS,
        &REFRESH_TOKEN_DAYS,
        &SMS_PROVIDER,
        &SMS_BASE_URL,
        &SMS_ACCOUNT,
        &SMS_AUTH_TOKEN,
        &SMS_FROM,
        &SANDBOX_SMS_FILE,
        &SANDBOX_EMAIL_FILE,
        &SMTP_URL,
        &EMAIL_FROM,
        &OTP_SENDS_PER_ADDRESS_PER_HOUR,
    ];
}

/// Notifier's settings (the operator writes some of them, the providers' from Secrets).
pub mod notifier {
    use super::Setting;

    /// Identity's gRPC endpoint.
    pub const IDENTITY_GRPC_URL: Setting = Setting::plain(
        "PULSE_NOTIFIER_IDENTITY_GRPC_URL",
        "identity's gRPC endpoint, where recipients' contact data is read (`http://identity.pulse-fr.svc:50051`); default: this process's own gRPC listener, for `--target all`",
    );
    /// Deadline of a directory call.
    pub const DIRECTORY_TIMEOUT_MS: Setting = Setting::plain(
        "PULSE_NOTIFIER_DIRECTORY_TIMEOUT_MS",
        "deadline of a call to identity's Directory, in milliseconds (default 500)",
    );
    /// Contact cache lifetime.
    pub const DIRECTORY_CACHE_SECONDS: Setting = Setting::plain(
        "PULSE_NOTIFIER_DIRECTORY_CACHE_SECONDS",
        "how long a recipient's contact data is reused before identity is asked again, in seconds (default 60; 0 turns the cache off)",
    );
    /// SMTP server.
    pub const SMTP_URL: Setting = Setting::secret(
        "PULSE_NOTIFIER_SMTP_URL",
        "SMTP server of e-mail notifications, with its credentials: `smtps://user:password@host:465`, `smtp://user:password@host:587?tls=required` or, on loopback only, `smtp://127.0.0.1:1025`; unset: no e-mail is sent (e-mail deliveries are recorded as `no_provider`)",
    );
    /// E-mail sender.
    pub const EMAIL_FROM: Setting = Setting::plain(
        "PULSE_NOTIFIER_EMAIL_FROM",
        "sender of e-mail notifications, `Name <address>` (default `Pulse <no-reply@pulse.invalid>`)",
    );
    /// SMS provider.
    pub const SMS_PROVIDER: Setting = Setting::plain(
        "PULSE_NOTIFIER_SMS_PROVIDER",
        "SMS provider of notifications: `twilio` (a Twilio-compatible HTTP API), `sandbox` (writes messages to a file; development mode only) or `none` (default: `sandbox` in development mode, else `none`)",
    );
    /// SMS API base URL.
    pub const SMS_BASE_URL: Setting = Setting::plain(
        "PULSE_NOTIFIER_SMS_BASE_URL",
        "API base URL of the Twilio-compatible SMS provider (default https://api.twilio.com)",
    );
    /// SMS account.
    pub const SMS_ACCOUNT: Setting = Setting::plain(
        "PULSE_NOTIFIER_SMS_ACCOUNT",
        "account SID at the SMS provider (twilio)",
    );
    /// SMS auth token.
    pub const SMS_AUTH_TOKEN: Setting = Setting::secret(
        "PULSE_NOTIFIER_SMS_AUTH_TOKEN",
        "auth token of the SMS provider account (twilio)",
    );
    /// SMS sender.
    pub const SMS_FROM: Setting = Setting::plain(
        "PULSE_NOTIFIER_SMS_FROM",
        "sender of the SMS, an E.164 number like +33700000000 (twilio)",
    );
    /// Sandbox SMS file.
    pub const SANDBOX_SMS_FILE: Setting = Setting::plain(
        "PULSE_NOTIFIER_SANDBOX_SMS_FILE",
        "where the sandbox SMS provider appends each notification as a JSON line (default notifier-sms-sandbox.jsonl)",
    );
    /// Provider call deadline.
    pub const PROVIDER_TIMEOUT_MS: Setting = Setting::plain(
        "PULSE_NOTIFIER_PROVIDER_TIMEOUT_MS",
        "deadline of one call to the SMTP server or the SMS provider, in milliseconds (default 5000)",
    );
    /// Attempts before a delivery is dead.
    pub const MAX_ATTEMPTS: Setting = Setting::plain(
        "PULSE_NOTIFIER_MAX_ATTEMPTS",
        "failed attempts after which a delivery becomes a dead letter (default 8)",
    );
    /// First retry delay.
    pub const RETRY_BASE_MS: Setting = Setting::plain(
        "PULSE_NOTIFIER_RETRY_BASE_MS",
        "delay before the first retry of a failed delivery, in milliseconds; it doubles with each failure, with jitter (default 2000)",
    );
    /// Longest retry delay.
    pub const RETRY_MAX_SECONDS: Setting = Setting::plain(
        "PULSE_NOTIFIER_RETRY_MAX_SECONDS",
        "longest delay between two attempts of a delivery, in seconds (default 900)",
    );
    /// Failures that open a provider's breaker.
    pub const BREAKER_FAILURES: Setting = Setting::plain(
        "PULSE_NOTIFIER_BREAKER_FAILURES",
        "consecutive failures of one provider that open its circuit breaker (default 5)",
    );
    /// How long a breaker stays open.
    pub const BREAKER_OPEN_SECONDS: Setting = Setting::plain(
        "PULSE_NOTIFIER_BREAKER_OPEN_SECONDS",
        "how long an open provider breaker waits before one trial delivery, in seconds (default 30)",
    );
    /// Poll interval of the workers.
    pub const POLL_MS: Setting = Setting::plain(
        "PULSE_NOTIFIER_POLL_MS",
        "how often the delivery and reminder workers look for due work when nothing wakes them, in milliseconds (default 1000)",
    );

    /// Every notifier setting.
    pub const ALL: &[&Setting] = &[
        &IDENTITY_GRPC_URL,
        &DIRECTORY_TIMEOUT_MS,
        &DIRECTORY_CACHE_SECONDS,
        &SMTP_URL,
        &EMAIL_FROM,
        &SMS_PROVIDER,
        &SMS_BASE_URL,
        &SMS_ACCOUNT,
        &SMS_AUTH_TOKEN,
        &SMS_FROM,
        &SANDBOX_SMS_FILE,
        &PROVIDER_TIMEOUT_MS,
        &MAX_ATTEMPTS,
        &RETRY_BASE_MS,
        &RETRY_MAX_SECONDS,
        &BREAKER_FAILURES,
        &BREAKER_OPEN_SECONDS,
        &POLL_MS,
    ];
}

/// Where things live in a cluster: the conventions the operator creates and `pulse` relies on.
pub mod cluster {
    /// Port of the public HTTP listener in a pod.
    pub const HTTP_PORT: u16 = 8080;
    /// Port of the gRPC listener in a pod.
    pub const GRPC_PORT: u16 = 50051;
    /// Port of the admin listener in a pod.
    pub const ADMIN_PORT: u16 = 9090;

    /// The namespace of a country (`pulse-fr`), from its code in any case.
    pub fn namespace(country_code: &str) -> String {
        format!("pulse-{}", country_code.to_ascii_lowercase())
    }

    /// A component's Service in `namespace`, as a cluster DNS name.
    pub fn service_host(component: &str, namespace: &str) -> String {
        format!("{component}.{namespace}.svc")
    }

    /// A component's gRPC endpoint in `namespace` (`http://marketing.pulse-fr.svc:50051`).
    pub fn grpc_url(component: &str, namespace: &str) -> String {
        format!("http://{}:{GRPC_PORT}", service_host(component, namespace))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2-hunter2");
        assert_eq!(format!("{secret:?}"), "Secret([redacted])");
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(secret.expose(), "hunter2-hunter2");
    }

    #[test]
    fn errors_name_the_variable_and_reads_are_recorded() {
        let env = Env::from_map([
            ("PULSE_DRAIN_SECONDS", "soon"),
            ("PULSE_TRUST_FORWARDED_FOR", "maybe"),
            ("PULSE_COUNTRY__CODE", "FR"),
        ]);
        let err = env
            .number(&server::DRAIN_SECONDS, 5u64, 0, 600)
            .expect_err("not a number");
        assert!(
            err.to_string().starts_with("PULSE_DRAIN_SECONDS: "),
            "{err}"
        );
        let err = env
            .flag(&server::TRUST_FORWARDED_FOR, false)
            .expect_err("not a flag");
        assert_eq!(err.var, "PULSE_TRUST_FORWARDED_FOR");
        let err = env.required(&server::DATABASE_URL).expect_err("missing");
        assert!(err.to_string().contains("required"), "{err}");
        assert_eq!(env.with_prefix("PULSE_COUNTRY__").len(), 1);
        let read = env.read();
        for var in [
            "PULSE_DRAIN_SECONDS",
            "PULSE_TRUST_FORWARDED_FOR",
            "PULSE_DATABASE_URL",
            "PULSE_COUNTRY__CODE",
        ] {
            assert!(read.contains(var), "{var} not recorded: {read:?}");
        }
    }

    #[test]
    fn urls_are_checked() {
        let setting = ordering::MARKETING_GRPC_URL;
        for good in [
            "http://marketing.pulse-fr.svc:50051",
            "https://api.stripe.com",
            "http://127.0.0.1:8080/v1/orders/{ORDER_ID}",
            "http://[::1]:50051",
        ] {
            let env = Env::from_map([(setting.var, good)]);
            assert_eq!(env.url(&setting, "http://x").as_deref(), Ok(good));
        }
        for bad in [
            "marketing:50051",
            "http://",
            "http://:50051",
            "http://host:port",
            "http://host:0",
            "http://user:pw@host",
            "http://ho st",
            "ftp://host",
        ] {
            let env = Env::from_map([(setting.var, bad)]);
            let err = env.url(&setting, "http://x").expect_err(bad);
            assert!(err.to_string().starts_with(setting.var), "{err}");
        }
    }

    #[test]
    fn cluster_names() {
        assert_eq!(cluster::namespace("FR"), "pulse-fr");
        assert_eq!(
            cluster::grpc_url("marketing", "pulse-fr"),
            "http://marketing.pulse-fr.svc:50051"
        );
    }

    #[test]
    fn every_variable_is_defined_once() {
        let mut seen = BTreeSet::new();
        for setting in server::ALL.iter().chain(ordering::ALL) {
            assert!(seen.insert(setting.var), "{} twice", setting.var);
            assert!(setting.var.starts_with("PULSE_"));
        }
    }
}
