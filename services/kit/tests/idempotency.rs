//! `Idempotency-Key` semantics against real PostgreSQL.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use http_body_util::BodyExt;
use pulse_kit::idempotency::{self, IdempotencyStore, REPLAYED, RequiredIdempotencyKey};
use pulse_kit::problem::{ApiJson, Problem};
use tokio::sync::Notify;
use tower::ServiceExt;

#[derive(Clone, Default)]
struct Calls {
    count: Arc<AtomicUsize>,
    gate: Arc<Notify>,
}

async fn create(
    State(calls): State<Calls>,
    _key: RequiredIdempotencyKey,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<(StatusCode, ApiJson<serde_json::Value>), Problem> {
    if body["wait"].as_bool() == Some(true) {
        calls.gate.notified().await;
    }
    if body["fail"].as_bool() == Some(true) {
        calls.count.fetch_add(1, Ordering::SeqCst);
        return Err(Problem::unavailable("dependency down"));
    }
    let n = calls.count.fetch_add(1, Ordering::SeqCst) + 1;
    Ok((
        StatusCode::CREATED,
        ApiJson(serde_json::json!({ "call": n, "id": pulse_kit::new_id() })),
    ))
}

fn app(pool: sqlx::PgPool, calls: Calls) -> Router {
    idempotency::layer(
        Router::new()
            .route("/things", post(create))
            .with_state(calls),
        IdempotencyStore::new(pool),
    )
}

fn request(key: Option<&str>, body: &str) -> Request<Body> {
    let mut builder = Request::post("/things").header("content-type", "application/json");
    if let Some(key) = key {
        builder = builder.header("idempotency-key", key);
    }
    builder.body(Body::from(body.to_owned())).expect("request")
}

async fn send(
    app: &Router,
    req: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
    let response = app.clone().oneshot(req).await.expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, headers, json)
}

#[tokio::test]
async fn same_key_same_request_returns_the_stored_response_once() {
    let env = common::env().await;
    let calls = Calls::default();
    let app = app(env.pool.clone(), calls.clone());
    let (status, headers, first) = send(&app, request(Some("k-1"), r#"{"a":1}"#)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(headers.get(REPLAYED).is_none());
    let (status, headers, again) = send(&app, request(Some("k-1"), r#"{"a":1}"#)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(again, first, "the stored response, byte for byte");
    assert_eq!(headers[REPLAYED], "true");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        calls.count.load(Ordering::SeqCst),
        1,
        "the handler ran once"
    );

    // Another key is another operation.
    let (_, _, other) = send(&app, request(Some("k-2"), r#"{"a":1}"#)).await;
    assert_ne!(other["id"], first["id"]);
    assert_eq!(calls.count.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn same_key_different_request_is_422() {
    let env = common::env().await;
    let calls = Calls::default();
    let app = app(env.pool.clone(), calls.clone());
    send(&app, request(Some("k"), r#"{"a":1}"#)).await;
    let (status, headers, problem) = send(&app, request(Some("k"), r#"{"a":2}"#)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(
        problem["type"],
        "https://pulse.dev/problems/idempotency-key-reused"
    );
    assert_eq!(calls.count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn same_key_while_the_first_is_running_is_409() {
    let env = common::env().await;
    let calls = Calls::default();
    let app = app(env.pool.clone(), calls.clone());
    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, request(Some("slow"), r#"{"wait":true}"#)).await }
    });
    common::eventually(
        Duration::from_secs(5),
        "the first request holds the key",
        || {
            let pool = env.pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM idempotency_keys WHERE state = 'running'",
                )
                .fetch_one(&pool)
                .await
                .expect("count")
                    == 1
            }
        },
    )
    .await;
    let (status, _, problem) = send(&app, request(Some("slow"), r#"{"wait":true}"#)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        problem["type"],
        "https://pulse.dev/problems/idempotency-request-in-progress"
    );
    calls.gate.notify_one();
    let (status, _, _) = first.await.expect("first");
    assert_eq!(status, StatusCode::CREATED);
    let (status, headers, _) = send(&app, request(Some("slow"), r#"{"wait":true}"#)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers[REPLAYED], "true");
    assert_eq!(calls.count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_server_error_is_not_stored_so_a_retry_runs_again() {
    let env = common::env().await;
    let calls = Calls::default();
    let app = app(env.pool.clone(), calls.clone());
    let (status, _, _) = send(&app, request(Some("flaky"), r#"{"fail":true}"#)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    common::eventually(Duration::from_secs(5), "the key is freed", || {
        let pool = env.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM idempotency_keys")
                .fetch_one(&pool)
                .await
                .expect("count")
                == 0
        }
    })
    .await;
    let (status, _, _) = send(&app, request(Some("flaky"), r#"{"fail":true}"#)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(calls.count.load(Ordering::SeqCst), 2, "the retry ran");
}

#[tokio::test]
async fn missing_and_malformed_keys_are_400() {
    let env = common::env().await;
    let app = app(env.pool.clone(), Calls::default());
    let (status, _, problem) = send(&app, request(None, "{}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        problem["type"],
        "https://pulse.dev/problems/idempotency-key-required"
    );
    let long = "x".repeat(300);
    let (status, _, problem) = send(&app, request(Some(&long), "{}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        problem["type"],
        "https://pulse.dev/problems/idempotency-key-invalid"
    );
    let (status, _, problem) = send(&app, request(Some("k"), "{not json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
}

#[tokio::test]
async fn keys_are_kept_24_hours_then_pruned() {
    let env = common::env().await;
    let app = app(env.pool.clone(), Calls::default());
    send(&app, request(Some("old"), "{}")).await;
    send(&app, request(Some("recent"), "{}")).await;
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE idempotency_key = 'old'")
        .execute(&env.pool)
        .await
        .expect("age");
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '23 hours' WHERE idempotency_key = 'recent'")
        .execute(&env.pool)
        .await
        .expect("age");
    // Asking for less than 24 hours still keeps 24.
    let pruned = idempotency::prune(&env.pool, Duration::from_secs(60))
        .await
        .expect("prune");
    assert_eq!(pruned, 1);
    let left: Vec<String> = sqlx::query_scalar("SELECT idempotency_key FROM idempotency_keys")
        .fetch_all(&env.pool)
        .await
        .expect("keys");
    assert_eq!(left, vec!["recent".to_owned()]);
}
