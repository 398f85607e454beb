//! Signing keys: rotation on demand and on schedule, the JWKS during a rotation, one replica
//! rotating at a time, and keys sealed under the keyring secret.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestApp, Verification, kid_of, phone};
use pulse_identity::keys::KeyError;
use pulse_identity::settings::SigningAlgorithm;
use pulse_kit::auth::jwks::JwkSet;
use reqwest::Method;

fn kids(set: &JwkSet) -> Vec<String> {
    set.keys
        .iter()
        .filter_map(|k| k.common.key_id.clone())
        .collect()
}

async fn published(app: &TestApp) -> JwkSet {
    let reply = app.jwks().await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("cache-control").as_deref(),
        Some("public, max-age=60")
    );
    serde_json::from_slice(&reply.bytes).expect("JWK set")
}

async fn profile_status(app: &TestApp, token: &str) -> u16 {
    app.send(Method::GET, "/v1/me/profile", Some(token), None, &[])
        .await
        .status
}

#[tokio::test]
async fn after_a_rotation_the_jwks_holds_both_keys_and_old_tokens_work_until_retired() {
    let app = TestApp::start().await;
    let before = app.sign_in(&phone(1)).await;
    let old_kid = kid_of(&before.access);
    assert_eq!(kids(&published(&app).await), vec![old_kid.clone()]);

    let new_kid = app.keyring().await.rotate().await.expect("rotate");
    assert_ne!(new_kid, old_kid);
    assert_eq!(
        kids(&published(&app).await),
        vec![new_kid.clone(), old_kid.clone()],
        "the new key first, the previous one still published"
    );
    let retires: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT retires_at FROM identity.signing_keys WHERE kid = $1")
            .bind(&old_kid)
            .fetch_one(&app.pool)
            .await
            .expect("old key");
    let left = retires.expect("retiring") - chrono::Utc::now();
    assert!(
        (950..=960).contains(&left.num_seconds()),
        "retires after the token lifetime and a minute: {left}"
    );

    // Tokens of the old key still work; new ones are signed by the new key.
    assert_eq!(profile_status(&app, &before.access).await, 200);
    let after = app.sign_in(&phone(2)).await;
    assert_eq!(kid_of(&after.access), new_kid);
    assert_eq!(profile_status(&app, &after.access).await, 200);
    let refreshed = common::signed_in(&before.phone, &app.refresh(&before.refresh).await.json());
    assert_eq!(kid_of(&refreshed.access), new_kid);

    // Once retired, the old key leaves the JWKS and its tokens stop verifying.
    sqlx::query(
        "UPDATE identity.signing_keys SET retires_at = now() - interval '1 second' WHERE kid = $1",
    )
    .bind(&old_kid)
    .execute(&app.pool)
    .await
    .expect("retire");
    assert_eq!(kids(&published(&app).await), vec![new_kid]);
    // Identity refuses them at once; a verifier that fetches the JWKS from now on refuses
    // them too (one that cached the set keeps it up to its max-age, a minute: by then every
    // token of a retired key has expired anyway).
    let refused = app
        .keyring()
        .await
        .verify(&before.access)
        .await
        .expect_err("retired key");
    assert_eq!(refused.status, 401);
    let url = format!("{}/.well-known/jwks.json", app.base);
    let verifier = pulse_kit::auth::Authenticator::new(
        pulse_kit::testing::TEST_JWT_ISSUER,
        "FR",
        &[pulse_kit::auth::Algorithm::EdDSA],
        None,
        Some(Arc::new(
            pulse_kit::auth::jwks::Jwks::new(&url, Duration::ZERO).expect("jwks"),
        )),
    )
    .expect("verifier");
    assert_eq!(
        verifier
            .verify(&before.access)
            .await
            .expect_err("retired key")
            .status,
        401
    );
    assert!(verifier.verify(&after.access).await.is_ok());
}

#[tokio::test]
async fn the_schedule_rotates_an_old_key_and_only_one_replica_does_it() {
    let app = TestApp::start_with(Verification::Jwks, |s| {
        s.key_check_interval = Duration::from_millis(200);
    })
    .await;
    // The job makes the first key at start-up.
    pulse_kit::testing::eventually("a first key", Duration::from_secs(10), || async {
        kids(&published(&app).await).len() == 1
    })
    .await;
    let first = kids(&published(&app).await).remove(0);
    sqlx::query("UPDATE identity.signing_keys SET created_at = now() - interval '31 days'")
        .execute(&app.pool)
        .await
        .expect("age the key");
    pulse_kit::testing::eventually("a scheduled rotation", Duration::from_secs(10), || async {
        kids(&published(&app).await).len() == 2
    })
    .await;
    let set = kids(&published(&app).await);
    assert_eq!(set[1], first, "the previous key is still published");

    // Replicas race for a due rotation: exactly one rotates.
    let replicas: Vec<_> = futures_keyrings(&app, 4).await;
    let total = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM identity.signing_keys")
            .fetch_one(&app.pool)
            .await
            .expect("count")
    };
    for round in 0..3 {
        let before = total().await;
        sqlx::query(
            "UPDATE identity.signing_keys SET created_at = now() - interval '31 days'
             WHERE retires_at IS NULL",
        )
        .execute(&app.pool)
        .await
        .expect("age the key");
        let tasks: Vec<_> = replicas
            .iter()
            .map(|k| {
                let k = Arc::clone(k);
                tokio::spawn(async move { k.rotate_if_due().await.expect("rotate") })
            })
            .collect();
        let mut rotated = 0;
        for task in tasks {
            if task.await.expect("task").is_some() {
                rotated += 1;
            }
        }
        assert!(rotated <= 1, "round {round}: {rotated} replicas rotated");
        // The server's own job may have been the one; either way, one rotation.
        pulse_kit::testing::eventually("one rotation", Duration::from_secs(5), || async {
            total().await == before + 1
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            total().await,
            before + 1,
            "round {round}: one rotation only"
        );
        let active: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM identity.signing_keys WHERE retires_at IS NULL",
        )
        .fetch_one(&app.pool)
        .await
        .expect("count");
        assert_eq!(active, 1, "one signing key at a time");
    }
}

async fn futures_keyrings(app: &TestApp, n: usize) -> Vec<Arc<pulse_identity::keys::Keyring>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Arc::new(app.keyring().await));
    }
    out
}

#[tokio::test]
async fn switching_to_es256_rotates_to_a_p256_key_that_verifies() {
    let app = TestApp::start().await;
    let before = app.sign_in(&phone(3)).await;
    let mut settings = app.settings.clone();
    settings.signing_algorithm = SigningAlgorithm::Es256;
    let es256 = app.keyring_with(&settings).await;
    let kid = es256
        .rotate_if_due()
        .await
        .expect("rotate")
        .expect("rotated");
    let set = published(&app).await;
    let jwk = set.find(&kid).expect("published");
    assert_eq!(
        serde_json::to_value(jwk).expect("json")["kty"],
        "EC",
        "a P-256 key"
    );
    let after = app.sign_in(&phone(4)).await;
    let header = jsonwebtoken::decode_header(&after.access).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    assert_eq!(profile_status(&app, &after.access).await, 200);
    assert_eq!(profile_status(&app, &before.access).await, 200);
}

#[tokio::test]
async fn keys_are_sealed_under_the_keyring_secret() {
    let app = TestApp::start().await;
    app.sign_in(&phone(5)).await;
    let other_dir = pulse_kit::testing::TempDir::new("identity-other");
    let stranger = common::settings_in(&other_dir);
    let keyring = app.keyring_with(&stranger).await;
    match keyring
        .issue(pulse_kit::new_id(), &["patient".to_owned()])
        .await
    {
        Err(KeyError::Unsealable(_)) => {}
        other => panic!("another secret opened the key: {other:?}"),
    }
    // The private key is not stored in clear: the PKCS#8 header of an Ed25519 key is absent.
    let sealed: Vec<u8> =
        sqlx::query_scalar("SELECT private_key_sealed FROM identity.signing_keys LIMIT 1")
            .fetch_one(&app.pool)
            .await
            .expect("key");
    let pkcs8_ed25519_oid = [0x06, 0x03, 0x2b, 0x65, 0x70];
    assert!(
        !sealed.windows(5).any(|w| w == pkcs8_ed25519_oid),
        "the private key is sealed"
    );
}
