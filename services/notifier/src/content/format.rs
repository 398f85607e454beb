//! Pure formatting of the facts messages show: instants in the country's time zone with their
//! UTC offset and localised day and month names, and money in the country's number format.
//!
//! Written by hand rather than with a locale library because notifications only need three
//! languages and a handful of number styles, and the output must be exactly predictable.

use chrono::{DateTime, Datelike, Offset, Timelike, Utc, Weekday};
use chrono_tz::Tz;

use crate::domain::Language;

/// Day names, Monday first, in full then abbreviated.
fn weekday_names(language: Language) -> ([&'static str; 7], [&'static str; 7]) {
    match language {
        Language::Fr => (
            [
                "lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche",
            ],
            ["lun.", "mar.", "mer.", "jeu.", "ven.", "sam.", "dim."],
        ),
        Language::De => (
            [
                "Montag",
                "Dienstag",
                "Mittwoch",
                "Donnerstag",
                "Freitag",
                "Samstag",
                "Sonntag",
            ],
            ["Mo.", "Di.", "Mi.", "Do.", "Fr.", "Sa.", "So."],
        ),
        Language::En => (
            [
                "Monday",
                "Tuesday",
                "Wednesday",
                "Thursday",
                "Friday",
                "Saturday",
                "Sunday",
            ],
            ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
        ),
    }
}

/// Month names, January first, in full then abbreviated.
fn month_names(language: Language) -> ([&'static str; 12], [&'static str; 12]) {
    match language {
        Language::Fr => (
            [
                "janvier",
                "février",
                "mars",
                "avril",
                "mai",
                "juin",
                "juillet",
                "août",
                "septembre",
                "octobre",
                "novembre",
                "décembre",
            ],
            [
                "janv.", "févr.", "mars", "avr.", "mai", "juin", "juil.", "août", "sept.", "oct.",
                "nov.", "déc.",
            ],
        ),
        Language::De => (
            [
                "Januar",
                "Februar",
                "März",
                "April",
                "Mai",
                "Juni",
                "Juli",
                "August",
                "September",
                "Oktober",
                "November",
                "Dezember",
            ],
            [
                "Jan.", "Feb.", "März", "Apr.", "Mai", "Juni", "Juli", "Aug.", "Sept.", "Okt.",
                "Nov.", "Dez.",
            ],
        ),
        Language::En => (
            [
                "January",
                "February",
                "March",
                "April",
                "May",
                "June",
                "July",
                "August",
                "September",
                "October",
                "November",
                "December",
            ],
            [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ],
        ),
    }
}

fn weekday_index(day: Weekday) -> usize {
    day.num_days_from_monday() as usize
}

/// An instant as the recipient's clock shows it, split into the parts every format needs.
struct Local {
    weekday: usize,
    day: u32,
    month: usize,
    year: i32,
    hour: u32,
    minute: u32,
    offset: String,
}

impl Local {
    fn of(at: DateTime<Utc>, tz: Tz) -> Self {
        let local = at.with_timezone(&tz);
        Self {
            weekday: weekday_index(local.weekday()),
            day: local.day(),
            month: local.month0() as usize,
            year: local.year(),
            hour: local.hour(),
            minute: local.minute(),
            offset: utc_offset(local.offset().fix().local_minus_utc()),
        }
    }

    /// The day of the month as written in `language`: French writes the first `1er`.
    fn day(&self, language: Language) -> String {
        match (language, self.day) {
            (Language::Fr, 1) => "1er".to_owned(),
            (Language::De, day) => format!("{day}."),
            (_, day) => day.to_string(),
        }
    }
}

/// `UTC+01:00`, `UTC-03:30`, `UTC+00:00` for an offset in seconds east of UTC.
pub fn utc_offset(seconds_east: i32) -> String {
    let sign = if seconds_east < 0 { '-' } else { '+' };
    let minutes = seconds_east.unsigned_abs() / 60;
    format!("UTC{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

/// The instant in full, in `tz`, with its UTC offset: `mardi 3 mars 2026 à 14:30 (UTC+01:00)`,
/// `Dienstag, 3. März 2026 um 14:30 (UTC+01:00)`, `Tuesday 3 March 2026 at 14:30 (UTC+01:00)`.
pub fn long_datetime(at: DateTime<Utc>, tz: Tz, language: Language) -> String {
    let l = Local::of(at, tz);
    let weekday = weekday_names(language).0[l.weekday];
    let month = month_names(language).0[l.month];
    let day = l.day(language);
    let (year, hour, minute, offset) = (l.year, l.hour, l.minute, &l.offset);
    match language {
        Language::Fr => {
            format!("{weekday} {day} {month} {year} à {hour:02}:{minute:02} ({offset})")
        }
        Language::De => {
            format!("{weekday}, {day} {month} {year} um {hour:02}:{minute:02} ({offset})")
        }
        Language::En => {
            format!("{weekday} {day} {month} {year} at {hour:02}:{minute:02} ({offset})")
        }
    }
}

/// The instant abbreviated for SMS and in-app text, still with its UTC offset:
/// `mar. 3 mars 2026, 14:30 (UTC+01:00)`, `Di., 3. März 2026, 14:30 (UTC+01:00)`,
/// `Tue 3 Mar 2026, 14:30 (UTC+01:00)`.
pub fn short_datetime(at: DateTime<Utc>, tz: Tz, language: Language) -> String {
    let l = Local::of(at, tz);
    let weekday = weekday_names(language).1[l.weekday];
    let month = month_names(language).1[l.month];
    let day = l.day(language);
    let (year, hour, minute, offset) = (l.year, l.hour, l.minute, &l.offset);
    match language {
        Language::De => {
            format!("{weekday}, {day} {month} {year}, {hour:02}:{minute:02} ({offset})")
        }
        Language::Fr | Language::En => {
            format!("{weekday} {day} {month} {year}, {hour:02}:{minute:02} ({offset})")
        }
    }
}

/// The local time of day only, with its UTC offset: `14:30 (UTC+01:00)`.
pub fn time_of_day(at: DateTime<Utc>, tz: Tz) -> String {
    let l = Local::of(at, tz);
    format!("{:02}:{:02} ({})", l.hour, l.minute, l.offset)
}

/// `amount_minor` minor units of `currency` as readers in `locale` write it (see
/// [`pulse_kit::money::format`]): `1 234,50 €` (fr), `£1,234.50` (en-GB); spaces are no-break
/// so amounts never wrap.
pub fn money(amount_minor: i64, currency: &str, locale: &str) -> String {
    pulse_kit::money::format(amount_minor, currency, locale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().expect("RFC 3339")
    }

    /// Spaces made visible so expectations are readable.
    fn visible(s: &str) -> String {
        s.replace('\u{a0}', "_").replace('\u{202f}', "^")
    }

    const PARIS: Tz = chrono_tz::Europe::Paris;

    #[test]
    fn paris_winter_in_every_language() {
        let at = utc("2026-03-03T13:30:00Z");
        assert_eq!(
            long_datetime(at, PARIS, Language::Fr),
            "mardi 3 mars 2026 à 14:30 (UTC+01:00)"
        );
        assert_eq!(
            long_datetime(at, PARIS, Language::De),
            "Dienstag, 3. März 2026 um 14:30 (UTC+01:00)"
        );
        assert_eq!(
            long_datetime(at, PARIS, Language::En),
            "Tuesday 3 March 2026 at 14:30 (UTC+01:00)"
        );
        assert_eq!(
            short_datetime(at, PARIS, Language::Fr),
            "mar. 3 mars 2026, 14:30 (UTC+01:00)"
        );
        assert_eq!(
            short_datetime(at, PARIS, Language::De),
            "Di., 3. März 2026, 14:30 (UTC+01:00)"
        );
        assert_eq!(
            short_datetime(at, PARIS, Language::En),
            "Tue 3 Mar 2026, 14:30 (UTC+01:00)"
        );
        assert_eq!(time_of_day(at, PARIS), "14:30 (UTC+01:00)");
    }

    #[test]
    fn summer_time_shows_the_summer_offset() {
        // 29 March 2026 02:00 Paris springs forward: 01:30 UTC is 03:30 local.
        assert_eq!(
            long_datetime(utc("2026-03-29T01:30:00Z"), PARIS, Language::Fr),
            "dimanche 29 mars 2026 à 03:30 (UTC+02:00)"
        );
        assert_eq!(
            long_datetime(utc("2026-07-14T08:05:00Z"), PARIS, Language::En),
            "Tuesday 14 July 2026 at 10:05 (UTC+02:00)"
        );
        // Back to winter time after 25 October 2026 03:00 local.
        assert_eq!(
            time_of_day(utc("2026-10-25T01:30:00Z"), PARIS),
            "02:30 (UTC+01:00)"
        );
    }

    #[test]
    fn other_zones_and_the_local_date() {
        let berlin = chrono_tz::Europe::Berlin;
        assert_eq!(
            long_datetime(utc("2026-08-01T06:00:00Z"), berlin, Language::De),
            "Samstag, 1. August 2026 um 08:00 (UTC+02:00)"
        );
        let london = chrono_tz::Europe::London;
        assert_eq!(
            long_datetime(utc("2026-01-05T09:15:00Z"), london, Language::En),
            "Monday 5 January 2026 at 09:15 (UTC+00:00)"
        );
        assert_eq!(
            long_datetime(utc("2026-06-05T09:15:00Z"), london, Language::En),
            "Friday 5 June 2026 at 10:15 (UTC+01:00)"
        );
        // Late evening UTC is already the next day in Paris; French writes the first `1er`.
        assert_eq!(
            long_datetime(utc("2026-02-28T23:30:00Z"), PARIS, Language::Fr),
            "dimanche 1er mars 2026 à 00:30 (UTC+01:00)"
        );
        // West of UTC and half-hour offsets.
        assert_eq!(
            time_of_day(utc("2026-01-05T12:00:00Z"), chrono_tz::America::St_Johns),
            "08:30 (UTC-03:30)"
        );
        assert_eq!(utc_offset(0), "UTC+00:00");
        assert_eq!(utc_offset(19_800), "UTC+05:30");
    }

    #[test]
    fn money_in_each_country_style() {
        assert_eq!(visible(&money(123_450, "EUR", "fr-FR")), "1^234,50_€");
        assert_eq!(visible(&money(123_450, "EUR", "de-DE")), "1.234,50_€");
        assert_eq!(visible(&money(123_450, "EUR", "de-AT")), "1.234,50_€");
        assert_eq!(money(123_450, "GBP", "en-GB"), "£1,234.50");
        assert_eq!(money(123_450, "USD", "en-US"), "$1,234.50");
        assert_eq!(money(123_450, "USD", "en-GB"), "US$1,234.50");
        assert_eq!(money(1_234, "JPY", "en-US"), "¥1,234");
        assert_eq!(visible(&money(1_234, "JPY", "fr-FR")), "1^234_¥");
    }

    #[test]
    fn money_without_a_symbol_shows_the_code_consistently() {
        assert_eq!(visible(&money(123_450, "CHF", "fr-FR")), "1^234,50_CHF");
        assert_eq!(visible(&money(123_450, "CHF", "en-GB")), "CHF_1,234.50");
        // Three minor digits.
        assert_eq!(visible(&money(1_234_567, "KWD", "en-GB")), "KWD_1,234.567");
        // An unknown code keeps two digits.
        assert_eq!(visible(&money(990, "XYZ", "de-DE")), "9,90_XYZ");
    }

    #[test]
    fn grouping_and_small_amounts() {
        assert_eq!(money(0, "EUR", "en-GB"), "€0.00");
        assert_eq!(money(5, "EUR", "en-GB"), "€0.05");
        assert_eq!(money(99_999, "GBP", "en-GB"), "£999.99");
        assert_eq!(money(100_000, "GBP", "en-GB"), "£1,000.00");
        assert_eq!(
            visible(&money(12_345_678_900, "EUR", "fr-FR")),
            "123^456^789,00_€"
        );
        assert_eq!(money(1_000_000, "JPY", "en-US"), "¥1,000,000");
        // Never expected, but must not panic or lose the sign.
        assert_eq!(money(-150, "GBP", "en-GB"), "-£1.50");
    }
}
