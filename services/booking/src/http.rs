//! Booking's HTTP API. Handlers are thin: authorize, parse, call a flow, shape the answer.
//!
//! Authorization comes first: a role extractor stands before the body in every handler that
//! needs one, so the order of refusals is always 401 (no valid token), 403 (no role), then 4xx
//! (invalid input). Every endpoint with an effect builds its answer with one function that the
//! flow also records, in the effect's transaction, as the answer to the request's
//! `Idempotency-Key` ([`RecordAnswer`]): a retry gets the first answer byte for byte.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use chrono::{DateTime, Utc};
use pulse_kit::auth::{Admin, Patient, Principal};
use pulse_kit::config::CountryConfig;
use pulse_kit::idempotency::{Answer, IdempotencyKey, RecordAnswer};
use pulse_kit::problem::{ApiJson, ApiPath, ApiQuery, Problem};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::appointments::Appointments;
use crate::domain::{
    self, Actor, AppointmentStatus, Invalid, Practitioner, RuleViolation, Schedule, SearchQuery,
    SlotRange, ValidSchedule,
};
pub use crate::domain::{
    MAX_PAGE_SIZE, MAX_SLOT_RANGE_DAYS, PractitionerInput, SearchParams, SlotParams,
};
use crate::flow::BookingError;
use crate::practitioners::Practitioners;
use crate::search::{Search, SearchPage, SlotView};
use crate::store::{AppointmentRow, SlotRow};

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The appointment flow.
    pub appointments: Appointments,
    /// The practitioner flow.
    pub practitioners: Practitioners,
    /// Search and its cache.
    pub search: Arc<Search>,
    /// The country.
    pub country: Arc<CountryConfig>,
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
        .route(BOOK_ROUTE, get(list_appointments).post(book))
        .route("/v1/appointments/{id}", get(get_appointment))
        .route("/v1/appointments/{id}/cancel", post(cancel))
        .route("/v1/appointments/{id}/reschedule", post(reschedule))
        .with_state(Arc::new(state))
}

/// The route that books a slot. Its `Idempotency-Key` is looked up only after a booking that
/// made no effect and was not turned away by the slot's lock: a booking records its answer in
/// its transaction, a retry of a done booking finds the slot taken (by itself) before any
/// effect, and the crowd the lock turns away costs no database access.
pub const BOOK_ROUTE: &str = "/v1/appointments";

impl From<BookingError> for Problem {
    fn from(err: BookingError) -> Self {
        let (status, slug, title) = match &err {
            BookingError::SlotNotFound(_) => {
                (StatusCode::NOT_FOUND, "slot-not-found", "Slot not found")
            }
            BookingError::PractitionerNotFound(_) => (
                StatusCode::NOT_FOUND,
                "practitioner-not-found",
                "Practitioner not found",
            ),
            BookingError::AppointmentNotFound(_) => (
                StatusCode::NOT_FOUND,
                "appointment-not-found",
                "Appointment not found",
            ),
            BookingError::SlotTaken => (StatusCode::CONFLICT, "slot-taken", "Slot taken"),
            BookingError::AccountTaken(_) => (
                StatusCode::CONFLICT,
                "account-already-linked",
                "Account already linked",
            ),
            BookingError::SlotBeingBooked => (
                StatusCode::CONFLICT,
                "slot-being-booked",
                "Slot being booked",
            ),
            BookingError::NotActive(_) => (
                StatusCode::CONFLICT,
                "appointment-not-active",
                "Appointment not active",
            ),
            BookingError::Rule(rule) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                rule_slug(rule),
                "Refused by the booking rules",
            ),
            BookingError::Invalid(invalid) => return invalid_body(invalid.clone()),
            BookingError::Db(err) => return Problem::from_error(err),
            BookingError::Outbox(err) => return Problem::from_error(err),
        };
        let problem = Problem::new(status, slug, title).with_detail(err.to_string());
        match err {
            // A booker turned away by another request's slot lock has no effect and lost to
            // whoever holds the lock: the refusal is not kept under its key (no database write
            // per loser of a crowd), and a retry is decided again. Never a duplicate of the
            // winner: a request's own retries share its lock. (`SlotTaken` is kept: a
            // concurrent duplicate of the winner gets it from the database and must answer
            // with the winner's response, which the middleware finds when it records.)
            BookingError::SlotBeingBooked => problem.not_kept(),
            _ => problem,
        }
    }
}

fn rule_slug(rule: &RuleViolation) -> &'static str {
    match rule {
        RuleViolation::TooSoon { .. } => "booking-too-soon",
        RuleViolation::BeyondHorizon { .. } => "booking-beyond-horizon",
        RuleViolation::DailyLimit { .. } => "daily-limit-reached",
        RuleViolation::CancellationTooLate { .. } => "cancellation-too-late",
        RuleViolation::AlreadyStarted => "appointment-started",
    }
}

/// 422: a well-formed body whose content is refused.
fn invalid_body(invalid: Invalid) -> Problem {
    let problem = if invalid.combination {
        Problem::invalid_combination(invalid.to_string())
    } else {
        Problem::unprocessable(invalid.to_string())
    };
    problem.with("field", invalid.field)
}

/// 400: a path or query parameter that does not parse (`bad-request`), or parameters that
/// parse but do not go together (`invalid-combination`).
fn invalid_request(invalid: Invalid) -> Problem {
    let problem = if invalid.combination {
        Problem::invalid_combination_in(StatusCode::BAD_REQUEST, invalid.to_string())
    } else {
        Problem::bad_request(invalid.to_string())
    };
    problem.with("field", invalid.field)
}

fn path_id(text: &str) -> Result<Uuid, Problem> {
    domain::parse_uuid("id", text).map_err(invalid_request)
}

// ----------------------------------------------------------------------------- practitioners

/// Creates a practitioner (role `admin`).
#[utoipa::path(post, path = "/v1/practitioners", tag = "booking", request_body = PractitionerInput,
    responses((status = 201, body = Practitioner), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 409, body = Problem, content_type = "application/problem+json", description = "account-already-linked: `accountSubject` is another practitioner's"),
              (status = 422, body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub async fn create_practitioner(
    State(app): State<Arc<AppState>>,
    _admin: Admin,
    key: Option<IdempotencyKey>,
    ApiJson(input): ApiJson<PractitionerInput>,
) -> Result<Answer, Problem> {
    let draft = input.parse().map_err(invalid_body)?;
    let answer = |practitioner: &Practitioner| {
        Answer::json(StatusCode::CREATED, practitioner)
            .at(format!("/v1/practitioners/{}", practitioner.id))
    };
    let practitioner = app
        .practitioners
        .create(draft, RecordAnswer::new(key.as_ref(), &answer))
        .await?;
    Ok(answer(&practitioner))
}

/// Replaces a practitioner's profile (role `admin`); a schedule in the body replaces it too.
#[utoipa::path(put, path = "/v1/practitioners/{id}", tag = "booking", request_body = PractitionerInput,
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Practitioner), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, body = Problem, content_type = "application/problem+json", description = "account-already-linked: `accountSubject` is another practitioner's"),
              (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn update_practitioner(
    State(app): State<Arc<AppState>>,
    _admin: Admin,
    key: Option<IdempotencyKey>,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<PractitionerInput>,
) -> Result<Answer, Problem> {
    let id = path_id(&id)?;
    let draft = input.parse().map_err(invalid_body)?;
    let answer = |practitioner: &Practitioner| Answer::json(StatusCode::OK, practitioner);
    let practitioner = app
        .practitioners
        .update(id, draft, RecordAnswer::new(key.as_ref(), &answer))
        .await?;
    Ok(answer(&practitioner))
}

/// Replaces a weekly schedule (role `admin`); future free slots are rebuilt, booked ones kept.
#[utoipa::path(put, path = "/v1/practitioners/{id}/schedule", tag = "booking", request_body = Schedule,
    params(("id" = Uuid, Path)),
    responses((status = 204), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn put_schedule(
    State(app): State<Arc<AppState>>,
    _admin: Admin,
    key: Option<IdempotencyKey>,
    ApiPath(id): ApiPath<String>,
    ApiJson(schedule): ApiJson<Schedule>,
) -> Result<Answer, Problem> {
    let id = path_id(&id)?;
    let schedule = ValidSchedule::parse(schedule).map_err(invalid_body)?;
    let answer = |(): &()| Answer::empty(StatusCode::NO_CONTENT);
    app.practitioners
        .put_schedule(id, schedule, RecordAnswer::new(key.as_ref(), &answer))
        .await?;
    Ok(answer(&()))
}

/// One practitioner.
#[utoipa::path(get, path = "/v1/practitioners/{id}", tag = "booking", params(("id" = Uuid, Path)),
    responses((status = 200, body = Practitioner), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get_practitioner(
    State(app): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<Practitioner>, Problem> {
    let id = path_id(&id)?;
    Ok(ApiJson(app.practitioners.get(id).await?))
}

/// Searches practitioners: by specialty, city, distance and availability, with their earliest
/// free slots.
#[utoipa::path(get, path = "/v1/practitioners", tag = "booking", params(SearchParams),
    responses((status = 200, body = SearchPage), (status = 400, body = Problem, content_type = "application/problem+json")))]
pub async fn search_practitioners(
    State(app): State<Arc<AppState>>,
    ApiQuery(params): ApiQuery<SearchParams>,
) -> Result<Response, Problem> {
    let query = SearchQuery::parse(&params, &app.country, Utc::now()).map_err(invalid_request)?;
    let json = app
        .search
        .search(&query)
        .await
        .map_err(|e| Problem::from_error(&e))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
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
    State(app): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<SlotParams>,
) -> Result<ApiJson<SlotList>, Problem> {
    let id = path_id(&id)?;
    let tz = app.country.tz();
    let today = domain::local_day(Utc::now(), tz);
    let range = SlotRange::parse(&params, today).map_err(invalid_request)?;
    let slots = app.practitioners.free_slots_on(id, range).await?;
    let view = |s: SlotRow| SlotView {
        id: s.id,
        start: domain::local_rfc3339(s.starts_at, tz),
        end: domain::local_rfc3339(s.ends_at, tz),
    };
    Ok(ApiJson(SlotList {
        practitioner_id: id,
        timezone: app.country.timezone.clone(),
        slots: slots.into_iter().map(view).collect(),
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
    #[schema(value_type = String)]
    pub status: AppointmentStatus,
    /// The appointment this one replaced (after a reschedule).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rescheduled_from: Option<Uuid>,
    /// When it was booked (UTC).
    pub created_at: DateTime<Utc>,
}

impl Appointment {
    fn from_row(row: &AppointmentRow, tz: chrono_tz::Tz) -> Self {
        Self {
            id: row.id,
            slot_id: row.slot_id,
            practitioner_id: row.practitioner_id,
            patient_id: row.patient_subject.clone(),
            start: domain::local_rfc3339(row.starts_at, tz),
            end: domain::local_rfc3339(row.ends_at, tz),
            status: row.status,
            rescheduled_from: row.rescheduled_from,
            created_at: row.created_at,
        }
    }
}

impl AppState {
    fn view(&self, row: &AppointmentRow) -> Appointment {
        Appointment::from_row(row, self.country.tz())
    }
}

/// Body of `POST /v1/appointments` and `…/reschedule`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BookInput {
    /// The slot to book.
    pub slot_id: Uuid,
}

/// Books a slot (role `patient`; `Idempotency-Key` required).
#[utoipa::path(post, path = "/v1/appointments", tag = "booking", request_body = BookInput,
    params(("Idempotency-Key" = String, Header, description = "unique per operation; reuse it to retry")),
    responses((status = 201, body = Appointment), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn book(
    State(app): State<Arc<AppState>>,
    Patient(principal): Patient,
    key: IdempotencyKey,
    ApiJson(input): ApiJson<BookInput>,
) -> Result<Answer, Problem> {
    let answer = |row: &AppointmentRow| {
        Answer::json(StatusCode::CREATED, &app.view(row)).at(format!("/v1/appointments/{}", row.id))
    };
    let row = app
        .appointments
        .book(
            input.slot_id,
            principal.subject(),
            Some(&key),
            RecordAnswer::new(Some(&key), &answer),
        )
        .await?;
    Ok(answer(&row))
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
    State(app): State<Arc<AppState>>,
    principal: Principal,
) -> Result<ApiJson<AppointmentList>, Problem> {
    let rows = if principal.has_role("practitioner") {
        app.appointments.agenda(principal.subject()).await?
    } else {
        app.appointments.of_patient(principal.subject()).await?
    };
    let tz = app.country.tz();
    Ok(ApiJson(AppointmentList {
        items: rows
            .into_iter()
            .map(|r| Appointment::from_row(&r, tz))
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
    responses((status = 200, body = Appointment), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub async fn get_appointment(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<Appointment>, Problem> {
    let id = path_id(&id)?;
    let row = app.appointments.get_for(id, &actor(&principal)).await?;
    Ok(ApiJson(app.view(&row)))
}

/// Cancels an appointment (its patient before the cut-off, its practitioner until the start)
/// and frees the slot.
#[utoipa::path(post, path = "/v1/appointments/{id}/cancel", tag = "booking", operation_id = "cancel_appointment", params(("id" = Uuid, Path)),
    responses((status = 200, body = Appointment), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub async fn cancel(
    State(app): State<Arc<AppState>>,
    principal: Principal,
    key: Option<IdempotencyKey>,
    ApiPath(id): ApiPath<String>,
) -> Result<Answer, Problem> {
    let id = path_id(&id)?;
    let answer = |row: &AppointmentRow| Answer::json(StatusCode::OK, &app.view(row));
    let row = app
        .appointments
        .cancel(
            id,
            &actor(&principal),
            RecordAnswer::new(key.as_ref(), &answer),
        )
        .await?;
    Ok(answer(&row))
}

/// Moves an appointment to another slot in one transaction (role `patient`).
#[utoipa::path(post, path = "/v1/appointments/{id}/reschedule", tag = "booking", params(("id" = Uuid, Path)),
    request_body = BookInput,
    responses((status = 201, body = Appointment), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub async fn reschedule(
    State(app): State<Arc<AppState>>,
    Patient(principal): Patient,
    key: Option<IdempotencyKey>,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<BookInput>,
) -> Result<Answer, Problem> {
    let id = path_id(&id)?;
    let answer = |row: &AppointmentRow| Answer::json(StatusCode::CREATED, &app.view(row));
    let row = app
        .appointments
        .reschedule(
            id,
            input.slot_id,
            principal.subject(),
            key.as_ref(),
            RecordAnswer::new(key.as_ref(), &answer),
        )
        .await?;
    Ok(answer(&row))
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
