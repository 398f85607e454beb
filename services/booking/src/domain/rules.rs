//! The country's booking rules, and who may manage an appointment.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use pulse_kit::config::BookingRules;

use super::time::local_day;

/// Why a booking or cancellation is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleViolation {
    /// The slot starts too soon.
    #[error("this slot starts too soon: book at least {min_notice_minutes} minutes ahead")]
    TooSoon {
        /// The country's minimum notice.
        min_notice_minutes: u32,
    },
    /// The slot is beyond the booking horizon.
    #[error("this slot is too far ahead: bookings open {horizon_days} days in advance")]
    BeyondHorizon {
        /// The country's horizon.
        horizon_days: u32,
    },
    /// The patient already has the maximum number of appointments that day.
    #[error("you already have {max} appointment(s) on {day}, the most allowed per day")]
    DailyLimit {
        /// The limit.
        max: u32,
        /// The local day.
        day: NaiveDate,
    },
    /// Too late to cancel.
    #[error("appointments can be cancelled up to {cutoff_minutes} minutes before they start")]
    CancellationTooLate {
        /// The country's cut-off.
        cutoff_minutes: u32,
    },
    /// The appointment has already started or is over.
    #[error("this appointment has already started")]
    AlreadyStarted,
}

/// The earliest start a slot booked `now` may have (the country's minimum notice).
pub fn earliest_start(rules: &BookingRules, now: DateTime<Utc>) -> DateTime<Utc> {
    now + Duration::minutes(i64::from(rules.min_notice_minutes))
}

/// The last local day that can be booked `now` (the country's horizon); slots are published up
/// to it.
pub fn last_bookable_day(rules: &BookingRules, tz: Tz, now: DateTime<Utc>) -> NaiveDate {
    local_day(now, tz) + Duration::days(i64::from(rules.horizon_days))
}

/// Checks the rules the slot's start decides for a booking made `now`: the minimum notice and
/// the horizon. The daily limit depends on the patient's other bookings: the store counts them
/// under the patient's lock and writes the booking only below [`daily_limit`]; when it does
/// not, [`daily_limit_reached`] says why.
pub fn check_booking(
    rules: &BookingRules,
    tz: Tz,
    now: DateTime<Utc>,
    starts_at: DateTime<Utc>,
) -> Result<(), RuleViolation> {
    if starts_at < earliest_start(rules, now) {
        return Err(RuleViolation::TooSoon {
            min_notice_minutes: rules.min_notice_minutes,
        });
    }
    if local_day(starts_at, tz) > last_bookable_day(rules, tz, now) {
        return Err(RuleViolation::BeyondHorizon {
            horizon_days: rules.horizon_days,
        });
    }
    Ok(())
}

/// How many active appointments a patient may have on one local day: a booking is written
/// only while the patient has fewer that day.
pub fn daily_limit(rules: &BookingRules) -> u32 {
    rules.max_appointments_per_patient_per_day
}

/// The refusal of a booking on `day`, where the patient has [`daily_limit`] active
/// appointments already.
pub fn daily_limit_reached(rules: &BookingRules, day: NaiveDate) -> RuleViolation {
    RuleViolation::DailyLimit {
        max: daily_limit(rules),
        day,
    }
}

/// Checks whether an appointment starting at `starts_at` may be cancelled now. Practitioners
/// may cancel their own agenda until the start; patients until the country's cut-off.
pub fn check_cancellation(
    rules: &BookingRules,
    now: DateTime<Utc>,
    starts_at: DateTime<Utc>,
    by_practitioner: bool,
) -> Result<(), RuleViolation> {
    if starts_at <= now {
        return Err(RuleViolation::AlreadyStarted);
    }
    if !by_practitioner
        && starts_at < now + Duration::minutes(i64::from(rules.cancellation_cutoff_minutes))
    {
        return Err(RuleViolation::CancellationTooLate {
            cutoff_minutes: rules.cancellation_cutoff_minutes,
        });
    }
    Ok(())
}

/// Who is looking at or changing an appointment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A patient: only their own appointments, before the cut-off.
    Patient(String),
    /// A practitioner (by account subject): their own agenda, until the start.
    Practitioner(String),
    /// An admin: anything, until the start.
    Admin(String),
}

impl Actor {
    /// The actor's JWT subject.
    pub fn subject(&self) -> &str {
        match self {
            Actor::Patient(s) | Actor::Practitioner(s) | Actor::Admin(s) => s,
        }
    }

    /// Whether the actor may see and change an appointment of `patient` with the practitioner
    /// whose account is `practitioner_account`. Anyone else is told it does not exist.
    pub fn may_manage(&self, patient: &str, practitioner_account: Option<&str>) -> bool {
        match self {
            Actor::Admin(_) => true,
            Actor::Patient(subject) => patient == subject,
            Actor::Practitioner(subject) => practitioner_account == Some(subject.as_str()),
        }
    }

    /// Whether the actor cancels as the practitioner's side (until the start, past the
    /// patients' cut-off).
    pub fn cancels_for_the_practice(&self) -> bool {
        !matches!(self, Actor::Patient(_))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn rules() -> BookingRules {
        BookingRules {
            min_notice_minutes: 120,
            cancellation_cutoff_minutes: 1440,
            max_appointments_per_patient_per_day: 1,
            horizon_days: 60,
        }
    }

    #[test]
    fn booking_rules() {
        let tz = chrono_tz::Europe::Paris;
        let now = Utc
            .with_ymd_and_hms(2026, 6, 1, 8, 0, 0)
            .single()
            .expect("now");
        assert!(check_booking(&rules(), tz, now, now + Duration::hours(3)).is_ok());
        assert_eq!(
            check_booking(&rules(), tz, now, now + Duration::minutes(90)),
            Err(RuleViolation::TooSoon {
                min_notice_minutes: 120
            })
        );
        assert_eq!(
            check_booking(&rules(), tz, now, now + Duration::days(61)),
            Err(RuleViolation::BeyondHorizon { horizon_days: 60 })
        );
        let day = local_day(now + Duration::hours(3), tz);
        assert_eq!(
            daily_limit_reached(&rules(), day),
            RuleViolation::DailyLimit { max: 1, day }
        );
        assert_eq!(
            daily_limit_reached(&rules(), day).to_string(),
            "you already have 1 appointment(s) on 2026-06-01, the most allowed per day"
        );
    }

    #[test]
    fn cancellation_rules() {
        let now = Utc
            .with_ymd_and_hms(2026, 6, 1, 8, 0, 0)
            .single()
            .expect("now");
        assert!(check_cancellation(&rules(), now, now + Duration::days(2), false).is_ok());
        assert_eq!(
            check_cancellation(&rules(), now, now + Duration::hours(5), false),
            Err(RuleViolation::CancellationTooLate {
                cutoff_minutes: 1440
            })
        );
        assert!(check_cancellation(&rules(), now, now + Duration::hours(5), true).is_ok());
        assert_eq!(
            check_cancellation(&rules(), now, now - Duration::hours(1), true),
            Err(RuleViolation::AlreadyStarted)
        );
    }

    #[test]
    fn who_may_manage_an_appointment() {
        let patient = Actor::Patient("p1".into());
        assert!(patient.may_manage("p1", Some("doc")));
        assert!(!patient.may_manage("p2", Some("doc")));
        let doctor = Actor::Practitioner("doc".into());
        assert!(doctor.may_manage("p1", Some("doc")));
        assert!(!doctor.may_manage("p1", Some("other")));
        assert!(!doctor.may_manage("p1", None));
        assert!(Actor::Admin("a".into()).may_manage("p1", None));
        assert!(!patient.cancels_for_the_practice());
        assert!(doctor.cancels_for_the_practice());
    }
}
