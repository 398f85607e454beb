//! Sending sign-in codes: the limits, the same answer for every phone, numbers of the
//! country only, and an SMS provider that fails or succeeds over its real HTTP shape.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::{TestApp, Verification, phone};
use pulse_identity::settings::SmsSettings;
use pulse_kit::settings::Secret;
use serde_json::json;

async fn count(app: &TestApp, table: &str) -> i64 {
    // The table names come from the tests below, not from input.
    sqlx::query_scalar(&format!("SELECT count(*) FROM identity.{table}"))
        .fetch_one(&app.pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn one_code_a_minute_ten_a_day_and_the_limits_answer_429_with_retry_after() {
    let app = TestApp::start().await;
    let phone = phone(1);
    let first = app.send_otp(&phone).await;
    assert_eq!(first.status, 202, "{}", first.json());
    assert_eq!(first.json()["expiresInSeconds"], 300);
    assert!(app.last_code(&phone).is_some());

    let again = app.send_otp("06 00 00 00 01").await;
    assert_eq!(again.status, 429, "the same phone, written nationally");
    assert_eq!(again.kind(), "otp-rate-limited");
    assert_eq!(again.json()["limit"], "phone-interval");
    let retry: u64 = again
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((55..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(TestApp::lines(&app.sms_file()).len(), 1, "one SMS only");

    // Nine more codes over the last day, none in the last minute: the tenth of the day is the
    // last one allowed.
    sqlx::query(
        "INSERT INTO identity.otp_sends (phone, client_address, sent_at)
         SELECT $1, 'elsewhere', now() - make_interval(hours => n) FROM generate_series(1, 9) AS n",
    )
    .bind(&phone)
    .execute(&app.pool)
    .await
    .expect("backdated sends");
    app.forget_recent_sends().await;
    let daily = app.send_otp(&phone).await;
    assert_eq!(daily.status, 429, "{}", daily.json());
    assert_eq!(daily.json()["limit"], "phone-daily");
    let retry: u64 = daily
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    // The oldest of the ten, 9 hours old before aging, leaves the window in about 15 hours.
    assert!(
        (14 * 3600..=15 * 3600).contains(&retry),
        "Retry-After {retry}"
    );
    // Another phone is not concerned.
    assert_eq!(app.send_otp(&common::phone(2)).await.status, 202);
}

#[tokio::test]
async fn each_client_address_has_its_own_hourly_allowance_behind_a_trusted_proxy() {
    let app = TestApp::start_with(Verification::Jwks, |s| {
        s.trust_forwarded_for = true;
        s.otp_sends_per_address_per_hour = 3;
    })
    .await;
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    for n in 0..3 {
        let reply = app
            .send(
                reqwest::Method::POST,
                "/v1/auth/otp",
                None,
                Some(&json!({ "phone": phone(100 + n) })),
                &from("203.0.113.7, 10.0.0.1"),
            )
            .await;
        assert_eq!(reply.status, 202, "{}", reply.json());
    }
    let refused = app
        .send(
            reqwest::Method::POST,
            "/v1/auth/otp",
            None,
            Some(&json!({ "phone": phone(103) })),
            &from("203.0.113.7"),
        )
        .await;
    assert_eq!(refused.status, 429, "{}", refused.json());
    assert_eq!(refused.json()["limit"], "client-address");
    let retry: u64 = refused
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((3500..=3600).contains(&retry), "Retry-After {retry}");
    let other = app
        .send(
            reqwest::Method::POST,
            "/v1/auth/otp",
            None,
            Some(&json!({ "phone": phone(103) })),
            &from("203.0.113.8"),
        )
        .await;
    assert_eq!(other.status, 202, "another address: {}", other.json());
}

#[tokio::test]
async fn known_and_unknown_phones_get_the_same_answer_but_for_the_sandbox_code() {
    let app = TestApp::start().await;
    let known = phone(10);
    app.sign_in(&known).await;
    app.forget_recent_sends().await;
    let unknown = phone(11);
    let a = app.send_otp(&known).await;
    let b = app.send_otp(&unknown).await;
    assert_eq!((a.status, b.status), (202, 202));
    let without_code = |reply: &common::Reply| {
        let mut body = reply.json();
        body.as_object_mut().map(|o| o.remove("sandboxCode"));
        body
    };
    assert_eq!(without_code(&a), without_code(&b));
    assert_eq!(a.bytes.len(), b.bytes.len(), "codes of the same length");
    assert_eq!(a.header("content-type"), b.header("content-type"));
    assert_eq!(a.headers.len(), b.headers.len());
    // Both got a code, and the answer shows the one the sandbox wrote.
    assert_eq!(
        a.json()["sandboxCode"].as_str(),
        app.last_code(&known).as_deref()
    );
    assert_eq!(
        b.json()["sandboxCode"].as_str(),
        app.last_code(&unknown).as_deref()
    );
}

#[tokio::test]
async fn the_sandbox_answers_with_the_code_it_wrote_for_a_local_web_app() {
    let app = TestApp::start().await;
    let phone = phone(12);
    let sent = app.send_otp(&phone).await;
    assert_eq!(sent.status, 202, "{}", sent.json());
    let body = sent.json();
    let shown = body["sandboxCode"]
        .as_str()
        .expect("sandboxCode")
        .to_owned();
    assert_eq!(
        Some(shown.clone()),
        app.last_code(&phone),
        "the code in the file"
    );
    assert!(shown.len() == 6 && shown.bytes().all(|b| b.is_ascii_digit()));
    // The served document states the field.
    let (_, doc) = app.get(None, "/openapi.json").await;
    let schema = &doc["components"]["schemas"]["OtpAccepted"];
    assert!(
        schema["properties"]["sandboxCode"]["description"]
            .as_str()
            .is_some_and(|d| d.starts_with("Development only")),
        "{schema}"
    );
    let validator = jsonschema::validator_for(schema).expect("a schema");
    assert!(validator.is_valid(&body), "{body} against {schema}");
    // It signs in.
    let signed = app.token_with(&phone, &shown).await;
    assert_eq!(signed.status, 200, "{}", signed.json());
}

#[tokio::test]
async fn numbers_of_another_country_or_no_number_at_all_are_refused_with_the_field() {
    let app = TestApp::start().await;
    let german = app.send_otp("+49 151 23456789").await;
    assert_eq!(german.status, 422);
    assert_eq!(german.kind(), "phone-wrong-country");
    assert_eq!(german.json()["field"], "phone");
    for bad in ["", "hello", "+33 6 12", "06 12 34 56 78 90 12"] {
        let reply = app.send_otp(bad).await;
        assert_eq!(reply.status, 422, "{bad}");
        assert_eq!(reply.kind(), "validation-failed", "{bad}");
        assert_eq!(reply.json()["field"], "phone", "{bad}");
    }
    let reply = app
        .post_json(
            "/v1/auth/otp",
            None,
            &json!({ "telephone": "+33612345678" }),
        )
        .await;
    assert!(matches!(reply.status, 400 | 422), "{}", reply.status);
    assert_eq!(count(&app, "otp_sends").await, 0);
    assert!(TestApp::lines(&app.sms_file()).is_empty());
}

/// One request the fake provider got: path, `Authorization`, form fields.
type Seen = (String, Option<String>, Vec<(String, String)>);

/// What the fake provider saw and how it answers.
#[derive(Default)]
struct Fake {
    requests: Vec<Seen>,
    status: u16,
    delay: Duration,
}

async fn messages(
    State(fake): State<Arc<Mutex<Fake>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    // The form is parsed as a query string would be (the same encoding).
    let form: Vec<(String, String)> = format!("/?{body}")
        .parse::<axum::http::Uri>()
        .ok()
        .and_then(|uri| {
            axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri)
                .ok()
                .map(|q| q.0)
        })
        .unwrap_or_default();
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (status, delay) = {
        let mut fake = fake.lock().expect("fake");
        fake.requests.push((uri.path().to_owned(), auth, form));
        (fake.status, fake.delay)
    };
    tokio::time::sleep(delay).await;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        r#"{"code":20500,"message":"An internal server error has occurred"}"#.into(),
    )
}

async fn fake_provider(fake: Arc<Mutex<Fake>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = axum::Router::new()
        .route(
            "/2010-04-01/Accounts/{account}/Messages.json",
            axum::routing::post(messages),
        )
        .with_state(fake);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_failing_provider_answers_503_and_charges_no_send_then_a_working_one_delivers() {
    let fake = Arc::new(Mutex::new(Fake {
        status: 500,
        ..Fake::default()
    }));
    let base_url = fake_provider(Arc::clone(&fake)).await;
    let app = TestApp::start_with(Verification::Jwks, |s| {
        s.sms = SmsSettings::Twilio {
            base_url,
            account: "AC0123456789".into(),
            auth_token: Secret::new("twilio-token"),
            from: "+33700000000".into(),
        };
        s.sms_timeout = Duration::from_millis(500);
    })
    .await;
    let phone = phone(20);
    let failed = app.send_otp(&phone).await;
    assert_eq!(failed.status, 503, "{}", failed.json());
    assert_eq!(failed.kind(), "sms-unavailable");
    assert!(failed.header("retry-after").is_some());
    assert_eq!(count(&app, "otp_codes").await, 0, "the code is rolled back");
    assert_eq!(count(&app, "otp_sends").await, 0, "the send is not counted");

    // Too slow counts as down.
    {
        let mut fake = fake.lock().expect("fake");
        fake.status = 201;
        fake.delay = Duration::from_secs(2);
    }
    let slow = app.send_otp(&phone).await;
    assert_eq!(slow.status, 503, "{}", slow.json());
    assert_eq!(count(&app, "otp_sends").await, 0);

    fake.lock().expect("fake").delay = Duration::ZERO;
    // Not charged: the next request goes out at once, not after a minute.
    let sent = app.send_otp(&phone).await;
    assert_eq!(sent.status, 202, "{}", sent.json());
    let (path, auth, form) = fake
        .lock()
        .expect("fake")
        .requests
        .last()
        .cloned()
        .expect("a request");
    assert_eq!(path, "/2010-04-01/Accounts/AC0123456789/Messages.json");
    use base64::Engine;
    let expected = base64::engine::general_purpose::STANDARD.encode("AC0123456789:twilio-token");
    assert_eq!(auth, Some(format!("Basic {expected}")));
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(field("To"), phone);
    assert_eq!(field("From"), "+33700000000");
    let body = field("Body");
    let code: String = body
        .as_bytes()
        .windows(6)
        .find(|w| w.iter().all(u8::is_ascii_digit))
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .expect("a code in the message");
    assert!(body.starts_with("Votre code Pulse"), "{body}");
    let signed = app.token_with(&phone, &code).await;
    assert_eq!(
        signed.status,
        200,
        "the delivered code signs in: {}",
        signed.json()
    );
}

#[tokio::test]
async fn a_number_the_provider_refuses_is_a_422_and_nothing_is_kept() {
    let fake = Arc::new(Mutex::new(Fake {
        status: 400,
        ..Fake::default()
    }));
    let base_url = fake_provider(Arc::clone(&fake)).await;
    let app = TestApp::start_with(Verification::Jwks, |s| {
        s.sms = SmsSettings::Twilio {
            base_url,
            account: "AC1".into(),
            auth_token: Secret::new("t"),
            from: "+33700000000".into(),
        };
    })
    .await;
    let reply = app.send_otp(&phone(30)).await;
    assert_eq!(reply.status, 422, "{}", reply.json());
    assert_eq!(reply.kind(), "sms-rejected");
    assert_eq!(reply.json()["field"], "phone");
    assert_eq!(count(&app, "otp_codes").await, 0);
}

#[tokio::test]
async fn a_real_provider_answers_without_the_code_and_the_same_for_every_phone() {
    let fake = Arc::new(Mutex::new(Fake {
        status: 201,
        ..Fake::default()
    }));
    let base_url = fake_provider(Arc::clone(&fake)).await;
    let app = TestApp::start_with(Verification::Jwks, |s| {
        s.sms = SmsSettings::Twilio {
            base_url,
            account: "AC1".into(),
            auth_token: Secret::new("t"),
            from: "+33700000000".into(),
        };
    })
    .await;
    let last_code = || {
        let (_, _, form) = fake
            .lock()
            .expect("fake")
            .requests
            .last()
            .cloned()
            .expect("a request");
        let body = form
            .iter()
            .find(|(k, _)| k == "Body")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        body.as_bytes()
            .windows(6)
            .find(|w| w.iter().all(u8::is_ascii_digit))
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .expect("a code in the message")
    };
    let known = phone(40);
    let first = app.send_otp(&known).await;
    assert_eq!(first.status, 202, "{}", first.json());
    assert!(
        first.json().get("sandboxCode").is_none(),
        "{}",
        first.json()
    );
    let signed = app.token_with(&known, &last_code()).await;
    assert_eq!(signed.status, 200, "{}", signed.json());
    app.forget_recent_sends().await;

    let a = app.send_otp(&known).await;
    let b = app.send_otp(&phone(41)).await;
    assert_eq!((a.status, b.status), (202, 202));
    assert_eq!(a.bytes, b.bytes, "byte-identical bodies");
    assert_eq!(
        a.json(),
        json!({ "expiresInSeconds": 300, "resendAfterSeconds": 60 })
    );
    assert_eq!(a.header("content-type"), b.header("content-type"));
    assert_eq!(a.headers.len(), b.headers.len());
    let code = last_code();
    assert!(
        !String::from_utf8_lossy(&b.bytes).contains(&code),
        "the code is not in the answer"
    );
    assert_eq!(fake.lock().expect("fake").requests.len(), 3);
}
