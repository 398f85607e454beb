//! Kafka consumer runtime on rskafka, with its state in PostgreSQL.
//!
//! - **Effectively once**: a record's handler runs in a transaction that also advances the
//!   stored offset and records the event id; a crash before commit leaves neither the effect nor
//!   the offset, so the record is handled again; an event published twice (same id) is applied
//!   once. A partition with records waiting applies them in batches, a transaction each
//!   ([`ConsumerConfig::batch_from_lag`]), with the same guarantee for the whole batch. The
//!   commit does not wait for the disk by default
//!   ([`ConsumerConfig::synchronous_commit`]): a PostgreSQL crash may take back the last
//!   commits, effects and offsets together, and those records are applied again from Kafka.
//! - **Partitions shared among replicas**: every replica heartbeats into `consumer_members`;
//!   each takes at most `ceil(partitions / live replicas)` partitions, each guarded by a
//!   PostgreSQL advisory lock held on the connection that runs the partition's transactions.
//!   When a replica stops or dies its session ends, its locks are freed, and the others take the
//!   partitions within seconds.
//! - **Retries and dead letters**: a failing handler is retried with exponential backoff; after
//!   `max_attempts` failures the record goes to the dead-letter topic with the error, and the
//!   partition moves on.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rskafka::client::error::{Error as KafkaClientError, ProtocolError};
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::record::{Record, RecordAndOffset};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::envelope::EventEnvelope;
use crate::kafka::{KafkaHandle, dead_letter_topic};
use crate::metrics::{ConsumerLabels, GroupLabels, Metrics, preset};
use crate::outbox::sleep_or_cancel;
use crate::telemetry;

/// The most one fetch of a partition returns: Kafka's own per-partition default
/// (`max.partition.fetch.bytes`). A partition far behind is read in several fetches; larger ones
/// only raised every consumer's memory peak while it caught up (each group holds its fetched
/// records while applying them, up to 256 per transaction).
const FETCH_MAX_BYTES: i32 = 1_048_576;

/// The error a handler returns; it is retried, then dead-lettered with its message.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// Applies one event inside the consumer's transaction.
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// Applies `event`. Every write must go through `tx`: it commits together with the offset.
    async fn handle(
        &self,
        tx: &mut PgConnection,
        event: &EventEnvelope,
    ) -> Result<(), HandlerError>;

    /// Applies `events`, consecutive records of one partition (each new: those applied before
    /// are left out), in order, in one transaction of the consumer. By default each with
    /// [`EventHandler::handle`] in its own span; a handler that can write many events in fewer
    /// statements (a sale's winners) overrides it. A failure names the event at fault, or the
    /// first one when it cannot tell: the transaction is rolled back, the events before it are
    /// applied again as a batch and it alone, with retries and the dead-letter topic.
    async fn handle_batch(
        &self,
        tx: &mut PgConnection,
        events: &[BatchEvent<'_>],
    ) -> Result<(), BatchFailure> {
        for (at, batched) in events.iter().enumerate() {
            self.handle(tx, batched.event)
                .instrument(batched.span.clone())
                .await
                .map_err(|error| BatchFailure { at, error })?;
        }
        Ok(())
    }
}

/// One event of a batch given to [`EventHandler::handle_batch`].
pub struct BatchEvent<'a> {
    /// The event.
    pub event: &'a EventEnvelope,
    /// The span its handling belongs to (it continues the producer's trace).
    pub span: tracing::Span,
}

/// Why [`EventHandler::handle_batch`] failed.
#[derive(Debug)]
pub struct BatchFailure {
    /// Index in the batch of the event at fault.
    pub at: usize,
    /// What went wrong.
    pub error: HandlerError,
}

impl BatchFailure {
    /// A failure of the batch that no single event is known to cause: the first goes alone.
    pub fn of_batch(error: impl Into<HandlerError>) -> Self {
        Self {
            at: 0,
            error: error.into(),
        }
    }
}

/// Kafka record header: why the record was dead-lettered.
pub const HEADER_DLQ_ERROR: &str = "dlq-error";
/// Kafka record header: the topic the record came from.
pub const HEADER_DLQ_TOPIC: &str = "dlq-original-topic";
/// Kafka record header: the partition the record came from.
pub const HEADER_DLQ_PARTITION: &str = "dlq-original-partition";
/// Kafka record header: the offset of the record in its partition.
pub const HEADER_DLQ_OFFSET: &str = "dlq-original-offset";
/// Kafka record header: how many times the handler failed.
pub const HEADER_DLQ_ATTEMPTS: &str = "dlq-attempts";

/// Tuning of a consumer.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Consumer group (one per component and purpose, e.g. `booking-cache`).
    pub group: String,
    /// Topic to read.
    pub topic: String,
    /// Handler attempts before a record is dead-lettered.
    pub max_attempts: u32,
    /// Backoff after the first failure; doubles each time.
    pub retry_backoff: Duration,
    /// Upper bound of the backoff.
    pub max_backoff: Duration,
    /// Heartbeat and rebalance interval.
    pub heartbeat: Duration,
    /// A replica that has not heartbeaten for this long is considered gone.
    pub member_ttl: Duration,
    /// Longest a fetch waits for new records: the long poll of an idle partition.
    pub fetch_max_wait: Duration,
    /// Longest a fetch waits after one that brought records; after each fetch that brought
    /// none, the wait doubles up to `fetch_max_wait`. A busy partition asks again at once: some
    /// brokers (tansu) hold every fetch for (up to) its whole wait even when records are there,
    /// which would add the long poll to the lag of every record.
    pub busy_fetch_max_wait: Duration,
    /// Whether each record's transaction waits, at commit, for PostgreSQL to flush it to disk
    /// (`synchronous_commit`). Off by default: a record's effects, its event id and the offset
    /// commit together, so a PostgreSQL crash that loses the last (< 1 s of) commits loses them
    /// together, and the records are fetched from Kafka and applied again: nothing is lost or
    /// applied twice. What did already follow from a lost commit outside PostgreSQL (a Redis
    /// call, a message sent from a row it wrote) happens again, as after any retry. On, every
    /// record waits for a disk flush, which bounds a partition to the disk's flush rate.
    pub synchronous_commit: bool,
    /// Records a partition must be behind (the broker's high watermark minus the next offset)
    /// before it applies them in batches of up to `max_batch` records a transaction. By default
    /// 2: whenever more than one record waits, so a burst of events (a sale's winners, a crowd
    /// of bookings) costs a commit per batch, not one per record. A batch's effects become
    /// visible together when it commits, and a crash redoes the whole batch (each event still
    /// takes effect once). With a larger value, a partition closer to the head commits each
    /// record before the next one's handler runs.
    pub batch_from_lag: i64,
    /// Most records one transaction applies when the partition is behind.
    pub max_batch: usize,
    /// Partitions to create the topic with when it does not exist yet.
    pub partitions: i32,
    /// How long the id of an applied event is kept, so that a copy of it published again has
    /// no second effect. It must outlast any republishing: a relay that stopped between
    /// publishing an event and noting it publishes it again when it next runs, and a consumer
    /// reads nothing before its stored offset. By default 7 days, as long as the outbox keeps
    /// published events.
    pub processed_retention: Duration,
    /// How often a replica deletes its group's ids older than `processed_retention` (by
    /// default every 10 minutes; replicas doing it at once only repeat each other's work).
    pub prune_every: Duration,
}

impl ConsumerConfig {
    /// Defaults for `group` reading `topic`.
    pub fn new(group: &str, topic: &str) -> Self {
        Self {
            group: group.to_owned(),
            topic: topic.to_owned(),
            max_attempts: 5,
            retry_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            heartbeat: Duration::from_secs(1),
            member_ttl: Duration::from_secs(5),
            fetch_max_wait: Duration::from_millis(500),
            busy_fetch_max_wait: Duration::from_millis(1),
            synchronous_commit: false,
            batch_from_lag: 2,
            max_batch: 256,
            partitions: 3,
            processed_retention: Duration::from_secs(7 * 24 * 3600),
            prune_every: Duration::from_secs(600),
        }
    }
}

/// Partitions a consumer currently owns (shared, for status and tests).
#[derive(Debug, Clone, Default)]
pub struct OwnedPartitions(Arc<Mutex<BTreeSet<i32>>>);

impl OwnedPartitions {
    /// A snapshot of the owned partitions.
    pub fn get(&self) -> BTreeSet<i32> {
        self.0.lock().map(|set| set.clone()).unwrap_or_default()
    }

    fn set(&self, partitions: impl Iterator<Item = i32>) {
        if let Ok(mut set) = self.0.lock() {
            *set = partitions.collect();
        }
    }
}

/// One replica of a consumer group.
pub struct Consumer {
    pool: PgPool,
    options: PgConnectOptions,
    kafka: KafkaHandle,
    handler: Arc<dyn EventHandler>,
    metrics: Arc<Metrics>,
    config: Arc<ConsumerConfig>,
    member_id: Uuid,
    owned: OwnedPartitions,
}

#[derive(Debug, thiserror::Error)]
enum ApplyError {
    #[error("handler failed: {0}")]
    Handler(HandlerError),
    #[error("the partition's offset moved: another replica owns it now")]
    Fenced,
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
}

/// How a batch went, short of an error that stops the worker.
enum Batch {
    /// Committed.
    Applied,
    /// Rolled back: the handler of the `at`-th record failed.
    HandlerFailed { at: usize, error: HandlerError },
}

#[derive(Debug, thiserror::Error)]
enum WorkerStop {
    #[error("cancelled")]
    Cancelled,
    #[error("the partition's offset moved: another replica owns it now")]
    Fenced,
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("kafka: {0}")]
    Kafka(String),
}

impl From<ApplyError> for WorkerStop {
    fn from(err: ApplyError) -> Self {
        match err {
            ApplyError::Fenced => Self::Fenced,
            ApplyError::Sql(e) => Self::Sql(e),
            ApplyError::Handler(e) => Self::Kafka(e.to_string()),
        }
    }
}

impl Consumer {
    /// A replica of `config.group`. `options` must point at the component's schema: each owned
    /// partition gets its own connection from them.
    pub fn new(
        pool: PgPool,
        options: PgConnectOptions,
        kafka: KafkaHandle,
        handler: Arc<dyn EventHandler>,
        metrics: Arc<Metrics>,
        config: ConsumerConfig,
    ) -> Self {
        Self {
            pool,
            options,
            kafka,
            handler,
            metrics,
            config: Arc::new(config),
            member_id: Uuid::new_v4(),
            owned: OwnedPartitions::default(),
        }
    }

    /// The partitions this replica owns, updated as it runs.
    pub fn owned_partitions(&self) -> OwnedPartitions {
        self.owned.clone()
    }

    fn group_labels(&self) -> GroupLabels {
        GroupLabels {
            group: self.config.group.clone(),
            topic: self.config.topic.clone(),
        }
    }

    /// Runs until `shutdown` is cancelled. Dropping the future stops every partition at once
    /// (uncommitted work is rolled back).
    pub async fn run(self, shutdown: CancellationToken) {
        // Every series exists from the start, so dashboards and alerts see 0, not nothing.
        let metrics = &self.metrics;
        for counter in [
            &metrics.consumer_handled,
            &metrics.consumer_failures,
            &metrics.consumer_dead_lettered,
            &metrics.consumer_fetch_failures,
        ] {
            preset(counter, [self.group_labels()]);
        }
        preset(&metrics.consumer_partitions_owned, [self.group_labels()]);
        let partitions = loop {
            match self
                .kafka
                .ensure_topic(&self.config.topic, self.config.partitions)
                .await
            {
                Ok(partitions) => break partitions,
                Err(err) => {
                    tracing::warn!(topic = %self.config.topic, error = %err, "consumer waiting for its topic");
                    sleep_or_cancel(Duration::from_secs(1), &shutdown).await;
                    if shutdown.is_cancelled() {
                        return;
                    }
                }
            }
        };
        let mut tasks = JoinSet::new();
        let mut workers: BTreeMap<i32, (CancellationToken, AbortHandle)> = BTreeMap::new();
        let mut finished: HashMap<tokio::task::Id, i32> = HashMap::new();
        let mut last_prune: Option<std::time::Instant> = None;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            if last_prune.is_none_or(|at| at.elapsed() >= self.config.prune_every) {
                last_prune = Some(std::time::Instant::now());
                if let Err(err) = self.prune_processed().await {
                    tracing::warn!(group = %self.config.group, error = %err, "could not delete old applied event ids; next time");
                }
            }
            // Forget workers that stopped by themselves (lost lock, database error).
            while let Some(done) = tasks.try_join_next_with_id() {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(err) => err.id(),
                };
                if let Some(partition) = finished.remove(&id) {
                    workers.remove(&partition);
                }
            }
            match self
                .rebalance(&partitions, &mut workers, &mut tasks, &mut finished)
                .await
            {
                Ok(()) => {}
                Err(err) => {
                    tracing::warn!(group = %self.config.group, error = %err, "consumer rebalance failed")
                }
            }
            self.owned.set(workers.keys().copied());
            self.metrics
                .consumer_partitions_owned
                .get_or_create(&self.group_labels())
                .set(workers.len() as i64);
            sleep_or_cancel(self.config.heartbeat, &shutdown).await;
        }
        for (token, _) in workers.values() {
            token.cancel();
        }
        while tasks.join_next().await.is_some() {}
        self.owned.set(std::iter::empty());
        let _ = sqlx::query(
            "DELETE FROM consumer_members WHERE group_name = $1 AND topic = $2 AND member_id = $3",
        )
        .bind(&self.config.group)
        .bind(&self.config.topic)
        .bind(self.member_id)
        .execute(&self.pool)
        .await;
    }

    /// Deletes the group's applied event ids older than `processed_retention`, a batch at a
    /// time so no statement holds many row locks for long. Returns how many went.
    async fn prune_processed(&self) -> Result<u64, sqlx::Error> {
        const BATCH: i64 = 5_000;
        let retention = self.config.processed_retention.as_secs_f64();
        let mut deleted = 0;
        loop {
            let batch = sqlx::query(
                "DELETE FROM consumer_processed_events WHERE ctid IN (
                     SELECT ctid FROM consumer_processed_events
                     WHERE group_name = $1 AND processed_at < now() - make_interval(secs => $2)
                     LIMIT $3)",
            )
            .bind(&self.config.group)
            .bind(retention)
            .bind(BATCH)
            .execute(&self.pool)
            .await?
            .rows_affected();
            deleted += batch;
            if batch < u64::try_from(BATCH).unwrap_or(u64::MAX) {
                return Ok(deleted);
            }
        }
    }

    async fn rebalance(
        &self,
        partitions: &[i32],
        workers: &mut BTreeMap<i32, (CancellationToken, AbortHandle)>,
        tasks: &mut JoinSet<()>,
        finished: &mut HashMap<tokio::task::Id, i32>,
    ) -> Result<(), sqlx::Error> {
        let ttl = self.config.member_ttl.as_secs_f64();
        sqlx::query(
            "INSERT INTO consumer_members (group_name, topic, member_id, heartbeat_at)
             VALUES ($1, $2, $3, now())
             ON CONFLICT (group_name, topic, member_id) DO UPDATE SET heartbeat_at = now()",
        )
        .bind(&self.config.group)
        .bind(&self.config.topic)
        .bind(self.member_id)
        .execute(&self.pool)
        .await?;
        sqlx::query(
            "DELETE FROM consumer_members
             WHERE group_name = $1 AND topic = $2 AND heartbeat_at < now() - make_interval(secs => $3)",
        )
        .bind(&self.config.group)
        .bind(&self.config.topic)
        .bind(ttl)
        .execute(&self.pool)
        .await?;
        let live: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM consumer_members WHERE group_name = $1 AND topic = $2",
        )
        .bind(&self.config.group)
        .bind(&self.config.topic)
        .fetch_one(&self.pool)
        .await?;
        let live = usize::try_from(live.max(1)).unwrap_or(1);
        let share = partitions.len().div_ceil(live);

        // Give back what is above our share, highest partitions first.
        while workers.len() > share {
            let Some((&partition, _)) = workers.iter().next_back() else {
                break;
            };
            if let Some((token, _)) = workers.remove(&partition) {
                token.cancel();
                tracing::info!(group = %self.config.group, partition, "releasing partition for another replica");
            }
        }
        // Take free partitions up to our share.
        for &partition in partitions {
            if workers.len() >= share {
                break;
            }
            if workers.contains_key(&partition) {
                continue;
            }
            let mut conn = PgConnection::connect_with(&self.options).await?;
            let key = crate::db::advisory_key(&format!(
                "pulse-consumer:{}:{}:{partition}",
                self.config.group, self.config.topic
            ));
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(key)
                .fetch_one(&mut conn)
                .await?;
            if !locked {
                conn.close().await.ok();
                continue;
            }
            tracing::info!(group = %self.config.group, topic = %self.config.topic, partition, "partition acquired");
            let token = CancellationToken::new();
            let worker = PartitionWorker {
                consumer: self.shallow(),
                partition,
                token: token.clone(),
            };
            let handle = tasks.spawn(async move { worker.run(conn).await });
            finished.insert(handle.id(), partition);
            workers.insert(partition, (token, handle));
        }
        Ok(())
    }

    fn shallow(&self) -> Shared {
        Shared {
            kafka: self.kafka.clone(),
            handler: Arc::clone(&self.handler),
            metrics: Arc::clone(&self.metrics),
            config: Arc::clone(&self.config),
        }
    }
}

/// What a partition worker needs from its consumer.
struct Shared {
    kafka: KafkaHandle,
    handler: Arc<dyn EventHandler>,
    metrics: Arc<Metrics>,
    config: Arc<ConsumerConfig>,
}

struct PartitionWorker {
    consumer: Shared,
    partition: i32,
    token: CancellationToken,
}

impl PartitionWorker {
    fn config(&self) -> &ConsumerConfig {
        &self.consumer.config
    }

    fn group_labels(&self) -> GroupLabels {
        GroupLabels {
            group: self.config().group.clone(),
            topic: self.config().topic.clone(),
        }
    }

    async fn run(self, mut conn: PgConnection) {
        match self.consume(&mut conn).await {
            Ok(()) | Err(WorkerStop::Cancelled) => {}
            Err(err) => {
                if matches!(err, WorkerStop::Kafka(_)) {
                    self.consumer
                        .metrics
                        .consumer_fetch_failures
                        .get_or_create(&self.group_labels())
                        .inc();
                }
                tracing::warn!(
                group = %self.config().group, partition = self.partition, error = %err,
                "partition worker stopped; the partition will be taken again"
                );
            }
        }
        // Ending the session releases the partition's advisory lock.
        conn.close().await.ok();
    }

    async fn consume(&self, conn: &mut PgConnection) -> Result<(), WorkerStop> {
        let client = self
            .consumer
            .kafka
            .client()
            .await
            .map_err(|e| WorkerStop::Kafka(e.to_string()))?;
        let pc = client
            .partition_client(
                self.config().topic.clone(),
                self.partition,
                UnknownTopicHandling::Retry,
            )
            .await
            .map_err(|e| WorkerStop::Kafka(e.to_string()))?;
        let mut next = self.load_offset(conn, &pc).await?;
        let lag_labels = ConsumerLabels {
            group: self.config().group.clone(),
            topic: self.config().topic.clone(),
            partition: self.partition,
        };
        let millis = |wait: Duration| i32::try_from(wait.as_millis()).unwrap_or(500).max(1);
        let idle_wait = millis(self.config().fetch_max_wait);
        let busy_wait = millis(self.config().busy_fetch_max_wait);
        let mut max_wait = idle_wait;
        loop {
            if self.token.is_cancelled() {
                return Err(WorkerStop::Cancelled);
            }
            let fetched = tokio::select! {
                () = self.token.cancelled() => return Err(WorkerStop::Cancelled),
                fetched = pc.fetch_records(next, 1..FETCH_MAX_BYTES, max_wait) => fetched,
            };
            let (mut records, high_watermark) = match fetched {
                Ok(ok) => ok,
                Err(KafkaClientError::ServerError {
                    protocol_error: ProtocolError::OffsetOutOfRange,
                    ..
                }) => {
                    let earliest = pc
                        .get_offset(OffsetAt::Earliest)
                        .await
                        .map_err(|e| WorkerStop::Kafka(e.to_string()))?;
                    if earliest > next {
                        tracing::error!(
                            partition = self.partition,
                            from = next,
                            to = earliest,
                            "records were deleted by retention before they were consumed; skipping to the earliest"
                        );
                        next = self.store_offset(conn, next, earliest).await?;
                    } else {
                        sleep_or_cancel(Duration::from_millis(200), &self.token).await;
                    }
                    continue;
                }
                Err(err) => {
                    self.consumer
                        .metrics
                        .consumer_fetch_failures
                        .get_or_create(&self.group_labels())
                        .inc();
                    tracing::warn!(partition = self.partition, error = %err, "fetch failed; retrying");
                    sleep_or_cancel(Duration::from_secs(1), &self.token).await;
                    continue;
                }
            };
            records.sort_by_key(|r| r.offset);
            // A fetch may start at the beginning of the batch holding `next`.
            records.retain(|r| r.offset >= next);
            // Busy: ask again at once. Idle: the wait doubles back up to the long poll, so a
            // partition between two records does not sit out a whole long poll on a broker
            // that holds fetches for their wait.
            max_wait = if records.is_empty() {
                max_wait.saturating_mul(2).min(idle_wait)
            } else {
                busy_wait
            };
            let mut rest = &records[..];
            // A record whose handler failed in a batch goes alone (with retries and the
            // dead-letter topic), after the records before it.
            let mut alone_at: Option<i64> = None;
            while let Some(record) = rest.first() {
                if self.token.is_cancelled() {
                    return Err(WorkerStop::Cancelled);
                }
                let up_to = alone_at.map_or(self.config().max_batch, |at| {
                    usize::try_from(at - record.offset).unwrap_or(0)
                });
                let batch = if high_watermark - next >= self.config().batch_from_lag {
                    batch_of(rest, up_to.min(self.config().max_batch))
                } else {
                    Vec::new()
                };
                let done = if batch.len() > 1 {
                    match self.apply_batch(conn, &batch).await? {
                        Batch::Applied => batch.len(),
                        Batch::HandlerFailed { at, error } => {
                            tracing::debug!(
                                partition = self.partition, error = %error,
                                "a handler failed in a batch; the records before it go as a batch, it alone"
                            );
                            alone_at = batch.get(at).map(|(r, _)| r.offset);
                            continue;
                        }
                    }
                } else {
                    self.process(conn, record).await?;
                    if alone_at == Some(record.offset) {
                        alone_at = None;
                    }
                    1
                };
                let (applied, later) = rest.split_at(done);
                rest = later;
                next = applied.last().map_or(next, |r| r.offset + 1);
                self.consumer
                    .metrics
                    .consumer_lag
                    .get_or_create(&lag_labels)
                    .set((high_watermark - next).max(0));
            }
            self.consumer
                .metrics
                .consumer_lag
                .get_or_create(&lag_labels)
                .set((high_watermark - next).max(0));
        }
    }

    async fn load_offset(
        &self,
        conn: &mut PgConnection,
        pc: &PartitionClient,
    ) -> Result<i64, WorkerStop> {
        let stored: Option<i64> = sqlx::query_scalar(
            "SELECT next_offset FROM consumer_offsets WHERE group_name = $1 AND topic = $2 AND partition = $3",
        )
        .bind(&self.config().group)
        .bind(&self.config().topic)
        .bind(self.partition)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(offset) = stored {
            return Ok(offset);
        }
        // A new group starts at the earliest record still kept: nothing produced is missed.
        let earliest = pc
            .get_offset(OffsetAt::Earliest)
            .await
            .map_err(|e| WorkerStop::Kafka(e.to_string()))?;
        sqlx::query(
            "INSERT INTO consumer_offsets (group_name, topic, partition, next_offset)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(&self.config().group)
        .bind(&self.config().topic)
        .bind(self.partition)
        .bind(earliest)
        .execute(&mut *conn)
        .await?;
        let offset: i64 = sqlx::query_scalar(
            "SELECT next_offset FROM consumer_offsets WHERE group_name = $1 AND topic = $2 AND partition = $3",
        )
        .bind(&self.config().group)
        .bind(&self.config().topic)
        .bind(self.partition)
        .fetch_one(&mut *conn)
        .await?;
        Ok(offset)
    }

    /// Moves the offset from `expected` to `to` (fenced).
    async fn store_offset(
        &self,
        conn: &mut PgConnection,
        expected: i64,
        to: i64,
    ) -> Result<i64, WorkerStop> {
        let done = sqlx::query(
            "UPDATE consumer_offsets SET next_offset = $5, updated_at = now()
             WHERE group_name = $1 AND topic = $2 AND partition = $3 AND next_offset = $4",
        )
        .bind(&self.config().group)
        .bind(&self.config().topic)
        .bind(self.partition)
        .bind(expected)
        .bind(to)
        .execute(&mut *conn)
        .await?;
        if done.rows_affected() == 1 {
            Ok(to)
        } else {
            Err(WorkerStop::Fenced)
        }
    }

    /// Starts a record's (or a batch's) transaction; see `ConsumerConfig::synchronous_commit`.
    async fn begin<'c>(
        &self,
        conn: &'c mut PgConnection,
    ) -> Result<sqlx::Transaction<'c, sqlx::Postgres>, sqlx::Error> {
        if self.config().synchronous_commit {
            conn.begin().await
        } else {
            // One round trip, as a plain BEGIN.
            conn.begin_with("BEGIN; SET LOCAL synchronous_commit = off")
                .await
        }
    }

    /// The span of handling `record`: OpenTelemetry kind consumer, messaging attributes of the
    /// semantic conventions; its parent is the producer's span named by the record's
    /// `traceparent`.
    fn span(&self, record: &RecordAndOffset, envelope: &EventEnvelope) -> tracing::Span {
        let span = tracing::info_span!(
            "kafka.consume",
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.operation.type = "process",
            messaging.consumer.group.name = %self.config().group,
            messaging.destination.name = %self.config().topic,
            messaging.destination.partition.id = %self.partition,
            messaging.kafka.offset = record.offset,
            messaging.message.id = %envelope.id,
            pulse.event_type = %envelope.event_type,
        );
        if let Some(parent) = record
            .record
            .headers
            .get(telemetry::TRACEPARENT)
            .and_then(|v| std::str::from_utf8(v).ok())
        {
            telemetry::set_remote_parent(&span, parent);
        }
        span
    }

    /// Applies `batch` (consecutive records from the stored offset on, with their events) in
    /// one transaction: the offset moves past all of them and their event ids are recorded
    /// with the effects of every handler, or nothing is. A failing handler rolls the batch
    /// back and says which record it was.
    async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        batch: &[(&RecordAndOffset, EventEnvelope)],
    ) -> Result<Batch, ApplyError> {
        let (Some((first, _)), Some((last, _))) = (batch.first(), batch.last()) else {
            return Ok(Batch::Applied);
        };
        let mut tx = self.begin(conn).await?;
        let moved = sqlx::query(
            "UPDATE consumer_offsets SET next_offset = $5, updated_at = now()
             WHERE group_name = $1 AND topic = $2 AND partition = $3 AND next_offset = $4",
        )
        .bind(&self.config().group)
        .bind(&self.config().topic)
        .bind(self.partition)
        .bind(first.offset)
        .bind(last.offset + 1)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !moved {
            return Err(ApplyError::Fenced);
        }
        let ids: Vec<Uuid> = batch.iter().map(|(_, envelope)| envelope.id).collect();
        // An event in the batch twice (published again) is inserted, and fresh, once.
        let mut fresh: HashSet<Uuid> = sqlx::query_scalar(
            "INSERT INTO consumer_processed_events (group_name, event_id)
             SELECT $1, id FROM unnest($2::uuid[]) AS id
             ON CONFLICT DO NOTHING RETURNING event_id",
        )
        .bind(&self.config().group)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        // The new events, each with its index in `batch`.
        let mut positions = Vec::with_capacity(batch.len());
        let mut events = Vec::with_capacity(batch.len());
        for (at, (record, envelope)) in batch.iter().enumerate() {
            if !fresh.remove(&envelope.id) {
                tracing::debug!(event_id = %envelope.id, "event already applied; skipping");
                continue;
            }
            positions.push(at);
            events.push(BatchEvent {
                event: envelope,
                span: self.span(record, envelope),
            });
        }
        if !events.is_empty()
            && let Err(failure) = self.consumer.handler.handle_batch(&mut tx, &events).await
        {
            // Dropping the transaction rolls it back.
            let at = positions.get(failure.at).copied().unwrap_or(0);
            return Ok(Batch::HandlerFailed {
                at,
                error: failure.error,
            });
        }
        tx.commit().await?;
        self.consumer
            .metrics
            .consumer_handled
            .get_or_create(&self.group_labels())
            .inc_by(batch.len() as u64);
        Ok(Batch::Applied)
    }

    async fn process(
        &self,
        conn: &mut PgConnection,
        record: &RecordAndOffset,
    ) -> Result<(), WorkerStop> {
        let envelope: EventEnvelope = match envelope_of(record) {
            Ok(envelope) => envelope,
            Err(err) => {
                // Retrying cannot fix a record that is not an event.
                self.dead_letter(record, &format!("malformed event envelope: {err}"), 0)
                    .await?;
                self.store_offset(conn, record.offset, record.offset + 1)
                    .await?;
                return Ok(());
            }
        };
        let span = self.span(record, &envelope);
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            match self
                .apply(conn, record.offset, &envelope)
                .instrument(span.clone())
                .await
            {
                Ok(()) => {
                    self.consumer
                        .metrics
                        .consumer_handled
                        .get_or_create(&self.group_labels())
                        .inc();
                    return Ok(());
                }
                Err(ApplyError::Handler(err)) => {
                    self.consumer
                        .metrics
                        .consumer_failures
                        .get_or_create(&self.group_labels())
                        .inc();
                    let _entered = span.enter();
                    if attempt >= self.config().max_attempts {
                        tracing::error!(attempt, error = %err, "handler keeps failing; sending the record to the dead-letter topic");
                        drop(_entered);
                        self.dead_letter(record, &err.to_string(), attempt).await?;
                        self.store_offset(conn, record.offset, record.offset + 1)
                            .await?;
                        return Ok(());
                    }
                    tracing::warn!(attempt, error = %err, "handler failed; retrying");
                    drop(_entered);
                    let exponent = attempt.saturating_sub(1).min(16);
                    let backoff = self
                        .config()
                        .retry_backoff
                        .saturating_mul(1 << exponent)
                        .min(self.config().max_backoff);
                    sleep_or_cancel(backoff, &self.token).await;
                    if self.token.is_cancelled() {
                        return Err(WorkerStop::Cancelled);
                    }
                }
                Err(other) => return Err(other.into()),
            }
        }
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        offset: i64,
        envelope: &EventEnvelope,
    ) -> Result<(), ApplyError> {
        let mut tx = self.begin(conn).await?;
        // One round trip: the offset moves from `offset` only (the row lock fences off a
        // replica that took the partition meanwhile; a moved offset matches no row), and the
        // event id is recorded only then. Both commit with the handler's effects, or neither.
        let (moved, fresh): (bool, bool) = sqlx::query_as(
            "WITH moved AS (
                 UPDATE consumer_offsets SET next_offset = $4 + 1, updated_at = now()
                 WHERE group_name = $1 AND topic = $2 AND partition = $3 AND next_offset = $4
                 RETURNING 1
             ), fresh AS (
                 INSERT INTO consumer_processed_events (group_name, event_id)
                 SELECT $1, $5 FROM moved
                 ON CONFLICT DO NOTHING
                 RETURNING 1
             )
             SELECT EXISTS (SELECT 1 FROM moved), EXISTS (SELECT 1 FROM fresh)",
        )
        .bind(&self.config().group)
        .bind(&self.config().topic)
        .bind(self.partition)
        .bind(offset)
        .bind(envelope.id)
        .fetch_one(&mut *tx)
        .await?;
        if !moved {
            return Err(ApplyError::Fenced);
        }
        if fresh {
            self.consumer
                .handler
                .handle(&mut tx, envelope)
                .await
                .map_err(ApplyError::Handler)?;
        } else {
            tracing::debug!(event_id = %envelope.id, "event already applied; skipping");
        }
        tx.commit().await?;
        Ok(())
    }

    /// Publishes the record to the dead-letter topic; retries until it is there or the worker
    /// is cancelled (the offset only moves on once it is).
    async fn dead_letter(
        &self,
        record: &RecordAndOffset,
        error: &str,
        attempts: u32,
    ) -> Result<(), WorkerStop> {
        let topic = dead_letter_topic(&self.config().topic, &self.config().group);
        let mut headers = record.record.headers.clone();
        headers.insert(HEADER_DLQ_ERROR.into(), error.as_bytes().to_vec());
        headers.insert(
            HEADER_DLQ_TOPIC.into(),
            self.config().topic.as_bytes().to_vec(),
        );
        headers.insert(
            HEADER_DLQ_PARTITION.into(),
            self.partition.to_string().into_bytes(),
        );
        headers.insert(
            HEADER_DLQ_OFFSET.into(),
            record.offset.to_string().into_bytes(),
        );
        headers.insert(
            HEADER_DLQ_ATTEMPTS.into(),
            attempts.to_string().into_bytes(),
        );
        let dead = Record {
            key: record.record.key.clone(),
            value: record.record.value.clone(),
            headers,
            timestamp: chrono::Utc::now(),
        };
        loop {
            let sent = async {
                let partitions = self
                    .consumer
                    .kafka
                    .ensure_topic(&topic, 1)
                    .await
                    .map_err(|e| e.to_string())?;
                let partition = partitions.first().copied().unwrap_or(0);
                let client = self
                    .consumer
                    .kafka
                    .client()
                    .await
                    .map_err(|e| e.to_string())?;
                let pc = client
                    .partition_client(topic.clone(), partition, UnknownTopicHandling::Retry)
                    .await
                    .map_err(|e| e.to_string())?;
                pc.produce(vec![dead.clone()], Compression::NoCompression)
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            match sent {
                Ok(_) => {
                    self.consumer
                        .metrics
                        .consumer_dead_lettered
                        .get_or_create(&self.group_labels())
                        .inc();
                    return Ok(());
                }
                Err(err) => {
                    tracing::warn!(%topic, error = %err, "cannot publish to the dead-letter topic; retrying");
                    sleep_or_cancel(Duration::from_secs(1), &self.token).await;
                    if self.token.is_cancelled() {
                        return Err(WorkerStop::Cancelled);
                    }
                }
            }
        }
    }
}

/// The event of `record`, or why it is not one.
fn envelope_of(record: &RecordAndOffset) -> Result<EventEnvelope, String> {
    record
        .record
        .value
        .as_deref()
        .ok_or_else(|| "the record has no value".to_owned())
        .and_then(|bytes| serde_json::from_slice(bytes).map_err(|e| e.to_string()))
}

/// Up to `max` leading records of `records` with their events, stopping before the first
/// record that is not an event (it goes alone, to the dead-letter topic) or does not follow
/// the previous offset (the stored offset moves record by record there).
fn batch_of(records: &[RecordAndOffset], max: usize) -> Vec<(&RecordAndOffset, EventEnvelope)> {
    let mut batch: Vec<(&RecordAndOffset, EventEnvelope)> = Vec::new();
    for record in records.iter().take(max) {
        if batch
            .last()
            .is_some_and(|(previous, _)| previous.offset + 1 != record.offset)
        {
            break;
        }
        match envelope_of(record) {
            Ok(envelope) => batch.push((record, envelope)),
            Err(_) => break,
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TestDatabase, kafka_brokers, unique};

    static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("tests/migrations");

    /// Records each event (its `applied_at` telling its transaction); fails on
    /// `{"poison": true}`.
    struct Recorder;

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
            // `applied_at` defaults to now(), the start of the transaction: one value per
            // transaction.
            sqlx::query("INSERT INTO effects (event_id, seq) VALUES ($1, $2)")
                .bind(event.id)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
            Ok(())
        }
    }

    /// Records a whole batch in one statement; a batch with a poison fails, naming it.
    struct BatchRecorder;

    #[async_trait]
    impl EventHandler for BatchRecorder {
        async fn handle(
            &self,
            tx: &mut PgConnection,
            event: &EventEnvelope,
        ) -> Result<(), HandlerError> {
            Recorder.handle(tx, event).await
        }

        async fn handle_batch(
            &self,
            tx: &mut PgConnection,
            events: &[BatchEvent<'_>],
        ) -> Result<(), BatchFailure> {
            if let Some(at) = events
                .iter()
                .position(|b| b.event.payload["poison"].as_bool() == Some(true))
            {
                return Err(BatchFailure {
                    at,
                    error: "a poison event in the batch".into(),
                });
            }
            let ids: Vec<Uuid> = events.iter().map(|b| b.event.id).collect();
            let seqs: Vec<i64> = events
                .iter()
                .map(|b| b.event.payload["seq"].as_i64().unwrap_or(-1))
                .collect();
            sqlx::query("INSERT INTO effects (event_id, seq) SELECT * FROM unnest($1::uuid[], $2::bigint[])")
                .bind(&ids)
                .bind(&seqs)
                .execute(&mut *tx)
                .await
                .map_err(BatchFailure::of_batch)?;
            Ok(())
        }
    }

    fn envelope(seq: i64, poison: bool) -> EventEnvelope {
        EventEnvelope {
            id: crate::new_id(),
            event_type: "TestEvent".into(),
            country: "FR".into(),
            occurred_at: chrono::Utc::now(),
            traceparent: None,
            payload: serde_json::json!({ "seq": seq, "poison": poison }),
        }
    }

    #[tokio::test]
    async fn a_partition_far_behind_is_applied_in_batches_once_each_and_a_poison_alone() {
        batches_apply_each_event_once_and_a_poison_alone(Arc::new(Recorder)).await;
    }

    #[tokio::test]
    async fn a_handler_writing_whole_batches_applies_each_event_once_and_a_poison_alone() {
        batches_apply_each_event_once_and_a_poison_alone(Arc::new(BatchRecorder)).await;
    }

    async fn batches_apply_each_event_once_and_a_poison_alone(handler: Arc<dyn EventHandler>) {
        let db = TestDatabase::create().await;
        crate::db::migrate(&db.url, "kit_batch", &MIGRATIONS)
            .await
            .expect("migrations apply");
        let pool = crate::db::schema_pool(&db.url, "kit_batch", 4).expect("pool");
        let options = crate::db::schema_options(&db.url, "kit_batch").expect("options");
        let kafka = KafkaHandle::new(kafka_brokers());
        let topic = unique("kit.batch");
        kafka.ensure_topic(&topic, 1).await.expect("topic");
        // 300 events far beyond `batch_from_lag`, one published twice and one poison.
        let mut events: Vec<EventEnvelope> =
            (0..300).map(|seq| envelope(seq, seq == 200)).collect();
        events.insert(151, events[150].clone());
        let client = kafka.client().await.expect("client");
        let pc = client
            .partition_client(topic.clone(), 0, UnknownTopicHandling::Retry)
            .await
            .expect("partition client");
        let records = events
            .iter()
            .map(|e| Record {
                key: Some(e.id.to_string().into_bytes()),
                value: Some(serde_json::to_vec(e).expect("json")),
                headers: BTreeMap::new(),
                timestamp: chrono::Utc::now(),
            })
            .collect();
        pc.produce(records, Compression::NoCompression)
            .await
            .expect("produce");

        let mut config = ConsumerConfig::new("batch", &topic);
        config.partitions = 1;
        config.retry_backoff = Duration::from_millis(10);
        config.max_attempts = 2;
        config.fetch_max_wait = Duration::from_millis(100);
        let metrics = Arc::new(Metrics::new());
        let stop = CancellationToken::new();
        let running = tokio::spawn(
            Consumer::new(
                pool.clone(),
                options,
                kafka.clone(),
                handler,
                Arc::clone(&metrics),
                config,
            )
            .run(stop.clone()),
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let offset: Option<i64> = sqlx::query_scalar(
                "SELECT next_offset FROM consumer_offsets WHERE group_name = 'batch'",
            )
            .fetch_optional(&pool)
            .await
            .expect("offset");
            if offset == Some(301) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "offset {offset:?}, not past all 301 records"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let seen: Vec<(i64, i64)> =
            sqlx::query_as("SELECT seq, count(*) FROM effects GROUP BY seq ORDER BY seq")
                .fetch_all(&pool)
                .await
                .expect("effects");
        let expected: Vec<(i64, i64)> = (0..300).filter(|&s| s != 200).map(|s| (s, 1)).collect();
        assert_eq!(seen, expected, "every event but the poison, once");
        let transactions: i64 =
            sqlx::query_scalar("SELECT count(DISTINCT applied_at) FROM effects")
                .fetch_one(&pool)
                .await
                .expect("transactions");
        assert!(
            transactions < 50,
            "299 effects in {transactions} transactions: not batched"
        );
        let dead = client
            .partition_client(
                dead_letter_topic(&topic, "batch"),
                0,
                UnknownTopicHandling::Retry,
            )
            .await
            .expect("dead-letter partition")
            .fetch_records(0, 1..1_000_000, 1_000)
            .await
            .expect("dead letters")
            .0;
        assert_eq!(dead.len(), 1, "the poison alone is dead-lettered");
        stop.cancel();
        running.await.expect("stops");
    }
}
