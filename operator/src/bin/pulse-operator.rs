//! `pulse-operator`: see `pulse-operator --help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use pulse_operator::campaign_controller::DEFAULT_POLL;
use pulse_operator::leader::LeaseSettings;
use pulse_operator::marketing::{DEFAULT_TIMEOUT, MarketingSettings, default_url_template};
use pulse_operator::run::RunSettings;

/// Kubernetes operator of Pulse: reconciles CountryTenant objects into running countries and
/// runs SeckillCampaign objects in their country's marketing component.
#[derive(Debug, Parser)]
#[command(name = "pulse-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controllers (the default).
    Run(RunArgs),
    /// Print, as YAML, the objects the operator would apply for a CountryTenant (no cluster needed).
    Render {
        /// The CountryTenant YAML file (`-` for standard input).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Admin listener: /livez, /readyz, /metrics.
    #[arg(
        long,
        env = "PULSE_OPERATOR_ADMIN_ADDR",
        default_value = "0.0.0.0:9090"
    )]
    admin_addr: SocketAddr,
    /// Reconcile without leader election (only ever run one replica then).
    #[arg(long, env = "PULSE_OPERATOR_NO_LEADER_ELECTION")]
    no_leader_election: bool,
    /// Name of the leader Lease.
    #[arg(
        long,
        env = "PULSE_OPERATOR_LEASE_NAME",
        default_value = "pulse-operator"
    )]
    lease_name: String,
    /// Namespace of the leader Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "pulse-system")]
    lease_namespace: String,
    /// This replica's identity (its pod name); the host name when unset.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// gRPC URL of a country's marketing component (marketing.v1.CampaignAdmin); `{namespace}`
    /// is replaced by the campaign's namespace. Change the domain for clusters not using
    /// `cluster.local` search paths, e.g. `http://marketing.{namespace}.svc.example.org:50051`.
    #[arg(
        long,
        env = "PULSE_MARKETING_GRPC_URL_TEMPLATE",
        default_value_t = default_url_template()
    )]
    marketing_grpc_url_template: String,
    /// Deadline of one call to marketing, in seconds.
    #[arg(
        long,
        env = "PULSE_MARKETING_GRPC_TIMEOUT_SECONDS",
        default_value_t = DEFAULT_TIMEOUT.as_secs()
    )]
    marketing_grpc_timeout_seconds: u64,
    /// How often the sales of an open campaign are mirrored into its status, in seconds.
    #[arg(long, env = "PULSE_CAMPAIGN_POLL_SECONDS", default_value_t = DEFAULT_POLL.as_secs())]
    campaign_poll_seconds: u64,
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("pulse-operator-{}", std::process::id()))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Render { file }) => {
            return match pulse_operator::render::render_file(&file) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("pulse-operator render: {err:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Run(args)) => args,
        // No subcommand means `run` with its defaults and environment variables.
        None => match Cli::parse_from(["pulse-operator", "run"]).command {
            Some(Command::Run(args)) => args,
            _ => return ExitCode::FAILURE,
        },
    };
    let _telemetry = match pulse_kit::telemetry::init("pulse-operator") {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("pulse-operator: {err}");
            return ExitCode::FAILURE;
        }
    };
    let identity = args.identity.clone().unwrap_or_else(host_name);
    let settings = RunSettings {
        admin_addr: args.admin_addr,
        lease: (!args.no_leader_election)
            .then(|| LeaseSettings::new(&args.lease_name, &args.lease_namespace, &identity)),
        instance: Some(identity),
        marketing: MarketingSettings {
            url_template: args.marketing_grpc_url_template.clone(),
            timeout: Duration::from_secs(args.marketing_grpc_timeout_seconds),
        },
        campaign_poll: Duration::from_secs(args.campaign_poll_seconds),
    };
    match pulse_operator::run::run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "pulse-operator failed");
            eprintln!("pulse-operator: {err:#}");
            ExitCode::FAILURE
        }
    }
}
