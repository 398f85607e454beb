//! HTTP errors as `application/problem+json` (RFC 9457).
//!
//! Every error a Pulse endpoint returns is a [`Problem`] with a stable `type` URI, so clients can
//! branch on the type rather than on the wording of `detail`.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Media type of problem documents.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Base of every problem `type` URI.
pub const PROBLEM_TYPE_BASE: &str = "https://pulse.dev/problems/";

/// An RFC 9457 problem document, ready to be returned from an axum handler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// Stable URI naming the kind of problem.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// Short human-readable summary of the kind of problem.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// What went wrong this time, and what the client can do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Extension members (for example the failing field).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extensions: Map<String, Value>,
    /// Seconds after which a retry may succeed, sent as the `Retry-After` header.
    #[serde(skip)]
    pub retry_after_secs: Option<u64>,
    /// The answer depends on contended state that a retry should see afresh, so the
    /// idempotency middleware does not keep it (see [`Problem::not_kept`]).
    #[serde(skip)]
    pub not_kept: bool,
}

impl Problem {
    /// A problem of kind `slug` (appended to [`PROBLEM_TYPE_BASE`]).
    pub fn new(status: StatusCode, slug: &str, title: &str) -> Self {
        Self {
            problem_type: format!("{PROBLEM_TYPE_BASE}{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: None,
            extensions: Map::new(),
            retry_after_secs: None,
            not_kept: false,
        }
    }

    /// Marks a refusal that has no effect and depends on contended state (someone else is
    /// booking the slot): the `Idempotency-Key` middleware does not record it, so the refusal
    /// costs no database write and a retry with the key is decided again.
    #[must_use]
    pub fn not_kept(mut self) -> Self {
        self.not_kept = true;
        self
    }

    /// Adds a `Retry-After` header of `seconds`.
    #[must_use]
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_secs = Some(seconds);
        self
    }

    /// Adds the `detail` member.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds an extension member.
    #[must_use]
    ///
    /// `key` must not be one of RFC 9457's own members (`type`, `title`, `status`, `detail`,
    /// `instance`): the body would hold it twice, and clients would read either.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        debug_assert!(
            !["type", "title", "status", "detail", "instance"].contains(&key),
            "problem extension `{key}` would repeat a member of RFC 9457"
        );
        self.extensions.insert(key.to_owned(), value.into());
        self
    }

    /// The HTTP status as a [`StatusCode`].
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// 400: the request is malformed.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request").with_detail(detail)
    }

    /// 401: no or an invalid credential.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Authentication required",
        )
        .with_detail(detail)
    }

    /// 403: authenticated, but not allowed.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden").with_detail(detail)
    }

    /// 404: the resource does not exist.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found").with_detail(detail)
    }

    /// 422: well-formed but semantically invalid input.
    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-failed",
            "Validation failed",
        )
        .with_detail(detail)
    }

    /// 422: fields that are valid one by one do not go together (a range that ends before it
    /// starts, ranges that overlap). A schema cannot state such a rule, so it has its own type:
    /// a client that follows the schema can still meet it.
    /// Query parameters that do not go together are 400 like any other bad parameter
    /// ([`Problem::invalid_combination_in`]).
    pub fn invalid_combination(detail: impl Into<String>) -> Self {
        Self::invalid_combination_in(StatusCode::UNPROCESSABLE_ENTITY, detail)
    }

    /// [`Problem::invalid_combination`] with another status (400 for query parameters).
    pub fn invalid_combination_in(status: StatusCode, detail: impl Into<String>) -> Self {
        Self::new(
            status,
            "invalid-combination",
            "Fields that do not go together",
        )
        .with_detail(detail)
    }

    /// 503: a dependency is unavailable; the client may retry later.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service-unavailable",
            "Service unavailable",
        )
        .with_detail(detail)
    }

    /// The answer to a failed dependency call: 503 with `Retry-After` when the cause (or any
    /// error in its source chain) is the database being unreachable — refused, reset, shut
    /// down, or no connection free in time — since nothing was done and a retry can succeed;
    /// otherwise 500 ([`Problem::internal`]).
    pub fn from_error(cause: &(dyn std::error::Error + 'static)) -> Self {
        if is_outage(cause) {
            tracing::warn!(error = %cause, "dependency unavailable");
            return Self::unavailable(
                "the database is unreachable, so nothing was done; retry shortly",
            )
            .with_retry_after(1);
        }
        if collides_with_idempotency_record(cause) {
            // Expected: the idempotency middleware answers with the first request's outcome.
            tracing::info!(error = %cause, "a duplicate collided with the first request's idempotency record");
            return Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal server error",
            );
        }
        Self::internal(&cause)
    }

    /// 500: an unexpected failure. The cause is logged, never sent to the client.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
        )
        .with_detail("an unexpected error occurred; it has been logged")
    }
}

/// Whether `cause` is a flow's transaction failing on the primary key of the idempotency
/// records: a request under the key of an earlier one, whose record committed first.
fn collides_with_idempotency_record(cause: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(cause);
    while let Some(err) = next {
        if let Some(sqlx::Error::Database(db)) = err.downcast_ref::<sqlx::Error>() {
            return db.constraint() == Some("idempotency_keys_pkey");
        }
        next = err.source();
    }
    false
}

/// Whether `cause` or an error in its source chain says the database cannot be reached (as
/// opposed to a bug or a bad statement).
fn is_outage(cause: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(cause);
    while let Some(err) = next {
        if let Some(db) = err.downcast_ref::<sqlx::Error>() {
            match db {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => return true,
                // Class 08 (connection exception) and 57P01–57P03 (shutting down, cannot
                // connect now): the server is going away or not there yet.
                sqlx::Error::Database(e) => {
                    let code = e.code();
                    let code = code.as_deref().unwrap_or_default();
                    return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03");
                }
                _ => return false,
            }
        }
        if err.downcast_ref::<std::io::Error>().is_some() {
            return true;
        }
        next = err.source();
    }
    false
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.title, self.status)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let retry_after = self.retry_after_secs;
        let not_kept = self.not_kept;
        let mut response = (status, Json(self)).into_response();
        if not_kept {
            response
                .extensions_mut()
                .insert(crate::idempotency::NotKept);
        }
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<JsonRejection> for Problem {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        match status {
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                Self::new(status, "unsupported-media-type", "Unsupported media type")
                    .with_detail("send the body as JSON with `Content-Type: application/json`")
            }
            StatusCode::PAYLOAD_TOO_LARGE => {
                Self::new(status, "payload-too-large", "Payload too large")
                    .with_detail(rejection.body_text())
            }
            StatusCode::UNPROCESSABLE_ENTITY => Self::unprocessable(rejection.body_text()),
            _ => Self::bad_request(rejection.body_text()),
        }
    }
}

impl From<QueryRejection> for Problem {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}

impl From<PathRejection> for Problem {
    fn from(rejection: PathRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}

/// `Json<T>` whose rejections are problem documents instead of axum's plain text.
///
/// A number is read the way JSON Schema reads it: `483.0` is the integer 483 (the documents
/// say `type: integer`, and a client may well send an integral float), so integer fields take
/// it; a fraction stays a refusal. A body of the wrong shape is 422 with the path of the field
/// (`schedule.slotMinutes: invalid type …`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Problem> {
        let Json(mut value) = Json::<Value>::from_request(request, state).await?;
        integral_floats_as_integers(&mut value);
        serde_path_to_error::deserialize(value)
            .map(ApiJson)
            .map_err(|err| {
                let path = err.path().to_string();
                let inner = err.into_inner();
                if path == "." {
                    Problem::unprocessable(format!(
                        "the body does not have the documented shape: {inner}"
                    ))
                } else {
                    Problem::unprocessable(format!("{path}: {inner}")).with("field", path)
                }
            })
    }
}

/// Turns every float with no fractional part (within the range of `i64`) into an integer.
fn integral_floats_as_integers(value: &mut Value) {
    match value {
        Value::Number(number) if !number.is_i64() && !number.is_u64() => {
            if let Some(float) = number.as_f64()
                && float.fract() == 0.0
                && float >= i64::MIN as f64
                && float < i64::MAX as f64
            {
                // Exact: an integral float in range converts without loss.
                #[allow(clippy::cast_possible_truncation)]
                let integer = float as i64;
                *value = Value::from(integer);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        Value::Object(map) => map.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

/// `Query<T>` whose rejections are problem documents.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Problem))]
pub struct ApiQuery<T>(pub T);

/// `Path<T>` whose rejections are problem documents.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Problem))]
pub struct ApiPath<T>(pub T);

/// Fallback for unknown routes.
pub async fn not_found_fallback(uri: axum::http::Uri) -> Problem {
    Problem::not_found(format!("no route for `{}`", uri.path()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Order {
        quantity: u16,
        price_minor: i64,
        lines: Vec<Line>,
    }

    #[derive(Debug, Deserialize)]
    struct Line {
        weight: f64,
    }

    async fn read(body: &str) -> Result<Order, Problem> {
        let request = axum::http::Request::post("/")
            .header(header::CONTENT_TYPE, "application/json")
            .body(axum::body::Body::from(body.to_owned()))
            .expect("request");
        ApiJson::<Order>::from_request(request, &())
            .await
            .map(|ApiJson(o)| o)
    }

    #[tokio::test]
    async fn integral_floats_are_integers_and_the_error_names_the_field() {
        let order = read(r#"{"quantity": 3.0, "priceMinor": -483.0, "lines": [{"weight": 2}]}"#)
            .await
            .expect("integral floats are integers");
        assert_eq!((order.quantity, order.price_minor), (3, -483));
        assert!((order.lines[0].weight - 2.0).abs() < f64::EPSILON);

        let refused = read(r#"{"quantity": 1.5, "priceMinor": 1, "lines": []}"#)
            .await
            .expect_err("a fraction is no integer");
        assert_eq!(refused.status, 422);
        assert_eq!(refused.extensions["field"], "quantity");
        let refused = read(r#"{"quantity": 1, "priceMinor": 1, "lines": [{"weight": "x"}]}"#)
            .await
            .expect_err("wrong type");
        assert_eq!(refused.extensions["field"], "lines[0].weight");
        let refused = read(r#"{"quantity": 1, "priceMinor": 1, "lines": [], "extra": 1}"#)
            .await
            .expect_err("unknown field");
        assert_eq!(refused.status, 422);
        assert_eq!(read("not json").await.expect_err("not JSON").status, 400);
    }

    #[test]
    fn an_unreachable_database_is_503_and_other_failures_are_500() {
        let outage = sqlx::Error::PoolTimedOut;
        let problem = Problem::from_error(&outage);
        assert_eq!(problem.status, 503);
        assert_eq!(problem.retry_after_secs, Some(1));
        assert!(
            problem
                .detail
                .as_deref()
                .unwrap_or_default()
                .contains("retry")
        );
        let refused = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(Problem::from_error(&refused).status, 503);
        // Wrapped in another error, the cause is still found.
        let wrapped = crate::outbox::OutboxError::Sql(sqlx::Error::PoolClosed);
        assert_eq!(Problem::from_error(&wrapped).status, 503);
        let bug = sqlx::Error::RowNotFound;
        assert_eq!(Problem::from_error(&bug).status, 500);
        let decode = sqlx::Error::ColumnNotFound("x".into());
        assert_eq!(Problem::from_error(&decode).status, 500);
    }

    #[test]
    fn serializes_as_rfc9457() {
        let problem = Problem::forbidden("token is for DE").with("country", "FR");
        let value = serde_json::to_value(&problem).expect("serializable");
        assert_eq!(value["type"], "https://pulse.dev/problems/forbidden");
        assert_eq!(value["status"], 403);
        assert_eq!(value["detail"], "token is for DE");
        assert_eq!(value["country"], "FR");
        let response = problem.into_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }
}
