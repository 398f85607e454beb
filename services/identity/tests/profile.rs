//! The caller's profile, e-mail verification, and role grants by administrators.

mod common;

use common::{TestApp, phone, signed_in};
use reqwest::Method;
use serde_json::{Value, json};

async fn patch(app: &TestApp, token: &str, body: &Value) -> common::Reply {
    app.send(
        Method::PATCH,
        "/v1/me/profile",
        Some(token),
        Some(body),
        &[],
    )
    .await
}

async fn profile(app: &TestApp, token: &str) -> Value {
    let reply = app
        .send(Method::GET, "/v1/me/profile", Some(token), None, &[])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.json());
    reply.json()
}

#[tokio::test]
async fn the_profile_is_read_and_changed_field_by_field() {
    let app = TestApp::start().await;
    let user = app.sign_in(&phone(1)).await;
    let before = profile(&app, &user.access).await;
    assert_eq!(before["id"], user.user_id.as_str());
    assert_eq!(before["name"], Value::Null);
    assert_eq!(before["emailVerified"], false);

    let changed = patch(
        &app,
        &user.access,
        &json!({ "name": "  Jeanne Dupont ", "language": "en_gb", "dateOfBirth": "1984-03-21" }),
    )
    .await;
    assert_eq!(changed.status, 200, "{}", changed.json());
    let body = changed.json();
    assert_eq!(body["name"], "Jeanne Dupont");
    assert_eq!(body["language"], "en-GB");
    assert_eq!(body["dateOfBirth"], "1984-03-21");
    // Absent fields are kept, null removes.
    let cleared = patch(&app, &user.access, &json!({ "name": null })).await;
    assert_eq!(cleared.json()["name"], Value::Null);
    assert_eq!(cleared.json()["language"], "en-GB");

    // No token, another country, or a token whose subject is no user.
    assert_eq!(
        app.send(Method::GET, "/v1/me/profile", None, None, &[])
            .await
            .status,
        401
    );
    let foreign = app.token(&user.user_id, &["patient"]);
    assert_eq!(
        app.send(Method::GET, "/v1/me/profile", Some(&foreign), None, &[])
            .await
            .status,
        200,
        "an HS256 test token for the same user id"
    );
    let german = pulse_kit::testing::token(&user.user_id, &["patient"], "DE");
    assert_eq!(
        app.send(Method::GET, "/v1/me/profile", Some(&german), None, &[])
            .await
            .status,
        403
    );
    let demo = app.token("demo", &["patient"]);
    let missing = app
        .send(Method::GET, "/v1/me/profile", Some(&demo), None, &[])
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.kind(), "user-not-found");
}

#[tokio::test]
async fn invalid_fields_answer_422_with_the_field_and_change_nothing() {
    let app = TestApp::start().await;
    let user = app.sign_in(&phone(2)).await;
    let before = profile(&app, &user.access).await;
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(2))
        .date_naive()
        .to_string();
    // A well-formed date refused only against today is `invalid-combination`, the type the
    // OpenAPI document keeps for rules no schema states.
    for (body, field, kind) in [
        (json!({ "name": "" }), "name", "validation-failed"),
        (
            json!({ "name": "x".repeat(101) }),
            "name",
            "validation-failed",
        ),
        (
            json!({ "language": "french!" }),
            "language",
            "validation-failed",
        ),
        (json!({ "language": null }), "language", "validation-failed"),
        (
            json!({ "dateOfBirth": tomorrow }),
            "dateOfBirth",
            "invalid-combination",
        ),
        (
            json!({ "dateOfBirth": "1850-01-01" }),
            "dateOfBirth",
            "invalid-combination",
        ),
        (
            json!({ "dateOfBirth": "21/03/1984" }),
            "dateOfBirth",
            "validation-failed",
        ),
        (
            json!({ "dateOfBirth": "1984-3-21" }),
            "dateOfBirth",
            "validation-failed",
        ),
        (json!({ "email": "jeanne@" }), "email", "validation-failed"),
        // One bad field spoils the whole change.
        (
            json!({ "name": "Jeanne", "email": "not an address" }),
            "email",
            "validation-failed",
        ),
    ] {
        let reply = patch(&app, &user.access, &body).await;
        assert_eq!(reply.status, 422, "{body}: {}", reply.json());
        assert_eq!(reply.kind(), kind, "{body}");
        assert_eq!(reply.json()["field"], field, "{body}");
    }
    let unknown = patch(&app, &user.access, &json!({ "nmae": "typo" })).await;
    assert_eq!(unknown.status, 422, "{}", unknown.json());
    assert_eq!(profile(&app, &user.access).await, before);
}

#[tokio::test]
async fn a_new_email_address_is_verified_with_the_code_sent_to_it() {
    let app = TestApp::start().await;
    let user = app.sign_in(&phone(3)).await;
    let changed = patch(
        &app,
        &user.access,
        &json!({ "email": "Jeanne@Example.ORG" }),
    )
    .await;
    assert_eq!(changed.status, 200, "{}", changed.json());
    assert_eq!(changed.json()["email"], "Jeanne@example.org");
    assert_eq!(changed.json()["emailVerified"], false);
    let code = app
        .last_email_code("Jeanne@example.org")
        .expect("a code by e-mail");

    // Asking again at once: one code a minute.
    let again = patch(
        &app,
        &user.access,
        &json!({ "email": "Jeanne@example.org" }),
    )
    .await;
    assert_eq!(again.status, 429, "{}", again.json());
    assert_eq!(again.kind(), "email-rate-limited");

    let verify = |code: String| {
        let app = &app;
        let token = user.access.clone();
        async move {
            app.post_json(
                "/v1/me/profile/email/verify",
                Some(&token),
                &json!({ "code": code }),
            )
            .await
        }
    };
    let wrong = verify(format!(
        "{:06}",
        (code.parse::<u32>().expect("digits") + 1) % 1_000_000
    ))
    .await;
    assert_eq!(wrong.status, 422, "{}", wrong.json());
    assert_eq!(wrong.kind(), "invalid-email-code");
    assert_eq!(wrong.json()["attemptsLeft"], 4);
    let right = verify(code).await;
    assert_eq!(right.status, 200, "{}", right.json());
    assert_eq!(right.json()["emailVerified"], true);

    // A different address starts over, unverified.
    sqlx::query(
        "UPDATE identity.email_verification_codes SET created_at = created_at - interval '2 minutes'",
    )
    .execute(&app.pool)
    .await
    .expect("age the codes");
    let other = patch(&app, &user.access, &json!({ "email": "jd@example.net" })).await;
    assert_eq!(other.json()["emailVerified"], false);
    // The old code does not verify the new address.
    let stale = verify(app.last_email_code("Jeanne@example.org").expect("old")).await;
    assert_eq!(stale.status, 422, "{}", stale.json());
    let removed = patch(&app, &user.access, &json!({ "email": null })).await;
    assert_eq!(removed.json()["email"], Value::Null);
    let nothing = verify("123456".into()).await;
    assert_eq!(nothing.status, 409);
    assert_eq!(nothing.kind(), "email-code-expired");
}

#[tokio::test]
async fn administrators_grant_roles_and_the_change_is_announced() {
    let app = TestApp::start().await;
    let user = app.sign_in(&phone(4)).await;
    let path = format!("/v1/users/{}/roles", user.user_id);

    // Refused before the body is even read.
    let no_token = app
        .send(Method::PUT, &path, None, Some(&json!("not an object")), &[])
        .await;
    assert_eq!(no_token.status, 401);
    let patient = app
        .send(
            Method::PUT,
            &path,
            Some(&user.access),
            Some(&json!("not an object")),
            &[],
        )
        .await;
    assert_eq!(patient.status, 403, "{}", patient.json());

    let admin = app.admin();
    let put = |roles: Value| {
        let app = &app;
        let admin = admin.clone();
        let path = path.clone();
        async move {
            app.send(
                Method::PUT,
                &path,
                Some(&admin),
                Some(&json!({ "roles": roles })),
                &[],
            )
            .await
        }
    };
    let bad = put(json!(["patient", "superuser"])).await;
    assert_eq!(bad.status, 422);
    assert_eq!(bad.json()["field"], "roles");
    let granted = put(json!(["practitioner", "patient"])).await;
    assert_eq!(granted.status, 200, "{}", granted.json());
    assert_eq!(granted.json()["roles"], json!(["patient", "practitioner"]));
    // The same roles again: nothing to announce.
    assert_eq!(put(json!(["patient", "practitioner"])).await.status, 200);
    let events = app.events("RolesChanged").await;
    assert_eq!(events.len(), 1, "{events:?}");
    let payload = &events[0]["payload"];
    assert_eq!(payload["userId"], user.user_id.as_str());
    assert_eq!(payload["roles"], json!(["patient", "practitioner"]));
    assert_eq!(payload["previousRoles"], json!(["patient"]));
    assert_eq!(payload["changedBy"], "admin-1");

    // The next refresh carries the new roles.
    let refreshed = signed_in(&user.phone, &app.refresh(&user.refresh).await.json());
    let claims = profile(&app, &refreshed.access).await;
    assert_eq!(claims["roles"], json!(["patient", "practitioner"]));

    let unknown = app
        .send(
            Method::PUT,
            &format!("/v1/users/{}/roles", pulse_kit::new_id()),
            Some(&admin),
            Some(&json!({ "roles": ["admin"] })),
            &[],
        )
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.kind(), "user-not-found");
    let bad_id = app
        .send(
            Method::PUT,
            "/v1/users/nope/roles",
            Some(&admin),
            Some(&json!({ "roles": ["admin"] })),
            &[],
        )
        .await;
    assert_eq!(bad_id.status, 400);
}

#[tokio::test]
async fn an_administrator_signed_in_through_identity_grants_roles_too() {
    let app = TestApp::start().await;
    let boss = app.sign_in(&phone(5)).await;
    let granted = app
        .send(
            Method::PUT,
            &format!("/v1/users/{}/roles", boss.user_id),
            Some(&app.admin()),
            Some(&json!({ "roles": ["admin", "patient"] })),
            &[],
        )
        .await;
    assert_eq!(granted.status, 200);
    let boss = signed_in(&boss.phone, &app.refresh(&boss.refresh).await.json());
    let doctor = app.sign_in(&phone(6)).await;
    let reply = app
        .send(
            Method::PUT,
            &format!("/v1/users/{}/roles", doctor.user_id),
            Some(&boss.access),
            Some(&json!({ "roles": ["practitioner"] })),
            &[],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.json());
    let events = app.events("RolesChanged").await;
    assert_eq!(
        events.last().map(|e| e["payload"]["changedBy"].clone()),
        Some(json!(boss.user_id))
    );
}

#[tokio::test]
async fn the_openapi_document_lists_the_endpoints_and_their_problems() {
    let app = TestApp::start().await;
    let (status, doc) = app.get(None, "/openapi.json").await;
    assert_eq!(status, 200);
    let paths = &doc["paths"];
    for (path, method) in [
        ("/v1/auth/otp", "post"),
        ("/v1/auth/token", "post"),
        ("/v1/auth/refresh", "post"),
        ("/v1/auth/logout", "post"),
        ("/v1/me/profile", "get"),
        ("/v1/me/profile", "patch"),
        ("/v1/me/profile/email/verify", "post"),
        ("/v1/users/{id}/roles", "put"),
        ("/.well-known/jwks.json", "get"),
    ] {
        assert!(paths[path][method].is_object(), "{method} {path} missing");
    }
    let text = doc.to_string();
    for problem in [
        "otp-rate-limited",
        "phone-wrong-country",
        "sms-unavailable",
        "invalid-code",
        "code-expired",
        "refresh-token-reused",
        "invalid-refresh-token",
        "user-not-found",
        "email-unavailable",
        "invalid-email-code",
    ] {
        assert!(text.contains(problem), "{problem} not documented");
    }
}

#[tokio::test]
async fn with_an_smtp_server_the_verification_code_arrives_by_e_mail_and_an_outage_answers_503() {
    let mut providers = pulse_kit::testing::providers::ProviderStandIns::start().await;
    let url = pulse_kit::settings::Secret::new(providers.smtp_url());
    let app = TestApp::start_with(common::Verification::Jwks, |settings| {
        settings.email = pulse_identity::settings::EmailSettings::Smtp {
            url,
            from: "Pulse <no-reply@pulse.test>".parse().expect("sender"),
        };
    })
    .await;
    let user = app.sign_in(&phone(11)).await;
    let changed = patch(&app, &user.access, &json!({ "email": "jo@example.org" })).await;
    assert_eq!(changed.status, 200, "{}", changed.json());
    let mails = providers
        .wait_emails(1, std::time::Duration::from_secs(10))
        .await;
    assert_eq!(mails[0].to, vec!["jo@example.org".to_owned()]);
    assert!(
        mails[0].from.contains("no-reply@pulse.test"),
        "{}",
        mails[0].from
    );
    let code: String = mails[0]
        .text
        .as_bytes()
        .windows(6)
        .find(|w| w.iter().all(u8::is_ascii_digit))
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .expect("a code in the e-mail");
    // Nothing went to the sandbox file.
    assert!(app.last_email_code("jo@example.org").is_none());
    let verified = app
        .post_json(
            "/v1/me/profile/email/verify",
            Some(&user.access),
            &json!({ "code": code }),
        )
        .await;
    assert_eq!(verified.status, 200, "{}", verified.json());
    assert_eq!(verified.json()["emailVerified"], true);

    // The SMTP server is down: changing the address again answers 503, and nothing is changed.
    providers.stop_smtp().await;
    // As if the minute between two codes had passed.
    sqlx::query(
        "UPDATE identity.email_verification_codes SET created_at = created_at - interval '2 minutes'",
    )
    .execute(&app.pool)
    .await
    .expect("age the codes");
    let refused = patch(&app, &user.access, &json!({ "email": "jo@example.net" })).await;
    assert_eq!(refused.status, 503, "{}", refused.json());
    assert_eq!(profile(&app, &user.access).await["email"], "jo@example.org");
}
