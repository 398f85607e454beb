//! Codes and refresh tokens never reach the logs or the events: the whole sign-in journey runs
//! with every debug log captured, then the captured text and the outbox are searched.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{TestApp, phone, signed_in};
use reqwest::Method;
use serde_json::json;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut log) = self.0.lock() {
            log.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn codes_and_refresh_tokens_never_reach_logs_or_events() {
    let capture = Capture::default();
    // This test's process logs everything at debug level into `capture` (the harness's own
    // subscriber then finds one installed and steps aside).
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
        .with_writer(capture.clone())
        .with_ansi(false)
        .without_time()
        .try_init()
        .expect("the capturing subscriber is the first");
    let app = TestApp::start().await;
    let phone = phone(1);
    assert_eq!(app.send_otp(&phone).await.status, 202);
    let code = app.last_code(&phone).expect("code");
    let wrong = format!(
        "{:06}",
        (code.parse::<u32>().expect("digits") + 1) % 1_000_000
    );
    assert_eq!(app.token_with(&phone, &wrong).await.status, 401);
    let reply = app.token_with(&phone, &code).await;
    assert_eq!(reply.status, 200);
    let user = signed_in(&phone, &reply.json());
    let next = signed_in(&phone, &app.refresh(&user.refresh).await.json());
    assert_eq!(
        app.refresh(&user.refresh).await.status,
        401,
        "reuse is logged"
    );
    let patched = app
        .send(
            Method::PATCH,
            "/v1/me/profile",
            Some(&next.access),
            Some(&json!({ "email": "secret@example.org" })),
            &[],
        )
        .await;
    assert_eq!(patched.status, 200);
    let email_code = app.last_email_code("secret@example.org").expect("code");
    app.post_json(
        "/v1/me/profile/email/verify",
        Some(&next.access),
        &json!({ "code": email_code }),
    )
    .await;

    let log = String::from_utf8_lossy(&capture.0.lock().expect("log")).into_owned();
    assert!(
        log.contains("refresh token was presented again"),
        "the capture works: {}",
        &log[..log.len().min(2000)]
    );
    for (what, secret) in [
        ("sign-in code", code.as_str()),
        ("wrong code", wrong.as_str()),
        ("e-mail code", email_code.as_str()),
        ("refresh token", user.refresh.as_str()),
        ("rotated refresh token", next.refresh.as_str()),
    ] {
        if let Some(at) = log.find(secret) {
            let from = at.saturating_sub(200);
            panic!(
                "the {what} is in the log: …{}…",
                &log[from..(at + 200).min(log.len())]
            );
        }
    }
    let outbox: Vec<String> =
        sqlx::query_scalar("SELECT envelope::text FROM identity.outbox ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .expect("outbox");
    assert!(!outbox.is_empty(), "UserRegistered is there");
    for row in &outbox {
        for secret in [&code, &email_code, &user.refresh] {
            assert!(
                !row.contains(secret.as_str()),
                "a secret in the outbox: {row}"
            );
        }
        assert!(!row.contains(&phone), "no contact data in events: {row}");
    }
}
