//! A Pulse server for one test: its own database, real Redis and Kafka, its own keyspace,
//! marketing and/or ordering, HS256 tokens.
#![allow(dead_code, missing_docs)]

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use pulse_kit::component::Component;
use pulse_kit::config::CountryConfig;
use pulse_kit::server::{RunningServer, ServerSettings, start};
use pulse_kit::testing::{TestDatabase, redis_url};
use pulse_marketing::reservation::CampaignKeys;
use pulse_ordering::settings::{OrderingSettings, PaymentSettings};
use serde_json::{Value, json};

pub const WEBHOOK_SECRET: &str = "whsec_test_0123456789abcdef";

/// France (the kit's test country), with a payment timeout of `timeout_seconds`.
pub fn france(timeout_seconds: u32) -> CountryConfig {
    let mut country = pulse_kit::testing::france();
    // Below the production minimum of 30 s, so the tests do not wait.
    country.ordering.payment_timeout_seconds = timeout_seconds;
    country
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// What to run.
pub struct Options {
    pub marketing: bool,
    pub ordering: bool,
    pub country: CountryConfig,
    pub redis: String,
    /// Adjusts ordering's settings (the marketing URL and the sandbox webhook URL point at this
    /// server unless changed here).
    pub settings: Box<dyn FnOnce(&mut OrderingSettings) + Send>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            marketing: true,
            ordering: true,
            country: france(900),
            redis: redis_url(),
            settings: Box::new(|_| {}),
        }
    }
}

pub struct TestApp {
    pub db: TestDatabase,
    pub server: Option<RunningServer>,
    pub base: String,
    pub admin_base: String,
    pub grpc: SocketAddr,
    pub client: reqwest::Client,
    pub country: CountryConfig,
    pub keyspace: String,
    pub settings: OrderingSettings,
    pub pool: sqlx::PgPool,
}

impl TestApp {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        // Logs of the server under test, when RUST_LOG asks for them.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let db = TestDatabase::create().await;
        let marketing = pulse_marketing::Marketing;
        pulse_kit::db::migrate(&db.url, marketing.name(), marketing.migrations())
            .await
            .expect("migrate marketing");
        let http_port = free_port();
        let grpc_port = free_port();
        let mut settings = OrderingSettings {
            marketing_grpc_url: format!("http://127.0.0.1:{grpc_port}"),
            payment: PaymentSettings::Sandbox {
                webhook_url: format!("http://127.0.0.1:{http_port}/v1/payments/webhook"),
                delay: Duration::from_millis(100),
            },
            webhook_secrets: vec![WEBHOOK_SECRET.as_bytes().to_vec()],
            sweep_interval: Duration::from_millis(200),
            ..OrderingSettings::default()
        };
        (options.settings)(&mut settings);
        let ordering = pulse_ordering::Ordering::new(settings.clone());
        pulse_kit::db::migrate(&db.url, ordering.name(), ordering.migrations())
            .await
            .expect("migrate ordering");
        let server_settings = ServerSettings {
            http_addr: SocketAddr::from(([127, 0, 0, 1], http_port)),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], grpc_port)),
            ..pulse_kit::testing::server_settings(&db.url, &options.redis)
        };
        let instance = server_settings.instance.clone().unwrap_or_default();
        let mut components: Vec<Arc<dyn Component>> = Vec::new();
        if options.marketing {
            components.push(Arc::new(marketing));
        }
        if options.ordering {
            components.push(Arc::new(ordering));
        }
        let server = start(&server_settings, options.country.clone(), components)
            .await
            .expect("server");
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(512)
            .build()
            .expect("client");
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(&db.url)
            .await
            .expect("pool");
        Self {
            base: format!("http://{}", server.http_addr),
            admin_base: format!("http://{}", server.admin_addr),
            grpc: server.grpc_addr,
            server: Some(server),
            keyspace: format!("{}-{instance}", options.country.slug()),
            db,
            client,
            country: options.country,
            settings,
            pool,
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

    /// Creates a campaign open from now for an hour.
    pub async fn campaign(&self, id: &str, stock: u32, per_user_limit: u32) -> Value {
        let now = Utc::now();
        self.put_campaign(
            id,
            stock,
            per_user_limit,
            now - chrono::Duration::seconds(5),
            now + chrono::Duration::hours(1),
        )
        .await
    }

    pub async fn put_campaign(
        &self,
        id: &str,
        stock: u32,
        per_user_limit: u32,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
    ) -> Value {
        let response = self
            .client
            .put(format!("{}/v1/campaigns/{}", self.base, encode(id)))
            .bearer_auth(self.admin())
            .json(&json!({
                "voucherTitle": "10 € off any order",
                "voucherValueMinor": 1000,
                "currency": "EUR",
                "priceMinor": 100,
                "stock": stock,
                "perUserLimit": per_user_limit,
                "startsAt": starts_at,
                "endsAt": ends_at,
            }))
            .send()
            .await
            .expect("put campaign");
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
        response.json().await.expect("json")
    }

    /// One seckill attempt: (status, body, content type).
    pub async fn seckill(&self, token: &str, campaign: &str) -> (u16, Value, String) {
        seckill(&self.client, &self.base, token, campaign).await
    }

    pub async fn product(&self, price_minor: i64, stock: u32) -> Value {
        let response = self
            .client
            .post(format!("{}/v1/products", self.base))
            .bearer_auth(self.admin())
            .json(&json!({ "name": "Lamp", "priceMinor": price_minor, "stock": stock }))
            .send()
            .await
            .expect("create product");
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
        response.json().await.expect("json")
    }

    /// `POST /v1/orders`: (status, body, headers).
    pub async fn order(
        &self,
        token: &str,
        body: &Value,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let response = self
            .client
            .post(format!("{}/v1/orders", self.base))
            .bearer_auth(token)
            .header("Idempotency-Key", pulse_kit::new_id().to_string())
            .json(body)
            .send()
            .await
            .expect("order");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (
            status,
            response.json().await.unwrap_or(Value::Null),
            headers,
        )
    }

    pub async fn get(&self, token: &str, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("get");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, token: &str, path: &str) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("post");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn order_status(&self, id: &str) -> Option<String> {
        sqlx::query_scalar("SELECT status FROM ordering.orders WHERE id = $1::uuid")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .expect("status")
    }

    pub async fn orders_of_campaign(&self, campaign: &str) -> Vec<(String, String)> {
        sqlx::query_as(
            "SELECT id::text, user_subject FROM ordering.orders WHERE campaign_id = $1 ORDER BY id",
        )
        .bind(campaign)
        .fetch_all(&self.pool)
        .await
        .expect("orders")
    }

    pub async fn outbox_count(&self, schema: &str, event_type: &str, key: &str) -> i64 {
        // The schema is one of two literals chosen by the tests.
        assert!(schema == "ordering" || schema == "marketing");
        sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {schema}.outbox WHERE event_type = $1 AND partition_key = $2"
        ))
        .bind(event_type)
        .bind(key)
        .fetch_one(&self.pool)
        .await
        .expect("outbox")
    }

    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.admin_base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        pulse_kit::testing::metric_value(&text, name)
    }
}

pub fn encode(id: &str) -> String {
    id.replace('/', "%2F")
}

pub async fn seckill(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    campaign: &str,
) -> (u16, Value, String) {
    let response = client
        .post(format!("{base}/v1/seckill/{}/orders", encode(campaign)))
        .bearer_auth(token)
        .send()
        .await
        .expect("seckill");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (
        status,
        response.json().await.unwrap_or(Value::Null),
        content_type,
    )
}

/// Waits until `check` holds (polling), or fails the test after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for: {what}"
        );
        // Slow enough to stay under the per-client rate limit when polling over HTTP.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The problem type's last segment.
pub fn kind(problem: &Value) -> String {
    problem["type"]
        .as_str()
        .and_then(|t| t.rsplit('/').next())
        .unwrap_or_default()
        .to_owned()
}

/// Counts by value.
pub fn tally<'a>(items: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for item in items {
        *out.entry(item.to_owned()).or_default() += 1;
    }
    out
}

pub fn distinct<'a>(items: impl IntoIterator<Item = &'a str>) -> usize {
    items.into_iter().collect::<HashSet<_>>().len()
}
