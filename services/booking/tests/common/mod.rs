//! A booking server for one test: its own database, real Redis and Kafka, HS256 tokens.
#![allow(dead_code, missing_docs)]

use std::ops::Deref;
use std::sync::Arc;

use pulse_kit::config::CountryConfig;
use pulse_kit::settings::Secret;
use pulse_kit::testing::{self, redis_url};
use serde_json::{Value, json};

/// France with a year-long horizon (to reach the next DST changes) and no practical rate limit.
pub fn france() -> CountryConfig {
    testing::france()
}

/// The kit's test harness running booking, plus booking's request helpers.
pub struct TestApp(testing::TestApp);

impl Deref for TestApp {
    type Target = testing::TestApp;

    fn deref(&self) -> &testing::TestApp {
        &self.0
    }
}

impl TestApp {
    pub async fn start() -> Self {
        Self::start_with(france(), &redis_url()).await
    }

    pub async fn start_with(country: CountryConfig, redis: &str) -> Self {
        let redis = redis.to_owned();
        Self(
            testing::TestApp::start_with(
                vec![Arc::new(pulse_booking::Booking)],
                country,
                |settings| settings.redis_url = Secret::new(redis),
            )
            .await,
        )
    }

    /// Creates a practitioner who works every day, 00:00–23:30, with `slot_minutes` slots.
    pub async fn practitioner(&self, city: &str, specialty: &str, slot_minutes: u16) -> Value {
        let all_day = json!([{ "start": "00:00", "end": "23:30" }]);
        let body = json!({
            "name": "Dr Test",
            "specialty": specialty,
            "city": city,
            "address": "1 rue de la Paix",
            "latitude": 48.8566,
            "longitude": 2.3522,
            "languages": ["fr", "en"],
            "consultationPriceMinor": 2500,
            "accountSubject": format!("doc-{}", pulse_kit::new_id()),
            "schedule": {
                "slotMinutes": slot_minutes,
                "weekly": { "Mon": all_day, "Tue": all_day, "Wed": all_day, "Thu": all_day,
                            "Fri": all_day, "Sat": all_day, "Sun": all_day }
            }
        });
        let response = self
            .client
            .post(format!("{}/v1/practitioners", self.base))
            .bearer_auth(self.admin())
            .json(&body)
            .send()
            .await
            .expect("create practitioner");
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
        response.json().await.expect("json")
    }

    /// Free slots of a practitioner between two local dates.
    pub async fn slots(&self, practitioner: &str, from: &str, to: &str) -> Vec<Value> {
        let response = self
            .client
            .get(format!(
                "{}/v1/practitioners/{practitioner}/slots?from={from}&to={to}",
                self.base
            ))
            .send()
            .await
            .expect("slots");
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("json");
        body["slots"].as_array().cloned().unwrap_or_default()
    }

    /// Creates a practitioner as [`TestApp::practitioner`] does; returns it with its free slots
    /// on the local day `days` from today in Paris.
    pub async fn practitioner_with_slots(
        &self,
        city: &str,
        specialty: &str,
        slot_minutes: u16,
        days: i64,
    ) -> (Value, Vec<Value>) {
        let practitioner = self.practitioner(city, specialty, slot_minutes).await;
        let day = paris_day(days);
        let slots = self
            .slots(practitioner["id"].as_str().expect("id"), &day, &day)
            .await;
        (practitioner, slots)
    }

    /// `POST /v1/appointments` booking `slot` as `token` with `key`, ready to send (from a task,
    /// to race others).
    pub fn book_request(&self, token: &str, slot: &str, key: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}/v1/appointments", self.base))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(&json!({ "slotId": slot }))
    }

    /// Books a slot; returns (status, body, headers).
    pub async fn book(
        &self,
        token: &str,
        slot: &str,
        key: &str,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let response = self
            .book_request(token, slot, key)
            .send()
            .await
            .expect("book");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (
            status,
            response.json().await.unwrap_or(Value::Null),
            headers,
        )
    }
}

/// The local date `days` from today in Paris.
pub fn paris_day(days: i64) -> String {
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Paris)
        .date_naive();
    (today + chrono::Duration::days(days))
        .format("%Y-%m-%d")
        .to_string()
}
