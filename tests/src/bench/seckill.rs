//! `./dev bench seckill`: seckill throughput and latency through Pulse's HTTP API (token check,
//! rate limits, the reservation script, the order consumer behind it), beside `redis-benchmark`
//! running the same Lua script straight against Redis at the same concurrency, with the oversell
//! count of each run (it must be 0).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;
use pulse_kit::testing::{TestDatabase, redis_url};
use pulse_marketing::reservation::{CampaignKeys, registry_key};
use pulse_marketing::seckill::{LoadSpec, RESERVE_SCRIPT, Seckill};
use redis::AsyncCommands;
use serde_json::json;

use super::server::ServerProcess;
use super::{Measurement, percentiles_as_samples, print_table};

/// Vouchers on sale in each run.
const STOCK: u32 = 1_000;
/// Attempts in each run, one per distinct user.
const ATTEMPTS: usize = 20_000;
/// Clients at once, for Pulse and for redis-benchmark alike.
const CONCURRENCY: usize = 200;

/// One run's numbers, and the oversell found after it (must be 0).
struct Run {
    measured: Measurement,
    oversold: usize,
}

/// Runs Pulse, then redis-benchmark, and prints one table. Fails if either oversold.
pub async fn run() -> anyhow::Result<()> {
    let db = TestDatabase::create().await;
    let server = ServerProcess::start(&db.url, &[("PULSE_DB_MAX_CONNECTIONS", "16")]).await?;
    eprintln!("bench: metrics at http://{}/metrics", server.admin_addr);
    let keyspace = server.keyspace.clone();
    let base = server.base.clone();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY * 2)
        .build()?;
    let pool = sqlx::PgPool::connect(&db.url).await?;

    let campaign = "bench-pulse";
    let now = Utc::now();
    client
        .put(format!("{base}/v1/campaigns/{campaign}"))
        .bearer_auth(server.token("bench-admin", &["admin"]))
        .json(&json!({
            "voucherTitle": "Bench voucher", "voucherValueMinor": 1000, "currency": "EUR",
            "priceMinor": 100, "stock": STOCK, "perUserLimit": 1,
            "startsAt": now - chrono::Duration::minutes(1), "endsAt": now + chrono::Duration::hours(1),
        }))
        .send()
        .await?
        .error_for_status()
        .context("creating the bench campaign")?;
    eprintln!("bench: minting {ATTEMPTS} user tokens");
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..ATTEMPTS)
            .map(|i| server.token(&format!("bench-buyer-{i}"), &["patient"]))
            .collect(),
    );
    eprintln!("bench: each buyer opens the sale page (their wallet) before the sale");
    // Their wallet (`GET /v1/vouchers`), as the web app shows it beside the countdown.
    super::each_user_gets(
        &client,
        &format!("{base}/v1/vouchers"),
        &tokens,
        CONCURRENCY,
    )
    .await?;
    // A buyer's attempt comes over the connection their page used: the page's connections
    // close here, so the server does not hold two per buyer while wrk opens its own.
    drop(client);
    eprintln!(
        "bench: {ATTEMPTS} seckill attempts by distinct users, {CONCURRENCY} at a time, stock {STOCK}, through Pulse"
    );
    let server_before = server.usage();
    let (measured, generator_cpu_us) = pulse_run(&base, campaign, &tokens).await?;
    let server_after = server.usage();
    let won = measured.succeeded;

    // Oversell check: every reservation becomes one order; no more than the stock, no user twice.
    let deadline = Instant::now() + Duration::from_secs(60);
    let orders = loop {
        let orders: Vec<String> =
            sqlx::query_scalar("SELECT user_subject FROM ordering.orders WHERE campaign_id = $1")
                .bind(campaign)
                .fetch_all(&pool)
                .await?;
        if orders.len() >= won || Instant::now() > deadline {
            break orders;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let usage = server.stop().await;
    let distinct: HashSet<&String> = orders.iter().collect();
    if distinct.len() != orders.len() {
        bail!("a user got two orders");
    }
    let stock_left: i64 = redis_connection()
        .await?
        .get(CampaignKeys::new(&keyspace, campaign).stock)
        .await?;
    let stock = STOCK as usize;
    let pulse = Run {
        oversold: orders.len().saturating_sub(stock)
            + won.saturating_sub(stock)
            + usize::try_from(-stock_left.min(0)).unwrap_or(0),
        measured: Measurement {
            peak_rss_mib: Some(usage.peak_rss_mib),
            ..measured
        },
    };
    if orders.len() != won {
        bail!(
            "{won} reservations but {} orders after a minute",
            orders.len()
        );
    }
    pool.close().await;

    eprintln!("bench: redis-benchmark, the same script, {ATTEMPTS} calls, {CONCURRENCY} clients");
    let reference = redis_benchmark(&keyspace).await?;
    cleanup(&keyspace, &[campaign, "bench-lua"]).await?;

    println!();
    print_table(&[pulse.measured, reference.measured]);
    println!(
        "oversold: pulse {}, redis-benchmark {} (orders or reservations beyond the stock, plus any negative Redis stock; must be 0)",
        pulse.oversold, reference.oversold
    );
    println!(
        "CPU per attempt: server {:.0} µs (with the orders made meanwhile), load generator (wrk) {:.0} µs",
        (server_after.cpu_seconds - server_before.cpu_seconds) * 1e6 / ATTEMPTS as f64,
        generator_cpu_us / ATTEMPTS as f64
    );
    println!();
    println!(
        "Pulse: a separate `pulse serve --target all`, driven by wrk; buyers opened the sale page first; HTTP (Idempotency-Key) → EdDSA token (checked at the page) → the reservation script with the user's attempt rate and the key (one Redis round trip) → 202; orders made by the stream consumer."
    );
    println!(
        "redis-benchmark: EVALSHA of the same script straight to Redis (random users), the ceiling of the design."
    );
    if pulse.oversold > 0 || reference.oversold > 0 {
        bail!("oversold");
    }
    Ok(())
}

/// Every buyer tries once, through wrk (one distinct buyer and key per request); also wrk's CPU
/// time, µs.
async fn pulse_run(
    base: &str,
    campaign: &str,
    tokens: &[String],
) -> anyhow::Result<(Measurement, f64)> {
    let url = format!("{base}/v1/seckill/{campaign}/orders");
    // As a client does: one key per purchase, reused only by a retry.
    let requests: Vec<Vec<(String, String)>> = tokens
        .iter()
        .enumerate()
        .map(|(index, token)| {
            vec![
                ("Authorization".to_owned(), format!("Bearer {token}")),
                (
                    "Idempotency-Key".to_owned(),
                    format!("bench-attempt-{index}"),
                ),
            ]
        })
        .collect();
    let run = super::wrk::run(
        &url,
        CONCURRENCY,
        super::wrk::Load::EachOnce {
            method: "POST",
            requests: &requests,
        },
    )
    .await?;
    let (won, refused) = (run.with_status(202), run.with_status(409));
    if won + refused != run.requests || run.requests != tokens.len() {
        bail!(
            "{} attempts sent, answers by status {:?}: every attempt must get 202 or 409",
            tokens.len(),
            run.statuses
        );
    }
    let measured = Measurement {
        scenario: "seckill".into(),
        system: "pulse".into(),
        concurrency: CONCURRENCY,
        requests: run.requests,
        succeeded: won,
        elapsed: run.elapsed(),
        latencies: run.latencies(),
        peak_rss_mib: None,
    };
    Ok((measured, run.cpu_us))
}

async fn redis_connection() -> anyhow::Result<redis::aio::MultiplexedConnection> {
    Ok(redis::Client::open(redis_url())?
        .get_multiplexed_async_connection()
        .await?)
}

/// Loads a campaign like marketing does, then lets redis-benchmark call the reservation script
/// with random users and order ids.
async fn redis_benchmark(keyspace: &str) -> anyhow::Result<Run> {
    let campaign = "bench-lua";
    let seckill = Seckill::new(pulse_kit::redis::RedisHandle::new(&redis_url())?, keyspace);
    let now = Utc::now();
    seckill
        .load(&LoadSpec {
            id: campaign,
            stock: STOCK,
            starts_at: now - chrono::Duration::minutes(1),
            ends_at: now + chrono::Duration::hours(1),
            closed: false,
            per_user_limit: 1,
            price_minor: 100,
            currency: "EUR",
        })
        .await?;
    let mut redis = redis_connection().await?;
    // No order consumer reads this campaign's stream.
    let _: i64 = redis.srem(registry_key(keyspace), campaign).await?;
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(RESERVE_SCRIPT)
        .query_async(&mut redis)
        .await?;
    let keys = CampaignKeys::new(keyspace, campaign);
    let millis = now.timestamp_millis().to_string();
    let measured = super::redis_benchmark(
        CONCURRENCY,
        ATTEMPTS,
        &[
            "-r",
            "100000000",
            "EVALSHA",
            &sha,
            "5",
            &keys.meta,
            &keys.stock,
            &keys.buyers,
            &keys.orders,
            &keys.stream,
            &millis,
            "user-__rand_int__",
            "order-__rand_int__",
        ],
    )
    .await?;
    let super::RedisBenchmark { rps, p50, p95, p99 } = measured;
    let won: usize = redis.xlen(&keys.stream).await?;
    let left: i64 = redis.get(&keys.stock).await?;
    let buyers: usize = redis.hlen(&keys.buyers).await?;
    let stock = STOCK as usize;
    let oversold = won.saturating_sub(stock)
        + buyers.saturating_sub(stock)
        + usize::try_from(-left.min(0)).unwrap_or(0);
    Ok(Run {
        measured: Measurement {
            scenario: "seckill".into(),
            system: "redis-benchmark".into(),
            concurrency: CONCURRENCY,
            requests: ATTEMPTS,
            succeeded: won,
            elapsed: Duration::from_secs_f64(ATTEMPTS as f64 / rps.max(f64::EPSILON)),
            latencies: percentiles_as_samples(p50, p95, p99),
            peak_rss_mib: None,
        },
        oversold,
    })
}

/// Deletes the bench campaigns' keys.
async fn cleanup(keyspace: &str, campaigns: &[&str]) -> anyhow::Result<()> {
    let mut redis = redis_connection().await?;
    for campaign in campaigns {
        let k = CampaignKeys::new(keyspace, campaign);
        let _: i64 = redis
            .del(&[
                k.meta, k.stock, k.buyers, k.orders, k.stream, k.dead, k.errors,
            ])
            .await?;
    }
    let _: i64 = redis.del(registry_key(keyspace)).await?;
    Ok(())
}
