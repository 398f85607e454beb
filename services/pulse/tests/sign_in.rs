//! Sign-in across processes: identity, booking, marketing and ordering run as four
//! `pulse serve --target …` processes of one country. A patient signs in with a phone code at
//! identity; its token (EdDSA, verified by the others through identity's JWKS over HTTP) books
//! an appointment and buys in a seckill. Forged, expired and foreign tokens get 401/403 from
//! every component, never 200 or 500.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Ports, Process};
use hmac::{Hmac, Mac};
use pulse_kit::testing::{self, TestDatabase, TestSigningKey};
use serde_json::{Value, json};
use sha2::Sha256;

/// The components, each its own process.
const TARGETS: [&str; 4] = ["identity", "booking", "marketing", "ordering"];
/// A path of each component that needs a signed-in caller (same order as [`TARGETS`]).
const PROTECTED: [&str; 4] = [
    "/v1/me/profile",
    "/v1/appointments",
    "/v1/vouchers",
    "/v1/orders",
];
const PHONE: &str = "+33612345678";

/// Four processes of one deployment.
struct Country {
    _db: TestDatabase,
    dir: PathBuf,
    ports: Vec<Ports>,
    processes: Vec<Process>,
    client: reqwest::Client,
}

impl Country {
    async fn start() -> Self {
        let db = TestDatabase::create().await;
        let instance = format!("signin{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let dir = common::work_dir(&instance);
        let keyring = common::keyring_file(&dir);
        let ports: Vec<Ports> = TARGETS.iter().map(|_| Ports::free()).collect();
        let jwks = format!("http://127.0.0.1:{}/.well-known/jwks.json", ports[0].http);
        let marketing_grpc = format!("http://127.0.0.1:{}", ports[2].grpc);
        let mut processes = Vec::new();
        for (target, ports) in TARGETS.iter().zip(&ports) {
            let mut command = common::serve(target, &db.url, &instance, *ports);
            command
                // Identity's tokens, and HS256 ones for the test's admin set-up.
                .env("PULSE_JWT_ALGORITHMS", "EdDSA,HS256")
                .env("PULSE_JWKS_URL", &jwks)
                .env("PULSE_DB_MAX_CONNECTIONS", "3")
                .env("PULSE_IDENTITY_KEYRING_SECRET_FILE", &keyring)
                .env("PULSE_IDENTITY_SMS_PROVIDER", "sandbox")
                .env("PULSE_IDENTITY_SANDBOX_SMS_FILE", dir.join("sms.jsonl"))
                .env("PULSE_MARKETING_GRPC_URL", &marketing_grpc);
            processes.push(Process::spawn(command, dir.join(format!("{target}.log"))));
        }
        let country = Self {
            _db: db,
            dir,
            ports,
            processes,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("HTTP client"),
        };
        for index in 0..TARGETS.len() {
            country.wait_ready(index).await;
        }
        country
    }

    fn base(&self, index: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[index].http)
    }

    async fn wait_ready(&self, index: usize) {
        common::wait_ready(
            &self.client,
            self.ports[index].http,
            &self.processes[index],
            TARGETS[index],
        )
        .await;
    }

    /// `method path` on component `index` as `token` with `body`: (status, body).
    async fn call(
        &self,
        index: usize,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base(index)))
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The last text the sandbox SMS provider recorded for `phone`.
    fn last_text_to(&self, phone: &str) -> String {
        let file = std::fs::read_to_string(self.dir.join("sms.jsonl")).unwrap_or_default();
        file.lines()
            .rev()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|message| message["to"] == phone)
            .and_then(|message| message["body"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("no text to {phone} in the sandbox file:\n{file}"))
    }

    /// `name` from component `index`'s metrics.
    async fn metric(&self, index: usize, name: &str) -> f64 {
        let text = self
            .client
            .get(format!(
                "http://127.0.0.1:{}/metrics",
                self.ports[index].admin
            ))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        testing::metric_value(&text, name)
    }
}

/// The six digits of a sign-in text.
fn code_in(text: &str) -> String {
    text.as_bytes()
        .windows(6)
        .find(|w| w.iter().all(u8::is_ascii_digit))
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .unwrap_or_else(|| panic!("no 6-digit code in {text:?}"))
}

fn segment(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("json"))
}

/// The claims of a JWT (unverified), for building forgeries from a real token.
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("claims")
}

fn header_of(token: &str) -> Value {
    let header = token.split('.').next().expect("header");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("base64")).expect("header")
}

/// An HS256 token of `claims` signed with `key` as the HMAC secret.
fn hs256(claims: &Value, key: &[u8], kid: Option<&str>) -> String {
    let mut header = json!({ "alg": "HS256", "typ": "JWT" });
    if let Some(kid) = kid {
        header["kid"] = kid.into();
    }
    let signing_input = format!("{}.{}", segment(&header), segment(claims));
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac key");
    mac.update(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_from_identity_books_and_buys_across_processes_and_forgeries_are_refused() {
    let country = Country::start().await;
    let admin = testing::token("signin-admin", &["admin"], "FR");

    // Sign in by phone code at identity.
    let (status, sent) = country
        .call(
            0,
            reqwest::Method::POST,
            "/v1/auth/otp",
            None,
            Some(&json!({ "phone": PHONE })),
        )
        .await;
    assert_eq!(status, 202, "{sent}");
    let code = code_in(&country.last_text_to(PHONE));
    let (status, session) = country
        .call(
            0,
            reqwest::Method::POST,
            "/v1/auth/token",
            None,
            Some(&json!({ "phone": PHONE, "code": code })),
        )
        .await;
    assert_eq!(status, 200, "{session}");
    let token = session["accessToken"].as_str().expect("access token");
    let user = session["userId"].as_str().expect("user id");
    let header = header_of(token);
    assert_eq!(header["alg"], "EdDSA", "{header}");
    assert!(header["kid"].is_string(), "{header}");
    assert_eq!(claims_of(token)["sub"], user);

    // Booking verifies it through the JWKS: the patient books a slot.
    let all_day = json!([{ "start": "00:00", "end": "23:30" }]);
    let (status, practitioner) = country
        .call(
            1,
            reqwest::Method::POST,
            "/v1/practitioners",
            Some(&admin),
            Some(&json!({
                "name": "Dr Sign-In", "specialty": "general-practice", "city": "Paris",
                "address": "1 rue de la Paix", "latitude": 48.8566, "longitude": 2.3522,
                "languages": ["fr"], "consultationPriceMinor": 2500,
                "accountSubject": "doc-signin",
                "schedule": { "slotMinutes": 30, "weekly": {
                    "Mon": all_day, "Tue": all_day, "Wed": all_day, "Thu": all_day,
                    "Fri": all_day, "Sat": all_day, "Sun": all_day } }
            })),
        )
        .await;
    assert_eq!(status, 201, "{practitioner}");
    let day = (chrono::Utc::now() + chrono::Duration::days(3))
        .format("%Y-%m-%d")
        .to_string();
    let (status, slots) = country
        .call(
            1,
            reqwest::Method::GET,
            &format!(
                "/v1/practitioners/{}/slots?from={day}&to={day}",
                practitioner["id"].as_str().expect("id")
            ),
            None,
            None,
        )
        .await;
    assert_eq!(status, 200, "{slots}");
    let slot = slots["slots"][0]["id"].as_str().expect("a free slot");
    let (status, appointment) = country
        .call(
            1,
            reqwest::Method::POST,
            "/v1/appointments",
            Some(token),
            Some(&json!({ "slotId": slot })),
        )
        .await;
    assert_eq!(status, 201, "{appointment}");
    assert!(
        country.metric(1, "pulse_jwks_fetches").await >= 1.0,
        "booking fetched identity's JWKS"
    );

    // Marketing verifies it too: the patient wins a seckill, and ordering makes the order.
    let now = chrono::Utc::now();
    let (status, campaign) = country
        .call(
            2,
            reqwest::Method::PUT,
            "/v1/campaigns/signin-flash",
            Some(&admin),
            Some(&json!({
                "voucherTitle": "5 € off", "voucherValueMinor": 500, "currency": "EUR",
                "priceMinor": 99, "stock": 3, "perUserLimit": 1,
                "startsAt": now - chrono::Duration::seconds(5),
                "endsAt": now + chrono::Duration::hours(1),
            })),
        )
        .await;
    assert!(status == 200 || status == 201, "{status} {campaign}");
    let (status, reserved) = country
        .call(
            2,
            reqwest::Method::POST,
            "/v1/seckill/signin-flash/orders",
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, 202, "{reserved}");
    let order = reserved["orderId"].as_str().expect("order id");
    let started = Instant::now();
    loop {
        let (status, body) = country
            .call(
                3,
                reqwest::Method::GET,
                &format!("/v1/orders/{order}"),
                Some(token),
                None,
            )
            .await;
        if status == 200 {
            assert_eq!(body["id"], order, "{body}");
            break;
        }
        assert_eq!(status, 404, "the order is on its way: {body}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the seckill order never appeared:\n{}",
            country.processes[3].log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Forgeries, on every component.
    let claims = claims_of(token);
    let mut admin_claims = claims.clone();
    admin_claims["roles"] = json!(["admin"]);
    let parts: Vec<&str> = token.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], segment(&admin_claims), parts[2]);
    let unsigned = format!(
        "{}.{}.",
        segment(&json!({ "alg": "none", "typ": "JWT" })),
        segment(&claims)
    );
    let (_, jwks) = country
        .call(
            0,
            reqwest::Method::GET,
            "/.well-known/jwks.json",
            None,
            None,
        )
        .await;
    let published = &jwks["keys"][0];
    let public_key = URL_SAFE_NO_PAD
        .decode(published["x"].as_str().expect("x"))
        .expect("public key");
    let kid = published["kid"].as_str().expect("kid");
    let with_public_key = hs256(&claims, &public_key, Some(kid));
    let with_public_key_text = hs256(
        &claims,
        published["x"].as_str().expect("x").as_bytes(),
        Some(kid),
    );
    let stranger = TestSigningKey::ed25519().token(user, &["patient"], "FR");
    let mut expired_claims = claims.clone();
    let past = chrono::Utc::now().timestamp() - 600;
    expired_claims["iat"] = (past - 900).into();
    expired_claims["exp"] = past.into();
    let expired = hs256(&expired_claims, testing::TEST_JWT_SECRET.as_bytes(), None);
    let german = testing::token(user, &["patient"], "DE");
    let forgeries = [
        ("alg none", unsigned.as_str(), 401),
        ("tampered roles", tampered.as_str(), 401),
        ("HS256 with the public key", with_public_key.as_str(), 401),
        (
            "HS256 with the public key's text",
            with_public_key_text.as_str(),
            401,
        ),
        ("a key identity never published", stranger.as_str(), 401),
        ("expired", expired.as_str(), 401),
        ("another country", german.as_str(), 403),
    ];
    for (index, target) in TARGETS.iter().enumerate() {
        let (status, body) = country
            .call(
                index,
                reqwest::Method::GET,
                PROTECTED[index],
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, 200, "{target}: the real token works: {body}");
        for (what, forged, expected) in forgeries {
            let (status, body) = country
                .call(
                    index,
                    reqwest::Method::GET,
                    PROTECTED[index],
                    Some(forged),
                    None,
                )
                .await;
            assert_eq!(status, expected, "{target}, {what}: {body}");
            assert!(
                body["type"].is_string(),
                "{target}, {what}: a problem: {body}"
            );
        }
    }
}
