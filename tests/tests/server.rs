//! The `pulse` server with every component, in-process, against real PostgreSQL, Redis and
//! Kafka: probes (readiness follows the database and draining, not Redis), tenancy, errors,
//! metrics, gRPC health, draining.

use std::sync::Arc;
use std::time::Duration;

use pulse_e2e::support::{self, Persistence, PrivatePostgres, PrivateRedis};
use pulse_kit::component::Component;
use pulse_kit::config::CountryConfig;
use pulse_kit::server::ServerSettings;
use pulse_kit::settings::{Env, Secret};
use pulse_kit::testing::{self, TestApp, free_port, redis_url};

/// The example tenant's country configuration, loaded as `./dev up` loads it.
fn country(code: &str) -> CountryConfig {
    let file = format!(
        "{}/../manifests/examples/{}.yaml",
        // Read when the test runs, as the operator's tests do (see `operator/tests/support/root.rs`).
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
        code.to_ascii_lowercase()
    );
    CountryConfig::read(&Env::from_map([("PULSE_COUNTRY_FILE", file)]))
        .expect("the example tenant is valid")
}

/// Every component, made by `pulse`'s own target table for `settings` (development mode: the
/// sandbox payment and SMS providers).
fn every_component(settings: &ServerSettings) -> Vec<Arc<dyn Component>> {
    let dir = testing::TempDir::new("keyring");
    let keyring = dir.path().join("keyring");
    std::fs::write(&keyring, testing::unique("keyring-secret-of-this-test-run")).expect("keyring");
    let sms = dir.path().join("sms.jsonl");
    let env = Env::from_map([
        ("PULSE_PAYMENT_PROVIDER", "sandbox".to_owned()),
        (
            "PULSE_IDENTITY_KEYRING_SECRET_FILE",
            keyring.display().to_string(),
        ),
        ("PULSE_IDENTITY_SMS_PROVIDER", "sandbox".to_owned()),
        ("PULSE_IDENTITY_SANDBOX_SMS_FILE", sms.display().to_string()),
    ]);
    pulse::TARGETS
        .iter()
        .map(|target| (target.load)(&env, settings).expect("component"))
        .collect()
}

/// FR with every component, as `pulse serve --target all` runs it.
async fn start_fr(redis: &str, drain: Duration) -> TestApp {
    start_fr_on(testing::TestDatabase::create().await, redis, drain).await
}

/// [`start_fr`] on the database `db`.
async fn start_fr_on(db: testing::TestDatabase, redis: &str, drain: Duration) -> TestApp {
    let (http, grpc) = (free_port(), free_port());
    let redis = redis.to_owned();
    let tune = move |settings: &mut ServerSettings| {
        settings.http_addr = ([127, 0, 0, 1], http).into();
        settings.grpc_addr = ([127, 0, 0, 1], grpc).into();
        settings.drain_delay = drain;
        settings.db_max_connections = 5;
        settings.trust_forwarded_for = true;
        settings.redis_url = Secret::new(redis.clone());
    };
    let mut planned = testing::server_settings("postgres://planned", &redis_url());
    tune(&mut planned);
    TestApp::start_on(db, every_component(&planned), country("FR"), tune).await
}

fn token(country: &str) -> String {
    testing::token("alice", &["patient"], country)
}

async fn wait_status(url: &str, want: u16, within: Duration) -> Duration {
    let client = reqwest::Client::new();
    let started = tokio::time::Instant::now();
    loop {
        let status = client
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .ok();
        if status == Some(want) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{url} did not answer {want} within {within:?} (last: {status:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn probes_tenancy_errors_and_metrics() {
    let mut app = start_fr(&redis_url(), Duration::ZERO).await;
    let base = app.base.clone();
    let admin = app.admin_base.clone();
    let client = reqwest::Client::new();

    wait_status(&format!("{base}/readyz"), 200, Duration::from_secs(15)).await;
    wait_status(&format!("{admin}/readyz"), 200, Duration::from_secs(5)).await;
    wait_status(&format!("{admin}/livez"), 200, Duration::from_secs(5)).await;

    let me = client
        .get(format!("{base}/v1/me"))
        .bearer_auth(token("FR"))
        .send()
        .await
        .expect("me");
    assert_eq!(me.status(), 200);
    let body: serde_json::Value = me.json().await.expect("json");
    assert_eq!(body["subject"], "alice");
    assert_eq!(body["country"], "FR");

    let foreign = client
        .get(format!("{base}/v1/me"))
        .bearer_auth(token("DE"))
        .send()
        .await
        .expect("me");
    assert_eq!(foreign.status(), 403);
    assert_eq!(
        foreign.headers()["content-type"],
        "application/problem+json"
    );
    let problem: serde_json::Value = foreign.json().await.expect("json");
    assert_eq!(problem["type"], "https://pulse.dev/problems/forbidden");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("DE"),
        "{problem}"
    );

    let anonymous = client
        .get(format!("{base}/v1/me"))
        .send()
        .await
        .expect("me");
    assert_eq!(anonymous.status(), 401);
    let garbage = client
        .get(format!("{base}/v1/me"))
        .bearer_auth("not.a.token")
        .send()
        .await
        .expect("me");
    assert_eq!(garbage.status(), 401);

    let missing = client
        .get(format!("{base}/v1/nothing-here"))
        .send()
        .await
        .expect("404");
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );

    let metrics = client
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .contains(r#"pulse_http_requests_total{component="kit",route="/v1/me",method="GET",status="403"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"route="unmatched""#), "{metrics}");
    assert!(
        metrics.contains("pulse_http_request_duration_seconds_bucket"),
        "{metrics}"
    );

    // gRPC health reports the process as serving.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc))
        .expect("endpoint")
        .connect()
        .await
        .expect("grpc connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check")
        .into_inner();
    assert_eq!(
        answer.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    app.stop().await;
}

#[tokio::test]
async fn every_component_gets_its_schema_and_migrations_are_repeatable() {
    let db = testing::TestDatabase::create().await;
    for _ in 0..2 {
        for target in pulse::TARGETS {
            pulse_kit::db::migrate(&db.url, target.name, target.migrations)
                .await
                .expect("migrate");
        }
    }
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_schema::text, table_name::text FROM information_schema.tables
         WHERE table_name IN ('outbox', 'idempotency_keys', 'consumer_offsets') ORDER BY 1, 2",
    )
    .fetch_all(&pool)
    .await
    .expect("tables");
    for component in ["booking", "identity", "marketing", "notifier", "ordering"] {
        for table in ["consumer_offsets", "idempotency_keys", "outbox"] {
            assert!(
                tables.contains(&(component.to_owned(), table.to_owned())),
                "{component}.{table} missing: {tables:?}"
            );
        }
    }
    pool.close().await;
}

/// `GET url`: (status, JSON body).
async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// Polls `/readyz` until `checks[name]` satisfies `want`; returns the last (status, body).
async fn wait_check(
    url: &str,
    name: &str,
    within: Duration,
    want: impl Fn(&str) -> bool,
) -> (u16, serde_json::Value) {
    let started = tokio::time::Instant::now();
    loop {
        let (status, body) = get_json(url).await;
        if body["checks"][name].as_str().is_some_and(&want) {
            return (status, body);
        }
        assert!(
            started.elapsed() < within,
            "{url}: check {name} not as wanted within {within:?}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn metrics_text(admin: &str) -> String {
    reqwest::get(format!("{admin}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_stays_up_without_redis_and_fails_while_draining() {
    let mut redis = PrivateRedis::start(Persistence::None);
    let mut app = start_fr(&redis.url(), Duration::from_secs(2)).await;
    let readyz = format!("{}/readyz", app.base);
    let admin_readyz = format!("{}/readyz", app.admin_base);
    wait_status(&readyz, 200, Duration::from_secs(15)).await;
    let (_, body) = get_json(&readyz).await;
    for dependency in ["postgres", "redis", "kafka"] {
        assert_eq!(body["checks"][dependency], "ok", "{body}");
    }
    let admin = app.admin();
    let practitioner = support::practitioner(&app.client, &app.base, &admin).await;
    let slots = support::free_slots(&app.client, &app.base, &practitioner, 2, 3).await;
    assert!(slots.len() >= 2, "free slots: {slots:?}");

    // Redis dies: readiness reports it and stays 200 on both listeners.
    redis.kill();
    let (status, body) = wait_check(&readyz, "redis", Duration::from_secs(10), |c| {
        c.starts_with("down")
    })
    .await;
    assert_eq!(
        status, 200,
        "Redis down does not make the pod unready: {body}"
    );
    assert_eq!(body["checks"]["postgres"], "ok", "{body}");
    let (status, body) = get_json(&admin_readyz).await;
    assert_eq!(status, 200, "admin /readyz: {body}");
    let metrics = metrics_text(&app.admin_base).await;
    assert!(
        metrics.contains(r#"pulse_dependency_up{dependency="redis"} 0"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"pulse_dependency_up{dependency="postgres"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("pulse_redis_breaker_state 2"), "{metrics}");

    // ... and the pod still serves: a booking goes through on the database's guard alone.
    let epoch = std::time::Instant::now();
    let booked = support::book(
        &app.client,
        &app.base,
        &token("FR"),
        &slots[0],
        &pulse_kit::testing::unique("without-redis"),
        epoch,
    )
    .await;
    assert_eq!(
        booked.status, 201,
        "booking without Redis: {:?}",
        booked.body
    );
    println!("a booking while Redis is down took {:?}", booked.latency);
    let live = reqwest::get(format!("{}/livez", app.admin_base))
        .await
        .expect("livez");
    assert_eq!(live.status(), 200);

    // Redis comes back: reported again within a few seconds.
    redis.start_again();
    wait_check(&readyz, "redis", Duration::from_secs(15), |c| c == "ok").await;
    assert!(
        metrics_text(&app.admin_base)
            .await
            .contains(r#"pulse_dependency_up{dependency="redis"} 1"#)
    );

    // Draining: readiness fails at once, while requests are still served.
    let server = app.server.take().expect("running");
    let stopping = tokio::spawn(server.shutdown());
    wait_status(&readyz, 503, Duration::from_secs(1)).await;
    let (status, body) = get_json(&admin_readyz).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("draining")),
        "{body}"
    );
    let live = reqwest::get(format!("{}/livez", app.base))
        .await
        .expect("still serving");
    assert_eq!(live.status(), 200);
    stopping.await.expect("stopped");
    assert!(
        reqwest::get(&readyz).await.is_err(),
        "listeners are closed after the drain"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_the_database_is_down_and_liveness_does_not() {
    let pg = PrivatePostgres::start();
    let name = format!(
        "pulse_ready_{}",
        &pulse_kit::new_id().simple().to_string()[..12]
    );
    pg.create_database(&name).await;
    let db = testing::TestDatabase {
        url: pg.url(&name),
        name,
    };
    let app = start_fr_on(db, &redis_url(), Duration::ZERO).await;
    let readyz = format!("{}/readyz", app.base);
    let admin_readyz = format!("{}/readyz", app.admin_base);
    wait_status(&readyz, 200, Duration::from_secs(15)).await;

    pg.stop();
    let took = wait_status(&admin_readyz, 503, Duration::from_secs(10)).await;
    println!("readiness failed {took:?} after the database stopped");
    let (status, body) = get_json(&readyz).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["checks"]["postgres"]
            .as_str()
            .is_some_and(|c| c.starts_with("down")),
        "{body}"
    );
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("postgres")),
        "{body}"
    );
    assert_eq!(body["checks"]["redis"], "ok", "{body}");
    for base in [&app.base, &app.admin_base] {
        let live = reqwest::get(format!("{base}/livez")).await.expect("livez");
        assert_eq!(
            live.status(),
            200,
            "liveness depends on nothing outside the process"
        );
    }
    assert!(
        metrics_text(&app.admin_base)
            .await
            .contains(r#"pulse_dependency_up{dependency="postgres"} 0"#)
    );

    pg.start_again();
    let took = wait_status(&readyz, 200, Duration::from_secs(20)).await;
    println!("ready again {took:?} after the database came back");
    wait_status(&admin_readyz, 200, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn clients_over_the_country_rate_limit_get_429_with_retry_after() {
    let mut app = start_fr(&redis_url(), Duration::ZERO).await;
    let base = app.base.clone();
    let client = reqwest::Client::new();
    wait_status(&format!("{base}/readyz"), 200, Duration::from_secs(15)).await;
    // FR allows 20 requests per second with a burst of 40 per client.
    let limits = country("FR").rate_limits;
    let burst = usize::try_from(limits.burst).expect("burst");
    let mut statuses = Vec::new();
    for _ in 0..burst + 10 {
        let response = client
            .get(format!("{base}/v1/nothing"))
            .header("x-forwarded-for", "203.0.113.7")
            .send()
            .await
            .expect("request");
        statuses.push((
            response.status().as_u16(),
            response.headers().get("retry-after").cloned(),
        ));
    }
    let limited: Vec<_> = statuses.iter().filter(|(s, _)| *s == 429).collect();
    assert!(
        !limited.is_empty(),
        "a client over its burst is limited: {statuses:?}"
    );
    assert!(
        limited.iter().all(|(_, retry)| retry.is_some()),
        "429 carries Retry-After"
    );
    assert!(
        statuses[..burst].iter().all(|(s, _)| *s == 404),
        "the burst itself passes"
    );
    // Another client, and the probes, are not affected.
    let other = client
        .get(format!("{base}/v1/nothing"))
        .header("x-forwarded-for", "198.51.100.1")
        .send()
        .await
        .expect("request");
    assert_eq!(other.status(), 404);
    let ready = client
        .get(format!("{base}/readyz"))
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    app.stop().await;
}
