//! Redis helpers: a lazily connecting, self-healing connection handle guarded by a circuit
//! breaker, scripts run by SHA (reloaded on `NOSCRIPT`), and a short lock with a random token
//! released by compare-and-delete.
//!
//! # The breaker in front of Redis
//!
//! Every component reaches Redis through [`RedisHandle::connection`]. Without a guard, while
//! Redis is down each caller would wait for its own connection attempt or response timeout, so
//! a request that only *uses* Redis as an accelerator (a slot lock, a search cache, a rate
//! limit) would take seconds to fall back. The handle therefore keeps a
//! [`CircuitBreaker`] and a watcher task (started on first use, stopped when the last clone of
//! the handle is dropped) that `PING`s Redis every [`RedisTuning::probe_interval`]:
//!
//! - **closed**: `connection()` hands out the shared multiplexed connection;
//! - [`RedisTuning::breaker`]`.failure_threshold` failed probes in a row (an error, or no
//!   answer within [`RedisTuning::probe_timeout`]), or a refused connection, **open** it:
//!   `connection()` then fails at once (an `IoError`, "circuit open") and callers take their
//!   fallback in microseconds;
//! - after `open_for` the watcher makes a **trial**: a `PING`, and if the old connection does
//!   not answer, a fresh connection; its success closes the circuit, its failure opens it for
//!   another period. Callers never wait for the trial.
//!
//! The metric `pulse_redis_breaker_state` (0 closed, 1 half-open, 2 open) shows the state and
//! `pulse_redis_breaker_rejected_calls_total` counts the calls refused while it was not closed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
use crate::metrics::Metrics;

/// Timeouts and breaker tuning of a [`RedisHandle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisTuning {
    /// Bound of one connection attempt.
    pub connect_timeout: Duration,
    /// Bound of one command on the shared connection (a safety net; the breaker reacts first).
    pub response_timeout: Duration,
    /// How often the watcher `PING`s Redis while all is well (after a failed probe it probes
    /// again at once, so a dead Redis opens the circuit within a few tens of milliseconds).
    pub probe_interval: Duration,
    /// A probe without an answer within this is a failure.
    pub probe_timeout: Duration,
    /// Failures in a row that open the circuit, how long it stays open before a trial.
    pub breaker: BreakerConfig,
}

impl Default for RedisTuning {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_millis(500),
            response_timeout: Duration::from_secs(1),
            // Ten PINGs a second per process: a killed Redis is noticed within about 0.2 s.
            probe_interval: Duration::from_millis(100),
            // As long as a command may take: under a load that slows PING down this much, the
            // callers' own commands are timing out anyway. Shorter would open the circuit on a
            // busy but healthy Redis (a flash sale's peak) and turn buyers away.
            probe_timeout: Duration::from_secs(1),
            breaker: BreakerConfig {
                failure_threshold: 3,
                open_for: Duration::from_secs(1),
                half_open_trials: 1,
            },
        }
    }
}

/// Delay before the next probe after a failed one.
const PROBE_AGAIN: Duration = Duration::from_millis(50);

/// A Redis connection that is made on first use, reconnects by itself afterwards, and fails
/// fast while Redis is known to be down (see the module documentation). Clones share the
/// connection, the breaker and the watcher.
#[derive(Clone)]
pub struct RedisHandle {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    tuning: RedisTuning,
    manager: std::sync::RwLock<Option<ConnectionManager>>,
    /// Serialises connection attempts, so a crowd does not connect once per caller.
    connecting: tokio::sync::Mutex<()>,
    breaker: CircuitBreaker,
    watching: AtomicBool,
    state: Gauge,
    rejected: Counter,
    /// Failed connections and probes.
    errors: Counter,
}

impl std::fmt::Debug for RedisHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHandle")
            .field("breaker", &self.inner.breaker.state())
            .finish_non_exhaustive()
    }
}

fn circuit_open() -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::IoError,
        "Redis unavailable",
        "circuit open: Redis failed recently; calls fail fast until a probe succeeds".to_owned(),
    ))
}

fn timed_out(what: &str, after: Duration) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::IoError,
        "Redis did not answer",
        format!("{what}: no answer within {after:?}"),
    ))
}

/// The value of `pulse_redis_breaker_state` for `state`.
fn state_code(state: BreakerState) -> i64 {
    match state {
        BreakerState::Closed => 0,
        BreakerState::HalfOpen => 1,
        BreakerState::Open => 2,
    }
}

impl RedisHandle {
    /// A handle for `url` (`redis://127.0.0.1:6379`) with the default [`RedisTuning`];
    /// nothing is connected yet.
    pub fn new(url: &str) -> redis::RedisResult<Self> {
        Self::with_tuning(url, RedisTuning::default())
    }

    /// A handle for `url` with its own timeouts and breaker tuning.
    pub fn with_tuning(url: &str, tuning: RedisTuning) -> redis::RedisResult<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                client: redis::Client::open(url)?,
                tuning,
                manager: std::sync::RwLock::new(None),
                connecting: tokio::sync::Mutex::new(()),
                breaker: CircuitBreaker::new(tuning.breaker),
                watching: AtomicBool::new(false),
                state: Gauge::default(),
                rejected: Counter::default(),
                errors: Counter::default(),
            }),
        })
    }

    /// Registers `pulse_redis_breaker_state`, `pulse_redis_errors_total` and
    /// `pulse_redis_breaker_rejected_calls_total`.
    pub fn register_metrics(&self, metrics: &Metrics) {
        metrics.register(
            "redis_breaker_state",
            "State of the circuit breaker in front of Redis: 0 closed, 1 half-open (trial), 2 open",
            self.inner.state.clone(),
        );
        metrics.register(
            "redis_errors",
            "Failed Redis connections and health probes",
            self.inner.errors.clone(),
        );
        metrics.register(
            "redis_breaker_rejected_calls",
            "Redis calls refused at once because the circuit was not closed",
            self.inner.rejected.clone(),
        );
    }

    /// The breaker's state.
    pub fn breaker_state(&self) -> BreakerState {
        self.inner.breaker.state()
    }

    /// The shared multiplexed connection. The first call connects (bounded by
    /// [`RedisTuning::connect_timeout`]); while the circuit is open it fails at once.
    pub async fn connection(&self) -> redis::RedisResult<ConnectionManager> {
        self.watch();
        let inner = &self.inner;
        if inner.breaker.state() != BreakerState::Closed {
            inner.rejected.inc();
            return Err(circuit_open());
        }
        if let Some(manager) = inner.current() {
            return Ok(manager);
        }
        let _connecting = inner.connecting.lock().await;
        if let Some(manager) = inner.current() {
            return Ok(manager);
        }
        // Callers queued behind a failed attempt fail at once instead of retrying one after
        // the other.
        if inner.breaker.state() != BreakerState::Closed {
            inner.rejected.inc();
            return Err(circuit_open());
        }
        match inner.connect().await {
            Ok(manager) => Ok(manager),
            Err(err) => {
                inner.errors.inc();
                inner.breaker.trip();
                inner.publish_state();
                tracing::warn!(error = %err, "cannot connect to Redis; failing fast until a probe succeeds");
                Err(err)
            }
        }
    }

    /// `PING`, for readiness: fails at once while the circuit is open (without counting as a
    /// rejected call).
    pub async fn ping(&self) -> redis::RedisResult<()> {
        if self.inner.breaker.state() != BreakerState::Closed {
            self.watch();
            return Err(circuit_open());
        }
        let mut conn = self.connection().await?;
        self.inner.ping(&mut conn).await
    }

    /// Starts the watcher once, on the caller's runtime.
    fn watch(&self) {
        if self.inner.watching.swap(true, Ordering::SeqCst) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(watch(Arc::downgrade(&self.inner)));
            }
            Err(_) => self.inner.watching.store(false, Ordering::SeqCst),
        }
    }
}

/// Probes Redis until every handle is gone.
async fn watch(inner: Weak<Inner>) {
    let mut failed = false;
    loop {
        let pause = match inner.upgrade() {
            None => return,
            Some(inner) if failed || inner.breaker.state() != BreakerState::Closed => {
                PROBE_AGAIN.min(inner.tuning.probe_interval)
            }
            Some(inner) => inner.tuning.probe_interval,
        };
        tokio::time::sleep(pause).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        failed = !inner.probe().await;
    }
}

impl Inner {
    fn current(&self) -> Option<ConnectionManager> {
        self.manager.read().ok().and_then(|slot| slot.clone())
    }

    fn publish_state(&self) {
        self.state.set(state_code(self.breaker.state()));
    }

    /// A new connection, which replaces the shared one.
    async fn connect(&self) -> redis::RedisResult<ConnectionManager> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.tuning.connect_timeout)
            .set_response_timeout(self.tuning.response_timeout)
            .set_number_of_retries(0);
        let connect = ConnectionManager::new_with_config(self.client.clone(), config);
        // The connection timeout bounds the TCP connect; this bounds the handshake too.
        let manager = tokio::time::timeout(self.tuning.connect_timeout * 2, connect)
            .await
            .map_err(|_| timed_out("connecting", self.tuning.connect_timeout * 2))??;
        if let Ok(mut slot) = self.manager.write() {
            *slot = Some(manager.clone());
        }
        Ok(manager)
    }

    async fn ping(&self, conn: &mut ConnectionManager) -> redis::RedisResult<()> {
        let timeout = self.tuning.probe_timeout;
        let pong = tokio::time::timeout(timeout, redis::cmd("PING").query_async::<String>(conn))
            .await
            .map_err(|_| timed_out("PING", timeout))??;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(redis::RedisError::from((
                redis::ErrorKind::ResponseError,
                "unexpected answer to PING",
                pong,
            )))
        }
    }

    /// One probe (a trial when the circuit is half-open); `true` when Redis answered.
    async fn probe(&self) -> bool {
        let Ok(attempt) = self.breaker.try_acquire() else {
            // Open: nothing to do until the trial is due.
            self.publish_state();
            return false;
        };
        let was = self.breaker.state();
        self.publish_state();
        let ok = self.check(was != BreakerState::Closed).await;
        if ok {
            attempt.success();
            if was != BreakerState::Closed {
                tracing::info!("Redis answers again; circuit closed");
            }
        } else {
            self.errors.inc();
            attempt.failure();
        }
        self.publish_state();
        ok
    }

    /// `PING` on the shared connection. On a trial, or when there is no connection yet, a
    /// fresh connection when that does not answer (the shared one may still be waiting out a
    /// failed reconnection); it replaces the shared one.
    async fn check(&self, trial: bool) -> bool {
        let outcome = tokio::time::timeout(self.tuning.probe_timeout * 2, async {
            if let Some(mut conn) = self.current() {
                let pinged = self.ping(&mut conn).await;
                if pinged.is_ok() || !trial {
                    return pinged;
                }
            }
            let _connecting = self.connecting.lock().await;
            let mut conn = self.connect().await?;
            self.ping(&mut conn).await
        })
        .await;
        match outcome {
            Ok(Ok(())) => true,
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "Redis probe failed");
                false
            }
            Err(_) => {
                tracing::debug!("Redis probe got no answer");
                false
            }
        }
    }
}

/// A Lua script invoked with `EVALSHA`; when Redis answers `NOSCRIPT` (after a restart or
/// `SCRIPT FLUSH`) it is loaded again and retried once.
#[derive(Debug)]
pub struct LuaScript {
    script: redis::Script,
}

impl LuaScript {
    /// Wraps the script source.
    pub fn new(source: &str) -> Self {
        Self {
            script: redis::Script::new(source),
        }
    }

    /// SHA1 of the source, as Redis knows it.
    pub fn sha(&self) -> &str {
        self.script.get_hash()
    }

    /// Runs the script with `keys` and `args`.
    pub async fn run<T: redis::FromRedisValue>(
        &self,
        conn: &mut ConnectionManager,
        keys: &[&str],
        args: &[&str],
    ) -> redis::RedisResult<T> {
        let mut invocation = self.script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        invocation.invoke_async(conn).await
    }
}

/// Takes `KEYS[1]` for owner `ARGV[1]` for `ARGV[2]` ms if it is free or already that owner's.
/// Returns 1 when it was free, 2 when the owner held it already, 0 when someone else does.
const ACQUIRE_LOCK_AS: &str = r"
local held = redis.call('GET', KEYS[1])
if held == false or held == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  if held == false then return 1 end
  return 2
end
return held
";

const RELEASE_LOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// What [`RedisLock::try_acquire_as`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedLock {
    /// Taken: it was free, or already the owner's.
    Taken(LockGuard),
    /// Someone else holds it: the value it holds.
    HeldBy(String),
}

/// A held lock; release it with [`RedisLock::release`]. If it is never released it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockGuard {
    /// The locked key.
    pub key: String,
    /// The random token proving ownership.
    pub token: String,
    /// Whether its owner held it already when it was taken ([`RedisLock::try_acquire_as`]: a
    /// retry or a concurrent duplicate of the same request).
    pub reentered: bool,
}

/// A short mutual-exclusion lock: `SET key token NX PX ttl`, released only by its owner.
#[derive(Debug)]
pub struct RedisLock {
    acquire_as: LuaScript,
    release: LuaScript,
}

impl Default for RedisLock {
    fn default() -> Self {
        Self::new()
    }
}

impl RedisLock {
    /// The lock helper (holds the release script).
    pub fn new() -> Self {
        Self {
            acquire_as: LuaScript::new(ACQUIRE_LOCK_AS),
            release: LuaScript::new(RELEASE_LOCK),
        }
    }

    /// Tries once to take `key` for `ttl` as `owner`: free, or already held by the same owner
    /// (a retry of the same request whose first attempt died holding it), it is (re)taken;
    /// otherwise the value it holds says who does.
    pub async fn try_acquire_as(
        &self,
        conn: &mut ConnectionManager,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> redis::RedisResult<OwnedLock> {
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let found: redis::Value = self
            .acquire_as
            .run(conn, &[key], &[owner, &millis.to_string()])
            .await?;
        Ok(match found {
            redis::Value::Int(taken) => OwnedLock::Taken(LockGuard {
                key: key.to_owned(),
                token: owner.to_owned(),
                reentered: taken == 2,
            }),
            holder => OwnedLock::HeldBy(redis::from_redis_value(&holder)?),
        })
    }

    /// Tries once to take `key` for `ttl`; `None` if someone else holds it.
    pub async fn try_acquire(
        &self,
        conn: &mut ConnectionManager,
        key: &str,
        ttl: Duration,
    ) -> redis::RedisResult<Option<LockGuard>> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let options = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::PX(millis));
        let set: Option<String> = conn.set_options(key, &token, options).await?;
        Ok(set.map(|_| LockGuard {
            key: key.to_owned(),
            token,
            reentered: false,
        }))
    }

    /// Releases the lock if it is still ours (compare-and-delete); `false` if it had expired
    /// or been taken over.
    pub async fn release(
        &self,
        conn: &mut ConnectionManager,
        guard: &LockGuard,
    ) -> redis::RedisResult<bool> {
        let deleted: i64 = self
            .release
            .run(conn, &[&guard.key], &[&guard.token])
            .await?;
        Ok(deleted == 1)
    }
}
