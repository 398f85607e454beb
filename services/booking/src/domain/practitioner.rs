//! A practitioner's profile: what an admin writes ([`PractitionerInput`]), what parsing it gives
//! ([`PractitionerProfile`]) and what is stored and shown ([`Practitioner`]).

use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ArrayBuilder, Object, ObjectBuilder, SchemaType, Type};
use uuid::Uuid;

use super::Invalid;
use super::schedule::{Schedule, ValidSchedule};

/// Latitudes the map index (Redis GEO, Web Mercator) can hold: it stops at ±85.05112878°, so
/// nothing lies beyond ±85° on a map of practices anyway.
const LATITUDE: RangeInclusive<f64> = -85.0..=85.0;
const LONGITUDE: RangeInclusive<f64> = -180.0..=180.0;
const PRICE_MINOR: RangeInclusive<i64> = 0..=100_000_000;
const MAX_LANGUAGES: usize = 20;
const NAME_MAX: usize = 200;
const SPECIALTY_MAX: usize = 100;
const CITY_MAX: usize = 100;
const ADDRESS_MAX: usize = 300;
const ACCOUNT_SUBJECT_MAX: usize = 200;

// The schemas of the input's fields, from the limits `parse` checks (utoipa's attributes take
// literals only).
fn name_schema() -> Object {
    pulse_kit::text::schema(NAME_MAX, "Full name")
}
fn specialty_schema() -> Object {
    pulse_kit::text::schema(
        SPECIALTY_MAX,
        "Specialty (`general-practice`, `dermatology`, …)",
    )
}
fn city_schema() -> Object {
    pulse_kit::text::schema(CITY_MAX, "City")
}
fn address_schema() -> Object {
    pulse_kit::text::schema(ADDRESS_MAX, "Street address")
}
fn account_subject_schema() -> Object {
    pulse_kit::text::nullable_schema(
        ACCOUNT_SUBJECT_MAX,
        "JWT subject of the practitioner's own account",
    )
}
fn number_schema(range: RangeInclusive<f64>, description: &str) -> Object {
    pulse_kit::openapi::number_schema(*range.start(), *range.end(), description)
}
fn latitude_schema() -> Object {
    number_schema(LATITUDE, "Latitude")
}
fn longitude_schema() -> Object {
    number_schema(LONGITUDE, "Longitude")
}
fn price_schema() -> Object {
    pulse_kit::openapi::integer_schema(
        *PRICE_MINOR.start(),
        *PRICE_MINOR.end(),
        "Consultation price in minor units of the country's currency",
    )
}
fn languages_schema() -> utoipa::openapi::schema::Array {
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::String))
                .pattern(Some("^[a-z]{2}$")),
        )
        .max_items(Some(MAX_LANGUAGES))
        .description(Some("Spoken languages (ISO 639-1)"))
        .build()
}

/// Body of `POST /v1/practitioners` and `PUT /v1/practitioners/{id}`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PractitionerInput {
    /// Full name.
    #[schema(schema_with = name_schema)]
    pub name: String,
    /// Specialty (`general-practice`, `dermatology`, …).
    #[schema(schema_with = specialty_schema)]
    pub specialty: String,
    /// City.
    #[schema(schema_with = city_schema)]
    pub city: String,
    /// Street address.
    #[schema(schema_with = address_schema)]
    pub address: String,
    /// Latitude.
    #[schema(schema_with = latitude_schema)]
    pub latitude: f64,
    /// Longitude.
    #[schema(schema_with = longitude_schema)]
    pub longitude: f64,
    /// Spoken languages (ISO 639-1).
    #[serde(default)]
    #[schema(schema_with = languages_schema)]
    pub languages: Vec<String>,
    /// Consultation price in minor units of the country's currency.
    #[schema(schema_with = price_schema)]
    pub consultation_price_minor: i64,
    /// JWT subject of the practitioner's own account.
    #[serde(default)]
    #[schema(schema_with = account_subject_schema)]
    pub account_subject: Option<String>,
    /// Weekly schedule; the country's usual week with 30-minute slots when omitted on creation.
    #[serde(default)]
    pub schedule: Option<Schedule>,
}

/// A parsed [`PractitionerInput`].
#[derive(Debug, Clone, PartialEq)]
pub struct PractitionerDraft {
    /// The profile.
    pub profile: PractitionerProfile,
    /// The schedule, when one was given.
    pub schedule: Option<ValidSchedule>,
}

impl PractitionerInput {
    /// Checks every field, the profile's first, then the schedule's.
    pub fn parse(self) -> Result<PractitionerDraft, Invalid> {
        let position = Position::parse(self.latitude, self.longitude)?;
        if !PRICE_MINOR.contains(&self.consultation_price_minor) {
            return Err(Invalid::new(
                "consultationPriceMinor",
                format!(
                    "must be between {} and {}",
                    PRICE_MINOR.start(),
                    PRICE_MINOR.end()
                ),
            ));
        }
        if self.languages.len() > MAX_LANGUAGES || !self.languages.iter().all(|l| is_iso_639_1(l)) {
            return Err(Invalid::new(
                "languages",
                format!("at most {MAX_LANGUAGES} ISO 639-1 codes like `fr`"),
            ));
        }
        let profile = PractitionerProfile {
            name: text("name", &self.name, NAME_MAX)?,
            specialty: text("specialty", &self.specialty, SPECIALTY_MAX)?.to_lowercase(),
            city: text("city", &self.city, CITY_MAX)?,
            address: text("address", &self.address, ADDRESS_MAX)?,
            position,
            languages: self.languages,
            consultation_price_minor: self.consultation_price_minor,
            account_subject: match &self.account_subject {
                Some(subject) => Some(text("accountSubject", subject, ACCOUNT_SUBJECT_MAX)?),
                None => None,
            },
        };
        Ok(PractitionerDraft {
            profile,
            schedule: self.schedule.map(ValidSchedule::parse).transpose()?,
        })
    }
}

fn is_iso_639_1(code: &str) -> bool {
    code.len() == 2 && code.bytes().all(|b| b.is_ascii_lowercase())
}

/// `value` trimmed, if it is at most `max` characters and not blank ([`pulse_kit::text`]).
fn text(field: &str, value: &str, max: usize) -> Result<String, Invalid> {
    pulse_kit::text::checked(value, max)
        .map(str::to_owned)
        .ok_or_else(|| Invalid::new(field, format!("must be 1 to {max} characters, not blank")))
}

/// A point on Earth (WGS 84).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Position {
    latitude: f64,
    longitude: f64,
}

impl Position {
    /// Checks that the latitude is within ±85° (the map index's range) and the longitude within ±180°.
    pub fn parse(latitude: f64, longitude: f64) -> Result<Self, Invalid> {
        if !LATITUDE.contains(&latitude) {
            return Err(Invalid::new(
                "latitude",
                "must be between -85 and 85, the map index's range",
            ));
        }
        if !LONGITUDE.contains(&longitude) {
            return Err(Invalid::new("longitude", "must be between -180 and 180"));
        }
        Ok(Self {
            latitude,
            longitude,
        })
    }

    /// Latitude.
    pub fn latitude(self) -> f64 {
        self.latitude
    }

    /// Longitude.
    pub fn longitude(self) -> f64 {
        self.longitude
    }
}

/// A practitioner's profile as an admin sets it; only [`PractitionerInput::parse`] makes one.
#[derive(Debug, Clone, PartialEq)]
pub struct PractitionerProfile {
    name: String,
    specialty: String,
    city: String,
    address: String,
    position: Position,
    languages: Vec<String>,
    consultation_price_minor: i64,
    account_subject: Option<String>,
}

impl PractitionerProfile {
    /// Full name, trimmed.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Specialty, lower case.
    pub fn specialty(&self) -> &str {
        &self.specialty
    }

    /// City.
    pub fn city(&self) -> &str {
        &self.city
    }

    /// Street address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Where the practice is.
    pub fn position(&self) -> Position {
        self.position
    }

    /// Spoken languages (ISO 639-1).
    pub fn languages(&self) -> &[String] {
        &self.languages
    }

    /// Consultation price in minor units of the country's currency.
    pub fn consultation_price_minor(&self) -> i64 {
        self.consultation_price_minor
    }

    /// JWT subject of the practitioner's own account.
    pub fn account_subject(&self) -> Option<&str> {
        self.account_subject.as_deref()
    }
}

/// A practitioner's public profile.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Practitioner {
    /// Id.
    pub id: Uuid,
    /// Full name.
    pub name: String,
    /// Specialty (lower case, e.g. `general-practice`).
    pub specialty: String,
    /// City.
    pub city: String,
    /// Street address.
    pub address: String,
    /// Latitude (WGS 84).
    pub latitude: f64,
    /// Longitude (WGS 84).
    pub longitude: f64,
    /// Spoken languages (ISO 639-1).
    pub languages: Vec<String>,
    /// Consultation price in minor units of `currency`.
    pub consultation_price_minor: i64,
    /// ISO 4217 currency.
    pub currency: String,
    /// JWT subject of the practitioner's own account, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_subject: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> PractitionerInput {
        PractitionerInput {
            name: "  Dr Test ".into(),
            specialty: "Dermatology".into(),
            city: "Paris".into(),
            address: "1 rue de la Paix".into(),
            latitude: 48.8566,
            longitude: 2.3522,
            languages: vec!["fr".into()],
            consultation_price_minor: 2500,
            account_subject: None,
            schedule: None,
        }
    }

    fn error(input: PractitionerInput) -> String {
        input.parse().expect_err("invalid").to_string()
    }

    #[test]
    fn a_profile_is_trimmed_and_its_specialty_lower_case() {
        let draft = input().parse().expect("valid");
        assert_eq!(draft.profile.name(), "Dr Test");
        assert_eq!(draft.profile.specialty(), "dermatology");
        assert_eq!(draft.schedule, None);
    }

    #[test]
    fn positions_stop_where_the_map_index_stops() {
        // Redis GEO refuses latitudes beyond ±85.05112878°: what passes here must be indexable.
        for latitude in [-85.0, 0.0, 85.0] {
            assert!(Position::parse(latitude, 180.0).is_ok(), "{latitude}");
        }
        for latitude in [-85.01, 85.000_001, 89.9, f64::NAN] {
            assert!(Position::parse(latitude, 0.0).is_err(), "{latitude}");
        }
    }

    /// Spoils one field of a valid input.
    type Spoil = fn(&mut PractitionerInput);

    #[test]
    fn each_field_says_what_is_wrong() {
        let cases: [(Spoil, &str); 9] = [
            (
                |i| i.latitude = 100.0,
                "latitude: must be between -85 and 85, the map index's range",
            ),
            (
                |i| i.longitude = f64::NAN,
                "longitude: must be between -180 and 180",
            ),
            (
                |i| i.consultation_price_minor = -1,
                "consultationPriceMinor: must be between 0 and 100000000",
            ),
            (
                |i| i.languages = vec!["FR".into()],
                "languages: at most 20 ISO 639-1 codes like `fr`",
            ),
            (
                |i| i.name = " ".into(),
                "name: must be 1 to 200 characters, not blank",
            ),
            (
                |i| i.specialty = "x".repeat(101),
                "specialty: must be 1 to 100 characters, not blank",
            ),
            (
                |i| i.city = String::new(),
                "city: must be 1 to 100 characters, not blank",
            ),
            (
                |i| i.address = String::new(),
                "address: must be 1 to 300 characters, not blank",
            ),
            (
                |i| i.account_subject = Some(String::new()),
                "accountSubject: must be 1 to 200 characters, not blank",
            ),
        ];
        for (spoil, message) in cases {
            let mut bad = input();
            spoil(&mut bad);
            assert_eq!(error(bad), message);
        }
        // The profile is checked before the schedule, and position before the name.
        let mut both = input();
        both.name = String::new();
        both.latitude = 100.0;
        assert_eq!(
            error(both),
            "latitude: must be between -85 and 85, the map index's range"
        );
    }
}
