//! Booking rules, free of I/O: schedules, slot generation in the country's time zone, and the
//! checks a booking or a cancellation must pass.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use pulse_kit::config::{BookingRules, CountryConfig, Weekday};
use serde::{Deserialize, Serialize};

/// A working range within a day, local time, `start < end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkingRange {
    /// Start, `HH:MM`.
    #[serde(with = "hhmm")]
    #[schema(value_type = String, example = "09:00")]
    pub start: NaiveTime,
    /// End (exclusive), `HH:MM`.
    #[serde(with = "hhmm")]
    #[schema(value_type = String, example = "12:30")]
    pub end: NaiveTime,
}

/// A whole day off (holiday, leave).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DayOff {
    /// The local date.
    #[schema(value_type = String, example = "2026-12-25")]
    pub date: NaiveDate,
    /// Why (shown to no one but admins).
    #[serde(default)]
    pub reason: String,
}

/// A practitioner's weekly schedule. Breaks are the gaps between a day's ranges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// Length of one slot in minutes (5 to 240).
    pub slot_minutes: u16,
    /// Working ranges per weekday; a missing day is not worked.
    #[schema(value_type = BTreeMap<String, Vec<WorkingRange>>)]
    pub weekly: BTreeMap<Weekday, Vec<WorkingRange>>,
    /// Days off.
    #[serde(default)]
    pub exceptions: Vec<DayOff>,
}

/// Why an input is invalid: the field and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// The offending field.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        message: message.into(),
    }
}

impl Schedule {
    /// The country's usual week: its working days and hours, with `slot_minutes` slots.
    pub fn country_default(country: &CountryConfig, slot_minutes: u16) -> Self {
        let opens = country.working_hours.opens().unwrap_or(NaiveTime::MIN);
        let closes = country.working_hours.closes().unwrap_or(NaiveTime::MIN);
        let weekly = country
            .working_days
            .iter()
            .map(|day| {
                (
                    *day,
                    vec![WorkingRange {
                        start: opens,
                        end: closes,
                    }],
                )
            })
            .collect();
        Self {
            slot_minutes,
            weekly,
            exceptions: Vec::new(),
        }
    }

    /// Checks lengths, ordering and overlaps.
    pub fn validate(&self) -> Result<(), Invalid> {
        if !(5..=240).contains(&self.slot_minutes) {
            return Err(invalid("slotMinutes", "must be between 5 and 240"));
        }
        for (day, ranges) in &self.weekly {
            let mut sorted = ranges.clone();
            sorted.sort_by_key(|r| r.start);
            for (i, range) in sorted.iter().enumerate() {
                if range.start >= range.end {
                    return Err(invalid(
                        format!("weekly.{day:?}"),
                        format!(
                            "range {}–{} must end after it starts",
                            range.start.format("%H:%M"),
                            range.end.format("%H:%M")
                        ),
                    ));
                }
                if let Some(next) = sorted.get(i + 1)
                    && next.start < range.end
                {
                    return Err(invalid(format!("weekly.{day:?}"), "ranges overlap"));
                }
            }
            if ranges.len() > 12 {
                return Err(invalid(
                    format!("weekly.{day:?}"),
                    "at most 12 ranges per day",
                ));
            }
        }
        if self.exceptions.len() > 400 {
            return Err(invalid("exceptions", "at most 400 days off"));
        }
        Ok(())
    }

    fn is_day_off(&self, date: NaiveDate) -> bool {
        self.exceptions.iter().any(|e| e.date == date)
    }
}

/// A slot's real interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SlotTime {
    /// Start (UTC).
    pub starts_at: DateTime<Utc>,
    /// End (UTC).
    pub ends_at: DateTime<Utc>,
}

/// The instant a local wall-clock time denotes. A time skipped by a spring-forward change is
/// moved past the gap; a time repeated by a fall-back change takes its first occurrence for a
/// start (`earliest`) and its second for an end.
fn resolve(tz: Tz, date: NaiveDate, time: NaiveTime, earliest: bool) -> Option<DateTime<Utc>> {
    let local = date.and_time(time);
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, second) => {
            Some(if earliest { first } else { second }.with_timezone(&Utc))
        }
        LocalResult::None => {
            // Inside a gap: the first valid minute after it.
            (1..=180).find_map(
                |m| match tz.from_local_datetime(&(local + Duration::minutes(m))) {
                    LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
                    LocalResult::Ambiguous(t, _) => Some(t.with_timezone(&Utc)),
                    LocalResult::None => None,
                },
            )
        }
    }
}

/// Slots of `schedule` on the local dates `from..=to` in time zone `tz`. Slots follow real time:
/// on a spring-forward day a range crossing the gap has an hour fewer, on a fall-back day an
/// hour more; every slot lasts exactly `slot_minutes`.
pub fn generate_slots(
    schedule: &Schedule,
    tz: Tz,
    from: NaiveDate,
    to: NaiveDate,
) -> Vec<SlotTime> {
    let length = Duration::minutes(i64::from(schedule.slot_minutes));
    let mut out = Vec::new();
    let mut date = from;
    while date <= to {
        if !schedule.is_day_off(date) {
            let weekday = weekday_of(date);
            for range in schedule
                .weekly
                .get(&weekday)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let (Some(start), Some(end)) = (
                    resolve(tz, date, range.start, true),
                    resolve(tz, date, range.end, false),
                ) else {
                    continue;
                };
                let mut at = start;
                while at + length <= end {
                    out.push(SlotTime {
                        starts_at: at,
                        ends_at: at + length,
                    });
                    at += length;
                }
            }
        }
        let Some(next) = date.succ_opt() else { break };
        date = next;
    }
    out.sort();
    out.dedup();
    out
}

/// The country weekday of a date.
pub fn weekday_of(date: NaiveDate) -> Weekday {
    match date.weekday() {
        chrono::Weekday::Mon => Weekday::Mon,
        chrono::Weekday::Tue => Weekday::Tue,
        chrono::Weekday::Wed => Weekday::Wed,
        chrono::Weekday::Thu => Weekday::Thu,
        chrono::Weekday::Fri => Weekday::Fri,
        chrono::Weekday::Sat => Weekday::Sat,
        chrono::Weekday::Sun => Weekday::Sun,
    }
}

/// The local date of an instant.
pub fn local_day(at: DateTime<Utc>, tz: Tz) -> NaiveDate {
    at.with_timezone(&tz).date_naive()
}

/// An instant in the country's time zone, RFC 3339 with its offset (`2026-03-29T09:00:00+02:00`).
pub fn local_rfc3339(at: DateTime<Utc>, tz: Tz) -> String {
    at.with_timezone(&tz)
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

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

/// Checks the country's rules for booking a slot starting at `starts_at`, given how many active
/// appointments the patient already has on that local day.
pub fn check_booking(
    rules: &BookingRules,
    tz: Tz,
    now: DateTime<Utc>,
    starts_at: DateTime<Utc>,
    active_that_day: u32,
) -> Result<(), RuleViolation> {
    if starts_at < now + Duration::minutes(i64::from(rules.min_notice_minutes)) {
        return Err(RuleViolation::TooSoon {
            min_notice_minutes: rules.min_notice_minutes,
        });
    }
    let last_day = local_day(now, tz) + Duration::days(i64::from(rules.horizon_days));
    if local_day(starts_at, tz) > last_day {
        return Err(RuleViolation::BeyondHorizon {
            horizon_days: rules.horizon_days,
        });
    }
    if active_that_day >= rules.max_appointments_per_patient_per_day {
        return Err(RuleViolation::DailyLimit {
            max: rules.max_appointments_per_patient_per_day,
            day: local_day(starts_at, tz),
        });
    }
    Ok(())
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

mod hhmm {
    use chrono::NaiveTime;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &NaiveTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&time.format("%H:%M").to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveTime, D::Error> {
        let text = String::deserialize(d)?;
        NaiveTime::parse_from_str(&text, "%H:%M")
            .map_err(|_| serde::de::Error::custom(format!("`{text}` is not a time HH:MM")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hm(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).expect("time")
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("date")
    }

    fn every_day(ranges: Vec<WorkingRange>, slot_minutes: u16) -> Schedule {
        use Weekday::*;
        Schedule {
            slot_minutes,
            weekly: [Mon, Tue, Wed, Thu, Fri, Sat, Sun]
                .into_iter()
                .map(|d| (d, ranges.clone()))
                .collect(),
            exceptions: vec![],
        }
    }

    fn local_starts(slots: &[SlotTime]) -> Vec<String> {
        slots
            .iter()
            .map(|s| local_rfc3339(s.starts_at, chrono_tz::Europe::Paris))
            .collect()
    }

    #[test]
    fn breaks_and_days_off_have_no_slots() {
        let mut schedule = every_day(
            vec![
                WorkingRange {
                    start: hm(9, 0),
                    end: hm(10, 0),
                },
                WorkingRange {
                    start: hm(14, 0),
                    end: hm(15, 0),
                },
            ],
            30,
        );
        schedule.exceptions.push(DayOff {
            date: date(2026, 6, 2),
            reason: "holiday".into(),
        });
        let slots = generate_slots(
            &schedule,
            chrono_tz::Europe::Paris,
            date(2026, 6, 1),
            date(2026, 6, 2),
        );
        assert_eq!(
            local_starts(&slots),
            vec![
                "2026-06-01T09:00:00+02:00",
                "2026-06-01T09:30:00+02:00",
                "2026-06-01T14:00:00+02:00",
                "2026-06-01T14:30:00+02:00",
            ]
        );
    }

    #[test]
    fn spring_forward_day_in_paris() {
        // 2026-03-29: clocks jump from 02:00 to 03:00 (+01:00 → +02:00).
        let day = every_day(
            vec![WorkingRange {
                start: hm(9, 0),
                end: hm(10, 0),
            }],
            30,
        );
        let slots = generate_slots(
            &day,
            chrono_tz::Europe::Paris,
            date(2026, 3, 28),
            date(2026, 3, 29),
        );
        assert_eq!(
            local_starts(&slots),
            vec![
                "2026-03-28T09:00:00+01:00",
                "2026-03-28T09:30:00+01:00",
                "2026-03-29T09:00:00+02:00",
                "2026-03-29T09:30:00+02:00",
            ]
        );
        assert_eq!(slots[2].starts_at.to_rfc3339(), "2026-03-29T07:00:00+00:00");
        // A night range across the gap: 01:00–04:00 local is two real hours.
        let night = every_day(
            vec![WorkingRange {
                start: hm(1, 0),
                end: hm(4, 0),
            }],
            30,
        );
        let slots = generate_slots(
            &night,
            chrono_tz::Europe::Paris,
            date(2026, 3, 29),
            date(2026, 3, 29),
        );
        assert_eq!(
            local_starts(&slots),
            vec![
                "2026-03-29T01:00:00+01:00",
                "2026-03-29T01:30:00+01:00",
                "2026-03-29T03:00:00+02:00",
                "2026-03-29T03:30:00+02:00",
            ]
        );
        // A range starting inside the gap starts when the clock resumes.
        let gap = every_day(
            vec![WorkingRange {
                start: hm(2, 30),
                end: hm(4, 0),
            }],
            30,
        );
        let slots = generate_slots(
            &gap,
            chrono_tz::Europe::Paris,
            date(2026, 3, 29),
            date(2026, 3, 29),
        );
        assert_eq!(
            local_starts(&slots),
            vec!["2026-03-29T03:00:00+02:00", "2026-03-29T03:30:00+02:00"]
        );
    }

    #[test]
    fn fall_back_day_in_paris() {
        // 2026-10-25: clocks go back from 03:00 to 02:00 (+02:00 → +01:00).
        let day = every_day(
            vec![WorkingRange {
                start: hm(9, 0),
                end: hm(10, 0),
            }],
            60,
        );
        let slots = generate_slots(
            &day,
            chrono_tz::Europe::Paris,
            date(2026, 10, 24),
            date(2026, 10, 25),
        );
        assert_eq!(
            local_starts(&slots),
            vec!["2026-10-24T09:00:00+02:00", "2026-10-25T09:00:00+01:00"]
        );
        assert_eq!(slots[1].starts_at.to_rfc3339(), "2026-10-25T08:00:00+00:00");
        // 01:00–04:00 local is four real hours: 02:00 and 02:30 happen twice.
        let night = every_day(
            vec![WorkingRange {
                start: hm(1, 0),
                end: hm(4, 0),
            }],
            30,
        );
        let slots = generate_slots(
            &night,
            chrono_tz::Europe::Paris,
            date(2026, 10, 25),
            date(2026, 10, 25),
        );
        assert_eq!(
            local_starts(&slots),
            vec![
                "2026-10-25T01:00:00+02:00",
                "2026-10-25T01:30:00+02:00",
                "2026-10-25T02:00:00+02:00",
                "2026-10-25T02:30:00+02:00",
                "2026-10-25T02:00:00+01:00",
                "2026-10-25T02:30:00+01:00",
                "2026-10-25T03:00:00+01:00",
                "2026-10-25T03:30:00+01:00",
            ]
        );
        assert!(
            slots
                .windows(2)
                .all(|w| w[1].starts_at - w[0].starts_at == Duration::minutes(30))
        );
    }

    #[test]
    fn schedules_are_validated() {
        let mut schedule = every_day(
            vec![WorkingRange {
                start: hm(9, 0),
                end: hm(12, 0),
            }],
            30,
        );
        assert!(schedule.validate().is_ok());
        schedule.slot_minutes = 2;
        assert_eq!(schedule.validate().expect_err("short").field, "slotMinutes");
        let overlapping = every_day(
            vec![
                WorkingRange {
                    start: hm(9, 0),
                    end: hm(12, 0),
                },
                WorkingRange {
                    start: hm(11, 0),
                    end: hm(13, 0),
                },
            ],
            30,
        );
        assert!(
            overlapping
                .validate()
                .expect_err("overlap")
                .message
                .contains("overlap")
        );
        let backwards = every_day(
            vec![WorkingRange {
                start: hm(12, 0),
                end: hm(9, 0),
            }],
            30,
        );
        assert!(backwards.validate().is_err());
    }

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
        assert!(check_booking(&rules(), tz, now, now + Duration::hours(3), 0).is_ok());
        assert_eq!(
            check_booking(&rules(), tz, now, now + Duration::minutes(90), 0),
            Err(RuleViolation::TooSoon {
                min_notice_minutes: 120
            })
        );
        assert_eq!(
            check_booking(&rules(), tz, now, now + Duration::days(61), 0),
            Err(RuleViolation::BeyondHorizon { horizon_days: 60 })
        );
        assert!(matches!(
            check_booking(&rules(), tz, now, now + Duration::hours(3), 1),
            Err(RuleViolation::DailyLimit { max: 1, .. })
        ));
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
}
