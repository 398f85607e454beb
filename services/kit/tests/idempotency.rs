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
use pulse_kit::auth::Principal;
use pulse_kit::idempotency::{self, IdempotencyKey, IdempotencyStore, REPLAYED};
use pulse_kit::problem::{ApiJson, Problem};
use tokio::sync::Notify;
use tower::ServiceExt;

#[derive(Clone)]
struct Calls {
    count: Arc<AtomicUsize>,
    /// Calls waiting at `gate`, registered in arrival order.
    waiting: Arc<AtomicUsize>,
    gate: Arc<Notify>,
    pool: sqlx::PgPool,
    /// The next call dies before its commit.
    crash: Arc<std::sync::atomic::AtomicBool>,
}

/// A handler with an effect: one `effects` row, recorded with its answer in one transaction
/// (the way every flow records its idempotent answer).
async fn create(
    State(calls): State<Calls>,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<(StatusCode, ApiJson<serde_json::Value>), Problem> {
    let n = calls.count.fetch_add(1, Ordering::SeqCst) + 1;
    if body["fail"].as_bool() == Some(true) {
        return Err(Problem::unavailable("dependency down"));
    }
    let id = pulse_kit::new_id();
    let answer = serde_json::json!({ "call": n, "id": id });
    let mut tx = calls
        .pool
        .begin()
        .await
        .map_err(|e| Problem::internal(&e))?;
    sqlx::query("INSERT INTO effects (event_id, seq) VALUES ($1, $2)")
        .bind(id)
        .bind(i64::try_from(n).unwrap_or_default())
        .execute(&mut *tx)
        .await
        .map_err(|e| Problem::internal(&e))?;
    if body["wait"].as_bool() == Some(true) {
        // Registered before it is counted, so the test's `notify_one` wakes the calls in the
        // order they arrived.
        let opened = calls.gate.notified();
        tokio::pin!(opened);
        opened.as_mut().enable();
        calls.waiting.fetch_add(1, Ordering::SeqCst);
        opened.await;
    }
    if calls.crash.swap(false, Ordering::SeqCst) {
        // The process dies before COMMIT: the transaction, effect and record included, is gone.
        drop(tx);
        return Err(Problem::unavailable("died before commit"));
    }
    key.record_json(&mut tx, StatusCode::CREATED, None, &answer)
        .await
        .map_err(|e| Problem::internal(&e))?;
    tx.commit().await.map_err(|e| Problem::internal(&e))?;
    Ok((StatusCode::CREATED, ApiJson(answer)))
}

/// A handler without an effect: refuses.
async fn refuse(_key: IdempotencyKey) -> Problem {
    Problem::new(StatusCode::CONFLICT, "sold-out", "Sold out")
}

async fn as_alice(
    mut request: Request<Body>,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if request.headers().get("x-anonymous").is_none() {
        request.extensions_mut().insert(Principal {
            claims: pulse_kit::auth::claims_for(
                "alice",
                &["patient".to_owned()],
                "FR",
                "test",
                Duration::from_secs(60),
            ),
        });
    }
    next.run(request).await
}

fn app(pool: sqlx::PgPool, calls: Calls) -> Router {
    idempotency::layer(
        Router::new()
            .route("/things", post(create))
            .route("/refusals", post(refuse))
            .with_state(calls),
        IdempotencyStore::new(pool),
    )
    .layer(axum::middleware::from_fn(as_alice))
}

fn calls(env: &common::Env) -> Calls {
    Calls {
        count: Arc::default(),
        waiting: Arc::default(),
        gate: Arc::default(),
        pool: env.pool.clone(),
        crash: Arc::default(),
    }
}

async fn effects(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM effects")
        .fetch_one(pool)
        .await
        .expect("count")
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
    let calls = calls(&env);
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

/// A method the route does not have is answered 405 by the router, even with a key already
/// used: the store honours keys only on the operations it is given (the component's OpenAPI
/// operations), so routing comes first.
#[tokio::test]
async fn a_method_the_route_lacks_is_405_whatever_the_key() {
    let env = common::env().await;
    let calls = calls(&env);
    let app = idempotency::layer(
        Router::new()
            .route("/things", post(create))
            .with_state(calls.clone()),
        IdempotencyStore::new(env.pool.clone())
            .for_operations([(axum::http::Method::POST, "/things".to_owned())]),
    )
    .layer(axum::middleware::from_fn(as_alice));
    let (status, _, _) = send(&app, request(Some("k-405"), r#"{"a":1}"#)).await;
    assert_eq!(status, StatusCode::CREATED);
    for method in ["PUT", "PATCH", "DELETE"] {
        let put = Request::builder()
            .method(method)
            .uri("/things")
            .header("idempotency-key", "k-405")
            .body(Body::empty())
            .expect("request");
        let (status, _, _) = send(&app, put).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
    }
    // The key still works for its operation.
    let (status, headers, _) = send(&app, request(Some("k-405"), r#"{"a":1}"#)).await;
    assert_eq!(
        (status, &headers[REPLAYED]),
        (StatusCode::CREATED, &"true".parse().expect("value"))
    );
    assert_eq!(calls.count.load(Ordering::SeqCst), 1);
}

/// An operation that is not among the keyed ones (one anyone may call) does not look at the
/// header: a malformed key is no refusal there, and a repeated one does not replay.
#[tokio::test]
async fn an_operation_without_keys_ignores_the_header() {
    let env = common::env().await;
    let calls = calls(&env);
    let app = idempotency::layer(
        Router::new()
            .route("/things", post(create))
            .route(
                "/public",
                post(|State(calls): State<Calls>| async move {
                    calls.count.fetch_add(1, Ordering::SeqCst);
                    StatusCode::CREATED
                }),
            )
            .with_state(calls.clone()),
        IdempotencyStore::new(env.pool.clone())
            .for_operations([(axum::http::Method::POST, "/things".to_owned())]),
    )
    .layer(axum::middleware::from_fn(as_alice));
    let public = |key: &str| {
        Request::post("/public")
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(Body::from(r#"{"a":1}"#))
            .expect("request")
    };
    for key in ["with space", "well-formed", "well-formed"] {
        let (status, headers, _) = send(&app, public(key)).await;
        assert_eq!(status, StatusCode::CREATED, "{key}");
        assert!(headers.get(REPLAYED).is_none(), "{key}");
    }
    assert_eq!(calls.count.load(Ordering::SeqCst), 3);
    // The keyed operation still refuses a malformed key.
    let (status, _, _) = send(&app, request(Some("with space"), r#"{"a":1}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn same_key_different_request_is_422() {
    let env = common::env().await;
    let calls = calls(&env);
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
async fn same_key_while_the_first_is_running_waits_for_its_answer() {
    let env = common::env().await;
    let calls = calls(&env);
    let app = app(env.pool.clone(), calls.clone());
    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, request(Some("slow"), r#"{"wait":true}"#)).await }
    });
    common::eventually(Duration::from_secs(5), "the first request waits", || {
        let calls = calls.clone();
        async move { calls.waiting.load(Ordering::SeqCst) == 1 }
    })
    .await;
    let second = tokio::spawn({
        let app = app.clone();
        async move { send(&app, request(Some("slow"), r#"{"wait":true}"#)).await }
    });
    common::eventually(Duration::from_secs(5), "the duplicate waits too", || {
        let calls = calls.clone();
        async move { calls.waiting.load(Ordering::SeqCst) == 2 }
    })
    .await;
    // Both wait inside their transactions; the first commits, the duplicate's record collides.
    calls.gate.notify_one();
    let (status, _, answer) = first.await.expect("first");
    assert_eq!(status, StatusCode::CREATED);
    calls.gate.notify_one();
    let (status, headers, again) = second.await.expect("second");
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers[REPLAYED], "true");
    assert_eq!(again, answer, "the duplicate gets the first answer");
    assert_eq!(effects(&env.pool).await, 1, "one effect");
}

#[tokio::test]
async fn a_request_that_died_before_commit_leaves_its_key_free_at_once() {
    let env = common::env().await;
    let calls = calls(&env);
    let app = app(env.pool.clone(), calls.clone());
    calls.crash.store(true, Ordering::SeqCst);
    let (status, _, _) = send(&app, request(Some("k"), r#"{"a":1}"#)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(effects(&env.pool).await, 0, "nothing half-written");
    // The client retries with its key at once: the request runs, no lease to wait out.
    let (status, headers, _) = send(&app, request(Some("k"), r#"{"a":1}"#)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(headers.get(REPLAYED).is_none());
    assert_eq!(effects(&env.pool).await, 1);
    let (status, headers, _) = send(&app, request(Some("k"), r#"{"a":1}"#)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers[REPLAYED], "true");
    assert_eq!(effects(&env.pool).await, 1);
}

#[tokio::test]
async fn an_operation_whose_flow_keeps_its_keys_gets_the_key_and_no_record() {
    let env = common::env().await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let app = idempotency::layer(
        Router::new().route(
            "/attempts/{id}",
            post({
                let seen = Arc::clone(&seen);
                move |key: Option<IdempotencyKey>| async move {
                    if let (Some(key), Ok(mut seen)) = (key, seen.lock()) {
                        seen.push(format!("{} {}", key.scope(), key.key()));
                    }
                    Problem::new(StatusCode::CONFLICT, "sold-out", "Sold out")
                }
            }),
        ),
        IdempotencyStore::new(env.pool.clone())
            .kept_by_flow([(axum::http::Method::POST, "/attempts/{id}")]),
    )
    .layer(axum::middleware::from_fn(as_alice));
    let attempt = |key: &str| {
        Request::post("/attempts/summer")
            .header("idempotency-key", key)
            .body(Body::empty())
            .expect("request")
    };
    for _ in 0..2 {
        let (status, headers, _) = send(&app, attempt("k-1")).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(headers.get(REPLAYED).is_none(), "the flow decides again");
    }
    assert_eq!(
        seen.lock().map(|s| s.clone()).unwrap_or_default(),
        vec!["sub:alice k-1".to_owned(), "sub:alice k-1".to_owned()],
        "the flow got the caller's key both times"
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
        .fetch_one(&env.pool)
        .await
        .expect("count");
    assert_eq!(
        stored, 0,
        "the middleware keeps nothing for such an operation"
    );
    // The key is still checked.
    let (status, _, problem) = send(&app, attempt("with space")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
}

#[tokio::test]
async fn refusals_are_kept_and_anonymous_requests_are_not_looked_at() {
    let env = common::env().await;
    let app = app(env.pool.clone(), calls(&env));
    let refusal = |key: &str| {
        Request::post("/refusals")
            .header("idempotency-key", key)
            .body(Body::empty())
            .expect("request")
    };
    let (status, headers, _) = send(&app, refusal("r")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(headers.get(REPLAYED).is_none());
    let (status, headers, _) = send(&app, refusal("r")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(headers[REPLAYED], "true");
    let anonymous = Request::post("/refusals")
        .header("idempotency-key", "anon")
        .header("x-anonymous", "1")
        .body(Body::empty())
        .expect("request");
    let (status, _, problem) = send(&app, anonymous).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM idempotency_keys WHERE idempotency_key = 'anon'")
            .fetch_one(&env.pool)
            .await
            .expect("count");
    assert_eq!(stored, 0, "no key is claimed for a caller without a token");
}

#[tokio::test]
async fn a_server_error_is_not_stored_so_a_retry_runs_again() {
    let env = common::env().await;
    let calls = calls(&env);
    let app = app(env.pool.clone(), calls.clone());
    let (status, _, _) = send(&app, request(Some("flaky"), r#"{"fail":true}"#)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
        .fetch_one(&env.pool)
        .await
        .expect("count");
    assert_eq!(stored, 0, "a 5xx is not kept");
    let (status, _, _) = send(&app, request(Some("flaky"), r#"{"fail":true}"#)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(calls.count.load(Ordering::SeqCst), 2, "the retry ran");
}

#[tokio::test]
async fn missing_and_malformed_keys_are_400() {
    let env = common::env().await;
    let app = app(env.pool.clone(), calls(&env));
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
    let app = app(env.pool.clone(), calls(&env));
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
