//! The Redis side of seckill: the one reservation script (with its `Idempotency-Key` record),
//! updating a campaign's definition, rebuilding its counters from durable sales when Redis lost
//! them, giving a reservation back, and reading the counters. Key names are in
//! [`crate::reservation`].
//!
//! Counters are never created from the configured stock: a campaign Redis does not know is
//! rebuilt from its durable sales ([`Seckill::rebuild`]); [`Seckill::update`] writes nothing
//! for a campaign Redis does not know.

use chrono::{DateTime, Utc};
use pulse_kit::ratelimit::Gcra;
use pulse_kit::redis::{LuaScript, RedisHandle};
use redis::AsyncCommands;
use uuid::Uuid;

use crate::reservation::{CampaignKeys, registry_key};

/// The reservation script. One call, atomically: was this request (same caller, same
/// `Idempotency-Key`) answered already? Then the same reservation again. Otherwise: is the user
/// within their attempt rate at this campaign? is the campaign known and open (window, not
/// closed)? has the user bought fewer than the limit? is there stock? Then: decrement the
/// stock, count the user, remember the order as unpaid, `XADD` the reservation and, with a key,
/// record key → order id for [`IDEMPOTENCY_TTL`]. One round trip decides everything an
/// attempt needs from Redis, so the edge rate limit skips this operation for signed-in callers
/// (the rate checked here is the stricter one).
///
/// `KEYS`: meta, stock, buyers, orders, stream, then optionally the user's attempt-rate record
/// ([`CampaignKeys::attempts`]) and then the request's idempotency record
/// ([`CampaignKeys::idempotency`]). `ARGV`: now (Unix ms), user, order id, then with the rate
/// record its GCRA interval and tolerance in ms (interval `0`: not limited), then with the
/// idempotency record its TTL in ms.
/// Returns `{outcome, order id}`: `ok` (reserved now) or `replay` (reserved by the first request
/// with the key); `{'rate-limited', retry after ms}`; else `{outcome}`: `unknown`, `ended`,
/// `not-started`, `already-bought` or `sold-out`. Called with the first five keys and three
/// arguments only, it is the reservation alone (the benchmark's reference calls it that way).
/// The rate uses Redis' clock, so replicas with skewed clocks share one limit.
pub const RESERVE_SCRIPT: &str = r"
if KEYS[7] then
  local prior = redis.call('GET', KEYS[7])
  if prior then return {'replay', prior} end
end
if KEYS[6] and ARGV[4] ~= '0' then
  local t = redis.call('TIME')
  local clock = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local interval = tonumber(ARGV[4])
  local tat = tonumber(redis.call('GET', KEYS[6]) or clock)
  if tat < clock then tat = clock end
  local next_tat = tat + interval
  local allow_at = next_tat - tonumber(ARGV[5]) - interval
  if allow_at > clock then return {'rate-limited', tostring(allow_at - clock)} end
  redis.call('SET', KEYS[6], next_tat, 'PX', next_tat - clock + 1000)
end
local meta = redis.call('HMGET', KEYS[1], 'start', 'end', 'closed', 'limit', 'price', 'currency', 'campaign')
if not meta[1] then return {'unknown'} end
local now = tonumber(ARGV[1])
if meta[3] == '1' or now >= tonumber(meta[2]) then return {'ended'} end
if now < tonumber(meta[1]) then return {'not-started'} end
local bought = tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0')
if bought >= tonumber(meta[4]) then return {'already-bought'} end
local left = tonumber(redis.call('GET', KEYS[2]) or '0')
if left <= 0 then return {'sold-out'} end
redis.call('DECR', KEYS[2])
redis.call('HINCRBY', KEYS[1], 'sold', 1)
redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
redis.call('HSET', KEYS[4], ARGV[3], ARGV[2])
redis.call('XADD', KEYS[5], '*', 'order', ARGV[3], 'user', ARGV[2], 'campaign', meta[7],
  'price', meta[5], 'currency', meta[6], 'at', ARGV[1])
if KEYS[7] then redis.call('SET', KEYS[7], ARGV[3], 'PX', ARGV[6]) end
return {'ok', ARGV[3]}
";

/// How long Redis remembers which reservation answered an `Idempotency-Key`: as long as the
/// kit keeps its own idempotency records (at least 24 hours).
pub const IDEMPOTENCY_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Updates the definition of a campaign Redis knows and recomputes its stock from what was
/// sold: remaining = max(total - sold, 0). Never resets `sold`; writes nothing when Redis does
/// not know the campaign (that is [`REBUILD_SCRIPT`]'s job, from durable state).
///
/// `KEYS`: meta, stock. `ARGV`: total, start ms, end ms, closed (0/1), limit, price, currency,
/// campaign. Returns `{total, sold, remaining}`, or an empty array when the campaign is missing.
const UPDATE_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local total = tonumber(ARGV[1])
local sold = tonumber(redis.call('HGET', KEYS[1], 'sold') or '0')
local left = total - sold
if left < 0 then left = 0 end
redis.call('HSET', KEYS[1], 'total', ARGV[1], 'start', ARGV[2], 'end', ARGV[3], 'closed', ARGV[4],
  'limit', ARGV[5], 'price', ARGV[6], 'currency', ARGV[7], 'campaign', ARGV[8], 'sold', sold)
redis.call('SET', KEYS[2], left)
return {total, sold, left}
";

/// Rebuilds a campaign's counters from durable sales, atomically.
///
/// Mode `missing` only acts when the campaign's meta key is absent (Redis lost it): the state is
/// exactly the durable sales. Mode `merge` (Redis answers with counters older than the durable
/// record, e.g. restored from an old snapshot) also keeps the unpaid reservations Redis has that
/// the durable record does not know yet (made moments ago, not yet orders), and drops those it
/// knows as cancelled. Either way: `sold` = live sales, the buyers hash from them, the orders hash
/// = the unpaid ones, stock = max(total - sold, 0). The stream and idempotency records are left.
///
/// `KEYS`: meta, stock, buyers, orders. `ARGV`: mode, total, start ms, end ms, closed (0/1),
/// limit, price, currency, campaign, then per durable sale: order id, buyer, state (`U` unpaid,
/// `P` paid, `C` cancelled). Returns `{'present'}` (mode `missing`, nothing done) or
/// `{'rebuilt', total, sold, remaining, kept}` (`kept`: reservations kept from Redis).
const REBUILD_SCRIPT: &str = r"
local exists = redis.call('EXISTS', KEYS[1]) == 1
if ARGV[1] == 'missing' and exists then return {'present'} end
local known, per_user, unpaid, sold, kept = {}, {}, {}, 0, 0
for i = 10, #ARGV, 3 do
  local order, user, state = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  known[order] = true
  if state ~= 'C' then
    sold = sold + 1
    per_user[user] = (per_user[user] or 0) + 1
    if state == 'U' then
      unpaid[#unpaid + 1] = order
      unpaid[#unpaid + 1] = user
    end
  end
end
if exists then
  local pending = redis.call('HGETALL', KEYS[4])
  for i = 1, #pending, 2 do
    local order, user = pending[i], pending[i + 1]
    if not known[order] then
      sold = sold + 1
      kept = kept + 1
      per_user[user] = (per_user[user] or 0) + 1
      unpaid[#unpaid + 1] = order
      unpaid[#unpaid + 1] = user
    end
  end
end
local buyers = {}
for user, n in pairs(per_user) do
  buyers[#buyers + 1] = user
  buyers[#buyers + 1] = n
end
redis.call('DEL', KEYS[3], KEYS[4])
for _, hash in ipairs({{KEYS[3], buyers}, {KEYS[4], unpaid}}) do
  local flat = hash[2]
  for i = 1, #flat, 1000 do
    redis.call('HSET', hash[1], unpack(flat, i, math.min(i + 999, #flat)))
  end
end
local total = tonumber(ARGV[2])
local left = total - sold
if left < 0 then left = 0 end
redis.call('HSET', KEYS[1], 'total', ARGV[2], 'start', ARGV[3], 'end', ARGV[4], 'closed', ARGV[5],
  'limit', ARGV[6], 'price', ARGV[7], 'currency', ARGV[8], 'campaign', ARGV[9], 'sold', sold)
redis.call('SET', KEYS[2], left)
return {'rebuilt', total, sold, left, kept}
";

/// Counts seckill orders of one campaign the durable record has just learned of (their
/// `OrderCreated`) that Redis does not know: Redis lost their reservations after ordering had
/// made them orders, and was rebuilt before marketing recorded the sales. A reservation Redis
/// knows is listed in the orders hash until its order is paid or cancelled, which happens after
/// it is created.
///
/// `KEYS`: meta, stock, buyers, orders. `ARGV`: order id, buyer, order id, buyer, … Returns one
/// outcome per order, in order: `missing` (Redis does not know the campaign: the next rebuild
/// counts the sale), `known`, `adopted`, or `oversold` (adopted, and more are sold than the
/// stock).
const ADOPT_SCRIPT: &str = r"
local outcomes = {}
if redis.call('EXISTS', KEYS[1]) == 0 then
  for i = 1, #ARGV, 2 do outcomes[#outcomes + 1] = 'missing' end
  return outcomes
end
local total = tonumber(redis.call('HGET', KEYS[1], 'total') or '0')
local adopted = false
for i = 1, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[4], ARGV[i]) == 1 then
    outcomes[#outcomes + 1] = 'known'
  else
    redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1])
    redis.call('HINCRBY', KEYS[3], ARGV[i + 1], 1)
    local sold = redis.call('HINCRBY', KEYS[1], 'sold', 1)
    adopted = true
    if sold > total then outcomes[#outcomes + 1] = 'oversold' else outcomes[#outcomes + 1] = 'adopted' end
  end
end
if adopted then
  local left = total - tonumber(redis.call('HGET', KEYS[1], 'sold'))
  if left < 0 then left = 0 end
  redis.call('SET', KEYS[2], left)
end
return outcomes
";

/// Gives an unpaid reservation back (idempotent: only an order still listed as unpaid is
/// released): the user's count goes down, `sold` goes down, the stock is recomputed. A campaign
/// Redis lost has nothing to give back (its rebuild leaves cancelled sales out).
///
/// `KEYS`: meta, stock, buyers, orders. `ARGV`: order id. Returns 1 if released, 0 otherwise.
const RELEASE_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
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
    /// The request's `Idempotency-Key` reserved this order already: the same answer again.
    Replayed(Uuid),
    /// No such campaign in Redis.
    Unknown,
    /// Before its start.
    NotStarted,
    /// After its end, or closed.
    Ended,
    /// The user reached the per-user limit.
    AlreadyBought,
    /// The user tries more often than their attempt rate allows: retry after this many ms.
    RateLimited(u64),
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

impl LoadSpec<'_> {
    /// The definition's arguments, in the order the scripts take them.
    fn args(&self) -> [String; 8] {
        [
            self.stock.to_string(),
            self.starts_at.timestamp_millis().to_string(),
            self.ends_at.timestamp_millis().to_string(),
            if self.closed { "1" } else { "0" }.to_owned(),
            self.per_user_limit.to_string(),
            self.price_minor.to_string(),
            self.currency.to_owned(),
            self.id.to_owned(),
        ]
    }
}

/// Where a durable sale stands, as a rebuild needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaleState {
    /// Its order exists and is not paid: the reservation can still be given back.
    Unpaid,
    /// Paid (or refunded, which keeps the unit sold).
    Paid,
    /// Cancelled: the unit was given back.
    Cancelled,
}

/// One durable sale (see [`crate::store::Store::sales_of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sale {
    /// The seckill order.
    pub order_id: Uuid,
    /// Its buyer.
    pub buyer: String,
    /// Where it stands.
    pub state: SaleState,
}

/// How a rebuild treats what Redis holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebuildMode {
    /// Only when Redis does not know the campaign (it lost its keys): the counters become
    /// exactly the durable sales. Does nothing when the campaign is there.
    Missing,
    /// Redis knows the campaign but its counters are older than the durable record: the durable
    /// sales, plus the unpaid reservations only Redis knows (not yet orders).
    Merge,
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rebuilt {
    /// [`RebuildMode::Missing`] found the campaign in Redis: nothing was written.
    Present,
    /// The counters were written.
    Done {
        /// The counters now.
        counts: Counts,
        /// Reservations kept from Redis that the durable record did not know.
        kept: u32,
    },
}

/// What [`Seckill::adopt`] did with a newly recorded sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adopted {
    /// Redis does not know the campaign; its rebuild will count the sale.
    Missing,
    /// Redis counted it already (the usual case).
    Known,
    /// Redis had lost it: it is counted now.
    Adopted,
    /// Counted now, and more units are sold than the stock (an order Redis lost, made before
    /// the rebuild, whose unit was sold again meanwhile).
    Oversold,
}

/// Redis access for seckill.
#[derive(Debug)]
pub struct Seckill {
    redis: RedisHandle,
    keyspace: String,
    /// Each user's attempt rate at a campaign, when limited.
    attempt_rate: Option<Gcra>,
    reserve: LuaScript,
    update: LuaScript,
    rebuild: LuaScript,
    adopt: LuaScript,
    release: LuaScript,
    close: LuaScript,
}

fn clamp_u32(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

fn int(value: Option<&redis::Value>) -> i64 {
    value
        .and_then(|v| redis::from_redis_value::<i64>(v).ok())
        .unwrap_or(0)
}

impl Seckill {
    /// Seckill over `redis`, naming keys in `keyspace`.
    pub fn new(redis: RedisHandle, keyspace: &str) -> Self {
        Self {
            redis,
            keyspace: keyspace.to_owned(),
            attempt_rate: None,
            reserve: LuaScript::new(RESERVE_SCRIPT),
            update: LuaScript::new(UPDATE_SCRIPT),
            rebuild: LuaScript::new(REBUILD_SCRIPT),
            adopt: LuaScript::new(ADOPT_SCRIPT),
            release: LuaScript::new(RELEASE_SCRIPT),
            close: LuaScript::new(CLOSE_SCRIPT),
        }
    }

    /// Limits each user's attempts at a campaign to `rate`, checked by the reservation script
    /// itself.
    #[must_use]
    pub fn with_attempt_rate(mut self, rate: Gcra) -> Self {
        self.attempt_rate = Some(rate);
        self
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
        self.reserve_once(campaign, user, order_id, None, now).await
    }

    /// [`Seckill::reserve`] for a request with an `Idempotency-Key`: when `key` (of `user`)
    /// reserved already, the answer is that reservation ([`Attempt::Replayed`]); otherwise the
    /// reservation made now is recorded under the key, in the same script call.
    pub async fn reserve_once(
        &self,
        campaign: &str,
        user: &str,
        order_id: Uuid,
        key: Option<&str>,
        now: DateTime<Utc>,
    ) -> redis::RedisResult<Attempt> {
        let keys = self.keys(campaign);
        let now_ms = now.timestamp_millis().to_string();
        let order = order_id.to_string();
        let attempts = keys.attempts(user);
        let record = key.map(|key| keys.idempotency(user, key));
        // Interval 0: not limited (the record's place comes after the rate's).
        let rate = self
            .attempt_rate
            .map_or(("0".to_owned(), "0".to_owned()), |rate| {
                (rate.interval_ms.to_string(), rate.tolerance_ms.to_string())
            });
        let ttl = IDEMPOTENCY_TTL.as_millis().to_string();
        let mut key_list = vec![
            keys.meta.as_str(),
            &keys.stock,
            &keys.buyers,
            &keys.orders,
            &keys.stream,
            &attempts,
        ];
        let mut args = vec![now_ms.as_str(), user, &order, &rate.0, &rate.1];
        if let Some(record) = &record {
            key_list.push(record);
            args.push(&ttl);
        }
        let mut conn = self.redis.connection().await?;
        let outcome: Vec<String> = self.reserve.run(&mut conn, &key_list, &args).await?;
        Ok(match outcome.first().map(String::as_str) {
            Some("ok") => Attempt::Reserved,
            Some("rate-limited") => Attempt::RateLimited(
                outcome
                    .get(1)
                    .and_then(|ms| ms.parse::<u64>().ok())
                    .unwrap_or(1000),
            ),
            Some("replay") => match outcome.get(1).and_then(|id| Uuid::parse_str(id).ok()) {
                Some(prior) => Attempt::Replayed(prior),
                None => {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::TypeError,
                        "an idempotency record holds no order id",
                    )));
                }
            },
            Some("ended") => Attempt::Ended,
            Some("not-started") => Attempt::NotStarted,
            Some("already-bought") => Attempt::AlreadyBought,
            Some("sold-out") => Attempt::SoldOut,
            _ => Attempt::Unknown,
        })
    }

    /// Loads a campaign that has no durable sales (a new one; tests and benchmarks): updates its
    /// definition if Redis knows it, else creates it with nothing sold. Marketing's own flows
    /// never create a campaign this way: they rebuild it from its durable sales
    /// ([`Seckill::rebuild`]).
    pub async fn load(&self, spec: &LoadSpec<'_>) -> redis::RedisResult<Counts> {
        if let Some(counts) = self.update(spec).await? {
            return Ok(counts);
        }
        match self.rebuild(spec, &[], RebuildMode::Missing).await? {
            Rebuilt::Done { counts, .. } => Ok(counts),
            // Created by someone else in between.
            Rebuilt::Present => self.update(spec).await.map(|c| {
                c.unwrap_or(Counts {
                    total: spec.stock,
                    sold: 0,
                    remaining: spec.stock,
                })
            }),
        }
    }

    /// Updates the definition of a campaign Redis knows (never resetting what was sold) and
    /// registers its stream for ordering; `None`, writing nothing, if Redis does not know it.
    pub async fn update(&self, spec: &LoadSpec<'_>) -> redis::RedisResult<Option<Counts>> {
        let keys = self.keys(spec.id);
        let args = spec.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut conn = self.redis.connection().await?;
        let counts: Vec<i64> = self
            .update
            .run(&mut conn, &[&keys.meta, &keys.stock], &args)
            .await?;
        let [total, sold, remaining] = counts[..] else {
            return Ok(None);
        };
        let _: i64 = conn.sadd(registry_key(&self.keyspace), spec.id).await?;
        Ok(Some(Counts {
            total: clamp_u32(total),
            sold: clamp_u32(sold),
            remaining: clamp_u32(remaining),
        }))
    }

    /// Rebuilds a campaign's counters from its durable `sales` (see [`RebuildMode`]), in one
    /// script call, and registers its stream for ordering. The caller holds the campaign's
    /// lock ([`crate::store::Store::lock_campaign`]), so no sale changes meanwhile.
    pub async fn rebuild(
        &self,
        spec: &LoadSpec<'_>,
        sales: &[Sale],
        mode: RebuildMode,
    ) -> redis::RedisResult<Rebuilt> {
        let keys = self.keys(spec.id);
        let mode_arg = match mode {
            RebuildMode::Missing => "missing",
            RebuildMode::Merge => "merge",
        };
        let mut args: Vec<String> = Vec::with_capacity(9 + sales.len() * 3);
        args.push(mode_arg.to_owned());
        args.extend(spec.args());
        for sale in sales {
            args.push(sale.order_id.to_string());
            args.push(sale.buyer.clone());
            args.push(
                match sale.state {
                    SaleState::Unpaid => "U",
                    SaleState::Paid => "P",
                    SaleState::Cancelled => "C",
                }
                .to_owned(),
            );
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut conn = self.redis.connection().await?;
        let reply: Vec<redis::Value> = self
            .rebuild
            .run(
                &mut conn,
                &[&keys.meta, &keys.stock, &keys.buyers, &keys.orders],
                &args,
            )
            .await?;
        let state = reply
            .first()
            .and_then(|v| redis::from_redis_value::<String>(v).ok());
        if state.as_deref() != Some("rebuilt") {
            return Ok(Rebuilt::Present);
        }
        let _: i64 = conn.sadd(registry_key(&self.keyspace), spec.id).await?;
        Ok(Rebuilt::Done {
            counts: Counts {
                total: clamp_u32(int(reply.get(1))),
                sold: clamp_u32(int(reply.get(2))),
                remaining: clamp_u32(int(reply.get(3))),
            },
            kept: clamp_u32(int(reply.get(4))),
        })
    }

    /// Makes sure Redis counts the seckill orders of `campaign` (order id, buyer) the durable
    /// record has just learned of, in one round trip; what it did with each, in order (see
    /// [`Adopted`]). The caller holds the campaign in share mode
    /// ([`crate::store::Store::share_campaign`]).
    pub async fn adopt(
        &self,
        campaign: &str,
        orders: &[(Uuid, &str)],
    ) -> redis::RedisResult<Vec<Adopted>> {
        if orders.is_empty() {
            return Ok(Vec::new());
        }
        let keys = self.keys(campaign);
        let ids: Vec<String> = orders.iter().map(|(id, _)| id.to_string()).collect();
        let args: Vec<&str> = ids
            .iter()
            .zip(orders)
            .flat_map(|(id, (_, buyer))| [id.as_str(), *buyer])
            .collect();
        let mut conn = self.redis.connection().await?;
        let outcomes: Vec<String> = self
            .adopt
            .run(
                &mut conn,
                &[&keys.meta, &keys.stock, &keys.buyers, &keys.orders],
                &args,
            )
            .await?;
        Ok(outcomes
            .iter()
            .map(|outcome| match outcome.as_str() {
                "known" => Adopted::Known,
                "adopted" => Adopted::Adopted,
                "oversold" => Adopted::Oversold,
                _ => Adopted::Missing,
            })
            .collect())
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
