//! An identity server for one test: its own database, the real Redis and Kafka, a keyring
//! secret and sandbox SMS and e-mail files in a temporary directory. By default the server
//! verifies tokens as a cluster does, through identity's own JWKS over HTTP (and HS256 test
//! tokens for administrators).
#![allow(dead_code, missing_docs)]

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pulse_identity::Identity;
use pulse_identity::settings::{
    IdentitySettings, KEYRING_SECRET_FILE, SANDBOX_EMAIL_FILE, SANDBOX_SMS_FILE,
};
use pulse_kit::settings::Env;
use pulse_kit::testing::{self, TempDir};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

/// A French mobile number, unique enough within one test (`n` from 0 to 99_999_999).
pub fn phone(n: u32) -> String {
    format!("+336{:08}", n % 100_000_000)
}

/// How the server verifies tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// As in a cluster: ES256/EdDSA through identity's JWKS over HTTP, plus HS256 test tokens.
    Jwks,
    /// HS256 only (the kit's test default): identity verifies its own tokens itself.
    Hs256Only,
}

/// An HTTP answer: status, headers, raw body.
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub bytes: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }

    pub fn kind(&self) -> String {
        testing::problem_kind(&self.json())
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// Every `Set-Cookie` header of the answer.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect()
    }

    /// The value the answer sets the `pulse_refresh` cookie to (empty when it clears it).
    pub fn refresh_cookie(&self) -> Option<String> {
        self.set_cookies().iter().find_map(|cookie| {
            cookie
                .strip_prefix("pulse_refresh=")
                .map(|rest| rest.split(';').next().unwrap_or_default().to_owned())
        })
    }
}

/// The attributes every `pulse_refresh` cookie carries, `Max-Age` aside.
pub const REFRESH_COOKIE_ATTRIBUTES: [&str; 4] =
    ["HttpOnly", "Secure", "SameSite=Strict", "Path=/v1/auth"];

/// The attributes of a `Set-Cookie` value (after the name and value), as written.
pub fn cookie_attributes(set_cookie: &str) -> Vec<String> {
    set_cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_owned())
        .collect()
}

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub phone: String,
    pub user_id: String,
    pub access: String,
    pub refresh: String,
    pub body: Value,
}

pub struct TestApp {
    app: testing::TestApp,
    pub dir: TempDir,
    pub settings: IdentitySettings,
}

impl Deref for TestApp {
    type Target = testing::TestApp;

    fn deref(&self) -> &testing::TestApp {
        &self.app
    }
}

/// Identity's settings for a test: a fresh keyring secret, sandbox files in `dir`.
pub fn settings_in(dir: &TempDir) -> IdentitySettings {
    let secret = dir.path().join("keyring-secret");
    std::fs::write(&secret, pulse_kit::new_id().simple().to_string().repeat(2))
        .expect("keyring secret");
    let env = Env::from_map([
        (KEYRING_SECRET_FILE.var, secret.display().to_string()),
        (
            SANDBOX_SMS_FILE.var,
            dir.path().join("sms.jsonl").display().to_string(),
        ),
        (
            SANDBOX_EMAIL_FILE.var,
            dir.path().join("email.jsonl").display().to_string(),
        ),
    ]);
    IdentitySettings::read(
        &env,
        &testing::server_settings("postgres://unused", "redis://unused"),
    )
    .expect("identity settings")
}

impl TestApp {
    pub async fn start() -> Self {
        Self::start_with(Verification::Jwks, |_| {}).await
    }

    pub async fn start_with(
        verification: Verification,
        adjust: impl FnOnce(&mut IdentitySettings),
    ) -> Self {
        let dir = TempDir::new("identity");
        let mut settings = settings_in(&dir);
        adjust(&mut settings);
        let identity = Identity::new(settings.clone());
        let port = testing::free_port();
        let app = testing::TestApp::start_with(
            vec![Arc::new(identity)],
            testing::france(),
            move |server| {
                if verification == Verification::Jwks {
                    server.http_addr = ([127, 0, 0, 1], port).into();
                    server.jwt = testing::jwks_jwt_settings(
                        &format!("http://127.0.0.1:{port}/.well-known/jwks.json"),
                        Duration::ZERO,
                    );
                }
            },
        )
        .await;
        Self { app, dir, settings }
    }

    pub fn sms_file(&self) -> PathBuf {
        self.dir.path().join("sms.jsonl")
    }

    pub fn email_file(&self) -> PathBuf {
        self.dir.path().join("email.jsonl")
    }

    /// Lines of a sandbox file.
    pub fn lines(path: &std::path::Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The last sign-in code sent to `phone` (E.164).
    pub fn last_code(&self, phone: &str) -> Option<String> {
        testing::last_code_in(&self.sms_file(), phone)
    }

    /// The last verification code sent to `email`.
    pub fn last_email_code(&self, email: &str) -> Option<String> {
        testing::last_code_in(&self.email_file(), email)
    }

    /// A request; `headers` are added as given.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response
            .bytes()
            .await
            .map(|b| b.to_vec())
            .unwrap_or_default();
        Reply {
            status,
            headers,
            bytes,
        }
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.send(Method::POST, path, token, Some(body), &[]).await
    }

    /// `POST /v1/auth/otp`.
    pub async fn send_otp(&self, phone: &str) -> Reply {
        self.post_json("/v1/auth/otp", None, &json!({ "phone": phone }))
            .await
    }

    /// `POST /v1/auth/token`.
    pub async fn token_with(&self, phone: &str, code: &str) -> Reply {
        self.post_json(
            "/v1/auth/token",
            None,
            &json!({ "phone": phone, "code": code }),
        )
        .await
    }

    /// `POST /v1/auth/refresh`.
    pub async fn refresh(&self, refresh: &str) -> Reply {
        self.post_json(
            "/v1/auth/refresh",
            None,
            &json!({ "refreshToken": refresh }),
        )
        .await
    }

    /// `POST /v1/auth/token` with the refresh token delivered in the cookie.
    pub async fn token_in_cookie(&self, phone: &str, code: &str) -> Reply {
        self.post_json(
            "/v1/auth/token",
            None,
            &json!({ "phone": phone, "code": code, "refreshTokenIn": "cookie" }),
        )
        .await
    }

    /// A `POST` to `path` with `{}` and the `pulse_refresh` cookie (a browser app's refresh
    /// or logout).
    pub async fn post_with_cookie(&self, path: &str, cookie: &str) -> Reply {
        let header = format!("theme=dark; pulse_refresh={cookie}");
        self.send(
            Method::POST,
            path,
            None,
            Some(&json!({})),
            &[("cookie", header.as_str())],
        )
        .await
    }

    /// Requests a code for `phone` and signs in with the refresh token in the cookie; the
    /// answer.
    pub async fn sign_in_with_cookie(&self, phone: &str) -> Reply {
        let sent = self.send_otp(phone).await;
        assert_eq!(sent.status, 202, "{}", sent.json());
        let code = self.last_code(phone).expect("a code in the sandbox");
        let reply = self.token_in_cookie(phone, &code).await;
        assert_eq!(reply.status, 200, "{}", reply.json());
        reply
    }

    /// Lets the next code to any phone go out at once (as if the minute had passed).
    pub async fn forget_recent_sends(&self) {
        sqlx::query("UPDATE identity.otp_sends SET sent_at = sent_at - interval '2 minutes'")
            .execute(&self.pool)
            .await
            .expect("age the sends");
    }

    /// Requests a code for `phone` and signs in with it.
    pub async fn sign_in(&self, phone: &str) -> SignedIn {
        let sent = self.send_otp(phone).await;
        assert_eq!(sent.status, 202, "{}", sent.json());
        let code = self.last_code(phone).expect("a code in the sandbox");
        let reply = self.token_with(phone, &code).await;
        assert_eq!(reply.status, 200, "{}", reply.json());
        signed_in(phone, &reply.json())
    }

    /// Outbox rows of `event_type`, oldest first (their envelopes).
    pub async fn events(&self, event_type: &str) -> Vec<Value> {
        sqlx::query_scalar::<_, Value>(
            "SELECT envelope FROM identity.outbox WHERE event_type = $1 ORDER BY id",
        )
        .bind(event_type)
        .fetch_all(&self.pool)
        .await
        .expect("outbox")
    }

    /// The keyring of this server, on a pool of its own (what `pulse keys rotate` uses).
    pub async fn keyring(&self) -> pulse_identity::keys::Keyring {
        self.keyring_with(&self.settings).await
    }

    pub async fn keyring_with(&self, settings: &IdentitySettings) -> pulse_identity::keys::Keyring {
        let pool = pulse_kit::db::schema_pool(&self.db.url, "identity", 4).expect("pool");
        pulse_identity::keyring(pool, settings, "FR")
    }

    /// The published JWK set.
    pub async fn jwks(&self) -> Reply {
        self.send(Method::GET, "/.well-known/jwks.json", None, None, &[])
            .await
    }
}

pub fn signed_in(phone: &str, body: &Value) -> SignedIn {
    SignedIn {
        phone: phone.to_owned(),
        user_id: body["userId"].as_str().expect("userId").to_owned(),
        access: body["accessToken"]
            .as_str()
            .expect("accessToken")
            .to_owned(),
        refresh: body["refreshToken"]
            .as_str()
            .expect("refreshToken")
            .to_owned(),
        body: body.clone(),
    }
}

/// The `kid` in a token's header.
pub fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("a JWT")
        .kid
        .expect("a kid")
}
