//! Transactional outbox.
//!
//! [`Outbox::append`] writes an event in the caller's transaction, so the event exists exactly
//! when the state change that produced it does. [`OutboxRelay`] publishes committed events to
//! Kafka: one relay per component per country is leader at a time (a PostgreSQL advisory lock
//! held on its own connection), it publishes rows in id order — the order in which they became
//! visible — and marks them published afterwards. A crash between publishing and marking
//! publishes a row again; consumers deduplicate on the event id.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::record::Record;
use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool, Row};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::envelope::EventEnvelope;
use crate::idempotency::AnswerRecord;
use crate::kafka::{KafkaHandle, events_topic, partition_for};
use crate::metrics::{ComponentLabels, Metrics, preset};
use crate::telemetry;

/// Kafka record header carrying the event type.
pub const HEADER_EVENT_TYPE: &str = "event-type";
/// Kafka record header carrying the event id.
pub const HEADER_EVENT_ID: &str = "event-id";
/// Kafka record header carrying the country.
pub const HEADER_COUNTRY: &str = "country";

/// Writes events of one component into its outbox.
#[derive(Debug, Clone)]
pub struct Outbox {
    // Shared, not owned: components clone their state (and with it the outbox) per request.
    country: Arc<str>,
    topic: Arc<str>,
}

/// Why an event could not be appended.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The payload could not be serialized.
    #[error("cannot serialize the event payload: {0}")]
    Payload(#[from] serde_json::Error),
    /// The insert failed.
    #[error("cannot write the event into the outbox: {0}")]
    Sql(#[from] sqlx::Error),
}

impl Outbox {
    /// The outbox of `component` in `country` (`FR`); events go to
    /// [`events_topic`](crate::kafka::events_topic) of `keyspace` (see
    /// [`ComponentContext::keyspace`](crate::component::ComponentContext::keyspace)).
    pub fn new(country: &str, keyspace: &str, component: &str) -> Self {
        Self {
            country: country.into(),
            topic: events_topic(keyspace, component).into(),
        }
    }

    /// The topic events are published to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Appends an event inside the caller's transaction. `key` orders events: those with the
    /// same key (an aggregate id) reach the same partition in commit order. Until the caller
    /// commits, other transactions appending under the same key wait; append the events of one
    /// transaction under one key, or always in the same key order.
    pub async fn append(
        &self,
        tx: &mut PgConnection,
        key: &str,
        event_type: &str,
        payload: &impl Serialize,
    ) -> Result<EventEnvelope, OutboxError> {
        self.append_ordered(tx, key, key, event_type, payload).await
    }

    /// [`Outbox::append`] with the commit order kept per `order_key` instead of per partition
    /// `key`: events reach `key`'s partition, and those with the same `order_key` reach it in
    /// commit order; transactions with different order keys do not wait for each other. For an
    /// aggregate whose writers a row lock already serialises (a slot, an appointment), so that
    /// a busy partition key (a practitioner) does not make every writer wait for the previous
    /// one's commit.
    pub async fn append_ordered(
        &self,
        tx: &mut PgConnection,
        key: &str,
        order_key: &str,
        event_type: &str,
        payload: &impl Serialize,
    ) -> Result<EventEnvelope, OutboxError> {
        self.append_ordered_with(tx, key, order_key, event_type, payload, None)
            .await
    }

    /// [`Outbox::append_ordered`] that also writes `answer` (the request's idempotency record,
    /// from [`crate::idempotency::BeforeCommit::into_record`]) in the same statement: the
    /// flow's last write before `COMMIT` costs one round trip, not two.
    pub async fn append_ordered_with(
        &self,
        tx: &mut PgConnection,
        key: &str,
        order_key: &str,
        event_type: &str,
        payload: &impl Serialize,
        answer: Option<&AnswerRecord>,
    ) -> Result<EventEnvelope, OutboxError> {
        let envelope = self.envelope(
            event_type,
            payload,
            telemetry::current_or_new_traceparent(),
            Utc::now(),
        )?;
        // Transactions appending under the same key queue on the advisory lock until the holder
        // commits, so for one key the outbox id order is the commit order the relay publishes
        // in. One statement, one round trip: the lock's row is produced (the lock taken) before
        // the insert draws the row's id.
        const APPEND: &str = "WITH locked AS MATERIALIZED (SELECT pg_advisory_xact_lock($8))
             INSERT INTO outbox (event_id, topic, partition_key, event_type, envelope, traceparent, created_at)
             SELECT $1, $2, $3, $4, $5, $6, $7 FROM locked";
        static APPEND_WITH_ANSWER: LazyLock<String> = LazyLock::new(|| {
            format!(
                "WITH locked AS MATERIALIZED (SELECT pg_advisory_xact_lock($8)),
                 appended AS (
                     INSERT INTO outbox (event_id, topic, partition_key, event_type, envelope, traceparent, created_at)
                     SELECT $1, $2, $3, $4, $5, $6, $7 FROM locked
                 )
                 {}",
                AnswerRecord::insert_sql(9)
            )
        });
        let query = sqlx::query(if answer.is_some() {
            APPEND_WITH_ANSWER.as_str()
        } else {
            APPEND
        })
        .bind(envelope.id)
        .bind(&*self.topic)
        .bind(key)
        .bind(event_type)
        .bind(sqlx::types::Json(&envelope))
        .bind(&envelope.traceparent)
        .bind(envelope.occurred_at)
        .bind(crate::db::advisory_key(&format!(
            "pulse-outbox-key:{}:{order_key}",
            self.topic
        )));
        match answer {
            Some(answer) => {
                answer.bind(query).execute(&mut *tx).await?;
                answer.written();
            }
            None => {
                query.execute(&mut *tx).await?;
            }
        }
        Ok(envelope)
    }

    /// A new event of this outbox's country.
    fn envelope(
        &self,
        event_type: &str,
        payload: &impl Serialize,
        traceparent: String,
        occurred_at: DateTime<Utc>,
    ) -> Result<EventEnvelope, OutboxError> {
        Ok(EventEnvelope {
            id: crate::new_id(),
            event_type: event_type.to_owned(),
            country: self.country.to_string(),
            occurred_at,
            traceparent: Some(traceparent),
            payload: serde_json::to_value(payload)?,
        })
    }

    /// [`Outbox::append`] of several events in one round trip: `events` are `(key, event type,
    /// payload)` and reach the outbox in this order. The keys' locks are taken in key order
    /// (the same for every caller, so two batches never wait for each other in a cycle) before
    /// any row is written; a batch of a flow that creates many aggregates (a sale's winners)
    /// costs one statement, not one per event.
    pub async fn append_all<P: Serialize>(
        &self,
        tx: &mut PgConnection,
        events: &[(&str, &str, P)],
    ) -> Result<Vec<EventEnvelope>, OutboxError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let traceparent = telemetry::current_or_new_traceparent();
        let occurred_at = Utc::now();
        let envelopes = events
            .iter()
            .map(|(_, event_type, payload)| {
                self.envelope(event_type, payload, traceparent.clone(), occurred_at)
            })
            .collect::<Result<Vec<_>, OutboxError>>()?;
        let ids: Vec<Uuid> = envelopes.iter().map(|e| e.id).collect();
        let keys: Vec<&str> = events.iter().map(|(key, _, _)| *key).collect();
        let types: Vec<&str> = events
            .iter()
            .map(|(_, event_type, _)| *event_type)
            .collect();
        let bodies: Vec<sqlx::types::Json<&EventEnvelope>> =
            envelopes.iter().map(sqlx::types::Json).collect();
        let mut locks: Vec<i64> = keys
            .iter()
            .map(|key| crate::db::advisory_key(&format!("pulse-outbox-key:{}:{key}", self.topic)))
            .collect();
        locks.sort_unstable();
        locks.dedup();
        // The locks' CTE runs first (the insert reads its one row), in key order; the rows
        // then draw their ids in the order of `events`.
        sqlx::query(
            "WITH locked AS MATERIALIZED (
                 SELECT count(*) FROM (
                     SELECT pg_advisory_xact_lock(k) FROM (SELECT k FROM unnest($7::bigint[]) AS k ORDER BY k) AS ordered
                 ) AS taken
             )
             INSERT INTO outbox (event_id, topic, partition_key, event_type, envelope, traceparent, created_at)
             SELECT e.id, $4, e.key, e.event_type, e.envelope, $5, $6
             FROM locked, unnest($1::uuid[], $2::text[], $3::text[], $8::jsonb[])
                  WITH ORDINALITY AS e (id, key, event_type, envelope, n)
             ORDER BY e.n",
        )
        .bind(&ids)
        .bind(&keys)
        .bind(&types)
        .bind(&*self.topic)
        .bind(&traceparent)
        .bind(occurred_at)
        .bind(&locks)
        .bind(&bodies)
        .execute(&mut *tx)
        .await?;
        Ok(envelopes)
    }
}

/// Tuning of the relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Rows published per round.
    pub batch_size: i64,
    /// Sleep when the outbox was found empty again and again (the longest gap between polls).
    pub idle_poll: Duration,
    /// Sleep after the first round that found the outbox empty; it doubles with every empty
    /// round up to `idle_poll`. While events keep coming the relay looks again soon after it
    /// emptied the outbox, instead of leaving the next ones waiting a whole `idle_poll`.
    pub busy_poll: Duration,
    /// Retry interval for a follower waiting for leadership.
    pub follower_poll: Duration,
    /// Published rows are deleted after this long.
    pub retention: Duration,
    /// Partitions of a topic the relay has to create.
    pub partitions: i32,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            idle_poll: Duration::from_millis(100),
            busy_poll: Duration::from_millis(5),
            follower_poll: Duration::from_secs(2),
            retention: Duration::from_secs(7 * 24 * 3600),
            partitions: 3,
        }
    }
}

/// Publishes a component's committed outbox rows to Kafka.
pub struct OutboxRelay {
    component: String,
    pool: PgPool,
    lock_options: PgConnectOptions,
    kafka: KafkaHandle,
    metrics: Arc<Metrics>,
    config: RelayConfig,
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Kafka(#[from] crate::kafka::KafkaError),
    #[error("kafka: {0}")]
    Client(#[from] rskafka::client::error::Error),
}

struct PendingRow {
    id: i64,
    topic: String,
    key: String,
    event_type: String,
    event_id: Uuid,
    /// The envelope's JSON text, sent as it is: parsing it only to write it again would cost
    /// the relay a tree of allocations per row.
    envelope: String,
    traceparent: Option<String>,
    created_at: DateTime<Utc>,
    country: String,
}

impl OutboxRelay {
    /// A relay for `component`; `lock_options` must point at the component's schema (it is used
    /// for the leader's own connection).
    pub fn new(
        component: &str,
        pool: PgPool,
        lock_options: PgConnectOptions,
        kafka: KafkaHandle,
        metrics: Arc<Metrics>,
        config: RelayConfig,
    ) -> Self {
        Self {
            component: component.to_owned(),
            pool,
            lock_options,
            kafka,
            metrics,
            config,
        }
    }

    fn labels(&self) -> ComponentLabels {
        ComponentLabels {
            component: self.component.clone(),
        }
    }

    /// Runs until `shutdown` is cancelled: waits for leadership, then publishes.
    pub async fn run(self, shutdown: CancellationToken) {
        // Every series exists from the start, so dashboards and alerts see 0, not nothing.
        preset(&self.metrics.outbox_published, [self.labels()]);
        preset(&self.metrics.outbox_publish_failures, [self.labels()]);
        preset(&self.metrics.outbox_lag_seconds, [self.labels()]);
        let lock_key = crate::db::advisory_key(&format!("pulse-outbox-relay:{}", self.component));
        while !shutdown.is_cancelled() {
            match self.lead(lock_key, &shutdown).await {
                Ok(()) => {}
                Err(err) => {
                    tracing::warn!(component = %self.component, error = %err, "outbox relay interrupted; retrying");
                }
            }
            sleep_or_cancel(self.config.follower_poll, &shutdown).await;
        }
    }

    /// One leadership term: returns when not leader, on shutdown, or on a database error.
    async fn lead(&self, lock_key: i64, shutdown: &CancellationToken) -> Result<(), RelayError> {
        let mut conn = PgConnection::connect_with(&self.lock_options).await?;
        let leader: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(lock_key)
            .fetch_one(&mut conn)
            .await?;
        if !leader {
            conn.close().await.ok();
            return Ok(());
        }
        tracing::info!(component = %self.component, "outbox relay is leader");
        // Marking rows published need not wait for the disk: a mark lost in a PostgreSQL
        // crash publishes the rows again, which consumers deduplicate (as after a relay crash
        // between publishing and marking).
        sqlx::query("SET synchronous_commit = off")
            .execute(&mut conn)
            .await?;
        let mut clients: HashMap<(String, i32), Arc<PartitionClient>> = HashMap::new();
        let mut partitions: HashMap<String, Vec<i32>> = HashMap::new();
        let mut last_prune = std::time::Instant::now();
        let mut poll = self.config.busy_poll;
        let result = loop {
            if shutdown.is_cancelled() {
                break Ok(());
            }
            match self
                .publish_batch(&mut conn, &mut clients, &mut partitions)
                .await
            {
                Ok(0) => {
                    self.update_lag(&mut conn).await.ok();
                    sleep_or_cancel(poll, shutdown).await;
                    poll = poll.saturating_mul(2).min(self.config.idle_poll);
                }
                Ok(_) => {
                    self.update_lag(&mut conn).await.ok();
                    poll = self.config.busy_poll;
                }
                Err(RelayError::Sql(err)) => break Err(RelayError::Sql(err)),
                Err(err) => {
                    self.metrics
                        .outbox_publish_failures
                        .get_or_create(&self.labels())
                        .inc();
                    tracing::warn!(component = %self.component, error = %err, "publishing outbox events failed; will retry");
                    clients.clear();
                    partitions.clear();
                    self.kafka.reset().await;
                    sleep_or_cancel(Duration::from_secs(1), shutdown).await;
                }
            }
            if last_prune.elapsed() > Duration::from_secs(600) {
                last_prune = std::time::Instant::now();
                if let Err(err) = self.prune().await {
                    tracing::warn!(error = %err, "pruning the outbox failed");
                }
            }
        };
        // Closing the session releases the advisory lock.
        conn.close().await.ok();
        result
    }

    async fn publish_batch(
        &self,
        conn: &mut PgConnection,
        clients: &mut HashMap<(String, i32), Arc<PartitionClient>>,
        partitions: &mut HashMap<String, Vec<i32>>,
    ) -> Result<usize, RelayError> {
        // Runs on the leader's own connection: if that session is gone, so is the leadership.
        let rows = sqlx::query(
            "SELECT id, topic, partition_key, event_type, event_id, envelope::text AS envelope, traceparent, created_at,
                    envelope->>'country' AS country
             FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1",
        )
        .bind(self.config.batch_size)
        .fetch_all(&mut *conn)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let rows: Vec<PendingRow> = rows
            .into_iter()
            .map(|row| {
                Ok(PendingRow {
                    id: row.try_get("id")?,
                    topic: row.try_get("topic")?,
                    key: row.try_get("partition_key")?,
                    event_type: row.try_get("event_type")?,
                    event_id: row.try_get("event_id")?,
                    envelope: row.try_get("envelope")?,
                    traceparent: row.try_get("traceparent")?,
                    created_at: row.try_get("created_at")?,
                    country: row
                        .try_get::<Option<String>, _>("country")?
                        .unwrap_or_default(),
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;

        // Group by (topic, partition), keeping id order inside each group.
        let mut groups: BTreeMap<(String, i32), Vec<&PendingRow>> = BTreeMap::new();
        for row in &rows {
            if !partitions.contains_key(&row.topic) {
                let found = self
                    .kafka
                    .ensure_topic(&row.topic, self.config.partitions)
                    .await?;
                partitions.insert(row.topic.clone(), found);
            }
            let partition = partition_for(&row.key, &partitions[&row.topic]);
            groups
                .entry((row.topic.clone(), partition))
                .or_default()
                .push(row);
        }
        let client = self.kafka.client().await?;
        let mut sends = Vec::with_capacity(groups.len());
        for ((topic, partition), group) in groups {
            let key = (topic.clone(), partition);
            let pc = match clients.get(&key) {
                Some(pc) => Arc::clone(pc),
                None => {
                    let pc = Arc::new(
                        client
                            .partition_client(topic.clone(), partition, UnknownTopicHandling::Retry)
                            .await?,
                    );
                    clients.insert(key, Arc::clone(&pc));
                    pc
                }
            };
            // One producer span per event, a child of the span that appended it; its record
            // carries the publish span's `traceparent` (the appender's when spans are off), so
            // the consumers' spans continue from it. The spans end when the batch is written.
            let spans: Vec<tracing::Span> = group
                .iter()
                .map(|row| publish_span(row, partition))
                .collect();
            let records = group
                .iter()
                .zip(&spans)
                .map(|(row, span)| {
                    let traceparent = telemetry::span_traceparent(span);
                    to_record(row, traceparent.as_deref().or(row.traceparent.as_deref()))
                })
                .collect();
            sends.push(async move {
                let produced = pc.produce(records, Compression::NoCompression).await;
                if produced.is_err() {
                    for span in &spans {
                        span.record("otel.status_code", "error");
                        span.record("error.type", "kafka_produce");
                    }
                }
                produced
            });
        }
        // Partitions are written at once, each in one call: the order within a partition is
        // the call's. If one fails nothing is marked, and the round is published again.
        for produced in futures::future::join_all(sends).await {
            produced?;
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        sqlx::query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *conn)
            .await?;
        self.metrics
            .outbox_published
            .get_or_create(&self.labels())
            .inc_by(ids.len() as u64);
        Ok(ids.len())
    }

    async fn update_lag(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        let lag: Option<f64> = sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM now() - min(created_at))::float8 FROM outbox WHERE published_at IS NULL",
        )
        .fetch_one(&mut *conn)
        .await?;
        self.metrics
            .outbox_lag_seconds
            .get_or_create(&self.labels())
            .set(lag.unwrap_or(0.0).max(0.0));
        Ok(())
    }

    async fn prune(&self) -> Result<u64, sqlx::Error> {
        let seconds = i64::try_from(self.config.retention.as_secs()).unwrap_or(i64::MAX);
        let done = sqlx::query(
            "DELETE FROM outbox WHERE published_at < now() - make_interval(secs => $1::float8)",
        )
        .bind(seconds as f64)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

/// The `outbox.publish` span of `row` (OpenTelemetry kind producer, messaging attributes of the
/// semantic conventions), a child of the `traceparent` stored with the row; a row without one
/// starts a trace.
fn publish_span(row: &PendingRow, partition: i32) -> tracing::Span {
    let span = tracing::info_span!(
        parent: None,
        "outbox.publish",
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.destination.name = %row.topic,
        messaging.destination.partition.id = %partition,
        messaging.kafka.message.key = %row.key,
        messaging.message.id = %row.event_id,
        pulse.event_type = %row.event_type,
    );
    if let Some(parent) = &row.traceparent {
        telemetry::set_remote_parent(&span, parent);
    }
    span
}

/// The Kafka record of `row`, with `traceparent` in its headers.
fn to_record(row: &PendingRow, traceparent: Option<&str>) -> Record {
    let mut headers = BTreeMap::new();
    headers.insert(
        HEADER_EVENT_TYPE.to_owned(),
        row.event_type.as_bytes().to_vec(),
    );
    headers.insert(
        HEADER_EVENT_ID.to_owned(),
        row.event_id.to_string().into_bytes(),
    );
    headers.insert(HEADER_COUNTRY.to_owned(), row.country.as_bytes().to_vec());
    if let Some(traceparent) = traceparent {
        headers.insert(
            telemetry::TRACEPARENT.to_owned(),
            traceparent.as_bytes().to_vec(),
        );
    }
    Record {
        key: Some(row.key.as_bytes().to_vec()),
        value: Some(row.envelope.as_bytes().to_vec()),
        headers,
        timestamp: row.created_at,
    }
}

/// Sleeps for `duration` or until `token` is cancelled.
pub async fn sleep_or_cancel(duration: Duration, token: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(duration) => {}
        () = token.cancelled() => {}
    }
}
