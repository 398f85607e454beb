//! Ordering's rules, without I/O: order kinds and statuses, which transitions are allowed, the
//! amounts of an order, and the request values that must be checked before anything is done.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Gives a closed set of names stored as text (a column, an event field) its `as_str`, `parse`,
/// `Display`, and its PostgreSQL encoding as `TEXT`. A stored name that is not in the set fails
/// to decode instead of becoming some other value.
macro_rules! stored_as_text {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The stored name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name),+
                }
            }

            /// Parses the stored name.
            pub fn parse(text: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == text)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl sqlx::Type<sqlx::Postgres> for $ty {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }

            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl sqlx::Encode<'_, sqlx::Postgres> for $ty {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $ty {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                Self::parse(text).ok_or_else(|| {
                    format!("`{text}` is not a known {}", stringify!($ty)).into()
                })
            }
        }
    };
}

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

stored_as_text!(OrderKind {
    Seckill => "SECKILL",
    Product => "PRODUCT",
});

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

stored_as_text!(OrderStatus {
    PendingPayment => "PENDING_PAYMENT",
    Paid => "PAID",
    Cancelled => "CANCELLED",
    Refunded => "REFUNDED",
});

impl OrderStatus {
    /// The status of a new order: paid at once when there is nothing to pay.
    pub fn of_new_order(amount_minor: i64) -> Self {
        if amount_minor == 0 {
            Self::Paid
        } else {
            Self::PendingPayment
        }
    }
}

/// Why an order was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CancelReason {
    /// Not paid before its deadline (the sweeper).
    PaymentTimeout,
    /// Its buyer cancelled it.
    CancelledByBuyer,
}

stored_as_text!(CancelReason {
    PaymentTimeout => "payment-timeout",
    CancelledByBuyer => "cancelled-by-buyer",
});

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

impl Transition {
    /// What doing it is called in messages (`paying`).
    pub fn gerund(self) -> &'static str {
        match self {
            Self::Pay => "paying",
            Self::Cancel => "cancelling",
            Self::Refund => "refunding",
        }
    }
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.gerund())
    }
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

impl Amounts {
    /// One unit at `price_minor`, nothing taken off (a seckill order: its price was checked
    /// when the campaign was made).
    pub fn single(price_minor: i64) -> Self {
        Self {
            unit_price_minor: price_minor,
            quantity: 1,
            subtotal_minor: price_minor,
            discount_minor: 0,
            amount_minor: price_minor,
        }
    }
}

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

/// A request value that breaks a rule: the field, and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidInput {
    /// The field (as the client names it).
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

impl InvalidInput {
    /// `field` is wrong: `message`.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// Longest product name, in characters.
pub const MAX_PRODUCT_NAME: usize = 200;
/// Most units of one product in stock (it is stored as a PostgreSQL `integer`).
pub const MAX_STOCK: u32 = i32::MAX as u32;

/// A product's name, price and stock, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductDraft {
    /// Name, trimmed, 1 to 200 characters.
    pub name: String,
    /// Price in minor units, from 0 to [`MAX_AMOUNT_MINOR`].
    pub price_minor: i64,
    /// Units in stock.
    pub stock: i32,
}

impl ProductDraft {
    /// Checks a product's values.
    pub fn parse(name: &str, price_minor: i64, stock: u32) -> Result<Self, InvalidInput> {
        let Some(name) = pulse_kit::text::checked(name, MAX_PRODUCT_NAME) else {
            return Err(InvalidInput::new(
                "name",
                format!("name: must be 1 to {MAX_PRODUCT_NAME} characters, not blank"),
            ));
        };
        if !(0..=MAX_AMOUNT_MINOR).contains(&price_minor) {
            return Err(InvalidInput::new(
                "priceMinor",
                format!("priceMinor: must be from 0 to {MAX_AMOUNT_MINOR}"),
            ));
        }
        let stock = i32::try_from(stock)
            .ok()
            .filter(|_| stock <= MAX_STOCK)
            .ok_or_else(|| {
                InvalidInput::new("stock", format!("stock: must be at most {MAX_STOCK}"))
            })?;
        Ok(Self {
            name: name.to_owned(),
            price_minor,
            stock,
        })
    }
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
        for r in CancelReason::ALL {
            assert_eq!(CancelReason::parse(r.as_str()), Some(*r));
            // The stored name is the JSON name.
            assert_eq!(
                serde_json::to_value(r).ok(),
                Some(serde_json::Value::from(r.as_str()))
            );
        }
    }

    #[test]
    fn product_values_are_checked_field_by_field() {
        let draft = ProductDraft::parse("  Lamp ", 1500, 3).expect("ok");
        assert_eq!(
            (draft.name.as_str(), draft.price_minor, draft.stock),
            ("Lamp", 1500, 3)
        );
        for (name, price, stock, field) in [
            (" ", 1, 1, "name"),
            ("x", -1, 1, "priceMinor"),
            ("x", MAX_AMOUNT_MINOR + 1, 1, "priceMinor"),
            ("x", 1, u32::MAX, "stock"),
        ] {
            let err = ProductDraft::parse(name, price, stock).expect_err(field);
            assert_eq!(err.field, field);
            assert!(err.message.starts_with(field), "{err}");
        }
        assert!(ProductDraft::parse(&"x".repeat(201), 1, 1).is_err());
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
