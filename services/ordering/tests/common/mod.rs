//! A Pulse server for one test: its own database, real Redis and Kafka, its own keyspace,
//! marketing and/or ordering, HS256 tokens.
#![allow(dead_code, missing_docs, unused_imports)]

use std::collections::{BTreeMap, HashSet};
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pulse_kit::component::Component;
use pulse_kit::config::CountryConfig;
use pulse_kit::settings::{Env, Secret, ordering as vars};
use pulse_kit::testing::{self, free_port, redis_url};
use pulse_marketing::reservation::CampaignKeys;
use pulse_ordering::settings::OrderingSettings;
use serde_json::{Value, json};

pub use testing::{eventually, problem_kind as kind};

pub const WEBHOOK_SECRET: &str = "whsec_test_0123456789abcdef";

/// France (the kit's test country), with a payment timeout of `timeout_seconds`.
pub fn france(timeout_seconds: u32) -> CountryConfig {
    let mut country = testing::france();
    // Below the production minimum of 30 s, so the tests do not wait.
    country.ordering.payment_timeout_seconds = timeout_seconds;
    country
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

impl Options {
    /// Ordering without marketing (no voucher, no seckill).
    pub fn without_marketing() -> Self {
        Self {
            marketing: false,
            ..Self::default()
        }
    }
}

/// The kit's test harness running marketing and/or ordering, plus their request helpers.
pub struct TestApp {
    app: testing::TestApp,
    /// Ordering's settings, as the server runs them.
    pub settings: OrderingSettings,
}

impl Deref for TestApp {
    type Target = testing::TestApp;

    fn deref(&self) -> &testing::TestApp {
        &self.app
    }
}

impl TestApp {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        let (http_port, grpc_port) = (free_port(), free_port());
        let redis = options.redis.clone();
        let tune = move |settings: &mut pulse_kit::server::ServerSettings| {
            settings.http_addr = ([127, 0, 0, 1], http_port).into();
            settings.grpc_addr = ([127, 0, 0, 1], grpc_port).into();
            settings.redis_url = Secret::new(redis.clone());
        };
        let mut planned = testing::server_settings("postgres://planned", &options.redis);
        tune(&mut planned);
        // Marketing and the sandbox's webhooks default to this server's own ports. The sandbox
        // pays a second after a checkout starts: tests start a payment and ask for it again
        // before it is paid, which a loaded machine did not always do within 100 ms.
        let mut settings = OrderingSettings::read(
            &Env::from_map([
                (vars::PAYMENT_WEBHOOK_SECRET.var, WEBHOOK_SECRET),
                (vars::PAYMENT_SANDBOX_DELAY_MS.var, "1000"),
                (vars::SWEEP_INTERVAL_MS.var, "200"),
            ]),
            &planned,
        )
        .expect("ordering settings");
        (options.settings)(&mut settings);
        let mut components: Vec<Arc<dyn Component>> = Vec::new();
        if options.marketing {
            components.push(Arc::new(pulse_marketing::Marketing));
        }
        // Ordering's schema exists even when its component does not run: tests read its tables.
        let ordering = Arc::new(pulse_ordering::Ordering::new(settings.clone()));
        let db = testing::TestDatabase::create().await;
        pulse_kit::db::migrate(&db.url, ordering.name(), ordering.migrations())
            .await
            .expect("migrate ordering");
        if options.ordering {
            components.push(ordering);
        }
        let app = testing::TestApp::start_on(db, components, options.country, tune).await;
        Self { app, settings }
    }

    pub fn keys(&self, campaign: &str) -> CampaignKeys {
        CampaignKeys::new(&self.keyspace, campaign)
    }

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

    /// A new product's id.
    pub async fn product_id(&self, price_minor: i64, stock: u32) -> String {
        self.product(price_minor, stock).await["id"]
            .as_str()
            .expect("id")
            .to_owned()
    }

    /// `POST path` as `token` with `Idempotency-Key: key`, to send.
    pub fn post_with_key(&self, token: &str, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
    }

    /// `POST /v1/orders` of `body` as `token` with `Idempotency-Key: key`, to send.
    pub fn order_request(&self, token: &str, key: &str, body: &Value) -> reqwest::RequestBuilder {
        self.post_with_key(token, "/v1/orders", key).json(body)
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
        self.app.get(Some(token), path).await
    }

    pub async fn post(&self, token: &str, path: &str) -> (u16, Value) {
        self.app.post(Some(token), path, None).await
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

    /// What a `SELECT count(*) …` without parameters counts.
    pub async fn count(&self, query: &str) -> i64 {
        sqlx::query_scalar(query)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{query}: {e}"))
    }

    /// Sessions of the test's database waiting for a lock.
    pub async fn lock_waiters(&self) -> i64 {
        self.count(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .await
    }

    /// Runs `requests` while the test holds the row lock of `id` in `table` (`ordering.orders`,
    /// `ordering.products`), and lets the row go once `waiters` sessions wait for a lock: so
    /// every request gets past what it does before the row (the idempotency lookup, a call to
    /// the provider) before any of them goes on. `what` names the wait in a timeout.
    pub async fn while_row_locked<T>(
        &self,
        table: &str,
        id: &str,
        waiters: i64,
        what: &str,
        requests: impl Future<Output = T>,
    ) -> T {
        // The table is one of the literals chosen by the tests.
        assert!(table == "ordering.orders" || table == "ordering.products");
        let mut blocker = self.pool.begin().await.expect("begin");
        sqlx::query(&format!(
            "SELECT 1 FROM {table} WHERE id = $1::uuid FOR UPDATE"
        ))
        .bind(id)
        .execute(&mut *blocker)
        .await
        .expect("lock the row");
        let release = async {
            eventually(what, Duration::from_secs(20), || async {
                self.lock_waiters().await >= waiters
            })
            .await;
            blocker.commit().await.expect("unlock");
        };
        let (answers, ()) = tokio::join!(requests, release);
        answers
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

/// One raw answer: status, headers, body bytes.
pub type Raw = (u16, reqwest::header::HeaderMap, bytes::Bytes);

/// Sends `request`: its raw answer.
pub async fn raw(request: reqwest::RequestBuilder) -> Raw {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.bytes().await.expect("body"))
}

/// Whether an answer is the replay of an earlier one (`Idempotent-Replayed: true`).
pub fn replayed(headers: &reqwest::header::HeaderMap) -> bool {
    headers
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
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
