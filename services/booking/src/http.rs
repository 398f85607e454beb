//! Booking's HTTP API (thin: parse, authorize, call the store, shape the answer).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use chrono::{DateTime, NaiveDate, Utc};
use prometheus_client::metrics::counter::Counter;
use pulse_kit::auth::Principal;
use pulse_kit::config::CountryConfig;
use pulse_kit::idempotency::RequiredIdempotencyKey;
use pulse_kit::problem::{ApiJson, ApiPath, ApiQuery, Problem};
use pulse_kit::redis::{RedisHandle, RedisLock};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{self, RuleViolation, Schedule};
use crate::search::{Search, SearchPage, SearchQuery, SlotView};
use crate::store::{Actor, AppointmentRow, BookingError, Practitioner, PractitionerFields, Store};

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// Data access.
    pub store: Store,
    /// Search and its cache.
    pub search: Arc<Search>,
    /// Redis, for slot locks.
    pub redis: RedisHandle,
    /// Slot locks.
    pub locks: Arc<RedisLock>,
    /// The country.
    pub country: Arc<CountryConfig>,
    /// Prefix of Redis keys.
    pub keyspace: String,
    /// Bookings that went ahead without the Redis lock because Redis was unreachable.
    pub lock_bypassed: Counter,
}

/// The routes.
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route(
            "/v1/practitioners",
            get(search_practitioners).post(create_practitioner),
        )
        .route(
            "/v1/practitioners/{id}",
            get(get_practitioner).put(update_practitioner),
        )
        .route("/v1/practitioners/{id}/schedule", put(put_schedule))
        .route("/v1/practitioners/{id}/slots", get(list_slots))
        .route("/v1/appointments", get(list_appointments).post(book))
        .route("/v1/appointments/{id}", get(get_appointment))
        .route("/v1/appointments/{id}/cancel", post(cancel))
        .route("/v1/appointments/{id}/reschedule", post(reschedule))
        .with_state(state)
}

/// Largest page of search results.
pub const MAX_PAGE_SIZE: u32 = 100;
/// Longest range of `GET …/slots`.
pub const MAX_SLOT_RANGE_DAYS: i64 = 31;

impl From<BookingError> for Problem {
    fn from(err: BookingError) -> Self {
        match err {
            BookingError::SlotNotFound(_) => {
                Problem::new(StatusCode::NOT_FOUND, "slot-not-found", "Slot not found")
                    .with_detail(err.to_string())
            }
            BookingError::PractitionerNotFound(_) => Problem::new(
                StatusCode::NOT_FOUND,
                "practitioner-not-found",
                "Practitioner not found",
            )
            .with_detail(err.to_string()),
            BookingError::AppointmentNotFound(_) => Problem::new(
                StatusCode::NOT_FOUND,
                "appointment-not-found",
                "Appointment not found",
            )
            .with_detail(err.to_string()),
            BookingError::SlotTaken => {
                Problem::new(StatusCode::CONFLICT, "slot-taken", "Slot taken")
                    .with_detail(err.to_string())
            }
            BookingError::NotActive(_) => Problem::new(
                StatusCode::CONFLICT,
                "appointment-not-active",
                "Appointment not active",
            )
            .with_detail(err.to_string()),
            BookingError::Rule(rule) => {
                let slug = match rule {
                    RuleViolation::TooSoon { .. } => "booking-too-soon",
                    RuleViolation::BeyondHorizon { .. } => "booking-beyond-horizon",
                    RuleViolation::DailyLimit { .. } => "daily-limit-reached",
                    RuleViolation::CancellationTooLate { .. } => "cancellation-too-late",
                    RuleViolation::AlreadyStarted => "appointment-started",
                };
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    slug,
                    "Refused by the booking rules",
                )
                .with_detail(rule.to_string())
            }
            BookingError::Invalid(invalid) => {
                Problem::unprocessable(invalid.to_string()).with("field", invalid.field.clone())
            }
            BookingError::Db(err) => Problem::internal(&err),
            BookingError::Outbox(err) => Problem::internal(&err),
        }
    }
}

fn bad(field: &str, message: impl Into<String>) -> Problem {
    Problem::bad_request(format!("{field}: {}", message.into())).with("field", field)
}

fn parse_uuid(field: &str, text: &str) -> Result<Uuid, Problem> {
    text.parse()
        .map_err(|_| bad(field, format!("`{text}` is not a UUID")))
}

fn parse_date(field: &str, text: &str) -> Result<NaiveDate, Problem> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| bad(field, format!("`{text}` is not a date YYYY-MM-DD")))
}

// ----------------------------------------------------------------------------- practitioners

/// Body of `POST /v1/practitioners` and `PUT /v1/practitioners/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PractitionerInput {
    /// Full name.
    pub name: String,
    /// Specialty (`general-practice`, `dermatology`, …).
    pub specialty: String,
    /// City.
    pub city: String,
    /// Street address.
    pub address: String,
    /// Latitude.
    pub latitude: f64,
    /// Longitude.
    pub longitude: f64,
    /// Spoken languages (ISO 639-1).
    #[serde(default)]
    pub languages: Vec<String>,
    /// Consultation price in minor units of the country's currency.
    pub consultation_price_minor: i64,
    /// JWT subject of the practitioner's own account.
    #[serde(default)]
    pub account_subject: Option<String>,
    /// Weekly schedule; the country's usual week with 30-minute slots when omitted on creation.
    #[serde(default)]
    pub schedule: Option<Schedule>,
}

fn check_text(field: &str, value: &str, max: usize) -> Result<String, Problem> {
    let trimmed = value.trim();
    if trimmed.is_empty() || trimmed.chars().count() > max {
        return Err(
            Problem::unprocessable(format!("{field}: must be 1 to {max} characters"))
                .with("field", field),
        );
    }
    Ok(trimmed.to_owned())
}

impl PractitionerInput {
    fn fields(&self) -> Result<PractitionerFields, Problem> {
        if !(-90.0..=90.0).contains(&self.latitude) || !self.latitude.is_finite() {
            return Err(
                Problem::unprocessable("latitude: must be between -90 and 90")
                    .with("field", "latitude"),
            );
        }
        if !(-180.0..=180.0).contains(&self.longitude) || !self.longitude.is_finite() {
            return Err(
                Problem::unprocessable("longitude: must be between -180 and 180")
                    .with("field", "longitude"),
            );
        }
        if !(0..=100_000_000).contains(&self.consultation_price_minor) {
            return Err(Problem::unprocessable(
                "consultationPriceMinor: must be between 0 and 100000000",
            )
            .with("field", "consultationPriceMinor"));
        }
        if self.languages.len() > 20
            || self
                .languages
                .iter()
                .any(|l| l.len() != 2 || !l.bytes().all(|b| b.is_ascii_lowercase()))
        {
            return Err(
                Problem::unprocessable("languages: at most 20 ISO 639-1 codes like `fr`")
                    .with("field", "languages"),
            );
        }
        Ok(PractitionerFields {
            name: check_text("name", &self.name, 200)?,
            specialty: check_text("specialty", &self.specialty, 100)?.to_lowercase(),
            city: check_text("city", &self.city, 100)?,
            address: check_text("address", &self.address, 300)?,
            latitude: self.latitude,
            longitude: self.longitude,
            languages: self.languages.clone(),
            consultation_price_minor: self.consultation_price_minor,
            account_subject: match &self.account_subject {
                Some(s) => Some(check_text("accountSubject", s, 200)?),
                None => None,
            },
        })
    }
}

/// Creates a practitioner (role `admin`).
#[utoipa::path(post, path = "/v1/practitioners", tag = "booking", request_body = PractitionerInput,
    responses((status = 201, body = Practitioner), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub async fn create_practitioner(
    State(app): State<AppState>,
    principal: Principal,
    ApiJson(input): ApiJson<PractitionerInput>,
) -> Result<Response, Problem> {
    principal.require_role("admin")?;
    let fields = input.fields()?;
    let schedule = input
        .schedule
        .clone()
        .unwrap_or_else(|| Schedule::country_default(&app.country, 30));
    let id = pulse_kit::new_id();
    let practitioner = app
        .store
        .create_practitioner(id, &fields, Some(&schedule))
        .await?;
    if let Err(err) = app
        .search
        .index_positions(&[(id, fields.longitude, fields.latitude)])
        .await
    {
        tracing::warn!(error = %err, "GEO index not updated; the periodic sync will add it");
    }
    let mut response = (StatusCode::CREATED, ApiJson(practitioner)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/practitioners/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Replaces a practitioner's profile (role `admin`); a schedule in the body replaces it too.
#[utoipa::path(put, path = "/v1/practitioners/{id}", tag = "booking", request_body = PractitionerInput,
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Practitioner), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn update_practitioner(
    State(app): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<PractitionerInput>,
) -> Result<ApiJson<Practitioner>, Problem> {
    principal.require_role("admin")?;
    let id = parse_uuid("id", &id)?;
    let fields = input.fields()?;
    let practitioner = app.store.update_practitioner(id, &fields).await?;
    if let Some(schedule) = &input.schedule {
        app.store.put_schedule(id, schedule).await?;
    }
    if let Err(err) = app
        .search
        .index_positions(&[(id, fields.longitude, fields.latitude)])
        .await
    {
        tracing::warn!(error = %err, "GEO index not updated; the periodic sync will fix it");
    }
    Ok(ApiJson(practitioner))
}

/// Replaces a weekly schedule (role `admin`); future free slots are rebuilt, booked ones kept.
#[utoipa::path(put, path = "/v1/practitioners/{id}/schedule", tag = "booking", request_body = Schedule,
    params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn put_schedule(
    State(app): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(schedule): ApiJson<Schedule>,
) -> Result<StatusCode, Problem> {
    principal.require_role("admin")?;
    let id = parse_uuid("id", &id)?;
    app.store.put_schedule(id, &schedule).await?;
    app.search.invalidate().await.ok();
    Ok(StatusCode::NO_CONTENT)
}

/// One practitioner.
#[utoipa::path(get, path = "/v1/practitioners/{id}", tag = "booking", params(("id" = Uuid, Path)),
    responses((status = 200, body = Practitioner), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get_practitioner(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<Practitioner>, Problem> {
    let id = parse_uuid("id", &id)?;
    Ok(ApiJson(app.store.practitioner(id).await?))
}

/// Query of `GET /v1/practitioners` (all text, validated by hand for clear messages).
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

impl SearchParams {
    fn validate(&self, country: &CountryConfig) -> Result<SearchQuery, Problem> {
        let text = |field: &str, v: &Option<String>| -> Result<Option<String>, Problem> {
            match v.as_deref().map(str::trim) {
                None | Some("") => Ok(None),
                Some(s) if s.chars().count() > 100 => Err(bad(field, "at most 100 characters")),
                Some(s) => Ok(Some(s.to_owned())),
            }
        };
        let number = |field: &str,
                      v: &Option<String>,
                      min: u32,
                      max: u32,
                      default: u32|
         -> Result<u32, Problem> {
            match v.as_deref() {
                None | Some("") => Ok(default),
                Some(s) => match s.parse::<u32>() {
                    Ok(n) if (min..=max).contains(&n) => Ok(n),
                    _ => Err(bad(
                        field,
                        format!("`{s}` must be a whole number from {min} to {max}"),
                    )),
                },
            }
        };
        let near = match self.near.as_deref() {
            None | Some("") => None,
            Some(s) => {
                let parts: Vec<&str> = s.split(',').map(str::trim).collect();
                let parsed = match parts.as_slice() {
                    [lat, lon] => lat.parse::<f64>().ok().zip(lon.parse::<f64>().ok()),
                    _ => None,
                };
                let Some((lat, lon)) = parsed.filter(|(lat, lon)| {
                    (-90.0..=90.0).contains(lat) && (-180.0..=180.0).contains(lon)
                }) else {
                    return Err(bad(
                        "near",
                        format!("`{s}` must be `latitude,longitude`, e.g. 48.8566,2.3522"),
                    ));
                };
                let radius = match self.radius_km.as_deref() {
                    None | Some("") => 10.0,
                    Some(r) => match r.parse::<f64>() {
                        Ok(v) if v > 0.0 && v <= 200.0 => v,
                        _ => {
                            return Err(bad(
                                "radius_km",
                                format!("`{r}` must be a number of km above 0 and at most 200"),
                            ));
                        }
                    },
                };
                Some((lat, lon, radius))
            }
        };
        if near.is_none() && self.radius_km.as_deref().is_some_and(|r| !r.is_empty()) {
            return Err(bad("radius_km", "only makes sense with `near`"));
        }
        let available_on = match self.available_on.as_deref() {
            None | Some("") => None,
            Some(s) => {
                let day = parse_date("available_on", s)?;
                let today = domain::local_day(Utc::now(), country.tz());
                let last = today + chrono::Duration::days(i64::from(country.booking.horizon_days));
                if day < today || day > last {
                    return Err(bad(
                        "available_on",
                        format!("must be between {today} and {last}"),
                    ));
                }
                Some(day)
            }
        };
        Ok(SearchQuery {
            specialty: text("specialty", &self.specialty)?.map(|s| s.to_lowercase()),
            city: text("city", &self.city)?,
            near,
            available_on,
            page: number("page", &self.page, 1, 10_000, 1)?,
            page_size: number("page_size", &self.page_size, 1, MAX_PAGE_SIZE, 20)?,
        })
    }
}

/// Searches practitioners: by specialty, city, distance and availability, with their earliest
/// free slots.
#[utoipa::path(get, path = "/v1/practitioners", tag = "booking", params(SearchParams),
    responses((status = 200, body = SearchPage), (status = 400, body = Problem, content_type = "application/problem+json")))]
pub async fn search_practitioners(
    State(app): State<AppState>,
    ApiQuery(params): ApiQuery<SearchParams>,
) -> Result<Response, Problem> {
    let query = params.validate(&app.country)?;
    let json = app
        .search
        .search(&query)
        .await
        .map_err(|e| Problem::internal(&e))?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        json.as_str().to_owned(),
    )
        .into_response())
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

/// Free slots of a practitioner.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlotList {
    /// The practitioner.
    pub practitioner_id: Uuid,
    /// Time zone of the local times.
    pub timezone: String,
    /// Free slots, earliest first.
    pub slots: Vec<SlotView>,
}

/// Free slots of a practitioner between two local dates, in local time with offset.
#[utoipa::path(get, path = "/v1/practitioners/{id}/slots", tag = "booking", params(("id" = Uuid, Path), SlotParams),
    responses((status = 200, body = SlotList), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn list_slots(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<SlotParams>,
) -> Result<ApiJson<SlotList>, Problem> {
    let id = parse_uuid("id", &id)?;
    let tz = app.country.tz();
    let today = domain::local_day(Utc::now(), tz);
    let from = match params.from.as_deref() {
        Some(s) if !s.is_empty() => parse_date("from", s)?,
        _ => today,
    };
    let to = match params.to.as_deref() {
        Some(s) if !s.is_empty() => parse_date("to", s)?,
        _ => from + chrono::Duration::days(6),
    };
    if to < from {
        return Err(bad("to", "must not be before `from`"));
    }
    if (to - from).num_days() > MAX_SLOT_RANGE_DAYS {
        return Err(bad(
            "to",
            format!("at most {MAX_SLOT_RANGE_DAYS} days after `from`"),
        ));
    }
    app.store.practitioner(id).await?;
    let start = crate::search::local_midnight(from, tz);
    let end = crate::search::local_midnight(to.succ_opt().unwrap_or(to), tz);
    let slots = app.store.free_slots(id, start, end, 2000).await?;
    Ok(ApiJson(SlotList {
        practitioner_id: id,
        timezone: app.country.timezone.clone(),
        slots: slots
            .into_iter()
            .map(|s| SlotView {
                id: s.id,
                start: domain::local_rfc3339(s.starts_at, tz),
                end: domain::local_rfc3339(s.ends_at, tz),
            })
            .collect(),
    }))
}

// ----------------------------------------------------------------------------- appointments

/// An appointment as clients see it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Appointment {
    /// Id.
    pub id: Uuid,
    /// The slot.
    pub slot_id: Uuid,
    /// The practitioner.
    pub practitioner_id: Uuid,
    /// The patient (JWT subject).
    pub patient_id: String,
    /// Start, local time with offset.
    pub start: String,
    /// End, local time with offset.
    pub end: String,
    /// `booked` or `cancelled`.
    pub status: String,
    /// The appointment this one replaced (after a reschedule).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rescheduled_from: Option<Uuid>,
    /// When it was booked (UTC).
    pub created_at: DateTime<Utc>,
}

impl Appointment {
    fn from_row(row: AppointmentRow, tz: chrono_tz::Tz) -> Self {
        Self {
            id: row.id,
            slot_id: row.slot_id,
            practitioner_id: row.practitioner_id,
            patient_id: row.patient_subject,
            start: domain::local_rfc3339(row.starts_at, tz),
            end: domain::local_rfc3339(row.ends_at, tz),
            status: row.status,
            rescheduled_from: row.rescheduled_from,
            created_at: row.created_at,
        }
    }
}

/// Body of `POST /v1/appointments` and `…/reschedule`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BookInput {
    /// The slot to book.
    pub slot_id: Uuid,
}

fn slot_lock_key(keyspace: &str, slot: Uuid) -> String {
    format!("{{booking:{keyspace}}}:slot-lock:{slot}")
}

/// Runs `work` while holding the slot's Redis lock. A crowd on one slot fails fast with 409
/// instead of queueing on the database; without Redis the database guard alone decides.
async fn with_slot_lock<T, F, Fut>(app: &AppState, slot: Uuid, work: F) -> Result<T, Problem>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<T, BookingError>>,
{
    let key = slot_lock_key(&app.keyspace, slot);
    let mut held = None;
    match app.redis.connection().await {
        Ok(mut conn) => match app
            .locks
            .try_acquire(&mut conn, &key, Duration::from_secs(5))
            .await
        {
            Ok(Some(guard)) => held = Some((conn, guard)),
            Ok(None) => {
                return Err(Problem::new(StatusCode::CONFLICT, "slot-being-booked", "Slot being booked")
                    .with_detail("someone else is booking this slot right now; pick another one or retry shortly"));
            }
            Err(err) => {
                app.lock_bypassed.inc();
                tracing::warn!(error = %err, "Redis slot lock unavailable; relying on the database guard");
            }
        },
        Err(err) => {
            app.lock_bypassed.inc();
            tracing::warn!(error = %err, "Redis unreachable; relying on the database guard");
        }
    }
    let result = work().await;
    if let Some((mut conn, guard)) = held
        && let Err(err) = app.locks.release(&mut conn, &guard).await
    {
        tracing::warn!(error = %err, "could not release the slot lock; it expires by itself");
    }
    Ok(result?)
}

/// Books a slot (role `patient`; `Idempotency-Key` required).
#[utoipa::path(post, path = "/v1/appointments", tag = "booking", request_body = BookInput,
    params(("Idempotency-Key" = String, Header, description = "unique per operation; reuse it to retry")),
    responses((status = 201, body = Appointment), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn book(
    State(app): State<AppState>,
    principal: Principal,
    _key: RequiredIdempotencyKey,
    ApiJson(input): ApiJson<BookInput>,
) -> Result<Response, Problem> {
    principal.require_role("patient")?;
    let patient = principal.subject().to_owned();
    let row = with_slot_lock(&app, input.slot_id, || {
        app.store.book(input.slot_id, &patient)
    })
    .await?;
    let appointment = Appointment::from_row(row, app.country.tz());
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/appointments/{}", appointment.id)) {
        headers.insert(header::LOCATION, location);
    }
    Ok((StatusCode::CREATED, headers, ApiJson(appointment)).into_response())
}

/// Appointments list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AppointmentList {
    /// The appointments.
    pub items: Vec<Appointment>,
}

/// The caller's appointments (patients), or their agenda from now on (practitioners).
#[utoipa::path(get, path = "/v1/appointments", tag = "booking",
    responses((status = 200, body = AppointmentList), (status = 401, body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub async fn list_appointments(
    State(app): State<AppState>,
    principal: Principal,
) -> Result<ApiJson<AppointmentList>, Problem> {
    let tz = app.country.tz();
    let rows = if principal.has_role("practitioner") {
        app.store
            .agenda(
                principal.subject(),
                Utc::now() - chrono::Duration::days(1),
                500,
            )
            .await?
    } else {
        app.store
            .patient_appointments(principal.subject(), 500)
            .await?
    };
    Ok(ApiJson(AppointmentList {
        items: rows
            .into_iter()
            .map(|r| Appointment::from_row(r, tz))
            .collect(),
    }))
}

fn actor(principal: &Principal) -> Actor {
    let subject = principal.subject().to_owned();
    if principal.has_role("admin") {
        Actor::Admin(subject)
    } else if principal.has_role("practitioner") {
        Actor::Practitioner(subject)
    } else {
        Actor::Patient(subject)
    }
}

/// One appointment of the caller's.
#[utoipa::path(get, path = "/v1/appointments/{id}", tag = "booking", params(("id" = Uuid, Path)),
    responses((status = 200, body = Appointment), (status = 404, body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub async fn get_appointment(
    State(app): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<Appointment>, Problem> {
    let id = parse_uuid("id", &id)?;
    let row = app.store.appointment_for(id, &actor(&principal)).await?;
    Ok(ApiJson(Appointment::from_row(row, app.country.tz())))
}

/// Cancels an appointment (its patient before the cut-off, its practitioner until the start)
/// and frees the slot.
#[utoipa::path(post, path = "/v1/appointments/{id}/cancel", tag = "booking", params(("id" = Uuid, Path)),
    responses((status = 200, body = Appointment), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub async fn cancel(
    State(app): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<Appointment>, Problem> {
    let id = parse_uuid("id", &id)?;
    let row = app.store.cancel(id, &actor(&principal)).await?;
    Ok(ApiJson(Appointment::from_row(row, app.country.tz())))
}

/// Moves an appointment to another slot in one transaction (role `patient`).
#[utoipa::path(post, path = "/v1/appointments/{id}/reschedule", tag = "booking", params(("id" = Uuid, Path)),
    request_body = BookInput,
    responses((status = 201, body = Appointment), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub async fn reschedule(
    State(app): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<BookInput>,
) -> Result<Response, Problem> {
    principal.require_role("patient")?;
    let id = parse_uuid("id", &id)?;
    let patient = principal.subject().to_owned();
    let row = with_slot_lock(&app, input.slot_id, || {
        app.store.reschedule(id, input.slot_id, &patient)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(Appointment::from_row(row, app.country.tz())),
    )
        .into_response())
}

/// The OpenAPI document of booking's endpoints.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(search_practitioners, create_practitioner, get_practitioner, update_practitioner, put_schedule, list_slots,
          book, list_appointments, get_appointment, cancel, reschedule),
    components(schemas(Problem, Practitioner, PractitionerInput, Schedule, domain::WorkingRange, domain::DayOff,
                       SearchPage, crate::search::SearchHit, SlotView, SlotList, Appointment, AppointmentList, BookInput)),
    tags((name = "booking", description = "Practitioners, slots and appointments"))
)]
pub struct BookingApi;
