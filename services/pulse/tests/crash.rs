//! A `pulse` process killed with `kill -9` in the middle of a burst of writes, and a new one
//! started on the same ports: every client that retries with its `Idempotency-Key` (on
//! connection errors and 5xx) ends with the answer of what happened, nothing is done twice,
//! nothing is refused falsely, every committed effect's event reaches Kafka, and a key caught by
//! the crash works again within [`USABLE_WITHIN`] of the new process being ready. Bursts:
//! bookings (`POST /v1/appointments`), product orders (`POST /v1/orders`) and seckill attempts.
//!
//! The real binary (`CARGO_BIN_EXE_pulse`) runs against the servers `./dev test` provides, with
//! its own database, keyspace (`PULSE_INSTANCE`) and fixed ports, so the second process is, for
//! the clients, the same server come back. Each process's log is in
//! `$TMPDIR/pulse-crash<instance>/`.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Ports, Process};
use pulse_kit::envelope::EventEnvelope;
use pulse_kit::testing::{self, TestDatabase};
use rskafka::client::partition::UnknownTopicHandling;
use serde_json::{Value, json};
use sqlx::PgPool;

/// Patients, each booking its own slot.
const PATIENTS: usize = 150;
/// Buyers, each ordering one unit of one product.
const BUYERS: usize = 80;
/// Practitioners the slots are spread over (events of one practitioner are ordered, so their
/// bookings queue on one outbox key).
const PRACTITIONERS: usize = 40;
/// Partitions of the topics the processes create.
const PARTITIONS: &str = "3";
/// Clients start over this window, so the burst is still going when the process dies.
const STAGGER: Duration = Duration::from_millis(1000);
/// Share of the clients answered when the process is killed, in percent.
const KILL_AFTER_PERCENT: usize = 40;
/// The scenarios measure times: they run one at a time, not against each other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// A retry must have its answer within this after the new process is ready (`/readyz` 200).
/// Measured from readiness, not from the kill: how long a new process takes to start is the
/// platform's business (in a cluster the other replicas serve meanwhile); what this bounds is
/// that nothing the dead process held — an idempotency key, a lock — keeps its requests waiting.
const USABLE_WITHIN: Duration = Duration::from_secs(2);

/// One country deployment of the binary: its database, keyspace and ports, which every process
/// of the test shares.
struct Deployment {
    db: TestDatabase,
    /// `--target` of its processes.
    target: &'static str,
    /// Settings of the scenario, on top of the common ones.
    settings: Vec<(&'static str, &'static str)>,
    instance: String,
    http: u16,
    grpc: u16,
    admin: u16,
    logs: PathBuf,
    client: reqwest::Client,
}

impl Deployment {
    /// A deployment of `target` with `settings`, and its first process, ready.
    async fn start(
        target: &'static str,
        settings: &[(&'static str, &'static str)],
    ) -> (Arc<Self>, Process) {
        let mut deployment = Self::new(target, settings).await;
        for _ in 0..5 {
            let mut first = deployment.spawn(1);
            if deployment.ready_or_port_taken(&mut first).await {
                return (Arc::new(deployment), first);
            }
            (deployment.http, deployment.grpc, deployment.admin) = (
                pulse_kit::testing::free_port(),
                pulse_kit::testing::free_port(),
                pulse_kit::testing::free_port(),
            );
        }
        panic!("no free ports for pulse after 5 tries");
    }

    /// Waits until `process` is ready; `false` if it could not listen on its ports (something
    /// else took one since they were chosen).
    async fn ready_or_port_taken(&self, process: &mut Process) -> bool {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(_)) = process.child.try_wait() {
                let log = std::fs::read_to_string(&process.log).unwrap_or_default();
                assert!(
                    log.contains("Address already in use"),
                    "pulse exited before it was ready:\n{}",
                    process.log_tail()
                );
                return false;
            }
            let probe = self
                .client
                .get(format!("{}/readyz", self.base()))
                .timeout(Duration::from_millis(500))
                .send()
                .await;
            if probe.is_ok_and(|r| r.status() == 200) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("pulse not ready within 60 s:\n{}", process.log_tail());
    }

    async fn new(target: &'static str, settings: &[(&'static str, &'static str)]) -> Self {
        let db = TestDatabase::create().await;
        let instance = format!("crash{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let logs = std::env::temp_dir().join(format!("pulse-{instance}"));
        std::fs::create_dir_all(&logs).expect("log directory");
        Self {
            db,
            target,
            settings: settings.to_vec(),
            http: pulse_kit::testing::free_port(),
            grpc: pulse_kit::testing::free_port(),
            admin: pulse_kit::testing::free_port(),
            instance,
            logs,
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(1024)
                .timeout(Duration::from_secs(10))
                .build()
                .expect("HTTP client"),
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    fn keyspace(&self) -> String {
        format!("fr-{}", self.instance)
    }

    /// Starts process number `generation`.
    fn spawn(&self, generation: usize) -> Process {
        let log = self.logs.join(format!("pulse-{generation}.log"));
        let ports = Ports {
            http: self.http,
            grpc: self.grpc,
            admin: self.admin,
        };
        let mut command = common::serve(self.target, &self.db.url, &self.instance, ports);
        command
            .env("PULSE_KAFKA_PARTITIONS", PARTITIONS)
            // Enough for two cores; fewer cold connections to open after the restart (each is a
            // SCRAM handshake, slow in an unoptimised build).
            .env("PULSE_DB_MAX_CONNECTIONS", "4")
            .env("PULSE_COUNTRY__BOOKING__HORIZON_DAYS", "60")
            .env("PULSE_COUNTRY__RATE_LIMITS__REQUESTS_PER_SECOND", "1000000")
            .env("PULSE_COUNTRY__RATE_LIMITS__BURST", "1000000")
            // Every process of the deployment accepts the sandbox's signed webhooks.
            .env("PULSE_PAYMENT_WEBHOOK_SECRET", "whsec_crash-test")
            .envs(self.settings.iter().copied());
        Process::spawn(command, log)
    }

    /// Waits until `path` on the public listener answers 200; returns when it did.
    async fn wait_for(&self, process: &mut Process, path: &str, timeout: Duration) -> Instant {
        let started = Instant::now();
        let url = format!("{}{path}", self.base());
        loop {
            let probe = self
                .client
                .get(&url)
                .timeout(Duration::from_millis(500))
                .send()
                .await;
            if probe.is_ok_and(|r| r.status() == 200) {
                return Instant::now();
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!(
                    "pulse exited ({status}) before {path} answered:\n{}",
                    process.log_tail()
                );
            }
            assert!(
                started.elapsed() < timeout,
                "{path} did not answer within {timeout:?}:\n{}",
                process.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn pool(&self) -> PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(&self.db.url)
            .await
            .expect("test pool")
    }
}

/// One client's operation: who sends which body where.
struct Call {
    caller: String,
    token: String,
    path: String,
    body: Value,
}

/// What one client ended with.
#[derive(Debug)]
struct Outcome {
    caller: String,
    /// The `Idempotency-Key` every attempt carried.
    key: String,
    status: u16,
    body: Value,
    replayed: bool,
    attempts: u32,
    /// When each failed attempt ended, and with which status (0: no answer).
    failures: Vec<(Instant, u16)>,
    answered_at: Instant,
}

/// Client `index` of `count`: starts at its place in the [`STAGGER`] window, then sends `call`
/// with one `Idempotency-Key`, retrying on connection errors and 5xx until it gets another
/// answer.
async fn client(
    deployment: Arc<Deployment>,
    call: Call,
    (index, count): (usize, usize),
    start: Instant,
    answered: Arc<AtomicUsize>,
) -> Outcome {
    let key = format!("crash-{index}-{}", uuid::Uuid::new_v4().simple());
    let url = format!("{}{}", deployment.base(), call.path);
    #[allow(clippy::cast_precision_loss)]
    let offset = STAGGER.mul_f64(index as f64 / count as f64);
    tokio::time::sleep_until((start + offset).into()).await;
    let give_up = Instant::now() + Duration::from_secs(60);
    let mut attempts = 0;
    let mut failures = Vec::new();
    loop {
        attempts += 1;
        let sent = deployment
            .client
            .post(&url)
            .bearer_auth(&call.token)
            .header("Idempotency-Key", &key)
            .json(&call.body)
            .send()
            .await;
        match sent {
            Ok(response) if !response.status().is_server_error() => {
                let status = response.status().as_u16();
                let replayed = response.headers().contains_key("idempotent-replayed");
                let body = response.json().await.unwrap_or(Value::Null);
                answered.fetch_add(1, Ordering::SeqCst);
                return Outcome {
                    caller: call.caller,
                    key,
                    status,
                    body,
                    replayed,
                    attempts,
                    failures,
                    answered_at: Instant::now(),
                };
            }
            Ok(response) => failures.push((Instant::now(), response.status().as_u16())),
            Err(_) => failures.push((Instant::now(), 0)),
        }
        assert!(
            Instant::now() < give_up,
            "{} got no answer in 60 s ({attempts} attempts; last statuses, 0 = no answer: {:?})",
            call.caller,
            failures
                .iter()
                .rev()
                .take(5)
                .map(|(_, status)| status)
                .collect::<Vec<_>>()
        );
        // Backoff doubling from 50 ms to 100 ms, plus up to as much jitter: a well-behaved
        // client.
        let backoff = 25_u64 << failures.len().min(2);
        let jitter = (index as u64 * 7919 + u64::from(attempts) * 104_729) % backoff;
        tokio::time::sleep(Duration::from_millis(backoff + jitter)).await;
    }
}

/// A burst of clients across a `kill -9`: what they ended with and when things happened.
struct CrashRun {
    outcomes: Vec<Outcome>,
    start: Instant,
    killed_at: Instant,
    /// When the new process answered on its public listener.
    up_at: Instant,
    /// When it was ready (`/readyz`).
    ready_at: Instant,
    answered_at_kill: usize,
    /// `effects` counted just after the kill.
    effects_at_kill: i64,
    /// The new process.
    second: Process,
}

/// Sends `calls` as a staggered burst; once [`KILL_AFTER_PERCENT`] of them are answered, `kill -9`s
/// `first` and starts a new process on the same ports; returns when every client has its
/// answer. `effects` counts the committed effects (for the report).
async fn burst_across_a_crash(
    deployment: &Arc<Deployment>,
    mut first: Process,
    calls: Vec<Call>,
    effects: &str,
    pool: &PgPool,
) -> CrashRun {
    let count = calls.len();
    let answered = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let clients: Vec<_> = calls
        .into_iter()
        .enumerate()
        .map(|(index, call)| {
            tokio::spawn(client(
                Arc::clone(deployment),
                call,
                (index, count),
                start,
                Arc::clone(&answered),
            ))
        })
        .collect();
    while answered.load(Ordering::SeqCst) < count * KILL_AFTER_PERCENT / 100 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the burst never got going:\n{}",
            first.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    first.kill();
    let killed_at = Instant::now();
    let answered_at_kill = answered.load(Ordering::SeqCst);
    let effects_at_kill: i64 = sqlx::query_scalar(effects)
        .fetch_one(pool)
        .await
        .expect("count");
    let mut second = deployment.spawn(2);
    // Up: its listener answers (earlier than ready, which a load balancer would wait for).
    let up_at = deployment
        .wait_for(&mut second, "/livez", Duration::from_secs(30))
        .await;
    let ready_at = deployment
        .wait_for(&mut second, "/readyz", Duration::from_secs(30))
        .await;
    let mut outcomes = Vec::new();
    for client in clients {
        outcomes.push(client.await.expect("client"));
    }
    CrashRun {
        outcomes,
        start,
        killed_at,
        up_at,
        ready_at,
        answered_at_kill,
        effects_at_kill,
        second,
    }
}

impl CrashRun {
    /// Prints what happened; fails if a key caught by the crash took longer than
    /// [`USABLE_WITHIN`] plus `held_for` after the new process was ready to get its answer.
    /// `held_for` is how long the dead process may hold something by design (a product permit
    /// until its TTL).
    fn report(&self, what: &str, setup: Duration, scenario: Instant, held_for: Duration) {
        // Clients caught by the crash: how soon after the new process was ready they had their
        // answer.
        let mut after_restart: Vec<Duration> = self
            .outcomes
            .iter()
            .filter(|o| o.failures.iter().any(|(at, _)| *at >= self.killed_at))
            .map(|o| o.answered_at.saturating_duration_since(self.ready_at))
            .collect();
        after_restart.sort();
        let retried = after_restart.len();
        let slowest = after_restart.last().copied().unwrap_or_default();
        let median = after_restart.get(retried / 2).copied().unwrap_or_default();
        let replayed = self.outcomes.iter().filter(|o| o.replayed).count();
        let attempts: u32 = self.outcomes.iter().map(|o| o.attempts).sum();
        let failed_after_up: BTreeMap<u16, usize> = self
            .outcomes
            .iter()
            .flat_map(|o| o.failures.iter().filter(|(at, _)| *at >= self.up_at))
            .fold(BTreeMap::new(), |mut count, (_, status)| {
                *count.entry(*status).or_default() += 1;
                count
            });
        let burst = self
            .outcomes
            .iter()
            .map(|o| o.answered_at)
            .max()
            .unwrap_or(self.start)
            - self.start;
        println!(
            "crash scenario ({what}): {} clients, {attempts} attempts; killed {} ms into the \
             burst after {} answers ({} effects committed); new process up {} ms after the kill, \
             ready {} ms after that; {retried} clients retried across the crash, {replayed} \
             answers replayed; key usable again after the new process was ready: median {} ms, \
             slowest {} ms (failed attempts after it by status, 0 = no answer: \
             {failed_after_up:?}); setup {} ms, burst {} ms, scenario {} ms",
            self.outcomes.len(),
            millis(self.killed_at - self.start),
            self.answered_at_kill,
            self.effects_at_kill,
            millis(self.up_at - self.killed_at),
            millis(self.ready_at - self.up_at),
            millis(median),
            millis(slowest),
            millis(setup),
            millis(burst),
            millis(scenario.elapsed()),
        );
        assert!(retried > 0, "no client was caught by the crash");
        let bound = USABLE_WITHIN + held_for;
        assert!(
            slowest <= bound,
            "a key caught by the crash took {slowest:?} after the new process was ready to get \
             its answer (at most {bound:?})"
        );
    }

    /// The clients whose final answer is not `status` with the `id` `stored` has for them.
    fn wrong_answers<'a>(
        &'a self,
        status: u16,
        stored: &HashMap<String, String>,
    ) -> Vec<&'a Outcome> {
        self.outcomes
            .iter()
            .filter(|o| {
                o.status != status
                    || o.body["id"].as_str() != stored.get(&o.caller).map(String::as_str)
            })
            .collect()
    }
}

/// Creates the practitioners through the API; returns the first `count` bookable slots.
async fn open_slots(deployment: &Deployment, pool: &PgPool, count: usize) -> Vec<String> {
    let admin = testing::token("crash-admin", &["admin"], "FR");
    let morning = json!([{ "start": "09:00", "end": "10:00" }]);
    for n in 0..PRACTITIONERS {
        let body = json!({
            "name": format!("Dr Crash {n}"),
            "specialty": "general-practice",
            "city": "Paris",
            "address": "1 rue de la Paix",
            "latitude": 48.8566,
            "longitude": 2.3522,
            "languages": ["fr"],
            "consultationPriceMinor": 2500,
            "accountSubject": format!("crash-doctor-{n}"),
            "schedule": {
                "slotMinutes": 30,
                "weekly": { "Mon": morning, "Tue": morning, "Wed": morning, "Thu": morning,
                            "Fri": morning, "Sat": morning, "Sun": morning }
            }
        });
        let response = deployment
            .client
            .post(format!("{}/v1/practitioners", deployment.base()))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .expect("create practitioner");
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
    }
    let slots: Vec<String> = sqlx::query_scalar(
        "SELECT id::text FROM booking.slots
         WHERE status = 'free' AND starts_at > now() + interval '1 day'
         ORDER BY starts_at, practitioner_id LIMIT $1",
    )
    .bind(i64::try_from(count).expect("count"))
    .fetch_all(pool)
    .await
    .expect("slots");
    assert_eq!(slots.len(), count, "enough slots");
    slots
}

/// The `event_type` events of `topic`, as `id_field` of their payload → event ids, read from
/// every partition until every id of `want` is there (or 30 s passed).
async fn events_on(
    topic: &str,
    event_type: &str,
    id_field: &str,
    want: &HashSet<String>,
) -> HashMap<String, HashSet<String>> {
    let kafka = pulse_kit::kafka::KafkaHandle::new(testing::kafka_brokers());
    let client = kafka.client().await.expect("Kafka client");
    let deadline = Instant::now() + Duration::from_secs(30);
    let partitions: Vec<i32> = loop {
        let topics = client.list_topics().await.expect("topics");
        if let Some(found) = topics.iter().find(|t| t.name == topic) {
            break found.partitions.iter().copied().collect();
        }
        assert!(Instant::now() < deadline, "topic {topic} never appeared");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut readers = Vec::new();
    for partition in partitions {
        let reader = client
            .partition_client(topic.to_owned(), partition, UnknownTopicHandling::Retry)
            .await
            .expect("partition client");
        readers.push((reader, 0_i64));
    }
    let mut events: HashMap<String, HashSet<String>> = HashMap::new();
    loop {
        for (reader, next) in &mut readers {
            loop {
                let (records, high) = reader
                    .fetch_records(*next, 1..10_000_000, 100)
                    .await
                    .expect("fetch");
                for record in records {
                    *next = record.offset + 1;
                    let Some(value) = record.record.value else {
                        continue;
                    };
                    let envelope: EventEnvelope =
                        serde_json::from_slice(&value).expect("an event envelope");
                    if envelope.event_type == event_type {
                        let id = envelope.payload[id_field]
                            .as_str()
                            .unwrap_or_else(|| panic!("{id_field} in {envelope:?}"))
                            .to_owned();
                        events
                            .entry(id)
                            .or_default()
                            .insert(envelope.id.to_string());
                    }
                }
                if *next >= high {
                    break;
                }
            }
        }
        if want.iter().all(|id| events.contains_key(id)) || Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every id of `committed` has its `event_type` on `component`'s topic, twice only as the same
/// event; and `component`'s outbox drains.
async fn assert_events_published(
    deployment: &Deployment,
    run: &CrashRun,
    pool: &PgPool,
    (component, event_type, id_field): (&str, &str, &str),
    committed: &HashSet<String>,
) {
    let topic = format!("pulse.{}.{component}.events", deployment.keyspace());
    let events = events_on(&topic, event_type, id_field, committed).await;
    let missing: Vec<&String> = committed
        .iter()
        .filter(|id| !events.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} {event_type} events missing from {topic}: {missing:?}",
        missing.len()
    );
    let twice: Vec<_> = events.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "two different events for one effect: {twice:?}"
    );
    let drain = Instant::now();
    loop {
        let unpublished: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {component}.outbox WHERE published_at IS NULL"
        ))
        .fetch_one(pool)
        .await
        .expect("outbox");
        if unpublished == 0 {
            return;
        }
        assert!(
            drain.elapsed() < Duration::from_secs(30),
            "{unpublished} outbox rows never published:\n{}",
            run.second.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn millis(d: Duration) -> u128 {
    d.as_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bookings_survive_kill_9_mid_burst() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let scenario = Instant::now();
    let (deployment, first) = Deployment::start("booking", &[]).await;
    let pool = deployment.pool().await;
    let slots = open_slots(&deployment, &pool, PATIENTS).await;
    let setup = scenario.elapsed();

    let calls = slots
        .iter()
        .enumerate()
        .map(|(index, slot)| {
            let patient = format!("crash-patient-{index:03}");
            Call {
                token: testing::token(&patient, &["patient"], "FR"),
                caller: patient,
                path: "/v1/appointments".to_owned(),
                body: json!({ "slotId": slot }),
            }
        })
        .collect();
    let run = burst_across_a_crash(
        &deployment,
        first,
        calls,
        "SELECT count(*) FROM booking.appointments",
        &pool,
    )
    .await;

    // From PostgreSQL: one active appointment per slot, one per patient, on the slot the
    // patient asked for, and it is the one the patient was told about.
    let doubles: Vec<String> = sqlx::query_scalar(
        "SELECT slot_id::text FROM booking.appointments WHERE status = 'booked'
         GROUP BY slot_id HAVING count(*) > 1",
    )
    .fetch_all(&pool)
    .await
    .expect("doubles");
    assert!(doubles.is_empty(), "slots booked twice: {doubles:?}");
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT patient_subject, id::text, slot_id::text, status::text FROM booking.appointments",
    )
    .fetch_all(&pool)
    .await
    .expect("appointments");
    let mut stored: BTreeMap<String, Vec<(String, String, String)>> = BTreeMap::new();
    for (patient, id, slot, status) in rows {
        stored.entry(patient).or_default().push((id, slot, status));
    }
    assert_eq!(stored.len(), PATIENTS, "every patient has an appointment");
    let mut appointment_of = HashMap::new();
    for (index, slot) in slots.iter().enumerate() {
        let patient = format!("crash-patient-{index:03}");
        let mine = &stored[&patient];
        assert_eq!(
            mine.len(),
            1,
            "{patient}: exactly one appointment: {mine:?}"
        );
        let (id, booked_slot, status) = &mine[0];
        assert_eq!(
            (booked_slot, status.as_str()),
            (slot, "booked"),
            "{patient}"
        );
        appointment_of.insert(patient, id.clone());
    }
    let wrong = run.wrong_answers(201, &appointment_of);
    assert!(
        wrong.is_empty(),
        "{} patients were not answered 201 with their stored appointment: {wrong:#?}",
        wrong.len()
    );

    let committed = appointment_of.values().cloned().collect();
    assert_events_published(
        &deployment,
        &run,
        &pool,
        ("booking", "AppointmentBooked", "appointmentId"),
        &committed,
    )
    .await;
    run.report("booking", setup, scenario, Duration::ZERO);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn product_orders_survive_kill_9_mid_burst() {
    // Permits the killed process held free themselves after their TTL (10 s by default; 1 s
    // here, so the keys' recovery bound is measured, not the fuse).
    product_orders_across_a_crash(
        &[("PULSE_ORDERING_PERMIT_TTL_SECONDS", "1")],
        Duration::from_secs(1),
    )
    .await;
}

/// The same with the product permits out of the way: the checkout's own crash safety.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn product_orders_survive_kill_9_mid_burst_without_the_permit_limit() {
    product_orders_across_a_crash(
        &[("PULSE_ORDERING_PRODUCT_PERMITS", "10000")],
        Duration::ZERO,
    )
    .await;
}

/// Product orders across a crash, with `settings`; `permits_held_for` is how long the permits
/// of the dead process keep blocking (their TTL).
async fn product_orders_across_a_crash(
    settings: &[(&'static str, &'static str)],
    permits_held_for: Duration,
) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let scenario = Instant::now();
    let (deployment, first) = Deployment::start("ordering,marketing", settings).await;
    let pool = deployment.pool().await;
    // Exactly one unit per buyer: a unit lost or taken twice refuses someone.
    let response = deployment
        .client
        .post(format!("{}/v1/products", deployment.base()))
        .bearer_auth(testing::token("crash-admin", &["admin"], "FR"))
        .json(&json!({ "name": "Crash kit", "priceMinor": 1999, "stock": BUYERS }))
        .send()
        .await
        .expect("create product");
    assert_eq!(response.status(), 201);
    let product: Value = response.json().await.expect("json");
    let product = product["id"].as_str().expect("product id").to_owned();
    let setup = scenario.elapsed();

    let calls = (0..BUYERS)
        .map(|index| {
            let buyer = format!("crash-buyer-{index:03}");
            Call {
                token: testing::token(&buyer, &["customer"], "FR"),
                caller: buyer,
                path: "/v1/orders".to_owned(),
                body: json!({ "productId": product, "quantity": 1 }),
            }
        })
        .collect();
    let run = burst_across_a_crash(
        &deployment,
        first,
        calls,
        "SELECT count(*) FROM ordering.orders",
        &pool,
    )
    .await;

    // From PostgreSQL: one order per buyer, the stock taken once per order, and each buyer was
    // told about their order.
    let rows: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT user_subject, id::text, quantity FROM ordering.orders WHERE kind = 'PRODUCT'",
    )
    .fetch_all(&pool)
    .await
    .expect("orders");
    let mut stored: BTreeMap<String, Vec<(String, i32)>> = BTreeMap::new();
    for (buyer, id, quantity) in rows {
        stored.entry(buyer).or_default().push((id, quantity));
    }
    let mut order_of = HashMap::new();
    for index in 0..BUYERS {
        let buyer = format!("crash-buyer-{index:03}");
        let mine = stored.get(&buyer).cloned().unwrap_or_default();
        assert_eq!(mine.len(), 1, "{buyer}: exactly one order: {mine:?}");
        order_of.insert(buyer, mine[0].0.clone());
    }
    assert_eq!(stored.len(), BUYERS, "orders of strangers: {stored:?}");
    let stock: i32 = sqlx::query_scalar("SELECT stock FROM ordering.products WHERE id = $1::uuid")
        .bind(&product)
        .fetch_one(&pool)
        .await
        .expect("stock");
    assert_eq!(stock, 0, "one unit taken per order");
    let wrong = run.wrong_answers(201, &order_of);
    assert!(
        wrong.is_empty(),
        "{} buyers were not answered 201 with their stored order: {wrong:#?}",
        wrong.len()
    );

    let committed = order_of.values().cloned().collect();
    assert_events_published(
        &deployment,
        &run,
        &pool,
        ("ordering", "OrderCreated", "orderId"),
        &committed,
    )
    .await;
    run.report("product orders", setup, scenario, permits_held_for);
    pool.close().await;
}

/// Seckill buyers: more than the stock, each attempting once (with retries on the same key).
const SECKILL_BUYERS: usize = 120;
/// The seckill campaign's stock.
const SECKILL_STOCK: usize = 60;

/// Seckill attempts across a `kill -9` of the process (Redis stays up): exactly the stock is
/// won, every winner is told its reservation (a retry with its key gets the same order id, never
/// `seckill-already-bought`), and every reservation becomes exactly one order, its winner's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seckill_attempts_survive_kill_9_mid_burst() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let scenario = Instant::now();
    // Retries of one buyer must not meet the per-user attempt limit: only the crash is tested.
    let (deployment, first) = Deployment::start(
        "ordering,marketing",
        &[(
            "PULSE_COUNTRY__RATE_LIMITS__SECKILL_ATTEMPTS_PER_SECOND",
            "1000",
        )],
    )
    .await;
    let pool = deployment.pool().await;
    let campaign = "crash/flash-sale";
    // The window, from PostgreSQL's clock (this crate has no date library).
    let (starts_at, ends_at): (String, String) = sqlx::query_as(
        "SELECT to_char((now() - interval '5 seconds') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                to_char((now() + interval '1 hour') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
    )
    .fetch_one(&pool)
    .await
    .expect("window");
    let response = deployment
        .client
        .put(format!(
            "{}/v1/campaigns/{}",
            deployment.base(),
            campaign.replace('/', "%2F")
        ))
        .bearer_auth(testing::token("crash-admin", &["admin"], "FR"))
        .json(&json!({
            "voucherTitle": "10 € off any order",
            "voucherValueMinor": 1000,
            "currency": "EUR",
            "priceMinor": 100,
            "stock": SECKILL_STOCK,
            "perUserLimit": 1,
            "startsAt": starts_at,
            "endsAt": ends_at,
        }))
        .send()
        .await
        .expect("put campaign");
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let keys = pulse_marketing::reservation::CampaignKeys::new(&deployment.keyspace(), campaign);
    // The stock straight from Redis (this crate has no Redis client of its own: a script
    // through the kit's handle).
    let handle = pulse_kit::redis::RedisHandle::new(&testing::redis_url()).expect("Redis");
    let get = Arc::new(pulse_kit::redis::LuaScript::new(
        "return redis.call('GET', KEYS[1])",
    ));
    let mut redis = handle.connection().await.expect("Redis connection");
    let stock_at_start: Option<i64> = get
        .run(&mut redis, &[&keys.stock], &[])
        .await
        .expect("stock");
    assert_eq!(
        stock_at_start,
        Some(i64::try_from(SECKILL_STOCK).expect("stock")),
        "campaign loaded"
    );
    let setup = scenario.elapsed();

    // The stock as Redis has it, every few milliseconds, through the burst: its lowest value.
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = tokio::spawn({
        let watching = Arc::clone(&watching);
        let stock_key = keys.stock.clone();
        let get = Arc::clone(&get);
        async move {
            let mut lowest = i64::MAX;
            let mut samples = 0_u64;
            while watching.load(Ordering::SeqCst) {
                let stock: Option<i64> = get
                    .run(&mut redis, &[&stock_key], &[])
                    .await
                    .expect("stock");
                if let Some(stock) = stock {
                    lowest = lowest.min(stock);
                    samples += 1;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (lowest, samples, redis)
        }
    });

    let path = format!("/v1/seckill/{}/orders", campaign.replace('/', "%2F"));
    let calls = (0..SECKILL_BUYERS)
        .map(|index| {
            let buyer = format!("crash-seckill-{index:03}");
            Call {
                token: testing::token(&buyer, &["customer"], "FR"),
                caller: buyer,
                path: path.clone(),
                body: json!({}),
            }
        })
        .collect();
    let run = burst_across_a_crash(
        &deployment,
        first,
        calls,
        "SELECT count(*) FROM ordering.orders WHERE kind = 'SECKILL'",
        &pool,
    )
    .await;

    // The answers: exactly the stock won, one order id each; the others sold out, and nobody
    // was refused as having bought already (every buyer tries once: only a reservation the
    // buyer's own earlier attempt made, answered or not, could make that answer).
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    for o in &run.outcomes {
        let what = if o.status == 202 {
            "202".to_owned()
        } else {
            format!("{} {}", o.status, testing::problem_kind(&o.body))
        };
        *answers.entry(what).or_default() += 1;
    }
    let winners: HashMap<String, String> = run
        .outcomes
        .iter()
        .filter(|o| o.status == 202)
        .map(|o| {
            let id = o.body["orderId"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: no orderId in {}", o.caller, o.body));
            (o.caller.clone(), id.to_owned())
        })
        .collect();
    assert_eq!(
        winners.len(),
        SECKILL_STOCK,
        "exactly the stock is won; answers: {answers:?}"
    );
    let losers: Vec<&Outcome> = run
        .outcomes
        .iter()
        .filter(|o| o.status != 202)
        .filter(|o| o.status != 409 || testing::problem_kind(&o.body) != "seckill-sold-out")
        .collect();
    assert!(
        losers.is_empty(),
        "a buyer without a voucher must have been told sold-out (false refusals): {losers:#?}"
    );
    let distinct: HashSet<&String> = winners.values().collect();
    assert_eq!(distinct.len(), SECKILL_STOCK, "one order id per winner");

    // Each buyer asks again with its key: a winner gets its reservation again, never
    // already-bought; a buyer refused stays refused.
    let mut false_refusals = Vec::new();
    for o in &run.outcomes {
        let response = deployment
            .client
            .post(format!("{}{path}", deployment.base()))
            .bearer_auth(testing::token(&o.caller, &["customer"], "FR"))
            .header("Idempotency-Key", &o.key)
            .json(&json!({}))
            .send()
            .await
            .expect("retry");
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let same = match winners.get(&o.caller) {
            Some(id) => status == 202 && body["orderId"].as_str() == Some(id.as_str()),
            None => status == 409 && testing::problem_kind(&body) == "seckill-sold-out",
        };
        if !same {
            false_refusals.push((o.caller.clone(), o.status, status, body));
        }
    }
    assert!(
        false_refusals.is_empty(),
        "a retry with the same key did not get the same answer (buyer, first, retry, body): \
         {false_refusals:#?}"
    );

    // From PostgreSQL: exactly one order per reservation, the winner's, with the id it was told.
    let orders_at = Instant::now();
    let rows: Vec<(String, String)> = loop {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT user_subject, id::text FROM ordering.orders WHERE campaign_id = $1",
        )
        .bind(campaign)
        .fetch_all(&pool)
        .await
        .expect("orders");
        assert!(
            rows.len() <= SECKILL_STOCK,
            "more orders than the stock: {rows:?}"
        );
        if rows.len() == SECKILL_STOCK {
            break rows;
        }
        assert!(
            orders_at.elapsed() < Duration::from_secs(30),
            "{} orders of {SECKILL_STOCK} after 30 s:\n{}",
            rows.len(),
            run.second.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let orders_after = orders_at.elapsed();
    // A moment more: no reservation turns into a second order.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ordering.orders WHERE campaign_id = $1")
            .bind(campaign)
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(
        count,
        i64::try_from(SECKILL_STOCK).expect("stock"),
        "orders"
    );
    let mut stored: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (buyer, id) in rows {
        stored.entry(buyer).or_default().push(id);
    }
    let twice: Vec<_> = stored.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(twice.is_empty(), "buyers with two orders: {twice:?}");
    let stored: HashMap<String, String> = stored
        .into_iter()
        .map(|(buyer, mut ids)| (buyer, ids.remove(0)))
        .collect();
    assert_eq!(
        stored, winners,
        "the orders are the winners' reservations, with the ids they were told"
    );

    watching.store(false, Ordering::SeqCst);
    let (lowest, samples, mut redis) = watcher.await.expect("watcher");
    let stock: Option<i64> = get
        .run(&mut redis, &[&keys.stock], &[])
        .await
        .expect("stock");
    assert_eq!(stock, Some(0), "Redis stock ends at 0");
    assert!(
        lowest >= 0,
        "Redis stock went negative ({lowest}) during the burst"
    );
    println!(
        "crash scenario (seckill): answers {answers:?}; Redis stock lowest {lowest} over \
         {samples} samples; all {SECKILL_STOCK} orders {} ms after the burst",
        millis(orders_after)
    );
    run.report("seckill", setup, scenario, Duration::ZERO);
    pool.close().await;
}
