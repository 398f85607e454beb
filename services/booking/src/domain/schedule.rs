//! Weekly schedules and the slots they generate in the country's time zone.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use pulse_kit::config::{CountryConfig, Weekday};
use serde::{Deserialize, Serialize};

use super::Invalid;
use super::time::{local_day, resolve};

/// A working range within a day, local time, `start < end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkingRange {
    /// Start, `HH:MM`.
    #[serde(with = "hhmm")]
    #[schema(schema_with = hhmm::schema, example = "09:00")]
    pub start: NaiveTime,
    /// End (exclusive), `HH:MM`.
    #[serde(with = "hhmm")]
    #[schema(schema_with = hhmm::schema, example = "12:30")]
    pub end: NaiveTime,
}

/// A whole day off (holiday, leave).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DayOff {
    /// The local date.
    #[schema(value_type = String, format = Date, example = "2026-12-25")]
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
    #[schema(schema_with = slot_minutes_schema)]
    pub slot_minutes: u16,
    /// Working ranges per weekday; a missing day is not worked.
    #[schema(schema_with = weekly_schema)]
    pub weekly: BTreeMap<Weekday, Vec<WorkingRange>>,
    /// Days off.
    #[serde(default)]
    #[schema(schema_with = exceptions_schema)]
    pub exceptions: Vec<DayOff>,
}

/// Most working ranges in one day.
const MAX_RANGES_PER_DAY: usize = 12;

/// `weekly`: the days by their names (`Mon` … `Sun`), each at most [`MAX_RANGES_PER_DAY`]
/// ranges; no other key.
fn weekly_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ArrayBuilder, ObjectBuilder};
    let mut object = ObjectBuilder::new()
        .description(Some(
            "Working ranges per weekday; a missing day is not worked",
        ))
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    for day in Weekday::ALL {
        object = object.property(
            day.name(),
            ArrayBuilder::new()
                .items(utoipa::openapi::Ref::from_schema_name("WorkingRange"))
                .max_items(Some(MAX_RANGES_PER_DAY)),
        );
    }
    object.build()
}

/// Slot lengths `parse` accepts, in minutes.
const SLOT_MINUTES: std::ops::RangeInclusive<u16> = 5..=240;
/// Most days off one schedule holds.
const MAX_DAYS_OFF: usize = 400;

fn slot_minutes_schema() -> utoipa::openapi::schema::Object {
    pulse_kit::openapi::integer_schema(
        i64::from(*SLOT_MINUTES.start()),
        i64::from(*SLOT_MINUTES.end()),
        "Length of one slot in minutes",
    )
}

fn exceptions_schema() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(utoipa::openapi::Ref::from_schema_name("DayOff"))
        .max_items(Some(MAX_DAYS_OFF))
        .description(Some("Days off"))
        .build()
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

    fn is_day_off(&self, date: NaiveDate) -> bool {
        self.exceptions.iter().any(|e| e.date == date)
    }
}

/// A [`Schedule`] that passed its checks; only [`ValidSchedule::parse`] makes one, so slot
/// generation can rely on it (a slot length of zero would never end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidSchedule(Schedule);

impl ValidSchedule {
    /// Checks the slot length (5 to 240 minutes), each day's ranges (ordered, not overlapping, at
    /// most 12) and the number of days off.
    pub fn parse(schedule: Schedule) -> Result<Self, Invalid> {
        if !SLOT_MINUTES.contains(&schedule.slot_minutes) {
            return Err(Invalid::new(
                "slotMinutes",
                format!(
                    "must be between {} and {}",
                    SLOT_MINUTES.start(),
                    SLOT_MINUTES.end()
                ),
            ));
        }
        for (day, ranges) in &schedule.weekly {
            let mut sorted = ranges.clone();
            sorted.sort_by_key(|r| r.start);
            for (i, range) in sorted.iter().enumerate() {
                if range.start >= range.end {
                    return Err(Invalid::combination(
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
                    return Err(Invalid::combination(
                        format!("weekly.{day:?}"),
                        "ranges overlap",
                    ));
                }
            }
            if ranges.len() > MAX_RANGES_PER_DAY {
                return Err(Invalid::new(
                    format!("weekly.{day:?}"),
                    format!("at most {MAX_RANGES_PER_DAY} ranges per day"),
                ));
            }
        }
        if schedule.exceptions.len() > MAX_DAYS_OFF {
            return Err(Invalid::new(
                "exceptions",
                format!("at most {MAX_DAYS_OFF} days off"),
            ));
        }
        Ok(Self(schedule))
    }

    /// The schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.0
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

/// Slots of `schedule` on the local dates `from..=to` in time zone `tz`. Slots follow real time:
/// on a spring-forward day a range crossing the gap has an hour fewer, on a fall-back day an
/// hour more; every slot lasts exactly `slot_minutes`.
pub fn generate_slots(
    schedule: &ValidSchedule,
    tz: Tz,
    from: NaiveDate,
    to: NaiveDate,
) -> Vec<SlotTime> {
    let schedule = schedule.schedule();
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

/// The slots `schedule` publishes from `now` to the last bookable day `until`, in the future
/// only.
pub fn future_slots(
    schedule: &ValidSchedule,
    tz: Tz,
    now: DateTime<Utc>,
    until: NaiveDate,
) -> Vec<SlotTime> {
    let mut slots = generate_slots(schedule, tz, local_day(now, tz), until);
    slots.retain(|s| s.starts_at > now);
    slots
}

mod hhmm {
    use chrono::NaiveTime;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &NaiveTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&time.format("%H:%M").to_string())
    }

    /// What [`deserialize`] accepts: hours 0–23 (one or two digits), two-digit minutes.
    pub const PATTERN: &str = "^([01]?[0-9]|2[0-3]):[0-5][0-9]$";

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveTime, D::Error> {
        let text = String::deserialize(d)?;
        NaiveTime::parse_from_str(&text, "%H:%M")
            .map_err(|_| serde::de::Error::custom(format!("`{text}` is not a time HH:MM")))
    }

    /// The schema of a time `HH:MM`.
    pub fn schema() -> utoipa::openapi::schema::Object {
        use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .pattern(Some(PATTERN))
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::local_rfc3339;

    /// Slots of a valid `schedule` in Paris.
    fn paris_slots(schedule: &Schedule, from: NaiveDate, to: NaiveDate) -> Vec<SlotTime> {
        let schedule = ValidSchedule::parse(schedule.clone()).expect("valid schedule");
        generate_slots(&schedule, chrono_tz::Europe::Paris, from, to)
    }

    /// One range `start`–`end` every day.
    fn daily(start: NaiveTime, end: NaiveTime, slot_minutes: u16) -> Schedule {
        every_day(vec![WorkingRange { start, end }], slot_minutes)
    }

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
        let slots = paris_slots(&schedule, date(2026, 6, 1), date(2026, 6, 2));
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
        let day = daily(hm(9, 0), hm(10, 0), 30);
        let slots = paris_slots(&day, date(2026, 3, 28), date(2026, 3, 29));
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
        let night = daily(hm(1, 0), hm(4, 0), 30);
        let slots = paris_slots(&night, date(2026, 3, 29), date(2026, 3, 29));
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
        let gap = daily(hm(2, 30), hm(4, 0), 30);
        let slots = paris_slots(&gap, date(2026, 3, 29), date(2026, 3, 29));
        assert_eq!(
            local_starts(&slots),
            vec!["2026-03-29T03:00:00+02:00", "2026-03-29T03:30:00+02:00"]
        );
    }

    #[test]
    fn fall_back_day_in_paris() {
        // 2026-10-25: clocks go back from 03:00 to 02:00 (+02:00 → +01:00).
        let day = daily(hm(9, 0), hm(10, 0), 60);
        let slots = paris_slots(&day, date(2026, 10, 24), date(2026, 10, 25));
        assert_eq!(
            local_starts(&slots),
            vec!["2026-10-24T09:00:00+02:00", "2026-10-25T09:00:00+01:00"]
        );
        assert_eq!(slots[1].starts_at.to_rfc3339(), "2026-10-25T08:00:00+00:00");
        // 01:00–04:00 local is four real hours: 02:00 and 02:30 happen twice.
        let night = daily(hm(1, 0), hm(4, 0), 30);
        let slots = paris_slots(&night, date(2026, 10, 25), date(2026, 10, 25));
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
        let mut schedule = daily(hm(9, 0), hm(12, 0), 30);
        assert!(ValidSchedule::parse(schedule.clone()).is_ok());
        schedule.slot_minutes = 2;
        assert_eq!(
            ValidSchedule::parse(schedule.clone())
                .expect_err("short")
                .field,
            "slotMinutes"
        );
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
            ValidSchedule::parse(overlapping)
                .expect_err("overlap")
                .message
                .contains("overlap")
        );
        let backwards = daily(hm(12, 0), hm(9, 0), 30);
        assert!(ValidSchedule::parse(backwards.clone()).is_err());
    }
}
