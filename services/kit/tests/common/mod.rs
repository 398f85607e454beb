//! Shared set-up of the kit's integration tests: a fresh database with a migrated schema, a
//! Kafka handle, unique topics, and helpers to produce and read records.
#![allow(dead_code, missing_docs)]

use std::collections::BTreeMap;
use std::time::Duration;

use pulse_kit::envelope::EventEnvelope;
use pulse_kit::kafka::KafkaHandle;
use pulse_kit::testing::{self, TestDatabase};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::{Record, RecordAndOffset};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnectOptions;

pub static TEST_MIGRATIONS: Migrator = sqlx::migrate!("tests/migrations");
pub const SCHEMA: &str = "kit_test";

pub struct Env {
    pub db: TestDatabase,
    pub pool: PgPool,
    pub options: PgConnectOptions,
    pub kafka: KafkaHandle,
}

pub async fn env() -> Env {
    let db = TestDatabase::create().await;
    pulse_kit::db::migrate(&db.url, SCHEMA, &TEST_MIGRATIONS)
        .await
        .expect("migrations apply");
    let pool = pulse_kit::db::schema_pool(&db.url, SCHEMA, 10).expect("pool");
    let options = pulse_kit::db::schema_options(&db.url, SCHEMA).expect("options");
    Env {
        db,
        pool,
        options,
        kafka: KafkaHandle::new(testing::kafka_brokers()),
    }
}

pub fn envelope(seq: i64, payload: serde_json::Value) -> EventEnvelope {
    let mut payload = payload;
    payload["seq"] = seq.into();
    EventEnvelope {
        id: pulse_kit::new_id(),
        event_type: "TestEvent".into(),
        country: "FR".into(),
        occurred_at: chrono::Utc::now(),
        traceparent: None,
        payload,
    }
}

pub fn record(envelope: &EventEnvelope) -> Record {
    Record {
        key: Some(envelope.id.to_string().into_bytes()),
        value: Some(serde_json::to_vec(envelope).expect("json")),
        headers: BTreeMap::new(),
        timestamp: chrono::Utc::now(),
    }
}

/// Produces `envelopes` to one partition in a single batch; returns their offsets.
pub async fn produce(
    kafka: &KafkaHandle,
    topic: &str,
    partition: i32,
    envelopes: &[EventEnvelope],
) -> Vec<i64> {
    let client = kafka.client().await.expect("kafka client");
    let pc = client
        .partition_client(topic.to_owned(), partition, UnknownTopicHandling::Retry)
        .await
        .expect("partition client");
    pc.produce(
        envelopes.iter().map(record).collect(),
        Compression::NoCompression,
    )
    .await
    .expect("produce")
}

/// Reads every record of a partition from offset 0 until `want` records arrived (or 15 s).
pub async fn read_all(
    kafka: &KafkaHandle,
    topic: &str,
    partition: i32,
    want: usize,
) -> Vec<RecordAndOffset> {
    read_for(kafka, topic, partition, want, Duration::from_secs(15)).await
}

/// Like [`read_all`], giving up after `timeout`.
pub async fn read_for(
    kafka: &KafkaHandle,
    topic: &str,
    partition: i32,
    want: usize,
    timeout: Duration,
) -> Vec<RecordAndOffset> {
    let client = kafka.client().await.expect("kafka client");
    let pc = client
        .partition_client(topic.to_owned(), partition, UnknownTopicHandling::Retry)
        .await
        .expect("partition client");
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out: Vec<RecordAndOffset> = Vec::new();
    let mut next = 0;
    while out.len() < want && tokio::time::Instant::now() < deadline {
        let (records, _) = pc
            .fetch_records(next, 1..10_000_000, 200)
            .await
            .expect("fetch");
        for r in records {
            if r.offset >= next {
                next = r.offset + 1;
                out.push(r);
            }
        }
    }
    out
}

/// Polls `check` every 50 ms until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Applied effects, as (seq, count) pairs.
pub async fn effects(pool: &PgPool) -> BTreeMap<i64, i64> {
    let rows: Vec<(i64, i64)> = sqlx::query_as("SELECT seq, count(*) FROM effects GROUP BY seq")
        .fetch_all(pool)
        .await
        .expect("effects");
    rows.into_iter().collect()
}
