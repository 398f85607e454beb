//! The seckill reservation contract between marketing (which writes reservations) and ordering
//! (which turns them into orders): Redis key names and the fields of a stream entry.
//!
//! Every key of one campaign carries the hash tag `{seckill:<keyspace>:<campaign>}`, so the
//! reservation script (which touches all of them) is legal on Redis Cluster:
//!
//! | key | type | what |
//! |---|---|---|
//! | `<tag>:meta` | hash | window (`start`, `end` in ms), `closed`, `limit`, `price`, `currency`, `total`, `sold`, `campaign` |
//! | `<tag>:stock` | string | remaining stock |
//! | `<tag>:buyers` | hash | user → vouchers reserved |
//! | `<tag>:orders` | hash | order id → user, for reservations not yet paid (released when cancelled) |
//! | `<tag>:reservations` | stream | one entry per reservation (fields below) |
//! | `<tag>:dead` | stream | entries ordering could not turn into an order, with `error` |
//! | `<tag>:errors` | hash | entry id → last error, while ordering retries it |
//! | `<tag>:idem:<len>:<user>:<key>` | string | order id answered to the user's `Idempotency-Key` (24 h) |
//! | `<tag>:attempts:<len>:<user>` | string | the user's attempt rate at the campaign (GCRA; expires when idle) |
//!
//! `{seckill:<keyspace>}:campaigns` (a set) lists the campaign ids whose streams ordering reads.

use std::collections::BTreeMap;

use uuid::Uuid;

/// Stream field: the order id (UUIDv7).
pub const FIELD_ORDER: &str = "order";
/// Stream field: the buyer's subject.
pub const FIELD_USER: &str = "user";
/// Stream field: the campaign id.
pub const FIELD_CAMPAIGN: &str = "campaign";
/// Stream field: the price, minor units.
pub const FIELD_PRICE: &str = "price";
/// Stream field: ISO 4217 currency of the price.
pub const FIELD_CURRENCY: &str = "currency";
/// Stream field: when the reservation was made (Unix ms).
pub const FIELD_AT: &str = "at";
/// Dead-letter field: why the entry failed.
pub const FIELD_ERROR: &str = "error";
/// Dead-letter field: how many times it was delivered.
pub const FIELD_DELIVERIES: &str = "deliveries";
/// Dead-letter field: the id of the entry in the reservation stream.
pub const FIELD_SOURCE_ID: &str = "source_id";

/// The keys of one campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignKeys {
    /// Campaign definition and counters.
    pub meta: String,
    /// Remaining stock.
    pub stock: String,
    /// Buyers and how many they reserved.
    pub buyers: String,
    /// Unpaid reservations: order id → user.
    pub orders: String,
    /// Reservation stream.
    pub stream: String,
    /// Dead-letter stream.
    pub dead: String,
    /// Last error per pending entry.
    pub errors: String,
    /// `{seckill:<keyspace>:<campaign>}`.
    tag: String,
}

impl CampaignKeys {
    /// The keys of `campaign` in `keyspace`.
    pub fn new(keyspace: &str, campaign: &str) -> Self {
        let tag = format!("{{seckill:{keyspace}:{campaign}}}");
        Self {
            meta: format!("{tag}:meta"),
            stock: format!("{tag}:stock"),
            buyers: format!("{tag}:buyers"),
            orders: format!("{tag}:orders"),
            stream: format!("{tag}:reservations"),
            dead: format!("{tag}:dead"),
            errors: format!("{tag}:errors"),
            tag,
        }
    }

    /// The record of `user`'s `Idempotency-Key` `key` on this campaign: the order id its
    /// reservation got. The subject's length comes first, so no two (user, key) pairs share a
    /// name whatever characters they hold; the campaign's hash tag keeps it in the reservation
    /// script's slot on Redis Cluster.
    pub fn idempotency(&self, user: &str, key: &str) -> String {
        format!("{}:idem:{}:{user}:{key}", self.tag, user.len())
    }

    /// `user`'s attempt-rate record at this campaign (GCRA: the theoretical arrival time of
    /// their next attempt; it expires a second after they slow down). Named like
    /// [`CampaignKeys::idempotency`], in the campaign's hash tag, so the reservation script
    /// checks the rate in the same call.
    pub fn attempts(&self, user: &str) -> String {
        format!("{}:attempts:{}:{user}", self.tag, user.len())
    }

    /// Every key of the campaign, for commands that treat them alike (expiry, clean-up).
    pub fn all(&self) -> [&str; 7] {
        [
            &self.meta,
            &self.stock,
            &self.buyers,
            &self.orders,
            &self.stream,
            &self.dead,
            &self.errors,
        ]
    }
}

/// The set of campaign ids whose reservation streams ordering reads.
pub fn registry_key(keyspace: &str) -> String {
    format!("{{seckill:{keyspace}}}:campaigns")
}

/// One reservation: a buyer won a voucher; ordering makes it an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The order id to create (UUIDv7).
    pub order_id: Uuid,
    /// The buyer's subject.
    pub user: String,
    /// The campaign.
    pub campaign: String,
    /// What the buyer pays, minor units.
    pub price_minor: i64,
    /// ISO 4217 currency.
    pub currency: String,
    /// When it was reserved (Unix ms).
    pub reserved_at_ms: i64,
}

/// A stream entry that is not a reservation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed reservation: {0}")]
pub struct MalformedReservation(pub String);

impl Reservation {
    /// Reads a reservation from a stream entry's fields.
    pub fn parse(fields: &BTreeMap<String, String>) -> Result<Self, MalformedReservation> {
        let get = |name: &str| {
            fields
                .get(name)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| MalformedReservation(format!("field `{name}` is missing")))
        };
        let order_id = get(FIELD_ORDER)?;
        let order_id = Uuid::parse_str(order_id)
            .map_err(|_| MalformedReservation(format!("`{order_id}` is not an order id")))?;
        let price = get(FIELD_PRICE)?;
        let price_minor = price
            .parse::<i64>()
            .ok()
            .filter(|p| *p >= 0)
            .ok_or_else(|| MalformedReservation(format!("price `{price}` is not an amount")))?;
        let at = get(FIELD_AT)?;
        let reserved_at_ms = at
            .parse::<i64>()
            .map_err(|_| MalformedReservation(format!("`{at}` is not a time in ms")))?;
        let currency = get(FIELD_CURRENCY)?;
        if pulse_kit::config::currency_minor_digits(currency).is_none() {
            return Err(MalformedReservation(format!(
                "`{currency}` is not a currency"
            )));
        }
        Ok(Self {
            order_id,
            user: get(FIELD_USER)?.clone(),
            campaign: get(FIELD_CAMPAIGN)?.clone(),
            price_minor,
            currency: currency.clone(),
            reserved_at_ms,
        })
    }

    /// The entry's fields, in the order the reservation script writes them.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            (FIELD_ORDER, self.order_id.to_string()),
            (FIELD_USER, self.user.clone()),
            (FIELD_CAMPAIGN, self.campaign.clone()),
            (FIELD_PRICE, self.price_minor.to_string()),
            (FIELD_CURRENCY, self.currency.clone()),
            (FIELD_AT, self.reserved_at_ms.to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_a_campaign_share_one_hash_tag() {
        let keys = CampaignKeys::new("fr", "pulse-fr/summer");
        for key in keys.all() {
            assert!(key.starts_with("{seckill:fr:pulse-fr/summer}:"), "{key}");
        }
        assert_ne!(registry_key("fr"), registry_key("de"));
        let record = keys.idempotency("alice:x", "k");
        assert_eq!(record, "{seckill:fr:pulse-fr/summer}:idem:7:alice:x:k");
        assert_ne!(record, keys.idempotency("alice", "x:k"));
    }

    #[test]
    fn reservations_round_trip_and_bad_ones_say_why() {
        let reservation = Reservation {
            order_id: Uuid::now_v7(),
            user: "alice".into(),
            campaign: "c1".into(),
            price_minor: 990,
            currency: "EUR".into(),
            reserved_at_ms: 1_750_000_000_000,
        };
        let fields: BTreeMap<String, String> = reservation
            .fields()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(Reservation::parse(&fields), Ok(reservation));
        let mut bad = fields.clone();
        bad.insert(FIELD_ORDER.into(), "nope".into());
        assert!(
            Reservation::parse(&bad)
                .expect_err("bad id")
                .0
                .contains("nope")
        );
        let mut bad = fields.clone();
        bad.remove(FIELD_USER);
        assert!(
            Reservation::parse(&bad)
                .expect_err("no user")
                .0
                .contains("user")
        );
        let mut bad = fields;
        bad.insert(FIELD_PRICE.into(), "-1".into());
        assert!(Reservation::parse(&bad).is_err());
    }
}
