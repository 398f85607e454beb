//! `Idempotency-Key` for state-changing endpoints, with Stripe's semantics:
//!
//! - same key, same request → the stored response (with `Idempotent-Replayed: true`);
//! - same key, different request → 422;
//! - same key while the first request is still running → 409;
//! - a 5xx is not stored, so the client may retry with the same key;
//! - keys are scoped to the caller (the token's subject) and kept at least 24 hours.
//!
//! [`layer`] wraps a component's router; its table lives in the component's schema.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::auth::Principal;
use crate::problem::Problem;

/// The request header.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Response header set on replays.
pub const REPLAYED: &str = "idempotent-replayed";
/// Largest request body the middleware buffers.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Headers of the first response that are replayed with it.
const STORED_HEADERS: &[&str] = &["content-type", "location"];

/// Settings of the idempotency middleware.
#[derive(Debug, Clone)]
pub struct IdempotencyStore {
    pool: PgPool,
    /// A `running` key older than this is considered abandoned (its process died).
    running_lease: Duration,
}

impl IdempotencyStore {
    /// A store over the component's pool.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            running_lease: Duration::from_secs(60),
        }
    }

    /// Changes how long a running request holds its key against a crashed process.
    #[must_use]
    pub fn with_running_lease(mut self, lease: Duration) -> Self {
        self.running_lease = lease;
        self
    }
}

/// Wraps `router` so its state-changing requests honour `Idempotency-Key`.
pub fn layer<S: Clone + Send + Sync + 'static>(
    router: axum::Router<S>,
    store: IdempotencyStore,
) -> axum::Router<S> {
    router.layer(axum::middleware::from_fn_with_state(store, middleware))
}

/// Deletes keys older than `keep` (never less than 24 hours); returns how many.
pub async fn prune(pool: &PgPool, keep: Duration) -> Result<u64, sqlx::Error> {
    let keep = keep.max(Duration::from_secs(24 * 3600));
    let done = sqlx::query(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
    )
    .bind(keep.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Extractor for endpoints that require the header (400 when it is missing).
#[derive(Debug, Clone)]
pub struct RequiredIdempotencyKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequiredIdempotencyKey {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.headers.get(IDEMPOTENCY_KEY) {
            Some(value) => Ok(Self(validate_key(value)?.to_owned())),
            None => Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "idempotency-key-required",
                "Idempotency-Key required",
            )
            .with_detail("send an `Idempotency-Key` header with a unique value (a UUID) per operation; reuse it when you retry")),
        }
    }
}

fn validate_key(value: &HeaderValue) -> Result<&str, Problem> {
    let key = value.to_str().unwrap_or_default();
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "idempotency-key-invalid",
            "Invalid Idempotency-Key",
        )
        .with_detail("the Idempotency-Key must be 1 to 255 visible ASCII characters"));
    }
    Ok(key)
}

fn is_state_changing(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// The caller a key belongs to: the subject of the token verified by
/// [`authenticate`](crate::auth::authenticate), or anonymous.
fn scope_of(parts: &Parts) -> String {
    match parts.extensions.get::<Principal>() {
        Some(principal) => format!("sub:{}", principal.subject()),
        None => "anonymous".to_owned(),
    }
}

enum Existing {
    Done {
        status: u16,
        headers: serde_json::Value,
        body: Vec<u8>,
    },
    Running,
    Mismatch,
    Vanished,
}

/// The middleware itself (see the module documentation).
pub async fn middleware(
    State(store): State<IdempotencyStore>,
    request: Request,
    next: Next,
) -> Response {
    if !is_state_changing(request.method()) {
        return next.run(request).await;
    }
    let Some(raw_key) = request.headers().get(IDEMPOTENCY_KEY).cloned() else {
        return next.run(request).await;
    };
    let key = match validate_key(&raw_key) {
        Ok(key) => key.to_owned(),
        Err(problem) => return problem.into_response(),
    };
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
            )
            .with_detail(format!(
                "the request body must be at most {MAX_BODY_BYTES} bytes"
            ))
            .into_response();
        }
    };
    let scope = scope_of(&parts);
    let fingerprint = fingerprint(&parts, &bytes);

    match claim(&store, &scope, &key, &fingerprint).await {
        Ok(true) => {}
        Ok(false) => return answer_existing(&store, &scope, &key, &fingerprint).await,
        Err(err) => return Problem::internal(&err).into_response(),
    }

    let mut guard = RunningKey {
        pool: store.pool.clone(),
        scope: scope.clone(),
        key: key.clone(),
        armed: true,
    };
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let (mut head, body) = response.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(err) => return Problem::internal(&err).into_response(),
    };
    if head.status.is_server_error() {
        // Not stored: the guard frees the key so the client can retry.
        return Response::from_parts(head, Body::from(body));
    }
    match complete(&store, &scope, &key, head.status, &head.headers, &body).await {
        Ok(()) => guard.armed = false,
        Err(err) => {
            tracing::error!(error = %err, "could not store the idempotent response; a retry will run again")
        }
    }
    head.headers.remove(REPLAYED);
    Response::from_parts(head, Body::from(body))
}

fn fingerprint(parts: &Parts, body: &Bytes) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str().as_bytes());
    hasher.update(b"\n");
    hasher.update(
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .as_bytes(),
    );
    hasher.update(b"\n");
    hasher.update(body);
    hasher.finalize().to_vec()
}

/// Inserts the key as running; `false` if it already exists (and is not an abandoned run of
/// the same request, which is taken over).
async fn claim(
    store: &IdempotencyStore,
    scope: &str,
    key: &str,
    fingerprint: &[u8],
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (scope, idempotency_key, fingerprint, state)
         VALUES ($1, $2, $3, 'running') ON CONFLICT DO NOTHING",
    )
    .bind(scope)
    .bind(key)
    .bind(fingerprint)
    .execute(&store.pool)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(true);
    }
    let taken_over = sqlx::query(
        "UPDATE idempotency_keys SET created_at = now()
         WHERE scope = $1 AND idempotency_key = $2 AND fingerprint = $3 AND state = 'running'
           AND created_at < now() - make_interval(secs => $4)",
    )
    .bind(scope)
    .bind(key)
    .bind(fingerprint)
    .bind(store.running_lease.as_secs_f64())
    .execute(&store.pool)
    .await?
    .rows_affected();
    Ok(taken_over == 1)
}

#[derive(sqlx::FromRow)]
struct StoredKey {
    fingerprint: Vec<u8>,
    state: String,
    response_status: Option<i16>,
    response_headers: Option<serde_json::Value>,
    response_body: Option<Vec<u8>>,
}

async fn lookup(
    store: &IdempotencyStore,
    scope: &str,
    key: &str,
    fingerprint: &[u8],
) -> Result<Existing, sqlx::Error> {
    let row: Option<StoredKey> = sqlx::query_as(
        "SELECT fingerprint, state, response_status, response_headers, response_body
         FROM idempotency_keys WHERE scope = $1 AND idempotency_key = $2",
    )
    .bind(scope)
    .bind(key)
    .fetch_optional(&store.pool)
    .await?;
    Ok(match row {
        None => Existing::Vanished,
        Some(row) if row.fingerprint != fingerprint => Existing::Mismatch,
        Some(StoredKey {
            state,
            response_status: Some(status),
            response_headers,
            response_body,
            ..
        }) if state == "done" => Existing::Done {
            status: u16::try_from(status).unwrap_or(500),
            headers: response_headers.unwrap_or_default(),
            body: response_body.unwrap_or_default(),
        },
        Some(_) => Existing::Running,
    })
}

async fn answer_existing(
    store: &IdempotencyStore,
    scope: &str,
    key: &str,
    fingerprint: &[u8],
) -> Response {
    match lookup(store, scope, key, fingerprint).await {
        Ok(Existing::Done { status, headers, body }) => replay(status, &headers, body),
        Ok(Existing::Mismatch) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "Idempotency-Key reused",
        )
        .with_detail("this Idempotency-Key was used for a different request; use a new key for a new operation")
        .into_response(),
        Ok(Existing::Running) | Ok(Existing::Vanished) => Problem::new(
            StatusCode::CONFLICT,
            "idempotency-request-in-progress",
            "Request in progress",
        )
        .with_detail("a request with this Idempotency-Key is still being processed; retry in a moment")
        .into_response(),
        Err(err) => Problem::internal(&err).into_response(),
    }
}

fn replay(status: u16, headers: &serde_json::Value, body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if let Some(map) = headers.as_object() {
        for (name, value) in map {
            if let (Ok(name), Some(Ok(value))) = (
                HeaderName::try_from(name.as_str()),
                value.as_str().map(HeaderValue::from_str),
            ) {
                response.headers_mut().insert(name, value);
            }
        }
    }
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

async fn complete(
    store: &IdempotencyStore,
    scope: &str,
    key: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(), sqlx::Error> {
    let mut stored = serde_json::Map::new();
    for name in STORED_HEADERS {
        if let Some(value) = headers.get(*name).and_then(|v| v.to_str().ok()) {
            stored.insert((*name).to_owned(), value.into());
        }
    }
    sqlx::query(
        "UPDATE idempotency_keys
         SET state = 'done', response_status = $3, response_headers = $4, response_body = $5, completed_at = now()
         WHERE scope = $1 AND idempotency_key = $2",
    )
    .bind(scope)
    .bind(key)
    .bind(i16::try_from(status.as_u16()).unwrap_or(500))
    .bind(serde_json::Value::Object(stored))
    .bind(body.as_ref())
    .execute(&store.pool)
    .await?;
    Ok(())
}

/// Frees a running key when its request ends without a stored response (5xx, a client that
/// went away, a panic), so a retry can run.
struct RunningKey {
    pool: PgPool,
    scope: String,
    key: String,
    armed: bool,
}

impl Drop for RunningKey {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = self.pool.clone();
        let scope = std::mem::take(&mut self.scope);
        let key = std::mem::take(&mut self.key);
        runtime.spawn(async move {
            let freed = sqlx::query(
                "DELETE FROM idempotency_keys WHERE scope = $1 AND idempotency_key = $2 AND state = 'running'",
            )
            .bind(&scope)
            .bind(&key)
            .execute(&pool)
            .await;
            if let Err(err) = freed {
                tracing::warn!(error = %err, "could not free an unfinished idempotency key; it expires with its lease");
            }
        });
    }
}
