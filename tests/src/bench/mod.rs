//! Benchmark scenarios and the measurement helpers they share.

pub mod booking;
pub mod crowd;
pub mod events;
pub mod operator;
pub mod search;
pub mod seckill;
pub mod server;
pub mod wrk;

use std::time::Duration;

/// Where a bench's in-process server serves `/metrics`: `PULSE_BENCH_ADMIN_ADDR`, else
/// 127.0.0.1:9492, which the Prometheus of `./dev up` scrapes as country `bench` (so the
/// dashboards show a bench while it runs), else any free port when that one is taken.
pub fn admin_addr() -> anyhow::Result<std::net::SocketAddr> {
    if let Some(addr) = std::env::var_os("PULSE_BENCH_ADMIN_ADDR") {
        let text = addr.to_string_lossy();
        return text
            .parse()
            .map_err(|e| anyhow::anyhow!("PULSE_BENCH_ADMIN_ADDR={text}: {e}"));
    }
    let wanted: std::net::SocketAddr = ([127, 0, 0, 1], 9492).into();
    Ok(match std::net::TcpListener::bind(wanted) {
        Ok(_free) => wanted,
        Err(_) => ([127, 0, 0, 1], 0).into(),
    })
}

/// Each user (a token) asks `url` once, `concurrency` at a time, before the measured part: the
/// page a signed-in user's app opens before the action measured (the web app loads the unread
/// count after sign-in, the sale page shows the wallet). That is when the server first checks
/// each token's signature, as it would in life; every answer must be a success.
pub async fn each_user_gets(
    client: &reqwest::Client,
    url: &str,
    tokens: &[String],
    concurrency: usize,
) -> anyhow::Result<()> {
    use futures::StreamExt;
    let mut answers = futures::stream::iter(tokens)
        .map(|token| async move {
            let status = client.get(url).bearer_auth(token).send().await?.status();
            if !status.is_success() {
                anyhow::bail!("GET {url}: {status}");
            }
            Ok(())
        })
        .buffer_unordered(concurrency);
    while let Some(answer) = answers.next().await {
        answer?;
    }
    Ok(())
}

/// Host and port of a `redis://` URL, for `redis-benchmark`.
pub fn redis_host_port(url: &str) -> (String, String) {
    let rest = url.trim_start_matches("redis://");
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    let rest = rest.split('/').next().unwrap_or(rest);
    match rest.rsplit_once(':') {
        Some((host, port)) => (host.to_owned(), port.to_owned()),
        None => (rest.to_owned(), "6379".to_owned()),
    }
}

/// What `redis-benchmark --csv` reports for one command.
#[derive(Debug, Clone, Copy)]
pub struct RedisBenchmark {
    /// Requests per second.
    pub rps: f64,
    /// Median latency, ms.
    pub p50: f64,
    /// 95th percentile, ms.
    pub p95: f64,
    /// 99th percentile, ms.
    pub p99: f64,
}

/// Runs `redis-benchmark` against `PULSE_REDIS_URL` with `clients` connections, `requests`
/// requests and `args` (extra options, then the command), and reads its CSV line.
pub async fn redis_benchmark(
    clients: usize,
    requests: usize,
    args: &[&str],
) -> anyhow::Result<RedisBenchmark> {
    use anyhow::Context;
    let (host, port) = redis_host_port(&pulse_kit::testing::redis_url());
    let output = tokio::process::Command::new("redis-benchmark")
        .args(["-h", &host, "-p", &port])
        .args(["-c", &clients.to_string(), "-n", &requests.to_string()])
        .arg("--csv")
        .args(args)
        .output()
        .await
        .context("redis-benchmark is not installed (it ships with Redis)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        anyhow::bail!(
            "redis-benchmark failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let values: Vec<f64> = stdout
        .lines()
        .rfind(|l| l.starts_with('"') && !l.starts_with("\"test\""))
        .context("no result line from redis-benchmark")?
        .rsplit("\",\"")
        .take(7)
        .map(|v| v.trim_matches('"').parse::<f64>().unwrap_or(0.0))
        .collect();
    let [_max, p99, p95, p50, _min, _avg, rps] = values[..] else {
        anyhow::bail!("unexpected redis-benchmark output: {stdout}");
    };
    Ok(RedisBenchmark { rps, p50, p95, p99 })
}

/// Latency percentiles and throughput of one run.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// Scenario name.
    pub scenario: String,
    /// Who ran: `pulse` or the reference tool.
    pub system: String,
    /// Concurrency (HTTP clients for Pulse, connections for pgbench).
    pub concurrency: usize,
    /// Requests or transactions done.
    pub requests: usize,
    /// Requests that succeeded in their intent (a booking made).
    pub succeeded: usize,
    /// Wall time.
    pub elapsed: Duration,
    /// Per-request latencies.
    pub latencies: Vec<Duration>,
    /// Peak resident memory of the measured server process, MiB (Pulse's rows).
    pub peak_rss_mib: Option<f64>,
}

impl Measurement {
    /// The `q` quantile (0..=1) of the latencies, in ms.
    pub fn percentile_ms(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[rank].as_secs_f64() * 1000.0
    }

    /// Requests per second.
    pub fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

/// Prints measurements as one table. A Pulse row's `ratio` is its throughput over the
/// reference row (any other system) of the same scenario: the share of the raw limit it reaches.
pub fn print_table(rows: &[Measurement]) {
    println!(
        "{:<16} {:<16} {:>6} {:>9} {:>9} {:>12} {:>9} {:>9} {:>9} {:>6} {:>9}",
        "scenario",
        "system",
        "conc",
        "requests",
        "succeeded",
        "throughput/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "ratio",
        "peak RSS"
    );
    for row in rows {
        let reference = rows
            .iter()
            .find(|r| r.scenario == row.scenario && r.system != "pulse");
        let ratio = match reference {
            Some(reference) if row.system == "pulse" => format!(
                "{:.2}",
                row.throughput() / reference.throughput().max(f64::EPSILON)
            ),
            _ => "-".to_owned(),
        };
        let rss = row
            .peak_rss_mib
            .map_or_else(|| "-".to_owned(), |mib| format!("{mib:.0} MiB"));
        println!(
            "{:<16} {:<16} {:>6} {:>9} {:>9} {:>12.0} {:>9.2} {:>9.2} {:>9.2} {:>6} {:>9}",
            row.scenario,
            row.system,
            row.concurrency,
            row.requests,
            row.succeeded,
            row.throughput(),
            row.percentile_ms(0.50),
            row.percentile_ms(0.95),
            row.percentile_ms(0.99),
            ratio,
            rss,
        );
    }
}

/// 100 samples whose p50, p95 and p99 (as [`Measurement::percentile_ms`] reads them) are the
/// given milliseconds: how a tool that reports percentiles, not samples (redis-benchmark),
/// fills a [`Measurement`].
pub fn percentiles_as_samples(p50: f64, p95: f64, p99: f64) -> Vec<Duration> {
    let ms = |v: f64| Duration::from_secs_f64(v / 1000.0);
    (1..=100)
        .map(|rank| match rank {
            ..=50 => ms(p50),
            51..=95 => ms(p95),
            _ => ms(p99),
        })
        .collect()
}

/// Reads pgbench's per-transaction log files (`<prefix>.<pid>[.<thread>]`) into latencies.
pub fn read_pgbench_logs(dir: &std::path::Path, prefix: &str) -> std::io::Result<Vec<Duration>> {
    let mut latencies = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        for line in std::fs::read_to_string(entry.path())?.lines() {
            // client_id transaction_no time script_no time_epoch time_us
            if let Some(us) = line
                .split_whitespace()
                .nth(2)
                .and_then(|v| v.parse::<u64>().ok())
            {
                latencies.push(Duration::from_micros(us));
            }
        }
    }
    Ok(latencies)
}
