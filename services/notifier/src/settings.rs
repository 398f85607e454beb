//! Notifier's process settings: each variable is one [`Setting`] of
//! [`pulse_kit::settings::notifier`] (the operator renders the same names), read once at
//! start-up into [`NotifierSettings`]. A variable that holds no usable value is an error that
//! names it; secrets (the SMTP URL with its credentials, the SMS token) are never echoed.

use std::time::Duration;

use pulse_kit::breaker::BreakerConfig;
use pulse_kit::email::Mailbox;
use pulse_kit::server::ServerSettings;
use pulse_kit::settings::{Env, Secret, Setting, SettingError};
use pulse_kit::sms::{SmsSettings, SmsVars};

/// The notifier settings, defined in the kit so the operator renders the same names.
pub use pulse_kit::settings::notifier::*;

/// Notifier's SMS variables.
pub const SMS_VARS: SmsVars = SmsVars {
    provider: &SMS_PROVIDER,
    base_url: &SMS_BASE_URL,
    account: &SMS_ACCOUNT,
    auth_token: &SMS_AUTH_TOKEN,
    from: &SMS_FROM,
    sandbox_file: &SANDBOX_SMS_FILE,
    default_sandbox_file: "notifier-sms-sandbox.jsonl",
};

/// Everything notifier reads from the environment. `Debug` shows no secret.
#[derive(Debug, Clone)]
pub struct NotifierSettings {
    /// Identity's gRPC endpoint (the `Directory`).
    pub identity_grpc_url: String,
    /// Deadline of one directory call.
    pub directory_timeout: Duration,
    /// How long a contact is reused (zero: not cached).
    pub directory_cache_ttl: Duration,
    /// SMTP server URL with credentials; `None`: no e-mail provider.
    pub smtp_url: Option<Secret>,
    /// Sender of e-mails.
    pub email_from: Mailbox,
    /// SMS provider; `None`: no SMS provider.
    pub sms: Option<SmsSettings>,
    /// Deadline of one call to a provider.
    pub provider_timeout: Duration,
    /// Failed attempts after which a delivery is a dead letter.
    pub max_attempts: u32,
    /// First retry delay (doubles per failure, with jitter).
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Breaker of each provider.
    pub breaker: BreakerConfig,
    /// How often idle workers look for due work.
    pub poll_interval: Duration,
}

impl NotifierSettings {
    /// Reads notifier's settings from `env`; identity's default endpoint and the development
    /// switch come from `server`.
    pub fn read(env: &Env, server: &ServerSettings) -> Result<Self, SettingError> {
        let millis = |setting: &Setting, default: u64, min: u64, max: u64| {
            env.number(setting, default, min, max)
                .map(Duration::from_millis)
        };
        let seconds = |setting: &Setting, default: u64, min: u64, max: u64| {
            env.number(setting, default, min, max)
                .map(Duration::from_secs)
        };
        let retry_base = millis(&RETRY_BASE_MS, 2_000, 10, 3_600_000)?;
        let retry_max = seconds(&RETRY_MAX_SECONDS, 900, 1, 86_400)?;
        if retry_max < retry_base {
            return Err(SettingError::new(
                &RETRY_MAX_SECONDS,
                format!(
                    "{}s is shorter than the first retry delay {RETRY_BASE_MS} ({} ms)",
                    retry_max.as_secs(),
                    retry_base.as_millis()
                ),
            ));
        }
        Ok(Self {
            identity_grpc_url: env.local_url(&IDENTITY_GRPC_URL, server.grpc_addr, "")?,
            directory_timeout: millis(&DIRECTORY_TIMEOUT_MS, 500, 10, 60_000)?,
            directory_cache_ttl: seconds(&DIRECTORY_CACHE_SECONDS, 60, 0, 86_400)?,
            smtp_url: pulse_kit::email::smtp_url(env, &SMTP_URL)?,
            email_from: pulse_kit::email::email_from(
                env,
                &EMAIL_FROM,
                "Pulse <no-reply@pulse.invalid>",
            )?,
            sms: SmsSettings::read(env, &SMS_VARS, server.development_mode)?,
            provider_timeout: millis(&PROVIDER_TIMEOUT_MS, 5_000, 10, 120_000)?,
            max_attempts: env.number(&MAX_ATTEMPTS, 8, 1, 100)?,
            retry_base,
            retry_max,
            breaker: BreakerConfig {
                failure_threshold: env.number(&BREAKER_FAILURES, 5, 1, 1_000)?,
                open_for: seconds(&BREAKER_OPEN_SECONDS, 30, 1, 3_600)?,
                half_open_trials: 1,
            },
            poll_interval: millis(&POLL_MS, 1_000, 10, 60_000)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> ServerSettings {
        ServerSettings::read(&Env::from_map([
            ("PULSE_DATABASE_URL", "postgres://localhost/pulse"),
            ("PULSE_REDIS_URL", "redis://localhost"),
            ("PULSE_KAFKA_BROKERS", "localhost:9092"),
            ("PULSE_JWT_SECRET", "a-secret-of-at-least-32-characters!!"),
            ("PULSE_GRPC_ADDR", "127.0.0.1:50051"),
        ]))
        .expect("server settings")
    }

    #[test]
    fn defaults_need_no_variable() {
        let settings =
            NotifierSettings::read(&Env::from_map::<&str, &str>([]), &server()).expect("defaults");
        assert_eq!(settings.identity_grpc_url, "http://127.0.0.1:50051");
        assert!(settings.smtp_url.is_none());
        assert!(settings.sms.is_none());
        assert_eq!(settings.breaker.failure_threshold, 5);
        assert_eq!(settings.max_attempts, 8);
    }

    #[test]
    fn a_bad_sender_names_its_variable() {
        let env = Env::from_map([(EMAIL_FROM.var, "not an address")]);
        let err = NotifierSettings::read(&env, &server()).expect_err("refused");
        assert_eq!(err.var, EMAIL_FROM.var);
    }
}
