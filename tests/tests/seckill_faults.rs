//! Seckill against a Redis that dies: marketing and ordering in-process, pointed at a private
//! Redis (append-only file) that is `kill -9`ed in the middle of a burst of attempts and started
//! again from its file. While it is down, attempts fail closed and fast (503
//! `seckill-unavailable`, never a reservation) and the rate limits fail open (no 429); once it is
//! back, the burst goes on and never sells more than the stock, nor twice to one buyer.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pulse_e2e::support::{Latencies, Persistence, PrivateRedis};
use pulse_kit::component::Component;
use pulse_kit::settings::{Env, Secret, ordering as vars};
use pulse_kit::testing::{self, TestApp, free_port, problem_kind};
use pulse_marketing::reservation::CampaignKeys;
use pulse_ordering::settings::OrderingSettings;
use serde_json::{Value, json};

/// Buyers, each trying once (retrying with its key on 5xx, no answer or 429).
const BUYERS: usize = 150;
/// The campaign's stock.
const STOCK: usize = 60;
/// Buyers start over this window, so the burst goes on before, during and after the outage.
const STAGGER: Duration = Duration::from_millis(3000);
/// Share of the buyers answered when Redis is killed, in percent.
const KILL_AFTER_PERCENT: usize = 30;
/// How long Redis stays down.
const OUTAGE: Duration = Duration::from_millis(2000);
/// An attempt during the outage, once the Redis breaker has had time to open, must fail within
/// this (99th percentile). Alone it measures 85–180 ms; the bound leaves room for the rest of the
/// suite running beside it on two cores, and is still far below the ~4 s an attempt took before
/// the breaker (each waited for its own connection attempt). Exact latency is `./dev bench`'s job.
const FAIL_FAST_P99: Duration = Duration::from_millis(1500);
/// How long the kit's Redis handle may take to notice the outage: three failed probes (one every
/// 100 ms, at once after a failure) open its breaker; until then an attempt waits for the shared
/// connection's reconnection or its 1 s response timeout.
const DETECTION: Duration = Duration::from_secs(1);
/// No attempt during the outage, even before the breaker opened, may take longer than this: the
/// 1 s response timeout, plus scheduling. Alone the slowest takes about 0.6 s; with builds beside
/// the suite on two cores (load 7) one took 1.7 s. Without the timeout an attempt took ~4 s.
const FAIL_AT_MOST: Duration = Duration::from_millis(2500);
const CAMPAIGN: &str = "faults/flash-sale";

/// One HTTP attempt.
#[derive(Debug, Clone)]
struct Attempt {
    buyer: String,
    sent_at: Instant,
    answered_at: Instant,
    /// 0: no answer.
    status: u16,
    body: Value,
}

impl Attempt {
    fn kind(&self) -> String {
        if self.status == 202 {
            "202".to_owned()
        } else {
            format!("{} {}", self.status, problem_kind(&self.body))
        }
    }
}

async fn attempt(client: &reqwest::Client, url: &str, token: &str, key: Option<&str>) -> Attempt {
    let sent_at = Instant::now();
    let mut request = client
        .post(url)
        .bearer_auth(token)
        .timeout(Duration::from_secs(10));
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let (status, body) = match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    };
    Attempt {
        buyer: String::new(),
        sent_at,
        answered_at: Instant::now(),
        status,
        body,
    }
}

/// Marketing and ordering on `redis`, with an edge limit of 5 requests per second (burst 5) and
/// the default 2 seckill attempts per second per user: limits a buyer retrying through the
/// outage would exceed if they were enforced without Redis.
async fn start_app(redis: &str) -> TestApp {
    let (http_port, grpc_port) = (free_port(), free_port());
    let url = redis.to_owned();
    let tune = move |settings: &mut pulse_kit::server::ServerSettings| {
        settings.http_addr = ([127, 0, 0, 1], http_port).into();
        settings.grpc_addr = ([127, 0, 0, 1], grpc_port).into();
        settings.redis_url = Secret::new(url.clone());
    };
    let mut planned = testing::server_settings("postgres://planned", redis);
    tune(&mut planned);
    let settings = OrderingSettings::read(
        &Env::from_map([(vars::PAYMENT_WEBHOOK_SECRET.var, "whsec_seckill_faults")]),
        &planned,
    )
    .expect("ordering settings");
    let ordering = Arc::new(pulse_ordering::Ordering::new(settings));
    let components: Vec<Arc<dyn Component>> = vec![Arc::new(pulse_marketing::Marketing), ordering];
    let mut country = testing::france();
    country.rate_limits.requests_per_second = 5;
    country.rate_limits.burst = 5;
    country.rate_limits.seckill_attempts_per_second = 2;
    let db = testing::TestDatabase::create().await;
    TestApp::start_on(db, components, country, tune).await
}

async fn put_campaign(app: &TestApp) {
    let now = chrono::Utc::now();
    let response = app
        .client
        .put(format!(
            "{}/v1/campaigns/{}",
            app.base,
            CAMPAIGN.replace('/', "%2F")
        ))
        .bearer_auth(app.admin())
        .json(&json!({
            "voucherTitle": "10 € off any order",
            "voucherValueMinor": 1000,
            "currency": "EUR",
            "priceMinor": 100,
            "stock": STOCK,
            "perUserLimit": 1,
            "startsAt": now - chrono::Duration::seconds(5),
            "endsAt": now + chrono::Duration::hours(1),
        }))
        .send()
        .await
        .expect("put campaign");
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
}

/// Buyer `index`: at its place in the [`STAGGER`] window, attempts with one key until an answer
/// that is not 5xx, no answer or 429. Returns every attempt.
async fn buyer(
    client: reqwest::Client,
    url: String,
    (index, token): (usize, String),
    start: Instant,
    answered: Arc<AtomicUsize>,
) -> Vec<Attempt> {
    let name = format!("buyer-{index:03}");
    let key = testing::unique("seckill-fault");
    #[allow(clippy::cast_precision_loss)]
    let offset = STAGGER.mul_f64(index as f64 / BUYERS as f64);
    tokio::time::sleep_until((start + offset).into()).await;
    let mut attempts = Vec::new();
    loop {
        let mut done = attempt(&client, &url, &token, Some(&key)).await;
        done.buyer.clone_from(&name);
        let retry = done.status == 0 || done.status == 429 || done.status >= 500;
        attempts.push(done);
        if !retry {
            answered.fetch_add(1, Ordering::SeqCst);
            return attempts;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{name} got no answer in 60 s: {:?}",
            attempts
                .iter()
                .rev()
                .take(5)
                .map(Attempt::kind)
                .collect::<Vec<_>>()
        );
        let backoff = 50 + (index as u64 * 7919 + attempts.len() as u64 * 104_729) % 50;
        tokio::time::sleep(Duration::from_millis(backoff)).await;
    }
}

/// The highest counts seen while the burst runs.
#[derive(Debug, Default, Clone, Copy)]
struct Highest {
    orders: i64,
    sold: i64,
    lowest_stock: i64,
    redis_samples: u64,
}

/// Every 20 ms: the campaign's orders in PostgreSQL, and while Redis answers, its `sold` and
/// stock.
fn watch(
    pool: sqlx::PgPool,
    redis_url: String,
    keys: CampaignKeys,
    watching: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Highest> {
    tokio::spawn(async move {
        let mut highest = Highest {
            lowest_stock: i64::MAX,
            ..Highest::default()
        };
        let client = redis::Client::open(redis_url).expect("url");
        let mut conn: Option<redis::aio::MultiplexedConnection> = None;
        while watching.load(Ordering::SeqCst) {
            let orders: Option<i64> =
                sqlx::query_scalar("SELECT count(*) FROM ordering.orders WHERE campaign_id = $1")
                    .bind(CAMPAIGN)
                    .fetch_one(&pool)
                    .await
                    .ok();
            highest.orders = highest.orders.max(orders.unwrap_or(0));
            if conn.is_none() {
                conn = tokio::time::timeout(
                    Duration::from_millis(200),
                    client.get_multiplexed_async_connection(),
                )
                .await
                .ok()
                .and_then(Result::ok);
            }
            if let Some(c) = conn.as_mut() {
                let read = tokio::time::timeout(
                    Duration::from_millis(200),
                    redis::pipe()
                        .cmd("HGET")
                        .arg(&keys.meta)
                        .arg("sold")
                        .cmd("GET")
                        .arg(&keys.stock)
                        .query_async::<(Option<i64>, Option<i64>)>(c),
                )
                .await;
                match read {
                    Ok(Ok((sold, stock))) => {
                        highest.redis_samples += 1;
                        highest.sold = highest.sold.max(sold.unwrap_or(0));
                        if let Some(stock) = stock {
                            highest.lowest_stock = highest.lowest_stock.min(stock);
                        }
                    }
                    // Down, or loading its file: reconnect next time.
                    _ => conn = None,
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        highest
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seckill_fails_closed_while_redis_is_down_and_never_oversells() {
    let scenario = Instant::now();
    // `appendfsync always`: this test holds every acknowledged reservation to the exact stock.
    // With production's `everysec`, a busy disk lets Redis postpone the AOF write for up to 2 s,
    // so a kill can lose reservations it already answered; they are then sold again, as the
    // README's "When Redis loses its data" describes (seen once here under the full suite's
    // disk load: 61 answers of 202 for 60 vouchers, 60 orders).
    let mut redis = PrivateRedis::start(Persistence::AppendOnlyAlways);
    let app = start_app(&redis.url()).await;
    put_campaign(&app).await;
    let keys = CampaignKeys::new(&app.keyspace, CAMPAIGN);
    let mut conn = redis.connection().await;
    let stock: Option<i64> = redis::cmd("GET")
        .arg(&keys.stock)
        .query_async(&mut conn)
        .await
        .expect("stock");
    assert_eq!(
        stock,
        Some(i64::try_from(STOCK).expect("stock")),
        "campaign loaded"
    );
    let setup = scenario.elapsed();

    let watching = Arc::new(AtomicBool::new(true));
    let watcher = watch(
        app.pool.clone(),
        redis.url(),
        keys.clone(),
        Arc::clone(&watching),
    );
    let url = format!(
        "{}/v1/seckill/{}/orders",
        app.base,
        CAMPAIGN.replace('/', "%2F")
    );
    let answered = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let buyers: Vec<_> = (0..BUYERS)
        .map(|index| {
            let token = app.token(&format!("buyer-{index:03}"), &["customer"]);
            tokio::spawn(buyer(
                app.client.clone(),
                url.clone(),
                (index, token),
                start,
                Arc::clone(&answered),
            ))
        })
        .collect();
    while answered.load(Ordering::SeqCst) < BUYERS * KILL_AFTER_PERCENT / 100 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the burst never got going"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    redis.kill();
    let killed_at = Instant::now();
    let answered_at_kill = answered.load(Ordering::SeqCst);
    // One more user hammering without pause through the outage: far above both limits.
    let hammering = Arc::new(AtomicBool::new(true));
    let hammer = tokio::spawn({
        let (client, url, token) = (
            app.client.clone(),
            url.clone(),
            app.token("hammer", &["customer"]),
        );
        let hammering = Arc::clone(&hammering);
        async move {
            let mut attempts = Vec::new();
            while hammering.load(Ordering::SeqCst) {
                let mut done = attempt(&client, &url, &token, None).await;
                done.buyer = "hammer".to_owned();
                attempts.push(done);
            }
            attempts
        }
    });
    tokio::time::sleep(OUTAGE).await;
    hammering.store(false, Ordering::SeqCst);
    let hammered = hammer.await.expect("hammer");
    let restarting_at = Instant::now();
    tokio::task::block_in_place(|| redis.start_again());
    let listening_at = Instant::now();

    let mut attempts: Vec<Attempt> = hammered.clone();
    for handle in buyers {
        attempts.extend(handle.await.expect("buyer"));
    }
    let burst = start.elapsed();

    // During the outage (sent after the kill, answered before the restart began): 503
    // seckill-unavailable, fast; never a reservation, never a 429.
    let outage: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.sent_at >= killed_at && a.answered_at < restarting_at)
        .collect();
    let outage_answers = tally(outage.iter().map(|a| a.kind()));
    let latencies = Latencies(
        outage
            .iter()
            .map(|a| a.answered_at - a.sent_at)
            .collect::<Vec<_>>(),
    );
    println!(
        "seckill with Redis killed: {} buyers + the hammer, {} attempts; killed {} ms into the \
         burst after {answered_at_kill} answers; outage answers {outage_answers:?} ({latencies}); \
         hammer {} attempts; Redis listening {} ms after the restart began",
        BUYERS,
        attempts.len(),
        (killed_at - start).as_millis(),
        hammered.len(),
        (listening_at - restarting_at).as_millis(),
    );
    let mut slowest: Vec<(u128, u128)> = outage
        .iter()
        .map(|a| {
            (
                (a.answered_at - a.sent_at).as_millis(),
                (a.sent_at - killed_at).as_millis(),
            )
        })
        .collect();
    slowest.sort_unstable();
    slowest.reverse();
    slowest.truncate(10);
    println!("slowest outage attempts (ms taken, sent ms after the kill): {slowest:?}");
    assert!(
        hammered.len() >= 10,
        "the hammer made only {} attempts during the outage",
        hammered.len()
    );
    let wrong: Vec<&&Attempt> = outage
        .iter()
        .filter(|a| a.status != 503 || problem_kind(&a.body) != "seckill-unavailable")
        .collect();
    assert!(
        wrong.is_empty(),
        "attempts during the outage must answer 503 seckill-unavailable (no 202, no 429): \
         {outage_answers:?}; e.g. {:#?}",
        wrong.iter().take(5).collect::<Vec<_>>()
    );
    let detected = Latencies(
        outage
            .iter()
            .filter(|a| a.sent_at >= killed_at + DETECTION)
            .map(|a| a.answered_at - a.sent_at)
            .collect::<Vec<_>>(),
    );
    println!(
        "outage attempts sent {} ms or more after the kill: {detected}",
        DETECTION.as_millis()
    );
    assert!(
        detected.len() >= 20,
        "too few attempts after the breaker opened: {detected}"
    );
    assert!(
        detected.percentile(0.99) < FAIL_FAST_P99,
        "attempts during the outage failed too slowly once detected: {detected}"
    );
    assert!(
        latencies.percentile(1.0) < FAIL_AT_MOST,
        "an attempt during the outage took longer than the response timeout: {latencies}"
    );

    // The final answers: exactly the stock won, once per winner; the others sold out.
    let mut finals: HashMap<String, &Attempt> = HashMap::new();
    for a in attempts.iter().filter(|a| a.buyer != "hammer") {
        let latest = finals.entry(a.buyer.clone()).or_insert(a);
        if a.sent_at > latest.sent_at {
            *latest = a;
        }
    }
    assert_eq!(finals.len(), BUYERS);
    let final_answers = tally(finals.values().map(|a| a.kind()));
    let all_answers = tally(attempts.iter().map(Attempt::kind));
    println!("final answers {final_answers:?}; every answer {all_answers:?}");
    let mut winners: HashMap<String, String> = HashMap::new();
    for (buyer, a) in &finals {
        match (a.status, problem_kind(&a.body).as_str()) {
            (202, _) => {
                let id = a.body["orderId"].as_str().expect("orderId").to_owned();
                winners.insert(buyer.clone(), id);
            }
            (409, "seckill-sold-out") => {}
            _ => panic!("{buyer} ended with {a:?} (answers {final_answers:?})"),
        }
    }
    // Every 202 a buyer got names the same order.
    for a in attempts.iter().filter(|a| a.status == 202) {
        assert_eq!(
            a.body["orderId"].as_str(),
            winners.get(&a.buyer).map(String::as_str),
            "{} got two reservations",
            a.buyer
        );
    }
    assert_eq!(
        winners.len(),
        STOCK,
        "exactly the stock is won: {final_answers:?}"
    );

    // Every reservation becomes one order, the winner's, and never more than the stock.
    let waited = Instant::now();
    let orders: Vec<(String, String)> = loop {
        let orders: Vec<(String, String)> = sqlx::query_as(
            "SELECT user_subject, id::text FROM ordering.orders WHERE campaign_id = $1",
        )
        .bind(CAMPAIGN)
        .fetch_all(&app.pool)
        .await
        .expect("orders");
        assert!(
            orders.len() <= STOCK,
            "more orders than the stock: {orders:?}"
        );
        if orders.len() == STOCK {
            break orders;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "{} orders of {STOCK} 30 s after the burst",
            orders.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let orders_after = waited.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    watching.store(false, Ordering::SeqCst);
    let highest = watcher.await.expect("watcher");
    let mut per_buyer: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (buyer, id) in orders {
        per_buyer.entry(buyer).or_default().push(id);
    }
    let twice: Vec<_> = per_buyer.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(twice.is_empty(), "buyers holding two orders: {twice:?}");
    let stored: HashMap<String, String> = per_buyer
        .into_iter()
        .map(|(buyer, mut ids)| (buyer, ids.remove(0)))
        .collect();
    assert_eq!(stored, winners, "the orders are the winners' reservations");

    let sales: Vec<(String, i64)> = sqlx::query_as(
        "SELECT buyer_subject, count(*) FROM marketing.seckill_sales
         WHERE campaign_id = $1 AND status <> 'CANCELLED' GROUP BY buyer_subject",
    )
    .bind(CAMPAIGN)
    .fetch_all(&app.pool)
    .await
    .expect("sales");
    let sold_durably: i64 = sales.iter().map(|(_, n)| n).sum();
    assert!(
        sales.iter().all(|(_, n)| *n == 1),
        "a buyer with two durable sales: {sales:?}"
    );
    assert!(
        sold_durably <= i64::try_from(STOCK).expect("stock"),
        "{sold_durably} durable sales"
    );
    let unknown: Vec<&String> = sales
        .iter()
        .map(|(buyer, _)| buyer)
        .filter(|buyer| !winners.contains_key(*buyer))
        .collect();
    assert!(
        unknown.is_empty(),
        "durable sales of non-winners: {unknown:?}"
    );

    let mut conn = redis.connection().await;
    let (sold, stock): (Option<i64>, Option<i64>) = redis::pipe()
        .cmd("HGET")
        .arg(&keys.meta)
        .arg("sold")
        .cmd("GET")
        .arg(&keys.stock)
        .query_async(&mut conn)
        .await
        .expect("counters");
    let stock_n = i64::try_from(STOCK).expect("stock");
    assert_eq!((sold, stock), (Some(stock_n), Some(0)), "Redis counters");
    assert!(
        highest.orders <= stock_n && highest.sold <= stock_n && highest.lowest_stock >= 0,
        "oversold during the burst: {highest:?}"
    );
    println!(
        "highest during the run {highest:?}; {sold_durably} durable sales so far; all {STOCK} \
         orders {} ms after the burst; setup {} ms, burst {} ms, scenario {} ms",
        orders_after.as_millis(),
        setup.as_millis(),
        burst.as_millis(),
        scenario.elapsed().as_millis()
    );
}

fn tally(items: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for item in items {
        *out.entry(item).or_default() += 1;
    }
    out
}
