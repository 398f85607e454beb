//! `pulse`: see `pulse --help`.

use clap::Parser;

/// jemalloc, built with its background threads on (they return freed memory to the system off
/// the request path, where jemalloc would otherwise purge inside allocations): glibc's malloc
/// cost a fifth of the CPU of allocation-heavy request paths (headers, JSON, labels), and
/// mimalloc, as fast, kept about 15 MiB of freed pages after a seckill burst (the live heap
/// peaks at about 17 MB).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
