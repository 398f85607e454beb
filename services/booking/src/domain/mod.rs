//! Booking's rules and the types that parse its input, free of I/O.
//!
//! Input is parsed once, at the edge, into types that cannot hold a bad value ("parse, don't
//! validate"): a [`PractitionerProfile`], a [`ValidSchedule`], a [`SearchQuery`] or a
//! [`SlotRange`] has passed every check, so the flows and the store never check again. The rules
//! a booking or a cancellation must pass are plain functions of their inputs.

mod practitioner;
mod query;
mod rules;
mod schedule;
mod status;
mod time;

pub use practitioner::{
    Position, Practitioner, PractitionerDraft, PractitionerInput, PractitionerProfile,
};
pub use query::{
    MAX_PAGE_SIZE, MAX_SLOT_RANGE_DAYS, SearchParams, SearchQuery, SlotParams, SlotRange,
    parse_uuid,
};
pub use rules::{
    Actor, RuleViolation, check_booking, check_cancellation, daily_limit, daily_limit_reached,
    earliest_start, last_bookable_day,
};
pub use schedule::{
    DayOff, Schedule, SlotTime, ValidSchedule, WorkingRange, future_slots, generate_slots,
    weekday_of,
};
pub use status::{AppointmentStatus, SlotStatus, UnknownStatus};
pub use time::{local_day, local_midnight, local_rfc3339};

/// Why an input is invalid: the field and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// The offending field.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// The field is valid by itself but does not go with another one (see
    /// `pulse_kit::problem::Problem::invalid_combination`).
    pub combination: bool,
}

impl Invalid {
    /// `field` is wrong: `message` says how.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            combination: false,
        }
    }

    /// `field` is valid by itself but does not go with another: `message` says how.
    pub fn combination(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            combination: true,
            ..Self::new(field, message)
        }
    }
}
