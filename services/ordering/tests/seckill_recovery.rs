//! Seckill when Redis loses its data: a private Redis, killed with SIGKILL and restarted empty,
//! under marketing and ordering running for real (PostgreSQL, Kafka). Marketing rebuilds the
//! campaign from its durable sales, never from the configured stock; a buyer whose reservation
//! was lost before it became an order is told so when polling, and may buy again.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Options, TestApp, eventually, kind};
use futures::StreamExt;
use pulse_kit::testing::{Persistence, PrivateRedis};
use redis::AsyncCommands;
use serde_json::Value;
use uuid::Uuid;

async fn attempt(app: &TestApp, user: &str, campaign: &str) -> (u16, Value) {
    let (status, body, _) = app.seckill(&app.token(user, &["patient"]), campaign).await;
    (status, body)
}

/// Live sales marketing has recorded for `campaign`.
async fn recorded_sales(app: &TestApp, campaign: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM marketing.seckill_sales WHERE campaign_id = $1 AND status <> 'CANCELLED'",
    )
    .bind(campaign)
    .fetch_one(&app.pool)
    .await
    .expect("sales")
}

/// Orders of `campaign` that are not cancelled, per buyer.
async fn live_orders_per_buyer(app: &TestApp, campaign: &str) -> HashMap<String, i64> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT user_subject, count(*) FROM ordering.orders
         WHERE campaign_id = $1 AND status <> 'CANCELLED' GROUP BY user_subject",
    )
    .bind(campaign)
    .fetch_all(&app.pool)
    .await
    .expect("orders");
    rows.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_redis_loses_its_data_a_campaign_never_sells_more_than_its_stock() {
    let mut redis_server = PrivateRedis::start(Persistence::None);
    let mut redis = redis_server.connection().await;
    let app = TestApp::start_with(Options {
        redis: redis_server.url(),
        ..Options::default()
    })
    .await;
    let campaign = "pulse-fr/lossy";
    let (stock, limit) = (12, 1);
    app.campaign(campaign, stock, limit).await;
    let keys = app.keys(campaign);
    // Every 202: (buyer, order id).
    let mut acknowledged: Vec<(String, String)> = Vec::new();

    // Ten buyers; their orders exist and marketing has recorded them.
    for i in 0..10 {
        let user = format!("first-{i}");
        let (status, body) = attempt(&app, &user, campaign).await;
        assert_eq!(status, 202, "{user}: {body}");
        acknowledged.push((user, body["orderId"].as_str().expect("id").to_owned()));
    }
    eventually(
        "ten orders, recorded by marketing",
        Duration::from_secs(30),
        || async {
            app.orders_of_campaign(campaign).await.len() == 10
                && recorded_sales(&app, campaign).await == 10
        },
    )
    .await;

    // Two more reservations that Redis acknowledges but loses before they become orders:
    // ordering stops reading the campaign's stream first (it re-reads the registry every
    // second).
    let registry = pulse_marketing::reservation::registry_key(&app.keyspace);
    let _: i64 = redis.srem(&registry, campaign).await.expect("srem");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut lost = Vec::new();
    for user in ["lost-0", "lost-1"] {
        let (status, body) = attempt(&app, user, campaign).await;
        assert_eq!(status, 202, "{user}: {body}");
        let order = body["orderId"].as_str().expect("id").to_owned();
        lost.push((user.to_owned(), order.clone()));
        acknowledged.push((user.to_owned(), order));
    }
    let (status, body) = attempt(&app, "late", campaign).await;
    assert_eq!((status, kind(&body).as_str()), (409, "seckill-sold-out"));

    // Redis dies and comes back empty.
    redis_server.kill();
    redis_server.start_again();
    let mut redis = redis_server.connection().await;
    let keyspace_keys: Vec<String> = redis.keys("*").await.expect("keys");
    assert!(
        keyspace_keys.is_empty(),
        "restarted empty: {keyspace_keys:?}"
    );

    // Marketing rebuilds the campaign from what it recorded: 10 sold, not 0.
    eventually(
        "the campaign is rebuilt from the durable sales",
        Duration::from_secs(30),
        || async {
            let (status, view) = app
                .get(
                    &app.admin(),
                    &format!("/v1/campaigns/{}", common::encode(campaign)),
                )
                .await;
            status == 200 && view["sold"] == 10 && view["remaining"] == 2
        },
    )
    .await;
    let buyers: HashMap<String, i64> = redis.hgetall(&keys.buyers).await.expect("buyers");
    assert_eq!(buyers.len(), 10);
    assert!(lost.iter().all(|(user, _)| !buyers.contains_key(user)));
    // The lost reservations' buyers are told their order is not there (yet): a problem, not
    // an order. (Past `RESERVATION_LOST_AFTER` it becomes 410 `reservation-lost`; see
    // `an_order_id_unknown_for_too_long_answers_reservation_lost`.)
    for (user, order) in &lost {
        let (status, problem) = app
            .get(
                &app.token(user, &["patient"]),
                &format!("/v1/orders/{order}"),
            )
            .await;
        assert_eq!((status, kind(&problem).as_str()), (404, "order-not-found"));
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("may still be being created")),
            "{problem}"
        );
    }

    // Everyone tries again at once: the first buyers, the two whose reservation was lost, and
    // ten newcomers.
    let users: Arc<Vec<String>> = Arc::new(
        (0..10)
            .map(|i| format!("first-{i}"))
            .chain(lost.iter().map(|(user, _)| user.clone()))
            .chain((0..10).map(|i| format!("new-{i}")))
            .collect(),
    );
    let answers: Vec<(String, u16, Value)> = futures::stream::iter(users.iter().cloned())
        .map(|user| {
            let app = &app;
            async move {
                let (status, body) = attempt(app, &user, campaign).await;
                (user, status, body)
            }
        })
        .buffer_unordered(22)
        .collect()
        .await;
    let mut won = Vec::new();
    for (user, status, body) in &answers {
        match *status {
            202 => {
                assert!(!user.starts_with("first-"), "{user} bought twice");
                let order = body["orderId"].as_str().expect("id").to_owned();
                won.push((user.clone(), order.clone()));
                acknowledged.push((user.clone(), order));
            }
            409 => {
                let expected = if user.starts_with("first-") {
                    "seckill-already-bought"
                } else {
                    "seckill-sold-out"
                };
                assert_eq!(kind(body), expected, "{user}: {body}");
            }
            other => panic!("{user}: unexpected {other}: {body}"),
        }
    }
    assert_eq!(
        won.len(),
        2,
        "exactly the two units Redis lost are sold again"
    );

    // The winners' orders are made; nothing else.
    eventually("twelve orders", Duration::from_secs(30), || async {
        app.orders_of_campaign(campaign).await.len() == 12
            && recorded_sales(&app, campaign).await == 12
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per_buyer = live_orders_per_buyer(&app, campaign).await;
    let total: i64 = per_buyer.values().sum();
    assert_eq!(total, i64::from(stock), "orders never exceed the stock");
    assert!(
        per_buyer.values().all(|n| *n <= i64::from(limit)),
        "nobody holds more than the per-user limit: {per_buyer:?}"
    );
    let counts: (Option<String>, Option<String>) = redis::pipe()
        .hget(&keys.meta, "sold")
        .get(&keys.stock)
        .query_async(&mut redis)
        .await
        .expect("counters");
    assert_eq!(counts, (Some("12".into()), Some("0".into())));

    // Every acknowledged reservation is an order its buyer sees, or a problem its buyer sees.
    let orders: HashSet<String> = app
        .orders_of_campaign(campaign)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    for (user, order) in &acknowledged {
        let (status, body) = app
            .get(
                &app.token(user, &["patient"]),
                &format!("/v1/orders/{order}"),
            )
            .await;
        if orders.contains(order) {
            assert_eq!(status, 200, "{user}: {body}");
            assert_eq!(body["id"].as_str(), Some(order.as_str()));
        } else {
            assert!(
                lost.contains(&(user.clone(), order.clone())),
                "{user}: {order} vanished"
            );
            assert_eq!((status, kind(&body).as_str()), (404, "order-not-found"));
        }
    }
}

#[tokio::test]
async fn an_order_id_unknown_for_too_long_answers_reservation_lost() {
    let app = TestApp::start_with(Options::without_marketing()).await;
    let buyer = app.token("polly", &["patient"]);
    let made = |ago: Duration| {
        let since = (SystemTime::now() - ago)
            .duration_since(UNIX_EPOCH)
            .expect("after 1970");
        Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            since.as_secs(),
            since.subsec_nanos(),
        ))
    };
    let old = made(pulse_ordering::http::RESERVATION_LOST_AFTER + Duration::from_secs(60));
    let (status, problem) = app.get(&buyer, &format!("/v1/orders/{old}")).await;
    assert_eq!((status, kind(&problem).as_str()), (410, "reservation-lost"));
    let detail = problem["detail"].as_str().expect("detail");
    assert!(
        detail.contains("nothing was charged") && detail.contains("buy again"),
        "{detail}"
    );
    let young = made(Duration::from_secs(5));
    let (status, problem) = app.get(&buyer, &format!("/v1/orders/{young}")).await;
    assert_eq!((status, kind(&problem).as_str()), (404, "order-not-found"));
    // Not a UUIDv7: no time to judge by.
    let (status, _) = app
        .get(&buyer, &format!("/v1/orders/{}", Uuid::new_v4()))
        .await;
    assert_eq!(status, 404);
}
