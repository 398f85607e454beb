//! `./dev bench search`: one cached practitioner search
//! (`GET /v1/practitioners?specialty=dermatology&city=Paris`) asked by many clients at once
//! through a separate `pulse serve --target all` (rate limits lifted: every client is one
//! address), beside
//! `redis-benchmark` GET of a value of the answer's size at the same concurrency, the floor of
//! any cache in front of Redis.

use std::time::Duration;

use anyhow::bail;
use pulse_kit::testing::{self, TestDatabase, redis_connection};
use serde_json::json;

use super::server::ServerProcess;
use super::{Measurement, percentiles_as_samples, print_table};

/// Clients asking at once, for Pulse and redis-benchmark alike.
const CONCURRENCY: usize = 50;
/// How long Pulse is asked.
const DURATION: Duration = Duration::from_secs(10);
/// Practitioners the search finds (one page).
const PRACTITIONERS: usize = 20;
/// The search.
const QUERY: &str = "/v1/practitioners?specialty=dermatology&city=Paris";

/// Runs both and prints one table with the ratio of Pulse's throughput to Redis'.
pub async fn run() -> anyhow::Result<()> {
    let db = TestDatabase::create().await;
    // Every client is one address: the per-client limit is lifted, as a CDN in front would
    // spread the crowd over many.
    let server = ServerProcess::start(
        &db.url,
        &[
            ("PULSE_DB_MAX_CONNECTIONS", "16"),
            ("PULSE_COUNTRY__RATE_LIMITS__REQUESTS_PER_SECOND", "1000000"),
            ("PULSE_COUNTRY__RATE_LIMITS__BURST", "1000000"),
        ],
    )
    .await?;
    eprintln!("bench: metrics at http://{}/metrics", server.admin_addr);
    let base = server.base.clone();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY * 2)
        .build()?;

    eprintln!("bench: {PRACTITIONERS} dermatologists in Paris");
    let admin = server.token("bench-admin", &["admin"]);
    let day = json!([{ "start": "09:00", "end": "17:00" }]);
    for n in 0..PRACTITIONERS {
        client
            .post(format!("{base}/v1/practitioners"))
            .bearer_auth(&admin)
            .json(&json!({
                "name": format!("Dr Search {n}"), "specialty": "dermatology", "city": "Paris",
                "address": format!("{n} rue de la Paix"), "latitude": 48.85, "longitude": 2.35,
                "consultationPriceMinor": 5000,
                "schedule": { "slotMinutes": 30, "weekly": { "Mon": day, "Tue": day, "Wed": day,
                    "Thu": day, "Fri": day } }
            }))
            .send()
            .await?
            .error_for_status()?;
    }
    // The first answer fills the cache; every later one is a hit.
    let body = client
        .get(format!("{base}{QUERY}"))
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    let found = serde_json::from_slice::<serde_json::Value>(&body)?["items"]
        .as_array()
        .map_or(0, Vec::len);
    if found == 0 {
        bail!(
            "the search finds nothing: {}",
            String::from_utf8_lossy(&body)
        );
    }

    eprintln!(
        "bench: {QUERY} by {CONCURRENCY} clients for {} s through Pulse",
        DURATION.as_secs()
    );
    let pulse = through_pulse(&format!("{base}{QUERY}")).await?;
    let usage = server.stop().await;
    let pulse = Measurement {
        peak_rss_mib: Some(usage.peak_rss_mib),
        ..pulse
    };

    eprintln!(
        "bench: redis-benchmark GET of a {} byte value, {} calls, {CONCURRENCY} clients",
        body.len(),
        pulse.requests
    );
    let reference = redis_get(body.len(), pulse.requests).await?;
    println!();
    print_table(&[pulse, reference]);
    println!();
    println!(
        "Pulse: a separate `pulse serve --target all`, driven by wrk: HTTP → rate limit (Redis) → search cache → JSON; {found} practitioners."
    );
    println!("redis-benchmark: GET of a value as large as Pulse's answer, straight to Redis.");
    Ok(())
}

/// `CONCURRENCY` wrk connections asking `url` for `DURATION`; every answer must be 200.
async fn through_pulse(url: &str) -> anyhow::Result<Measurement> {
    let run = super::wrk::run(url, CONCURRENCY, super::wrk::Load::Repeat(DURATION)).await?;
    if run.with_status(200) != run.requests {
        bail!("GET {url}: answers by status {:?}", run.statuses);
    }
    Ok(Measurement {
        scenario: "search".into(),
        system: "pulse".into(),
        concurrency: CONCURRENCY,
        requests: run.requests,
        succeeded: run.requests,
        elapsed: run.elapsed(),
        latencies: run.latencies(),
        peak_rss_mib: None,
    })
}

/// `redis-benchmark` GET of a `size`-byte value, `requests` times at `CONCURRENCY`.
async fn redis_get(size: usize, requests: usize) -> anyhow::Result<Measurement> {
    let key = testing::unique("bench-search-value");
    let mut redis = redis_connection().await;
    redis::cmd("SET")
        .arg(&key)
        .arg(vec![b'x'; size])
        .arg("EX")
        .arg(600)
        .query_async::<()>(&mut redis)
        .await?;
    let measured = super::redis_benchmark(CONCURRENCY, requests, &["GET", &key]).await;
    redis::cmd("DEL")
        .arg(&key)
        .query_async::<()>(&mut redis)
        .await?;
    let super::RedisBenchmark { rps, p50, p95, p99 } = measured?;
    // redis-benchmark reports percentiles, not samples: three latencies stand for them, and the
    // wall time follows from its own throughput.
    let latencies = percentiles_as_samples(p50, p95, p99);
    Ok(Measurement {
        scenario: "search".into(),
        system: "redis-get".into(),
        concurrency: CONCURRENCY,
        requests,
        succeeded: requests,
        elapsed: Duration::from_secs_f64(requests as f64 / rps.max(f64::EPSILON)),
        latencies,
        peak_rss_mib: None,
    })
}
