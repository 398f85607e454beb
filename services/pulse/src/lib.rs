//! The one Pulse service binary, as a library: the component list and the command line.
//!
//! `pulse serve --target booking,ordering|all` runs the chosen components in one process (the
//! Grafana Mimir pattern): locally everything runs together, in Kubernetes each Deployment runs
//! one target. The same code path serves both.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use pulse_kit::component::Component;
use pulse_kit::config::CountryConfig;
use pulse_kit::server::{JwtSettings, ServerSettings};

/// Every component, in start-up order. Adding a component means adding it here.
pub fn components() -> Vec<Arc<dyn Component>> {
    vec![
        Arc::new(pulse_identity::Identity),
        Arc::new(pulse_booking::Booking),
        Arc::new(pulse_marketing::Marketing),
        Arc::new(pulse_ordering::Ordering::from_env()),
        Arc::new(pulse_notifier::Notifier),
    ]
}

/// The components named by a `--target` list (`all`, or comma-separated names).
pub fn select_targets(spec: &str) -> anyhow::Result<Vec<Arc<dyn Component>>> {
    let all = components();
    let names: Vec<&str> = spec
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if names.is_empty() {
        bail!(
            "--target is empty: name components or use `all` (known: {})",
            known(&all)
        );
    }
    if names.contains(&"all") {
        return Ok(all);
    }
    let mut chosen = Vec::new();
    for name in names {
        let component = all
            .iter()
            .find(|c| c.name() == name)
            .with_context(|| format!("unknown target `{name}` (known: all, {})", known(&all)))?;
        if !chosen.iter().any(|c: &Arc<dyn Component>| c.name() == name) {
            chosen.push(Arc::clone(component));
        }
    }
    Ok(chosen)
}

fn known(all: &[Arc<dyn Component>]) -> String {
    all.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
}

fn targets_help() -> String {
    let mut help = String::from("Targets (for --target; `all` runs every one):\n");
    for component in components() {
        help.push_str(&format!(
            "  {:<10} {}\n",
            component.name(),
            component.description()
        ));
    }
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

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run components: HTTP, gRPC and admin listeners, outbox relays, consumers, jobs.
    Serve(ServeArgs),
    /// Create the components' schemas and apply their migrations.
    Migrate(MigrateArgs),
    /// Mint an access token for local use (needs the HS256 secret).
    Token(TokenArgs),
    /// Load the demo data set (practitioners, schedules, slots) of a country; idempotent.
    Seed(SeedArgs),
}

/// `pulse seed`.
#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    /// The country whose demo data to load (`FR` or `DE`); it must match the configuration.
    #[arg(long)]
    pub country: String,
    /// YAML file with the country configuration (a CountryTenant or a bare config).
    #[arg(long, env = "PULSE_COUNTRY_FILE")]
    pub country_file: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub backends: Backends,
}

/// Where the dependencies are.
#[derive(Debug, Clone, Args)]
pub struct Backends {
    /// PostgreSQL database of the country.
    #[arg(long, env = "PULSE_DATABASE_URL")]
    pub database_url: String,
    /// Redis.
    #[arg(
        long,
        env = "PULSE_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,
    /// Kafka bootstrap brokers, comma-separated.
    #[arg(
        long,
        env = "PULSE_KAFKA_BROKERS",
        default_value = "127.0.0.1:9092",
        value_delimiter = ','
    )]
    pub kafka_brokers: Vec<String>,
}

/// How tokens are verified and minted.
#[derive(Debug, Clone, Args)]
pub struct JwtArgs {
    /// Expected token issuer.
    #[arg(long, env = "PULSE_JWT_ISSUER", default_value = "pulse")]
    pub jwt_issuer: String,
    /// Signature algorithm: HS256, RS256, ES256 or EdDSA.
    #[arg(long, env = "PULSE_JWT_ALGORITHM", default_value = "HS256")]
    pub jwt_algorithm: String,
    /// HS256 shared secret (at least 32 bytes).
    #[arg(long, env = "PULSE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM file with the public key for RS256/ES256/EdDSA.
    #[arg(long, env = "PULSE_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
}

impl JwtArgs {
    fn settings(&self) -> anyhow::Result<JwtSettings> {
        let public_key_pem = match &self.jwt_public_key_file {
            Some(path) => Some(std::fs::read_to_string(path).with_context(|| {
                format!("cannot read PULSE_JWT_PUBLIC_KEY_FILE {}", path.display())
            })?),
            None => None,
        };
        Ok(JwtSettings {
            issuer: self.jwt_issuer.clone(),
            algorithm: self.jwt_algorithm.clone(),
            secret: self.jwt_secret.clone(),
            public_key_pem,
        })
    }
}

/// `pulse serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Components to run: `all` or a comma-separated list.
    #[arg(long, env = "PULSE_TARGET", default_value = "all")]
    pub target: String,
    /// YAML file with the country configuration (a CountryTenant or a bare config);
    /// `PULSE_COUNTRY__*` variables override it.
    #[arg(long, env = "PULSE_COUNTRY_FILE")]
    pub country_file: Option<PathBuf>,
    /// Public HTTP listener.
    #[arg(long, env = "PULSE_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// gRPC listener.
    #[arg(long, env = "PULSE_GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,
    /// Admin listener: /livez, /readyz, /metrics.
    #[arg(long, env = "PULSE_ADMIN_ADDR", default_value = "0.0.0.0:9090")]
    pub admin_addr: SocketAddr,
    /// Seconds readiness fails before the listeners close on SIGTERM.
    #[arg(long, env = "PULSE_DRAIN_SECONDS", default_value_t = 5)]
    pub drain_seconds: u64,
    /// Connections per component pool.
    #[arg(long, env = "PULSE_DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,
    /// Partitions of the topics this process creates.
    #[arg(long, env = "PULSE_KAFKA_PARTITIONS", default_value_t = 3)]
    pub kafka_partitions: i32,
    /// Instance name, when several deployments of one country share Redis and Kafka
    /// (added to Redis keys and Kafka topics).
    #[arg(long, env = "PULSE_INSTANCE")]
    pub instance: Option<String>,
    /// Take the client address for rate limits from the first `X-Forwarded-For` hop (set it
    /// when an ingress or load balancer sits in front).
    #[arg(long, env = "PULSE_TRUST_FORWARDED_FOR", default_value_t = false)]
    pub trust_forwarded_for: bool,
    /// Apply migrations before serving.
    #[arg(long, env = "PULSE_MIGRATE_ON_START", default_value_t = false)]
    pub migrate: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub backends: Backends,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub jwt: JwtArgs,
}

/// `pulse migrate`.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// Components to migrate: `all` or a comma-separated list.
    #[arg(long, env = "PULSE_TARGET", default_value = "all")]
    pub target: String,
    /// PostgreSQL database of the country.
    #[arg(long, env = "PULSE_DATABASE_URL")]
    pub database_url: String,
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
    #[command(flatten)]
    #[allow(missing_docs)]
    pub jwt: JwtArgs,
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
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate(args) => migrate(&args.database_url, &args.target).await,
        Command::Token(args) => {
            println!("{}", token(&args)?);
            Ok(())
        }
        Command::Seed(args) => seed(args).await,
    }
}

async fn seed(args: SeedArgs) -> anyhow::Result<()> {
    let country = CountryConfig::load(args.country_file.as_deref())?;
    if !country.code.eq_ignore_ascii_case(&args.country) {
        bail!(
            "--country {} does not match the configured country {} (set PULSE_COUNTRY_FILE to that country's tenant)",
            args.country,
            country.code
        );
    }
    let booking = pulse_booking::Booking;
    pulse_kit::db::migrate(
        &args.backends.database_url,
        booking.name(),
        booking.migrations(),
    )
    .await?;
    let ctx = pulse_kit::component::ComponentContext::standalone(
        booking.name(),
        country,
        &args.backends.database_url,
        &args.backends.redis_url,
        args.backends.kafka_brokers.clone(),
    )?;
    let parts = pulse_booking::parts(&ctx);
    let created = pulse_booking::seed::seed(&parts.store, &parts.search, &ctx.country).await?;
    println!(
        "seeded {created} new practitioners for {}",
        ctx.country.code
    );
    Ok(())
}

async fn migrate(database_url: &str, target: &str) -> anyhow::Result<()> {
    for component in select_targets(target)? {
        pulse_kit::db::migrate(database_url, component.name(), component.migrations())
            .await
            .with_context(|| format!("migrating `{}`", component.name()))?;
        tracing::info!(component = component.name(), "schema up to date");
    }
    Ok(())
}

/// Mints the token `pulse token` prints.
pub fn token(args: &TokenArgs) -> anyhow::Result<String> {
    let country = args.country.to_ascii_uppercase();
    let authenticator = args
        .jwt
        .settings()?
        .authenticator(&country)
        .context("`pulse token` needs PULSE_JWT_SECRET (HS256)")?;
    let claims = pulse_kit::auth::claims_for(
        &args.subject,
        &args.roles,
        &country,
        &args.jwt.jwt_issuer,
        args.ttl,
    );
    Ok(authenticator.mint(&claims)?)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let components = select_targets(&args.target)?;
    if components.iter().any(|c| c.name() == "ordering") {
        // Bad PULSE_PAYMENT_* / PULSE_MARKETING_* / PULSE_ORDERING_* values stop start-up here.
        pulse_ordering::Ordering::try_from_env().context("ordering settings")?;
    }
    let country = CountryConfig::load(args.country_file.as_deref())?;
    if args.migrate {
        migrate(&args.backends.database_url, &args.target).await?;
    }
    let settings = ServerSettings {
        database_url: args.backends.database_url.clone(),
        redis_url: args.backends.redis_url.clone(),
        kafka_brokers: args.backends.kafka_brokers.clone(),
        http_addr: args.http_addr,
        grpc_addr: args.grpc_addr,
        admin_addr: args.admin_addr,
        jwt: args.jwt.settings()?,
        drain_delay: Duration::from_secs(args.drain_seconds),
        db_max_connections: args.db_max_connections,
        kafka_partitions: args.kafka_partitions,
        trust_forwarded_for: args.trust_forwarded_for,
        instance: args.instance.clone(),
    };
    let server = pulse_kit::server::start(&settings, country, components).await?;
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
        assert_eq!(select_targets("all").expect("all").len(), 5);
        let chosen = select_targets("booking, ordering,booking").expect("list");
        let names: Vec<_> = chosen.iter().map(|c| c.name()).collect();
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
        for name in ["identity", "booking", "marketing", "ordering", "notifier"] {
            assert!(help.contains(name), "{help}");
        }
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

    #[test]
    fn minted_tokens_verify() {
        let args = TokenArgs {
            subject: "demo".into(),
            roles: vec!["patient".into()],
            country: "fr".into(),
            ttl: Duration::from_secs(60),
            jwt: JwtArgs {
                jwt_issuer: "pulse".into(),
                jwt_algorithm: "HS256".into(),
                jwt_secret: Some("x".repeat(40)),
                jwt_public_key_file: None,
            },
        };
        let token = token(&args).expect("mint");
        let verifier = args
            .jwt
            .settings()
            .expect("settings")
            .authenticator("FR")
            .expect("auth");
        let claims = verifier.verify(&token).expect("valid");
        assert_eq!(claims.country, "FR");
        assert_eq!(claims.sub, "demo");
    }
}
