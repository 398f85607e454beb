//! A country for notifier's tests: identity, booking and notifier in one server on the real
//! PostgreSQL, Redis and Kafka, with the SMTP server and the SMS provider stand-ins on loopback.
//! Users are real identity users (signed in with a phone code, e-mail verified with a code), so
//! notifier finds them through identity's `Directory` over gRPC.
#![allow(dead_code, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pulse_identity::Identity;
use pulse_identity::settings::{
    IdentitySettings, KEYRING_SECRET_FILE, SANDBOX_EMAIL_FILE, SANDBOX_SMS_FILE,
};
use pulse_kit::config::CountryConfig;
use pulse_kit::server::{RunningServer, ServerSettings};
use pulse_kit::settings::Env;
use pulse_kit::testing::providers::ProviderStandIns;
use pulse_kit::testing::{self, TempDir};
use pulse_notifier::settings::{self as vars, NotifierSettings};
use pulse_notifier::{Clock, Notifier};
use serde_json::{Value, json};

/// A signed-in user with a verified e-mail address.
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub phone: String,
    pub email: String,
    pub token: String,
}

/// The country under test.
pub struct Platform {
    pub app: testing::TestApp,
    pub dir: TempDir,
    pub providers: ProviderStandIns,
    pub grpc_port: u16,
    pub jwks_url: String,
}

/// A French mobile number, unique within a run.
pub fn phone() -> String {
    let n = u32::from_be_bytes(
        pulse_kit::new_id().as_bytes()[12..16]
            .try_into()
            .expect("4 bytes"),
    );
    format!("+336{:08}", n % 100_000_000)
}

/// Notifier's variables for tests: the stand-ins, identity on `grpc_port`, fast retries.
pub fn notifier_env(providers: &ProviderStandIns, grpc_port: u16) -> Vec<(&'static str, String)> {
    vec![
        (
            vars::IDENTITY_GRPC_URL.var,
            format!("http://127.0.0.1:{grpc_port}"),
        ),
        (vars::SMTP_URL.var, providers.smtp_url()),
        (vars::EMAIL_FROM.var, "Pulse <no-reply@pulse.test>".into()),
        (vars::SMS_PROVIDER.var, "twilio".into()),
        (vars::SMS_BASE_URL.var, providers.sms_base_url()),
        (vars::SMS_ACCOUNT.var, "ACtest".into()),
        (vars::SMS_AUTH_TOKEN.var, "test-token".into()),
        (vars::SMS_FROM.var, "+33700000000".into()),
        (vars::RETRY_BASE_MS.var, "200".into()),
        (vars::RETRY_MAX_SECONDS.var, "1".into()),
        (vars::BREAKER_OPEN_SECONDS.var, "1".into()),
        (vars::PROVIDER_TIMEOUT_MS.var, "2000".into()),
        (vars::POLL_MS.var, "100".into()),
        (vars::DIRECTORY_CACHE_SECONDS.var, "0".into()),
    ]
}

pub fn notifier(env: &[(&'static str, String)], clock: Clock) -> Notifier {
    let settings = NotifierSettings::read(
        &Env::from_map(env.iter().map(|(k, v)| (*k, v.clone()))),
        &testing::server_settings("postgres://unused", "redis://unused"),
    )
    .expect("notifier settings");
    Notifier::new(settings).with_clock(clock)
}

fn identity_settings(dir: &TempDir) -> IdentitySettings {
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

/// France, with the notifier's reminder at 18:00 and no practical rate limit.
pub fn france() -> CountryConfig {
    testing::france()
}

impl Platform {
    /// The country on the wall clock.
    pub async fn start() -> Self {
        Self::start_with(pulse_notifier::system_clock(), |_| {}).await
    }

    /// The country with notifier on `clock`, its variables adjusted by `adjust`.
    pub async fn start_with(
        clock: Clock,
        adjust: impl FnOnce(&mut Vec<(&'static str, String)>),
    ) -> Self {
        let providers = ProviderStandIns::start().await;
        let dir = TempDir::new("notifier");
        let http_port = testing::free_port();
        let grpc_port = testing::free_port();
        let mut env = notifier_env(&providers, grpc_port);
        adjust(&mut env);
        let jwks_url = format!("http://127.0.0.1:{http_port}/.well-known/jwks.json");
        let jwt = testing::jwks_jwt_settings(&jwks_url, Duration::ZERO);
        let app = testing::TestApp::start_with(
            vec![
                Arc::new(Identity::new(identity_settings(&dir))),
                Arc::new(pulse_booking::Booking),
                Arc::new(notifier(&env, clock)),
            ],
            france(),
            move |server| {
                server.http_addr = ([127, 0, 0, 1], http_port).into();
                server.grpc_addr = ([127, 0, 0, 1], grpc_port).into();
                server.jwt = jwt;
            },
        )
        .await;
        Self {
            app,
            dir,
            providers,
            grpc_port,
            jwks_url,
        }
    }

    /// Settings of another server on this country's database and keyspace.
    pub fn replica_settings(&self) -> ServerSettings {
        let mut settings = testing::server_settings(&self.app.db.url, &testing::redis_url());
        settings.jwt = testing::jwks_jwt_settings(&self.jwks_url, Duration::ZERO);
        settings
    }

    /// Another notifier replica (its own process state, the same database and topics) on
    /// `clock`.
    pub async fn notifier_replica(&self, clock: Clock) -> RunningServer {
        let env = notifier_env(&self.providers, self.grpc_port);
        pulse_kit::server::start(
            &self.replica_settings(),
            self.app.country.clone(),
            vec![Arc::new(notifier(&env, clock))],
        )
        .await
        .expect("notifier replica")
    }

    fn sandbox_code(&self, file: &str, to: &str) -> Option<String> {
        testing::last_code_in(&self.dir.path().join(file), to)
    }

    async fn call(&self, method: reqwest::Method, path: &str, token: &str, body: &Value) -> Value {
        let response = self
            .app
            .client
            .request(method, format!("{}{path}", self.app.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect(path);
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    /// A new identity user speaking `language`, with a verified e-mail address.
    pub async fn user(&self, language: &str) -> User {
        let (phone, id, token) = self.sign_up().await;
        self.verify_email(phone, id, token, language).await
    }

    /// A new identity user, signed in, without an e-mail address yet: (phone, id, token).
    pub async fn sign_up(&self) -> (String, String, String) {
        let phone = phone();
        let (status, body) = self
            .app
            .post(None, "/v1/auth/otp", Some(&json!({ "phone": phone })))
            .await;
        assert_eq!(status, 202, "{body}");
        let code = self
            .sandbox_code("sms.jsonl", &phone)
            .expect("sign-in code");
        let (status, body) = self
            .app
            .post(
                None,
                "/v1/auth/token",
                Some(&json!({ "phone": phone, "code": code })),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let id = body["userId"].as_str().expect("userId").to_owned();
        let token = body["accessToken"].as_str().expect("token").to_owned();
        (phone, id, token)
    }

    /// Gives the signed-up user `language` and a verified e-mail address.
    pub async fn verify_email(
        &self,
        phone: String,
        id: String,
        token: String,
        language: &str,
    ) -> User {
        let email = format!("u{}@example.org", &id[..8]);
        self.call(
            reqwest::Method::PATCH,
            "/v1/me/profile",
            &token,
            &json!({ "email": email, "language": language, "name": "Camille Test" }),
        )
        .await;
        let code = self
            .sandbox_code("email.jsonl", &email)
            .expect("e-mail code");
        self.call(
            reqwest::Method::POST,
            "/v1/me/profile/email/verify",
            &token,
            &json!({ "code": code }),
        )
        .await;
        User {
            id,
            phone,
            email,
            token,
        }
    }

    /// Free slot ids of a new practitioner on the local day `days` from today.
    pub async fn slots(&self, days: i64) -> Vec<String> {
        self.slot_views(days)
            .await
            .iter()
            .map(|s| s["id"].as_str().expect("slot id").to_owned())
            .collect()
    }

    /// The free slot of a new practitioner starting at local `time` (`10:00`) on the local
    /// day `days` from today.
    pub async fn slot_at(&self, days: i64, time: &str) -> String {
        let views = self.slot_views(days).await;
        views
            .iter()
            .find(|s| {
                s["start"]
                    .as_str()
                    .is_some_and(|t| t.contains(&format!("T{time}")))
            })
            .and_then(|s| s["id"].as_str())
            .unwrap_or_else(|| panic!("no {time} slot in {views:?}"))
            .to_owned()
    }

    /// Free slots (as the API shows them) of a new practitioner on the local day `days` from
    /// today.
    pub async fn slot_views(&self, days: i64) -> Vec<Value> {
        let all_day = json!([{ "start": "00:00", "end": "23:30" }]);
        let practitioner = self
            .call(
                reqwest::Method::POST,
                "/v1/practitioners",
                &self.app.admin(),
                &json!({
                    "name": "Dr Test", "specialty": "dermatology", "city": "Paris",
                    "address": "1 rue de la Paix", "latitude": 48.8566, "longitude": 2.3522,
                    "languages": ["fr"], "consultationPriceMinor": 2500,
                    "accountSubject": format!("doc-{}", pulse_kit::new_id()),
                    "schedule": { "slotMinutes": 30, "weekly": {
                        "Mon": all_day, "Tue": all_day, "Wed": all_day, "Thu": all_day,
                        "Fri": all_day, "Sat": all_day, "Sun": all_day } }
                }),
            )
            .await;
        let id = practitioner["id"].as_str().expect("practitioner id");
        let day = (Utc::now()
            .with_timezone(&chrono_tz::Europe::Paris)
            .date_naive()
            + chrono::Duration::days(days))
        .format("%Y-%m-%d")
        .to_string();
        let (status, body) = self
            .app
            .get(
                None,
                &format!("/v1/practitioners/{id}/slots?from={day}&to={day}"),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["slots"].as_array().cloned().expect("slots")
    }

    /// Books `slot` for `user`; the appointment's id.
    pub async fn book(&self, user: &User, slot: &str) -> String {
        let response = self
            .app
            .client
            .post(format!("{}/v1/appointments", self.app.base))
            .bearer_auth(&user.token)
            .header("Idempotency-Key", testing::unique("book"))
            .json(&json!({ "slotId": slot }))
            .send()
            .await
            .expect("book");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().expect("appointment id").to_owned()
    }

    /// Cancels `appointment` as `token`.
    pub async fn cancel(&self, token: &str, appointment: &str) {
        let response = self
            .app
            .client
            .post(format!(
                "{}/v1/appointments/{appointment}/cancel",
                self.app.base
            ))
            .bearer_auth(token)
            .header("Idempotency-Key", testing::unique("cancel"))
            .send()
            .await
            .expect("cancel");
        let status = response.status();
        assert!(
            status.is_success(),
            "cancel: {status} {:?}",
            response.text().await
        );
    }

    /// Moves `appointment` to `slot`; the new appointment's id.
    pub async fn reschedule(&self, user: &User, appointment: &str, slot: &str) -> String {
        let response = self
            .app
            .client
            .post(format!(
                "{}/v1/appointments/{appointment}/reschedule",
                self.app.base
            ))
            .bearer_auth(&user.token)
            .header("Idempotency-Key", testing::unique("move"))
            .json(&json!({ "slotId": slot }))
            .send()
            .await
            .expect("reschedule");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "reschedule: {status} {body}");
        body["id"].as_str().expect("new appointment id").to_owned()
    }

    /// `(channel, kind, status)` of `user`'s deliveries, oldest first.
    pub async fn deliveries(&self, user: &User) -> Vec<(String, String, String)> {
        sqlx::query_as(
            "SELECT channel, kind, status FROM notifier.deliveries
             WHERE recipient = $1 ORDER BY created_at, channel",
        )
        .bind(&user.id)
        .fetch_all(&self.app.pool)
        .await
        .expect("deliveries")
    }

    /// Waits until `user` has no pending delivery of `kind` and at least `count` of them.
    pub async fn settled(&self, user: &User, kind: &str, count: usize, within: Duration) {
        testing::eventually(
            &format!("{count} {kind} deliveries settled"),
            within,
            || async {
                let rows = self.deliveries(user).await;
                let of_kind: Vec<_> = rows.iter().filter(|r| r.1 == kind).collect();
                of_kind.len() >= count && of_kind.iter().all(|r| r.2 != "pending")
            },
        )
        .await;
    }

    /// E-mails received for `user` whose subject was rendered from `kind` deliveries.
    pub async fn emails_to(
        &self,
        user: &User,
    ) -> Vec<pulse_kit::testing::providers::ReceivedEmail> {
        self.providers
            .emails()
            .await
            .into_iter()
            .filter(|e| e.to.iter().any(|to| to.contains(&user.email)))
            .collect()
    }

    /// SMS received by `user`.
    pub async fn sms_to(&self, user: &User) -> Vec<pulse_kit::testing::providers::ReceivedSms> {
        self.providers
            .sms()
            .await
            .into_iter()
            .filter(|s| s.to == user.phone)
            .collect()
    }

    /// `user`'s in-app notifications (newest first).
    pub async fn inbox(&self, user: &User) -> Value {
        let (status, body) = self
            .app
            .get(Some(&user.token), "/v1/notifications?page_size=100")
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// A clock that tests move.
#[derive(Clone)]
pub struct TestClock(Arc<std::sync::Mutex<DateTime<Utc>>>);

impl TestClock {
    pub fn at(now: DateTime<Utc>) -> Self {
        Self(Arc::new(std::sync::Mutex::new(now)))
    }

    pub fn set(&self, now: DateTime<Utc>) {
        *self.0.lock().expect("clock") = now;
    }

    pub fn clock(&self) -> Clock {
        let inner = Arc::clone(&self.0);
        Arc::new(move || *inner.lock().expect("clock"))
    }
}
