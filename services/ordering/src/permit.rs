//! The per-product "resource semaphore": a Redis sorted set of holders that limits how many buyers
//! of one hot product reach PostgreSQL at once. Correctness does not depend on it (the
//! conditional `UPDATE … WHERE stock >= n` does); it keeps a crowd from queueing on one row.
//!
//! Each holder is one member whose score is its own expiry (Redis's clock), so a permit held by
//! a process that died frees itself after the TTL, however many buyers keep coming; a shared
//! counter whose TTL every buyer refreshes would keep such permits forever. A permit is released
//! on every path: explicitly after the transaction, or by its guard's drop when the request is
//! abandoned.
//!
//! Redis failing in between must not leak permits either: a release that fails is retried in
//! the background, and a permit whose acquire may have happened (the script's answer was lost)
//! is released like a taken one. Releasing removes only the holder's own member, so it can never
//! free someone else's permit.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use pulse_kit::redis::{LuaScript, RedisHandle};
use uuid::Uuid;

/// Takes a permit for holder `ARGV[3]` if fewer than `ARGV[1]` are held, for `ARGV[2]` ms.
/// Expired holders are dropped first; times come from Redis's own clock, so replicas agree.
const ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
";

/// How often a failed release is tried again, in the background.
const RELEASE_RETRIES: u32 = 5;
/// The first pause before a release is tried again (doubled each time).
const RELEASE_BACKOFF: Duration = Duration::from_millis(200);

/// Gives holder `ARGV[1]`'s permit back (nothing if it had none).
const RELEASE: &str = r"
return redis.call('ZREM', KEYS[1], ARGV[1])
";

/// No permit could be had.
#[derive(Debug, thiserror::Error)]
pub enum PermitError {
    /// Every permit stayed taken for the whole wait.
    #[error("too many buyers of this product right now")]
    Busy,
}

/// Metrics of the permits.
#[derive(Debug, Clone, Default)]
pub struct PermitMetrics {
    /// Orders that went ahead without a permit because Redis was unreachable.
    pub bypassed: Counter,
    /// Buyers turned away after waiting.
    pub busy: Counter,
    /// Most buyers this process ever had inside the stock transaction at once.
    pub max_in_flight: Gauge,
}

/// Per-product permits.
#[derive(Debug)]
pub struct Permits {
    redis: RedisHandle,
    keyspace: String,
    limit: u32,
    ttl: Duration,
    wait: Duration,
    acquire: LuaScript,
    release: Arc<LuaScript>,
    in_flight: Arc<AtomicI64>,
    metrics: PermitMetrics,
}

/// A held permit (or a bypass when Redis was down). Call [`Permit::release`]; dropping it
/// releases it in the background.
#[derive(Debug)]
pub struct Permit {
    /// The product's key and this holder's member.
    key: Option<(String, String)>,
    redis: RedisHandle,
    release: Arc<LuaScript>,
    in_flight: Option<Arc<AtomicI64>>,
}

impl Permit {
    /// Gives the permit back now.
    pub async fn release(mut self) {
        // Leave the count before the permit is free for someone else.
        if let Some(in_flight) = self.in_flight.take() {
            in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        if let Some(key) = self.key.take() {
            release(&self.redis, &self.release, key).await;
        }
    }
}

async fn release_once(
    redis: &RedisHandle,
    script: &LuaScript,
    (key, holder): &(String, String),
) -> redis::RedisResult<()> {
    let mut conn = redis.connection().await?;
    let _: i64 = script.run(&mut conn, &[key], &[holder]).await?;
    Ok(())
}

/// Releases a holder's permit now, or, if Redis fails, again in the background a few times.
async fn release(redis: &RedisHandle, script: &Arc<LuaScript>, key: (String, String)) {
    let Err(err) = release_once(redis, script, &key).await else {
        return;
    };
    tracing::info!(error = %err, key = key.0, "permit not released yet; retrying");
    let (redis, script) = (redis.clone(), Arc::clone(script));
    tokio::spawn(async move {
        let mut pause = RELEASE_BACKOFF;
        let mut last = err;
        for _ in 0..RELEASE_RETRIES {
            tokio::time::sleep(pause).await;
            match release_once(&redis, &script, &key).await {
                Ok(()) => return,
                Err(err) => last = err,
            }
            pause *= 2;
        }
        tracing::warn!(error = %last, key = key.0, "permit not released; its TTL will clear it");
    });
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(in_flight) = self.in_flight.take() {
            in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        if let Some(key) = self.key.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let redis = self.redis.clone();
            let script = Arc::clone(&self.release);
            runtime.spawn(async move { release(&redis, &script, key).await });
        }
    }
}

impl Permits {
    /// `limit` permits per product, waiting at most `wait` for one; a permit that is never
    /// released (its process died) expires `ttl` after it was taken.
    pub fn new(
        redis: RedisHandle,
        keyspace: &str,
        limit: u32,
        ttl: Duration,
        wait: Duration,
        metrics: PermitMetrics,
    ) -> Self {
        Self {
            redis,
            keyspace: keyspace.to_owned(),
            limit: limit.max(1),
            ttl,
            wait,
            acquire: LuaScript::new(ACQUIRE),
            release: Arc::new(LuaScript::new(RELEASE)),
            in_flight: Arc::default(),
            metrics,
        }
    }

    /// The Redis key of a product's holders.
    pub fn key(&self, product: Uuid) -> String {
        format!("{{ordering:{}}}:permits:{product}", self.keyspace)
    }

    fn admitted(&self, key: Option<(String, String)>) -> Permit {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        if now > self.metrics.max_in_flight.get() {
            self.metrics.max_in_flight.set(now);
        }
        Permit {
            key,
            redis: self.redis.clone(),
            release: Arc::clone(&self.release),
            in_flight: Some(Arc::clone(&self.in_flight)),
        }
    }

    /// A buyer let through without a permit because Redis failed; `key` is released with it
    /// when the permit may have been taken anyway.
    fn bypass(&self, err: &redis::RedisError, key: Option<(String, String)>) -> Permit {
        tracing::warn!(error = %err, "Redis unreachable; product permit bypassed");
        self.metrics.bypassed.inc();
        self.admitted(key)
    }

    /// Takes a permit for `product`, waiting (with jittered backoff) up to the configured wait.
    /// If Redis is unreachable the buyer goes ahead without one (the database still guards the
    /// stock) and the bypass is counted.
    pub async fn acquire(&self, product: Uuid) -> Result<Permit, PermitError> {
        let key = self.key(product);
        let holder = Uuid::new_v4().simple().to_string();
        let started = Instant::now();
        let mut pause = Duration::from_millis(5);
        let limit = self.limit.to_string();
        let ttl = u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .to_string();
        loop {
            let mut conn = match self.redis.connection().await {
                Ok(conn) => conn,
                // The script did not run: nothing to give back.
                Err(err) => return Ok(self.bypass(&err, None)),
            };
            match self
                .acquire
                .run(&mut conn, &[&key], &[&limit, &ttl, &holder])
                .await
            {
                Ok(1) => return Ok(self.admitted(Some((key, holder)))),
                Ok(_) => {}
                // The script may have run and taken a permit (its answer lost): give it back
                // with this one, so it cannot leak.
                Err(err) => return Ok(self.bypass(&err, Some((key, holder)))),
            }
            if started.elapsed() >= self.wait {
                self.metrics.busy.inc();
                return Err(PermitError::Busy);
            }
            let jitter = Duration::from_millis(rand::random_range(0..=pause.as_millis() as u64));
            tokio::time::sleep(pause + jitter).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}
