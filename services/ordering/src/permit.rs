//! The per-product "resource semaphore": a Redis counter (`INCR` with a TTL fuse) that limits how
//! many buyers of one hot product reach PostgreSQL at once. Correctness does not depend on it (the
//! conditional `UPDATE … WHERE stock >= n` does); it keeps a crowd from queueing on one row.
//!
//! A permit is released on every path: explicitly after the transaction, or by its guard's drop
//! when the request is abandoned; a process that dies holding permits leaks them only until the
//! counter's TTL passes without new buyers.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use pulse_kit::redis::{LuaScript, RedisHandle};
use uuid::Uuid;

/// Takes a permit if fewer than `ARGV[1]` are held; refreshes the fuse (`ARGV[2]` ms).
const ACQUIRE: &str = r"
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if n > tonumber(ARGV[1]) then
  local m = redis.call('DECR', KEYS[1])
  if m <= 0 then redis.call('DEL', KEYS[1]) end
  return 0
end
return 1
";

/// Gives a permit back; never leaves the counter below zero.
const RELEASE: &str = r"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n <= 1 then
  redis.call('DEL', KEYS[1])
  return 0
end
return redis.call('DECR', KEYS[1])
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
    key: Option<String>,
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
            release(&self.redis, &self.release, &key).await;
        }
    }
}

async fn release(redis: &RedisHandle, script: &LuaScript, key: &str) {
    let done: redis::RedisResult<i64> = async {
        let mut conn = redis.connection().await?;
        script.run(&mut conn, &[key], &[]).await
    }
    .await;
    if let Err(err) = done {
        tracing::warn!(error = %err, key, "permit not released; its TTL will clear it");
    }
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
            runtime.spawn(async move { release(&redis, &script, &key).await });
        }
    }
}

impl Permits {
    /// `limit` permits per product, waiting at most `wait` for one; counters expire `ttl` after
    /// the last buyer came.
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

    /// The Redis key of a product's counter.
    pub fn key(&self, product: Uuid) -> String {
        format!("{{ordering:{}}}:permits:{product}", self.keyspace)
    }

    fn admitted(&self, key: Option<String>) -> Permit {
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

    /// Takes a permit for `product`, waiting (with jittered backoff) up to the configured wait.
    /// If Redis is unreachable the buyer goes ahead without one (the database still guards the
    /// stock) and the bypass is counted.
    pub async fn acquire(&self, product: Uuid) -> Result<Permit, PermitError> {
        let key = self.key(product);
        let started = Instant::now();
        let mut pause = Duration::from_millis(5);
        let limit = self.limit.to_string();
        let ttl = u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .to_string();
        loop {
            let taken: redis::RedisResult<i64> = async {
                let mut conn = self.redis.connection().await?;
                self.acquire.run(&mut conn, &[&key], &[&limit, &ttl]).await
            }
            .await;
            match taken {
                Ok(1) => return Ok(self.admitted(Some(key))),
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "Redis unreachable; product permit bypassed");
                    self.metrics.bypassed.inc();
                    return Ok(self.admitted(None));
                }
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
