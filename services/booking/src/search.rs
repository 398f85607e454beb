//! Practitioner search: filters in PostgreSQL, "near" through a Redis GEO index, results cached
//! in Redis (cache-aside, TTL with jitter) with single-flight on misses. Booking's consumer of
//! its own appointment events bumps a generation number, which retires every cached result.
//!
//! In front of Redis, each replica keeps a small near-cache of the answers it served, valid for
//! the generation it last read. A replica reads the generation from Redis at most every
//! [`GENERATION_RECHECK`], so a bump made by whichever replica consumed the event retires the
//! near-cache of every replica within that time, without a message that could be lost; an
//! answer also leaves the near-cache after [`NEAR_TTL`], because results move with the clock
//! (slots pass). A hot search then costs no Redis round trip at all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use pulse_kit::config::CountryConfig;
use pulse_kit::redis::RedisHandle;
use pulse_kit::singleflight::SingleFlight;
use rand::Rng;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{self, SearchQuery};

/// Slots shown per practitioner in search results.
pub const SLOTS_PER_RESULT: i64 = 5;
/// Practitioners the GEO index returns at most for one search.
const GEO_LIMIT: usize = 1000;
/// How stale a replica's view of the search generation may be: a booking or cancellation
/// reaches every replica's near-cache at most this long after its event was consumed.
pub const GENERATION_RECHECK: Duration = Duration::from_millis(100);
/// How long an answer stays in a replica's near-cache at most.
pub const NEAR_TTL: Duration = Duration::from_secs(5);
/// Bytes of answers one replica's near-cache holds at most (the hottest searches come first).
const NEAR_CACHE_BYTES: usize = 2 * 1024 * 1024;

/// A free slot in a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlotView {
    /// Slot id, to book it.
    pub id: Uuid,
    /// Start, local time with offset.
    pub start: String,
    /// End, local time with offset.
    pub end: String,
}

/// One practitioner in the results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchHit {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Specialty.
    pub specialty: String,
    /// City.
    pub city: String,
    /// Address.
    pub address: String,
    /// Latitude.
    pub latitude: f64,
    /// Longitude.
    pub longitude: f64,
    /// Languages.
    pub languages: Vec<String>,
    /// Price in minor units.
    pub consultation_price_minor: i64,
    /// Currency.
    pub currency: String,
    /// Distance from `near`, in km.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance_km: Option<f64>,
    /// The earliest free slots (on `available_on` when given).
    pub available_slots: Vec<SlotView>,
}

/// A page of results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchPage {
    /// The practitioners.
    pub items: Vec<SearchHit>,
    /// This page, from 1.
    pub page: u32,
    /// Page size.
    pub page_size: u32,
    /// Matches over all pages.
    pub total: i64,
}

/// Why a search could not be answered.
#[derive(Debug, Clone)]
pub enum SearchError {
    /// The database query failed (shared by every search that waited for that query).
    Db(Arc<sqlx::Error>),
    /// The results could not be encoded.
    Encode(Arc<str>),
}

impl std::fmt::Display for SearchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Db(err) => write!(f, "search query: {err}"),
            Self::Encode(err) => write!(f, "search results: {err}"),
        }
    }
}

impl std::error::Error for SearchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // The database error itself (not its `Arc`), so callers can tell an outage.
            Self::Db(err) => Some(&**err),
            Self::Encode(_) => None,
        }
    }
}

/// What one search computation ends with, shared by the searches that waited for it.
type SearchOutcome = Result<Bytes, SearchError>;

/// One replica's near-cache: answers of the generation it last read from Redis.
#[derive(Default)]
struct NearCache {
    /// The generation the answers belong to, and when it was read.
    generation: Option<(i64, Instant)>,
    /// Query fingerprint → answer, and when it was stored.
    answers: HashMap<String, (Bytes, Instant)>,
    /// Sum of the answers' sizes.
    bytes: usize,
}

impl NearCache {
    /// The generation, if it was read within [`GENERATION_RECHECK`].
    fn fresh_generation(&self, now: Instant) -> Option<i64> {
        self.generation
            .filter(|(_, read)| now.duration_since(*read) < GENERATION_RECHECK)
            .map(|(generation, _)| generation)
    }

    /// Records the generation read from Redis at `read`; a new one retires every answer.
    fn observe(&mut self, generation: i64, read: Instant) {
        match self.generation {
            Some((known, _)) if known == generation => {}
            _ => {
                self.answers.clear();
                self.bytes = 0;
            }
        }
        if self.generation.is_none_or(|(_, at)| at <= read) {
            self.generation = Some((generation, read));
        }
    }

    fn get(&self, fingerprint: &str, generation: i64, now: Instant) -> Option<Bytes> {
        if self.generation.map(|(g, _)| g) != Some(generation) {
            return None;
        }
        self.answers
            .get(fingerprint)
            .filter(|(_, stored)| now.duration_since(*stored) < NEAR_TTL)
            .map(|(answer, _)| answer.clone())
    }

    /// Keeps `answer` of `generation` unless the generation moved on or the cache is full
    /// (expired answers make room first).
    fn put(&mut self, fingerprint: &str, generation: i64, answer: &Bytes, now: Instant) {
        if self.generation.map(|(g, _)| g) != Some(generation) {
            return;
        }
        if self.bytes + answer.len() > NEAR_CACHE_BYTES {
            self.answers
                .retain(|_, (_, stored)| now.duration_since(*stored) < NEAR_TTL);
            self.bytes = self.answers.values().map(|(a, _)| a.len()).sum();
        }
        if self.bytes + answer.len() > NEAR_CACHE_BYTES {
            return;
        }
        if let Some((old, _)) = self
            .answers
            .insert(fingerprint.to_owned(), (answer.clone(), now))
        {
            self.bytes -= old.len();
        }
        self.bytes += answer.len();
    }

    fn clear(&mut self) {
        self.generation = None;
        self.answers.clear();
        self.bytes = 0;
    }
}

/// Search with its cache.
pub struct Search {
    pool: PgPool,
    redis: RedisHandle,
    country: Arc<CountryConfig>,
    /// [`crate::redis_prefix`] of the keyspace.
    prefix: String,
    flights: SingleFlight<SearchOutcome>,
    /// Database queries run by searches (cache misses).
    pub db_queries: Counter,
    /// Searches answered from the cache.
    pub cache_hits: Counter,
    /// Searches answered from this replica's near-cache (also counted in `cache_hits`).
    pub near_hits: Counter,
    near: Mutex<NearCache>,
    ttl: Duration,
}

#[derive(sqlx::FromRow)]
struct HitRow {
    id: Uuid,
    name: String,
    specialty: String,
    city: String,
    address: String,
    latitude: f64,
    longitude: f64,
    languages: Vec<String>,
    consultation_price_minor: i64,
    currency: String,
    total: i64,
    slot_ids: Option<Vec<Uuid>>,
    slot_starts: Option<Vec<DateTime<Utc>>>,
    slot_ends: Option<Vec<DateTime<Utc>>>,
}

impl Search {
    /// Search over booking's pool and Redis; keys live under `keyspace`.
    pub fn new(
        pool: PgPool,
        redis: RedisHandle,
        country: Arc<CountryConfig>,
        keyspace: &str,
    ) -> Self {
        Self {
            pool,
            redis,
            country,
            prefix: crate::redis_prefix(keyspace),
            flights: SingleFlight::default(),
            db_queries: Counter::default(),
            cache_hits: Counter::default(),
            near_hits: Counter::default(),
            near: Mutex::default(),
            ttl: Duration::from_secs(60),
        }
    }

    /// The Redis key of the search generation.
    pub fn generation_key(&self) -> String {
        format!("{}:search-generation", self.prefix)
    }

    fn geo_key(&self) -> String {
        format!("{}:geo", self.prefix)
    }

    /// Retires every cached result (called by the appointment-event consumer): in Redis at
    /// once, in this replica's near-cache at once, in the others' within
    /// [`GENERATION_RECHECK`].
    pub async fn invalidate(&self) -> redis::RedisResult<()> {
        let mut conn = self.redis.connection().await?;
        let _: i64 = conn.incr(self.generation_key(), 1).await?;
        self.near_cache().clear();
        Ok(())
    }

    fn near_cache(&self) -> std::sync::MutexGuard<'_, NearCache> {
        // A panic while holding the lock leaves nothing half-updated that matters: the
        // near-cache is only ever a copy.
        self.near
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The search generation: this replica's view when fresh, else read from Redis (and the
    /// near-cache retired if it moved). `None` when Redis does not answer: nothing is cached.
    async fn generation(&self, conn: &mut Option<redis::aio::ConnectionManager>) -> Option<i64> {
        if let Some(generation) = self.near_cache().fresh_generation(Instant::now()) {
            return Some(generation);
        }
        let read = Instant::now();
        if conn.is_none() {
            *conn = self.redis.connection().await.ok();
        }
        let generation = conn
            .as_mut()?
            .get::<_, Option<i64>>(self.generation_key())
            .await
            .ok()?
            .unwrap_or(0);
        self.near_cache().observe(generation, read);
        Some(generation)
    }

    /// Adds or moves practitioners in the GEO index.
    pub async fn index_positions(&self, positions: &[(Uuid, f64, f64)]) -> redis::RedisResult<()> {
        if positions.is_empty() {
            return Ok(());
        }
        let mut conn = self.redis.connection().await?;
        for chunk in positions.chunks(500) {
            let mut command = redis::cmd("GEOADD");
            command.arg(self.geo_key());
            for (id, lon, lat) in chunk {
                command.arg(*lon).arg(*lat).arg(id.to_string());
            }
            let _: i64 = command.query_async(&mut conn).await?;
        }
        Ok(())
    }

    /// Runs a search: near-cache, else Redis, else one database query shared by concurrent
    /// identical searches. The answer is the JSON of a [`SearchPage`].
    pub async fn search(&self, query: &SearchQuery) -> Result<Bytes, SearchError> {
        let fingerprint = hex::encode(Sha256::digest(
            serde_json::to_vec(query).unwrap_or_default(),
        ));
        // No generation yet counts as 0; no answer from Redis means no caching at all. One
        // connection serves both reads.
        let mut conn = None;
        let generation = self.generation(&mut conn).await;
        if let Some(generation) = generation
            && let Some(hit) = self
                .near_cache()
                .get(&fingerprint, generation, Instant::now())
        {
            self.near_hits.inc();
            self.cache_hits.inc();
            return Ok(hit);
        }
        let cache_key = generation.map(|g| format!("{}:search:{g}:{fingerprint}", self.prefix));
        if conn.is_none() && cache_key.is_some() {
            conn = self.redis.connection().await.ok();
        }
        if let (Some(key), Some(conn)) = (&cache_key, &mut conn)
            && let Ok(Some(hit)) = conn.get::<_, Option<Vec<u8>>>(key).await
        {
            self.cache_hits.inc();
            let hit = Bytes::from(hit);
            if let Some(generation) = generation {
                self.near_cache()
                    .put(&fingerprint, generation, &hit, Instant::now());
            }
            return Ok(hit);
        }
        let flight_key = cache_key
            .clone()
            .unwrap_or_else(|| format!("nocache:{fingerprint}"));
        let this = self.snapshot();
        let query = query.clone();
        let answer = self
            .flights
            .run(&flight_key, move || async move {
                this.fill(cache_key, &query).await
            })
            .await?;
        if let Some(generation) = generation {
            self.near_cache()
                .put(&fingerprint, generation, &answer, Instant::now());
        }
        Ok(answer)
    }

    fn snapshot(&self) -> SearchWorker {
        SearchWorker {
            pool: self.pool.clone(),
            redis: self.redis.clone(),
            country: Arc::clone(&self.country),
            db_queries: self.db_queries.clone(),
            geo_key: self.geo_key(),
            ttl: self.ttl,
        }
    }
}

/// What a single-flight computation owns.
struct SearchWorker {
    pool: PgPool,
    redis: RedisHandle,
    country: Arc<CountryConfig>,
    db_queries: Counter,
    geo_key: String,
    ttl: Duration,
}

impl SearchWorker {
    /// One search computation: the cache again (a flight that finished between the caller's
    /// miss and now has filled it), else the database, whose answer is cached.
    async fn fill(&self, cache_key: Option<String>, query: &SearchQuery) -> SearchOutcome {
        if let Some(key) = &cache_key
            && let Ok(mut conn) = self.redis.connection().await
            && let Ok(Some(hit)) = conn.get::<_, Option<Vec<u8>>>(key).await
        {
            return Ok(Bytes::from(hit));
        }
        let page = self
            .query_database(query)
            .await
            .map_err(|err| SearchError::Db(Arc::new(err)))?;
        let json =
            serde_json::to_vec(&page).map_err(|err| SearchError::Encode(err.to_string().into()))?;
        if let Some(key) = cache_key {
            let jitter = rand::rng().random_range(0..=self.ttl.as_secs() / 4);
            if let Ok(mut conn) = self.redis.connection().await {
                let stored: redis::RedisResult<()> =
                    conn.set_ex(&key, &json, self.ttl.as_secs() + jitter).await;
                if let Err(err) = stored {
                    tracing::warn!(error = %err, "could not cache search results");
                }
            }
        }
        Ok(Bytes::from(json))
    }

    /// Practitioner ids within the radius, nearest first, with distances (Redis GEO). `None`
    /// when the index is unavailable; the database then computes distances itself.
    async fn nearby(&self, lat: f64, lon: f64, radius_km: f64) -> Option<Vec<(Uuid, f64)>> {
        let mut conn = self.redis.connection().await.ok()?;
        let exists: bool = conn.exists(&self.geo_key).await.ok()?;
        if !exists {
            return None;
        }
        let found: Vec<(String, f64)> = redis::cmd("GEOSEARCH")
            .arg(&self.geo_key)
            .arg("FROMLONLAT")
            .arg(lon)
            .arg(lat)
            .arg("BYRADIUS")
            .arg(radius_km)
            .arg("km")
            .arg("ASC")
            .arg("COUNT")
            .arg(GEO_LIMIT)
            .arg("WITHDIST")
            .query_async(&mut conn)
            .await
            .ok()?;
        Some(
            found
                .into_iter()
                .filter_map(|(id, d)| id.parse().ok().map(|id| (id, d)))
                .collect(),
        )
    }

    async fn query_database(&self, query: &SearchQuery) -> Result<SearchPage, sqlx::Error> {
        let tz = self.country.tz();
        let now = Utc::now();
        let earliest = domain::earliest_start(&self.country.booking, now);
        let (from, to, require_slot) = match query.available_on {
            Some(day) => {
                let start = domain::local_midnight(day, tz);
                let end = domain::local_midnight(day.succ_opt().unwrap_or(day), tz);
                (start.max(earliest), end, true)
            }
            None => {
                let until =
                    now + chrono::Duration::days(i64::from(self.country.booking.horizon_days) + 1);
                (earliest, until, false)
            }
        };
        let nearby = match query.near {
            Some((lat, lon, radius)) => self
                .nearby(lat, lon, radius)
                .await
                .map(Some)
                .unwrap_or(None),
            None => None,
        };
        let (ids, distances): (Option<Vec<Uuid>>, Vec<(Uuid, f64)>) = match &nearby {
            Some(found) => (
                Some(found.iter().map(|(id, _)| *id).collect()),
                found.clone(),
            ),
            None => (None, Vec::new()),
        };
        // Without the GEO index, the database measures distances (haversine).
        let (sql_near, lat, lon, radius) = match (query.near, &nearby) {
            (Some((lat, lon, radius)), None) => (true, lat, lon, radius),
            _ => (false, 0.0, 0.0, 0.0),
        };
        let limit = i64::from(query.page_size);
        let offset = i64::from(query.page.saturating_sub(1)) * limit;
        self.db_queries.inc();
        let rows = sqlx::query_as::<_, HitRow>(
            "WITH candidates AS (
                SELECT p.*,
                       CASE WHEN $9 THEN 2 * 6371 * asin(sqrt(
                            power(sin(radians(p.latitude - $10) / 2), 2) +
                            cos(radians($10)) * cos(radians(p.latitude)) * power(sin(radians(p.longitude - $11) / 2), 2)))
                       END AS sql_distance
                FROM practitioners p
                WHERE ($1::text IS NULL OR p.specialty = $1)
                  AND ($2::text IS NULL OR lower(p.city) = lower($2))
                  AND ($3::uuid[] IS NULL OR p.id = ANY($3))
             )
             SELECT c.id, c.name, c.specialty, c.city, c.address, c.latitude, c.longitude, c.languages,
                    c.consultation_price_minor, c.currency, count(*) OVER () AS total,
                    s.slot_ids, s.slot_starts, s.slot_ends
             FROM candidates c
             LEFT JOIN LATERAL (
                SELECT array_agg(f.id ORDER BY f.starts_at) AS slot_ids,
                       array_agg(f.starts_at ORDER BY f.starts_at) AS slot_starts,
                       array_agg(f.ends_at ORDER BY f.starts_at) AS slot_ends
                FROM (SELECT id, starts_at, ends_at FROM slots
                      WHERE practitioner_id = c.id AND status = 'free' AND starts_at >= $4 AND starts_at < $5
                      ORDER BY starts_at LIMIT $6) f
             ) s ON true
             WHERE (NOT $7 OR s.slot_ids IS NOT NULL)
               AND (NOT $9 OR c.sql_distance <= $12)
             ORDER BY CASE WHEN $3::uuid[] IS NOT NULL THEN array_position($3, c.id) END,
                      c.sql_distance, c.name, c.id
             LIMIT $8 OFFSET $13",
        )
        .bind(query.specialty.as_deref())
        .bind(query.city.as_deref())
        .bind(ids.as_deref())
        .bind(from)
        .bind(to)
        .bind(SLOTS_PER_RESULT)
        .bind(require_slot)
        .bind(limit)
        .bind(sql_near)
        .bind(lat)
        .bind(lon)
        .bind(radius)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let total = rows.first().map_or(0, |r| r.total);
        let items = rows
            .into_iter()
            .map(|row| {
                let distance_km = match query.near {
                    Some((lat, lon, _)) => Some(
                        distances
                            .iter()
                            .find(|(id, _)| *id == row.id)
                            .map(|(_, d)| *d)
                            .unwrap_or_else(|| haversine_km(lat, lon, row.latitude, row.longitude)),
                    )
                    .map(|d| (d * 100.0).round() / 100.0),
                    None => None,
                };
                let slots = match (row.slot_ids, row.slot_starts, row.slot_ends) {
                    (Some(ids), Some(starts), Some(ends)) => ids
                        .into_iter()
                        .zip(starts)
                        .zip(ends)
                        .map(|((id, start), end)| SlotView {
                            id,
                            start: domain::local_rfc3339(start, tz),
                            end: domain::local_rfc3339(end, tz),
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                SearchHit {
                    id: row.id,
                    name: row.name,
                    specialty: row.specialty,
                    city: row.city,
                    address: row.address,
                    latitude: row.latitude,
                    longitude: row.longitude,
                    languages: row.languages,
                    consultation_price_minor: row.consultation_price_minor,
                    currency: row.currency,
                    distance_km,
                    available_slots: slots,
                }
            })
            .collect();
        Ok(SearchPage {
            items,
            page: query.page,
            page_size: query.page_size,
            total,
        })
    }
}

/// Great-circle distance in km.
pub fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0 * a.sqrt().asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_near_cache_serves_one_generation_for_a_short_while() {
        let start = Instant::now();
        let answer = Bytes::from_static(b"{\"items\":[]}");
        let mut near = NearCache::default();
        assert_eq!(near.fresh_generation(start), None, "nothing read yet");
        near.put("q", 3, &answer, start);
        assert_eq!(
            near.get("q", 3, start),
            None,
            "no answer before a generation is known"
        );
        near.observe(3, start);
        near.put("q", 3, &answer, start);
        assert_eq!(near.get("q", 3, start), Some(answer.clone()));
        assert_eq!(near.get("other", 3, start), None);
        // The view of the generation must be re-read soon; the answer lives a little longer.
        let later = start + GENERATION_RECHECK;
        assert_eq!(
            near.fresh_generation(later),
            None,
            "re-read after the recheck time"
        );
        near.observe(3, later);
        assert_eq!(
            near.get("q", 3, later),
            Some(answer.clone()),
            "same generation, kept"
        );
        assert_eq!(near.get("q", 3, start + NEAR_TTL), None, "too old");
        // A new generation retires every answer, and an answer of the old one is not kept.
        near.observe(4, later);
        assert_eq!(near.get("q", 4, later), None);
        near.put("q", 3, &answer, later);
        assert_eq!(near.get("q", 3, later), None);
        // A slower reader's older view does not move the generation back.
        near.observe(4, start);
        assert_eq!(near.fresh_generation(later), Some(4));
        near.clear();
        assert_eq!(near.fresh_generation(later), None);
    }

    #[test]
    fn the_near_cache_holds_a_bounded_number_of_bytes() {
        let now = Instant::now();
        let mut near = NearCache::default();
        near.observe(1, now);
        let big = Bytes::from(vec![b'x'; NEAR_CACHE_BYTES / 2]);
        near.put("a", 1, &big, now);
        near.put("b", 1, &big, now);
        near.put("c", 1, &big, now);
        assert!(near.get("a", 1, now).is_some() && near.get("b", 1, now).is_some());
        assert!(near.get("c", 1, now).is_none(), "full: the newcomer waits");
        assert_eq!(near.bytes, NEAR_CACHE_BYTES);
        // Replacing an answer does not count it twice; expired answers make room.
        near.put("a", 1, &big, now);
        assert_eq!(near.bytes, NEAR_CACHE_BYTES);
        let later = now + NEAR_TTL;
        near.observe(1, later);
        near.put("c", 1, &big, later);
        assert!(near.get("c", 1, later).is_some());
        assert_eq!(near.bytes, NEAR_CACHE_BYTES / 2);
    }

    #[test]
    fn haversine_paris_lyon() {
        let d = haversine_km(48.8566, 2.3522, 45.764, 4.8357);
        assert!((d - 392.0).abs() < 5.0, "{d}");
    }
}
