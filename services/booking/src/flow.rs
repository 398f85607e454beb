//! What booking's flows share: their error, [`BookingError`], and one shape. Each flow service
//! ([`crate::appointments`], [`crate::practitioners`]) owns its transactions: every write is one
//! function shaped `begin → work → hook → commit`, the hook being the caller's
//! [`BeforeCommit`](pulse_kit::idempotency::BeforeCommit) (the kit's trait; the request's
//! idempotency record goes there), so an effect and its answer commit together or not at all.

use pulse_kit::outbox::OutboxError;
use uuid::Uuid;

use crate::domain::{Invalid, RuleViolation};

/// What can go wrong in a booking operation.
#[derive(Debug, thiserror::Error)]
pub enum BookingError {
    /// No such slot.
    #[error("slot {0} does not exist")]
    SlotNotFound(Uuid),
    /// No such practitioner.
    #[error("practitioner {0} does not exist")]
    PractitionerNotFound(Uuid),
    /// The slot is booked already.
    #[error("this slot has just been booked by someone else; pick another one")]
    SlotTaken,
    /// Someone else holds the slot's short lock: they are booking it right now.
    #[error("someone else is booking this slot right now; pick another one or retry shortly")]
    SlotBeingBooked,
    /// No such appointment (or not the caller's).
    #[error("appointment {0} does not exist")]
    AppointmentNotFound(Uuid),
    /// Another practitioner is already linked to this account.
    #[error(
        "account `{0}` already belongs to another practitioner; one account is one practitioner"
    )]
    AccountTaken(String),
    /// The appointment is not active any more.
    #[error("appointment {0} is already cancelled")]
    NotActive(Uuid),
    /// A country rule refuses it.
    #[error(transparent)]
    Rule(#[from] RuleViolation),
    /// Invalid input.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// Database failure.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Outbox failure.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}
