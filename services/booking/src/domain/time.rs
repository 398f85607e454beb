//! Instants and the country's local calendar.

use chrono::{DateTime, Duration, LocalResult, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

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

/// The instant a local day starts (when a DST change skips midnight, the first instant after the
/// gap).
pub fn local_midnight(day: NaiveDate, tz: Tz) -> DateTime<Utc> {
    resolve(tz, day, NaiveTime::MIN, true).unwrap_or_else(|| day.and_time(NaiveTime::MIN).and_utc())
}

/// The instant a local wall-clock time denotes. A time skipped by a spring-forward change is
/// moved past the gap; a time repeated by a fall-back change takes its first occurrence for a
/// start (`earliest`) and its second for an end.
pub(super) fn resolve(
    tz: Tz,
    date: NaiveDate,
    time: NaiveTime,
    earliest: bool,
) -> Option<DateTime<Utc>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_midnight_in_paris() {
        let day = NaiveDate::from_ymd_opt(2026, 3, 29).expect("date");
        assert_eq!(
            local_midnight(day, chrono_tz::Europe::Paris).to_rfc3339(),
            "2026-03-28T23:00:00+00:00"
        );
    }

    #[test]
    fn a_skipped_midnight_starts_the_day_after_the_gap() {
        // Santiago springs forward at midnight: 2026-09-06 starts at 01:00 local (-03:00).
        let day = NaiveDate::from_ymd_opt(2026, 9, 6).expect("date");
        assert_eq!(
            local_midnight(day, chrono_tz::America::Santiago).to_rfc3339(),
            "2026-09-06T04:00:00+00:00"
        );
    }
}
