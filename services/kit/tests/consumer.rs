//! The consumer runtime against real PostgreSQL and Kafka.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{effects, env, envelope, eventually, produce, read_all};
use pulse_kit::consumer::{
    Consumer, ConsumerConfig, EventHandler, HEADER_DLQ_ATTEMPTS, HEADER_DLQ_ERROR, HandlerError,
};
use pulse_kit::envelope::EventEnvelope;
use pulse_kit::kafka::dead_letter_topic;
use pulse_kit::metrics::Metrics;
use pulse_kit::testing::unique;
use sqlx::PgConnection;
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

/// Records each event as a row in `effects`; fails on `{"poison": true}`; optionally stalls
/// (after writing its effect, before the commit) on one sequence number, once.
#[derive(Default)]
struct Recorder {
    stall_on: Option<i64>,
    stalled: Mutex<Option<mpsc::Sender<()>>>,
}

#[async_trait]
impl EventHandler for Recorder {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        event: &EventEnvelope,
    ) -> Result<(), HandlerError> {
        let seq = event.payload["seq"].as_i64().ok_or("no seq")?;
        if event.payload["poison"].as_bool() == Some(true) {
            return Err(format!("cannot apply poison event {seq}").into());
        }
        sqlx::query("INSERT INTO effects (event_id, seq) VALUES ($1, $2)")
            .bind(event.id)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        if Some(seq) == self.stall_on
            && let Some(signal) = self.stalled.lock().await.take()
        {
            signal.send(()).await.ok();
            // The effect is written but not committed: the process "dies" here.
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

fn config(group: &str, topic: &str, partitions: i32) -> ConsumerConfig {
    let mut config = ConsumerConfig::new(group, topic);
    config.partitions = partitions;
    config.heartbeat = Duration::from_millis(300);
    config.member_ttl = Duration::from_secs(2);
    config.fetch_max_wait = Duration::from_millis(100);
    config.retry_backoff = Duration::from_millis(10);
    config.max_attempts = 3;
    config
}

fn consumer(env: &common::Env, handler: Arc<dyn EventHandler>, config: ConsumerConfig) -> Consumer {
    Consumer::new(
        env.pool.clone(),
        env.options.clone(),
        env.kafka.clone(),
        handler,
        Arc::new(Metrics::new()),
        config,
    )
}

async fn next_offset(env: &common::Env, group: &str, partition: i32) -> Option<i64> {
    sqlx::query_scalar(
        "SELECT next_offset FROM consumer_offsets WHERE group_name = $1 AND partition = $2",
    )
    .bind(group)
    .bind(partition)
    .fetch_optional(&env.pool)
    .await
    .expect("offset")
}

/// Kills a consumer while its handler holds event 7 (written, not committed) and starts another;
/// returns the effects committed before the kill. `batch_from_lag` as in [`ConsumerConfig`].
async fn killed_before_acknowledging(batch_from_lag: i64) -> BTreeMap<i64, i64> {
    let env = env().await;
    let topic = unique("kit.crash");
    let group = &unique("crash-test");
    let config = |group: &str, topic: &str| {
        let mut config = config(group, topic, 1);
        config.batch_from_lag = batch_from_lag;
        config
    };
    env.kafka.ensure_topic(&topic, 1).await.expect("topic");
    let events: Vec<_> = (0..20)
        .map(|seq| envelope(seq, serde_json::json!({})))
        .collect();
    produce(&env.kafka, &topic, 0, &events).await;

    let (tx, mut stalled) = mpsc::channel(1);
    let handler = Arc::new(Recorder {
        stall_on: Some(7),
        stalled: Mutex::new(Some(tx)),
    });
    let first = tokio::spawn(
        consumer(&env, handler.clone(), config(group, &topic)).run(CancellationToken::new()),
    );
    tokio::time::timeout(Duration::from_secs(20), stalled.recv())
        .await
        .expect("the handler reaches event 7")
        .expect("signal");
    // Kill the replica between handling event 7 and acknowledging it.
    first.abort();
    let _ = first.await;
    let before_restart = effects(&env.pool).await;

    let stop = CancellationToken::new();
    let second = tokio::spawn(consumer(&env, handler, config(group, &topic)).run(stop.clone()));
    eventually(Duration::from_secs(20), "all 20 events applied", || async {
        effects(&env.pool).await.len() == 20
    })
    .await;
    let seen = effects(&env.pool).await;
    assert!(
        seen.values().all(|&n| n == 1),
        "each effect exactly once: {seen:?}"
    );
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (0..20).collect::<Vec<_>>()
    );
    assert_eq!(next_offset(&env, group, 0).await, Some(20));
    stop.cancel();
    second.await.expect("stops");
    before_restart
}

#[tokio::test]
async fn a_consumer_killed_before_acknowledging_neither_repeats_nor_skips() {
    // Records applied one per transaction: 0 to 6 committed, 7 not.
    let before_restart = killed_before_acknowledging(i64::MAX).await;
    assert_eq!(
        before_restart.keys().copied().collect::<Vec<_>>(),
        (0..7).collect::<Vec<_>>(),
        "7's effect was not committed"
    );
}

#[tokio::test]
async fn a_consumer_killed_mid_batch_neither_repeats_nor_skips() {
    // The default: the waiting records go in batches. The one holding 7 was not committed,
    // nor any record after a batch that was not.
    let before_restart =
        killed_before_acknowledging(ConsumerConfig::new("g", "t").batch_from_lag).await;
    let committed: Vec<i64> = before_restart.keys().copied().collect();
    assert!(
        committed.len() <= 7 && committed == (0..committed.len() as i64).collect::<Vec<_>>(),
        "only whole batches before 7 were committed: {committed:?}"
    );
}

#[tokio::test]
async fn the_same_event_published_twice_is_applied_once() {
    let env = env().await;
    let topic = unique("kit.dup");
    env.kafka.ensure_topic(&topic, 1).await.expect("topic");
    let event = envelope(1, serde_json::json!({}));
    // The relay may publish an event again after a crash; both copies reach the consumer.
    produce(
        &env.kafka,
        &topic,
        0,
        &[
            event.clone(),
            event.clone(),
            envelope(2, serde_json::json!({})),
        ],
    )
    .await;
    let stop = CancellationToken::new();
    let running = tokio::spawn(
        consumer(
            &env,
            Arc::new(Recorder::default()),
            config("dup", &topic, 1),
        )
        .run(stop.clone()),
    );
    eventually(
        Duration::from_secs(20),
        "offset past all three records",
        || async { next_offset(&env, "dup", 0).await == Some(3) },
    )
    .await;
    let seen = effects(&env.pool).await;
    assert_eq!(seen.get(&1), Some(&1));
    assert_eq!(seen.get(&2), Some(&1));
    stop.cancel();
    running.await.expect("stops");
}

/// Applied event ids are kept for `processed_retention`, then deleted by the group's replicas:
/// the table does not grow forever, and recent ids (and other groups') stay.
#[tokio::test]
async fn applied_event_ids_older_than_the_retention_are_deleted_and_recent_ones_kept() {
    let env = env().await;
    let topic = unique("kit.prune");
    let group = unique("prune");
    let other = unique("prune-other");
    env.kafka.ensure_topic(&topic, 1).await.expect("topic");
    let old = envelope(1, serde_json::json!({}));
    let recent = envelope(2, serde_json::json!({}));
    for (group, event, age_hours) in [
        (&group, &old, 3.0),
        (&group, &recent, 0.5),
        (&other, &old, 3.0),
    ] {
        sqlx::query(
            "INSERT INTO consumer_processed_events (group_name, event_id, processed_at)
             VALUES ($1, $2, now() - make_interval(secs => $3))",
        )
        .bind(group)
        .bind(event.id)
        .bind(age_hours * 3600.0)
        .execute(&env.pool)
        .await
        .expect("insert");
    }
    let kept = || async {
        let mut kept: Vec<(String, uuid::Uuid)> = sqlx::query_as(
            "SELECT group_name, event_id FROM consumer_processed_events
             WHERE group_name IN ($1, $2)",
        )
        .bind(&group)
        .bind(&other)
        .fetch_all(&env.pool)
        .await
        .expect("select");
        kept.sort();
        kept
    };
    let mut config = config(&group, &topic, 1);
    config.processed_retention = Duration::from_secs(2 * 3600);
    config.prune_every = Duration::from_millis(100);
    let stop = CancellationToken::new();
    let running =
        tokio::spawn(consumer(&env, Arc::new(Recorder::default()), config).run(stop.clone()));
    eventually(
        Duration::from_secs(10),
        "the group's old id deleted",
        || async { kept().await.len() == 2 },
    )
    .await;
    let mut expected = vec![(group.clone(), recent.id), (other.clone(), old.id)];
    expected.sort();
    assert_eq!(kept().await, expected);
    // The recent id still stops a copy of its event published again.
    produce(
        &env.kafka,
        &topic,
        0,
        &[recent.clone(), envelope(3, serde_json::json!({}))],
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "offset past both records",
        || async { next_offset(&env, &group, 0).await == Some(2) },
    )
    .await;
    let seen = effects(&env.pool).await;
    assert_eq!(
        seen.get(&2),
        None,
        "the recent event was applied before: not again"
    );
    assert_eq!(seen.get(&3), Some(&1));
    stop.cancel();
    running.await.expect("stops");
}

#[tokio::test]
async fn resuming_inside_a_produced_batch_neither_skips_nor_repeats() {
    let env = env().await;
    let topic = unique("kit.resume");
    let group = "resume";
    env.kafka.ensure_topic(&topic, 1).await.expect("topic");
    // One produce call: the three records form one batch on the broker.
    let events: Vec<_> = (0..3)
        .map(|seq| envelope(seq, serde_json::json!({})))
        .collect();
    let offsets = produce(&env.kafka, &topic, 0, &events).await;
    assert_eq!(offsets.len(), 3);
    // The group already handled the first record of the batch.
    sqlx::query("INSERT INTO consumer_offsets (group_name, topic, partition, next_offset) VALUES ($1, $2, 0, $3)")
        .bind(group)
        .bind(&topic)
        .bind(offsets[1])
        .execute(&env.pool)
        .await
        .expect("seed offset");
    let stop = CancellationToken::new();
    let running = tokio::spawn(
        consumer(
            &env,
            Arc::new(Recorder::default()),
            config(group, &topic, 1),
        )
        .run(stop.clone()),
    );
    eventually(
        Duration::from_secs(20),
        "offset after the batch",
        || async { next_offset(&env, group, 0).await == Some(offsets[2] + 1) },
    )
    .await;
    // Give a wrong implementation time to re-deliver.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = effects(&env.pool).await;
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec![(1, 1), (2, 1)],
        "exactly records 1 and 2, once each"
    );
    stop.cancel();
    running.await.expect("stops");
}

#[tokio::test]
async fn a_poison_message_goes_to_the_dead_letter_topic_and_the_rest_flow_on() {
    let env = env().await;
    let topic = unique("kit.poison");
    let group = "poison";
    env.kafka.ensure_topic(&topic, 1).await.expect("topic");
    let events: Vec<_> = (0..5)
        .map(|seq| envelope(seq, serde_json::json!({ "poison": seq == 2 })))
        .collect();
    produce(&env.kafka, &topic, 0, &events).await;
    let metrics = Arc::new(Metrics::new());
    let stop = CancellationToken::new();
    let running = tokio::spawn(
        Consumer::new(
            env.pool.clone(),
            env.options.clone(),
            env.kafka.clone(),
            Arc::new(Recorder::default()),
            Arc::clone(&metrics),
            config(group, &topic, 1),
        )
        .run(stop.clone()),
    );
    eventually(
        Duration::from_secs(20),
        "offset past all five records",
        || async { next_offset(&env, group, 0).await == Some(5) },
    )
    .await;
    let seen = effects(&env.pool).await;
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), vec![0, 1, 3, 4]);

    let dead = read_all(&env.kafka, &dead_letter_topic(&topic, group), 0, 1).await;
    assert_eq!(dead.len(), 1);
    let record = &dead[0].record;
    let envelope: EventEnvelope =
        serde_json::from_slice(record.value.as_deref().expect("value")).expect("envelope");
    assert_eq!(envelope.id, events[2].id);
    let error = String::from_utf8_lossy(&record.headers[HEADER_DLQ_ERROR]).to_string();
    assert!(error.contains("cannot apply poison event 2"), "{error}");
    assert_eq!(record.headers[HEADER_DLQ_ATTEMPTS], b"3");
    let text = metrics.encode();
    assert!(
        text.contains("pulse_consumer_dead_lettered_records_total{group=\"poison\""),
        "{text}"
    );
    assert!(
        text.contains("pulse_consumer_lag_records{group=\"poison\""),
        "{text}"
    );
    stop.cancel();
    running.await.expect("stops");
}

#[tokio::test]
async fn two_replicas_split_partitions_and_one_takes_over_when_the_other_stops() {
    let env = env().await;
    let topic = unique("kit.split");
    let group = "split";
    let partitions = env.kafka.ensure_topic(&topic, 4).await.expect("topic");
    assert_eq!(partitions.len(), 4);
    let handler = Arc::new(Recorder::default());

    let stop_a = CancellationToken::new();
    let a = consumer(&env, handler.clone(), config(group, &topic, 4));
    let owned_a = a.owned_partitions();
    let run_a = tokio::spawn(a.run(stop_a.clone()));
    let stop_b = CancellationToken::new();
    let b = consumer(&env, handler.clone(), config(group, &topic, 4));
    let owned_b = b.owned_partitions();
    let run_b = tokio::spawn(b.run(stop_b.clone()));

    eventually(Duration::from_secs(20), "two partitions each", || {
        let (a, b) = (owned_a.get(), owned_b.get());
        async move { a.len() == 2 && b.len() == 2 && a.is_disjoint(&b) }
    })
    .await;

    let mut seq = 0;
    for &partition in &partitions {
        let batch: Vec<_> = (0..10)
            .map(|i| envelope(seq + i, serde_json::json!({})))
            .collect();
        seq += 10;
        produce(&env.kafka, &topic, partition, &batch).await;
    }
    eventually(Duration::from_secs(20), "40 events applied", || async {
        effects(&env.pool).await.len() == 40
    })
    .await;

    stop_b.cancel();
    run_b.await.expect("b stops");
    let all: BTreeSet<i32> = partitions.iter().copied().collect();
    eventually(Duration::from_secs(10), "a owns all four", || {
        let held = owned_a.get() == all;
        async move { held }
    })
    .await;
    for &partition in &partitions {
        let batch: Vec<_> = (0..5)
            .map(|i| envelope(seq + i, serde_json::json!({})))
            .collect();
        seq += 5;
        produce(&env.kafka, &topic, partition, &batch).await;
    }
    eventually(Duration::from_secs(20), "60 events applied", || async {
        effects(&env.pool).await.len() == 60
    })
    .await;
    let seen = effects(&env.pool).await;
    assert!(seen.values().all(|&n| n == 1), "each effect once: {seen:?}");
    stop_a.cancel();
    run_a.await.expect("a stops");
}

#[tokio::test]
async fn a_replica_that_dies_is_replaced_within_seconds() {
    let env = env().await;
    let topic = unique("kit.die");
    let group = "die";
    env.kafka.ensure_topic(&topic, 2).await.expect("topic");
    let handler = Arc::new(Recorder::default());
    let stop_a = CancellationToken::new();
    let a = consumer(&env, handler.clone(), config(group, &topic, 2));
    let owned_a = a.owned_partitions();
    let run_a = tokio::spawn(a.run(stop_a.clone()));
    let b = consumer(&env, handler.clone(), config(group, &topic, 2));
    let owned_b = b.owned_partitions();
    let run_b = tokio::spawn(b.run(CancellationToken::new()));
    eventually(Duration::from_secs(20), "one partition each", || {
        let (a, b) = (owned_a.get(), owned_b.get());
        async move { a.len() == 1 && b.len() == 1 }
    })
    .await;
    // No goodbye: the task is dropped, as when a process is killed.
    run_b.abort();
    let _ = run_b.await;
    eventually(Duration::from_secs(10), "a owns both partitions", || {
        let a = owned_a.get();
        async move { a.len() == 2 }
    })
    .await;
    stop_a.cancel();
    run_a.await.expect("a stops");
}
