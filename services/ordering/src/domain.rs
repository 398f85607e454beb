//! Ordering's rules, without I/O: order kinds and statuses, which transitions are allowed, and
//! the amounts of an order.

use serde::{Deserialize, Serialize};

/// Largest quantity of one order line.
pub const MAX_QUANTITY: u32 = 100;
/// Largest amount accepted anywhere, in minor units.
pub const MAX_AMOUNT_MINOR: i64 = 100_000_000_000;

/// What an order buys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderKind {
    /// A voucher won in a seckill campaign.
    Seckill,
    /// Products at the normal price.
    Product,
}

impl OrderKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Seckill => "SECKILL",
            Self::Product => "PRODUCT",
        }
    }

    /// Parses the stored name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "SECKILL" => Some(Self::Seckill),
            "PRODUCT" => Some(Self::Product),
            _ => None,
        }
    }
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    /// Created, waiting for the payment (until its deadline).
    PendingPayment,
    /// Paid.
    Paid,
    /// Cancelled (unpaid in time, or by its buyer); its stock was given back.
    Cancelled,
    /// Paid, then refunded.
    Refunded,
}

impl OrderStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingPayment => "PENDING_PAYMENT",
            Self::Paid => "PAID",
            Self::Cancelled => "CANCELLED",
            Self::Refunded => "REFUNDED",
        }
    }

    /// Parses the stored name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "PENDING_PAYMENT" => Some(Self::PendingPayment),
            "PAID" => Some(Self::Paid),
            "CANCELLED" => Some(Self::Cancelled),
            "REFUNDED" => Some(Self::Refunded),
            _ => None,
        }
    }
}

/// Something that happens to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The payment succeeded.
    Pay,
    /// The order is cancelled (timeout or buyer).
    Cancel,
    /// The payment was refunded.
    Refund,
}

/// What applying a transition means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The order moves to this status (and an event is published).
    Moves(OrderStatus),
    /// Already there: nothing changes (a repeated request or event).
    AlreadyDone,
    /// Not possible from the current status.
    Refused,
}

/// The state machine: `PENDING_PAYMENT → PAID → REFUNDED`, `PENDING_PAYMENT → CANCELLED`.
pub fn apply(current: OrderStatus, transition: Transition) -> Outcome {
    use OrderStatus::*;
    match (current, transition) {
        (PendingPayment, Transition::Pay) => Outcome::Moves(Paid),
        (PendingPayment, Transition::Cancel) => Outcome::Moves(Cancelled),
        (Paid, Transition::Refund) => Outcome::Moves(Refunded),
        (Paid, Transition::Pay)
        | (Cancelled, Transition::Cancel)
        | (Refunded, Transition::Refund)
        | (Refunded, Transition::Pay) => Outcome::AlreadyDone,
        _ => Outcome::Refused,
    }
}

/// The amounts of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amounts {
    /// Price of one unit.
    pub unit_price_minor: i64,
    /// Units.
    pub quantity: u32,
    /// unit × quantity.
    pub subtotal_minor: i64,
    /// What a voucher takes off (at most the subtotal).
    pub discount_minor: i64,
    /// What the buyer pays: subtotal − discount.
    pub amount_minor: i64,
}

/// An amount that does not add up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AmountError(pub String);

/// Computes an order's amounts; the discount is capped at the subtotal.
pub fn amounts(
    unit_price_minor: i64,
    quantity: u32,
    discount_minor: i64,
) -> Result<Amounts, AmountError> {
    if !(1..=MAX_QUANTITY).contains(&quantity) {
        return Err(AmountError(format!(
            "quantity must be from 1 to {MAX_QUANTITY}"
        )));
    }
    if unit_price_minor < 0 || discount_minor < 0 {
        return Err(AmountError("amounts cannot be negative".into()));
    }
    let subtotal_minor = unit_price_minor
        .checked_mul(i64::from(quantity))
        .filter(|s| *s <= MAX_AMOUNT_MINOR)
        .ok_or_else(|| AmountError("the order total is too large".into()))?;
    let discount_minor = discount_minor.min(subtotal_minor);
    Ok(Amounts {
        unit_price_minor,
        quantity,
        subtotal_minor,
        discount_minor,
        amount_minor: subtotal_minor - discount_minor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_machine_allows_only_the_documented_moves() {
        use OrderStatus::*;
        assert_eq!(apply(PendingPayment, Transition::Pay), Outcome::Moves(Paid));
        assert_eq!(
            apply(PendingPayment, Transition::Cancel),
            Outcome::Moves(Cancelled)
        );
        assert_eq!(apply(Paid, Transition::Refund), Outcome::Moves(Refunded));
        assert_eq!(apply(Paid, Transition::Pay), Outcome::AlreadyDone);
        assert_eq!(apply(Cancelled, Transition::Cancel), Outcome::AlreadyDone);
        assert_eq!(apply(Refunded, Transition::Refund), Outcome::AlreadyDone);
        assert_eq!(apply(Paid, Transition::Cancel), Outcome::Refused);
        assert_eq!(apply(Cancelled, Transition::Pay), Outcome::Refused);
        assert_eq!(apply(PendingPayment, Transition::Refund), Outcome::Refused);
        assert_eq!(apply(Cancelled, Transition::Refund), Outcome::Refused);
    }

    #[test]
    fn names_round_trip() {
        for s in [
            OrderStatus::PendingPayment,
            OrderStatus::Paid,
            OrderStatus::Cancelled,
            OrderStatus::Refunded,
        ] {
            assert_eq!(OrderStatus::parse(s.as_str()), Some(s));
        }
        for k in [OrderKind::Seckill, OrderKind::Product] {
            assert_eq!(OrderKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(OrderStatus::parse("paid"), None);
    }

    #[test]
    fn amounts_add_up_and_the_discount_is_capped() {
        let a = amounts(1250, 3, 1000).expect("ok");
        assert_eq!(
            (a.subtotal_minor, a.discount_minor, a.amount_minor),
            (3750, 1000, 2750)
        );
        let a = amounts(500, 1, 1000).expect("ok");
        assert_eq!((a.discount_minor, a.amount_minor), (500, 0));
        assert!(amounts(100, 0, 0).is_err());
        assert!(amounts(100, MAX_QUANTITY + 1, 0).is_err());
        assert!(amounts(-1, 1, 0).is_err());
        assert!(amounts(i64::MAX, 2, 0).is_err());
    }
}
