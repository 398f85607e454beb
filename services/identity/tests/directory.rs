//! `identity.v1.Directory`: how notifier reaches a user, within its deadline.

mod common;

use std::time::{Duration, Instant};

use common::{TestApp, phone};
use pulse_proto::identity::v1::GetContactRequest;
use pulse_proto::identity::v1::directory_client::DirectoryClient;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn contacts_are_answered_within_the_callers_deadline() {
    let app = TestApp::start().await;
    let user = app.sign_in(&phone(1)).await;
    let mut client = DirectoryClient::connect(format!("http://{}", app.grpc))
        .await
        .expect("connect");
    let ask = |id: String, deadline: Duration| {
        let mut request = tonic::Request::new(GetContactRequest { user_id: id });
        request.set_timeout(deadline);
        request
    };

    let started = Instant::now();
    let contact = client
        .get_contact(ask(user.user_id.clone(), Duration::from_millis(1500)))
        .await
        .expect("contact")
        .into_inner();
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(contact.user_id, user.user_id);
    assert_eq!(contact.phone, phone(1));
    assert_eq!(contact.language, "fr-FR");
    assert_eq!(contact.email, "", "no e-mail yet");
    assert_eq!(contact.name, "");

    // An unverified address is not handed out; a verified one is.
    let patched = app
        .send(
            Method::PATCH,
            "/v1/me/profile",
            Some(&user.access),
            Some(&json!({ "name": "Jeanne", "language": "en", "email": "jeanne@example.org" })),
            &[],
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.json());
    let unverified = client
        .get_contact(ask(user.user_id.clone(), Duration::from_secs(2)))
        .await
        .expect("contact")
        .into_inner();
    assert_eq!(
        (unverified.email.as_str(), unverified.name.as_str()),
        ("", "Jeanne")
    );
    assert_eq!(unverified.language, "en");
    let code = app.last_email_code("jeanne@example.org").expect("code");
    let verified = app
        .post_json(
            "/v1/me/profile/email/verify",
            Some(&user.access),
            &json!({ "code": code }),
        )
        .await;
    assert_eq!(verified.status, 200);
    let contact = client
        .get_contact(ask(user.user_id.clone(), Duration::from_secs(2)))
        .await
        .expect("contact")
        .into_inner();
    assert_eq!(contact.email, "jeanne@example.org");

    let missing = client
        .get_contact(ask(pulse_kit::new_id().to_string(), Duration::from_secs(2)))
        .await
        .expect_err("unknown");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let bad = client
        .get_contact(ask("nope".into(), Duration::from_secs(2)))
        .await
        .expect_err("bad id");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    // A read the database cannot answer in time (the table is locked by another transaction)
    // ends at the caller's deadline, not when the lock goes.
    let mut blocker = app.pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE identity.users IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .expect("lock users");
    let started = Instant::now();
    let late = tokio::time::timeout(
        Duration::from_secs(5),
        client.get_contact(ask(user.user_id, Duration::from_millis(300))),
    )
    .await
    .expect("an answer at the deadline, not when the lock goes")
    .expect_err("deadline");
    let waited = started.elapsed();
    blocker.rollback().await.expect("unlock");
    assert!(
        matches!(
            late.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{late:?}"
    );
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "answered after {waited:?}"
    );
}
