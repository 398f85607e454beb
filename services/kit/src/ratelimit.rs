//! Per-client request rate limits at the edge (the country's `rateLimits`), shared by every
//! replica through Redis.
//!
//! The limiter is GCRA (a token bucket without a refill job): a Lua script keeps a "theoretical
//! arrival time" per client in Redis, the one bucket every replica draws from. A replica takes a
//! busy client's tokens from it as a lease and spends the lease from memory: the first lease is
//! one token, and each lease the client uses up within a second asks for twice as many, at most
//! a quarter of the burst and 64 (with a burst under 8 every request is checked in Redis). A
//! client that had not spent tokens lately is not remembered at all, so a crowd of one-off
//! clients costs no memory. A busy
//! client so costs one Redis round trip per lease, not per request, and the bucket in Redis is
//! still the limit: tokens are taken from it before they are spent. A lease a client leaves
//! unused (it went quiet, or another replica serves it now) lapses after a second, so a client
//! can be refused up to one lease early, or spend at most one lease per replica beyond its burst
//! when it returns within that second. A client is its token's subject when it sends a
//! valid token (the [`Principal`] that [`authenticate`](crate::auth::authenticate) stored), else its IP address (the first `X-Forwarded-For` hop when the deployment sits
//! behind a trusted proxy). Over the limit: 429 problem+json with `Retry-After`. Redis
//! unreachable: requests pass (the limit protects capacity; availability matters more) and
//! the metric `pulse_rate_limit_unavailable` counts them. An operation whose flow limits its
//! caller in its own atomic step ([`RateLimiter::limited_by_flow`], the seckill attempt) is not
//! checked here for signed-in callers, which saves a Redis round trip per request.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;

use crate::auth::Principal;
use crate::problem::Problem;
use crate::redis::{LuaScript, RedisHandle};

/// GCRA for a lease of up to `ARGV[3]` tokens: grants as many as conform (the k-th conforms
/// when `tat + (k - 1) * interval <= now + tolerance`), at least one or none.
/// Returns `{granted, retry_after_ms, recent}`: `retry_after_ms` when none is granted, `recent`
/// 1 when the client had spent tokens lately (its key lives until a second after its last
/// theoretical arrival, so at least a second after its last grant).
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local stored = redis.call('GET', KEYS[1])
local recent = 0
if stored then recent = 1 end
local tat = tonumber(stored or now)
if tat < now then tat = now end
if tat - tolerance > now then
  return {0, tat - tolerance - now, recent}
end
local granted = math.min(wanted, math.floor((now + tolerance - tat) / interval) + 1)
local new_tat = tat + granted * interval
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now + 1000)
return {granted, 0, recent}
";

/// How long a lease's unspent tokens stay spendable.
const LEASE_TTL: Duration = Duration::from_secs(1);
/// The largest lease.
const MAX_LEASE: u32 = 64;

/// The leases of the clients seen in the last two [`LEASE_TTL`]s: every `LEASE_TTL` the current
/// map becomes the previous one and the previous one is dropped whole, so memory follows the
/// number of recent clients and no request pays for a sweep.
/// Clients are kept as 64-bit hashes of their name (keyed per process), not strings: a crowd
/// of one-off clients costs a few dozen bytes each.
#[derive(Debug)]
struct LeaseBook {
    current: HashMap<u64, Lease>,
    previous: HashMap<u64, Lease>,
    rotated: Instant,
    hasher: std::hash::RandomState,
}

impl LeaseBook {
    fn new() -> Self {
        Self {
            current: HashMap::new(),
            previous: HashMap::new(),
            rotated: Instant::now(),
            hasher: std::hash::RandomState::new(),
        }
    }

    /// `client`'s lease, moved into the current map; rotates the maps when due.
    fn lease(&mut self, client: &str, now: Instant) -> Option<&mut Lease> {
        if now.duration_since(self.rotated) >= LEASE_TTL {
            self.previous = std::mem::take(&mut self.current);
            self.rotated = now;
        }
        let id = self.id(client);
        if !self.current.contains_key(&id) {
            let lease = self.previous.remove(&id)?;
            self.current.insert(id, lease);
        }
        self.current.get_mut(&id)
    }

    /// Starts `client`'s lease in the current map.
    fn start(&mut self, client: &str, lease: Lease) -> &mut Lease {
        let id = self.id(client);
        self.current.entry(id).or_insert(lease)
    }

    fn id(&self, client: &str) -> u64 {
        std::hash::BuildHasher::hash_one(&self.hasher, client)
    }
}

/// Tokens of one client this replica took from Redis and has not spent yet.
#[derive(Debug, Clone, Copy)]
struct Lease {
    remaining: u32,
    /// The size last asked for.
    size: u32,
    expires: Instant,
}

/// A GCRA limit's parameters: `requests_per_second` sustained plus `burst` extra.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Time between two requests at the sustained rate, ms (at least 1).
    pub interval_ms: u64,
    /// How far ahead of the sustained rate a client may be: the burst, ms.
    pub tolerance_ms: u64,
}

impl Gcra {
    /// `requests_per_second` (at least 1) sustained plus `burst` extra.
    pub fn new(requests_per_second: u32, burst: u32) -> Self {
        let interval_ms = (1000 / u64::from(requests_per_second.max(1))).max(1);
        Self {
            interval_ms,
            tolerance_ms: interval_ms * u64::from(burst),
        }
    }
}

/// The limits and where they are kept.
pub struct RateLimiter {
    redis: RedisHandle,
    script: LuaScript,
    keyspace: String,
    interval_ms: u64,
    tolerance_ms: u64,
    trust_forwarded_for: bool,
    /// The largest lease: a quarter of the burst, at most [`MAX_LEASE`], at least 1.
    max_lease: u32,
    leases: Mutex<LeaseBook>,
    /// Operations (method, route template) whose flow limits a signed-in caller itself.
    limited_by_flow: crate::component::Operations,
    /// Operations never limited, for any caller (answers served from memory).
    not_limited: crate::component::Operations,
    /// Requests refused with 429.
    pub limited: Counter,
    /// Requests let through unchecked because Redis did not answer.
    pub unavailable: Counter,
    /// Leases taken from Redis (round trips that granted tokens).
    pub leases_taken: Counter,
}

/// Paths never limited: probes, metrics and the API description.
const EXEMPT: &[&str] = &["/livez", "/readyz", "/metrics", "/openapi.json"];

impl RateLimiter {
    /// `requests_per_second` sustained plus `burst` extra, per client, in `keyspace`.
    pub fn new(
        redis: RedisHandle,
        keyspace: &str,
        requests_per_second: u32,
        burst: u32,
        trust_forwarded_for: bool,
    ) -> Self {
        let Gcra {
            interval_ms,
            tolerance_ms,
        } = Gcra::new(requests_per_second, burst);
        Self {
            redis,
            script: LuaScript::new(GCRA),
            keyspace: keyspace.to_owned(),
            interval_ms,
            tolerance_ms,
            trust_forwarded_for,
            max_lease: (burst / 4).clamp(1, MAX_LEASE),
            leases: Mutex::new(LeaseBook::new()),
            limited_by_flow: crate::component::Operations::default(),
            not_limited: crate::component::Operations::default(),
            limited: Counter::default(),
            unavailable: Counter::default(),
            leases_taken: Counter::default(),
        }
    }

    /// On these operations a signed-in caller is limited by the operation's own flow, in the
    /// same atomic Redis step as its effect (the seckill reservation script limits each user's
    /// attempts at a campaign), so the edge check would only add a round trip. Anonymous
    /// requests to them are still limited here.
    #[must_use]
    pub fn limited_by_flow<'a>(
        mut self,
        operations: impl IntoIterator<Item = (axum::http::Method, &'a str)>,
    ) -> Self {
        self.limited_by_flow = crate::component::Operations::new(operations);
        self
    }

    /// These operations are never limited, whoever calls: their answers come from the
    /// process's memory (the web app's embedded files), so serving one costs less than the
    /// Redis round trip that would limit it.
    #[must_use]
    pub fn not_limited<'a>(
        mut self,
        operations: impl IntoIterator<Item = (axum::http::Method, &'a str)>,
    ) -> Self {
        self.not_limited = crate::component::Operations::new(operations);
        self
    }

    /// Whether the edge check is skipped for the request: its own flow limits it (see
    /// [`RateLimiter::limited_by_flow`]) or it is never limited ([`RateLimiter::not_limited`]).
    fn skips_edge_check(&self, request: &Request) -> bool {
        let Some(route) = request.extensions().get::<MatchedPath>() else {
            return false;
        };
        let (method, route) = (request.method(), route.as_str());
        self.not_limited.contains(method, route)
            || (request.extensions().get::<Principal>().is_some()
                && self.limited_by_flow.contains(method, route))
    }

    /// Who the request counts against.
    fn client_of(&self, request: &Request) -> String {
        let parts = request;
        if let Some(principal) = parts.extensions().get::<Principal>() {
            return format!("sub:{}", principal.subject());
        }
        match client_address(
            parts.headers(),
            parts.extensions(),
            self.trust_forwarded_for,
        ) {
            Some(ip) => format!("ip:{ip}"),
            None => "unknown".to_owned(),
        }
    }

    /// `Ok(())` when the client may go on, `Err(retry_after_ms)` when over its limit.
    pub async fn check(&self, client: &str) -> Result<(), u64> {
        let now = Instant::now();
        let size = match self.spend_leased(client, now) {
            Ok(()) => return Ok(()),
            Err(size) => size,
        };
        let key = format!("{{rl:{}:{client}}}", self.keyspace);
        let interval = self.interval_ms.to_string();
        let tolerance = self.tolerance_ms.to_string();
        let wanted = size.to_string();
        let outcome = match self.redis.connection().await {
            Ok(mut conn) => {
                self.script
                    .run::<(i64, i64, i64)>(&mut conn, &[&key], &[&interval, &tolerance, &wanted])
                    .await
            }
            Err(err) => Err(err),
        };
        match outcome {
            Ok((granted, _, recent)) if granted >= 1 => {
                self.leases_taken.inc();
                // One token is this request's; the rest wait in memory. A client that had not
                // spent tokens lately (one request now and then, or a crowd of one-off
                // clients) is not remembered: only busy clients get leases.
                let unspent = u32::try_from(granted - 1).unwrap_or(0);
                if recent == 1 || unspent > 0 {
                    self.keep_lease(client, unspent, size, now);
                }
                Ok(())
            }
            Ok((_, retry_after, _)) => Err(u64::try_from(retry_after).unwrap_or(1000).max(1)),
            Err(err) => {
                self.unavailable.inc();
                tracing::debug!(error = %err, "rate limit not checked: Redis unavailable");
                Ok(())
            }
        }
    }

    /// Spends one of `client`'s leased tokens; when none is left, the lease size to ask Redis
    /// for: twice the last when that lease was used up before it lapsed, else 1.
    fn spend_leased(&self, client: &str, now: Instant) -> Result<(), u32> {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        match leases.lease(client, now) {
            Some(lease) if lease.expires > now && lease.remaining > 0 => {
                lease.remaining -= 1;
                Ok(())
            }
            Some(lease) if lease.expires > now => {
                Err(lease.size.saturating_mul(2).min(self.max_lease))
            }
            _ => Err(1),
        }
    }

    /// Keeps `unspent` tokens of a lease of `size` for `client` until [`LEASE_TTL`] from `now`
    /// (with what is left of a lease taken concurrently).
    fn keep_lease(&self, client: &str, unspent: u32, size: u32, now: Instant) {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        if leases.lease(client, now).is_none() {
            leases.start(
                client,
                Lease {
                    remaining: 0,
                    size,
                    expires: now,
                },
            );
        }
        let Some(lease) = leases.lease(client, now) else {
            return;
        };
        if lease.expires <= now {
            // A lapsed lease's tokens are gone, and its size starts over.
            lease.remaining = 0;
            lease.size = size;
        }
        lease.remaining = lease.remaining.saturating_add(unspent);
        lease.size = lease.size.max(size);
        lease.expires = now + LEASE_TTL;
    }
}

/// The middleware (see the module documentation).
pub async fn middleware(
    State(limiter): State<Arc<RateLimiter>>,
    request: Request,
    next: Next,
) -> Response {
    if EXEMPT.contains(&request.uri().path()) || limiter.skips_edge_check(&request) {
        return next.run(request).await;
    }
    let client = limiter.client_of(&request);
    match limiter.check(&client).await {
        Ok(()) => next.run(request).await,
        Err(retry_after_ms) => {
            limiter.limited.inc();
            let seconds = retry_after_ms.div_ceil(1000).max(1);
            Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
            )
            .with_detail(format!("slow down: retry in {seconds} s"))
            .with_retry_after(seconds)
            .into_response()
        }
    }
}

/// A request's client address: the first `X-Forwarded-For` hop when the deployment trusts its
/// proxy (`PULSE_TRUST_FORWARDED_FOR`, behind an ingress), else the connection's peer; `None`
/// when neither is known.
pub fn client_address(
    headers: &axum::http::HeaderMap,
    extensions: &axum::http::Extensions,
    trust_forwarded_for: bool,
) -> Option<IpAddr> {
    let forwarded = trust_forwarded_for
        .then(|| {
            headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|ip| ip.trim().parse::<IpAddr>().ok())
        })
        .flatten();
    forwarded.or_else(|| {
        extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_client_gets_its_burst_then_its_rate() {
        let redis = RedisHandle::new(&crate::testing::redis_url()).expect("url");
        let keyspace = crate::testing::unique("rltest");
        let limiter = RateLimiter::new(redis, &keyspace, 10, 5, false);
        for i in 0..6 {
            assert_eq!(
                limiter.check("alice").await,
                Ok(()),
                "request {i} is within the burst"
            );
        }
        let retry = limiter.check("alice").await.expect_err("over the burst");
        assert!(retry > 0 && retry <= 100, "retry after {retry} ms");
        // Another client has its own allowance.
        assert_eq!(limiter.check("bob").await, Ok(()));
        tokio::time::sleep(std::time::Duration::from_millis(retry + 20)).await;
        assert_eq!(
            limiter.check("alice").await,
            Ok(()),
            "one more after the interval"
        );
        assert!(limiter.check("alice").await.is_err());
    }

    #[tokio::test]
    async fn a_busy_client_asks_redis_once_per_lease_and_leases_double() {
        let redis = RedisHandle::new(&crate::testing::redis_url()).expect("url");
        let keyspace = crate::testing::unique("rllease");
        // Burst 1,000: leases of 1, 2, 4, ... up to 64.
        let limiter = RateLimiter::new(redis, &keyspace, 1000, 1000, false);
        for i in 0..200 {
            assert_eq!(limiter.check("busy").await, Ok(()), "request {i}");
        }
        // 1 (not remembered: the client was not busy yet) + 1 + 2 + 4 + ... + 64 = 128, then
        // two leases of 64.
        assert_eq!(limiter.leases_taken.get(), 10);
        // A crowd of one-off clients leaves nothing behind in memory.
        let crowd = RateLimiter::new(
            RedisHandle::new(&crate::testing::redis_url()).expect("url"),
            &keyspace,
            1000,
            1000,
            false,
        );
        for i in 0..50 {
            assert_eq!(crowd.check(&format!("one-off-{i}")).await, Ok(()));
        }
        let book = crowd.leases.lock().expect("book");
        assert!(book.current.is_empty() && book.previous.is_empty());
    }

    #[test]
    fn a_quiet_clients_lease_is_forgotten_within_two_lease_lifetimes() {
        let mut book = LeaseBook::new();
        let t0 = book.rotated;
        book.start(
            "quiet",
            Lease {
                remaining: 3,
                size: 4,
                expires: t0 + LEASE_TTL,
            },
        );
        // Still found (and kept) while it may be spent.
        assert!(book.lease("quiet", t0 + LEASE_TTL / 2).is_some());
        assert!(book.lease("other", t0 + LEASE_TTL * 11 / 10).is_none());
        assert!(book.lease("other", t0 + LEASE_TTL * 23 / 10).is_none());
        assert!(book.current.is_empty() && book.previous.is_empty());
    }

    #[tokio::test]
    async fn replicas_leasing_a_clients_tokens_share_one_bucket() {
        let redis = RedisHandle::new(&crate::testing::redis_url()).expect("url");
        let keyspace = crate::testing::unique("rlshare");
        // 10 per second, burst 20: leases of up to 5 tokens.
        let replicas = [
            RateLimiter::new(redis.clone(), &keyspace, 10, 20, false),
            RateLimiter::new(redis, &keyspace, 10, 20, false),
        ];
        let started = Instant::now();
        let mut allowed = 0u64;
        for i in 0..100 {
            if replicas[i % 2].check("shared").await.is_ok() {
                allowed += 1;
            }
        }
        let refilled = u64::try_from(started.elapsed().as_millis() / 100).unwrap_or(u64::MAX);
        // The burst plus the first token plus what refilled meanwhile, never more; at most a
        // lease per replica is left unspent.
        assert!(allowed <= 21 + refilled, "{allowed} allowed");
        assert!(allowed + 2 * 5 >= 21, "{allowed} allowed");
    }

    #[tokio::test]
    async fn operations_limited_by_their_flow_or_never_limited_skip_the_edge_check() {
        use axum::body::Body;
        use tower::ServiceExt;
        let redis = RedisHandle::new(&crate::testing::redis_url()).expect("url");
        let keyspace = crate::testing::unique("rlflow");
        let limiter = Arc::new(
            RateLimiter::new(redis, &keyspace, 1, 0, false)
                .limited_by_flow([(axum::http::Method::POST, "/attempts/{id}")])
                .not_limited([(axum::http::Method::POST, "/files/{*path}")]),
        );
        let app = axum::Router::new()
            .route("/attempts/{id}", axum::routing::post(|| async { "ok" }))
            .route("/files/{*path}", axum::routing::post(|| async { "ok" }))
            .route("/other", axum::routing::post(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&limiter),
                middleware,
            ))
            .layer(axum::middleware::from_fn(
                |mut request: Request, next: Next| async move {
                    if request.headers().contains_key("x-user") {
                        request.extensions_mut().insert(Principal {
                            claims: crate::auth::claims_for(
                                "alice",
                                &[],
                                "FR",
                                "test",
                                std::time::Duration::from_secs(60),
                            ),
                        });
                    }
                    next.run(request).await
                },
            ));
        let status = |path: &'static str, signed_in: bool| {
            let app = app.clone();
            async move {
                let mut request = Request::post(path);
                if signed_in {
                    request = request.header("x-user", "1");
                }
                app.oneshot(request.body(Body::empty()).expect("request"))
                    .await
                    .expect("response")
                    .status()
            }
        };
        for _ in 0..5 {
            assert_eq!(status("/attempts/summer", true).await, StatusCode::OK);
        }
        // Anonymous callers of the same operation and other operations are limited here.
        assert_eq!(status("/attempts/summer", false).await, StatusCode::OK);
        assert_eq!(
            status("/attempts/summer", false).await,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(status("/other", true).await, StatusCode::OK);
        assert_eq!(status("/other", true).await, StatusCode::TOO_MANY_REQUESTS);
        // Operations never limited pass for everyone, however often.
        for signed_in in [false, true, false, true, false] {
            assert_eq!(status("/files/app.js", signed_in).await, StatusCode::OK);
        }
    }

    #[tokio::test]
    async fn without_redis_requests_pass_and_are_counted() {
        let redis = RedisHandle::new("redis://127.0.0.1:1").expect("url");
        let limiter = RateLimiter::new(redis, "x", 1, 0, false);
        for _ in 0..5 {
            assert_eq!(limiter.check("alice").await, Ok(()));
        }
        assert_eq!(limiter.unavailable.get(), 5);
    }
}
