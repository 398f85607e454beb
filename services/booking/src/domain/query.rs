//! Query parameters (all text, so every mistake gets a clear message) and what parsing them
//! gives.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use pulse_kit::config::CountryConfig;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Invalid;
use super::practitioner::Position;
use super::rules::last_bookable_day;
use super::time::{local_day, local_midnight};

/// Largest page of search results.
pub const MAX_PAGE_SIZE: u32 = 100;
/// Longest range of `GET …/slots`.
pub const MAX_SLOT_RANGE_DAYS: i64 = 31;
/// Radius of a `near` search without `radius_km`.
const DEFAULT_RADIUS_KM: f64 = 10.0;
/// Largest search radius.
const MAX_RADIUS_KM: f64 = 200.0;

/// An id in a path or a field.
pub fn parse_uuid(field: &str, text: &str) -> Result<Uuid, Invalid> {
    text.parse()
        .map_err(|_| Invalid::new(field, format!("`{text}` is not a UUID")))
}

/// A full date `YYYY-MM-DD` (RFC 3339 `full-date`, what the schema's `format: date` says).
fn parse_date(field: &str, text: &str) -> Result<NaiveDate, Invalid> {
    let shaped = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    shaped
        .then(|| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok())
        .flatten()
        .ok_or_else(|| Invalid::new(field, format!("`{text}` is not a date YYYY-MM-DD")))
}

// The schemas of the query parameters, from the rules that parse them: each may be empty
// (not given) or has the documented form.

/// Most characters of a `specialty` or `city` filter.
const MAX_FILTER_TEXT: usize = 100;
/// Highest page number.
const MAX_PAGE: u32 = 10_000;

fn empty_or(schema: utoipa::openapi::schema::Object) -> utoipa::openapi::schema::AnyOf {
    use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, SchemaType, Type};
    AnyOfBuilder::new()
        .item(schema)
        .item(
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::String))
                .max_length(Some(0)),
        )
        .build()
}

fn date_schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, SchemaType, Type};
    utoipa::openapi::Schema::AnyOf(empty_or(
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Date)))
            .build(),
    ))
    .into()
}

/// Digits (leading zeros allowed) naming a number from 1 to `max`, `max` a power of ten.
fn whole_number_schema(max: u32) -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    let digits = max.to_string().len() - 1;
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .pattern(Some(format!(
            "^(0*[1-9][0-9]{{0,{}}}|0*{max})?$",
            digits - 1
        )))
        .description(Some(format!("a whole number from 1 to {max}")))
        .build()
}

fn page_schema() -> utoipa::openapi::schema::Object {
    whole_number_schema(MAX_PAGE)
}

fn page_size_schema() -> utoipa::openapi::schema::Object {
    whole_number_schema(MAX_PAGE_SIZE)
}

fn filter_text_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .max_length(Some(MAX_FILTER_TEXT))
        .pattern(Some(pulse_kit::text::without_controls_pattern()))
        .build()
}

/// A parameter that was given and is not empty.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// Query of `GET /v1/practitioners`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "snake_case")]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Specialty, e.g. `dermatology`.
    #[param(schema_with = filter_text_schema)]
    pub specialty: Option<String>,
    /// City.
    #[param(schema_with = filter_text_schema)]
    pub city: Option<String>,
    /// `lat,lon` to search around.
    #[param(schema_with = near_schema)]
    pub near: Option<String>,
    /// Radius around `near` in km (default 10, at most 200).
    #[param(schema_with = radius_schema)]
    pub radius_km: Option<String>,
    /// Only practitioners with a free slot on this local date (`YYYY-MM-DD`).
    #[param(schema_with = date_schema)]
    pub available_on: Option<String>,
    /// Page, from 1.
    #[param(schema_with = page_schema)]
    pub page: Option<String>,
    /// Results per page (1 to 100, default 20).
    #[param(schema_with = page_size_schema)]
    pub page_size: Option<String>,
}

/// A parsed search.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchQuery {
    /// Specialty, lower case.
    pub specialty: Option<String>,
    /// City, compared case-insensitively.
    pub city: Option<String>,
    /// Centre and radius in km.
    pub near: Option<(f64, f64, f64)>,
    /// Only practitioners with a free slot on this local day.
    pub available_on: Option<NaiveDate>,
    /// Page number, from 1.
    pub page: u32,
    /// Results per page.
    pub page_size: u32,
}

impl SearchQuery {
    /// Parses `params` for `country` at `now` (`available_on` must be bookable).
    pub fn parse(
        params: &SearchParams,
        country: &CountryConfig,
        now: DateTime<Utc>,
    ) -> Result<Self, Invalid> {
        let near = match given(&params.near) {
            None => None,
            Some(text) => Some(parse_near(text, given(&params.radius_km))?),
        };
        if near.is_none() && given(&params.radius_km).is_some() {
            return Err(Invalid::combination(
                "radius_km",
                "only makes sense with `near`",
            ));
        }
        let available_on = match given(&params.available_on) {
            None => None,
            Some(text) => {
                let day = parse_date("available_on", text)?;
                let today = local_day(now, country.tz());
                let last = last_bookable_day(&country.booking, country.tz(), now);
                if day < today || day > last {
                    return Err(Invalid::combination(
                        "available_on",
                        format!("must be between {today} and {last}"),
                    ));
                }
                Some(day)
            }
        };
        Ok(Self {
            specialty: short_text("specialty", &params.specialty)?.map(|s| s.to_lowercase()),
            city: short_text("city", &params.city)?,
            near,
            available_on,
            page: number("page", &params.page, 1, MAX_PAGE, 1)?,
            page_size: number("page_size", &params.page_size, 1, MAX_PAGE_SIZE, 20)?,
        })
    }
}

/// A latitude as `near` takes it: a decimal from -85 to 85 (no exponent, no leading zero).
const LATITUDE_PATTERN: &str = "-?(([0-9]|[1-7][0-9]|8[0-4])(\\.[0-9]+)?|85(\\.0+)?)";
/// A longitude as `near` takes it: a decimal from -180 to 180.
const LONGITUDE_PATTERN: &str = "-?(([0-9]|[1-9][0-9]|1[0-7][0-9])(\\.[0-9]+)?|180(\\.0+)?)";
/// A radius in km above 0 and at most 200, as `radius_km` takes it.
const RADIUS_PATTERN: &str =
    "^(0\\.[0-9]*[1-9][0-9]*|([1-9]|[1-9][0-9]|1[0-9]{2})(\\.[0-9]+)?|200(\\.0+)?)?$";

/// A decimal as `near` and `radius_km` write it: an optional `-`, digits without a leading
/// zero (but `0` itself), an optional fraction; what the patterns above build on.
fn decimal(text: &str) -> Option<f64> {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let shaped =
        digits(whole) && (whole == "0" || !whole.starts_with('0')) && fraction.is_none_or(digits);
    shaped.then(|| text.parse().ok()).flatten()
}

/// `lat,lon` and the radius around it.
fn parse_near(text: &str, radius: Option<&str>) -> Result<(f64, f64, f64), Invalid> {
    let parts: Vec<&str> = text.split(',').map(|p| p.trim_matches(' ')).collect();
    let position = match parts.as_slice() {
        [lat, lon] => decimal(lat)
            .zip(decimal(lon))
            .and_then(|(lat, lon)| Position::parse(lat, lon).ok()),
        _ => None,
    };
    let Some(position) = position else {
        return Err(Invalid::new(
            "near",
            format!("`{text}` must be `latitude,longitude`, e.g. 48.8566,2.3522"),
        ));
    };
    let radius = match radius {
        None => DEFAULT_RADIUS_KM,
        Some(r) => match decimal(r) {
            Some(v) if v > 0.0 && v <= MAX_RADIUS_KM => v,
            _ => {
                return Err(Invalid::new(
                    "radius_km",
                    format!("`{r}` must be a number of km above 0 and at most {MAX_RADIUS_KM}"),
                ));
            }
        },
    };
    Ok((position.latitude(), position.longitude(), radius))
}

fn near_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .pattern(Some(format!(
            "^( *{LATITUDE_PATTERN} *, *{LONGITUDE_PATTERN} *)?$"
        )))
        .build()
}

fn radius_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .pattern(Some(RADIUS_PATTERN))
        .build()
}

fn short_text(field: &str, value: &Option<String>) -> Result<Option<String>, Invalid> {
    let Some(raw) = value.as_deref() else {
        return Ok(None);
    };
    if raw.chars().count() > MAX_FILTER_TEXT || pulse_kit::text::has_control(raw) {
        return Err(Invalid::new(
            field,
            format!("at most {MAX_FILTER_TEXT} characters, no control character"),
        ));
    }
    match raw.trim() {
        "" => Ok(None),
        s => Ok(Some(s.to_owned())),
    }
}

fn number(
    field: &str,
    value: &Option<String>,
    min: u32,
    max: u32,
    default: u32,
) -> Result<u32, Invalid> {
    match given(value) {
        None => Ok(default),
        Some(s) => match s.parse::<u32>() {
            Ok(n) if (min..=max).contains(&n) && s.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => Err(Invalid::new(
                field,
                format!("`{s}` must be a whole number from {min} to {max}"),
            )),
        },
    }
}

/// Query of `GET /v1/practitioners/{id}/slots`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SlotParams {
    /// First local date (`YYYY-MM-DD`), default today.
    #[param(schema_with = date_schema)]
    pub from: Option<String>,
    /// Last local date, inclusive (at most 31 days after `from`), default `from` + 6 days.
    #[param(schema_with = date_schema)]
    pub to: Option<String>,
}

/// Local dates `from..=to`, at most [`MAX_SLOT_RANGE_DAYS`] apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotRange {
    from: NaiveDate,
    to: NaiveDate,
}

impl SlotRange {
    /// Parses `params`; `today` is the default start.
    pub fn parse(params: &SlotParams, today: NaiveDate) -> Result<Self, Invalid> {
        let from = match given(&params.from) {
            Some(text) => parse_date("from", text)?,
            None => today,
        };
        let to = match given(&params.to) {
            Some(text) => parse_date("to", text)?,
            None => from + Duration::days(6),
        };
        if to < from {
            return Err(Invalid::combination("to", "must not be before `from`"));
        }
        if (to - from).num_days() > MAX_SLOT_RANGE_DAYS {
            return Err(Invalid::combination(
                "to",
                format!("at most {MAX_SLOT_RANGE_DAYS} days after `from`"),
            ));
        }
        Ok(Self { from, to })
    }

    /// The instants the range spans in `tz`: from the first day's start to the day after the
    /// last's.
    pub fn bounds(self, tz: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
        (
            local_midnight(self.from, tz),
            local_midnight(self.to.succ_opt().unwrap_or(self.to), tz),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `schema` (as JSON) accepts `value`.
    fn accepts(schema: impl serde::Serialize, value: &str) -> bool {
        let schema = serde_json::to_value(schema).expect("schema");
        jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .expect("a valid schema")
            .is_valid(&serde_json::Value::String(value.to_owned()))
    }

    #[test]
    fn the_documented_parameter_formats_are_what_the_parsers_accept() {
        for value in [
            "",
            "1",
            "01",
            "9",
            "10",
            "99",
            "100",
            "0100",
            "101",
            "0",
            "+5",
            "-1",
            "1.0",
            "abc",
            " 5",
            "9999",
            "10000",
            "10001",
            "99999999999",
        ] {
            let given = Some(value.to_owned());
            assert_eq!(
                accepts(page_size_schema(), value),
                number("page_size", &given, 1, MAX_PAGE_SIZE, 20).is_ok(),
                "page_size {value:?}"
            );
            assert_eq!(
                accepts(page_schema(), value),
                number("page", &given, 1, MAX_PAGE, 1).is_ok(),
                "page {value:?}"
            );
        }
        for value in [
            "",
            "2026-12-02",
            "2026-02-29",
            "2024-02-29",
            "2026-1-5",
            "+2026-12-02",
            "2026-13-01",
            "2026-12-02T00:00:00Z",
            "tomorrow",
        ] {
            assert_eq!(
                accepts(date_schema(), value),
                value.is_empty() || parse_date("from", value).is_ok(),
                "date {value:?}"
            );
        }
        for value in [
            "",
            "Paris",
            " Lyon ",
            "a\u{0}b",
            &"x".repeat(101),
            &"x".repeat(100),
        ] {
            assert_eq!(
                accepts(filter_text_schema(), value),
                short_text("city", &Some(value.to_owned())).is_ok(),
                "city {value:?}"
            );
        }
    }

    fn params(pairs: &[(&str, &str)]) -> SearchParams {
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        };
        SearchParams {
            specialty: get("specialty"),
            city: get("city"),
            near: get("near"),
            radius_km: get("radius_km"),
            available_on: get("available_on"),
            page: get("page"),
            page_size: get("page_size"),
        }
    }

    fn search(pairs: &[(&str, &str)]) -> Result<SearchQuery, Invalid> {
        SearchQuery::parse(&params(pairs), &pulse_kit::testing::france(), Utc::now())
    }

    #[test]
    fn a_search_has_defaults_and_lower_case_specialty() {
        let query = search(&[("specialty", " Dentistry "), ("near", "48.8, 2.3")]).expect("ok");
        assert_eq!(query.specialty.as_deref(), Some("dentistry"));
        assert_eq!(query.near, Some((48.8, 2.3, 10.0)));
        assert_eq!((query.page, query.page_size), (1, 20));
    }

    #[test]
    fn bad_searches_name_their_field() {
        for (pairs, field) in [
            (&[("page_size", "100000")][..], "page_size"),
            (&[("page", "0")], "page"),
            (&[("near", "91,2")], "near"),
            (&[("near", "paris")], "near"),
            (&[("radius_km", "3")], "radius_km"),
            (&[("near", "48.8,2.3"), ("radius_km", "-1")], "radius_km"),
            (&[("available_on", "2026-13-01")], "available_on"),
            (&[("available_on", "1999-01-01")], "available_on"),
        ] {
            assert_eq!(
                search(pairs).expect_err("invalid").field,
                field,
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn slot_ranges_default_to_a_week_and_stay_short() {
        let today = NaiveDate::from_ymd_opt(2026, 1, 1).expect("date");
        let range = SlotRange::parse(&SlotParams::default(), today).expect("ok");
        assert_eq!(range.to, NaiveDate::from_ymd_opt(2026, 1, 7).expect("date"));
        let long = SlotParams {
            from: Some("2026-01-01".into()),
            to: Some("2026-12-31".into()),
        };
        assert_eq!(
            SlotRange::parse(&long, today)
                .expect_err("long")
                .to_string(),
            "to: at most 31 days after `from`"
        );
    }
}
