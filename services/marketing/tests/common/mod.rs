//! A marketing server for one test: its own database, real Redis and Kafka, its own keyspace.
#![allow(dead_code, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use pulse_kit::component::Component;
use pulse_kit::config::CountryConfig;
use pulse_kit::server::{RunningServer, ServerSettings, start};
use pulse_kit::testing::{TestDatabase, redis_url};
use pulse_marketing::reservation::CampaignKeys;
use serde_json::{Value, json};

/// The kit's test country (France).
pub fn france() -> CountryConfig {
    pulse_kit::testing::france()
}

pub struct TestApp {
    pub db: TestDatabase,
    pub server: Option<RunningServer>,
    pub base: String,
    pub grpc: SocketAddr,
    pub client: reqwest::Client,
    pub country: CountryConfig,
    pub keyspace: String,
}

impl TestApp {
    pub async fn start() -> Self {
        Self::start_with(france(), &redis_url()).await
    }

    pub async fn start_with(country: CountryConfig, redis: &str) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let db = TestDatabase::create().await;
        let marketing = pulse_marketing::Marketing;
        pulse_kit::db::migrate(&db.url, marketing.name(), marketing.migrations())
            .await
            .expect("migrate");
        let settings = ServerSettings {
            db_max_connections: 10,
            ..pulse_kit::testing::server_settings(&db.url, redis)
        };
        let instance = settings.instance.clone().unwrap_or_default();
        let components: Vec<Arc<dyn Component>> = vec![Arc::new(marketing)];
        let server = start(&settings, country.clone(), components)
            .await
            .expect("server");
        Self {
            base: format!("http://{}", server.http_addr),
            grpc: server.grpc_addr,
            server: Some(server),
            keyspace: format!("{}-{instance}", country.slug()),
            db,
            client: reqwest::Client::new(),
            country,
        }
    }

    pub fn token(&self, subject: &str, roles: &[&str]) -> String {
        pulse_kit::testing::token(subject, roles, &self.country.code)
    }

    pub fn admin(&self) -> String {
        self.token("admin-1", &["admin"])
    }

    pub fn keys(&self, campaign: &str) -> CampaignKeys {
        CampaignKeys::new(&self.keyspace, campaign)
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        pulse_kit::testing::redis_connection().await
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
        let response = self
            .client
            .post(format!(
                "{}/v1/seckill/{}/orders",
                self.base,
                id.replace('/', "%2F")
            ))
            .bearer_auth(token)
            .send()
            .await
            .expect("seckill");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (
            status,
            response.json().await.unwrap_or(Value::Null),
            headers,
        )
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("get");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

pub fn kind(problem: &Value) -> String {
    problem["type"]
        .as_str()
        .and_then(|t| t.rsplit('/').next())
        .unwrap_or_default()
        .to_owned()
}
