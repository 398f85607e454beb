//! Token verification through identity's JWK set, against a real loopback JWKS server and the
//! real server stack (`TestApp`: middleware, extractors, problem answers). Every attack must be
//! answered 401/403 — never 200, never 500.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pulse_kit::auth::claims_for;
use pulse_kit::server::JwtSettings;
use pulse_kit::settings::Env;
use pulse_kit::testing::{self, TEST_JWT_ISSUER, TestApp, TestJwks, TestSigningKey};
use serde_json::Value;

/// A server with no component: `/v1/me` answers who the token says the caller is.
async fn start(jwt: JwtSettings) -> TestApp {
    TestApp::start_with(Vec::new(), testing::france(), move |settings| {
        settings.jwt = jwt;
    })
    .await
}

async fn app_with_jwks(jwks: &TestJwks, refresh_interval: Duration) -> TestApp {
    start(testing::jwks_jwt_settings(&jwks.url, refresh_interval)).await
}

async fn me(app: &TestApp, token: &str) -> (u16, Value) {
    app.get(Some(token), "/v1/me").await
}

/// Asserts that `token` is refused with `status` and returns the problem.
async fn refused(app: &TestApp, token: &str, status: u16, what: &str) -> Value {
    let (got, body) = me(app, token).await;
    assert_eq!(got, status, "{what}: {body}");
    body
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn admin_claims(country: &str) -> pulse_kit::auth::Claims {
    claims_for(
        "mallory",
        &["admin".into()],
        country,
        TEST_JWT_ISSUER,
        Duration::from_secs(600),
    )
}

/// An HS256 token naming key `kid`, HMAC-SHA256 signed with `secret`.
fn hs256_token(kid: &str, claims: &pulse_kit::auth::Claims, secret: &[u8]) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).expect("HS256 token")
}

#[tokio::test]
async fn es256_and_eddsa_tokens_verify_through_the_jwks() {
    let ed = TestSigningKey::ed25519();
    let ec = TestSigningKey::es256();
    let jwks = TestJwks::start(&[&ed, &ec]).await;
    let app = app_with_jwks(&jwks, Duration::from_secs(5)).await;
    for key in [&ed, &ec] {
        let (status, body) = me(&app, &key.token("patient-7", &["patient"], "FR")).await;
        assert_eq!(status, 200, "{:?}: {body}", key.algorithm);
        assert_eq!(body["subject"], "patient-7");
        assert_eq!(body["roles"], serde_json::json!(["patient"]));
    }
    // The HS256 tokens of the other tests still verify beside them.
    assert_eq!(me(&app, &app.token("dev", &["patient"])).await.0, 200);
    assert_eq!(jwks.fetches(), 1, "both keys come from one fetch");
}

#[tokio::test]
async fn attacks_are_refused_never_200_nor_500() {
    let ed = TestSigningKey::ed25519();
    let ec = TestSigningKey::es256();
    let jwks = TestJwks::start(&[&ed, &ec]).await;
    let mixed = app_with_jwks(&jwks, Duration::from_secs(5)).await;
    // A production-like deployment: identity's algorithms only.
    let strict = start(JwtSettings {
        algorithms: vec![Algorithm::EdDSA, Algorithm::ES256],
        ..testing::jwks_jwt_settings(&jwks.url, Duration::from_secs(5))
    })
    .await;
    let published = reqwest::get(&jwks.url)
        .await
        .expect("JWKS")
        .bytes()
        .await
        .expect("JWKS body");

    for app in [&mixed, &strict] {
        // `alg: none`, with and without an (empty) signature, naming a real key.
        for alg in ["none", "None", "NONE"] {
            let header = serde_json::json!({"alg": alg, "typ": "JWT", "kid": ed.kid});
            let body = serde_json::to_vec(&admin_claims("FR")).expect("claims");
            let unsigned = format!("{}.{}", b64(header.to_string().as_bytes()), b64(&body));
            refused(app, &format!("{unsigned}."), 401, "alg none").await;
            refused(app, &unsigned, 401, "alg none, two segments").await;
        }

        // HS256 "signed" with what identity publishes as the HMAC secret: the raw public keys,
        // the JWKs' text, their `x`, the whole JWK set.
        for key in [&ed, &ec] {
            let jwk = serde_json::to_value(key.jwk()).expect("jwk");
            let secrets: Vec<Vec<u8>> = vec![
                key.public_key().to_vec(),
                jwk.to_string().into_bytes(),
                jwk["x"].as_str().expect("x").as_bytes().to_vec(),
                published.to_vec(),
            ];
            for secret in secrets {
                let forged = hs256_token(&key.kid, &admin_claims("FR"), &secret);
                refused(app, &forged, 401, "HS256 with the public key").await;
            }
        }

        // Expired (beyond the 30 s leeway), wrong issuer, another country.
        for key in [&ed, &ec] {
            let mut expired = admin_claims("FR");
            expired.exp = chrono::Utc::now().timestamp() - 120;
            let body = refused(app, &key.mint(&expired), 401, "expired").await;
            assert!(
                body["detail"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("expired")
            );

            let mut foreign_issuer = admin_claims("FR");
            foreign_issuer.iss = "someone-else".into();
            refused(app, &key.mint(&foreign_issuer), 401, "wrong issuer").await;

            let body = refused(app, &key.token("eve", &["admin"], "DE"), 403, "country").await;
            assert_eq!(body["tokenCountry"], "DE");
        }

        // The header names an ES256 key but says EdDSA: the key's own `alg` decides.
        let body = serde_json::to_vec(&admin_claims("FR")).expect("claims");
        let header = serde_json::json!({"alg": "EdDSA", "kid": ec.kid});
        let confused = format!(
            "{}.{}.{}",
            b64(header.to_string().as_bytes()),
            b64(&body),
            b64(&[0u8; 64])
        );
        let problem = refused(app, &confused, 401, "alg/key mismatch").await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("ES256"),
            "{problem}"
        );

        // An asymmetric token without `kid` (its header replaced, so the signature is moot:
        // it is refused before any key is looked for).
        let signed = ed.mint(&admin_claims("FR"));
        let (_, rest) = signed.split_once('.').expect("jwt");
        let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT"});
        let no_kid = format!("{}.{rest}", b64(header.to_string().as_bytes()));
        let problem = refused(app, &no_kid, 401, "no kid").await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("kid")
        );

        // Signed by a key identity never published, under a published kid.
        let impostor = TestSigningKey::ed25519().with_kid(&ed.kid);
        refused(app, &impostor.token("eve", &["admin"], "FR"), 401, "forged").await;
    }

    // HS256 outside the allow-list is refused by name, even with the right secret.
    let problem = refused(&strict, &strict.admin(), 401, "HS256 not accepted").await;
    assert_eq!(
        problem["acceptedAlgorithms"],
        serde_json::json!(["EdDSA", "ES256"])
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("HS256")
    );
}

#[tokio::test]
async fn an_unknown_kid_costs_one_fetch_per_interval() {
    let known = TestSigningKey::ed25519();
    let jwks = TestJwks::start(&[&known]).await;
    let app = app_with_jwks(&jwks, Duration::from_secs(30)).await;

    let stranger = TestSigningKey::ed25519();
    let problem = refused(&app, &stranger.token("eve", &[], "FR"), 401, "unknown kid").await;
    assert_eq!(testing::problem_kind(&problem), "unauthorized");
    assert_eq!(jwks.fetches(), 1, "one fetch for the unknown kid");

    // Within the interval, more unknown kids fetch nothing.
    for _ in 0..5 {
        let stranger = TestSigningKey::es256();
        refused(&app, &stranger.token("eve", &[], "FR"), 401, "unknown kid").await;
    }
    assert_eq!(jwks.fetches(), 1, "no fetch within the refresh interval");

    // The known key was in that one fetch.
    assert_eq!(me(&app, &known.token("p", &[], "FR")).await.0, 200);
    assert_eq!(jwks.fetches(), 1);
}

#[tokio::test]
async fn a_token_is_checked_once_until_its_key_is_refreshed_or_it_expires() {
    let key = TestSigningKey::ed25519();
    let jwks = TestJwks::start(&[&key]).await;
    let interval = Duration::from_secs(1);
    let app = app_with_jwks(&jwks, interval).await;
    let hits = || app.metric("pulse_verified_token_hits_total");
    let token = key.token("patient-8", &["patient"], "FR");
    for _ in 0..3 {
        let (status, body) = me(&app, &token).await;
        assert_eq!((status, body["subject"].as_str()), (200, Some("patient-8")));
    }
    assert_eq!(
        hits().await,
        2.0,
        "the signature was checked by the first request only"
    );
    // Another token of the same caller is checked on its own.
    assert_eq!(
        me(
            &app,
            &key.token("patient-8", &["patient", "customer"], "FR")
        )
        .await
        .0,
        200
    );
    assert_eq!(hits().await, 2.0);

    // A refresh of the set replaces the key objects: the token is checked again, once.
    jwks.publish(&[&key]);
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    let unknown = TestSigningKey::ed25519();
    refused(&app, &unknown.token("x", &[], "FR"), 401, "unknown kid").await;
    assert_eq!(jwks.fetches(), 2);
    assert_eq!(me(&app, &token).await.0, 200);
    assert_eq!(hits().await, 2.0, "checked again against the refreshed key");
    assert_eq!(me(&app, &token).await.0, 200);
    assert_eq!(hits().await, 3.0);

    // A checked token is refused once it expires (the validation's 30 s of leeway included).
    let mut claims = claims_for(
        "patient-9",
        &["patient".into()],
        "FR",
        TEST_JWT_ISSUER,
        Duration::from_secs(600),
    );
    // Valid (with the leeway) until the clock passes a whole 3 s on (timestamps are whole
    // seconds): both requests below fall inside it, and 4.1 s later it has expired.
    claims.exp = chrono::Utc::now().timestamp() - 27;
    let expiring = key.mint(&claims);
    assert_eq!(me(&app, &expiring).await.0, 200, "within the leeway");
    assert_eq!(me(&app, &expiring).await.0, 200);
    assert_eq!(hits().await, 4.0);
    tokio::time::sleep(Duration::from_millis(4100)).await;
    let problem = refused(&app, &expiring, 401, "expired").await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("expired")),
        "{problem}"
    );
    assert_eq!(hits().await, 4.0);
}

#[tokio::test]
async fn after_a_rotation_old_and_new_keys_verify() {
    let old = TestSigningKey::ed25519();
    let jwks = TestJwks::start(&[&old]).await;
    let interval = Duration::from_secs(1);
    let app = app_with_jwks(&jwks, interval).await;
    let old_token = old.token("patient-1", &["patient"], "FR");
    assert_eq!(me(&app, &old_token).await.0, 200);
    assert_eq!(jwks.fetches(), 1);

    // Identity rotates: it signs with the new key and publishes both.
    let new = TestSigningKey::ed25519();
    jwks.publish(&[&new, &old]);
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    let (status, body) = me(&app, &new.token("patient-2", &["patient"], "FR")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(jwks.fetches(), 2, "the new kid cost one refresh");
    // Tokens of the previous key keep working until they expire.
    assert_eq!(me(&app, &old_token).await.0, 200);
    assert_eq!(jwks.fetches(), 2);

    // Once identity stops publishing the old key (its tokens have expired) and a refresh
    // brings the new set, the old key is refused.
    jwks.publish(&[&new]);
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    let fresh = TestSigningKey::ed25519();
    refused(&app, &fresh.token("x", &[], "FR"), 401, "unknown kid").await;
    assert_eq!(jwks.fetches(), 3);
    refused(&app, &old_token, 401, "retired key").await;
}

#[tokio::test]
async fn a_stale_set_is_refreshed_and_used_while_identity_is_down() {
    let key = TestSigningKey::es256();
    let jwks = TestJwks::start(&[&key]).await;
    jwks.set_cache_control("public, max-age=1");
    let app = app_with_jwks(&jwks, Duration::ZERO).await;
    let token = key.token("patient-1", &["patient"], "FR");
    assert_eq!(me(&app, &token).await.0, 200);
    assert_eq!(jwks.fetches(), 1);

    // Older than max-age: the next token verifies at once and the set is fetched again.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(me(&app, &token).await.0, 200);
    testing::eventually("a background refresh", Duration::from_secs(5), || async {
        jwks.fetches() == 2
    })
    .await;

    // Identity goes down: the refresh fails, the cached key still verifies.
    jwks.set_down(true);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for _ in 0..3 {
        assert_eq!(me(&app, &token).await.0, 200, "cached key while down");
    }
    testing::eventually("a failed refresh", Duration::from_secs(5), || async {
        jwks.fetches() >= 3
    })
    .await;
    assert_eq!(
        me(&app, &token).await.0,
        200,
        "cached key after a failed refresh"
    );
    assert!(app.metric("pulse_jwks_fetch_failures").await >= 1.0);
}

#[tokio::test]
async fn nothing_cached_and_identity_unreachable_is_503() {
    let key = TestSigningKey::ed25519();
    let jwks = TestJwks::start(&[&key]).await;
    jwks.set_down(true);
    let interval = Duration::from_secs(3);
    let app = app_with_jwks(&jwks, interval).await;
    let token = key.token("patient-1", &["patient"], "FR");

    let response = app
        .client
        .get(format!("{}/v1/me", app.base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=5).contains(&retry_after), "{retry_after}");
    let problem: Value = response.json().await.expect("problem");
    assert_eq!(testing::problem_kind(&problem), "jwks-unavailable");
    assert_eq!(jwks.fetches(), 1);

    // Within the interval no new fetch is made; still 503, not 401.
    refused(&app, &token, 503, "still down").await;
    assert_eq!(jwks.fetches(), 1);
    // HS256 tokens do not depend on identity.
    assert_eq!(me(&app, &app.token("dev", &[])).await.0, 200);

    // Identity is back: the next token after the interval verifies.
    jwks.set_down(false);
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    assert_eq!(me(&app, &token).await.0, 200);
    assert_eq!(jwks.fetches(), 2);

    // Nothing listening at all (connection refused) is the same 503.
    let nowhere = format!(
        "http://127.0.0.1:{}/.well-known/jwks.json",
        testing::free_port()
    );
    let unreachable = start(testing::jwks_jwt_settings(&nowhere, interval)).await;
    let problem = refused(&unreachable, &token, 503, "no JWKS server").await;
    assert_eq!(testing::problem_kind(&problem), "jwks-unavailable");
}

#[tokio::test]
async fn fifty_concurrent_requests_with_a_new_kid_share_one_fetch() {
    let old = TestSigningKey::ed25519();
    let jwks = TestJwks::start(&[&old]).await;
    let interval = Duration::from_secs(1);
    let app = Arc::new(app_with_jwks(&jwks, interval).await);
    assert_eq!(me(&app, &old.token("p", &[], "FR")).await.0, 200);
    assert_eq!(jwks.fetches(), 1);

    let new = TestSigningKey::es256();
    jwks.publish(&[&new, &old]);
    // A slow answer, so the requests really overlap the fetch.
    jwks.set_delay(Duration::from_millis(300));
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    let token = Arc::new(new.token("patient-9", &["patient"], "FR"));
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let mut racers = Vec::new();
    for _ in 0..50 {
        let (app, token, barrier) = (Arc::clone(&app), Arc::clone(&token), Arc::clone(&barrier));
        racers.push(tokio::spawn(async move {
            barrier.wait().await;
            me(&app, &token).await.0
        }));
    }
    for racer in racers {
        assert_eq!(racer.await.expect("racer"), 200);
    }
    assert_eq!(jwks.fetches(), 2, "50 requests, one fetch");
    assert_eq!(app.metric("pulse_jwks_fetches").await, 2.0);
}

#[test]
fn settings_fail_naming_the_variable() {
    let secret = "s".repeat(40);
    let url = "http://identity.pulse-fr.svc:8080/.well-known/jwks.json";
    let cases: [(&[(&str, &str)], &str); 8] = [
        (
            &[
                ("PULSE_JWT_ALGORITHMS", "EdDSA,HS512"),
                ("PULSE_JWKS_URL", url),
            ],
            "PULSE_JWT_ALGORITHMS",
        ),
        (
            &[
                ("PULSE_JWT_ALGORITHMS", "none"),
                ("PULSE_JWT_SECRET", secret.as_str()),
            ],
            "PULSE_JWT_ALGORITHMS",
        ),
        (&[], "PULSE_JWT_SECRET"),
        (
            &[
                ("PULSE_JWT_ALGORITHMS", "HS256"),
                ("PULSE_JWT_SECRET", "short"),
            ],
            "PULSE_JWT_SECRET",
        ),
        (&[("PULSE_JWT_ALGORITHMS", "EdDSA")], "PULSE_JWKS_URL"),
        (
            &[
                ("PULSE_JWT_ALGORITHMS", "ES256"),
                ("PULSE_JWKS_URL", "identity:8080/jwks"),
            ],
            "PULSE_JWKS_URL",
        ),
        (
            &[
                ("PULSE_JWT_ALGORITHMS", "EdDSA"),
                ("PULSE_JWKS_URL", "http://"),
            ],
            "PULSE_JWKS_URL",
        ),
        (
            &[
                ("PULSE_JWT_ALGORITHMS", "EdDSA"),
                ("PULSE_JWKS_URL", url),
                ("PULSE_JWKS_REFRESH_SECONDS", "soon"),
            ],
            "PULSE_JWKS_REFRESH_SECONDS",
        ),
    ];
    for (vars, var) in cases {
        let err = JwtSettings::read(&Env::from_map(vars.iter().copied()))
            .expect_err(&format!("{vars:?}"));
        assert_eq!(err.var, var, "{vars:?}: {err}");
    }

    let env = Env::from_map([
        ("PULSE_JWT_ALGORITHMS", "EdDSA, es256"),
        ("PULSE_JWKS_URL", url),
        ("PULSE_JWKS_REFRESH_SECONDS", "2"),
        ("PULSE_JWT_ISSUER", "pulse-prod"),
    ]);
    let settings = JwtSettings::read(&env).expect("identity's tokens only");
    assert_eq!(settings.algorithms, [Algorithm::EdDSA, Algorithm::ES256]);
    assert_eq!(settings.jwks_url.as_deref(), Some(url));
    assert_eq!(settings.jwks_refresh_interval, Duration::from_secs(2));
    assert!(settings.secret.is_none());
    assert!(settings.authenticator("FR").is_ok());
    let read = env.read();
    for var in [
        "PULSE_JWT_ALGORITHMS",
        "PULSE_JWT_ISSUER",
        "PULSE_JWT_SECRET",
        "PULSE_JWKS_URL",
        "PULSE_JWKS_REFRESH_SECONDS",
    ] {
        assert!(read.contains(var), "{var} not read");
    }

    // The default is HS256 with the shared secret, as local development runs.
    let settings =
        JwtSettings::read(&Env::from_map([("PULSE_JWT_SECRET", secret.as_str())])).expect("local");
    assert_eq!(settings.algorithms, [Algorithm::HS256]);
    assert_eq!(settings.jwks_refresh_interval, Duration::from_secs(5));
}
