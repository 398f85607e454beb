//! `pulse`: see `pulse --help`.

use clap::Parser;

/// mimalloc: allocation-heavy request paths (headers, JSON, labels) spent a fifth of their CPU in
/// glibc's malloc and free under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = pulse::Cli::parse();
    // `token` and `keys` print only the token or key id, so it can be captured by scripts.
    let _telemetry = match &cli.command {
        pulse::Command::Token(_) | pulse::Command::Keys(_) => None,
        _ => match pulse_kit::telemetry::init("pulse") {
            Ok(guard) => Some(guard),
            Err(err) => {
                eprintln!("pulse: {err}");
                return std::process::ExitCode::FAILURE;
            }
        },
    };
    match pulse::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "pulse failed");
            eprintln!("pulse: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
