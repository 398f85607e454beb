//! Signing in, refreshing and signing out: brute force, sign-up, refresh-token rotation with
//! reuse detection (raced), logout, and access tokens that verify with the published JWKS.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestApp, Verification, kid_of, phone, signed_in};
use jsonwebtoken::{DecodingKey, Validation};
use pulse_identity::keys::AccessClaims;
use pulse_kit::auth::jwks::{JwkSet, Jwks};
use pulse_kit::auth::{Algorithm, Authenticator};
use pulse_kit::testing::TEST_JWT_ISSUER;
use reqwest::Method;

/// A wrong code for `code` (the next one, wrapping).
fn wrong(code: &str) -> String {
    let n: u32 = code.parse().expect("digits");
    format!("{:06}", (n + 1) % 1_000_000)
}

#[tokio::test]
async fn after_five_wrong_codes_the_right_one_is_refused_and_a_new_code_works() {
    let app = TestApp::start().await;
    let phone = phone(1);
    assert_eq!(app.send_otp(&phone).await.status, 202);
    let code = app.last_code(&phone).expect("code");
    for left in (0..5).rev() {
        let reply = app.token_with(&phone, &wrong(&code)).await;
        assert_eq!(reply.status, 401, "{}", reply.json());
        assert_eq!(reply.kind(), "invalid-code");
        assert_eq!(reply.json()["attemptsLeft"], left);
    }
    let refused = app.token_with(&phone, &code).await;
    assert_eq!(refused.status, 401, "the right code after 5 wrong ones");
    assert_eq!(refused.kind(), "code-expired");

    // A new code is needed (and the minute between two codes has to pass).
    assert_eq!(app.send_otp(&phone).await.status, 429);
    app.forget_recent_sends().await;
    assert_eq!(app.send_otp(&phone).await.status, 202);
    let fresh = app.last_code(&phone).expect("new code");
    let reply = app.token_with(&phone, &fresh).await;
    assert_eq!(reply.status, 200, "{}", reply.json());
    // A used code does not sign in twice.
    assert_eq!(app.token_with(&phone, &fresh).await.kind(), "code-expired");
}

#[tokio::test]
async fn concurrent_guesses_are_all_counted() {
    let app = Arc::new(TestApp::start().await);
    let phone = phone(2);
    assert_eq!(app.send_otp(&phone).await.status, 202);
    let code = app.last_code(&phone).expect("code");
    let guesses = (0..12).map(|i| {
        let app = Arc::clone(&app);
        let phone = phone.clone();
        let guess = format!(
            "{:06}",
            (code.parse::<u32>().expect("digits") + 1 + i) % 1_000_000
        );
        tokio::spawn(async move { app.token_with(&phone, &guess).await.kind() })
    });
    let kinds = futures_join(guesses).await;
    let wrong = kinds.iter().filter(|k| *k == "invalid-code").count();
    let dead = kinds.iter().filter(|k| *k == "code-expired").count();
    assert_eq!((wrong, dead), (5, 7), "{kinds:?}");
    assert_eq!(app.token_with(&phone, &code).await.kind(), "code-expired");
}

async fn futures_join<T: Send + 'static>(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for task in tasks.collect::<Vec<_>>() {
        out.push(task.await.expect("task"));
    }
    out
}

#[tokio::test]
async fn the_first_sign_in_creates_a_patient_and_announces_it_once() {
    let app = TestApp::start().await;
    let first = app.sign_in(&phone(3)).await;
    assert_eq!(first.body["newUser"], true);
    assert_eq!(first.body["tokenType"], "Bearer");
    assert_eq!(first.body["expiresIn"], 900);
    app.forget_recent_sends().await;
    let again = app.sign_in(&phone(3)).await;
    assert_eq!(again.body["newUser"], false);
    assert_eq!(again.user_id, first.user_id, "a stable user id");
    let events = app.events("UserRegistered").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["payload"]["userId"], first.user_id.as_str());
    assert_eq!(
        events[0]["payload"]["roles"],
        serde_json::json!(["patient"])
    );
    assert_eq!(events[0]["country"], "FR");
    // The second sign-in, not the first, is announced as one (notifier tells the user).
    let sign_ins = app.events("SignedIn").await;
    assert_eq!(sign_ins.len(), 1, "{sign_ins:?}");
    assert_eq!(sign_ins[0]["payload"]["userId"], first.user_id.as_str());
    let profile = app
        .send(
            Method::GET,
            "/v1/me/profile",
            Some(&first.access),
            None,
            &[],
        )
        .await;
    assert_eq!(profile.status, 200, "{}", profile.json());
    assert_eq!(profile.json()["phone"], phone(3));
    assert_eq!(profile.json()["roles"], serde_json::json!(["patient"]));
    assert_eq!(profile.json()["language"], "fr-FR");
}

#[tokio::test]
async fn identity_tokens_verify_with_the_published_jwks() {
    let app = TestApp::start().await;
    let user = app.sign_in(&phone(4)).await;
    let jwks = app.jwks().await;
    assert_eq!(jwks.status, 200);
    assert_eq!(
        jwks.header("cache-control").as_deref(),
        Some("public, max-age=60")
    );
    let set: JwkSet = serde_json::from_slice(&jwks.bytes).expect("a JWK set");
    let header = jsonwebtoken::decode_header(&user.access).expect("header");
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    let jwk = set
        .find(&kid_of(&user.access))
        .expect("the token's key is published");
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[TEST_JWT_ISSUER]);
    let claims = jsonwebtoken::decode::<AccessClaims>(
        &user.access,
        &DecodingKey::from_jwk(jwk).expect("key"),
        &validation,
    )
    .expect("verifies with the JWK")
    .claims;
    assert_eq!(claims.sub, user.user_id);
    assert_eq!(claims.roles, vec!["patient".to_owned()]);
    assert_eq!(claims.country, "FR");
    assert_eq!(claims.exp - claims.iat, 900);
    assert!(!claims.jti.is_empty());

    // The kit's verifier, as every other component runs it, fetching the JWKS over HTTP.
    let url = format!("{}/.well-known/jwks.json", app.base);
    let verifier = Authenticator::new(
        TEST_JWT_ISSUER,
        "FR",
        &[Algorithm::EdDSA, Algorithm::ES256],
        None,
        Some(Arc::new(Jwks::new(&url, Duration::ZERO).expect("jwks"))),
    )
    .expect("verifier");
    let verified = verifier
        .verify(&user.access)
        .await
        .expect("the kit accepts it");
    assert_eq!(verified.sub, user.user_id);
    let germany = Authenticator::new(
        TEST_JWT_ISSUER,
        "DE",
        &[Algorithm::EdDSA],
        None,
        Some(Arc::new(Jwks::new(&url, Duration::ZERO).expect("jwks"))),
    )
    .expect("verifier");
    assert_eq!(
        germany
            .verify(&user.access)
            .await
            .expect_err("FR token in DE")
            .status,
        403
    );
}

#[tokio::test]
async fn identity_verifies_its_own_tokens_and_refuses_tampered_or_foreign_ones() {
    // HS256-only deployment: the kit cannot verify identity's tokens, identity can.
    let app = TestApp::start_with(Verification::Hs256Only, |_| {}).await;
    let user = app.sign_in(&phone(5)).await;
    let get = |token: String| {
        let app = &app;
        async move {
            app.send(Method::GET, "/v1/me/profile", Some(&token), None, &[])
                .await
        }
    };
    assert_eq!(get(user.access.clone()).await.status, 200);
    // A changed payload.
    let mut parts: Vec<String> = user.access.split('.').map(str::to_owned).collect();
    parts[1].insert(3, 'A');
    assert_eq!(get(parts.join(".")).await.status, 401);
    // `alg: none` naming identity's key.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none_header = b64.encode(format!(
        r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#,
        kid_of(&user.access)
    ));
    let payload = user.access.split('.').nth(1).expect("payload").to_owned();
    assert_eq!(get(format!("{none_header}.{payload}.")).await.status, 401);
    // HS256 "signed" with the published public key as the secret.
    let jwks: serde_json::Value = app.jwks().await.json();
    let x = jwks["keys"][0]["x"].as_str().expect("x").to_owned();
    let forged_header = b64.encode(format!(
        r#"{{"alg":"HS256","typ":"JWT","kid":"{}"}}"#,
        kid_of(&user.access)
    ));
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(x.as_bytes()).expect("key");
    mac.update(format!("{forged_header}.{payload}").as_bytes());
    let signature = b64.encode(mac.finalize().into_bytes());
    assert_eq!(
        get(format!("{forged_header}.{payload}.{signature}"))
            .await
            .status,
        401
    );
    // A token identity signed for another country.
    let germany = pulse_identity::keyring(
        pulse_kit::db::schema_pool(&app.db.url, "identity", 2).expect("pool"),
        &app.settings,
        "DE",
    );
    let foreign = germany
        .issue(user.user_id.parse().expect("uuid"), &["patient".to_owned()])
        .await
        .expect("token");
    assert_eq!(get(foreign.token).await.status, 403);
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_token_revokes_the_whole_session() {
    let app = TestApp::start().await;
    let user = app.sign_in(&phone(6)).await;
    let second = app.refresh(&user.refresh).await;
    assert_eq!(second.status, 200, "{}", second.json());
    assert_eq!(second.header("cache-control").as_deref(), Some("no-store"));
    assert!(second.set_cookies().is_empty(), "body in, body out");
    let second = signed_in(&user.phone, &second.json());
    assert_ne!(second.refresh, user.refresh);
    assert_eq!(second.user_id, user.user_id);
    let third = signed_in(&user.phone, &app.refresh(&second.refresh).await.json());

    // The first token comes back: someone copied it. The whole family goes.
    let reused = app.refresh(&user.refresh).await;
    assert_eq!(reused.status, 401);
    assert_eq!(reused.kind(), "refresh-token-reused");
    let newest = app.refresh(&third.refresh).await;
    assert_eq!(newest.status, 401, "the newest token stops working too");
    assert_eq!(newest.kind(), "invalid-refresh-token");
    // Another session of the same user is not affected.
    app.forget_recent_sends().await;
    let other = app.sign_in(&user.phone).await;
    assert_eq!(app.refresh(&other.refresh).await.status, 200);
    assert_eq!(
        app.refresh("not-a-token").await.kind(),
        "invalid-refresh-token"
    );
}

#[tokio::test]
async fn of_two_concurrent_refreshes_with_one_token_exactly_one_wins() {
    let app = Arc::new(TestApp::start().await);
    for round in 0..5u32 {
        let user = app.sign_in(&phone(100 + round)).await;
        let racers = (0..2).map(|_| {
            let app = Arc::clone(&app);
            let token = user.refresh.clone();
            tokio::spawn(async move { app.refresh(&token).await.status })
        });
        let statuses = futures_join(racers).await;
        let won = statuses.iter().filter(|s| **s == 200).count();
        assert_eq!(won, 1, "round {round}: {statuses:?}");
        assert!(
            statuses.iter().all(|s| matches!(s, 200 | 401)),
            "{statuses:?}"
        );
    }
}

#[tokio::test]
async fn logout_revokes_the_session() {
    let app = TestApp::start().await;
    let user = app.sign_in(&phone(7)).await;
    let second = signed_in(&user.phone, &app.refresh(&user.refresh).await.json());
    let out = app
        .post_json(
            "/v1/auth/logout",
            None,
            &serde_json::json!({ "refreshToken": second.refresh }),
        )
        .await;
    assert_eq!(out.status, 204);
    assert!(out.set_cookies().is_empty(), "no cookie to clear");
    assert_eq!(
        app.refresh(&second.refresh).await.kind(),
        "invalid-refresh-token"
    );
    let unknown = app
        .post_json(
            "/v1/auth/logout",
            None,
            &serde_json::json!({ "refreshToken": "whatever" }),
        )
        .await;
    assert_eq!(unknown.status, 204, "no hint whether a token existed");
}

/// The single `Set-Cookie` of `reply`, checked to set or clear `pulse_refresh` with every
/// attribute and `Max-Age=max_age`.
fn assert_refresh_cookie(reply: &common::Reply, max_age: u64) -> String {
    let cookies = reply.set_cookies();
    assert_eq!(cookies.len(), 1, "one Set-Cookie: {cookies:?}");
    let attributes = common::cookie_attributes(&cookies[0]);
    for wanted in common::REFRESH_COOKIE_ATTRIBUTES {
        assert!(
            attributes.iter().any(|a| a == wanted),
            "{wanted} missing in {}",
            cookies[0]
        );
    }
    assert!(
        attributes.contains(&format!("Max-Age={max_age}")),
        "Max-Age={max_age} missing in {}",
        cookies[0]
    );
    reply.refresh_cookie().expect("pulse_refresh")
}

/// The refresh lifetime of the test server (the default 30 days), in seconds.
const REFRESH_SECONDS: u64 = 30 * 86_400;

/// `schema` of the served document validates `body`.
async fn assert_documented(app: &TestApp, schema: &str, body: &serde_json::Value) {
    let (_, doc) = app.get(None, "/openapi.json").await;
    let schema = &doc["components"]["schemas"][schema];
    let validator = jsonschema::validator_for(schema).expect("a schema");
    let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{body} against {schema}: {errors:?}");
}

#[tokio::test]
async fn a_cookie_sign_in_sets_the_refresh_cookie_and_keeps_the_token_out_of_the_body() {
    let app = TestApp::start().await;
    let reply = app.sign_in_with_cookie(&phone(8)).await;
    let body = reply.json();
    let token = assert_refresh_cookie(&reply, REFRESH_SECONDS);
    assert_eq!(token.len(), 43, "a whole refresh token: {token}");
    assert!(body.get("refreshToken").is_none(), "{body}");
    assert_eq!(body["refreshTokenExpiresIn"], REFRESH_SECONDS);
    assert!(body["accessToken"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(reply.header("cache-control").as_deref(), Some("no-store"));
    assert_documented(&app, "TokenResponse", &body).await;
    let access = body["accessToken"].as_str().expect("accessToken");
    let profile = app
        .send(Method::GET, "/v1/me/profile", Some(access), None, &[])
        .await;
    assert_eq!(profile.status, 200, "{}", profile.json());

    // `body`, spelled out, is today's answer: the token in the body and no cookie.
    app.forget_recent_sends().await;
    assert_eq!(app.send_otp(&phone(8)).await.status, 202);
    let code = app.last_code(&phone(8)).expect("code");
    let in_body = app
        .post_json(
            "/v1/auth/token",
            None,
            &serde_json::json!({ "phone": phone(8), "code": code, "refreshTokenIn": "body" }),
        )
        .await;
    assert_eq!(in_body.status, 200, "{}", in_body.json());
    assert!(in_body.set_cookies().is_empty(), "no cookie in body mode");
    let user = signed_in(&phone(8), &in_body.json());
    assert_eq!(user.refresh.len(), 43);
    assert_documented(&app, "TokenResponse", &user.body).await;

    // Another place is refused, naming the field.
    app.forget_recent_sends().await;
    assert_eq!(app.send_otp(&phone(8)).await.status, 202);
    let code = app.last_code(&phone(8)).expect("code");
    let bad = app
        .post_json(
            "/v1/auth/token",
            None,
            &serde_json::json!({ "phone": phone(8), "code": code, "refreshTokenIn": "header" }),
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.json());
    assert_eq!(bad.json()["field"], "refreshTokenIn");
    assert!(bad.set_cookies().is_empty());
}

#[tokio::test]
async fn refresh_by_cookie_rotates_the_cookie_and_a_reused_cookie_revokes_the_session() {
    let app = TestApp::start().await;
    let first = app
        .sign_in_with_cookie(&phone(9))
        .await
        .refresh_cookie()
        .expect("cookie");

    let second = app.post_with_cookie("/v1/auth/refresh", &first).await;
    assert_eq!(second.status, 200, "{}", second.json());
    assert_eq!(second.header("cache-control").as_deref(), Some("no-store"));
    let body = second.json();
    assert!(
        body.get("refreshToken").is_none(),
        "cookie in, cookie out: {body}"
    );
    assert_eq!(body["refreshTokenExpiresIn"], REFRESH_SECONDS);
    let second = assert_refresh_cookie(&second, REFRESH_SECONDS);
    assert_ne!(second, first, "the cookie rotates");

    // Without a JSON body the cookie does nothing (the CSRF defence, with SameSite=Strict),
    // and the token is not spent.
    let header = format!("pulse_refresh={second}");
    let form = app
        .client
        .post(format!("{}/v1/auth/refresh", app.base))
        .header("cookie", &header)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("refreshTokenIn=cookie")
        .send()
        .await
        .expect("refresh");
    assert_eq!(form.status().as_u16(), 415);
    assert!(form.headers().get("set-cookie").is_none());

    let third = app.post_with_cookie("/v1/auth/refresh", &second).await;
    assert_eq!(third.status, 200, "{}", third.json());
    let third = assert_refresh_cookie(&third, REFRESH_SECONDS);
    assert_ne!(third, second);

    // The first cookie comes back (copied): the whole session goes, and the cookie is cleared.
    let reused = app.post_with_cookie("/v1/auth/refresh", &first).await;
    assert_eq!(reused.status, 401, "{}", reused.json());
    assert_eq!(reused.kind(), "refresh-token-reused");
    assert_eq!(assert_refresh_cookie(&reused, 0), "", "cleared");
    let newest = app.post_with_cookie("/v1/auth/refresh", &third).await;
    assert_eq!(newest.status, 401, "the newest cookie stops working too");
    assert_eq!(newest.kind(), "invalid-refresh-token");
    let revoked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM identity.refresh_tokens WHERE revoked_at IS NOT NULL",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(revoked, 3, "the family of three tokens is revoked");

    // Neither the body's token nor the cookie.
    let neither = app
        .post_json("/v1/auth/refresh", None, &serde_json::json!({}))
        .await;
    assert_eq!(neither.status, 401, "{}", neither.json());
    assert_eq!(neither.kind(), "invalid-refresh-token");
    let detail = neither.json()["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        detail.contains("refreshToken") && detail.contains("pulse_refresh"),
        "{detail}"
    );
    assert!(neither.set_cookies().is_empty());
    let null = app
        .post_json(
            "/v1/auth/refresh",
            None,
            &serde_json::json!({ "refreshToken": null }),
        )
        .await;
    assert_eq!(null.status, 422, "refreshToken is a string when present");

    // With both, the body's token is the one used, and it comes back in the body.
    app.forget_recent_sends().await;
    let user = app.sign_in(&phone(9)).await;
    let both = app
        .send(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(&serde_json::json!({ "refreshToken": user.refresh })),
            &[("cookie", "pulse_refresh=not-a-token")],
        )
        .await;
    assert_eq!(both.status, 200, "{}", both.json());
    assert!(both.set_cookies().is_empty());
    assert!(both.json()["refreshToken"].is_string());
}

#[tokio::test]
async fn logout_by_cookie_clears_it_and_the_old_cookie_then_fails() {
    let app = TestApp::start().await;
    let cookie = app
        .sign_in_with_cookie(&phone(10))
        .await
        .refresh_cookie()
        .expect("cookie");
    let refreshed = app.post_with_cookie("/v1/auth/refresh", &cookie).await;
    let cookie = refreshed.refresh_cookie().expect("a new cookie");

    let out = app.post_with_cookie("/v1/auth/logout", &cookie).await;
    assert_eq!(out.status, 204, "{}", out.json());
    assert_eq!(assert_refresh_cookie(&out, 0), "", "cleared");
    let after = app.post_with_cookie("/v1/auth/refresh", &cookie).await;
    assert_eq!(after.status, 401, "{}", after.json());
    assert_eq!(after.kind(), "invalid-refresh-token");
    assert_eq!(
        assert_refresh_cookie(&after, 0),
        "",
        "a refused cookie is cleared"
    );

    // Without a JSON body the cookie signs nobody out.
    app.forget_recent_sends().await;
    let cookie = app
        .sign_in_with_cookie(&phone(10))
        .await
        .refresh_cookie()
        .expect("cookie");
    let form = app
        .client
        .post(format!("{}/v1/auth/logout", app.base))
        .header("cookie", format!("pulse_refresh={cookie}"))
        .send()
        .await
        .expect("logout");
    assert_eq!(form.status().as_u16(), 415);
    let still = app.post_with_cookie("/v1/auth/refresh", &cookie).await;
    assert_eq!(still.status, 200, "{}", still.json());

    let neither = app
        .post_json("/v1/auth/logout", None, &serde_json::json!({}))
        .await;
    assert_eq!(neither.status, 401, "{}", neither.json());
    assert_eq!(neither.kind(), "invalid-refresh-token");
}
