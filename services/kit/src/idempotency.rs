//! `Idempotency-Key` for state-changing endpoints, with Stripe's promise: a retry returns the
//! first outcome, whatever happened to the server in between.
//!
//! - same key, same request → the stored response (with `Idempotent-Replayed: true`);
//! - same key, different request → 422;
//! - same key while the first request still runs → the retry waits for it and gets its answer;
//! - a 5xx is not stored, so the client may retry with the same key;
//! - keys are scoped to the authenticated caller (the token's subject) and kept at least 24
//!   hours; a request without a valid token is not looked at (its handler answers 401), and
//!   an operation anyone may call (sign-in, the payment webhook) has no keys: the header is
//!   neither documented nor read there.
//!
//! A response with an effect is recorded by the flow itself, inside the transaction that makes
//! the effect ([`IdempotencyKey::record`]): both commit or neither does, so a crash can never
//! leave an effect without its answer, and nothing outlives a dead process (no lease, no lock).
//! Answers without an effect (validation errors, refusals) are recorded by the [`middleware`]
//! after the handler. A concurrent duplicate of a running request either finds the record when
//! it is committed, or collides with it on the table's primary key, which makes its own
//! transaction fail and roll back; either way it answers with the first request's response.
//!
//! [`layer`] wraps a component's router; the table lives in the component's schema.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, MatchedPath, OptionalFromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{PgConnection, PgPool, Postgres};

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

/// A response extension: the answer is not recorded under the request's key (a refusal that
/// depends on contended state; see [`Problem::not_kept`]). A retry with the key is decided
/// again.
#[derive(Debug, Clone, Copy)]
pub struct NotKept;

/// Where a component's keys are kept, and for which operations.
#[derive(Debug, Clone)]
pub struct IdempotencyStore {
    pool: PgPool,
    /// The operations keys are honoured on (method, route template); all when `None`.
    operations: Option<Arc<HashSet<(Method, String)>>>,
    /// The operations whose flow keeps its own records.
    kept_by_flow: crate::component::Operations,
    /// The operations whose key is looked up only after a handler that made no effect.
    looked_up_after: crate::component::Operations,
}

impl IdempotencyStore {
    /// A store over the component's pool, honouring keys on every state-changing request.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            operations: None,
            kept_by_flow: crate::component::Operations::default(),
            looked_up_after: crate::component::Operations::default(),
        }
    }

    /// On these operations the key is looked up after the handler instead of before it, and
    /// only when the handler recorded no effect: a first attempt saves the lookup's round trip.
    /// A flow may be listed when every effect it makes records its answer in the effect's own
    /// transaction ([`RecordAnswer`]), what it does before that transaction may run again, and
    /// its refusals marked [`NotKept`] are ones it would give a retry of a done request too (a
    /// crowd turned away from Redis alone, costing no database access). A retry of a done
    /// request then either fails without effect, or makes the effect again and collides with
    /// the first request's record, which rolls its transaction back; either way the lookup that
    /// follows answers with the first outcome (or 422 for a different request under the key).
    #[must_use]
    pub fn looked_up_after<'a>(
        mut self,
        operations: impl IntoIterator<Item = (Method, &'a str)>,
    ) -> Self {
        self.looked_up_after = crate::component::Operations::new(operations);
        self
    }

    /// On these operations the flow keeps its own records, atomically with its effect (the
    /// seckill reservation script does, in Redis): the middleware still checks the key and
    /// hands it over as [`IdempotencyKey`], but neither looks it up nor stores an answer, so
    /// the operation costs no database round trip. Such a flow promises what the middleware
    /// does for effects (a retry gets the first effect's answer); a refusal, which has no
    /// effect, is decided again.
    #[must_use]
    pub fn kept_by_flow<'a>(
        mut self,
        operations: impl IntoIterator<Item = (Method, &'a str)>,
    ) -> Self {
        self.kept_by_flow = crate::component::Operations::new(operations);
        self
    }

    /// Honours keys only on these operations (method and route template `/v1/orders/{id}`):
    /// the ones that require a bearer token, as the component's OpenAPI document lists them
    /// ([`crate::openapi::keyed_operations`]). Keys are remembered per caller, so an operation
    /// anyone may call keeps none and does not look at the header; a method a route does not
    /// have is answered 405 by the router instead of being judged by its key first.
    #[must_use]
    pub fn for_operations(
        mut self,
        operations: impl IntoIterator<Item = (Method, String)>,
    ) -> Self {
        self.operations = Some(Arc::new(operations.into_iter().collect()));
        self
    }

    /// Whether keys are honoured on a request with `method` to `route` (its route template):
    /// on every state-changing request when no operations were given.
    fn honours(&self, method: &Method, route: Option<&str>) -> bool {
        match (&self.operations, route) {
            (None, _) => true,
            (Some(operations), Some(route)) => {
                operations.iter().any(|(m, r)| m == method && r == route)
            }
            (Some(_), None) => false,
        }
    }
}

/// Wraps `router` so its state-changing requests honour `Idempotency-Key`.
pub fn layer<S: Clone + Send + Sync + 'static>(
    router: axum::Router<S>,
    store: IdempotencyStore,
) -> axum::Router<S> {
    // A route layer: a method the route does not have is answered 405 by the router, not
    // judged by its key first.
    router.route_layer(axum::middleware::from_fn_with_state(store, middleware))
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

/// The request's key, handed by the [`middleware`] to the handler: a flow records its answer
/// with [`IdempotencyKey::record`] in the transaction that makes the effect.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    scope: String,
    key: String,
    fingerprint: Vec<u8>,
    recorded: Arc<AtomicBool>,
}

impl IdempotencyKey {
    /// The key as the client sent it.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The caller it belongs to (`sub:<subject>`).
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// Records `status`, `headers` and `body` as the answer to this key, on `tx`: it commits or
    /// rolls back with the flow's effect. Fails (and so rolls the flow back) when a concurrent
    /// request with the same key committed first; the middleware then answers with that one.
    pub async fn record(
        &self,
        tx: &mut PgConnection,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), sqlx::Error> {
        insert(tx, self, status, headers, body).await?;
        self.recorded.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// [`IdempotencyKey::record`] of a JSON answer, optionally with a `Location`.
    pub async fn record_json<T: Serialize>(
        &self,
        tx: &mut PgConnection,
        status: StatusCode,
        location: Option<&str>,
        body: &T,
    ) -> Result<(), sqlx::Error> {
        let bytes = serde_json::to_vec(body).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let mut headers = HeaderMap::new();
        headers.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(location) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
            headers.insert(axum::http::header::LOCATION, location);
        }
        self.record(tx, status, &headers, &bytes).await
    }
}

fn key_required() -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "idempotency-key-required",
        "Idempotency-Key required",
    )
    .with_detail("send an `Idempotency-Key` header with a unique value (a UUID) per operation; reuse it when you retry")
}

/// Endpoints that require the header: 400 when it is missing (or invalid).
impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(key) = parts.extensions.get::<IdempotencyKey>() {
            return Ok(key.clone());
        }
        match parts.headers.get(IDEMPOTENCY_KEY) {
            Some(value) => validate_key(value).and(Err(key_required())),
            None => Err(key_required()),
        }
    }
}

/// Endpoints where the header is optional.
impl<S: Send + Sync> OptionalFromRequestParts<S> for IdempotencyKey {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<IdempotencyKey>().cloned())
    }
}

/// Extractor for endpoints that require the header (400 when it is missing), for handlers that
/// only need its text.
#[derive(Debug, Clone)]
pub struct RequiredIdempotencyKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequiredIdempotencyKey {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.headers.get(IDEMPOTENCY_KEY) {
            Some(value) => Ok(Self(validate_key(value)?.to_owned())),
            None => Err(key_required()),
        }
    }
}

/// The key, if it is 1 to 255 visible ASCII characters (documented as
/// [`crate::openapi::IDEMPOTENCY_KEY_PATTERN`]).
pub(crate) fn validate_key(value: &HeaderValue) -> Result<&str, Problem> {
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

enum Stored {
    Done {
        status: u16,
        headers: serde_json::Value,
        body: Vec<u8>,
    },
    Mismatch,
    Missing,
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
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    if !store.honours(request.method(), route) {
        return next.run(request).await;
    }
    let kept_by_flow =
        route.is_some_and(|route| store.kept_by_flow.contains(request.method(), route));
    let lookup_after =
        route.is_some_and(|route| store.looked_up_after.contains(request.method(), route));
    let Some(raw_key) = request.headers().get(IDEMPOTENCY_KEY).cloned() else {
        return next.run(request).await;
    };
    // Authorization before validation: an anonymous caller gets its 401 from the handler,
    // whatever the key.
    let Some(subject) = request
        .extensions()
        .get::<Principal>()
        .map(|p| p.subject().to_owned())
    else {
        return next.run(request).await;
    };
    let key = match validate_key(&raw_key) {
        Ok(key) => key.to_owned(),
        Err(problem) => return problem.into_response(),
    };
    if kept_by_flow {
        let mut request = request;
        request.extensions_mut().insert(IdempotencyKey {
            scope: format!("sub:{subject}"),
            fingerprint: Vec::new(),
            key,
            recorded: Arc::default(),
        });
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
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
    let idempotency = IdempotencyKey {
        scope: format!("sub:{subject}"),
        fingerprint: fingerprint(&parts, &bytes),
        key,
        recorded: Arc::default(),
    };
    if !lookup_after {
        match lookup(&store.pool, &idempotency).await {
            Ok(Stored::Missing) => {}
            Ok(stored) => return answer(stored, None),
            // 503 when the database is unreachable: nothing was done, a retry can succeed.
            Err(err) => return Problem::from_error(&err).into_response(),
        }
    }

    parts.extensions.insert(idempotency.clone());
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let (mut head, body) = response.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(err) => return Problem::internal(&err).into_response(),
    };
    head.headers.remove(REPLAYED);
    let fresh = Response::from_parts(head, Body::from(body.clone()));
    let recorded = idempotency.recorded.load(Ordering::SeqCst);
    let kept = fresh.extensions().get::<NotKept>().is_none();
    if fresh.status().is_server_error() {
        // Not stored, so the client may retry; but a duplicate that lost the race to a
        // committed first request answers with that request's response (or 422 when it is
        // another request under the same key).
        return match lookup(&store.pool, &idempotency).await {
            Ok(stored @ (Stored::Done { .. } | Stored::Mismatch)) => answer(stored, None),
            _ => fresh,
        };
    }
    if lookup_after && !recorded && kept {
        // No effect: this may be a retry, whose first outcome wins.
        match lookup(&store.pool, &idempotency).await {
            Ok(Stored::Missing) => {}
            Ok(stored) => return answer(stored, None),
            Err(err) => return Problem::from_error(&err).into_response(),
        }
    }
    if recorded || !kept {
        return fresh;
    }
    // An answer without an effect (a refusal, a validation error): kept as the first outcome,
    // unless a concurrent request with the key recorded one first.
    let mut conn = match store.pool.acquire().await {
        Ok(conn) => conn,
        Err(err) => {
            tracing::warn!(error = %err, "could not store an idempotent answer");
            return fresh;
        }
    };
    match insert(
        &mut conn,
        &idempotency,
        fresh.status(),
        fresh.headers(),
        &body,
    )
    .await
    {
        Ok(()) => fresh,
        Err(err) if is_unique_violation(&err) => match lookup(&store.pool, &idempotency).await {
            Ok(Stored::Missing) | Err(_) => fresh,
            Ok(stored) => answer(stored, Some(fresh)),
        },
        Err(err) => {
            tracing::warn!(error = %err, "could not store an idempotent answer; a retry will run again");
            fresh
        }
    }
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

fn answer(stored: Stored, fallback: Option<Response>) -> Response {
    match stored {
        Stored::Done {
            status,
            headers,
            body,
        } => replay(status, &headers, body),
        Stored::Mismatch => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "Idempotency-Key reused",
        )
        .with_detail("this Idempotency-Key was used for a different request; use a new key for a new operation")
        .into_response(),
        Stored::Missing => fallback.unwrap_or_else(|| {
            Problem::internal(&"an idempotency record vanished").into_response()
        }),
    }
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

#[derive(sqlx::FromRow)]
struct StoredKey {
    fingerprint: Vec<u8>,
    state: String,
    response_status: Option<i16>,
    response_headers: Option<serde_json::Value>,
    response_body: Option<Vec<u8>>,
}

async fn lookup(pool: &PgPool, key: &IdempotencyKey) -> Result<Stored, sqlx::Error> {
    let row: Option<StoredKey> = sqlx::query_as(
        "SELECT fingerprint, state, response_status, response_headers, response_body
         FROM idempotency_keys WHERE scope = $1 AND idempotency_key = $2",
    )
    .bind(&key.scope)
    .bind(&key.key)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        None => Stored::Missing,
        Some(row) if row.fingerprint != key.fingerprint => Stored::Mismatch,
        Some(StoredKey {
            state,
            response_status: Some(status),
            response_headers,
            response_body,
            ..
        }) if state == "done" => Stored::Done {
            status: u16::try_from(status).unwrap_or(500),
            headers: response_headers.unwrap_or_default(),
            body: response_body.unwrap_or_default(),
        },
        Some(_) => Stored::Missing,
    })
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

async fn insert(
    conn: &mut PgConnection,
    key: &IdempotencyKey,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), sqlx::Error> {
    let record = AnswerRecord::new(key, status, headers, body.to_vec());
    record
        .bind(sqlx::query(&AnswerRecord::insert_sql(1)))
        .execute(conn)
        .await?;
    Ok(())
}

/// An answer to record under a request's key, as values a flow writes inside one of its own
/// statements ([`BeforeCommit::into_record`]), one round trip less than a statement of its own.
#[derive(Debug, Clone)]
pub struct AnswerRecord {
    key: IdempotencyKey,
    status: i16,
    headers: serde_json::Value,
    body: Vec<u8>,
}

impl AnswerRecord {
    fn new(key: &IdempotencyKey, status: StatusCode, headers: &HeaderMap, body: Vec<u8>) -> Self {
        let mut stored = serde_json::Map::new();
        for name in STORED_HEADERS {
            if let Some(value) = headers.get(*name).and_then(|v| v.to_str().ok()) {
                stored.insert((*name).to_owned(), value.into());
            }
        }
        Self {
            key: key.clone(),
            status: i16::try_from(status.as_u16()).unwrap_or(500),
            headers: serde_json::Value::Object(stored),
            body,
        }
    }

    /// The statement that inserts it, its six values taken from the bind parameters `$first`
    /// on (in [`AnswerRecord::bind`]'s order): the end of a statement whose `WITH` writes the
    /// flow's own rows.
    pub fn insert_sql(first: usize) -> String {
        let p = |i: usize| format!("${}", first + i);
        format!(
            "INSERT INTO idempotency_keys
                 (scope, idempotency_key, fingerprint, state, response_status, response_headers, response_body, completed_at)
             VALUES ({}, {}, {}, 'done', {}, {}, {}, now())",
            p(0),
            p(1),
            p(2),
            p(3),
            p(4),
            p(5)
        )
    }

    /// Binds its six values after `query`'s, in [`AnswerRecord::insert_sql`]'s order.
    pub fn bind<'q>(
        &'q self,
        query: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments> {
        query
            .bind(&self.key.scope)
            .bind(&self.key.key)
            .bind(&self.key.fingerprint)
            .bind(self.status)
            .bind(&self.headers)
            .bind(&self.body)
    }

    /// Notes that the statement that wrote it succeeded, as [`IdempotencyKey::record`] does: it
    /// commits or rolls back with the flow's effect.
    pub fn written(&self) {
        self.key.recorded.store(true, Ordering::SeqCst);
    }
}

/// Work that must commit with a flow's changes, or not at all.
///
/// Every write of a flow runs in one transaction shaped `begin → work → hook → commit`: the
/// hook runs after the flow's own writes and its outbox event, just before `COMMIT`, with what
/// the flow is about to return. The request's idempotency record goes here ([`RecordAnswer`]),
/// so a crash can never keep an effect without its answer, or an answer without its effect. A
/// failing hook rolls the whole flow back.
pub trait BeforeCommit<T>: Send {
    /// Runs on the flow's transaction.
    fn run(
        self,
        tx: &mut PgConnection,
        outcome: &T,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// This hook's whole work for `outcome` as an [`AnswerRecord`] (`Ok(None)`: nothing to
    /// write), for a flow that writes it inside one of its own statements (and calls
    /// [`AnswerRecord::written`] once that succeeded); `Err(self)` when the hook has other
    /// work, which [`BeforeCommit::run`] then does.
    fn into_record(self, _outcome: &T) -> Result<Option<AnswerRecord>, Self>
    where
        Self: Sized,
    {
        Err(self)
    }
}

/// Nothing to add to a flow's transaction (jobs, consumers, seeding).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHook;

impl<T: Sync> BeforeCommit<T> for NoHook {
    async fn run(self, _tx: &mut PgConnection, _outcome: &T) -> Result<(), sqlx::Error> {
        Ok(())
    }

    fn into_record(self, _outcome: &T) -> Result<Option<AnswerRecord>, Self> {
        Ok(None)
    }
}

/// The HTTP answer to a flow's outcome: a status, a JSON body and maybe a `Location`. The
/// handler sends it and [`RecordAnswer`] stores it, from one function, so the replay of a retry
/// is byte for byte the first answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status.
    pub status: StatusCode,
    /// `Location` header.
    pub location: Option<String>,
    /// The JSON body, serialized once (`None`: no body, as for 204).
    pub body: Option<Vec<u8>>,
}

impl Answer {
    /// `status` with `body` as JSON (fields in their declared order).
    pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Self {
        Self {
            status,
            location: None,
            body: Some(serde_json::to_vec(body).unwrap_or_default()),
        }
    }

    /// `status` without a body.
    pub fn empty(status: StatusCode) -> Self {
        Self {
            status,
            location: None,
            body: None,
        }
    }

    /// Adds a `Location`.
    #[must_use]
    pub fn at(mut self, location: impl Into<String>) -> Self {
        self.location = Some(location.into());
        self
    }

    fn parts(&self) -> (HeaderMap, Vec<u8>) {
        let mut headers = HeaderMap::new();
        let body = match &self.body {
            Some(bytes) => {
                headers.insert(
                    axum::http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                bytes.clone()
            }
            None => Vec::new(),
        };
        if let Some(location) = self
            .location
            .as_deref()
            .and_then(|l| HeaderValue::from_str(l).ok())
        {
            headers.insert(axum::http::header::LOCATION, location);
        }
        (headers, body)
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let (headers, body) = self.parts();
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = self.status;
        *response.headers_mut() = headers;
        response
    }
}

/// Records the request's answer, built from the flow's outcome by `answer`, in the flow's
/// transaction. Without a key (the client sent none) it does nothing.
pub struct RecordAnswer<'a, F> {
    key: Option<&'a IdempotencyKey>,
    answer: &'a F,
}

impl<'a, F> RecordAnswer<'a, F> {
    /// Records `answer(outcome)` under `key`.
    pub fn new(key: Option<&'a IdempotencyKey>, answer: &'a F) -> Self {
        Self { key, answer }
    }
}

impl<T, F> BeforeCommit<T> for RecordAnswer<'_, F>
where
    T: Sync,
    F: Fn(&T) -> Answer + Sync,
{
    async fn run(self, tx: &mut PgConnection, outcome: &T) -> Result<(), sqlx::Error> {
        let Some(key) = self.key else {
            return Ok(());
        };
        let answer = (self.answer)(outcome);
        let (headers, body) = answer.parts();
        key.record(tx, answer.status, &headers, &body).await
    }

    fn into_record(self, outcome: &T) -> Result<Option<AnswerRecord>, Self> {
        Ok(self.key.map(|key| {
            let answer = (self.answer)(outcome);
            let (headers, body) = answer.parts();
            AnswerRecord::new(key, answer.status, &headers, body)
        }))
    }
}
