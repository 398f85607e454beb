//! The Redis side of seckill: loading a campaign's stock, the one reservation script, giving a
//! reservation back, and reading the counters. Key names are in [`crate::reservation`].

use chrono::{DateTime, Utc};
use pulse_kit::redis::{LuaScript, RedisHandle};
use redis::AsyncCommands;
use uuid::Uuid;

use crate::reservation::{CampaignKeys, registry_key};

/// The reservation script. One call, atomically: is the campaign known and open (window, not
/// closed)? has the user bought fewer than the limit? is there stock? Then: decrement the stock,
/// count the user, remember the order as unpaid, and `XADD` the reservation.
///
/// `KEYS`: meta, stock, buyers, orders, stream. `ARGV`: now (Unix ms), user, order id.
/// Returns `ok`, `unknown`, `ended`, `not-started`, `already-bought` or `sold-out`.
pub const RESERVE_SCRIPT: &str = r"
local meta = redis.call('HMGET', KEYS[1], 'start', 'end', 'closed', 'limit', 'price', 'currency', 'campaign')
if not meta[1] then return 'unknown' end
local now = tonumber(ARGV[1])
if meta[3] == '1' or now >= tonumber(meta[2]) then return 'ended' end
if now < tonumber(meta[1]) then return 'not-started' end
local bought = tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0')
if bought >= tonumber(meta[4]) then return 'already-bought' end
local left = tonumber(redis.call('GET', KEYS[2]) or '0')
if left <= 0 then return 'sold-out' end
redis.call('DECR', KEYS[2])
redis.call('HINCRBY', KEYS[1], 'sold', 1)
redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
redis.call('HSET', KEYS[4], ARGV[3], ARGV[2])
redis.call('XADD', KEYS[5], '*', 'order', ARGV[3], 'user', ARGV[2], 'campaign', meta[7],
  'price', meta[5], 'currency', meta[6], 'at', ARGV[1])
return 'ok'
";

/// Loads (or updates) a campaign's definition and recomputes its stock from what was sold:
/// remaining = max(total - sold, 0). Never resets `sold`.
///
/// `KEYS`: meta, stock. `ARGV`: total, start ms, end ms, closed (0/1), limit, price, currency,
/// campaign. Returns `{total, sold, remaining}`.
const LOAD_SCRIPT: &str = r"
local total = tonumber(ARGV[1])
local sold = tonumber(redis.call('HGET', KEYS[1], 'sold') or '0')
local left = total - sold
if left < 0 then left = 0 end
redis.call('HSET', KEYS[1], 'total', ARGV[1], 'start', ARGV[2], 'end', ARGV[3], 'closed', ARGV[4],
  'limit', ARGV[5], 'price', ARGV[6], 'currency', ARGV[7], 'campaign', ARGV[8], 'sold', sold)
redis.call('SET', KEYS[2], left)
return {total, sold, left}
";

/// Gives an unpaid reservation back (idempotent: only an order still listed as unpaid is
/// released): the user's count goes down, `sold` goes down, the stock is recomputed.
///
/// `KEYS`: meta, stock, buyers, orders. `ARGV`: order id. Returns 1 if released, 0 otherwise.
const RELEASE_SCRIPT: &str = r"
local user = redis.call('HGET', KEYS[4], ARGV[1])
if not user then return 0 end
redis.call('HDEL', KEYS[4], ARGV[1])
local n = redis.call('HINCRBY', KEYS[3], user, -1)
if n <= 0 then redis.call('HDEL', KEYS[3], user) end
local sold = redis.call('HINCRBY', KEYS[1], 'sold', -1)
if sold < 0 then
  sold = 0
  redis.call('HSET', KEYS[1], 'sold', 0)
end
local total = tonumber(redis.call('HGET', KEYS[1], 'total') or '0')
local left = total - sold
if left < 0 then left = 0 end
redis.call('SET', KEYS[2], left)
return 1
";

/// Marks a campaign closed, if it is loaded. `KEYS`: meta. Returns 1 if it was loaded.
const CLOSE_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'closed', '1')
return 1
";

/// The outcome of one seckill attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Won: the reservation is in the stream.
    Reserved,
    /// No such campaign in Redis.
    Unknown,
    /// Before its start.
    NotStarted,
    /// After its end, or closed.
    Ended,
    /// The user reached the per-user limit.
    AlreadyBought,
    /// Nothing left.
    SoldOut,
}

/// A campaign's counters in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Total stock.
    pub total: u32,
    /// Reserved (and not given back).
    pub sold: u32,
    /// Left.
    pub remaining: u32,
}

/// What a campaign looks like when loaded into Redis.
#[derive(Debug, Clone)]
pub struct LoadSpec<'a> {
    /// Id.
    pub id: &'a str,
    /// Total stock.
    pub stock: u32,
    /// Start.
    pub starts_at: DateTime<Utc>,
    /// End.
    pub ends_at: DateTime<Utc>,
    /// Closed?
    pub closed: bool,
    /// Per-user limit.
    pub per_user_limit: u32,
    /// Price, minor units.
    pub price_minor: i64,
    /// Currency.
    pub currency: &'a str,
}

/// Redis access for seckill.
#[derive(Debug)]
pub struct Seckill {
    redis: RedisHandle,
    keyspace: String,
    reserve: LuaScript,
    load: LuaScript,
    release: LuaScript,
    close: LuaScript,
}

fn clamp_u32(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

impl Seckill {
    /// Seckill over `redis`, naming keys in `keyspace`.
    pub fn new(redis: RedisHandle, keyspace: &str) -> Self {
        Self {
            redis,
            keyspace: keyspace.to_owned(),
            reserve: LuaScript::new(RESERVE_SCRIPT),
            load: LuaScript::new(LOAD_SCRIPT),
            release: LuaScript::new(RELEASE_SCRIPT),
            close: LuaScript::new(CLOSE_SCRIPT),
        }
    }

    /// The keys of `campaign`.
    pub fn keys(&self, campaign: &str) -> CampaignKeys {
        CampaignKeys::new(&self.keyspace, campaign)
    }

    /// One attempt by `user` to reserve a voucher of `campaign` as order `order_id`.
    pub async fn reserve(
        &self,
        campaign: &str,
        user: &str,
        order_id: Uuid,
        now: DateTime<Utc>,
    ) -> redis::RedisResult<Attempt> {
        let keys = self.keys(campaign);
        let mut conn = self.redis.connection().await?;
        let outcome: String = self
            .reserve
            .run(
                &mut conn,
                &[
                    &keys.meta,
                    &keys.stock,
                    &keys.buyers,
                    &keys.orders,
                    &keys.stream,
                ],
                &[
                    &now.timestamp_millis().to_string(),
                    user,
                    &order_id.to_string(),
                ],
            )
            .await?;
        Ok(match outcome.as_str() {
            "ok" => Attempt::Reserved,
            "ended" => Attempt::Ended,
            "not-started" => Attempt::NotStarted,
            "already-bought" => Attempt::AlreadyBought,
            "sold-out" => Attempt::SoldOut,
            _ => Attempt::Unknown,
        })
    }

    /// Loads a campaign (definition and stock) and registers its stream for ordering.
    pub async fn load(&self, spec: &LoadSpec<'_>) -> redis::RedisResult<Counts> {
        let keys = self.keys(spec.id);
        let mut conn = self.redis.connection().await?;
        let (total, sold, remaining): (i64, i64, i64) = self
            .load
            .run(
                &mut conn,
                &[&keys.meta, &keys.stock],
                &[
                    &spec.stock.to_string(),
                    &spec.starts_at.timestamp_millis().to_string(),
                    &spec.ends_at.timestamp_millis().to_string(),
                    if spec.closed { "1" } else { "0" },
                    &spec.per_user_limit.to_string(),
                    &spec.price_minor.to_string(),
                    spec.currency,
                    spec.id,
                ],
            )
            .await?;
        let _: i64 = conn.sadd(registry_key(&self.keyspace), spec.id).await?;
        Ok(Counts {
            total: clamp_u32(total),
            sold: clamp_u32(sold),
            remaining: clamp_u32(remaining),
        })
    }

    /// The counters of a loaded campaign; `None` if Redis does not know it.
    pub async fn counts(&self, campaign: &str) -> redis::RedisResult<Option<Counts>> {
        let keys = self.keys(campaign);
        let mut conn = self.redis.connection().await?;
        let (total, sold, remaining): (Option<i64>, Option<i64>, Option<i64>) = redis::pipe()
            .hget(&keys.meta, "total")
            .hget(&keys.meta, "sold")
            .get(&keys.stock)
            .query_async(&mut conn)
            .await?;
        Ok(total.map(|total| Counts {
            total: clamp_u32(total),
            sold: clamp_u32(sold.unwrap_or(0)),
            remaining: clamp_u32(remaining.unwrap_or(0)),
        }))
    }

    /// Marks a campaign closed in Redis; `false` if it is not loaded.
    pub async fn close(&self, campaign: &str) -> redis::RedisResult<bool> {
        let keys = self.keys(campaign);
        let mut conn = self.redis.connection().await?;
        let loaded: i64 = self.close.run(&mut conn, &[&keys.meta], &[]).await?;
        Ok(loaded == 1)
    }

    /// Gives back the reservation of an unpaid order (idempotent); `true` if this call did.
    pub async fn release(&self, campaign: &str, order_id: Uuid) -> redis::RedisResult<bool> {
        let keys = self.keys(campaign);
        let mut conn = self.redis.connection().await?;
        let released: i64 = self
            .release
            .run(
                &mut conn,
                &[&keys.meta, &keys.stock, &keys.buyers, &keys.orders],
                &[&order_id.to_string()],
            )
            .await?;
        Ok(released == 1)
    }

    /// Forgets a paid order's reservation: it can no longer be given back.
    pub async fn settle(&self, campaign: &str, order_id: Uuid) -> redis::RedisResult<()> {
        let keys = self.keys(campaign);
        let mut conn = self.redis.connection().await?;
        let _: i64 = conn.hdel(&keys.orders, order_id.to_string()).await?;
        Ok(())
    }

    /// Campaigns whose streams ordering reads.
    pub async fn registered(&self) -> redis::RedisResult<Vec<String>> {
        let mut conn = self.redis.connection().await?;
        conn.smembers(registry_key(&self.keyspace)).await
    }

    /// Stops ordering from reading an old campaign's stream and lets its keys expire after
    /// `keep_for`.
    pub async fn retire(
        &self,
        campaign: &str,
        keep_for: std::time::Duration,
    ) -> redis::RedisResult<()> {
        let keys = self.keys(campaign);
        let mut conn = self.redis.connection().await?;
        let ttl = i64::try_from(keep_for.as_millis()).unwrap_or(i64::MAX);
        let mut pipe = redis::pipe();
        pipe.srem(registry_key(&self.keyspace), campaign).ignore();
        for key in keys.all() {
            pipe.pexpire(key, ttl).ignore();
        }
        pipe.query_async::<()>(&mut conn).await
    }

    /// Whether Redis knows the campaign.
    pub async fn is_loaded(&self, campaign: &str) -> redis::RedisResult<bool> {
        let keys = self.keys(campaign);
        let mut conn = self.redis.connection().await?;
        conn.exists(&keys.meta).await
    }
}
