//! `./dev bench events`: the event backbone end to end. Events are appended to booking's
//! transactional outbox at a sustained rate, in small transactions, while a separate
//! `pulse serve --target all` relays them to Kafka; a consumer group of the kit's consumer
//! runtime (its own group, in this process) reads them back. The lag of an event is the time
//! it was received minus the time it was appended. Beside it, the same pacing straight to and
//! from the broker with rskafka (no outbox, no PostgreSQL): the floor of any event path on
//! this broker.
//!
//! Every appended event must be received (at least once: duplicates are counted, not failed),
//! in order per key, and the producers must keep the rate; otherwise the bench fails.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use async_trait::async_trait;
use pulse_kit::EventEnvelope;
use pulse_kit::consumer::{Consumer, ConsumerConfig, EventHandler, HandlerError};
use pulse_kit::kafka::{KafkaHandle, partition_for};
use pulse_kit::metrics::Metrics;
use pulse_kit::outbox::{HEADER_COUNTRY, HEADER_EVENT_ID, HEADER_EVENT_TYPE, Outbox};
use pulse_kit::testing::{self, TestDatabase};
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::record::Record;
use serde_json::{Value, json};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;

use super::server::ServerProcess;
use super::{Measurement, print_table};

/// Events per second, for Pulse and the reference alike.
const RATE: u64 = 5_000;
/// One transaction (one produce call for the reference) every tick, ms...
const TICK_MS: u64 = 10;
/// ...of this many events: `RATE` per second.
const BATCH: u64 = RATE * TICK_MS / 1000;
/// The tick.
const TICK: Duration = Duration::from_millis(TICK_MS);
/// Producers appending at once (each its own connection), so one slow commit does not hold the
/// schedule back.
const PRODUCERS: usize = 4;
/// How long the rate is kept, unless `PULSE_BENCH_EVENTS_SECONDS` says otherwise.
const DEFAULT_SECONDS: u64 = 60;
/// Overrides `DEFAULT_SECONDS` (a quick run).
const SECONDS_VAR: &str = "PULSE_BENCH_EVENTS_SECONDS";
/// Aggregates (partition keys) the transactions rotate over; each transaction appends its
/// events under one of them, as a flow appends the events of the aggregate it changed.
const KEYS: u64 = 1_024;
/// The share of `RATE` the producers must reach for the run to count.
const RATE_TOLERANCE: f64 = 0.99;
/// The goal: lag p99 under this.
const TARGET_P99: Duration = Duration::from_secs(1);
/// After the producers stop, how long the consumer may go without receiving anything new
/// before what is missing counts as lost.
const DRAIN_QUIET: Duration = Duration::from_secs(30);
/// Events of the warm-up (topic made, relay and consumer connected), one per key, not measured.
const WARMUP_EVENTS: u64 = 30;
/// The type of the bench's events: no consumer of the server acts on it.
const EVENT_TYPE: &str = "BenchEventAppended";
/// The bench's consumer group on booking's events.
const GROUP: &str = "bench-events";
/// Partitions of the topics (the server runs with `PULSE_KAFKA_PARTITIONS=3`).
const PARTITIONS: i32 = 3;

/// The current time, µs since the Unix epoch: the clock both the appender and the receiver
/// read, in one process.
fn unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The payload of event `seq`, appended under aggregate `key`.
fn payload(seq: u64, key: u64) -> Value {
    json!({ "seq": seq, "key": key, "appendedAtUs": unix_micros() })
}

/// The payload of warm-up event `n`.
fn warmup_payload(n: u64) -> Value {
    json!({ "warmup": n })
}

/// The seconds to run: `PULSE_BENCH_EVENTS_SECONDS`, else `DEFAULT_SECONDS`.
fn seconds() -> anyhow::Result<u64> {
    match std::env::var(SECONDS_VAR) {
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(seconds) if seconds > 0 => Ok(seconds),
            _ => bail!("{SECONDS_VAR}={text}: expected a whole number of seconds > 0"),
        },
        Err(_) => Ok(DEFAULT_SECONDS),
    }
}

/// What one system did, beyond its table row.
struct Run {
    measured: Measurement,
    /// Events the producers were asked for.
    expected: u64,
    /// Events appended (committed) or produced.
    appended: u64,
    /// Events appended per second over the producing window.
    append_rate: f64,
    /// How late the latest producer started a batch against the schedule.
    max_behind: Duration,
    /// Appended events never received.
    lost: u64,
    /// Receptions beyond the first of an event.
    duplicates: u64,
    /// Records on the topic beyond one per event (published again), warm-up aside.
    republished: u64,
    /// Events received before an earlier event of the same key.
    out_of_order: u64,
    /// The largest lag.
    max_lag: Duration,
}

impl Run {
    /// Why the run does not count, if it does not.
    fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        let system = &self.measured.system;
        if self.lost > 0 {
            failures.push(format!("{system}: {} events lost", self.lost));
        }
        if self.out_of_order > 0 {
            failures.push(format!(
                "{system}: {} events out of order per key",
                self.out_of_order
            ));
        }
        if self.appended < self.expected || self.append_rate < RATE as f64 * RATE_TOLERANCE {
            failures.push(format!(
                "{system}: the rate was not sustained ({} of {} events, {:.0}/s of {RATE}/s)",
                self.appended, self.expected, self.append_rate
            ));
        }
        failures
    }

    fn describe(&self) -> String {
        format!(
            "{}: {} events appended at {:.0}/s (a producer at most {:.1} ms behind schedule); \
             {} received, {} lost, {} received twice ({} published twice), {} out of order \
             per key; max lag {:.1} ms",
            self.measured.system,
            self.appended,
            self.append_rate,
            self.max_behind.as_secs_f64() * 1000.0,
            self.measured.succeeded,
            self.lost,
            self.duplicates,
            self.republished,
            self.out_of_order,
            self.max_lag.as_secs_f64() * 1000.0,
        )
    }
}

/// Runs Pulse, then the reference, and prints one table, the ratio and the verdict. Fails if
/// an event is lost or reordered, or the rate was not sustained.
pub async fn run() -> anyhow::Result<()> {
    let seconds = seconds()?;
    let db = TestDatabase::create().await;
    // The server's pools serve little more than heartbeats here (the relay and each consumed
    // partition have connections of their own): a small pool keeps the five components well
    // under PostgreSQL's 100 connections.
    let server = ServerProcess::start(&db.url, &[("PULSE_DB_MAX_CONNECTIONS", "8")]).await?;
    eprintln!("bench: metrics at http://{}/metrics", server.admin_addr);
    eprintln!(
        "bench: {RATE} events/s for {seconds} s through booking's outbox, the relay of a separate \
         `pulse serve --target all`, Kafka and a consumer group ({BATCH} events a transaction \
         every {} ms, {PRODUCERS} producers)",
        TICK.as_millis()
    );
    let measured = through_pulse(&db.url, &server.keyspace, seconds).await;
    if let Err(err) = &measured {
        eprintln!("bench: the server's log ends with:\n{}", server.log_tail());
        eprintln!("bench: {err:#}");
    }
    let usage = server.stop().await;
    let mut pulse = measured?;
    pulse.measured.peak_rss_mib = Some(usage.peak_rss_mib);
    let server_cpu = usage.cpu_seconds;

    eprintln!("bench: the same straight to and from the broker with rskafka");
    let reference = straight_to_kafka(seconds).await?;

    println!();
    print_table(&[pulse.measured.clone(), reference.measured.clone()]);
    println!();
    println!(
        "Pulse: {BATCH} events a transaction every {} ms over {PRODUCERS} producers into booking's \
         outbox → the relay of a separate `pulse serve --target all` ({server_cpu:.0} s of CPU) \
         → Kafka → the kit's consumer (group {GROUP}; a transaction per event, per batch when behind).",
        TICK.as_millis()
    );
    println!(
        "rskafka: the same envelopes, {BATCH} a produce call every {} ms over {PRODUCERS} \
         producers, straight to the broker, read back by one fetch loop per partition.",
        TICK.as_millis()
    );
    println!("{}", pulse.describe());
    println!("{}", reference.describe());
    let p99 = pulse.measured.percentile_ms(0.99);
    let reference_p99 = reference.measured.percentile_ms(0.99);
    println!(
        "ratio: Pulse throughput / rskafka {:.2}; lag p99 Pulse {p99:.1} ms vs rskafka \
         {reference_p99:.1} ms (x{:.1})",
        pulse.measured.throughput() / reference.measured.throughput().max(f64::EPSILON),
        p99 / reference_p99.max(f64::EPSILON),
    );
    let failures: Vec<String> = pulse
        .failures()
        .into_iter()
        .chain(reference.failures())
        .collect();
    let target_ms = TARGET_P99.as_secs_f64() * 1000.0;
    let verdict = if !pulse.failures().is_empty() {
        "NOT met: events lost or reordered, or the rate not sustained".to_owned()
    } else if p99 >= target_ms {
        format!("NOT met: lag p99 {p99:.1} ms")
    } else if seconds < DEFAULT_SECONDS {
        format!("lag p99 {p99:.1} ms, but this run lasted {seconds} s, not {DEFAULT_SECONDS}")
    } else {
        format!("met (lag p99 {p99:.1} ms)")
    };
    println!(
        "target (lag p99 < {target_ms:.0} ms at {RATE} events/s for {DEFAULT_SECONDS} s, zero lost): {verdict}"
    );
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(())
}

/// What the receivers saw, shared by the consumer's handler (or the fetch loops) and the bench.
struct Tracker {
    state: Mutex<Received>,
}

struct Received {
    /// Per event seq, its lag in µs at its first reception (`None`: not yet).
    first_lag: Vec<Option<i64>>,
    received: u64,
    duplicates: u64,
    out_of_order: u64,
    /// The last seq received first per key.
    last_of_key: HashMap<u64, u64>,
    warmup: u64,
    /// When an event was last received for the first time.
    last_new: Option<Instant>,
}

impl Tracker {
    fn new(events: u64) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(Received {
                first_lag: vec![None; usize::try_from(events).unwrap_or(0)],
                received: 0,
                duplicates: 0,
                out_of_order: 0,
                last_of_key: HashMap::new(),
                warmup: 0,
                last_new: None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Received> {
        // A panic while holding it leaves only counters behind: still readable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records the reception of the event with `payload`, now.
    fn receive(&self, payload: &Value) -> Result<(), String> {
        let now = unix_micros();
        if payload.get("warmup").is_some() {
            self.lock().warmup += 1;
            return Ok(());
        }
        let field = |name: &str| {
            payload[name]
                .as_i64()
                .ok_or_else(|| format!("event without `{name}`: {payload}"))
        };
        let (seq, key, appended) = (field("seq")?, field("key")?, field("appendedAtUs")?);
        let (Ok(seq), Ok(key)) = (u64::try_from(seq), u64::try_from(key)) else {
            return Err(format!("bad seq or key: {payload}"));
        };
        let mut state = self.lock();
        let Some(slot) = usize::try_from(seq)
            .ok()
            .and_then(|i| state.first_lag.get_mut(i))
        else {
            return Err(format!("seq {seq} was never appended"));
        };
        if slot.is_some() {
            state.duplicates += 1;
            return Ok(());
        }
        *slot = Some(now - appended);
        state.received += 1;
        state.last_new = Some(Instant::now());
        if let Some(previous) = state.last_of_key.insert(key, seq)
            && previous > seq
        {
            state.out_of_order += 1;
        }
        Ok(())
    }

    fn received(&self) -> u64 {
        self.lock().received
    }

    fn warmup(&self) -> u64 {
        self.lock().warmup
    }

    /// Waits until the `WARMUP_EVENTS` are in (within `within`).
    async fn wait_warmup(&self, within: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        while self.warmup() < WARMUP_EVENTS {
            if started.elapsed() > within {
                bail!(
                    "the warm-up events did not arrive within {within:?} ({} of {WARMUP_EVENTS})",
                    self.warmup()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Waits until all `expected` events are in, or none came for `DRAIN_QUIET`.
    async fn drain(&self, expected: u64) {
        let mut quiet_since = Instant::now();
        let mut seen = self.received();
        while seen < expected && quiet_since.elapsed() < DRAIN_QUIET {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = self.received();
            if now != seen {
                seen = now;
                quiet_since = Instant::now();
            }
        }
    }

    /// The run's numbers: `paced` is what the producers did, from `started`.
    fn run(
        &self,
        system: &str,
        expected: u64,
        paced: &Paced,
        started: Instant,
        on_topic: u64,
    ) -> Run {
        let state = self.lock();
        let latencies: Vec<Duration> = state
            .first_lag
            .iter()
            .flatten()
            .map(|&us| Duration::from_micros(u64::try_from(us).unwrap_or(0)))
            .collect();
        let appended = paced.batches * BATCH;
        let end = state.last_new.unwrap_or(started);
        Run {
            max_lag: latencies.iter().max().copied().unwrap_or_default(),
            measured: Measurement {
                scenario: "events".into(),
                system: system.into(),
                concurrency: PRODUCERS,
                requests: usize::try_from(appended).unwrap_or(usize::MAX),
                succeeded: usize::try_from(state.received).unwrap_or(usize::MAX),
                elapsed: end.saturating_duration_since(started),
                latencies,
                peak_rss_mib: None,
            },
            expected,
            appended,
            append_rate: appended as f64 / paced.elapsed.as_secs_f64().max(f64::EPSILON),
            max_behind: paced.max_behind,
            lost: appended.saturating_sub(state.received),
            duplicates: state.duplicates,
            republished: on_topic.saturating_sub(appended + WARMUP_EVENTS),
            out_of_order: state.out_of_order,
        }
    }
}

/// Receives booking's events in the kit's consumer.
struct Receiver(Arc<Tracker>);

#[async_trait]
impl EventHandler for Receiver {
    async fn handle(
        &self,
        _tx: &mut PgConnection,
        event: &EventEnvelope,
    ) -> Result<(), HandlerError> {
        if event.event_type != EVENT_TYPE {
            return Ok(());
        }
        Ok(self.0.receive(&event.payload)?)
    }
}

/// What the paced producers did.
struct Paced {
    /// Batches appended (each `BATCH` events).
    batches: u64,
    /// From the first batch's due time to the last batch's commit.
    elapsed: Duration,
    /// How late the latest batch started against its due time.
    max_behind: Duration,
}

/// Calls `send(k)` for batches `0..batches`, batch `k` due at `TICK * k` after the start, from
/// `PRODUCERS` tasks at once: open loop, so a slow batch makes the next ones late (and shows in
/// `max_behind`) rather than lowering the rate unnoticed.
async fn pace<F, Fut>(batches: u64, send: F) -> anyhow::Result<Paced>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let send = Arc::new(send);
    let next = Arc::new(AtomicU64::new(0));
    let started = tokio::time::Instant::now();
    let mut producers = tokio::task::JoinSet::new();
    for _ in 0..PRODUCERS {
        let (send, next) = (Arc::clone(&send), Arc::clone(&next));
        producers.spawn(async move {
            let mut done = 0u64;
            let mut max_behind = Duration::ZERO;
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= batches {
                    break;
                }
                let due = started + TICK * u32::try_from(k).unwrap_or(u32::MAX);
                tokio::time::sleep_until(due).await;
                max_behind = max_behind.max(due.elapsed());
                send(k).await.with_context(|| format!("batch {k}"))?;
                done += 1;
            }
            Ok::<_, anyhow::Error>((done, max_behind))
        });
    }
    let mut paced = Paced {
        batches: 0,
        elapsed: Duration::ZERO,
        max_behind: Duration::ZERO,
    };
    let mut failure = None;
    while let Some(joined) = producers.join_next().await {
        match joined.context("a producer task") {
            Ok(Ok((done, behind))) => {
                paced.batches += done;
                paced.max_behind = paced.max_behind.max(behind);
            }
            Ok(Err(err)) | Err(err) => {
                // The others stop at the end of the schedule; the first error is the story.
                failure.get_or_insert(err);
            }
        }
    }
    paced.elapsed = started.elapsed();
    match failure {
        Some(err) => Err(err),
        None => Ok(paced),
    }
}

/// Appends into booking's outbox (the server's relay publishes) and consumes with the kit's
/// consumer in group `GROUP`.
async fn through_pulse(database: &str, keyspace: &str, seconds: u64) -> anyhow::Result<Run> {
    let batches = seconds * 1000 / TICK_MS;
    let expected = batches * BATCH;
    // The server made booking's schema (outbox, consumer tables) when it started.
    let connections = u32::try_from(PRODUCERS).unwrap_or(4) + 2;
    let pool = pulse_kit::db::schema_pool(database, "booking", connections)?;
    let options = pulse_kit::db::schema_options(database, "booking")?;
    // As the server builds booking's: the relay publishes to the topic named in the row.
    let outbox = Outbox::new("FR", keyspace, "booking");
    let tracker = Tracker::new(expected);
    let mut config = ConsumerConfig::new(GROUP, outbox.topic());
    config.partitions = PARTITIONS;
    let consumer = Consumer::new(
        pool.clone(),
        options,
        KafkaHandle::new(testing::kafka_brokers()),
        Arc::new(Receiver(Arc::clone(&tracker))),
        Arc::new(Metrics::new()),
        config,
    );
    let owned = consumer.owned_partitions();
    let stop = CancellationToken::new();
    let consuming = tokio::spawn(consumer.run(stop.clone()));

    let result = async {
        // Warm-up: one event per key, so every partition has one, the relay its topic and
        // partition clients, and the consumer all its partitions.
        let mut tx = pool.begin().await?;
        let mut keys: Vec<String> = (0..WARMUP_EVENTS).map(|n| format!("warmup-{n}")).collect();
        keys.sort();
        for (n, key) in (0..).zip(&keys) {
            outbox
                .append(&mut tx, key, EVENT_TYPE, &warmup_payload(n))
                .await?;
        }
        tx.commit().await?;
        tracker.wait_warmup(Duration::from_secs(60)).await?;
        let started = Instant::now();
        while owned.get().len() < usize::try_from(PARTITIONS).unwrap_or(3) {
            if started.elapsed() > Duration::from_secs(30) {
                bail!(
                    "the consumer owns {:?} of {PARTITIONS} partitions",
                    owned.get()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let started = Instant::now();
        let (appender_pool, appender_outbox) = (pool.clone(), outbox.clone());
        let paced = pace(batches, move |k| {
            let (pool, outbox) = (appender_pool.clone(), appender_outbox.clone());
            async move {
                let aggregate = k % KEYS;
                let key = format!("aggregate-{aggregate}");
                let mut tx = pool.begin().await?;
                for seq in k * BATCH..(k + 1) * BATCH {
                    outbox
                        .append(&mut tx, &key, EVENT_TYPE, &payload(seq, aggregate))
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }
        })
        .await?;
        tracker.drain(paced.batches * BATCH).await;
        let on_topic = records_on(outbox.topic()).await?;
        Ok(tracker.run("pulse", expected, &paced, started, on_topic))
    }
    .await;
    stop.cancel();
    if tokio::time::timeout(Duration::from_secs(15), consuming)
        .await
        .is_err()
    {
        eprintln!("bench: the consumer did not stop within 15 s");
    }
    pool.close().await;
    result
}

/// How many records `topic` holds (the bench's topics hold only the bench's).
async fn records_on(topic: &str) -> anyhow::Result<u64> {
    let kafka = KafkaHandle::new(testing::kafka_brokers());
    let client = kafka.client().await?;
    let mut records = 0;
    for partition in kafka.ensure_topic(topic, PARTITIONS).await? {
        let pc = client
            .partition_client(topic.to_owned(), partition, UnknownTopicHandling::Retry)
            .await?;
        let (earliest, latest) = (
            pc.get_offset(OffsetAt::Earliest).await?,
            pc.get_offset(OffsetAt::Latest).await?,
        );
        records += u64::try_from(latest - earliest).unwrap_or(0);
    }
    Ok(records)
}

/// An envelope of `payload` as the outbox makes it, in the record the relay would produce.
fn record(key: &str, event_type: &str, payload: Value) -> anyhow::Result<Record> {
    let envelope = EventEnvelope {
        id: pulse_kit::new_id(),
        event_type: event_type.to_owned(),
        country: "FR".into(),
        occurred_at: chrono::Utc::now(),
        traceparent: None,
        payload,
    };
    let headers = BTreeMap::from([
        (HEADER_EVENT_TYPE.to_owned(), event_type.as_bytes().to_vec()),
        (
            HEADER_EVENT_ID.to_owned(),
            envelope.id.to_string().into_bytes(),
        ),
        (HEADER_COUNTRY.to_owned(), b"FR".to_vec()),
    ]);
    Ok(Record {
        key: Some(key.as_bytes().to_vec()),
        value: Some(serde_json::to_vec(&envelope)?),
        headers,
        timestamp: envelope.occurred_at,
    })
}

/// The same schedule and envelopes produced straight to a topic of its own with rskafka, read
/// back by one fetch loop per partition polling as the kit's consumer does.
async fn straight_to_kafka(seconds: u64) -> anyhow::Result<Run> {
    let batches = seconds * 1000 / TICK_MS;
    let expected = batches * BATCH;
    let kafka = KafkaHandle::new(testing::kafka_brokers());
    let topic = testing::unique("pulse.bench.events.reference");
    let partitions = kafka.ensure_topic(&topic, PARTITIONS).await?;
    let client = kafka.client().await?;
    let mut clients: HashMap<i32, Arc<PartitionClient>> = HashMap::new();
    for &partition in &partitions {
        let pc = client
            .partition_client(topic.clone(), partition, UnknownTopicHandling::Retry)
            .await?;
        clients.insert(partition, Arc::new(pc));
    }
    let tracker = Tracker::new(expected);
    let stop = CancellationToken::new();
    let mut readers = tokio::task::JoinSet::new();
    // The kit consumer's fetch waits (none to speak of after records, doubling back up to the
    // long poll after none), so the two differ by what Pulse adds, not by how they poll.
    let defaults = ConsumerConfig::new(GROUP, &topic);
    let wait = |wait: Duration| i32::try_from(wait.as_millis()).unwrap_or(500).max(1);
    let (idle_wait, busy_wait) = (
        wait(defaults.fetch_max_wait),
        wait(defaults.busy_fetch_max_wait),
    );
    for &partition in &partitions {
        // A partition client of its own (a connection of its own), as the relay and the
        // consumer have: a broker answers one connection's requests in order, so a produce
        // would otherwise wait behind the reader's long poll.
        let pc = client
            .partition_client(topic.clone(), partition, UnknownTopicHandling::Retry)
            .await?;
        let (tracker, stop) = (Arc::clone(&tracker), stop.clone());
        readers.spawn(async move {
            let mut next = pc.get_offset(OffsetAt::Earliest).await?;
            let mut max_wait = idle_wait;
            loop {
                let fetched = tokio::select! {
                    () = stop.cancelled() => return Ok::<_, anyhow::Error>(()),
                    fetched = pc.fetch_records(next, 1..8_000_000, max_wait) => fetched?,
                };
                let (mut records, _high_watermark) = fetched;
                records.sort_by_key(|r| r.offset);
                max_wait = if records.iter().any(|r| r.offset >= next) {
                    busy_wait
                } else {
                    max_wait.saturating_mul(2).min(idle_wait)
                };
                for record in records {
                    if record.offset < next {
                        continue;
                    }
                    next = record.offset + 1;
                    let envelope: EventEnvelope =
                        serde_json::from_slice(record.record.value.as_deref().unwrap_or_default())?;
                    tracker
                        .receive(&envelope.payload)
                        .map_err(anyhow::Error::msg)?;
                }
            }
        });
    }

    let result = async {
        // Warm-up, as for Pulse: a record per key, so every reader has fetched once.
        for n in 0..WARMUP_EVENTS {
            let key = format!("warmup-{n}");
            let partition = partition_for(&key, &partitions);
            let pc = clients
                .get(&partition)
                .context("no client for a partition")?;
            pc.produce(
                vec![record(&key, EVENT_TYPE, warmup_payload(n))?],
                Compression::NoCompression,
            )
            .await?;
        }
        tracker.wait_warmup(Duration::from_secs(60)).await?;

        let started = Instant::now();
        let (partitions, clients) = (Arc::new(partitions), Arc::new(clients));
        let paced = pace(batches, move |k| {
            let (partitions, clients) = (Arc::clone(&partitions), Arc::clone(&clients));
            async move {
                let aggregate = k % KEYS;
                let key = format!("aggregate-{aggregate}");
                let records = (k * BATCH..(k + 1) * BATCH)
                    .map(|seq| record(&key, EVENT_TYPE, payload(seq, aggregate)))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let partition = partition_for(&key, &partitions);
                let pc = clients
                    .get(&partition)
                    .context("no client for a partition")?;
                pc.produce(records, Compression::NoCompression).await?;
                Ok(())
            }
        })
        .await?;
        tracker.drain(paced.batches * BATCH).await;
        let on_topic = records_on(&topic).await?;
        Ok(tracker.run("rskafka", expected, &paced, started, on_topic))
    }
    .await;
    stop.cancel();
    while let Some(joined) = readers.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(err)) => eprintln!("bench: a reference reader failed: {err:#}"),
            Err(err) => eprintln!("bench: a reference reader panicked: {err}"),
        }
    }
    result
}
