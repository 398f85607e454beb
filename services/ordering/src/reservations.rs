//! Turns seckill reservations into orders: a Redis Streams consumer group (`ordering`) on every
//! campaign's reservation stream (listed in marketing's registry set; contract in
//! [`pulse_marketing::reservation`]).
//!
//! - An entry becomes an order `PENDING_PAYMENT` (idempotent on the order id it carries), then
//!   is acknowledged. A crash between the two creates nothing twice: the entry is delivered
//!   again and the insert finds the order.
//! - Entries left pending (their consumer died, or they failed) are claimed again with
//!   `XAUTOCLAIM` once idle for `claim_idle`.
//! - An entry that failed for a reason of its own (malformed, refused by the database)
//!   `max_deliveries` times moves to the campaign's dead-letter stream with its error, atomically
//!   with its acknowledgement. Outages (database unreachable) are retried without limit.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use pulse_kit::redis::{LuaScript, RedisHandle};
use pulse_marketing::reservation::{CampaignKeys, Reservation, registry_key};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamInfoConsumersReply,
    StreamPendingCountReply, StreamReadOptions, StreamReadReply,
};
use tokio_util::sync::CancellationToken;

use crate::checkout::SeckillCheckout;
use crate::settings::ReservationSettings;
use crate::store::OrderError;

/// The consumer group ordering reads reservations with.
pub const GROUP: &str = "ordering";

/// How often members of past processes are looked for.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// A member with nothing pending and idle this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// Moves an entry to the dead-letter stream with its last error and acknowledges it, in one
/// step. `KEYS`: stream, dead, errors. `ARGV`: group, entry id, deliveries.
const DEAD_LETTER: &str = r"
local entries = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
local args = {'XADD', KEYS[2], '*'}
if entries[1] then
  for _, value in ipairs(entries[1][2]) do args[#args + 1] = value end
end
args[#args + 1] = 'error'
args[#args + 1] = redis.call('HGET', KEYS[3], ARGV[2]) or 'unknown error'
args[#args + 1] = 'deliveries'
args[#args + 1] = ARGV[3]
args[#args + 1] = 'source_id'
args[#args + 1] = ARGV[2]
redis.call(unpack(args))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
return 1
";

/// Counters of the consumer.
#[derive(Debug, Clone, Default)]
pub struct ReservationMetrics {
    /// Orders created from reservations.
    pub created: Counter,
    /// Entries whose order existed already (redelivered after a crash).
    pub duplicates: Counter,
    /// Failed attempts.
    pub failures: Counter,
    /// Entries claimed from idle consumers.
    pub claimed: Counter,
    /// Entries moved to a dead-letter stream.
    pub dead_lettered: Counter,
}

enum Failure {
    /// The entry itself is bad: counts towards the dead-letter limit.
    Permanent(String),
    /// Something else is down: retried without limit.
    Transient(String),
}

fn classify(err: OrderError) -> Failure {
    match err {
        OrderError::Db(sqlx::Error::Database(db)) => {
            let class = db.code().map(|c| c.chars().take(2).collect::<String>());
            match class.as_deref() {
                // Data exceptions and integrity violations will fail again.
                Some("22" | "23") => Failure::Permanent(format!("refused by the database: {db}")),
                _ => Failure::Transient(format!("database: {db}")),
            }
        }
        OrderError::Db(other) => Failure::Transient(format!("database: {other}")),
        OrderError::Outbox(other) => Failure::Transient(other.to_string()),
        other => Failure::Permanent(other.to_string()),
    }
}

/// One member of the `ordering` group.
pub struct ReservationConsumer {
    redis: RedisHandle,
    keyspace: String,
    checkout: SeckillCheckout,
    settings: ReservationSettings,
    name: String,
    dead_letter: LuaScript,
    metrics: ReservationMetrics,
}

/// A stream entry's fields as text.
fn fields(entry: &StreamId) -> BTreeMap<String, String> {
    entry
        .map
        .iter()
        .filter_map(|(k, v)| {
            redis::from_redis_value::<String>(v)
                .ok()
                .map(|v| (k.clone(), v))
        })
        .collect()
}

impl ReservationConsumer {
    /// A consumer named `name` (unique per process) for `keyspace`, placing orders through
    /// `checkout`.
    pub fn new(
        redis: RedisHandle,
        keyspace: &str,
        checkout: SeckillCheckout,
        settings: ReservationSettings,
        name: &str,
        metrics: ReservationMetrics,
    ) -> Self {
        Self {
            redis,
            keyspace: keyspace.to_owned(),
            checkout,
            settings,
            name: name.to_owned(),
            dead_letter: LuaScript::new(DEAD_LETTER),
            metrics,
        }
    }

    /// Runs until `shutdown` is cancelled (dropping the future is a crash: what was read and not
    /// acknowledged stays pending and is claimed by another member later).
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let mut groups: HashSet<String> = HashSet::new();
        let mut campaigns: Vec<String> = Vec::new();
        let mut listed_at: Option<Instant> = None;
        let mut claimed_at = Instant::now();
        let mut pruned_at = Instant::now();
        while !shutdown.is_cancelled() {
            let prune = pruned_at.elapsed() >= PRUNE_EVERY;
            if prune {
                pruned_at = Instant::now();
            }
            let round = this
                .round(
                    &mut groups,
                    &mut campaigns,
                    &mut listed_at,
                    &mut claimed_at,
                    prune,
                )
                .await;
            let pause = match round {
                Ok(0) => this.settings.idle_poll,
                Ok(_) => Duration::ZERO,
                Err(err) => {
                    tracing::warn!(error = %err, "reservation consumer round failed; retrying");
                    groups.clear();
                    Duration::from_secs(1)
                }
            };
            if !pause.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = shutdown.cancelled() => {}
                }
            }
        }
    }

    async fn round(
        self: &Arc<Self>,
        groups: &mut HashSet<String>,
        campaigns: &mut Vec<String>,
        listed_at: &mut Option<Instant>,
        claimed_at: &mut Instant,
        prune: bool,
    ) -> redis::RedisResult<usize> {
        let mut conn = self.redis.connection().await?;
        if listed_at.is_none_or(|at| at.elapsed() > Duration::from_secs(1)) {
            *campaigns = conn.smembers(registry_key(&self.keyspace)).await?;
            campaigns.sort();
            *listed_at = Some(Instant::now());
        }
        let reclaim = claimed_at.elapsed() >= self.claim_interval();
        if reclaim {
            *claimed_at = Instant::now();
        }
        let mut handled = 0;
        for campaign in campaigns.iter() {
            let keys = CampaignKeys::new(&self.keyspace, campaign);
            if !groups.contains(&keys.stream) {
                self.ensure_group(&mut conn, &keys.stream).await?;
                groups.insert(keys.stream.clone());
            }
            let options = StreamReadOptions::default()
                .group(GROUP, &self.name)
                .count(self.settings.batch);
            let read: redis::RedisResult<StreamReadReply> =
                conn.xread_options(&[&keys.stream], &[">"], &options).await;
            let read = match read {
                Ok(read) => read,
                Err(err) if err.code() == Some("NOGROUP") => {
                    // The stream was deleted (Redis lost it); make the group again next round.
                    groups.remove(&keys.stream);
                    continue;
                }
                Err(err) => return Err(err),
            };
            let entries: Vec<StreamId> = read.keys.into_iter().flat_map(|k| k.ids).collect();
            handled += entries.len();
            self.handle_all(&keys, entries).await;
            if reclaim {
                handled += self.reclaim(&mut conn, &keys).await?;
            }
            if prune {
                self.prune_consumers(&mut conn, &keys.stream).await?;
            }
        }
        Ok(handled)
    }

    /// Forgets group members of past processes: nothing pending, idle for an hour.
    async fn prune_consumers(
        &self,
        conn: &mut ConnectionManager,
        stream: &str,
    ) -> redis::RedisResult<()> {
        let members: StreamInfoConsumersReply = conn.xinfo_consumers(stream, GROUP).await?;
        for member in members.consumers {
            let idle = Duration::from_millis(u64::try_from(member.idle).unwrap_or(u64::MAX));
            if member.name != self.name && member.pending == 0 && idle >= FORGET_AFTER {
                let _: i64 = conn.xgroup_delconsumer(stream, GROUP, &member.name).await?;
                tracing::info!(consumer = %member.name, stream, "forgot an idle reservation consumer");
            }
        }
        Ok(())
    }

    fn claim_interval(&self) -> Duration {
        (self.settings.claim_idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(5))
    }

    async fn ensure_group(
        &self,
        conn: &mut ConnectionManager,
        stream: &str,
    ) -> redis::RedisResult<()> {
        let created: redis::RedisResult<()> = conn.xgroup_create_mkstream(stream, GROUP, "0").await;
        match created {
            Ok(()) => Ok(()),
            Err(err) if err.code() == Some("BUSYGROUP") => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Creates the entries' orders: the well-formed ones in one transaction, acknowledged
    /// together; when that fails (or an entry is malformed), each one alone ([`Self::handle`]),
    /// so one bad entry neither holds back nor fails the others.
    async fn handle_all(self: &Arc<Self>, keys: &CampaignKeys, entries: Vec<StreamId>) {
        let parsed: Vec<Option<Reservation>> = entries
            .iter()
            .map(|entry| Reservation::parse(&fields(entry)).ok())
            .collect();
        if entries.len() > 1 && parsed.iter().all(Option::is_some) {
            let reservations: Vec<Reservation> = parsed.into_iter().flatten().collect();
            match self.checkout.place_all(&reservations).await {
                Ok(created) => {
                    let new = created.iter().filter(|&&created| created).count() as u64;
                    self.metrics.created.inc_by(new);
                    self.metrics.duplicates.inc_by(created.len() as u64 - new);
                    self.acknowledge(keys, &entries).await;
                    return;
                }
                Err(err) => {
                    tracing::debug!(error = %err, count = entries.len(), "a batch of reservations failed; placing them one by one");
                }
            }
        }
        self.handle_each(keys, entries).await;
    }

    /// Acknowledges `entries`, whose orders exist, in one round trip.
    async fn acknowledge(&self, keys: &CampaignKeys, entries: &[StreamId]) {
        let ids: Vec<&str> = entries.iter().map(|entry| entry.id.as_str()).collect();
        let result: redis::RedisResult<()> = async {
            let mut conn = self.redis.connection().await?;
            redis::pipe()
                .xack(&keys.stream, GROUP, &ids)
                .ignore()
                .hdel(&keys.errors, &ids)
                .ignore()
                .query_async::<()>(&mut conn)
                .await
        }
        .await;
        if let Err(err) = result {
            tracing::warn!(count = ids.len(), error = %err, "could not acknowledge reservations; they will be delivered again");
        }
    }

    async fn handle_each(self: &Arc<Self>, keys: &CampaignKeys, entries: Vec<StreamId>) {
        futures::stream::iter(entries)
            .map(|entry| {
                let this = Arc::clone(self);
                let keys = keys.clone();
                async move { this.handle(&keys, &entry).await }
            })
            .buffer_unordered(8)
            .collect::<Vec<()>>()
            .await;
    }

    /// Creates the entry's order and acknowledges it; on failure leaves it pending.
    async fn handle(&self, keys: &CampaignKeys, entry: &StreamId) {
        let outcome = match Reservation::parse(&fields(entry)) {
            Err(malformed) => Err(Failure::Permanent(malformed.to_string())),
            Ok(reservation) => self.checkout.place(&reservation).await.map_err(classify),
        };
        match outcome {
            Ok(true) => self.metrics.created.inc(),
            Ok(false) => self.metrics.duplicates.inc(),
            Err(_) => self.metrics.failures.inc(),
        };
        let result: redis::RedisResult<()> = async {
            let mut conn = self.redis.connection().await?;
            match outcome {
                Ok(_) => {
                    let _: i64 = redis::pipe()
                        .xack(&keys.stream, GROUP, &[&entry.id])
                        .hdel(&keys.errors, &entry.id)
                        .ignore()
                        .query_async::<(i64,)>(&mut conn)
                        .await
                        .map(|(acked,)| acked)?;
                }
                Err(Failure::Permanent(error)) => {
                    tracing::warn!(entry = %entry.id, stream = %keys.stream, %error, "reservation failed");
                    let _: i64 = conn.hset(&keys.errors, &entry.id, error).await?;
                }
                Err(Failure::Transient(error)) => {
                    tracing::warn!(entry = %entry.id, %error, "reservation not applied yet; it stays pending");
                }
            }
            Ok(())
        }
        .await;
        if let Err(err) = result {
            tracing::warn!(entry = %entry.id, error = %err, "could not acknowledge a reservation; it will be delivered again");
        }
    }

    /// Dead-letters entries that failed too often, then claims the other idle ones.
    async fn reclaim(
        self: &Arc<Self>,
        conn: &mut ConnectionManager,
        keys: &CampaignKeys,
    ) -> redis::RedisResult<usize> {
        let idle = u64::try_from(self.settings.claim_idle.as_millis()).unwrap_or(u64::MAX);
        let pending: StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(&keys.stream)
            .arg(GROUP)
            .arg("IDLE")
            .arg(idle)
            .arg("-")
            .arg("+")
            .arg(self.settings.batch)
            .query_async(conn)
            .await?;
        for entry in &pending.ids {
            let failing: bool = conn.hexists(&keys.errors, &entry.id).await?;
            let deliveries = u32::try_from(entry.times_delivered).unwrap_or(u32::MAX);
            if failing && deliveries >= self.settings.max_deliveries {
                let _: i64 = self
                    .dead_letter
                    .run(
                        conn,
                        &[&keys.stream, &keys.dead, &keys.errors],
                        &[GROUP, &entry.id, &deliveries.to_string()],
                    )
                    .await?;
                self.metrics.dead_lettered.inc();
                tracing::error!(entry = %entry.id, stream = %keys.stream, deliveries, "reservation moved to the dead-letter stream");
            }
        }
        let claimed: StreamAutoClaimReply = conn
            .xautoclaim_options(
                &keys.stream,
                GROUP,
                &self.name,
                idle,
                "0-0",
                StreamAutoClaimOptions::default().count(self.settings.batch),
            )
            .await?;
        for deleted in &claimed.deleted_ids {
            // The entry is gone from the stream: nothing to create; stop tracking it.
            let _: i64 = redis::pipe()
                .xack(&keys.stream, GROUP, &[deleted])
                .query_async::<(i64,)>(conn)
                .await
                .map(|(n,)| n)?;
        }
        let count = claimed.claimed.len();
        if count > 0 {
            self.metrics.claimed.inc_by(count as u64);
            tracing::info!(count, stream = %keys.stream, "claimed idle reservations");
        }
        self.handle_all(keys, claimed.claimed).await;
        Ok(count)
    }
}
