//! A marketing server for one test: its own database, real Redis and Kafka, its own keyspace.
#![allow(dead_code, missing_docs)]

use std::ops::Deref;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use pulse_kit::component::ComponentContext;
use pulse_kit::config::CountryConfig;
use pulse_kit::testing;
use pulse_marketing::reservation::CampaignKeys;
use serde_json::{Value, json};

/// The kit's test country (France).
pub fn france() -> CountryConfig {
    testing::france()
}

/// The kit's test harness running marketing, plus marketing's request helpers.
pub struct TestApp(testing::TestApp);

impl Deref for TestApp {
    type Target = testing::TestApp;

    fn deref(&self) -> &testing::TestApp {
        &self.0
    }
}

impl TestApp {
    pub async fn start() -> Self {
        Self::start_with(france(), &testing::redis_url()).await
    }

    pub async fn start_with(country: CountryConfig, redis: &str) -> Self {
        let redis = redis.to_owned();
        Self(
            testing::TestApp::start_with(
                vec![Arc::new(pulse_marketing::Marketing)],
                country,
                |settings| {
                    settings.db_max_connections = 10;
                    settings.redis_url = pulse_kit::settings::Secret::new(redis);
                },
            )
            .await,
        )
    }

    pub fn keys(&self, campaign: &str) -> CampaignKeys {
        CampaignKeys::new(&self.keyspace, campaign)
    }

    /// Marketing's services on this app's database and keyspace, over `redis`: what its jobs
    /// run, driven by hand.
    pub fn services(&self, redis: &str) -> pulse_marketing::Services {
        let mut ctx = ComponentContext::standalone(
            "marketing",
            self.country.clone(),
            &self.db.url,
            redis,
            testing::kafka_brokers(),
        )
        .expect("context");
        ctx.keyspace = self.keyspace.clone();
        pulse_marketing::services(&ctx)
    }

    pub fn body(
        stock: u32,
        per_user_limit: u32,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
    ) -> Value {
        json!({
            "voucherTitle": "5 € off",
            "voucherValueMinor": 500,
            "currency": "EUR",
            "priceMinor": 99,
            "stock": stock,
            "perUserLimit": per_user_limit,
            "startsAt": starts_at,
            "endsAt": ends_at,
        })
    }

    /// `PUT /v1/campaigns/{id}` as `token`: (status, body).
    pub async fn put(&self, token: &str, id: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .put(format!(
                "{}/v1/campaigns/{}",
                self.base,
                id.replace('/', "%2F")
            ))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("put");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// An open campaign.
    pub async fn open(&self, id: &str, stock: u32, per_user_limit: u32) {
        let now = Utc::now();
        let (status, body) = self
            .put(
                &self.admin(),
                id,
                &Self::body(
                    stock,
                    per_user_limit,
                    now - chrono::Duration::seconds(5),
                    now + chrono::Duration::hours(1),
                ),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// One seckill attempt: (status, body, content type, headers).
    pub async fn seckill(&self, token: &str, id: &str) -> (u16, Value, reqwest::header::HeaderMap) {
        self.seckill_with_key(token, id, None).await
    }

    /// One seckill attempt with an optional `Idempotency-Key`: (status, body, headers).
    pub async fn seckill_with_key(
        &self,
        token: &str,
        id: &str,
        key: Option<&str>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut request = self
            .client
            .post(format!(
                "{}/v1/seckill/{}/orders",
                self.base,
                id.replace('/', "%2F")
            ))
            .bearer_auth(token);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.expect("seckill");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (
            status,
            response.json().await.unwrap_or(Value::Null),
            headers,
        )
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.0.get(None, path).await
    }
}

pub use testing::problem_kind as kind;
