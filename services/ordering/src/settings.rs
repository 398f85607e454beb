//! Ordering's process settings, read from the environment (`PULSE_…`), with typed parsing and
//! errors that name the variable.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `PULSE_MARKETING_GRPC_URL` | `http://127.0.0.1:<port of PULSE_GRPC_ADDR>` (this process) | marketing's gRPC endpoint (`http://marketing.pulse-fr.svc:50051` in a cluster) |
//! | `PULSE_MARKETING_GRPC_TIMEOUT_MS` | `800` | deadline of one call to marketing |
//! | `PULSE_MARKETING_GRPC_RETRIES` | `2` | retries of a call that failed for a transient reason |
//! | `PULSE_MARKETING_BREAKER_FAILURES` | `5` | failed calls in a row that open the circuit breaker |
//! | `PULSE_MARKETING_BREAKER_OPEN_SECONDS` | `5` | how long an open breaker answers 503 before a trial call |
//! | `PULSE_PAYMENT_PROVIDER` | `sandbox` | `sandbox` (local runs: pays by itself) or `stripe` |
//! | `PULSE_PAYMENT_WEBHOOK_SECRET` | random (sandbox) / required (stripe) | webhook signing secret(s), comma-separated to accept several during a rotation |
//! | `PULSE_STRIPE_API_KEY` | required for `stripe` | secret API key |
//! | `PULSE_STRIPE_BASE_URL` | `https://api.stripe.com` | API base URL (a compatible service) |
//! | `PULSE_PAYMENT_RETURN_URL` | `http://127.0.0.1:8080/v1/orders/{ORDER_ID}` | where the buyer lands after the checkout |
//! | `PULSE_PAYMENT_SANDBOX_WEBHOOK_URL` | `http://127.0.0.1:<port of PULSE_HTTP_ADDR>/v1/payments/webhook` | where the sandbox sends its webhooks |
//! | `PULSE_PAYMENT_SANDBOX_DELAY_MS` | `1000` | how long the sandbox "takes" to pay |
//! | `PULSE_ORDERING_PRODUCT_PERMITS` | `16` | buyers of one product allowed to reach PostgreSQL at once |
//! | `PULSE_ORDERING_PERMIT_WAIT_MS` | `2000` | how long a buyer waits for a permit before a 503 |
//! | `PULSE_ORDERING_PERMIT_TTL_SECONDS` | `10` | expiry of a product's permit counter (fuse against crashed holders) |
//! | `PULSE_ORDERING_RESERVATION_CLAIM_IDLE_MS` | `30000` | a reservation unacknowledged this long is claimed by another consumer |
//! | `PULSE_ORDERING_RESERVATION_MAX_DELIVERIES` | `5` | deliveries after which a failing reservation goes to the dead-letter stream |
//! | `PULSE_ORDERING_SWEEP_INTERVAL_MS` | `1000` | how often unpaid orders past their deadline are looked for |

use std::net::SocketAddr;
use std::time::Duration;

use pulse_kit::breaker::BreakerConfig;

/// A variable that does not hold a usable value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {message}")]
pub struct SettingsError {
    /// The variable.
    pub var: &'static str,
    /// What is wrong and what to put instead.
    pub message: String,
}

/// Which payment provider, and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentSettings {
    /// Pays every checkout by itself and sends signed webhooks (local runs).
    Sandbox {
        /// Where webhooks go.
        webhook_url: String,
        /// How long paying takes.
        delay: Duration,
    },
    /// A Stripe-compatible API.
    Stripe {
        /// API base URL.
        base_url: String,
        /// Secret API key.
        api_key: String,
        /// Where the buyer lands afterwards (`{ORDER_ID}` is replaced).
        return_url: String,
    },
}

/// How the seckill reservation consumer behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReservationSettings {
    /// An entry unacknowledged this long is claimed again.
    pub claim_idle: Duration,
    /// Deliveries after which a failing entry is dead-lettered.
    pub max_deliveries: u32,
    /// Entries read per call.
    pub batch: usize,
    /// Pause when every stream was empty.
    pub idle_poll: Duration,
}

impl Default for ReservationSettings {
    fn default() -> Self {
        Self {
            claim_idle: Duration::from_secs(30),
            max_deliveries: 5,
            batch: 100,
            idle_poll: Duration::from_millis(50),
        }
    }
}

/// Everything ordering reads from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderingSettings {
    /// Marketing's gRPC endpoint.
    pub marketing_grpc_url: String,
    /// Deadline of one call to marketing.
    pub marketing_timeout: Duration,
    /// Retries of a transiently failed call.
    pub marketing_retries: u32,
    /// Circuit breaker in front of marketing.
    pub marketing_breaker: BreakerConfig,
    /// Payment provider.
    pub payment: PaymentSettings,
    /// Webhook signing secrets (any may sign).
    pub webhook_secrets: Vec<Vec<u8>>,
    /// Concurrent buyers of one product allowed at the database.
    pub product_permits: u32,
    /// How long a buyer waits for a permit.
    pub permit_wait: Duration,
    /// Expiry of a permit counter.
    pub permit_ttl: Duration,
    /// Reservation consumer.
    pub reservations: ReservationSettings,
    /// Sweeper interval.
    pub sweep_interval: Duration,
}

impl Default for OrderingSettings {
    /// Local defaults: marketing on the same process's gRPC port, sandbox payments with a random
    /// secret.
    fn default() -> Self {
        Self {
            marketing_grpc_url: "http://127.0.0.1:50051".into(),
            marketing_timeout: Duration::from_millis(800),
            marketing_retries: 2,
            marketing_breaker: BreakerConfig::default(),
            payment: PaymentSettings::Sandbox {
                webhook_url: "http://127.0.0.1:8080/v1/payments/webhook".into(),
                delay: Duration::from_secs(1),
            },
            webhook_secrets: vec![random_secret()],
            product_permits: 16,
            permit_wait: Duration::from_secs(2),
            permit_ttl: Duration::from_secs(10),
            reservations: ReservationSettings::default(),
            sweep_interval: Duration::from_secs(1),
        }
    }
}

fn random_secret() -> Vec<u8> {
    format!(
        "whsec_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
    .into_bytes()
}

/// Reads variables through `get` (the environment, or a map in tests).
struct Vars<F: Fn(&str) -> Option<String>>(F);

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    fn text(&self, var: &'static str) -> Option<String> {
        (self.0)(var)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn number<T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy>(
        &self,
        var: &'static str,
        default: T,
        min: T,
        max: T,
    ) -> Result<T, SettingsError> {
        let Some(text) = self.text(var) else {
            return Ok(default);
        };
        match text.parse::<T>() {
            Ok(n) if n >= min && n <= max => Ok(n),
            _ => Err(SettingsError {
                var,
                message: format!("`{text}` must be a whole number from {min} to {max}"),
            }),
        }
    }

    fn url(&self, var: &'static str, default: String) -> Result<String, SettingsError> {
        let url = self.text(var).unwrap_or(default);
        if (url.starts_with("http://") || url.starts_with("https://"))
            && url.len() > "https://".len()
        {
            Ok(url)
        } else {
            Err(SettingsError {
                var,
                message: format!("`{url}` must be an http:// or https:// URL"),
            })
        }
    }
}

impl OrderingSettings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads variables through `get`.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let vars = Vars(get);
        let defaults = Self::default();
        let provider = vars
            .text("PULSE_PAYMENT_PROVIDER")
            .unwrap_or_else(|| "sandbox".into())
            .to_ascii_lowercase();
        let secrets: Vec<Vec<u8>> = vars
            .text("PULSE_PAYMENT_WEBHOOK_SECRET")
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| s.as_bytes().to_vec())
                    .collect()
            })
            .unwrap_or_default();
        if secrets.iter().any(|s| s.len() < 16) {
            return Err(SettingsError {
                var: "PULSE_PAYMENT_WEBHOOK_SECRET",
                message: "each secret must be at least 16 characters".into(),
            });
        }
        let port_of = |var: &'static str, default: u16| {
            vars.text(var)
                .and_then(|a| a.parse::<SocketAddr>().ok())
                .map_or(default, |a| a.port())
        };
        let (payment, webhook_secrets) = match provider.as_str() {
            "sandbox" => {
                let port = port_of("PULSE_HTTP_ADDR", 8080);
                let payment = PaymentSettings::Sandbox {
                    webhook_url: vars.url(
                        "PULSE_PAYMENT_SANDBOX_WEBHOOK_URL",
                        format!("http://127.0.0.1:{port}/v1/payments/webhook"),
                    )?,
                    delay: Duration::from_millis(vars.number(
                        "PULSE_PAYMENT_SANDBOX_DELAY_MS",
                        1000,
                        0,
                        600_000,
                    )?),
                };
                let secrets = if secrets.is_empty() {
                    defaults.webhook_secrets.clone()
                } else {
                    secrets
                };
                (payment, secrets)
            }
            "stripe" => {
                let api_key = vars.text("PULSE_STRIPE_API_KEY").ok_or(SettingsError {
                    var: "PULSE_STRIPE_API_KEY",
                    message: "required when PULSE_PAYMENT_PROVIDER=stripe (the secret key, sk_…)"
                        .into(),
                })?;
                if secrets.is_empty() {
                    return Err(SettingsError {
                        var: "PULSE_PAYMENT_WEBHOOK_SECRET",
                        message: "required when PULSE_PAYMENT_PROVIDER=stripe (the endpoint's signing secret, whsec_…)".into(),
                    });
                }
                let payment = PaymentSettings::Stripe {
                    base_url: vars.url("PULSE_STRIPE_BASE_URL", "https://api.stripe.com".into())?,
                    api_key,
                    return_url: vars.url(
                        "PULSE_PAYMENT_RETURN_URL",
                        "http://127.0.0.1:8080/v1/orders/{ORDER_ID}".into(),
                    )?,
                };
                (payment, secrets)
            }
            other => {
                return Err(SettingsError {
                    var: "PULSE_PAYMENT_PROVIDER",
                    message: format!("unknown provider `{other}`: use `sandbox` or `stripe`"),
                });
            }
        };
        Ok(Self {
            // `--target all`: marketing answers on this process's own gRPC port.
            marketing_grpc_url: vars.url(
                "PULSE_MARKETING_GRPC_URL",
                format!("http://127.0.0.1:{}", port_of("PULSE_GRPC_ADDR", 50051)),
            )?,
            marketing_timeout: Duration::from_millis(vars.number(
                "PULSE_MARKETING_GRPC_TIMEOUT_MS",
                800,
                10,
                60_000,
            )?),
            marketing_retries: vars.number("PULSE_MARKETING_GRPC_RETRIES", 2, 0, 10)?,
            marketing_breaker: BreakerConfig {
                failure_threshold: vars.number("PULSE_MARKETING_BREAKER_FAILURES", 5, 1, 1000)?,
                open_for: Duration::from_secs(vars.number(
                    "PULSE_MARKETING_BREAKER_OPEN_SECONDS",
                    5,
                    1,
                    3600,
                )?),
                half_open_trials: 1,
            },
            payment,
            webhook_secrets,
            product_permits: vars.number("PULSE_ORDERING_PRODUCT_PERMITS", 16, 1, 10_000)?,
            permit_wait: Duration::from_millis(vars.number(
                "PULSE_ORDERING_PERMIT_WAIT_MS",
                2000,
                0,
                60_000,
            )?),
            permit_ttl: Duration::from_secs(vars.number(
                "PULSE_ORDERING_PERMIT_TTL_SECONDS",
                10,
                1,
                3600,
            )?),
            reservations: ReservationSettings {
                claim_idle: Duration::from_millis(vars.number(
                    "PULSE_ORDERING_RESERVATION_CLAIM_IDLE_MS",
                    30_000,
                    100,
                    3_600_000,
                )?),
                max_deliveries: vars.number(
                    "PULSE_ORDERING_RESERVATION_MAX_DELIVERIES",
                    5,
                    1,
                    1000,
                )?,
                ..ReservationSettings::default()
            },
            sweep_interval: Duration::from_millis(vars.number(
                "PULSE_ORDERING_SWEEP_INTERVAL_MS",
                1000,
                50,
                600_000,
            )?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(vars: &[(&str, &str)]) -> Result<OrderingSettings, SettingsError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        OrderingSettings::from_vars(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_are_a_local_sandbox() {
        let settings = read(&[
            ("PULSE_HTTP_ADDR", "0.0.0.0:8181"),
            ("PULSE_GRPC_ADDR", "0.0.0.0:50052"),
        ])
        .expect("defaults");
        assert_eq!(settings.marketing_grpc_url, "http://127.0.0.1:50052");
        assert_eq!(
            read(&[]).expect("defaults").marketing_grpc_url,
            "http://127.0.0.1:50051"
        );
        assert_eq!(
            settings.payment,
            PaymentSettings::Sandbox {
                webhook_url: "http://127.0.0.1:8181/v1/payments/webhook".into(),
                delay: Duration::from_secs(1),
            }
        );
        assert_eq!(settings.webhook_secrets.len(), 1);
        assert_eq!(settings.product_permits, 16);
    }

    #[test]
    fn stripe_needs_its_key_and_secret() {
        let err = read(&[("PULSE_PAYMENT_PROVIDER", "stripe")]).expect_err("no key");
        assert_eq!(err.var, "PULSE_STRIPE_API_KEY");
        let err = read(&[
            ("PULSE_PAYMENT_PROVIDER", "stripe"),
            ("PULSE_STRIPE_API_KEY", "sk_test_1"),
        ])
        .expect_err("no secret");
        assert_eq!(err.var, "PULSE_PAYMENT_WEBHOOK_SECRET");
        let settings = read(&[
            ("PULSE_PAYMENT_PROVIDER", "Stripe"),
            ("PULSE_STRIPE_API_KEY", "sk_test_1"),
            (
                "PULSE_PAYMENT_WEBHOOK_SECRET",
                "whsec_old_0123456789, whsec_new_0123456789",
            ),
            ("PULSE_STRIPE_BASE_URL", "http://127.0.0.1:12111"),
        ])
        .expect("stripe");
        assert_eq!(settings.webhook_secrets.len(), 2);
        assert!(
            matches!(settings.payment, PaymentSettings::Stripe { ref base_url, .. } if base_url == "http://127.0.0.1:12111")
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("PULSE_PAYMENT_PROVIDER", "paypal"),
            ("PULSE_MARKETING_GRPC_URL", "marketing:50051"),
            ("PULSE_MARKETING_GRPC_TIMEOUT_MS", "fast"),
            ("PULSE_MARKETING_GRPC_RETRIES", "-1"),
            ("PULSE_ORDERING_PRODUCT_PERMITS", "0"),
            ("PULSE_PAYMENT_WEBHOOK_SECRET", "short"),
            ("PULSE_ORDERING_RESERVATION_MAX_DELIVERIES", "0"),
        ] {
            let err = read(&[(var, value)]).expect_err(var);
            assert_eq!(err.var, var, "{err}");
            assert!(err.to_string().starts_with(var), "{err}");
        }
    }
}
