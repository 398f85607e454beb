//! Seckill end to end against real PostgreSQL, Redis and Kafka: the crowd, the order consumer
//! (crash, dead letters), and the timeout that gives the stock back.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{Options, TestApp, eventually, france, kind, tally};
use futures::StreamExt;
use pulse_kit::config::CountryConfig;
use pulse_ordering::reservations::{GROUP, ReservationConsumer, ReservationMetrics};
use pulse_ordering::settings::ReservationSettings;
use pulse_proto::marketing::v1::campaign_admin_client::CampaignAdminClient;
use pulse_proto::marketing::v1::{CampaignPhase, GetCampaignStatusRequest};
use redis::AsyncCommands;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// `attempts` seckill attempts by `users` (round robin), `concurrency` at a time.
async fn crowd(
    app: &TestApp,
    tokens: &Arc<Vec<String>>,
    campaign: &str,
    attempts: usize,
    concurrency: usize,
) -> Vec<(u16, Value, String)> {
    let client = app.client.clone();
    let base = app.base.clone();
    futures::stream::iter(0..attempts)
        .map(|i| {
            let client = client.clone();
            let base = base.clone();
            let tokens = Arc::clone(tokens);
            let campaign = campaign.to_owned();
            async move {
                let token = &tokens[i % tokens.len()];
                common::seckill(&client, &base, token, &campaign).await
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_thousand_attempts_from_two_thousand_users_sell_exactly_the_stock_five_times() {
    let app = TestApp::start().await;
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..2000)
            .map(|i| app.token(&format!("buyer-{i}"), &["patient"]))
            .collect(),
    );
    let mut grpc = CampaignAdminClient::connect(format!("http://{}", app.grpc))
        .await
        .expect("grpc");
    let mut redis = app.redis().await;
    for round in 0..5 {
        let campaign = format!("pulse-fr/flash-{round}");
        app.campaign(&campaign, 100, 1).await;
        let answers = crowd(&app, &tokens, &campaign, 5000, 200).await;

        let won: Vec<&Value> = answers
            .iter()
            .filter(|(s, _, _)| *s == 202)
            .map(|(_, b, _)| b)
            .collect();
        let refused = tally(
            answers
                .iter()
                .filter(|(s, _, _)| *s != 202)
                .map(|(s, b, t)| {
                    assert_eq!(*s, 409, "round {round}: {b}");
                    assert_eq!(t, "application/problem+json");
                    match kind(b).as_str() {
                        "seckill-sold-out" => "sold-out",
                        "seckill-already-bought" => "already-bought",
                        other => panic!("round {round}: unexpected problem {other}: {b}"),
                    }
                }),
        );
        assert_eq!(
            won.len(),
            100,
            "round {round}: exactly the stock is sold ({refused:?})"
        );
        let won_ids: HashSet<String> = won
            .iter()
            .map(|b| b["orderId"].as_str().expect("order id").to_owned())
            .collect();
        assert_eq!(won_ids.len(), 100, "round {round}: every order id is new");

        // The consumer turns every reservation into exactly one order.
        eventually("100 orders", Duration::from_secs(60), || async {
            app.orders_of_campaign(&campaign).await.len() >= 100
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let orders = app.orders_of_campaign(&campaign).await;
        assert_eq!(orders.len(), 100, "round {round}: exactly 100 orders");
        let ids: HashSet<String> = orders.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(
            ids, won_ids,
            "round {round}: the orders are the reservations"
        );
        let users: HashSet<&str> = orders.iter().map(|(_, u)| u.as_str()).collect();
        assert_eq!(users.len(), 100, "round {round}: no user twice");

        let stock: String = redis.get(&app.keys(&campaign).stock).await.expect("stock");
        assert_eq!(stock, "0", "round {round}: Redis stock is 0");
        let status = grpc
            .get_status(GetCampaignStatusRequest {
                campaign_id: campaign.clone(),
            })
            .await
            .expect("status")
            .into_inner();
        assert_eq!(
            (status.sold, status.remaining, status.stock),
            (100, 0, 100),
            "round {round}"
        );
        assert_eq!(status.phase(), CampaignPhase::SoldOut);
        // The consumer acknowledges an entry after its order commits: the order can be seen
        // before the acknowledgement lands.
        let stream = app.keys(&campaign).stream;
        eventually(
            &format!("round {round}: every reservation acknowledged"),
            Duration::from_secs(10),
            || async { pending_count(&mut app.redis().await, &stream).await == 0 },
        )
        .await;
    }
}

async fn pending_count(redis: &mut redis::aio::MultiplexedConnection, stream: &str) -> i64 {
    let summary: redis::Value = match redis::cmd("XPENDING")
        .arg(stream)
        .arg(GROUP)
        .query_async(redis)
        .await
    {
        Ok(summary) => summary,
        // The consumer creates its group when it starts: until then nothing is pending.
        Err(err) if err.code() == Some("NOGROUP") => return 0,
        Err(err) => panic!("xpending: {err}"),
    };
    match summary {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::Int(n)) => *n,
            _ => 0,
        },
        _ => 0,
    }
}

/// A pool on ordering's schema whose connections carry `application_name`, so a test can see
/// them in `pg_stat_activity`.
fn pool_named(app: &TestApp, application_name: &str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect_lazy_with(
            pulse_kit::db::schema_options(&app.db.url, "ordering")
                .expect("options")
                .application_name(application_name),
        )
}

/// Waits until PostgreSQL has no backend left for `application_name`: from then on, each of
/// their transactions is either committed or rolled back, for good.
async fn wait_for_backends_gone(app: &TestApp, application_name: &str) {
    eventually(
        "the killed consumer's database sessions are gone",
        Duration::from_secs(30),
        || async {
            let left: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            )
            .bind(application_name)
            .fetch_one(&app.pool)
            .await
            .expect("pg_stat_activity");
            left == 0
        },
    )
    .await;
}

fn consumer(
    app: &TestApp,
    name: &str,
    settings: ReservationSettings,
    metrics: ReservationMetrics,
) -> ReservationConsumer {
    consumer_on(app, pool_named(app, name), name, settings, metrics)
}

fn consumer_on(
    app: &TestApp,
    pool: sqlx::PgPool,
    name: &str,
    settings: ReservationSettings,
    metrics: ReservationMetrics,
) -> ReservationConsumer {
    let store = pulse_ordering::store::Store::new(
        pool,
        pulse_kit::outbox::Outbox::new(&app.country.code, &app.keyspace, "ordering"),
    );
    ReservationConsumer::new(
        pulse_kit::redis::RedisHandle::new(&pulse_kit::testing::redis_url()).expect("redis"),
        &app.keyspace,
        pulse_ordering::checkout::SeckillCheckout::new(store, Duration::from_secs(900)),
        settings,
        name,
        metrics,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_order_consumer_killed_mid_stream_then_restarted_makes_each_reservation_one_order() {
    // Marketing only: the consumers are run by hand so one can be killed.
    let app = TestApp::start_with(Options {
        ordering: false,
        ..Options::default()
    })
    .await;
    let campaign = "crash-test";
    app.campaign(campaign, 600, 1).await;
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..600)
            .map(|i| app.token(&format!("crash-{i}"), &["patient"]))
            .collect(),
    );
    let answers = crowd(&app, &tokens, campaign, 600, 100).await;
    let reserved: HashSet<String> = answers
        .iter()
        .filter(|(s, _, _)| *s == 202)
        .map(|(_, b, _)| b["orderId"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(reserved.len(), 600);

    let settings = ReservationSettings {
        claim_idle: Duration::from_millis(500),
        max_deliveries: 5,
        batch: 50,
        idle_poll: Duration::from_millis(20),
    };
    let stream = app.keys(campaign).stream;
    let mut redis = app.redis().await;
    let victim_metrics = ReservationMetrics::default();
    // The victim has its own pool, named, so that after killing it the test can wait for its
    // last transactions to end (committed or rolled back) before counting its orders.
    let victim_app_name = pulse_kit::testing::unique("victim");
    let victim_pool = pool_named(&app, &victim_app_name);
    let first = tokio::spawn(
        consumer_on(
            &app,
            victim_pool.clone(),
            "victim",
            settings,
            victim_metrics.clone(),
        )
        .run(CancellationToken::new()),
    );
    // Kill it while it holds delivered, unacknowledged entries.
    let mut killed_with = 0;
    for _ in 0..2000 {
        let done = app.orders_of_campaign(campaign).await.len();
        let pending = pending_count(&mut redis, &stream).await;
        if done >= 60 && pending > 0 {
            first.abort();
            killed_with = pending;
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(killed_with > 0, "the consumer was killed mid-stream");
    let _ = first.await;
    // A killed process's transactions can still commit after the kill (a COMMIT already sent):
    // close its connections and wait until PostgreSQL has none of them left, so `before` is
    // final.
    let _ = tokio::time::timeout(Duration::from_secs(10), victim_pool.close()).await;
    drop(victim_pool);
    wait_for_backends_gone(&app, &victim_app_name).await;
    let before = app.orders_of_campaign(campaign).await.len();
    assert!(before < 600, "the first consumer did not finish ({before})");
    let left_pending = pending_count(&mut redis, &stream).await;
    assert!(left_pending > 0, "its delivered entries stay pending");

    let metrics = ReservationMetrics::default();
    let second = consumer(&app, "successor", settings, metrics.clone());
    let token = CancellationToken::new();
    let running = tokio::spawn(second.run(token.clone()));
    eventually(
        "every reservation is an order",
        Duration::from_secs(60),
        || async { app.orders_of_campaign(campaign).await.len() >= 600 },
    )
    .await;
    eventually("nothing pending", Duration::from_secs(30), || async {
        pending_count(&mut app.redis().await, &stream).await == 0
    })
    .await;
    token.cancel();
    let _ = running.await;
    let orders = app.orders_of_campaign(campaign).await;
    assert_eq!(orders.len(), 600, "exactly one order per reservation");
    let ids: HashSet<String> = orders.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids, reserved, "the orders are the reservations");
    assert!(
        metrics.claimed.get() >= u64::try_from(left_pending).unwrap_or(0),
        "the successor claimed the victim's entries ({} < {left_pending})",
        metrics.claimed.get()
    );
    assert_eq!(
        metrics.created.get(),
        600 - u64::try_from(before).unwrap_or(0),
        "the successor created exactly the missing orders"
    );
    assert!(
        victim_metrics.created.get() > 0,
        "the victim was working when killed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_reservation_goes_to_the_dead_letter_stream_and_the_others_flow_on() {
    let app = TestApp::start_with(Options {
        settings: Box::new(|s| {
            s.reservations.claim_idle = Duration::from_millis(200);
            s.reservations.max_deliveries = 3;
        }),
        ..Options::default()
    })
    .await;
    let campaign = "poison";
    app.campaign(campaign, 50, 1).await;
    let keys = app.keys(campaign);
    let mut redis = app.redis().await;
    // A reservation no order can come from, among good ones.
    let poison: String = redis
        .xadd(
            &keys.stream,
            "*",
            &[
                ("order", "not-a-uuid"),
                ("user", "mallory"),
                ("campaign", campaign),
                ("price", "100"),
                ("currency", "EUR"),
                ("at", "1"),
            ],
        )
        .await
        .expect("xadd");
    let mut reserved = HashSet::new();
    for i in 0..20 {
        let token = app.token(&format!("good-{i}"), &["patient"]);
        let (status, body, _) = app.seckill(&token, campaign).await;
        assert_eq!(status, 202, "{body}");
        reserved.insert(body["orderId"].as_str().expect("id").to_owned());
    }
    let entry = &orders_and_one_dead_letter(&app, campaign, &keys.dead, 20).await;
    assert_eq!(entry.get::<String>("source_id"), Some(poison.clone()));
    assert_eq!(entry.get::<String>("order"), Some("not-a-uuid".into()));
    assert_eq!(entry.get::<String>("user"), Some("mallory".into()));
    let error: String = entry.get("error").expect("error");
    assert!(error.contains("not-a-uuid"), "{error}");
    let deliveries: u32 = entry
        .get::<String>("deliveries")
        .and_then(|d| d.parse().ok())
        .expect("deliveries");
    assert!(
        deliveries >= 3,
        "dead-lettered after its deliveries: {deliveries}"
    );
    eventually("nothing pending", Duration::from_secs(10), || async {
        pending_count(&mut app.redis().await, &keys.stream).await == 0
    })
    .await;
    let ids: HashSet<String> = app
        .orders_of_campaign(campaign)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, reserved);
    assert_eq!(
        app.metric("pulse_ordering_reservations_dead_lettered_total")
            .await,
        1.0
    );
    // Later reservations keep flowing.
    let (status, body, _) = app
        .seckill(&app.token("late-comer", &["patient"]), campaign)
        .await;
    assert_eq!(status, 202);
    let late = body["orderId"].as_str().expect("id").to_owned();
    eventually(
        "the late reservation is an order",
        Duration::from_secs(10),
        || async { app.order_status(&late).await.is_some() },
    )
    .await;
}

/// Reservations read together become orders in one transaction; when the database refuses one
/// of them, the batch falls back to one transaction each, so the others still become orders.
#[tokio::test]
async fn a_batch_with_a_reservation_the_database_refuses_still_makes_the_others_orders() {
    let app = TestApp::start_with(Options {
        settings: Box::new(|s| {
            s.reservations.claim_idle = Duration::from_millis(200);
            s.reservations.max_deliveries = 2;
        }),
        ..Options::default()
    })
    .await;
    let campaign = "refused";
    app.campaign(campaign, 50, 1).await;
    let keys = app.keys(campaign);
    let entry = |order: &str, user: &str| {
        vec![
            ("order".to_owned(), order.to_owned()),
            ("user".to_owned(), user.to_owned()),
            ("campaign".to_owned(), campaign.to_owned()),
            ("price".to_owned(), "100".to_owned()),
            ("currency".to_owned(), "EUR".to_owned()),
            (
                "at".to_owned(),
                chrono::Utc::now().timestamp_millis().to_string(),
            ),
        ]
    };
    let good: Vec<String> = (0..20).map(|_| pulse_kit::new_id().to_string()).collect();
    let refused = pulse_kit::new_id().to_string();
    // All in one MULTI, so the consumer reads them in one batch. PostgreSQL refuses text
    // holding a NUL byte, which the reservation's format allows.
    let mut pipe = redis::pipe();
    pipe.atomic();
    for (i, order) in good.iter().enumerate() {
        pipe.xadd(&keys.stream, "*", &entry(order, &format!("buyer-{i}")))
            .ignore();
        if i == 10 {
            pipe.xadd(&keys.stream, "*", &entry(&refused, "nul\0byte"))
                .ignore();
        }
    }
    let mut redis = app.redis().await;
    let () = pipe.query_async(&mut redis).await.expect("xadd");
    let entry = orders_and_one_dead_letter(&app, campaign, &keys.dead, 20).await;
    assert_eq!(entry.get::<String>("order"), Some(refused.clone()));
    let error: String = entry.get("error").expect("error");
    assert!(error.contains("refused by the database"), "{error}");
    let ids: HashSet<String> = app
        .orders_of_campaign(campaign)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, good.into_iter().collect::<HashSet<_>>());
    eventually("nothing pending", Duration::from_secs(10), || async {
        pending_count(&mut app.redis().await, &keys.stream).await == 0
    })
    .await;
}

/// A batch of reservations is written in one statement per table: a reservation delivered
/// twice in it is one order, a free one is paid at once, and each order has its events once, in
/// the batch's order.
#[tokio::test]
async fn a_batch_makes_each_reservation_one_order_with_its_events_once() {
    let app = TestApp::start().await;
    let campaign = "batched";
    app.campaign(campaign, 50, 1).await;
    let keys = app.keys(campaign);
    let entry = |order: &str, user: &str, price: &str| {
        vec![
            ("order".to_owned(), order.to_owned()),
            ("user".to_owned(), user.to_owned()),
            ("campaign".to_owned(), campaign.to_owned()),
            ("price".to_owned(), price.to_owned()),
            ("currency".to_owned(), "EUR".to_owned()),
            (
                "at".to_owned(),
                chrono::Utc::now().timestamp_millis().to_string(),
            ),
        ]
    };
    let orders: Vec<String> = (0..12).map(|_| pulse_kit::new_id().to_string()).collect();
    // All in one MULTI, so the consumer reads them in one batch: order 3 twice, order 11 free.
    let mut pipe = redis::pipe();
    pipe.atomic();
    for (i, order) in orders.iter().enumerate() {
        let price = if i == 11 { "0" } else { "100" };
        pipe.xadd(
            &keys.stream,
            "*",
            &entry(order, &format!("buyer-{i}"), price),
        )
        .ignore();
        if i == 3 {
            pipe.xadd(&keys.stream, "*", &entry(order, "buyer-3", price))
                .ignore();
        }
    }
    let mut redis = app.redis().await;
    let () = pipe.query_async(&mut redis).await.expect("xadd");
    eventually("nothing pending", Duration::from_secs(10), || async {
        pending_count(&mut app.redis().await, &keys.stream).await == 0
            && app.orders_of_campaign(campaign).await.len() == orders.len()
    })
    .await;
    let made: Vec<(String, String)> =
        sqlx::query_as("SELECT id::text, status FROM ordering.orders WHERE campaign_id = $1")
            .bind(campaign)
            .fetch_all(&app.pool)
            .await
            .expect("orders");
    let made: std::collections::HashMap<String, String> = made.into_iter().collect();
    for (i, order) in orders.iter().enumerate() {
        let expected = if i == 11 { "PAID" } else { "PENDING_PAYMENT" };
        assert_eq!(
            made.get(order).map(String::as_str),
            Some(expected),
            "order {i}"
        );
    }
    let events: Vec<(String, String)> = sqlx::query_as(
        "SELECT partition_key, event_type FROM ordering.outbox
         WHERE partition_key = ANY($1) ORDER BY id",
    )
    .bind(&orders)
    .fetch_all(&app.pool)
    .await
    .expect("events");
    let mut expected: Vec<(String, String)> = orders
        .iter()
        .map(|order| (order.clone(), "OrderCreated".to_owned()))
        .collect();
    expected.push((orders[11].clone(), "OrderPaid".to_owned()));
    assert_eq!(events, expected, "each order's events once, in order");
}

/// Waits until `campaign` has `orders` orders and its dead-letter stream `dead` one entry;
/// returns that entry.
async fn orders_and_one_dead_letter(
    app: &TestApp,
    campaign: &str,
    dead: &str,
    orders: usize,
) -> redis::streams::StreamId {
    eventually(
        "the good reservations are orders",
        Duration::from_secs(30),
        || async { app.orders_of_campaign(campaign).await.len() == orders },
    )
    .await;
    eventually(
        "one entry is dead-lettered",
        Duration::from_secs(30),
        || async {
            let n: usize = app.redis().await.xlen(dead).await.unwrap_or(0);
            n == 1
        },
    )
    .await;
    let letters: redis::streams::StreamRangeReply = app
        .redis()
        .await
        .xrange_all(dead)
        .await
        .expect("dead letters");
    letters.ids.into_iter().next().expect("a dead letter")
}

async fn buyers(app: &TestApp, campaign: &str) -> std::collections::HashMap<String, i64> {
    app.redis()
        .await
        .hgetall(&app.keys(campaign).buyers)
        .await
        .expect("buyers")
}

async fn redis_stock(app: &TestApp, campaign: &str) -> String {
    app.redis()
        .await
        .get(&app.keys(campaign).stock)
        .await
        .expect("stock")
}

fn short_timeout() -> CountryConfig {
    france(2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unpaid_seckill_order_is_cancelled_and_the_same_user_can_buy_again() {
    let app = TestApp::start_with(Options {
        country: short_timeout(),
        ..Options::default()
    })
    .await;
    let campaign = "timeout";
    app.campaign(campaign, 1, 1).await;
    let alice = app.token("alice", &["patient"]);
    let bob = app.token("bob", &["patient"]);
    let (status, first, _) = app.seckill(&alice, campaign).await;
    assert_eq!(status, 202);
    let first_order = first["orderId"].as_str().expect("id").to_owned();
    let (status, body, _) = app.seckill(&bob, campaign).await;
    assert_eq!((status, kind(&body).as_str()), (409, "seckill-sold-out"));
    let (status, body, _) = app.seckill(&alice, campaign).await;
    assert_eq!(
        (status, kind(&body).as_str()),
        (409, "seckill-already-bought")
    );
    eventually("the order exists", Duration::from_secs(10), || async {
        app.order_status(&first_order).await.as_deref() == Some("PENDING_PAYMENT")
    })
    .await;
    let (status, order) = app.get(&alice, &format!("/v1/orders/{first_order}")).await;
    assert_eq!(status, 200);
    assert_eq!(order["status"], "PENDING_PAYMENT");
    assert_eq!(order["kind"], "SECKILL");
    assert_eq!(order["amountMinor"], 100);

    // Unpaid past the timeout: cancelled, the stock and the buyer's slot come back.
    eventually("cancelled", Duration::from_secs(15), || async {
        app.order_status(&first_order).await.as_deref() == Some("CANCELLED")
    })
    .await;
    eventually("stock given back", Duration::from_secs(15), || async {
        redis_stock(&app, campaign).await == "1"
    })
    .await;
    assert!(!buyers(&app, campaign).await.contains_key("alice"));
    let (_, order) = app.get(&alice, &format!("/v1/orders/{first_order}")).await;
    assert_eq!(order["cancelReason"], "payment-timeout");
    assert_eq!(
        app.outbox_count("ordering", "OrderCancelled", &first_order)
            .await,
        1
    );

    // The same user can buy again.
    let (status, again, _) = app.seckill(&alice, campaign).await;
    assert_eq!(status, 202, "{again}");
    let second_order = again["orderId"].as_str().expect("id").to_owned();
    assert_ne!(second_order, first_order);
    assert_eq!(redis_stock(&app, campaign).await, "0");

    // OrderCancelled of the first order delivered twice more (the same event, and a copy with
    // another id): the stock and the buyers do not move.
    let envelope: Value = sqlx::query_scalar(
        "SELECT envelope FROM ordering.outbox WHERE event_type = 'OrderCancelled' AND partition_key = $1",
    )
    .bind(&first_order)
    .fetch_one(&app.pool)
    .await
    .expect("envelope");
    let mut copy = envelope.clone();
    copy["id"] = Value::String(pulse_kit::new_id().to_string());
    let topic = pulse_kit::kafka::events_topic(&app.keyspace, "ordering");
    let kafka = pulse_kit::kafka::KafkaHandle::new(pulse_kit::testing::kafka_brokers());
    let partition = kafka
        .client()
        .await
        .expect("kafka")
        .partition_client(
            topic.clone(),
            0,
            rskafka::client::partition::UnknownTopicHandling::Retry,
        )
        .await
        .expect("partition");
    for value in [&envelope, &copy] {
        partition
            .produce(
                vec![rskafka::record::Record {
                    key: Some(first_order.as_bytes().to_vec()),
                    value: Some(serde_json::to_vec(value).expect("json")),
                    headers: Default::default(),
                    timestamp: chrono::Utc::now(),
                }],
                rskafka::client::partition::Compression::NoCompression,
            )
            .await
            .expect("produce");
    }
    let copy_id = copy["id"].as_str().expect("id").to_owned();
    eventually(
        "marketing saw the duplicates",
        Duration::from_secs(20),
        || async {
            sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM marketing.consumer_processed_events WHERE event_id = $1::uuid",
        )
        .bind(&copy_id)
        .fetch_one(&app.pool)
        .await
        .unwrap_or(0)
            == 1
        },
    )
    .await;
    assert_eq!(redis_stock(&app, campaign).await, "0", "stock changed once");
    assert_eq!(buyers(&app, campaign).await.get("alice"), Some(&1));
    let (status, body, _) = app.seckill(&bob, campaign).await;
    assert_eq!((status, kind(&body).as_str()), (409, "seckill-sold-out"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unpaid_product_order_is_cancelled_and_its_stock_comes_back() {
    let app = TestApp::start_with(Options {
        country: short_timeout(),
        ..Options::default()
    })
    .await;
    let id = app.product_id(2500, 3).await;
    let buyer = app.token("carol", &["patient"]);
    let (status, order, _) = app
        .order(
            &buyer,
            &serde_json::json!({ "productId": id, "quantity": 2 }),
        )
        .await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["amountMinor"], 5000);
    let (_, p) = app.get(&buyer, &format!("/v1/products/{id}")).await;
    assert_eq!(p["stock"], 1);
    let order_id = order["id"].as_str().expect("id").to_owned();
    eventually("cancelled", Duration::from_secs(15), || async {
        app.order_status(&order_id).await.as_deref() == Some("CANCELLED")
    })
    .await;
    let (_, p) = app.get(&buyer, &format!("/v1/products/{id}")).await;
    assert_eq!(p["stock"], 3, "the stock is back");
    assert_eq!(
        app.outbox_count("ordering", "OrderCancelled", &order_id)
            .await,
        1
    );
    // What the dashboards count: one order placed, the same one cancelled, none paid.
    let reached = |status: &str| format!("pulse_ordering_orders_total{{status=\"{status}\"}}");
    assert_eq!(app.metric(&reached("PENDING_PAYMENT")).await, 1.0);
    assert_eq!(app.metric(&reached("CANCELLED")).await, 1.0);
    assert_eq!(app.metric(&reached("PAID")).await, 0.0);
    // Paying a cancelled order is refused.
    let (status, body) = app
        .post(&buyer, &format!("/v1/orders/{order_id}/pay"))
        .await;
    assert_eq!((status, kind(&body).as_str()), (409, "order-wrong-status"));
}
