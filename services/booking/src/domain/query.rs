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

fn parse_date(field: &str, text: &str) -> Result<NaiveDate, Invalid> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| Invalid::new(field, format!("`{text}` is not a date YYYY-MM-DD")))
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
    pub specialty: Option<String>,
    /// City.
    pub city: Option<String>,
    /// `lat,lon` to search around.
    pub near: Option<String>,
    /// Radius around `near` in km (default 10, at most 200).
    pub radius_km: Option<String>,
    /// Only practitioners with a free slot on this local date (`YYYY-MM-DD`).
    pub available_on: Option<String>,
    /// Page, from 1.
    pub page: Option<String>,
    /// Results per page (1 to 100, default 20).
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
            page: number("page", &params.page, 1, 10_000, 1)?,
            page_size: number("page_size", &params.page_size, 1, MAX_PAGE_SIZE, 20)?,
        })
    }
}

/// `lat,lon` and the radius around it.
fn parse_near(text: &str, radius: Option<&str>) -> Result<(f64, f64, f64), Invalid> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let position = match parts.as_slice() {
        [lat, lon] => lat
            .parse::<f64>()
            .ok()
            .zip(lon.parse::<f64>().ok())
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
        Some(r) => match r.parse::<f64>() {
            Ok(v) if v > 0.0 && v <= MAX_RADIUS_KM => v,
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

fn short_text(field: &str, value: &Option<String>) -> Result<Option<String>, Invalid> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) if s.chars().count() > 100 => Err(Invalid::new(field, "at most 100 characters")),
        Some(s) => Ok(Some(s.to_owned())),
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
            Ok(n) if (min..=max).contains(&n) => Ok(n),
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
    pub from: Option<String>,
    /// Last local date, inclusive (at most 31 days after `from`), default `from` + 6 days.
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
