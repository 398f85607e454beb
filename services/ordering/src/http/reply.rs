//! The answer of an endpoint with an effect: built once from the flow's outcome, sent to the
//! client and, when the request carries an `Idempotency-Key`, recorded in the flow's
//! transaction ([`RecordReply`]), so a replay is byte for byte the first answer.
//!
//! Unlike `pulse_kit::idempotency::Answer`, which goes through `serde_json::Value` (its maps
//! sort their keys), the body is serialized once, straight from the view, so its fields keep the
//! order the views declare, as with `ApiJson`.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pulse_kit::idempotency::{BeforeCommit, IdempotencyKey};
use serde::Serialize;
use sqlx::PgConnection;

/// A JSON answer: status, body, maybe a `Location`.
#[derive(Debug, Clone)]
pub struct Reply {
    status: StatusCode,
    location: Option<HeaderValue>,
    body: Vec<u8>,
}

impl Reply {
    /// `200 OK` with `body`.
    pub fn ok(body: &impl Serialize) -> Self {
        Self::json(StatusCode::OK, body)
    }

    /// `201 Created` with `Location: location` and `body`.
    pub fn created(location: &str, body: &impl Serialize) -> Self {
        Self {
            location: HeaderValue::from_str(location).ok(),
            ..Self::json(StatusCode::CREATED, body)
        }
    }

    fn json(status: StatusCode, body: &impl Serialize) -> Self {
        match serde_json::to_vec(body) {
            Ok(body) => Self {
                status,
                location: None,
                body,
            },
            // The views always serialize; answer like `ApiJson` would if one did not.
            Err(err) => Self {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                location: None,
                body: err.to_string().into_bytes(),
            },
        }
    }

    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(location) = &self.location {
            headers.insert(header::LOCATION, location.clone());
        }
        headers
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let headers = self.headers();
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = self.status;
        *response.headers_mut() = headers;
        response
    }
}

/// Records `reply(outcome)` as the answer to the request's key, in the flow's transaction;
/// without a key (the client sent none) it does nothing.
pub struct RecordReply<'a, F> {
    key: Option<&'a IdempotencyKey>,
    reply: &'a F,
}

impl<'a, F> RecordReply<'a, F> {
    /// Records `reply(outcome)` under `key`.
    pub fn new(key: Option<&'a IdempotencyKey>, reply: &'a F) -> Self {
        Self { key, reply }
    }
}

impl<T, F> BeforeCommit<T> for RecordReply<'_, F>
where
    T: Sync,
    F: Fn(&T) -> Reply + Sync,
{
    async fn run(self, tx: &mut PgConnection, outcome: &T) -> Result<(), sqlx::Error> {
        let Some(key) = self.key else {
            return Ok(());
        };
        let reply = (self.reply)(outcome);
        key.record(tx, reply.status, &reply.headers(), &reply.body)
            .await
    }
}
