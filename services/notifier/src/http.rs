//! Notifier's HTTP API: the caller's in-app notifications (list, read, live stream), their
//! notification preferences, and the dead letters for administrators.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use chrono::NaiveTime;
use futures::Stream;
use pulse_kit::auth::{Admin, Principal};
use pulse_kit::problem::{ApiJson, ApiPath, ApiQuery, Problem};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::deliveries::{DeadLetter, Deliveries, RetryError};
use crate::domain::Preferences;
use crate::inbox::{Inbox, InboxItem, InboxPage, ReadError, Wake};
use crate::preferences::PreferenceStore;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// In-app notifications.
    pub inbox: Inbox,
    /// Preferences.
    pub preferences: PreferenceStore,
    /// Deliveries (dead letters).
    pub deliveries: Deliveries,
    /// Cancelled when the replica drains: open streams end with a retry hint.
    pub draining: CancellationToken,
}

/// The routes.
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/v1/notifications", get(list))
        .route("/v1/notifications/stream", get(stream))
        .route("/v1/notifications/{id}/read", post(mark_read))
        .route(
            "/v1/me/notification-preferences",
            get(get_preferences).put(put_preferences),
        )
        .route("/v1/admin/notifications/dead-letters", get(dead_letters))
        .route(
            "/v1/admin/notifications/dead-letters/{id}/retry",
            post(retry_dead_letter),
        )
        .with_state(state)
}

/// The OpenAPI description of the routes.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list, stream, mark_read, get_preferences, put_preferences, dead_letters, retry_dead_letter),
    components(schemas(InboxPage, InboxItem, StreamEvent, PreferencesView, QuietHours, DeadLetterList, DeadLetter)),
    tags((name = "notifier", description = "In-app notifications, preferences and dead letters"))
)]
pub struct NotifierApi;

fn parse_id(raw: &str) -> Result<Uuid, Problem> {
    raw.parse()
        .map_err(|_| Problem::bad_request(format!("id: `{raw}` is not a UUID")).with("field", "id"))
}

fn database(err: sqlx::Error) -> Problem {
    Problem::from_error(&err)
}

// ----------------------------------------------------------------------------- notifications

/// Paging of the notification list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Notifications older than this stream position (`nextBefore` of the previous page).
    #[param(minimum = 1)]
    pub before: Option<i64>,
    /// Notifications per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub page_size: Option<i64>,
}

/// The caller's notifications, newest first, with the unread count.
#[utoipa::path(get, path = "/v1/notifications", tag = "notifier", params(ListQuery),
    responses((status = 200, body = InboxPage),
              (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn list(
    State(app): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<ApiJson<InboxPage>, Problem> {
    let size = query.page_size.unwrap_or(20);
    if !(1..=100).contains(&size) {
        return Err(
            Problem::bad_request(format!("page_size: {size} is outside 1..=100"))
                .with("field", "page_size"),
        );
    }
    if query.before.is_some_and(|b| b < 1) {
        return Err(
            Problem::bad_request("before: must be a stream position (at least 1)")
                .with("field", "before"),
        );
    }
    let page = app
        .inbox
        .page(principal.subject(), query.before, size)
        .await
        .map_err(database)?;
    Ok(ApiJson(page))
}

/// Marks one of the caller's notifications read.
#[utoipa::path(post, path = "/v1/notifications/{id}/read", tag = "notifier",
    params(("id" = Uuid, Path, description = "The notification")),
    responses((status = 200, body = InboxItem),
              (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn mark_read(
    State(app): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<InboxItem>, Problem> {
    let id = parse_id(&id)?;
    match app.inbox.mark_read(principal.subject(), id).await {
        Ok(item) => Ok(ApiJson(item)),
        Err(ReadError::NotFound(_)) => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "notification-not-found",
            "Notification not found",
        )
        .with_detail(format!("you have no notification {id}"))),
        Err(ReadError::Sql(err)) => Err(database(err)),
    }
}

/// One event of `GET /v1/notifications/stream`, as OpenAPI 3.1 describes an event of a
/// `text/event-stream` answer (its `event`, `id`, `data` and `retry` fields): what
/// [`next_event`] and [`retry_hint`] send.
pub struct StreamEvent;

impl utoipa::PartialSchema for StreamEvent {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let notification = serde_json::json!({
            "type": "object",
            "required": ["event", "id", "data"],
            "properties": {
                "event": { "const": "notification" },
                "id": { "type": "string", "pattern": "^[0-9]+$", "description": "The stream position: send it back as Last-Event-ID to resume after it" },
                "data": { "type": "string", "contentMediaType": "application/json", "contentSchema": { "$ref": "#/components/schemas/InboxItem" } }
            }
        });
        let reconnect = serde_json::json!({
            "type": "object",
            "required": ["event", "data", "retry"],
            "properties": {
                "event": { "const": "reconnect" },
                "retry": { "type": "integer", "minimum": 0, "description": "Milliseconds to wait before reconnecting (to another replica)" },
                "data": { "type": "string" }
            }
        });
        utoipa::openapi::schema::Schema::Object(pulse_kit::openapi::json_schema(
            serde_json::json!({ "anyOf": [notification, reconnect] }),
        ))
        .into()
    }
}

impl utoipa::ToSchema for StreamEvent {}

/// Notifications sent to a stream per read.
const STREAM_BATCH: i64 = 100;

/// A live stream of the caller's new notifications (Server-Sent Events). Each event is a
/// `notification` whose id is its stream position; reconnecting with `Last-Event-ID` resumes
/// after it. When the replica shuts down the stream ends with a `retry` hint, and the client
/// reconnects to another replica.
#[utoipa::path(get, path = "/v1/notifications/stream", tag = "notifier",
    params(("Last-Event-ID" = Option<i64>, Header, minimum = 0, description = "Resume after this stream position")),
    responses((status = 200, description = "`notification` events, each an InboxItem as JSON; a closing `reconnect` event", content_type = "text/event-stream", body = StreamEvent),
              (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn stream(
    State(app): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    let user = principal.subject().to_owned();
    let resume = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|v| *v >= 0)
                .ok_or_else(|| {
                    Problem::bad_request(
                        "Last-Event-ID: not a stream position (the id of an event this stream sent)",
                    )
                    .with("field", "Last-Event-ID")
                })?,
        ),
    };
    // Subscribe before reading the head, so nothing written in between is missed.
    let wakes = app.inbox.hub().subscribe();
    let after = match resume {
        Some(position) => position,
        None => app.inbox.head(&user).await.map_err(database)?,
    };
    let state = StreamState {
        inbox: app.inbox.clone(),
        draining: app.draining.clone(),
        user,
        after,
        wakes,
        pending: Vec::new(),
        look: true,
        done: false,
    };
    let events = futures::stream::unfold(state, next_event);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

struct StreamState {
    inbox: Inbox,
    draining: CancellationToken,
    user: String,
    after: i64,
    wakes: tokio::sync::broadcast::Receiver<Wake>,
    /// Read but not yet sent, oldest last.
    pending: Vec<InboxItem>,
    /// Whether the table may hold something new.
    look: bool,
    done: bool,
}

async fn next_event(mut s: StreamState) -> Option<(Result<Event, Infallible>, StreamState)> {
    loop {
        if s.done {
            return None;
        }
        if let Some(item) = s.pending.pop() {
            s.after = item.seq;
            let event = Event::default()
                .event("notification")
                .id(item.seq.to_string())
                .json_data(&item)
                .unwrap_or_else(|_| Event::default().comment("unencodable notification"));
            return Some((Ok(event), s));
        }
        if s.look {
            s.look = false;
            match s.inbox.after(&s.user, s.after, STREAM_BATCH).await {
                Ok(mut items) => {
                    if items.len() as i64 == STREAM_BATCH {
                        s.look = true;
                    }
                    items.reverse();
                    s.pending = items;
                    continue;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "notification stream cannot read; closing it");
                    s.done = true;
                    return Some((Ok(retry_hint()), s));
                }
            }
        }
        tokio::select! {
            () = s.draining.cancelled() => {
                s.done = true;
                return Some((Ok(retry_hint()), s));
            }
            wake = s.wakes.recv() => match wake {
                Ok(Wake::User(user)) if user != s.user => {}
                Ok(_) | Err(RecvError::Lagged(_)) => s.look = true,
                Err(RecvError::Closed) => {
                    s.done = true;
                    return Some((Ok(retry_hint()), s));
                }
            },
        }
    }
}

/// The last event of a stream this replica closes: reconnect in a second (to another replica).
fn retry_hint() -> Event {
    Event::default()
        .event("reconnect")
        .retry(Duration::from_secs(1))
        .data("this server is shutting down; reconnect with Last-Event-ID")
}

// ----------------------------------------------------------------------------- preferences

/// Quiet hours, in the country's local time (`HH:MM`); `start` after `end` spans midnight.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// Start, `HH:MM`.
    #[schema(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$", example = "22:00")]
    pub start: String,
    /// End, `HH:MM` (exclusive).
    #[schema(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$", example = "07:00")]
    pub end: String,
}

/// The caller's notification preferences. Messages marked `required` (a cancellation by the
/// practitioner, a sign-in to the account) are sent whatever they say.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreferencesView {
    /// E-mails wanted.
    pub email: bool,
    /// Text messages wanted.
    pub sms: bool,
    /// In-app notifications wanted.
    pub in_app: bool,
    /// While quiet, e-mails and text messages wait until the quiet hours end.
    pub quiet_hours: Option<QuietHours>,
}

impl From<Preferences> for PreferencesView {
    fn from(p: Preferences) -> Self {
        Self {
            email: p.email,
            sms: p.sms,
            in_app: p.in_app,
            quiet_hours: p.quiet_hours.map(|(start, end)| QuietHours {
                start: start.format("%H:%M").to_string(),
                end: end.format("%H:%M").to_string(),
            }),
        }
    }
}

impl PreferencesView {
    fn parse(&self) -> Result<Preferences, Problem> {
        let time = |field: &str, value: &str| {
            NaiveTime::parse_from_str(value, "%H:%M")
                .ok()
                .filter(|_| value.len() == 5)
                .ok_or_else(|| {
                    Problem::unprocessable(format!(
                        "{field}: `{value}` is not a local time `HH:MM` like 22:00"
                    ))
                    .with("field", field.to_owned())
                })
        };
        let quiet_hours = match &self.quiet_hours {
            None => None,
            Some(q) => {
                let start = time("quietHours.start", &q.start)?;
                let end = time("quietHours.end", &q.end)?;
                if start == end {
                    return Err(Problem::unprocessable(
                        "quietHours: start and end are equal; leave quietHours out (null) for none",
                    )
                    .with("field", "quietHours"));
                }
                Some((start, end))
            }
        };
        Ok(Preferences {
            email: self.email,
            sms: self.sms,
            in_app: self.in_app,
            quiet_hours,
        })
    }
}

/// The caller's notification preferences (every channel on when never set).
#[utoipa::path(get, path = "/v1/me/notification-preferences", tag = "notifier",
    responses((status = 200, body = PreferencesView),
              (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get_preferences(
    State(app): State<AppState>,
    principal: Principal,
) -> Result<ApiJson<PreferencesView>, Problem> {
    let prefs = app
        .preferences
        .get(principal.subject())
        .await
        .map_err(database)?;
    Ok(ApiJson(prefs.into()))
}

/// Replaces the caller's notification preferences.
#[utoipa::path(put, path = "/v1/me/notification-preferences", tag = "notifier",
    request_body = PreferencesView,
    responses((status = 200, body = PreferencesView),
              (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 415, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn put_preferences(
    State(app): State<AppState>,
    principal: Principal,
    ApiJson(view): ApiJson<PreferencesView>,
) -> Result<ApiJson<PreferencesView>, Problem> {
    let prefs = view.parse()?;
    app.preferences
        .put(principal.subject(), &prefs)
        .await
        .map_err(database)?;
    Ok(ApiJson(prefs.into()))
}

// ----------------------------------------------------------------------------- dead letters

/// Dead letters, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetterList {
    /// At most 200.
    pub items: Vec<DeadLetter>,
}

/// Deliveries that failed every attempt (or that a provider refused), newest first.
#[utoipa::path(get, path = "/v1/admin/notifications/dead-letters", tag = "notifier",
    responses((status = 200, body = DeadLetterList),
              (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 403, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn dead_letters(
    State(app): State<AppState>,
    _admin: Admin,
) -> Result<ApiJson<DeadLetterList>, Problem> {
    let items = app.deliveries.dead_letters(200).await.map_err(database)?;
    Ok(ApiJson(DeadLetterList { items }))
}

/// Puts a dead letter back in the queue, with fresh attempts.
#[utoipa::path(post, path = "/v1/admin/notifications/dead-letters/{id}/retry", tag = "notifier",
    params(("id" = Uuid, Path, description = "The dead delivery")),
    responses((status = 202, description = "Queued again"),
              (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn retry_dead_letter(
    State(app): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, Problem> {
    let id = parse_id(&id)?;
    match app.deliveries.retry_dead_letter(id).await {
        Ok(()) => Ok(StatusCode::ACCEPTED),
        Err(RetryError::NotFound(_)) => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "dead-letter-not-found",
            "Dead letter not found",
        )
        .with_detail(format!(
            "no dead delivery {id}: it never existed, or it was retried already"
        ))),
        Err(RetryError::Sql(err)) => Err(database(err)),
    }
}
