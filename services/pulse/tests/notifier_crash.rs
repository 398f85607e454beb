//! A notifier process killed with `kill -9` in the middle of a batch of deliveries, and a new
//! one started: no message is lost, and no delivery that was recorded as sent is sent again.
//! The one allowed duplicate is the message in flight at the kill (handed to the provider, not
//! yet recorded): its e-mail carries the same `Message-ID`, its SMS the same `Idempotency-Key`
//! (which the SMS stand-in, like providers that support it, answers without sending twice).
//!
//! The real binary runs `identity,booking` in one process and `notifier` in another, against
//! the servers `./dev test` provides and the SMTP and SMS stand-ins. Logs are in
//! `$TMPDIR/pulse-<instance>/`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Ports, Process};
use pulse_kit::testing::providers::ProviderStandIns;
use pulse_kit::testing::{self, TestDatabase};
use serde_json::{Value, json};

/// Appointments booked before notifier starts: three deliveries each.
const APPOINTMENTS: usize = 60;
/// Slots of one practitioner (30-minute slots, 00:00–23:30) used per practitioner.
const PER_PRACTITIONER: usize = 30;
/// Share of the e-mails received when the process is killed, in percent.
const KILL_AFTER_PERCENT: usize = 30;

struct Country {
    db: TestDatabase,
    instance: String,
    dir: std::path::PathBuf,
    core_ports: Ports,
    notifier_ports: Ports,
    providers: ProviderStandIns,
    core: Process,
    client: reqwest::Client,
}

fn country_env(command: &mut std::process::Command, jwks: &str) {
    command
        .env("PULSE_JWT_ALGORITHMS", "EdDSA,HS256")
        .env("PULSE_JWKS_URL", jwks)
        .env("PULSE_DB_MAX_CONNECTIONS", "4")
        // One patient books a batch as fast as the server answers: not what is tested here.
        .env("PULSE_COUNTRY__RATE_LIMITS__REQUESTS_PER_SECOND", "1000000")
        .env("PULSE_COUNTRY__RATE_LIMITS__BURST", "1000000")
        .env(
            "PULSE_COUNTRY__BOOKING__MAX_APPOINTMENTS_PER_PATIENT_PER_DAY",
            "100",
        );
}

impl Country {
    async fn start() -> Self {
        let db = TestDatabase::create().await;
        let instance = format!("notif{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let dir = common::work_dir(&instance);
        let keyring = common::keyring_file(&dir);
        let core_ports = Ports::free();
        let notifier_ports = Ports::free();
        let providers = ProviderStandIns::start().await;
        let jwks = format!("http://127.0.0.1:{}/.well-known/jwks.json", core_ports.http);
        let mut command = common::serve("identity,booking", &db.url, &instance, core_ports);
        country_env(&mut command, &jwks);
        command
            .env("PULSE_IDENTITY_KEYRING_SECRET_FILE", &keyring)
            .env("PULSE_IDENTITY_SMS_PROVIDER", "sandbox")
            .env("PULSE_IDENTITY_SANDBOX_SMS_FILE", dir.join("sms.jsonl"))
            .env("PULSE_IDENTITY_SANDBOX_EMAIL_FILE", dir.join("email.jsonl"));
        let core = Process::spawn(command, dir.join("core.log"));
        let country = Self {
            db,
            instance,
            dir,
            core_ports,
            notifier_ports,
            providers,
            core,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("HTTP client"),
        };
        country
            .wait_ready(country.core_ports.http, &country.core)
            .await;
        country
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.core_ports.http)
    }

    /// A notifier process (same ports each time: the new one is the old one come back).
    fn notifier(&self, run: usize) -> Process {
        let mut command = common::serve(
            "notifier",
            &self.db.url,
            &self.instance,
            self.notifier_ports,
        );
        country_env(
            &mut command,
            &format!(
                "http://127.0.0.1:{}/.well-known/jwks.json",
                self.core_ports.http
            ),
        );
        command
            .env(
                "PULSE_NOTIFIER_IDENTITY_GRPC_URL",
                format!("http://127.0.0.1:{}", self.core_ports.grpc),
            )
            .env("PULSE_NOTIFIER_SMTP_URL", self.providers.smtp_url())
            .env("PULSE_NOTIFIER_EMAIL_FROM", "Pulse <no-reply@pulse.test>")
            .env("PULSE_NOTIFIER_SMS_PROVIDER", "twilio")
            .env("PULSE_NOTIFIER_SMS_BASE_URL", self.providers.sms_base_url())
            .env("PULSE_NOTIFIER_SMS_ACCOUNT", ProviderStandIns::SMS_ACCOUNT)
            .env(
                "PULSE_NOTIFIER_SMS_AUTH_TOKEN",
                ProviderStandIns::SMS_AUTH_TOKEN,
            )
            .env("PULSE_NOTIFIER_SMS_FROM", "+33700000000")
            .env("PULSE_NOTIFIER_POLL_MS", "100");
        Process::spawn(command, self.dir.join(format!("notifier-{run}.log")))
    }

    async fn wait_ready(&self, port: u16, process: &Process) {
        common::wait_ready(&self.client, port, process, "pulse").await;
    }

    async fn call(&self, method: reqwest::Method, path: &str, token: &str, body: &Value) -> Value {
        let response = self
            .client
            .request(method, format!("{}{path}", self.base()))
            .bearer_auth(token)
            .header("Idempotency-Key", testing::unique("crash"))
            .json(body)
            .send()
            .await
            .expect(path);
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    /// Signs a patient in and verifies their e-mail address; (id, token, e-mail).
    async fn patient(&self) -> (String, String, String) {
        let phone = "+33611223344";
        let response = self
            .client
            .post(format!("{}/v1/auth/otp", self.base()))
            .json(&json!({ "phone": phone }))
            .send()
            .await
            .expect("otp");
        assert_eq!(response.status(), 202);
        let code = sandbox_code(&self.dir.join("sms.jsonl"), phone);
        let response = self
            .client
            .post(format!("{}/v1/auth/token", self.base()))
            .json(&json!({ "phone": phone, "code": code }))
            .send()
            .await
            .expect("token");
        let body: Value = response.json().await.expect("tokens");
        let id = body["userId"].as_str().expect("userId").to_owned();
        let token = body["accessToken"].as_str().expect("token").to_owned();
        let email = "crash@example.org".to_owned();
        self.call(
            reqwest::Method::PATCH,
            "/v1/me/profile",
            &token,
            &json!({ "email": email, "language": "fr" }),
        )
        .await;
        let code = sandbox_code(&self.dir.join("email.jsonl"), &email);
        self.call(
            reqwest::Method::POST,
            "/v1/me/profile/email/verify",
            &token,
            &json!({ "code": code }),
        )
        .await;
        (id, token, email)
    }

    /// Free slots of a new practitioner, three days from now.
    async fn slots(&self) -> Vec<String> {
        let admin = testing::token("admin-1", &["admin"], "FR");
        let all_day = json!([{ "start": "00:00", "end": "23:30" }]);
        let practitioner = self
            .call(
                reqwest::Method::POST,
                "/v1/practitioners",
                &admin,
                &json!({
                    "name": "Dr Crash", "specialty": "dermatology", "city": "Paris",
                    "address": "1 rue de la Paix", "latitude": 48.8566, "longitude": 2.3522,
                    "languages": ["fr"], "consultationPriceMinor": 2500,
                    "accountSubject": format!("doc-{}", pulse_kit::new_id()),
                    "schedule": { "slotMinutes": 30, "weekly": {
                        "Mon": all_day, "Tue": all_day, "Wed": all_day, "Thu": all_day,
                        "Fri": all_day, "Sat": all_day, "Sun": all_day } }
                }),
            )
            .await;
        let id = practitioner["id"].as_str().expect("id");
        let day = (chrono::Utc::now()
            .with_timezone(&chrono_tz::Europe::Paris)
            .date_naive()
            + chrono::Duration::days(3))
        .format("%Y-%m-%d")
        .to_string();
        let response = self
            .client
            .get(format!(
                "{}/v1/practitioners/{id}/slots?from={day}&to={day}",
                self.base()
            ))
            .send()
            .await
            .expect("slots");
        let body: Value = response.json().await.expect("slots");
        body["slots"]
            .as_array()
            .expect("slots")
            .iter()
            .map(|s| s["id"].as_str().expect("slot").to_owned())
            .collect()
    }

    /// `(id, channel, status)` of the `AppointmentBooked` deliveries.
    async fn deliveries(&self, pool: &sqlx::PgPool) -> Vec<(String, String, String)> {
        sqlx::query_as(
            "SELECT id::text, channel, status FROM notifier.deliveries
             WHERE kind = 'AppointmentBooked'",
        )
        .fetch_all(pool)
        .await
        .expect("deliveries")
    }
}

fn sandbox_code(file: &Path, to: &str) -> String {
    testing::last_code_in(file, to)
        .unwrap_or_else(|| panic!("no code to {to} in {}", file.display()))
}

#[tokio::test]
async fn notifier_killed_mid_batch_loses_nothing_and_resends_nothing_it_recorded() {
    let country = Country::start().await;
    let (_patient, token, email) = country.patient().await;
    let mut slots = Vec::new();
    while slots.len() < APPOINTMENTS {
        slots.extend(country.slots().await.into_iter().take(PER_PRACTITIONER));
    }
    // The events wait in Kafka while no notifier runs: a batch for the first process to work.
    for slot in slots.iter().take(APPOINTMENTS) {
        country
            .call(
                reqwest::Method::POST,
                "/v1/appointments",
                &token,
                &json!({ "slotId": slot }),
            )
            .await;
    }
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&country.db.url)
        .await
        .expect("pool");

    let mut first = country.notifier(1);
    country
        .wait_ready(country.notifier_ports.http, &first)
        .await;
    let kill_at = APPOINTMENTS * KILL_AFTER_PERCENT / 100;
    let started = Instant::now();
    loop {
        let received = country
            .providers
            .emails()
            .await
            .iter()
            .filter(|e| {
                e.to.iter().any(|to| to.contains(&email))
                    && e.subject.starts_with("Rendez-vous confirmé")
            })
            .count();
        if received >= kill_at {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {received} e-mails in 60 s:\n{}",
            first.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill();
    let recorded: BTreeSet<String> = country
        .deliveries(&pool)
        .await
        .into_iter()
        .filter(|(_, _, status)| status == "sent")
        .map(|(id, _, _)| id)
        .collect();
    let total = APPOINTMENTS * 3;
    assert!(
        !recorded.is_empty() && recorded.len() < total,
        "killed mid-batch: {} of {total} recorded",
        recorded.len()
    );
    println!(
        "killed after {} of {total} deliveries were recorded",
        recorded.len()
    );

    let second = country.notifier(2);
    country
        .wait_ready(country.notifier_ports.http, &second)
        .await;
    let started = Instant::now();
    loop {
        let rows = country.deliveries(&pool).await;
        if rows.len() == total && rows.iter().all(|(_, _, s)| s == "sent") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "deliveries not all sent after the restart: {:?}\n{}",
            rows.iter().filter(|r| r.2 != "sent").collect::<Vec<_>>(),
            second.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let rows = country.deliveries(&pool).await;
    let emails = country.providers.emails().await;
    let sms = country.providers.sms().await;
    let mut copies: BTreeMap<String, usize> = BTreeMap::new();
    for mail in &emails {
        *copies.entry(mail.message_id.clone()).or_default() += 1;
    }
    let inbox: Vec<String> = sqlx::query_scalar("SELECT id::text FROM notifier.inbox")
        .fetch_all(&pool)
        .await
        .expect("inbox");
    let mut duplicated = Vec::new();
    for (id, channel, _) in &rows {
        let received = match channel.as_str() {
            "email" => copies
                .get(&format!("{id}@notifier.pulse"))
                .copied()
                .unwrap_or(0),
            "sms" => sms
                .iter()
                .filter(|s| s.idempotency_key.as_deref() == Some(id.as_str()))
                .count(),
            _ => inbox.iter().filter(|i| *i == id).count(),
        };
        assert!(received >= 1, "{channel} delivery {id} lost");
        if received > 1 {
            assert!(
                !recorded.contains(id),
                "{channel} delivery {id} was recorded as sent before the kill, yet sent again"
            );
            duplicated.push((channel.clone(), id.clone()));
        }
    }
    // At most the one message each worker had in flight at the kill.
    assert!(duplicated.len() <= 1, "duplicates: {duplicated:?}");
    let repeated_sms_requests = country.providers.sms_requests().await as usize - sms.len();
    assert!(
        repeated_sms_requests <= 1,
        "{repeated_sms_requests} SMS requests repeated an idempotency key"
    );
    println!(
        "after the restart: {duplicated:?} delivered twice, {repeated_sms_requests} SMS request replayed"
    );
}
