//! Fault tests: Pulse against servers that fail under it. Each scenario starts its own server
//! of the kind it breaks (see `pulse_e2e::support`), never the shared ones, and checks the
//! invariants from the servers' own state: PostgreSQL rows, Redis keys, and an independent
//! read of the Kafka topic.
//!
//! - Redis `kill -9` mid-burst of bookings (restarted from its append-only file, and empty):
//!   bookings stay exactly-once through the database, answers stay fast, rate limits fail open.
//! - The Kafka broker paused for 10 s: bookings go on, the outbox holds the events, every
//!   committed appointment reaches the topic, the backlog is gone soon after the resume.
//! - PostgreSQL stopped and started mid-burst: 503 problem+json while it is down (never 500,
//!   never half an effect), readiness follows, the pools recover without a server restart.
//! - The breaker in front of Redis: calls fail in milliseconds while it is open and it closes
//!   again after Redis restarts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pulse_e2e::support::{
    self, Booked, Latencies, Persistence, PrivateKafka, PrivatePostgres, PrivateRedis,
};
use pulse_kit::breaker::BreakerState;
use pulse_kit::metrics::Metrics;
use pulse_kit::redis::RedisHandle;
use pulse_kit::settings::Secret;
use pulse_kit::testing::{self, TestApp, eventually, metric_value, unique};
use serde_json::Value;

// ------------------------------------------------------------------ the booking burst

/// One request of a burst, with what is needed to replay it.
#[derive(Debug, Clone)]
struct Sent {
    booked: Booked,
    token: String,
    key: String,
}

/// Patients booking the slots of one practitioner, three per slot, `workers` requests at a
/// time, until stopped.
struct Burst {
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<Sent>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Burst {
    fn start(
        app: &TestApp,
        slots: Vec<String>,
        workers: usize,
        pause: Duration,
        epoch: Instant,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let next = Arc::new(AtomicUsize::new(0));
        let slots = Arc::new(slots);
        let workers = (0..workers)
            .map(|_| {
                let (stop, sent, next, slots) = (
                    Arc::clone(&stop),
                    Arc::clone(&sent),
                    Arc::clone(&next),
                    Arc::clone(&slots),
                );
                let client = app.client.clone();
                let base = app.base.clone();
                let country = app.country.code.clone();
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        // Three requests in a row race for one slot: one books it, the
                        // others get 409, whether the Redis lock or the database decides.
                        let slot = &slots[(i / 3) % slots.len()];
                        // One patient per request: the daily limit is one appointment.
                        let token = testing::token(&format!("patient-{i}"), &["patient"], &country);
                        let key = unique("burst");
                        let booked = support::book(&client, &base, &token, slot, &key, epoch).await;
                        sent.lock().expect("lock").push(Sent { booked, token, key });
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            sent,
            workers,
        }
    }

    async fn finish(self) -> Vec<Sent> {
        self.stop.store(true, Ordering::SeqCst);
        for worker in self.workers {
            worker.await.expect("burst worker");
        }
        self.sent.lock().expect("lock").clone()
    }
}

fn count_by_status(sent: &[Sent]) -> BTreeMap<u16, usize> {
    let mut counts = BTreeMap::new();
    for s in sent {
        *counts.entry(s.booked.status).or_default() += 1;
    }
    counts
}

fn latencies(sent: &[Sent], window: std::ops::Range<Duration>) -> Latencies {
    Latencies(
        sent.iter()
            .filter(|s| window.contains(&s.booked.sent_at))
            .map(|s| s.booked.latency)
            .collect(),
    )
}

fn created_ids(sent: &[Sent]) -> BTreeSet<String> {
    sent.iter()
        .filter(|s| s.booked.status == 201)
        .map(|s| {
            s.booked.body["id"]
                .as_str()
                .expect("appointment id")
                .to_owned()
        })
        .collect()
}

/// Booking's invariants in PostgreSQL: at most one active appointment per slot, a slot is
/// `booked` exactly when it has one, every active appointment has its `AppointmentBooked` event
/// in the outbox. Returns the ids of the active appointments.
async fn check_database(pool: &sqlx::PgPool) -> BTreeSet<String> {
    let doubles: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT slot_id FROM booking.appointments WHERE status = 'booked'
                               GROUP BY slot_id HAVING count(*) > 1) d",
    )
    .fetch_one(pool)
    .await
    .expect("doubles");
    assert_eq!(doubles, 0, "a slot with two active appointments");
    let mismatched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM booking.slots s
         WHERE (s.status = 'booked') <> EXISTS (
             SELECT 1 FROM booking.appointments a WHERE a.slot_id = s.id AND a.status = 'booked')",
    )
    .fetch_one(pool)
    .await
    .expect("slot states");
    assert_eq!(
        mismatched, 0,
        "slots whose status disagrees with their appointments"
    );
    let without_event: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM booking.appointments a WHERE a.status = 'booked' AND NOT EXISTS (
             SELECT 1 FROM booking.outbox o WHERE o.event_type = 'AppointmentBooked'
               AND o.envelope->'payload'->>'appointmentId' = a.id::text)",
    )
    .fetch_one(pool)
    .await
    .expect("events");
    assert_eq!(
        without_event, 0,
        "appointments committed without their event"
    );
    sqlx::query_scalar::<_, String>(
        "SELECT id::text FROM booking.appointments WHERE status = 'booked'",
    )
    .fetch_all(pool)
    .await
    .expect("appointments")
    .into_iter()
    .collect()
}

/// Statuses other than `allowed`, or a 4xx/5xx that is not problem+json.
fn assert_answers(sent: &[Sent], allowed: &[u16]) {
    for s in sent {
        assert!(
            allowed.contains(&s.booked.status),
            "unexpected answer {} at {:?} after {:?}: {}",
            s.booked.status,
            s.booked.sent_at,
            s.booked.latency,
            s.booked.body
        );
        if s.booked.status >= 400 {
            assert_eq!(
                s.booked.content_type, "application/problem+json",
                "{}",
                s.booked.body
            );
        }
        if s.booked.status == 409 {
            let kind = testing::problem_kind(&s.booked.body);
            assert!(
                kind == "slot-taken" || kind == "slot-being-booked",
                "{}",
                s.booked.body
            );
        }
    }
}

async fn booking_app(configure: impl FnOnce(&mut pulse_kit::server::ServerSettings)) -> TestApp {
    TestApp::start_with(
        vec![Arc::new(pulse_booking::Booking)],
        testing::france(),
        configure,
    )
    .await
}

async fn wait_ready(app: &TestApp, within: Duration) -> Duration {
    let started = Instant::now();
    eventually("/readyz 200", within, || async {
        app.client
            .get(format!("{}/readyz", app.base))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    started.elapsed()
}

async fn slots_of_a_new_practitioner(app: &TestApp, days: i64) -> Vec<String> {
    let practitioner = support::practitioner(&app.client, &app.base, &app.admin()).await;
    let slots = support::free_slots(&app.client, &app.base, &practitioner, 2, 1 + days).await;
    assert!(slots.len() > 90, "free slots: {}", slots.len());
    slots
}

// ------------------------------------------------------------------ Redis killed

async fn redis_killed_mid_burst(persistence: Persistence) {
    let mut redis = PrivateRedis::start(persistence);
    let url = redis.url();
    let app = booking_app(|s| s.redis_url = Secret::new(url)).await;
    wait_ready(&app, Duration::from_secs(15)).await;
    let slots = slots_of_a_new_practitioner(&app, 6).await;

    // A key written well before the crash: the append-only file has it on disk within 1 s.
    let marker = format!("{}:fault-marker", app.keyspace);
    let _: () = redis::AsyncCommands::set(&mut redis.connection().await, &marker, "kept")
        .await
        .expect("marker");
    let bypassed_before = app.metric("pulse_booking_slot_lock_bypassed_total").await;

    let epoch = Instant::now();
    let burst = Burst::start(&app, slots, 3, Duration::from_millis(20), epoch);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed_at = epoch.elapsed();
    redis.kill();
    // The breaker opens and the admin listener shows it.
    eventually(
        "the Redis breaker opens",
        Duration::from_secs(10),
        || async { app.metric("pulse_redis_breaker_state").await >= 2.0 },
    )
    .await;
    let opened_after = epoch.elapsed() - killed_at;
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(opened_after)).await;
    let restarted_at = epoch.elapsed();
    redis.start_again();
    eventually(
        "the Redis breaker closes",
        Duration::from_secs(15),
        || async { app.metric("pulse_redis_breaker_state").await == 0.0 },
    )
    .await;
    let closed_after = epoch.elapsed() - restarted_at;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = burst.finish().await;
    let ended_at = epoch.elapsed();

    let counts = count_by_status(&sent);
    let before = latencies(&sent, Duration::ZERO..killed_at);
    let during = latencies(&sent, killed_at..restarted_at);
    let after = latencies(&sent, restarted_at + closed_after..ended_at);
    println!(
        "Redis ({persistence:?}) killed at {killed_at:?}, breaker open {opened_after:?} later, \
         restarted at {restarted_at:?}, breaker closed {closed_after:?} later; answers {counts:?}"
    );
    println!("  before the kill:   {before}");
    println!("  during the outage: {during}");
    println!("  after recovery:    {after}");

    // Only bookings and conflicts, never an error: the database is the guard.
    assert_answers(&sent, &[201, 409]);
    assert!(
        sent.iter().any(
            |s| s.booked.status == 201 && (killed_at..restarted_at).contains(&s.booked.sent_at)
        ),
        "bookings are accepted while Redis is down"
    );
    assert!(during.len() >= 10, "requests during the outage: {during}");
    // Alone this measures 99–295 ms; the bound leaves room for the rest of the suite on two
    // cores and is still far below the seconds each request waited before the Redis breaker.
    assert!(
        during.percentile(0.99) < Duration::from_millis(1500),
        "answers stay fast while Redis is down: {during}"
    );
    // Exactly once: every 201 is one row, every active row was answered 201.
    let active = check_database(&app.pool).await;
    let created = created_ids(&sent);
    assert_eq!(
        created.len(),
        counts.get(&201).copied().unwrap_or(0),
        "two 201 answers for one appointment"
    );
    assert_eq!(
        active, created,
        "active appointments are exactly the 201 answers"
    );

    // Rate limits failed open (no 429 above) and were counted.
    assert!(app.metric("pulse_rate_limit_unavailable_total").await > 0.0);
    assert!(
        app.metric("pulse_booking_slot_lock_bypassed_total").await > bypassed_before,
        "bookings went on without the Redis lock"
    );

    // Redis's own state after the restart.
    let mut conn = redis.connection().await;
    let kept: Option<String> = redis::AsyncCommands::get(&mut conn, &marker)
        .await
        .expect("get");
    match persistence {
        Persistence::AppendOnly | Persistence::AppendOnlyAlways => {
            assert_eq!(kept.as_deref(), Some("kept"), "AOF reloaded");
        }
        Persistence::None => assert_eq!(kept, None, "restarted empty"),
    }
    // No slot lock outlives its TTL, even one held at the kill and reloaded from the AOF.
    eventually("no slot lock is left", Duration::from_secs(10), || {
        let mut conn = conn.clone();
        async move {
            // KEYS is fine on this test's own small Redis.
            let locks: Vec<String> = redis::cmd("KEYS")
                .arg("*slot-lock*")
                .query_async(&mut conn)
                .await
                .expect("keys");
            locks.is_empty()
        }
    })
    .await;

    // Recovered: a retry of a booking made during the outage answers the stored 201, and a
    // new booking takes the Redis lock again.
    let first = sent
        .iter()
        .find(|s| s.booked.status == 201 && s.booked.sent_at >= killed_at)
        .expect("a booking during the outage");
    let replay = support::book(
        &app.client,
        &app.base,
        &first.token,
        first.booked.body["slotId"].as_str().expect("slot"),
        &first.key,
        epoch,
    )
    .await;
    assert_eq!(replay.status, 201, "{}", replay.body);
    assert_eq!(replay.body["id"], first.booked.body["id"]);
    let bypassed = app.metric("pulse_booking_slot_lock_bypassed_total").await;
    let practitioner = first.booked.body["practitionerId"]
        .as_str()
        .expect("practitioner");
    let free = support::free_slots(&app.client, &app.base, practitioner, 2, 7).await;
    let token = app.token("after-recovery", &["patient"]);
    let again = support::book(
        &app.client,
        &app.base,
        &token,
        &free[0],
        &unique("after"),
        epoch,
    )
    .await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(
        app.metric("pulse_booking_slot_lock_bypassed_total").await,
        bypassed,
        "the Redis lock is used again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_mid_burst_then_restarted_from_its_append_only_file() {
    redis_killed_mid_burst(Persistence::AppendOnly).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_mid_burst_then_restarted_empty() {
    redis_killed_mid_burst(Persistence::None).await;
}

// ------------------------------------------------------------------ the Redis breaker

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_breaker_fails_fast_while_open_and_closes_after_a_restart() {
    let mut redis = PrivateRedis::start(Persistence::None);
    let handle = RedisHandle::new(&redis.url()).expect("url");
    let metrics = Metrics::new();
    handle.register_metrics(&metrics);
    let mut conn = handle.connection().await.expect("connect");
    let _: () = redis::AsyncCommands::set(&mut conn, "k", "v")
        .await
        .expect("set");
    assert_eq!(handle.breaker_state(), BreakerState::Closed);

    redis.kill();
    let killed = Instant::now();
    eventually("the breaker opens", Duration::from_secs(10), || async {
        handle.breaker_state() == BreakerState::Open
    })
    .await;
    println!("breaker open {:?} after kill -9", killed.elapsed());
    assert_eq!(
        metric_value(&metrics.encode(), "pulse_redis_breaker_state"),
        2.0
    );

    // While open, every call fails at once, as a caller sees it (connection, then a command).
    let mut calls = Latencies::default();
    for _ in 0..200 {
        let started = Instant::now();
        let outcome = match handle.connection().await {
            Ok(mut conn) => redis::AsyncCommands::get::<_, Option<String>>(&mut conn, "k")
                .await
                .map(|_| ()),
            Err(err) => Err(err),
        };
        calls.0.push(started.elapsed());
        assert!(outcome.is_err(), "Redis is down");
    }
    println!("calls while the breaker is open: {calls}");
    assert!(
        calls.percentile(1.0) < Duration::from_millis(50),
        "calls while open: {calls}"
    );
    assert!(
        metric_value(
            &metrics.encode(),
            "pulse_redis_breaker_rejected_calls_total"
        ) >= 200.0
    );
    assert!(handle.ping().await.is_err());

    // Redis comes back: a trial succeeds and the circuit closes by itself.
    redis.start_again();
    let restarted = Instant::now();
    eventually("the breaker closes", Duration::from_secs(15), || async {
        handle.breaker_state() == BreakerState::Closed
    })
    .await;
    println!("breaker closed {:?} after the restart", restarted.elapsed());
    let mut conn = handle
        .connection()
        .await
        .expect("connection after recovery");
    let _: () = redis::AsyncCommands::set(&mut conn, "k", "again")
        .await
        .expect("set after recovery");
    handle.ping().await.expect("ping after recovery");
    assert_eq!(
        metric_value(&metrics.encode(), "pulse_redis_breaker_state"),
        0.0
    );
}

// ------------------------------------------------------------------ Kafka paused

/// Every `AppointmentBooked` event's appointment id on `topic`, read from offset 0 to the
/// high watermark of each partition with a client of our own.
async fn booked_events_on(brokers: Vec<String>, topic: &str) -> Vec<String> {
    use rskafka::client::ClientBuilder;
    use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
    let client = ClientBuilder::new(brokers)
        .build()
        .await
        .expect("kafka client");
    let partitions: Vec<i32> = client
        .list_topics()
        .await
        .expect("topics")
        .into_iter()
        .find(|t| t.name == topic)
        .map(|t| t.partitions.into_iter().collect())
        .unwrap_or_else(|| panic!("topic {topic} does not exist"));
    let mut ids = Vec::new();
    for partition in partitions {
        let pc = client
            .partition_client(topic.to_owned(), partition, UnknownTopicHandling::Error)
            .await
            .expect("partition client");
        let end = pc
            .get_offset(OffsetAt::Latest)
            .await
            .expect("high watermark");
        let mut next = 0;
        while next < end {
            let (records, _) = pc
                .fetch_records(next, 1..10_000_000, 500)
                .await
                .expect("fetch");
            for record in records {
                next = next.max(record.offset + 1);
                let value = record.record.value.unwrap_or_default();
                let envelope: Value = serde_json::from_slice(&value).expect("envelope JSON");
                if envelope["type"] == "AppointmentBooked" {
                    ids.push(
                        envelope["payload"]["appointmentId"]
                            .as_str()
                            .expect("appointmentId")
                            .to_owned(),
                    );
                }
            }
        }
    }
    ids
}

async fn unpublished(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM booking.outbox WHERE published_at IS NULL")
        .fetch_one(pool)
        .await
        .expect("outbox")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_paused_bookings_go_on_and_every_event_reaches_the_topic() {
    let mut kafka = PrivateKafka::start();
    let brokers = kafka.brokers();
    let app = booking_app(|s| s.kafka_brokers = brokers.clone()).await;
    wait_ready(&app, Duration::from_secs(15)).await;
    let slots = slots_of_a_new_practitioner(&app, 6).await;
    // The relay has published the practitioner's events: the topic exists.
    eventually(
        "the outbox is published",
        Duration::from_secs(20),
        || async { unpublished(&app.pool).await == 0 },
    )
    .await;

    let epoch = Instant::now();
    let burst = Burst::start(&app, slots, 6, Duration::from_millis(20), epoch);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let paused_at = epoch.elapsed();
    kafka.pause();
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Readiness reports the broker and stays 200.
    let (status, readiness) = app.get(None, "/readyz").await;
    assert_eq!(
        status, 200,
        "Kafka down does not make the pod unready: {readiness}"
    );
    assert!(
        readiness["checks"]["kafka"]
            .as_str()
            .is_some_and(|c| c.starts_with("down")),
        "{readiness}"
    );
    let held = unpublished(&app.pool).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let resumed_at = epoch.elapsed();
    kafka.resume();
    let resumed = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = burst.finish().await;
    eventually("the outbox drains", Duration::from_secs(30), || async {
        unpublished(&app.pool).await == 0
    })
    .await;
    let drained = resumed.elapsed();
    eventually(
        "the lag metric is back to zero",
        Duration::from_secs(10),
        || async { app.metric("pulse_outbox_publish_lag_seconds").await == 0.0 },
    )
    .await;
    let lag_zero = resumed.elapsed();
    let counts = count_by_status(&sent);
    let during = latencies(&sent, paused_at..resumed_at);
    println!(
        "broker paused at {paused_at:?} for {:?}; {held} events held in the outbox 4 s into the \
         pause; outbox drained {drained:?} and lag 0 {lag_zero:?} after the resume; answers \
         {counts:?}; during the pause: {during}",
        resumed_at - paused_at
    );

    assert_answers(&sent, &[201, 409]);
    let created_during_pause = sent
        .iter()
        .filter(|s| s.booked.status == 201 && (paused_at..resumed_at).contains(&s.booked.sent_at))
        .count();
    assert!(
        created_during_pause > 0,
        "bookings accepted while the broker is paused"
    );
    assert!(
        held > 0,
        "the outbox holds events while the broker is paused"
    );
    assert!(
        lag_zero <= Duration::from_secs(10),
        "lag back to zero {lag_zero:?} after the resume"
    );

    let active = check_database(&app.pool).await;
    assert_eq!(active, created_ids(&sent));
    let topic = pulse_kit::kafka::events_topic(&app.keyspace, "booking");
    let on_topic: Vec<String> = booked_events_on(kafka.brokers(), &topic).await;
    let distinct: BTreeSet<String> = on_topic.iter().cloned().collect();
    println!(
        "{} appointments, {} AppointmentBooked records on {topic} ({} duplicates)",
        active.len(),
        on_topic.len(),
        on_topic.len() - distinct.len()
    );
    let missing: Vec<_> = active.difference(&distinct).collect();
    assert!(
        missing.is_empty(),
        "appointments whose event never reached the topic: {missing:?}"
    );
    let phantom: Vec<_> = distinct.difference(&active).collect();
    assert!(
        phantom.is_empty(),
        "events of appointments that do not exist: {phantom:?}"
    );
}

// ------------------------------------------------------------------ PostgreSQL restarted

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarted_mid_burst_answers_503_and_recovers_without_a_server_restart() {
    let pg = Arc::new(PrivatePostgres::start());
    let name = format!(
        "pulse_fault_{}",
        &pulse_kit::new_id().simple().to_string()[..12]
    );
    pg.create_database(&name).await;
    let db = testing::TestDatabase {
        url: pg.url(&name),
        name,
    };
    let app = TestApp::start_on(
        db,
        vec![Arc::new(pulse_booking::Booking)],
        testing::france(),
        |s| s.db_max_connections = 8,
    )
    .await;
    wait_ready(&app, Duration::from_secs(15)).await;
    let slots = slots_of_a_new_practitioner(&app, 6).await;

    let epoch = Instant::now();
    let burst = Burst::start(&app, slots, 8, Duration::from_millis(10), epoch);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stopped_at = epoch.elapsed();
    let stopping = Arc::clone(&pg);
    tokio::task::spawn_blocking(move || stopping.stop())
        .await
        .expect("pg_ctl stop");
    let started = Instant::now();
    loop {
        let (status, body) = app.get(None, "/readyz").await;
        if status == 503 {
            assert!(
                body["checks"]["postgres"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("down")),
                "{body}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "/readyz still {status} 10 s after the database stopped: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let unready_after = epoch.elapsed() - stopped_at;
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(unready_after)).await;
    let restarted_at = epoch.elapsed();
    let starting = Arc::clone(&pg);
    tokio::task::spawn_blocking(move || starting.start_again())
        .await
        .expect("pg_ctl start");
    let ready_after = wait_ready(&app, Duration::from_secs(30)).await;
    let ready_at = epoch.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = burst.finish().await;
    let ended_at = epoch.elapsed();

    let counts = count_by_status(&sent);
    println!(
        "PostgreSQL stopped at {stopped_at:?}, /readyz 503 {unready_after:?} later, started at \
         {restarted_at:?}, /readyz 200 {ready_after:?} later; answers {counts:?}"
    );
    println!(
        "  while down: {}",
        latencies(&sent, stopped_at..restarted_at)
    );
    println!("  after:      {}", latencies(&sent, ready_at..ended_at));

    // While the database is down: 503 problem+json, never 500.
    assert_answers(&sent, &[201, 409, 503]);
    for s in sent.iter().filter(|s| s.booked.status == 503) {
        assert_eq!(
            testing::problem_kind(&s.booked.body),
            "service-unavailable",
            "{}",
            s.booked.body
        );
    }
    assert!(
        counts.get(&503).copied().unwrap_or(0) > 0,
        "requests while the database is down are refused: {counts:?}"
    );
    // The pools recovered without a restart: bookings succeed again.
    assert!(
        sent.iter()
            .any(|s| s.booked.status == 201 && s.booked.sent_at >= ready_at),
        "bookings succeed after the database is back: {counts:?}"
    );
    // Never half an effect: appointments, slots and events agree; every 201 is a row, and a row
    // without a 201 can only be one whose commit reached the database as the server went down
    // (its answer was a 503).
    let active = check_database(&app.pool).await;
    let created = created_ids(&sent);
    assert!(created.is_subset(&active), "a 201 without its row");
    let unanswered = active.len() - created.len();
    assert!(
        unanswered <= counts.get(&503).copied().unwrap_or(0),
        "{unanswered} rows without a 201"
    );
    // The relay recovered too: the outbox drains.
    eventually("the outbox drains", Duration::from_secs(30), || async {
        unpublished(&app.pool).await == 0
    })
    .await;
}
