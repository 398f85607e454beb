//! The one Pulse service binary, as a library: the component list and the command line.
//!
//! `pulse serve --target booking,ordering|all` runs the chosen components in one process (the
//! Grafana Mimir pattern): locally everything runs together, in Kubernetes each Deployment runs
//! one target. The same code path serves both.

pub mod keys;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use pulse_kit::component::Component;
use pulse_kit::config::CountryConfig;
use pulse_kit::server::{JwtSettings, ServerSettings};
use pulse_kit::settings::{Env, Setting, SettingError, server as vars};
use sqlx::migrate::Migrator;

/// Makes a component from the process's settings (its own are read from the `Env`).
pub type LoadComponent = fn(&Env, &ServerSettings) -> Result<Arc<dyn Component>, SettingError>;

/// A `--target`: a component's name and how to make it from the process's settings.
pub struct Target {
    /// The `--target` value (the component's name).
    pub name: &'static str,
    /// One line for `pulse --help`.
    pub description: &'static str,
    /// Makes the component; its own settings are read here, so a bad one stops start-up.
    pub load: LoadComponent,
    /// The settings the component reads besides the server's.
    pub settings: &'static [&'static Setting],
    /// The component's migrations (`pulse migrate` needs no settings but the database).
    pub migrations: &'static Migrator,
    /// Whether the component keeps state in PostgreSQL; `pulse migrate` gives the others no
    /// schema (see [`Component::uses_database`]).
    pub database: bool,
}

/// Every target, in start-up order. Adding a component means adding it here.
pub const TARGETS: &[Target] = &[
    Target {
        name: "identity",
        description: "Identity: users, one-time passwords and the signing keys of access tokens.",
        load: |env, server| Ok(Arc::new(pulse_identity::Identity::read(env, server)?)),
        settings: pulse_identity::settings::ALL,
        migrations: &pulse_identity::MIGRATIONS,
        database: true,
    },
    Target {
        name: "booking",
        description: "Booking: practitioners, schedules, slots and appointments (the Doctolib flow).",
        load: |_, _| Ok(Arc::new(pulse_booking::Booking)),
        settings: &[],
        migrations: &pulse_booking::MIGRATIONS,
        database: true,
    },
    Target {
        name: "marketing",
        description: "Marketing: seckill campaigns, vouchers and wallets.",
        load: |_, _| Ok(Arc::new(pulse_marketing::Marketing)),
        settings: &[],
        migrations: &pulse_marketing::MIGRATIONS,
        database: true,
    },
    Target {
        name: "ordering",
        description: "Ordering: products, stock, orders and payments.",
        load: |env, server| Ok(Arc::new(pulse_ordering::Ordering::read(env, server)?)),
        settings: pulse_kit::settings::ordering::ALL,
        migrations: &pulse_ordering::MIGRATIONS,
        database: true,
    },
    Target {
        name: "notifier",
        description: "Notifier: notifications and reminders sent for every event.",
        load: |env, server| Ok(Arc::new(pulse_notifier::Notifier::read(env, server)?)),
        settings: pulse_kit::settings::notifier::ALL,
        migrations: &pulse_notifier::MIGRATIONS,
        database: true,
    },
    Target {
        name: "web",
        description: "Web: the patient and buyer web app (embedded files, served at /).",
        load: |env, server| Ok(Arc::new(pulse_web::Web::read(env, server)?)),
        settings: &[],
        migrations: &pulse_web::MIGRATIONS,
        database: false,
    },
];

/// The targets named by a `--target` list (`all`, or comma-separated names).
pub fn select_targets(spec: &str) -> anyhow::Result<Vec<&'static Target>> {
    let names: Vec<&str> = spec
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if names.is_empty() {
        bail!(
            "--target is empty: name components or use `all` (known: {})",
            known()
        );
    }
    if names.contains(&"all") {
        return Ok(TARGETS.iter().collect());
    }
    let mut chosen: Vec<&'static Target> = Vec::new();
    for name in names {
        let target = TARGETS
            .iter()
            .find(|t| t.name == name)
            .with_context(|| format!("unknown target `{name}` (known: all, {})", known()))?;
        if !chosen.iter().any(|t| t.name == name) {
            chosen.push(target);
        }
    }
    Ok(chosen)
}

fn known() -> String {
    TARGETS
        .iter()
        .map(|t| t.name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn targets_help() -> String {
    let mut help = String::from("Targets (for --target; `all` runs every one):\n");
    for target in TARGETS {
        help.push_str(&format!("  {:<10} {}\n", target.name, target.description));
    }
    help.push_str("\nSettings (environment variables; `pulse serve` reads them once at start):\n");
    let mut all: Vec<&Setting> = vars::ALL.to_vec();
    for target in TARGETS {
        all.extend(target.settings.iter().copied());
    }
    for setting in all {
        help.push_str(&format!("  {:<42} {}\n", setting.var, setting.help));
    }
    help.push_str("  PULSE_COUNTRY__<FIELD>                     country configuration fields (PULSE_COUNTRY__BOOKING__HORIZON_DAYS=60)\n");
    help
}

/// Pulse: appointment booking and ordering, one country per deployment.
#[derive(Debug, Parser)]
#[command(name = "pulse", version, about, after_help = targets_help())]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands. Settings come from the environment (see `pulse --help`).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run components: HTTP, gRPC and admin listeners, outbox relays, consumers, jobs.
    Serve(TargetArgs),
    /// Create the components' schemas and apply their migrations (needs PULSE_DATABASE_URL).
    Migrate(TargetArgs),
    /// Mint an access token for local use (needs PULSE_JWT_SECRET).
    Token(TokenArgs),
    /// Load the demo data set (practitioners, schedules, slots) of a country; idempotent.
    Seed(SeedArgs),
    /// Identity's token-signing keys: `pulse keys rotate` (needs identity's settings).
    Keys(keys::KeysArgs),
    /// Identity's users: `pulse users grant --user <id> --roles admin` (the first administrator).
    Users(users::UsersArgs),
}

/// Which components.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Components: `all` or a comma-separated list (default: PULSE_TARGET, else `all`).
    #[arg(long)]
    pub target: Option<String>,
}

/// `pulse seed`.
#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    /// The country whose demo data to load (`FR` or `DE`); it must match the configuration.
    #[arg(long)]
    pub country: String,
}

/// `pulse token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// Subject (user id).
    #[arg(long)]
    pub subject: String,
    /// Roles, comma-separated (patient, practitioner, admin).
    #[arg(long, value_delimiter = ',', default_value = "patient")]
    pub roles: Vec<String>,
    /// Country the token is valid in (`FR`).
    #[arg(long)]
    pub country: String,
    /// Lifetime: `90s`, `30m`, `24h`, `7d`.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
}

/// Everything `pulse serve` reads, read once.
pub struct ServeSettings {
    /// Listeners, backends, tokens.
    pub server: ServerSettings,
    /// The country.
    pub country: CountryConfig,
    /// The chosen components, made from their settings.
    pub components: Vec<Arc<dyn Component>>,
    /// Apply migrations before serving.
    pub migrate: bool,
}

impl std::fmt::Debug for ServeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeSettings")
            .field("server", &self.server)
            .field("country", &self.country)
            .field(
                "components",
                &self.components.iter().map(|c| c.name()).collect::<Vec<_>>(),
            )
            .field("migrate", &self.migrate)
            .finish()
    }
}

impl ServeSettings {
    /// Reads the settings of `pulse serve --target <target>` from `env`; `target` defaults to
    /// `PULSE_TARGET`, else `all`.
    pub fn read(env: &Env, target: Option<&str>) -> anyhow::Result<Self> {
        let target = target
            .map(str::to_owned)
            .or_else(|| env.text(&vars::TARGET))
            .unwrap_or_else(|| "all".to_owned());
        let targets = select_targets(&target)?;
        let server = ServerSettings::read(env)?;
        let country = CountryConfig::read(env)?;
        let migrate = env.flag(&vars::MIGRATE_ON_START, false)?;
        let components = targets
            .iter()
            .map(|t| (t.load)(env, &server))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            server,
            country,
            components,
            migrate,
        })
    }
}

/// Parses `90s`, `30m`, `24h`, `7d` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |i| text.split_at(i));
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 90s, 30m, 24h or 7d"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit in `{text}`: use s, m, h or d")),
    };
    Ok(Duration::from_secs(value.saturating_mul(seconds)))
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let env = Env::process();
    match cli.command {
        Command::Serve(args) => serve(&env, args.target.as_deref()).await,
        Command::Migrate(args) => {
            let target = args
                .target
                .or_else(|| env.text(&vars::TARGET))
                .unwrap_or_else(|| "all".to_owned());
            migrate(&env.required(&vars::DATABASE_URL)?, &target).await
        }
        Command::Token(args) => {
            println!("{}", token(&args, &JwtSettings::read(&env)?)?);
            Ok(())
        }
        Command::Seed(args) => seed(&env, &args).await,
        Command::Keys(args) => keys::run(&env, &args).await,
        Command::Users(args) => users::run(&env, &args).await,
    }
}

async fn seed(env: &Env, args: &SeedArgs) -> anyhow::Result<()> {
    let country = CountryConfig::read(env)?;
    if !country.code.eq_ignore_ascii_case(&args.country) {
        bail!(
            "--country {} does not match the configured country {} (set PULSE_COUNTRY_FILE to that country's tenant)",
            args.country,
            country.code
        );
    }
    let database_url = env.required(&vars::DATABASE_URL)?;
    let booking = pulse_booking::Booking;
    pulse_kit::db::migrate(&database_url, booking.name(), booking.migrations()).await?;
    let brokers = env.list(&vars::KAFKA_BROKERS);
    let ctx = pulse_kit::component::ComponentContext::standalone(
        booking.name(),
        country,
        &database_url,
        &env.text(&vars::REDIS_URL)
            .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned()),
        brokers,
    )?;
    let services = pulse_booking::Services::new(&ctx);
    let created = pulse_booking::seed::seed(&services.practitioners, &ctx.country).await?;
    println!(
        "seeded {created} new practitioners for {}",
        ctx.country.code
    );
    Ok(())
}

async fn migrate(database_url: &str, target: &str) -> anyhow::Result<()> {
    for target in select_targets(target)? {
        if !target.database {
            continue;
        }
        pulse_kit::db::migrate(database_url, target.name, target.migrations)
            .await
            .with_context(|| format!("migrating `{}`", target.name))?;
        tracing::info!(component = target.name, "schema up to date");
    }
    Ok(())
}

/// Mints the HS256 token `pulse token` prints (local use: identity signs the real ones).
pub fn token(args: &TokenArgs, jwt: &JwtSettings) -> anyhow::Result<String> {
    let country = args.country.to_ascii_uppercase();
    anyhow::ensure!(
        jwt.algorithms.contains(&pulse_kit::auth::Algorithm::HS256),
        "PULSE_JWT_ALGORITHMS does not accept HS256, so no component would accept a token `pulse token` mints; sign in through identity instead"
    );
    let secret = jwt
        .secret
        .as_ref()
        .context("`pulse token` needs PULSE_JWT_SECRET (HS256)")?;
    let minter =
        pulse_kit::auth::Authenticator::hs256(secret.expose().as_bytes(), &jwt.issuer, &country)?;
    let claims =
        pulse_kit::auth::claims_for(&args.subject, &args.roles, &country, &jwt.issuer, args.ttl);
    Ok(minter.mint(&claims)?)
}

async fn serve(env: &Env, target: Option<&str>) -> anyhow::Result<()> {
    let settings = ServeSettings::read(env, target)?;
    tracing::info!(server = ?settings.server, country = %settings.country.code,
        components = ?settings.components.iter().map(|c| c.name()).collect::<Vec<_>>(),
        "settings read");
    if settings.migrate {
        for component in settings.components.iter().filter(|c| c.uses_database()) {
            pulse_kit::db::migrate(
                settings.server.database_url.expose(),
                component.name(),
                component.migrations(),
            )
            .await
            .with_context(|| format!("migrating `{}`", component.name()))?;
        }
    }
    let server =
        pulse_kit::server::start(&settings.server, settings.country, settings.components).await?;
    shutdown_signal().await;
    server.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_select_components() {
        assert_eq!(select_targets("all").expect("all").len(), 6);
        let chosen = select_targets("booking, ordering,booking").expect("list");
        let names: Vec<_> = chosen.iter().map(|t| t.name).collect();
        assert_eq!(names, vec!["booking", "ordering"]);
        let err = select_targets("bookings")
            .err()
            .expect("unknown")
            .to_string();
        assert!(
            err.contains("unknown target `bookings`") && err.contains("booking"),
            "{err}"
        );
        assert!(select_targets(" , ").is_err());
    }

    #[test]
    fn help_lists_the_targets() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        for name in [
            "identity",
            "booking",
            "marketing",
            "ordering",
            "notifier",
            "web",
        ] {
            assert!(help.contains(name), "{help}");
        }
    }

    /// The smallest environment `pulse serve` accepts, locally.
    fn local_env(extra: &[(&str, &str)]) -> Env {
        let mut vars = vec![
            (
                "PULSE_DATABASE_URL",
                "postgres://pulse:db-password-42@127.0.0.1:5432/pulse_fr",
            ),
            (
                "PULSE_REDIS_URL",
                "redis://:redis-password-42@127.0.0.1:6379",
            ),
            ("PULSE_JWT_SECRET", "jwt-secret-jwt-secret-jwt-secret-42"),
            ("PULSE_DEVELOPMENT_MODE", "true"),
            ("PULSE_COUNTRY__CODE", "FR"),
            ("PULSE_COUNTRY__TIMEZONE", "Europe/Paris"),
            ("PULSE_COUNTRY__CURRENCY", "EUR"),
            ("PULSE_COUNTRY__LOCALE", "fr-FR"),
        ];
        vars.extend_from_slice(extra);
        let mut env: Vec<(String, String)> = vars
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        if !extra
            .iter()
            .any(|(k, _)| *k == "PULSE_IDENTITY_KEYRING_SECRET_FILE")
        {
            env.push((
                "PULSE_IDENTITY_KEYRING_SECRET_FILE".into(),
                keyring_secret_file(),
            ));
        }
        Env::from_map(env)
    }

    /// Identity's keyring secret, in a file as a cluster mounts it (the same for every test).
    fn keyring_secret_file() -> String {
        let path = std::env::temp_dir().join("pulse-cli-test-keyring-secret");
        // Written aside and renamed, so a test reading it never sees it half written.
        let draft = path.with_extension(uuid::Uuid::new_v4().simple().to_string());
        std::fs::write(
            &draft,
            "keyring-secret-that-must-never-be-logged-0123456789",
        )
        .expect("keyring secret file");
        std::fs::rename(&draft, &path).expect("keyring secret file");
        path.display().to_string()
    }

    #[test]
    fn bad_identity_settings_stop_start_up_naming_the_variable() {
        for (var, value) in [
            ("PULSE_IDENTITY_KEYRING_SECRET_FILE", "/nonexistent/keyring"),
            ("PULSE_IDENTITY_SIGNING_ALGORITHM", "HS256"),
            ("PULSE_IDENTITY_SMS_PROVIDER", "carrier-pigeon"),
        ] {
            let err = ServeSettings::read(&local_env(&[(var, value)]), Some("identity"))
                .expect_err(value);
            assert!(err.to_string().contains(var), "{var}={value}: {err}");
        }
        let err = ServeSettings::read(
            &local_env(&[
                ("PULSE_DEVELOPMENT_MODE", "false"),
                ("PULSE_IDENTITY_SMS_PROVIDER", "sandbox"),
            ]),
            Some("identity"),
        )
        .expect_err("sandbox SMS in production");
        let text = err.to_string();
        assert!(
            text.contains("PULSE_IDENTITY_SMS_PROVIDER") && text.contains("PULSE_DEVELOPMENT_MODE"),
            "{text}"
        );
    }

    #[test]
    fn every_target_is_the_component_it_names() {
        let env = local_env(&[]);
        let server = ServerSettings::read(&env).expect("server settings");
        for target in TARGETS {
            let component = (target.load)(&env, &server).expect("component");
            assert_eq!(component.name(), target.name);
            assert_eq!(component.description(), target.description);
            assert_eq!(
                component.uses_database(),
                target.database,
                "{}",
                target.name
            );
        }
    }

    #[test]
    fn bad_ordering_settings_stop_start_up_naming_the_variable() {
        for (var, value) in [
            ("PULSE_PAYMENT_PROVIDER", "nonsense"),
            ("PULSE_MARKETING_GRPC_URL", "http://"),
            ("PULSE_MARKETING_GRPC_URL", "marketing.pulse-fr.svc:50051"),
        ] {
            let err = ServeSettings::read(&local_env(&[(var, value)]), Some("ordering"))
                .expect_err(value);
            assert!(err.to_string().contains(var), "{var}={value}: {err}");
        }
        // Booking does not read ordering's settings.
        ServeSettings::read(
            &local_env(&[("PULSE_PAYMENT_PROVIDER", "nonsense")]),
            Some("booking"),
        )
        .expect("booking ignores ordering's settings");
    }

    #[test]
    fn the_sandbox_needs_the_development_switch() {
        let env = local_env(&[
            ("PULSE_DEVELOPMENT_MODE", "false"),
            ("PULSE_PAYMENT_PROVIDER", "sandbox"),
        ]);
        let err = ServeSettings::read(&env, Some("ordering")).expect_err("sandbox in production");
        let text = err.to_string();
        assert!(
            text.contains("PULSE_PAYMENT_PROVIDER") && text.contains("PULSE_DEVELOPMENT_MODE"),
            "{text}"
        );
        let env = local_env(&[("PULSE_DEVELOPMENT_MODE", "false")]);
        let err = ServeSettings::read(&env, Some("ordering")).expect_err("no provider");
        assert!(err.to_string().contains("PULSE_PAYMENT_PROVIDER"), "{err}");
        ServeSettings::read(&local_env(&[]), Some("ordering")).expect("sandbox in development");
    }

    #[test]
    fn settings_debug_shows_no_secret() {
        let env = local_env(&[
            ("PULSE_PAYMENT_PROVIDER", "stripe"),
            ("PULSE_STRIPE_API_KEY", "sk_test_stripe-key-42"),
            ("PULSE_PAYMENT_WEBHOOK_SECRET", "whsec_webhook-secret-42"),
        ]);
        let settings = ServeSettings::read(&env, Some("all")).expect("settings");
        let shown = format!("{settings:?}");
        for secret in [
            "db-password-42",
            "redis-password-42",
            "jwt-secret-jwt-secret",
            "stripe-key-42",
            "webhook-secret-42",
        ] {
            assert!(!shown.contains(secret), "{secret} shown in {shown}");
        }
        assert!(shown.contains("127.0.0.1"), "{shown}");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3w").is_err());
    }

    #[tokio::test]
    async fn minted_tokens_verify() {
        let args = TokenArgs {
            subject: "demo".into(),
            roles: vec!["patient".into()],
            country: "fr".into(),
            ttl: Duration::from_secs(60),
        };
        let jwt = JwtSettings::read(&Env::from_map([("PULSE_JWT_SECRET", "x".repeat(40))]))
            .expect("settings");
        let token = token(&args, &jwt).expect("mint");
        let verifier = jwt.authenticator("FR").expect("auth");
        let claims = verifier.verify(&token).await.expect("valid");
        assert_eq!(claims.country, "FR");
        assert_eq!(claims.sub, "demo");
    }

    #[test]
    fn no_hs256_tokens_where_hs256_is_not_accepted() {
        let args = TokenArgs {
            subject: "demo".into(),
            roles: vec!["patient".into()],
            country: "FR".into(),
            ttl: Duration::from_secs(60),
        };
        let jwt = JwtSettings::read(&Env::from_map([
            ("PULSE_JWT_ALGORITHMS", "EdDSA"),
            (
                "PULSE_JWKS_URL",
                "http://identity:8080/.well-known/jwks.json",
            ),
            ("PULSE_JWT_SECRET", "x".repeat(40).as_str()),
        ]))
        .expect("settings");
        let err = token(&args, &jwt).expect_err("HS256 not accepted");
        assert!(err.to_string().contains("PULSE_JWT_ALGORITHMS"), "{err}");
    }
}
