//! What booking's flows share: their error, and the hook each write runs inside its transaction.

use pulse_kit::outbox::OutboxError;
use sqlx::PgConnection;
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

/// Work that must commit with a flow's changes, or not at all.
///
/// Every write of a flow runs in one transaction, shaped `begin → work → hook → commit`: the
/// hook runs after the flow's own writes and its outbox event, just before `COMMIT`, with what
/// the flow is about to return. The request's idempotency record belongs here, so a crash can
/// never keep a booking without its record, or a record without its booking. A failing hook
/// rolls the whole flow back.
pub trait BeforeCommit<T>: Send {
    /// Runs on the flow's transaction.
    fn run(
        self,
        tx: &mut PgConnection,
        outcome: &T,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
}

/// Nothing to add to a flow's transaction.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHook;

impl<T: Sync> BeforeCommit<T> for NoHook {
    async fn run(self, _tx: &mut PgConnection, _outcome: &T) -> Result<(), sqlx::Error> {
        Ok(())
    }
}
