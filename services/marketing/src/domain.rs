//! Marketing's rules, without I/O: what a valid campaign is, which phase it is in, what a voucher
//! takes off an order and whether it can be used.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Longest campaign id (a Kubernetes `<namespace>/<name>` fits).
pub const MAX_CAMPAIGN_ID_LEN: usize = 300;
/// Largest stock of one campaign.
pub const MAX_STOCK: u32 = 10_000_000;
/// Largest per-user limit.
pub const MAX_PER_USER_LIMIT: u32 = 1000;
/// Largest amount accepted anywhere, in minor units.
pub const MAX_AMOUNT_MINOR: i64 = 100_000_000_000;

/// A field that does not hold a usable value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// The field (as the API names it).
    pub field: String,
    /// What to fix.
    pub message: String,
    /// The field is valid by itself but does not go with another one (see
    /// `pulse_kit::problem::Problem::invalid_combination`).
    pub combination: bool,
}

fn invalid(field: &str, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.to_owned(),
        message: message.into(),
        combination: false,
    }
}

/// What [`check_campaign_id`] accepts, as a pattern (with `maxLength` [`MAX_CAMPAIGN_ID_LEN`]).
pub const CAMPAIGN_ID_PATTERN: &str = "^[A-Za-z0-9._-]([A-Za-z0-9._/-]*[A-Za-z0-9._-])?$";

/// Longest voucher title, in characters.
pub const MAX_VOUCHER_TITLE: usize = 200;

/// Checks a campaign id: 1 to 300 characters among `A-Z a-z 0-9 - _ . /`, not starting or ending
/// with `/`. (No `{`/`}`: the id goes inside a Redis hash tag.)
pub fn check_campaign_id(id: &str) -> Result<(), Invalid> {
    let ok = !id.is_empty()
        && id.len() <= MAX_CAMPAIGN_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
        && !id.starts_with('/')
        && !id.ends_with('/');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "campaignId",
            format!(
                "`{id}` is not a campaign id: use 1 to {MAX_CAMPAIGN_ID_LEN} characters among A-Z a-z 0-9 - _ . / (like `pulse-fr/summer-sale` or a UUID)"
            ),
        ))
    }
}

/// Checks an ISO 4217 code's shape and that Pulse knows it.
pub fn check_currency(field: &str, code: &str) -> Result<(), Invalid> {
    if pulse_kit::config::currency_minor_digits(code).is_some() {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("`{code}` is not an ISO 4217 currency code like `EUR`"),
        ))
    }
}

/// What an admin (or the operator) says a campaign is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignSpec {
    /// Id (see [`check_campaign_id`]).
    pub id: String,
    /// Title of the voucher.
    pub voucher_title: String,
    /// Value of the voucher, minor units.
    pub voucher_value_minor: i64,
    /// ISO 4217 code of value and price.
    pub currency: String,
    /// Price of the voucher, minor units.
    pub price_minor: i64,
    /// Total stock.
    pub stock: u32,
    /// Vouchers one user may buy.
    pub per_user_limit: u32,
    /// Start of the sale (inclusive).
    pub starts_at: DateTime<Utc>,
    /// End of the sale (exclusive).
    pub ends_at: DateTime<Utc>,
}

impl CampaignSpec {
    /// Checks every field; the title is trimmed.
    pub fn validated(mut self) -> Result<Self, Invalid> {
        check_campaign_id(&self.id)?;
        let Some(title) = pulse_kit::text::checked(&self.voucher_title, MAX_VOUCHER_TITLE) else {
            return Err(invalid(
                "voucherTitle",
                format!("must be 1 to {MAX_VOUCHER_TITLE} characters, not blank"),
            ));
        };
        self.voucher_title = title.to_owned();
        if !(1..=MAX_AMOUNT_MINOR).contains(&self.voucher_value_minor) {
            return Err(invalid(
                "voucherValueMinor",
                format!("must be from 1 to {MAX_AMOUNT_MINOR} (minor units)"),
            ));
        }
        check_currency("currency", &self.currency)?;
        if !(0..=MAX_AMOUNT_MINOR).contains(&self.price_minor) {
            return Err(invalid(
                "priceMinor",
                format!("must be from 0 to {MAX_AMOUNT_MINOR} (minor units)"),
            ));
        }
        if !(1..=MAX_STOCK).contains(&self.stock) {
            return Err(invalid("stock", format!("must be from 1 to {MAX_STOCK}")));
        }
        if self.per_user_limit == 0 {
            self.per_user_limit = 1;
        }
        if self.per_user_limit > MAX_PER_USER_LIMIT {
            return Err(invalid(
                "perUserLimit",
                format!("must be from 1 to {MAX_PER_USER_LIMIT}"),
            ));
        }
        if self.ends_at <= self.starts_at {
            return Err(Invalid {
                combination: true,
                ..invalid("endsAt", "must be after startsAt")
            });
        }
        Ok(self)
    }
}

/// Where a campaign is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Phase {
    /// Not started yet.
    Scheduled,
    /// On sale.
    Active,
    /// On sale, nothing left.
    SoldOut,
    /// Over (its end passed, or it was closed).
    Ended,
}

/// The phase at `now` of a campaign with `remaining` stock.
pub fn phase(
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    closed: bool,
    remaining: u32,
    now: DateTime<Utc>,
) -> Phase {
    if closed || now >= ends_at {
        Phase::Ended
    } else if now < starts_at {
        Phase::Scheduled
    } else if remaining == 0 {
        Phase::SoldOut
    } else {
        Phase::Active
    }
}

/// Where a voucher is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VoucherStatus {
    /// In the wallet, usable.
    Available,
    /// Held for an order being placed.
    Held,
    /// Used by an order.
    Used,
    /// Taken back (its purchase was refunded).
    Revoked,
}

impl VoucherStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Available => "AVAILABLE",
            Self::Held => "HELD",
            Self::Used => "USED",
            Self::Revoked => "REVOKED",
        }
    }

    /// Parses the stored name.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "AVAILABLE" => Self::Available,
            "HELD" => Self::Held,
            "USED" => Self::Used,
            "REVOKED" => Self::Revoked,
            _ => return None,
        })
    }
}

/// Why a voucher cannot pay part of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// No such voucher.
    #[error("no such voucher")]
    NotFound,
    /// Someone else's.
    #[error("the voucher belongs to someone else")]
    NotOwner,
    /// Held by another order, used or revoked.
    #[error("the voucher is not available (already used, held by another order, or revoked)")]
    NotAvailable,
    /// Other currency than the order's.
    #[error("the voucher is in another currency than the order")]
    CurrencyMismatch,
}

/// The facts about a voucher the rules need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoucherFacts<'a> {
    /// Owner's subject.
    pub owner: &'a str,
    /// Status.
    pub status: VoucherStatus,
    /// The order holding or using it.
    pub order: Option<uuid::Uuid>,
    /// Value, minor units.
    pub value_minor: i64,
    /// Currency.
    pub currency: &'a str,
}

/// What the voucher takes off an order of `amount_minor` for `user` (paying with `order`, when
/// known: a voucher already held by that same order stays usable by it).
pub fn discount(
    voucher: &VoucherFacts<'_>,
    user: &str,
    order: Option<uuid::Uuid>,
    amount_minor: i64,
    currency: &str,
) -> Result<i64, Rejection> {
    if voucher.owner != user {
        return Err(Rejection::NotOwner);
    }
    let usable = match voucher.status {
        VoucherStatus::Available => true,
        VoucherStatus::Held | VoucherStatus::Used => order.is_some() && voucher.order == order,
        VoucherStatus::Revoked => false,
    };
    if !usable {
        return Err(Rejection::NotAvailable);
    }
    if voucher.currency != currency {
        return Err(Rejection::CurrencyMismatch);
    }
    Ok(voucher.value_minor.min(amount_minor.max(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_campaign_id_is_what_check_campaign_id_accepts() {
        use utoipa::PartialSchema;
        let schema =
            serde_json::to_value(crate::http::schemas::CampaignId::schema()).expect("schema");
        let validator = jsonschema::validator_for(&schema).expect("a valid schema");
        for id in [
            "pulse-fr/summer-sale".to_owned(),
            "a".to_owned(),
            "0f8fad5b-d9cb-469f-a165-70867728950e".to_owned(),
            "a.b_c-d/e".to_owned(),
            String::new(),
            "/a".to_owned(),
            "a/".to_owned(),
            "/".to_owned(),
            "a b".to_owned(),
            "{tag}".to_owned(),
            "é".to_owned(),
            "x".repeat(MAX_CAMPAIGN_ID_LEN),
            "x".repeat(MAX_CAMPAIGN_ID_LEN + 1),
        ] {
            assert_eq!(
                validator.is_valid(&serde_json::Value::String(id.clone())),
                check_campaign_id(&id).is_ok(),
                "{id:?}"
            );
        }
    }
    use chrono::TimeZone;

    fn at(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, h, 0, 0)
            .single()
            .expect("time")
    }

    fn spec() -> CampaignSpec {
        CampaignSpec {
            id: "pulse-fr/summer-sale".into(),
            voucher_title: "  10 € off  ".into(),
            voucher_value_minor: 1000,
            currency: "EUR".into(),
            price_minor: 100,
            stock: 100,
            per_user_limit: 0,
            starts_at: at(10),
            ends_at: at(12),
        }
    }

    #[test]
    fn campaign_ids_are_checked() {
        for ok in [
            "pulse-fr/summer-sale",
            "0192f0c4-aaaa-7bbb-8ccc-0123456789ab",
            "a",
            "A.b_c",
        ] {
            assert!(check_campaign_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/x", "x/", "a b", "{x}", "é", &"x".repeat(301)] {
            assert!(check_campaign_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn specs_are_validated_and_normalised() {
        let valid = spec().validated().expect("valid");
        assert_eq!(valid.voucher_title, "10 € off");
        assert_eq!(valid.per_user_limit, 1, "0 means the default");
        type Change = Box<dyn Fn(&mut CampaignSpec)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|s| s.voucher_title = " ".into()), "voucherTitle"),
            (Box::new(|s| s.voucher_value_minor = 0), "voucherValueMinor"),
            (Box::new(|s| s.currency = "EURO".into()), "currency"),
            (Box::new(|s| s.price_minor = -1), "priceMinor"),
            (Box::new(|s| s.stock = 0), "stock"),
            (Box::new(|s| s.stock = MAX_STOCK + 1), "stock"),
            (Box::new(|s| s.per_user_limit = 1001), "perUserLimit"),
            (Box::new(|s| s.ends_at = s.starts_at), "endsAt"),
            (Box::new(|s| s.id = "a b".into()), "campaignId"),
        ];
        for (change, field) in cases {
            let mut s = spec();
            change(&mut s);
            assert_eq!(s.validated().expect_err(field).field, field);
        }
    }

    #[test]
    fn phases_follow_the_window_the_stock_and_closing() {
        let (start, end) = (at(10), at(12));
        assert_eq!(phase(start, end, false, 5, at(9)), Phase::Scheduled);
        assert_eq!(phase(start, end, false, 5, at(10)), Phase::Active);
        assert_eq!(phase(start, end, false, 0, at(11)), Phase::SoldOut);
        assert_eq!(
            phase(start, end, false, 5, at(12)),
            Phase::Ended,
            "the end is exclusive"
        );
        assert_eq!(phase(start, end, true, 5, at(11)), Phase::Ended);
        assert_eq!(phase(start, end, true, 5, at(9)), Phase::Ended);
    }

    #[test]
    fn vouchers_take_off_at_most_the_order_and_only_for_their_owner() {
        let order = uuid::Uuid::now_v7();
        let mut v = VoucherFacts {
            owner: "alice",
            status: VoucherStatus::Available,
            order: None,
            value_minor: 1000,
            currency: "EUR",
        };
        assert_eq!(discount(&v, "alice", None, 2500, "EUR"), Ok(1000));
        assert_eq!(discount(&v, "alice", None, 600, "EUR"), Ok(600));
        assert_eq!(
            discount(&v, "bob", None, 600, "EUR"),
            Err(Rejection::NotOwner)
        );
        assert_eq!(
            discount(&v, "alice", None, 600, "USD"),
            Err(Rejection::CurrencyMismatch)
        );
        v.status = VoucherStatus::Held;
        v.order = Some(order);
        assert_eq!(
            discount(&v, "alice", None, 600, "EUR"),
            Err(Rejection::NotAvailable)
        );
        assert_eq!(discount(&v, "alice", Some(order), 600, "EUR"), Ok(600));
        assert_eq!(
            discount(&v, "alice", Some(uuid::Uuid::now_v7()), 600, "EUR"),
            Err(Rejection::NotAvailable)
        );
        v.status = VoucherStatus::Revoked;
        assert_eq!(
            discount(&v, "alice", Some(order), 600, "EUR"),
            Err(Rejection::NotAvailable)
        );
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            VoucherStatus::Available,
            VoucherStatus::Held,
            VoucherStatus::Used,
            VoucherStatus::Revoked,
        ] {
            assert_eq!(VoucherStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(VoucherStatus::parse("x"), None);
    }
}
