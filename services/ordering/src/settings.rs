//! Ordering's process settings, read once at start-up through the kit's [`Env`] from the
//! variables defined in [`pulse_kit::settings::ordering`] (their meaning and defaults are
//! documented there). A variable that holds no usable value is an error that names it; nothing
//! falls back silently. Defaults that point at this process (marketing on `--target all`, the
//! sandbox's webhook, Stripe's return URL) use the ports of the server's own listeners.
//!
//! The sandbox payment provider lets anyone pay any order with no real money (on its checkout
//! page, or by itself after `PULSE_PAYMENT_SANDBOX_DELAY_MS`), so it is accepted only when the
//! server runs in development mode (`PULSE_DEVELOPMENT_MODE=true`).

use std::time::Duration;

use pulse_kit::breaker::BreakerConfig;
use pulse_kit::server::ServerSettings;
use pulse_kit::settings::ordering as vars;
use pulse_kit::settings::{Env, Secret, Setting, SettingError, server as server_vars};

/// Which payment provider, and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentSettings {
    /// A stand-in for a real provider that moves no money (development mode only): the buyer
    /// pays or cancels on its checkout page ([`crate::payments::sandbox`]), which sends the
    /// provider's signed webhooks.
    Sandbox {
        /// Where webhooks go.
        webhook_url: String,
        /// Where the buyer lands after the checkout page (`{ORDER_ID}` is replaced): an absolute
        /// URL or a path on the API's origin.
        return_url: String,
        /// Set: every checkout is also paid by itself this long after it starts (tests and
        /// benches that need paid orders without a buyer).
        auto_pay_after: Option<Duration>,
    },
    /// A Stripe-compatible API.
    Stripe {
        /// API base URL.
        base_url: String,
        /// Secret API key.
        api_key: Secret,
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

/// Everything ordering reads from the environment. `Debug` shows no secret.
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
    /// Webhook signing secrets (any may sign; the sandbox signs with the first).
    pub webhook_secrets: Vec<Secret>,
    /// Concurrent buyers of one product allowed at the database.
    pub product_permits: u32,
    /// How long a buyer waits for a permit.
    pub permit_wait: Duration,
    /// How long a permit lasts unless released: each holder's own expiry, which frees the
    /// permits of a process that died holding them.
    pub permit_ttl: Duration,
    /// Reservation consumer.
    pub reservations: ReservationSettings,
    /// Sweeper interval.
    pub sweep_interval: Duration,
}

/// Shortest webhook secret accepted.
const MIN_SECRET_CHARS: usize = 16;

fn millis(
    env: &Env,
    setting: &Setting,
    default: u64,
    min: u64,
    max: u64,
) -> Result<Duration, SettingError> {
    env.number(setting, default, min, max)
        .map(Duration::from_millis)
}

fn webhook_secrets(env: &Env) -> Result<Vec<Secret>, SettingError> {
    let Some(raw) = env.secret(&vars::PAYMENT_WEBHOOK_SECRET) else {
        return Ok(Vec::new());
    };
    let secrets: Vec<Secret> = raw
        .expose()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Secret::new)
        .collect();
    if secrets
        .iter()
        .any(|s| s.expose().chars().count() < MIN_SECRET_CHARS)
    {
        return Err(SettingError::new(
            &vars::PAYMENT_WEBHOOK_SECRET,
            format!("each secret must be at least {MIN_SECRET_CHARS} characters"),
        ));
    }
    Ok(secrets)
}

fn random_secret() -> Secret {
    Secret::new(format!(
        "whsec_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    ))
}

/// Where the sandbox's checkout page sends the buyer by default: the web app's order page, on
/// the origin that serves the API (the country's Ingress, or `./dev up`'s listener).
pub const SANDBOX_RETURN_URL: &str = "/#/orders/{ORDER_ID}";

/// A URL the browser is sent to: an absolute `http(s)` URL, or a path on this origin (one `/`
/// first: `//host` would be another origin), or `default` (such a path) when unset.
fn same_origin_or_url(env: &Env, setting: &Setting, default: &str) -> Result<String, SettingError> {
    match env.text(setting) {
        Some(path) if path.starts_with('/') => {
            if path.starts_with("//")
                || path.contains(|c: char| c.is_whitespace() || c.is_control() || c == '\\')
            {
                Err(SettingError::new(
                    setting,
                    format!(
                        "`{path}` is not a path like /#/orders/{{ORDER_ID}} (no `//` first, no spaces or backslashes) nor an http(s) URL"
                    ),
                ))
            } else {
                Ok(path)
            }
        }
        Some(_) => env.url(setting, default),
        None => Ok(default.to_owned()),
    }
}

/// The payment provider and the webhook secrets it goes with.
fn payment(
    env: &Env,
    server: &ServerSettings,
) -> Result<(PaymentSettings, Vec<Secret>), SettingError> {
    let provider = env
        .text(&vars::PAYMENT_PROVIDER)
        .map(|p| p.to_ascii_lowercase());
    let secrets = webhook_secrets(env)?;
    match provider.as_deref() {
        Some("sandbox") | None if server.development_mode => {
            let auto_pay_after = match env.text(&vars::PAYMENT_SANDBOX_DELAY_MS) {
                Some(_) => Some(millis(env, &vars::PAYMENT_SANDBOX_DELAY_MS, 0, 0, 600_000)?),
                None => None,
            };
            let payment = PaymentSettings::Sandbox {
                webhook_url: env.local_url(
                    &vars::PAYMENT_SANDBOX_WEBHOOK_URL,
                    server.http_addr,
                    "/v1/payments/webhook",
                )?,
                return_url: same_origin_or_url(env, &vars::PAYMENT_RETURN_URL, SANDBOX_RETURN_URL)?,
                auto_pay_after,
            };
            let secrets = if secrets.is_empty() {
                vec![random_secret()]
            } else {
                secrets
            };
            Ok((payment, secrets))
        }
        Some("sandbox") => Err(SettingError::new(
            &vars::PAYMENT_PROVIDER,
            format!(
                "`sandbox` lets anyone pay any order with no real money, so it runs only in development mode: set {}=true for local runs only, or use `stripe`",
                server_vars::DEVELOPMENT_MODE.var
            ),
        )),
        None => Err(SettingError::new(
            &vars::PAYMENT_PROVIDER,
            format!(
                "required: `stripe` (or `sandbox` with {}=true, for local runs only)",
                server_vars::DEVELOPMENT_MODE.var
            ),
        )),
        Some("stripe") => {
            let api_key = env.secret(&vars::STRIPE_API_KEY).ok_or_else(|| {
                SettingError::new(
                    &vars::STRIPE_API_KEY,
                    "required when PULSE_PAYMENT_PROVIDER=stripe (the secret key, sk_…)",
                )
            })?;
            if secrets.is_empty() {
                return Err(SettingError::new(
                    &vars::PAYMENT_WEBHOOK_SECRET,
                    "required when PULSE_PAYMENT_PROVIDER=stripe (the endpoint's signing secret, whsec_…)",
                ));
            }
            let payment = PaymentSettings::Stripe {
                base_url: env.url(&vars::STRIPE_BASE_URL, "https://api.stripe.com")?,
                api_key,
                return_url: env.local_url(
                    &vars::PAYMENT_RETURN_URL,
                    server.http_addr,
                    "/v1/orders/{ORDER_ID}",
                )?,
            };
            Ok((payment, secrets))
        }
        Some(other) => Err(SettingError::new(
            &vars::PAYMENT_PROVIDER,
            format!("unknown provider `{other}`: use `stripe`, or `sandbox` in development mode"),
        )),
    }
}

impl OrderingSettings {
    /// Reads ordering's settings from `env`; defaults that point at this process come from the
    /// listeners of `server`, and `server.development_mode` decides whether the sandbox may run.
    pub fn read(env: &Env, server: &ServerSettings) -> Result<Self, SettingError> {
        let (payment, webhook_secrets) = payment(env, server)?;
        Ok(Self {
            // `--target all`: marketing answers on this process's own gRPC port.
            marketing_grpc_url: env.local_url(&vars::MARKETING_GRPC_URL, server.grpc_addr, "")?,
            marketing_timeout: millis(env, &vars::MARKETING_GRPC_TIMEOUT_MS, 800, 10, 60_000)?,
            marketing_retries: env.number(&vars::MARKETING_GRPC_RETRIES, 2, 0, 10)?,
            marketing_breaker: BreakerConfig {
                failure_threshold: env.number(&vars::MARKETING_BREAKER_FAILURES, 5, 1, 1000)?,
                open_for: Duration::from_secs(env.number(
                    &vars::MARKETING_BREAKER_OPEN_SECONDS,
                    5,
                    1,
                    3600,
                )?),
                half_open_trials: 1,
            },
            payment,
            webhook_secrets,
            product_permits: env.number(&vars::PRODUCT_PERMITS, 16, 1, 10_000)?,
            permit_wait: millis(env, &vars::PERMIT_WAIT_MS, 2000, 0, 60_000)?,
            permit_ttl: Duration::from_secs(env.number(&vars::PERMIT_TTL_SECONDS, 10, 1, 3600)?),
            reservations: ReservationSettings {
                claim_idle: millis(
                    env,
                    &vars::RESERVATION_CLAIM_IDLE_MS,
                    30_000,
                    100,
                    3_600_000,
                )?,
                max_deliveries: env.number(&vars::RESERVATION_MAX_DELIVERIES, 5, 1, 1000)?,
                ..ReservationSettings::default()
            },
            sweep_interval: millis(env, &vars::SWEEP_INTERVAL_MS, 1000, 50, 600_000)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(development_mode: bool) -> ServerSettings {
        ServerSettings {
            http_addr: ([0, 0, 0, 0], 8080).into(),
            grpc_addr: ([0, 0, 0, 0], 50051).into(),
            development_mode,
            ..pulse_kit::testing::server_settings("postgres://unused", "redis://unused")
        }
    }

    fn read_in(
        server: &ServerSettings,
        vars: &[(&str, &str)],
    ) -> Result<OrderingSettings, SettingError> {
        OrderingSettings::read(&Env::from_map(vars.iter().copied()), server)
    }

    /// Reads `vars` for a server in development mode on the default ports.
    fn read(vars: &[(&str, &str)]) -> Result<OrderingSettings, SettingError> {
        read_in(&server(true), vars)
    }

    #[test]
    fn defaults_are_a_local_sandbox() {
        let ports = ServerSettings {
            http_addr: ([0, 0, 0, 0], 8181).into(),
            grpc_addr: ([0, 0, 0, 0], 50052).into(),
            ..server(true)
        };
        let settings = read_in(&ports, &[]).expect("defaults");
        assert_eq!(settings.marketing_grpc_url, "http://127.0.0.1:50052");
        assert_eq!(
            read(&[]).expect("defaults").marketing_grpc_url,
            "http://127.0.0.1:50051"
        );
        // The buyer pays on the checkout page, and comes back to the web app's order page.
        assert_eq!(
            settings.payment,
            PaymentSettings::Sandbox {
                webhook_url: "http://127.0.0.1:8181/v1/payments/webhook".into(),
                return_url: "/#/orders/{ORDER_ID}".into(),
                auto_pay_after: None,
            }
        );
        assert_eq!(settings.webhook_secrets.len(), 1);
        assert_eq!(settings.product_permits, 16);
    }

    #[test]
    fn the_sandbox_pays_by_itself_only_when_told_how_fast_and_returns_where_told() {
        let sandbox = |vars: &[(&str, &str)]| match read(vars).map(|s| s.payment) {
            Ok(PaymentSettings::Sandbox {
                return_url,
                auto_pay_after,
                ..
            }) => Ok((return_url, auto_pay_after)),
            Ok(other) => panic!("not the sandbox: {other:?}"),
            Err(err) => Err(err),
        };
        assert_eq!(
            sandbox(&[("PULSE_PAYMENT_SANDBOX_DELAY_MS", "250")]).expect("delay"),
            (
                "/#/orders/{ORDER_ID}".into(),
                Some(Duration::from_millis(250))
            )
        );
        assert_eq!(
            sandbox(&[("PULSE_PAYMENT_SANDBOX_DELAY_MS", "0")])
                .expect("at once")
                .1,
            Some(Duration::ZERO)
        );
        for url in [
            "/shop/orders/{ORDER_ID}",
            "https://fr.pulse.example/#/orders/{ORDER_ID}",
            "http://127.0.0.1:5173/#/orders/{ORDER_ID}",
        ] {
            assert_eq!(
                sandbox(&[("PULSE_PAYMENT_RETURN_URL", url)]).expect(url).0,
                url
            );
        }
        for bad in [
            "//evil.example/orders",
            "javascript:alert(1)",
            "orders/{ORDER_ID}",
            "/orders /{ORDER_ID}",
            "/\\evil.example",
        ] {
            let err = sandbox(&[("PULSE_PAYMENT_RETURN_URL", bad)]).expect_err(bad);
            assert_eq!(err.var, "PULSE_PAYMENT_RETURN_URL", "{bad}");
        }
        let err = sandbox(&[("PULSE_PAYMENT_SANDBOX_DELAY_MS", "soon")]).expect_err("not a number");
        assert_eq!(err.var, "PULSE_PAYMENT_SANDBOX_DELAY_MS");
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
            ("PULSE_PAYMENT_PROVIDER", "nonsense"),
            ("PULSE_MARKETING_GRPC_URL", "marketing:50051"),
            ("PULSE_MARKETING_GRPC_URL", "http://"),
            ("PULSE_MARKETING_GRPC_URL", "http://host:port"),
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

    #[test]
    fn the_sandbox_runs_only_in_development_mode() {
        let production = server(false);
        let err = read_in(&production, &[("PULSE_PAYMENT_PROVIDER", "sandbox")])
            .expect_err("sandbox outside development mode");
        assert_eq!(err.var, "PULSE_PAYMENT_PROVIDER");
        assert!(
            err.to_string().starts_with("PULSE_PAYMENT_PROVIDER"),
            "{err}"
        );
        assert!(err.message.contains("PULSE_DEVELOPMENT_MODE=true"), "{err}");
        let err = read_in(&production, &[]).expect_err("no provider in production");
        assert_eq!(err.var, "PULSE_PAYMENT_PROVIDER");
        assert!(err.message.starts_with("required"), "{err}");
        let err = read_in(&production, &[("PULSE_PAYMENT_PROVIDER", "nonsense")])
            .expect_err("unknown provider");
        assert_eq!(err.var, "PULSE_PAYMENT_PROVIDER");
        let stripe = read_in(
            &production,
            &[
                ("PULSE_PAYMENT_PROVIDER", "stripe"),
                ("PULSE_STRIPE_API_KEY", "sk_live_1"),
                ("PULSE_PAYMENT_WEBHOOK_SECRET", "whsec_0123456789abcdef"),
            ],
        )
        .expect("stripe in production");
        assert!(matches!(stripe.payment, PaymentSettings::Stripe { .. }));
    }

    #[test]
    fn a_default_pointing_at_a_port_chosen_at_start_up_must_be_set() {
        let any_port = ServerSettings {
            grpc_addr: ([127, 0, 0, 1], 0).into(),
            ..server(true)
        };
        let err = read_in(&any_port, &[]).expect_err("port 0");
        assert_eq!(err.var, "PULSE_MARKETING_GRPC_URL");
        let settings = read_in(
            &any_port,
            &[(
                "PULSE_MARKETING_GRPC_URL",
                "http://marketing.pulse-fr.svc:50051",
            )],
        )
        .expect("set explicitly");
        assert_eq!(
            settings.marketing_grpc_url,
            "http://marketing.pulse-fr.svc:50051"
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let settings = read(&[
            ("PULSE_PAYMENT_PROVIDER", "stripe"),
            ("PULSE_STRIPE_API_KEY", "sk_live_do_not_print_me"),
            (
                "PULSE_PAYMENT_WEBHOOK_SECRET",
                "whsec_first_do_not_print,whsec_second_do_not_print",
            ),
        ])
        .expect("stripe");
        let shown = format!("{settings:?}");
        for secret in [
            "sk_live_do_not_print_me",
            "whsec_first_do_not_print",
            "whsec_second_do_not_print",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("redacted"), "{shown}");
        let sandbox = read(&[("PULSE_PAYMENT_WEBHOOK_SECRET", "whsec_sandbox_do_not_print")])
            .expect("sandbox");
        assert!(!format!("{sandbox:?}").contains("whsec_sandbox_do_not_print"));
    }
}
