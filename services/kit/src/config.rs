//! Country configuration: one typed struct used by the services at run time and by the
//! operator's `CountryTenant` schema.
//!
//! A deployment serves exactly one country. Its [`CountryConfig`] comes from environment
//! variables (what the operator's ConfigMap sets, see [`CountryConfig::to_env`]) layered over an
//! optional YAML file for local runs (a bare config, or a whole `CountryTenant` whose
//! `spec.country` is taken). A bad value fails start-up with an error naming the field and the
//! variable that set it.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::NaiveTime;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Prefix of every environment variable that carries country configuration.
pub const COUNTRY_ENV_PREFIX: &str = "PULSE_COUNTRY__";

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read country configuration file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid YAML.
    #[error("country configuration file {path} is not valid YAML: {source}")]
    Yaml {
        /// The file.
        path: String,
        /// The parse error.
        source: serde_yaml::Error,
    },
    /// A field has a wrong type, is unknown, or is missing.
    #[error("invalid country configuration field `{field}` (set by {origin}): {message}")]
    Field {
        /// Dotted path of the field, e.g. `booking.minNoticeMinutes`.
        field: String,
        /// Where the value came from: an environment variable name or the file.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// No configuration was given at all.
    #[error(
        "no country configuration: set PULSE_COUNTRY_FILE to a CountryTenant/country YAML file or the PULSE_COUNTRY__* variables (at least PULSE_COUNTRY__CODE, __TIMEZONE, __CURRENCY, __LOCALE)"
    )]
    Missing,
}

/// Day of the week, as used in working days.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum Weekday {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl Weekday {
    /// Every day, Monday first.
    pub const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];

    /// Its spelling in JSON and YAML (`Mon`).
    pub fn name(self) -> &'static str {
        match self {
            Weekday::Mon => "Mon",
            Weekday::Tue => "Tue",
            Weekday::Wed => "Wed",
            Weekday::Thu => "Thu",
            Weekday::Fri => "Fri",
            Weekday::Sat => "Sat",
            Weekday::Sun => "Sun",
        }
    }
}

impl From<Weekday> for chrono::Weekday {
    fn from(day: Weekday) -> Self {
        match day {
            Weekday::Mon => chrono::Weekday::Mon,
            Weekday::Tue => chrono::Weekday::Tue,
            Weekday::Wed => chrono::Weekday::Wed,
            Weekday::Thu => chrono::Weekday::Thu,
            Weekday::Fri => chrono::Weekday::Fri,
            Weekday::Sat => chrono::Weekday::Sat,
            Weekday::Sun => chrono::Weekday::Sun,
        }
    }
}

/// Opening hours of a working day, in the country's local time (`HH:MM`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkingHours {
    /// First bookable minute of the day, `HH:MM`.
    #[schemars(pattern(r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub opens_at: String,
    /// End of the working day (exclusive), `HH:MM`.
    #[schemars(pattern(r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub closes_at: String,
}

impl Default for WorkingHours {
    fn default() -> Self {
        Self {
            opens_at: "08:00".into(),
            closes_at: "19:00".into(),
        }
    }
}

impl WorkingHours {
    /// Opening time, parsed (valid after [`CountryConfig::validate`]).
    pub fn opens(&self) -> Option<NaiveTime> {
        NaiveTime::parse_from_str(&self.opens_at, "%H:%M").ok()
    }

    /// Closing time, parsed (valid after [`CountryConfig::validate`]).
    pub fn closes(&self) -> Option<NaiveTime> {
        NaiveTime::parse_from_str(&self.closes_at, "%H:%M").ok()
    }
}

/// The country's appointment rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct BookingRules {
    /// A slot must start at least this many minutes after the booking.
    pub min_notice_minutes: u32,
    /// A patient may cancel up to this many minutes before the start.
    pub cancellation_cutoff_minutes: u32,
    /// Active appointments one patient may hold on one local day.
    #[schemars(range(min = 1))]
    pub max_appointments_per_patient_per_day: u32,
    /// How many days ahead slots are published and bookable.
    #[schemars(range(min = 1, max = 366))]
    pub horizon_days: u32,
}

impl Default for BookingRules {
    fn default() -> Self {
        Self {
            min_notice_minutes: 120,
            cancellation_cutoff_minutes: 1440,
            max_appointments_per_patient_per_day: 1,
            horizon_days: 60,
        }
    }
}

/// The country's ordering rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OrderingRules {
    /// An order not paid within this many seconds is cancelled and its stock returned.
    #[schemars(range(min = 30))]
    pub payment_timeout_seconds: u32,
}

impl Default for OrderingRules {
    fn default() -> Self {
        Self {
            payment_timeout_seconds: 900,
        }
    }
}

/// How the country's notifications behave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NotificationRules {
    /// Local time (`HH:MM`) at which appointment reminders are sent, the day before.
    #[schemars(pattern(r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub reminder_time: String,
}

impl Default for NotificationRules {
    fn default() -> Self {
        Self {
            reminder_time: "18:00".into(),
        }
    }
}

impl NotificationRules {
    /// The reminder time, parsed (valid after [`CountryConfig::validate`]).
    pub fn reminder(&self) -> Option<NaiveTime> {
        NaiveTime::parse_from_str(&self.reminder_time, "%H:%M").ok()
    }
}

/// Request rate limits applied per client at the edge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RateLimits {
    /// Sustained requests per second one client may make.
    #[schemars(range(min = 1))]
    pub requests_per_second: u32,
    /// Extra requests a client may burst above the sustained rate.
    pub burst: u32,
    /// Seckill attempts per second one user may make at one campaign (with a burst of as many
    /// again); checked by the reservation script itself, so these attempts do not count
    /// against the per-client limit above.
    #[schemars(range(min = 1))]
    pub seckill_attempts_per_second: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            requests_per_second: 20,
            burst: 40,
            seckill_attempts_per_second: 2,
        }
    }
}

/// Everything that differs from one country to the next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CountryConfig {
    /// ISO 3166-1 alpha-2 code, upper case (`FR`).
    #[schemars(pattern(r"^[A-Z]{2}$"))]
    pub code: String,
    /// IANA time zone of the country (`Europe/Paris`); user-facing times are shown in it.
    pub timezone: String,
    /// ISO 4217 currency code (`EUR`); amounts are integer minor units of it.
    #[schemars(pattern(r"^[A-Z]{3}$"))]
    pub currency: String,
    /// BCP 47 locale (`fr-FR`).
    #[schemars(pattern(r"^[a-z]{2,3}(-[A-Z]{2})?$"))]
    pub locale: String,
    /// Days on which practitioners usually work.
    #[serde(default = "default_working_days")]
    #[schemars(length(min = 1))]
    pub working_days: Vec<Weekday>,
    /// Usual working hours of those days.
    #[serde(default)]
    pub working_hours: WorkingHours,
    /// Appointment rules.
    #[serde(default)]
    pub booking: BookingRules,
    /// Order rules.
    #[serde(default)]
    pub ordering: OrderingRules,
    /// Edge rate limits.
    #[serde(default)]
    pub rate_limits: RateLimits,
    /// Notifications (reminder time).
    #[serde(default)]
    pub notifications: NotificationRules,
}

fn default_working_days() -> Vec<Weekday> {
    use Weekday::*;
    vec![Mon, Tue, Wed, Thu, Fri]
}

impl CountryConfig {
    /// Lower-case code, as used in namespaces, database names, Redis keys and Kafka topics.
    pub fn slug(&self) -> String {
        self.code.to_ascii_lowercase()
    }

    /// The time zone, parsed (valid after [`CountryConfig::validate`]).
    pub fn tz(&self) -> chrono_tz::Tz {
        self.timezone.parse().unwrap_or(chrono_tz::UTC)
    }

    /// Digits after the decimal point of the currency (2 for EUR, 0 for JPY).
    pub fn currency_minor_digits(&self) -> u8 {
        currency_minor_digits(&self.currency).unwrap_or(2)
    }

    /// Checks the values that the types alone cannot (time zone, currency, hours, …).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, message: String| ConfigError::Field {
            field: field.to_owned(),
            origin: env_name(field),
            message,
        };
        let code_ok = self.code.len() == 2 && self.code.bytes().all(|b| b.is_ascii_uppercase());
        if !code_ok {
            return Err(bad(
                "code",
                format!(
                    "`{}` is not an ISO 3166-1 alpha-2 code in upper case, like `FR`",
                    self.code
                ),
            ));
        }
        if self.timezone.parse::<chrono_tz::Tz>().is_err() {
            return Err(bad(
                "timezone",
                format!(
                    "`{}` is not an IANA time zone, like `Europe/Paris`",
                    self.timezone
                ),
            ));
        }
        if currency_minor_digits(&self.currency).is_none() {
            return Err(bad(
                "currency",
                format!(
                    "`{}` is not an ISO 4217 currency code, like `EUR`",
                    self.currency
                ),
            ));
        }
        if !is_locale(&self.locale) {
            return Err(bad(
                "locale",
                format!("`{}` is not a BCP 47 locale, like `fr-FR`", self.locale),
            ));
        }
        if self.working_days.is_empty() {
            return Err(bad(
                "workingDays",
                "at least one working day is needed".into(),
            ));
        }
        let opens = self.working_hours.opens().ok_or_else(|| {
            bad(
                "workingHours.opensAt",
                format!("`{}` is not a time `HH:MM`", self.working_hours.opens_at),
            )
        })?;
        let closes = self.working_hours.closes().ok_or_else(|| {
            bad(
                "workingHours.closesAt",
                format!("`{}` is not a time `HH:MM`", self.working_hours.closes_at),
            )
        })?;
        if closes <= opens {
            return Err(bad(
                "workingHours.closesAt",
                format!(
                    "closes at {} but opens at {}: it must close after it opens",
                    self.working_hours.closes_at, self.working_hours.opens_at
                ),
            ));
        }
        if self.notifications.reminder().is_none() {
            return Err(bad(
                "notifications.reminderTime",
                format!(
                    "`{}` is not a time `HH:MM`",
                    self.notifications.reminder_time
                ),
            ));
        }
        if self.booking.max_appointments_per_patient_per_day == 0 {
            return Err(bad(
                "booking.maxAppointmentsPerPatientPerDay",
                "must be at least 1".into(),
            ));
        }
        if !(1..=366).contains(&self.booking.horizon_days) {
            return Err(bad(
                "booking.horizonDays",
                format!("{} is outside 1..=366", self.booking.horizon_days),
            ));
        }
        if self.ordering.payment_timeout_seconds < 30 {
            return Err(bad(
                "ordering.paymentTimeoutSeconds",
                format!(
                    "{} is below the minimum of 30 seconds",
                    self.ordering.payment_timeout_seconds
                ),
            ));
        }
        if self.rate_limits.requests_per_second == 0
            || self.rate_limits.seckill_attempts_per_second == 0
        {
            return Err(bad(
                "rateLimits",
                "rates must be at least 1 per second".into(),
            ));
        }
        Ok(())
    }

    /// The configuration as environment variables (`PULSE_COUNTRY__BOOKING__HORIZON_DAYS=60`),
    /// which is what the operator writes into a country's ConfigMap.
    pub fn to_env(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Ok(value) = serde_json::to_value(self) {
            flatten(&value, COUNTRY_ENV_PREFIX.trim_end_matches("__"), &mut out);
        }
        out
    }

    /// Parses a configuration from environment variables only.
    pub fn from_env_vars<I>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        Self::from_layers(None, vars)
    }

    /// Loads the configuration: the optional YAML file first, then `PULSE_COUNTRY__*` variables
    /// on top, then validation.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::read_layers(file, std::env::vars())
    }

    /// Reads the configuration from the settings: the file named by `PULSE_COUNTRY_FILE`, then
    /// the `PULSE_COUNTRY__*` variables on top, then validation.
    pub fn read(env: &crate::settings::Env) -> Result<Self, ConfigError> {
        let file = env.text(&crate::settings::server::COUNTRY_FILE);
        Self::read_layers(
            file.as_deref().map(Path::new),
            env.with_prefix(COUNTRY_ENV_PREFIX),
        )
    }

    fn read_layers<I>(file: Option<&Path>, vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let base = match file {
            Some(path) => Some(read_yaml(path)?),
            None => None,
        };
        Self::from_layers(base, vars)
    }

    fn from_layers<I>(base: Option<(Value, String)>, vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let (mut value, file_origin) = match base {
            Some((value, origin)) => (value, Some(origin)),
            None => (Value::Object(Map::new()), None),
        };
        let mut env_set = Vec::new();
        for (name, raw) in vars {
            let Some(rest) = name.strip_prefix(COUNTRY_ENV_PREFIX) else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(screaming_to_camel).collect();
            insert_path(&mut value, &path, parse_env_value(&raw));
            env_set.push(name);
        }
        if file_origin.is_none() && env_set.is_empty() {
            return Err(ConfigError::Missing);
        }
        let config: CountryConfig = serde_path_to_error::deserialize(value).map_err(|err| {
            let field = err.path().to_string();
            let var = env_name(&field);
            let origin = match &file_origin {
                Some(file) if !env_set.contains(&var) => format!("file {file}"),
                _ => var,
            };
            ConfigError::Field {
                field,
                origin,
                message: err.inner().to_string(),
            }
        })?;
        config.validate()?;
        Ok(config)
    }
}

/// The environment variable that sets the dotted field `path` (`booking.horizonDays`).
pub fn env_name(path: &str) -> String {
    let mut out = COUNTRY_ENV_PREFIX.trim_end_matches("__").to_owned();
    for segment in path.split('.').filter(|s| !s.is_empty() && *s != "?") {
        out.push_str("__");
        out.push_str(&camel_to_screaming(segment));
    }
    out
}

fn read_yaml(path: &Path) -> Result<(Value, String), ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    let value: Value = serde_yaml::from_str(&text).map_err(|source| ConfigError::Yaml {
        path: shown.clone(),
        source,
    })?;
    // A whole CountryTenant: the configuration is its spec.country.
    let value = if value.get("kind").and_then(Value::as_str) == Some("CountryTenant") {
        value
            .pointer("/spec/country")
            .cloned()
            .ok_or_else(|| ConfigError::Field {
                field: "spec.country".into(),
                origin: format!("file {shown}"),
                message: "a CountryTenant must have spec.country".into(),
            })?
    } else {
        value
    };
    Ok((value, shown))
}

fn flatten(value: &Value, prefix: &str, out: &mut BTreeMap<String, String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                flatten(
                    child,
                    &format!("{prefix}__{}", camel_to_screaming(key)),
                    out,
                );
            }
        }
        Value::String(s) => {
            out.insert(prefix.to_owned(), s.clone());
        }
        other => {
            out.insert(prefix.to_owned(), other.to_string());
        }
    }
}

/// Values are JSON when they parse as JSON (numbers, booleans, lists), plain strings otherwise.
fn parse_env_value(raw: &str) -> Value {
    match serde_json::from_str::<Value>(raw) {
        Ok(value @ (Value::Number(_) | Value::Bool(_) | Value::Array(_) | Value::Object(_))) => {
            value
        }
        _ => Value::String(raw.to_owned()),
    }
}

fn insert_path(root: &mut Value, path: &[String], leaf: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = root;
    for segment in parents {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        let Value::Object(map) = node else { return };
        node = map
            .entry(segment.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !node.is_object() {
        *node = Value::Object(Map::new());
    }
    if let Value::Object(map) = node {
        map.insert(last.clone(), leaf);
    }
}

fn camel_to_screaming(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, ch) in camel.chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

fn screaming_to_camel(screaming: &str) -> String {
    let mut out = String::with_capacity(screaming.len());
    for (i, word) in screaming.split('_').filter(|w| !w.is_empty()).enumerate() {
        let lower = word.to_ascii_lowercase();
        if i == 0 {
            out.push_str(&lower);
        } else {
            let mut chars = lower.chars();
            if let Some(first) = chars.next() {
                out.push(first.to_ascii_uppercase());
                out.extend(chars);
            }
        }
    }
    out
}

fn is_locale(locale: &str) -> bool {
    let mut parts = locale.split('-');
    let language_ok = parts
        .next()
        .is_some_and(|l| (2..=3).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_lowercase()));
    let region_ok = match parts.next() {
        None => true,
        Some(r) => r.len() == 2 && r.bytes().all(|b| b.is_ascii_uppercase()),
    };
    language_ok && region_ok && parts.next().is_none()
}

// Active ISO 4217 codes by their minor-unit digits.
const ZERO: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
    "VUV", "XAF", "XOF", "XPF",
];
const THREE: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];
const FOUR: &[&str] = &["CLF", "UYW"];
const TWO: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHF",
    "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR",
    "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF",
    "IDR", "ILS", "INR", "IRR", "JMD", "KES", "KGS", "KHR", "KPW", "KYD", "KZT", "LAK", "LBP",
    "LKR", "LRD", "LSL", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "PAB", "PEN", "PGK",
    "PHP", "PKR", "PLN", "QAR", "RON", "RSD", "RUB", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD",
    "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TOP",
    "TRY", "TTD", "TWD", "TZS", "UAH", "USD", "UYU", "UZS", "VES", "WST", "XCD", "YER", "ZAR",
    "ZMW", "ZWG",
];

/// Minor-unit digits of an ISO 4217 currency, or `None` if the code is not an active currency.
pub fn currency_minor_digits(code: &str) -> Option<u8> {
    CURRENCIES
        .iter()
        .find(|(codes, _)| codes.contains(&code))
        .map(|(_, digits)| *digits)
}

/// The active ISO 4217 codes with their minor-unit digits.
const CURRENCIES: [(&[&str], u8); 4] = [(ZERO, 0), (TWO, 2), (THREE, 3), (FOUR, 4)];

/// Every currency code [`currency_minor_digits`] knows, sorted.
pub fn known_currencies() -> Vec<&'static str> {
    let mut codes: Vec<&'static str> = CURRENCIES
        .iter()
        .flat_map(|(codes, _)| codes.iter().copied())
        .collect();
    codes.sort_unstable();
    codes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekday_names_are_their_serde_spelling() {
        for day in Weekday::ALL {
            assert_eq!(serde_json::to_value(day).expect("json"), day.name());
        }
    }

    fn france() -> CountryConfig {
        CountryConfig {
            code: "FR".into(),
            timezone: "Europe/Paris".into(),
            currency: "EUR".into(),
            locale: "fr-FR".into(),
            working_days: default_working_days(),
            working_hours: WorkingHours::default(),
            booking: BookingRules::default(),
            ordering: OrderingRules::default(),
            rate_limits: RateLimits::default(),
            notifications: NotificationRules::default(),
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn env_round_trip_is_lossless() {
        let mut config = france();
        config.booking.horizon_days = 30;
        config.working_days = vec![Weekday::Mon, Weekday::Sat];
        let env = config.to_env();
        assert_eq!(env["PULSE_COUNTRY__BOOKING__HORIZON_DAYS"], "30");
        assert_eq!(env["PULSE_COUNTRY__TIMEZONE"], "Europe/Paris");
        assert_eq!(env["PULSE_COUNTRY__WORKING_DAYS"], r#"["Mon","Sat"]"#);
        let back = CountryConfig::from_env_vars(env).expect("round trip");
        assert_eq!(back, config);
    }

    #[test]
    fn defaults_fill_what_is_not_set() {
        let config = CountryConfig::from_env_vars(vars(&[
            ("PULSE_COUNTRY__CODE", "DE"),
            ("PULSE_COUNTRY__TIMEZONE", "Europe/Berlin"),
            ("PULSE_COUNTRY__CURRENCY", "EUR"),
            ("PULSE_COUNTRY__LOCALE", "de-DE"),
        ]))
        .expect("valid");
        assert_eq!(config.booking.max_appointments_per_patient_per_day, 1);
        assert_eq!(config.working_days.len(), 5);
        assert_eq!(config.slug(), "de");
    }

    #[test]
    fn a_wrong_type_names_the_field_and_variable() {
        let mut env = france().to_env();
        env.insert(
            "PULSE_COUNTRY__BOOKING__MIN_NOTICE_MINUTES".into(),
            "soon".into(),
        );
        let err = CountryConfig::from_env_vars(env).expect_err("must fail");
        let text = err.to_string();
        assert!(text.contains("booking.minNoticeMinutes"), "{text}");
        assert!(
            text.contains("PULSE_COUNTRY__BOOKING__MIN_NOTICE_MINUTES"),
            "{text}"
        );
    }

    #[test]
    fn semantic_errors_name_the_field() {
        for (var, value, field) in [
            ("PULSE_COUNTRY__TIMEZONE", "Europe/Pariss", "timezone"),
            ("PULSE_COUNTRY__CURRENCY", "EUX", "currency"),
            ("PULSE_COUNTRY__CODE", "fr", "code"),
            ("PULSE_COUNTRY__LOCALE", "french", "locale"),
            (
                "PULSE_COUNTRY__WORKING_HOURS__CLOSES_AT",
                "07:00",
                "workingHours.closesAt",
            ),
            (
                "PULSE_COUNTRY__WORKING_HOURS__OPENS_AT",
                "8h",
                "workingHours.opensAt",
            ),
            (
                "PULSE_COUNTRY__ORDERING__PAYMENT_TIMEOUT_SECONDS",
                "5",
                "ordering.paymentTimeoutSeconds",
            ),
            (
                "PULSE_COUNTRY__BOOKING__MAX_APPOINTMENTS_PER_PATIENT_PER_DAY",
                "0",
                "booking.maxAppointmentsPerPatientPerDay",
            ),
        ] {
            let mut env = france().to_env();
            env.insert(var.into(), value.into());
            let err = CountryConfig::from_env_vars(env).expect_err(var);
            let text = err.to_string();
            assert!(text.contains(field), "{var}: {text}");
            assert!(text.contains(var), "{var}: {text}");
        }
    }

    #[test]
    fn unknown_variables_are_rejected() {
        let mut env = france().to_env();
        env.insert("PULSE_COUNTRY__BOOKING__HORIZON".into(), "3".into());
        let err = CountryConfig::from_env_vars(env).expect_err("unknown field");
        assert!(err.to_string().contains("horizon"), "{err}");
    }

    #[test]
    fn nothing_set_is_a_clear_error() {
        let err = CountryConfig::from_env_vars(Vec::new()).expect_err("missing");
        assert!(matches!(err, ConfigError::Missing));
    }

    #[test]
    fn env_overrides_a_tenant_file() {
        let dir = std::env::temp_dir().join(format!("pulse-config-{}", crate::new_id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("fr.yaml");
        std::fs::write(
            &path,
            "apiVersion: pulse.dev/v1alpha1\nkind: CountryTenant\nmetadata:\n  name: fr\nspec:\n  country:\n    code: FR\n    timezone: Europe/Paris\n    currency: EUR\n    locale: fr-FR\n    booking:\n      horizonDays: 90\n",
        )
        .expect("write");
        let (value, origin) = read_yaml(&path).expect("yaml");
        let config = CountryConfig::from_layers(
            Some((value, origin)),
            vars(&[("PULSE_COUNTRY__BOOKING__MIN_NOTICE_MINUTES", "15")]),
        )
        .expect("valid");
        assert_eq!(config.booking.horizon_days, 90);
        assert_eq!(config.booking.min_notice_minutes, 15);
        assert_eq!(config.booking.cancellation_cutoff_minutes, 1440);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn json_schema_carries_the_code_pattern() {
        let schema = schemars::schema_for!(CountryConfig);
        let text = serde_json::to_string(&schema).expect("schema");
        assert!(text.contains("^[A-Z]{2}$"), "{text}");
    }

    #[test]
    fn currency_digits() {
        assert_eq!(currency_minor_digits("EUR"), Some(2));
        assert_eq!(currency_minor_digits("JPY"), Some(0));
        assert_eq!(currency_minor_digits("KWD"), Some(3));
        assert_eq!(currency_minor_digits("XXX"), None);
    }
}
