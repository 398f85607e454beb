//! `pulse-bench <scenario>`: what `./dev bench` runs. Needs the servers `./dev` starts (and, for
//! `operator`, the Kubernetes cluster it starts).

const SCENARIOS: &[(&str, &str)] = &[
    (
        "booking",
        "hot-slot and distinct-slots bookings through Pulse, beside pgbench running the same transaction",
    ),
    (
        "events",
        "5,000 events/s for 60 s through outbox → relay → Kafka → consumer, beside rskafka straight to the broker; lag p50/p99, lost events",
    ),
    (
        "operator",
        "100 CountryTenants applied at once, reconciled by pulse-operator on a real control plane: time to Ready, API requests, RSS",
    ),
    (
        "search",
        "one cached practitioner search by 50 clients through Pulse, beside redis-benchmark GET of a value of its size; the ratio",
    ),
    (
        "seckill",
        "a seckill crowd through Pulse, beside redis-benchmark running the same Lua script; oversell count",
    ),
];

fn usage() {
    eprintln!("usage: ./dev bench <scenario>\n\nscenarios:");
    for (name, what) in SCENARIOS {
        eprintln!("  {name:<10} {what}");
    }
}

/// The allocator of the `pulse` binary, so the in-process servers allocate as it does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let scenario = std::env::args().nth(1);
    let result = match scenario.as_deref() {
        Some("booking") => pulse_e2e::bench::booking::run().await,
        Some("events") => pulse_e2e::bench::events::run().await,
        Some("operator") => pulse_e2e::bench::operator::run().await,
        Some("search") => pulse_e2e::bench::search::run().await,
        Some("seckill") => pulse_e2e::bench::seckill::run().await,
        Some("-h" | "--help") | None => {
            usage();
            return std::process::ExitCode::from(2);
        }
        Some(other) => {
            eprintln!("unknown scenario `{other}`");
            usage();
            return std::process::ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pulse-bench: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
