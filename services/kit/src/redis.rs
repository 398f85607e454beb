//! Redis helpers: a lazily connecting, self-healing connection handle, scripts run by SHA
//! (reloaded on `NOSCRIPT`), and a short lock with a random token released by compare-and-delete.

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

/// A Redis connection that is made on first use and reconnects by itself afterwards.
#[derive(Clone)]
pub struct RedisHandle {
    client: redis::Client,
    manager: std::sync::Arc<OnceCell<ConnectionManager>>,
    /// When the last connection attempt failed: for a short while callers fail at once
    /// instead of each waiting for its own doomed attempt.
    failed_at: std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

/// How long after a failed connection attempt callers fail fast.
const CONNECT_COOLDOWN: Duration = Duration::from_millis(500);

impl std::fmt::Debug for RedisHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHandle").finish_non_exhaustive()
    }
}

impl RedisHandle {
    /// A handle for `url` (`redis://127.0.0.1:6379`); nothing is connected yet.
    pub fn new(url: &str) -> redis::RedisResult<Self> {
        Ok(Self {
            client: redis::Client::open(url)?,
            manager: std::sync::Arc::new(OnceCell::new()),
            failed_at: std::sync::Arc::default(),
        })
    }

    /// The shared multiplexed connection; the first call connects (bounded by a short timeout).
    pub async fn connection(&self) -> redis::RedisResult<ConnectionManager> {
        if let Some(manager) = self.manager.get() {
            return Ok(manager.clone());
        }
        let result = self
            .manager
            .get_or_try_init(|| async {
                // Callers queued behind a failed attempt fail at once instead of retrying one
                // after the other.
                if self.recently_failed() {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::IoError,
                        "Redis unreachable (the last attempt failed moments ago)",
                    )));
                }
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Duration::from_secs(1))
                    .set_response_timeout(Duration::from_secs(2))
                    .set_number_of_retries(1)
                    .set_max_delay(200);
                let connected =
                    ConnectionManager::new_with_config(self.client.clone(), config).await;
                if connected.is_err()
                    && let Ok(mut at) = self.failed_at.lock()
                {
                    *at = Some(std::time::Instant::now());
                }
                connected
            })
            .await?;
        Ok(result.clone())
    }

    fn recently_failed(&self) -> bool {
        self.failed_at
            .lock()
            .ok()
            .and_then(|at| *at)
            .is_some_and(|at| at.elapsed() < CONNECT_COOLDOWN)
    }

    /// `PING`, for readiness.
    pub async fn ping(&self) -> redis::RedisResult<()> {
        let mut conn = self.connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok(())
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

const RELEASE_LOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// A held lock; release it with [`RedisLock::release`]. If it is never released it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockGuard {
    /// The locked key.
    pub key: String,
    /// The random token proving ownership.
    pub token: String,
}

/// A short mutual-exclusion lock: `SET key token NX PX ttl`, released only by its owner.
#[derive(Debug)]
pub struct RedisLock {
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
            release: LuaScript::new(RELEASE_LOCK),
        }
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
