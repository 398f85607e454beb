//! A seckill retry gets its reservation back, and Redis's counters are rebuilt from the durable
//! sales (never from the configured stock) when Redis loses them or holds older ones.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use common::{TestApp, kind};
use pulse_kit::redis::RedisHandle;
use pulse_kit::testing::{redis_url, unique};
use pulse_marketing::seckill::{Adopted, Attempt, Counts, LoadSpec, Seckill};
use redis::AsyncCommands;
use uuid::Uuid;

/// The counters of a campaign Redis must know.
async fn loaded_counts(seckill: &Seckill, campaign: &str) -> Counts {
    seckill
        .counts(campaign)
        .await
        .expect("counts")
        .expect("loaded")
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_gets_the_same_reservation() {
    let app = TestApp::start().await;
    app.open("retry", 5, 1).await;
    let alice = app.token("alice", &["patient"]);
    let (status, first, _) = app.seckill_with_key(&alice, "retry", Some("buy-1")).await;
    assert_eq!(status, 202, "{first}");
    let order = first["orderId"].as_str().expect("order id").to_owned();

    // One Redis round trip did it all: the script keeps the key and the user's attempt rate;
    // nothing went to the database, and the edge limit kept no record of its own.
    let records: i64 = sqlx::query_scalar("SELECT count(*) FROM marketing.idempotency_keys")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(
        records, 0,
        "a seckill attempt writes nothing to the database"
    );
    {
        let keys = app.keys("retry");
        let mut redis = app.redis().await;
        let rate: bool = redis.exists(keys.attempts("alice")).await.expect("exists");
        assert!(
            rate,
            "the script keeps alice's attempt rate at the campaign"
        );
        let edge: bool = redis
            .exists(format!("{{rl:{}:sub:alice}}", app.keyspace))
            .await
            .expect("exists");
        assert!(!edge, "the edge limit spent no round trip on the attempt");
    }
    let (status, again, headers) = app.seckill_with_key(&alice, "retry", Some("buy-1")).await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(
        again["orderId"].as_str(),
        Some(order.as_str()),
        "the same reservation"
    );
    assert_eq!(
        headers["location"].to_str().expect("location"),
        format!("/v1/orders/{order}")
    );
    let keys = app.keys("retry");
    let mut redis = app.redis().await;
    let stock: String = redis.get(&keys.stock).await.expect("stock");
    assert_eq!(stock, "4", "the stock went down once");
    let entries: usize = redis.xlen(&keys.stream).await.expect("stream");
    assert_eq!(entries, 1, "one reservation for ordering");
    let buyers: HashMap<String, i64> = redis.hgetall(&keys.buyers).await.expect("buyers");
    assert_eq!(buyers.get("alice"), Some(&1));
    let ttl: i64 = redis
        .pttl(keys.idempotency("alice", "buy-1"))
        .await
        .expect("ttl");
    assert!(ttl > 23 * 3600 * 1000, "kept at least a day ({ttl} ms)");

    // Two attempts used alice's burst; let it refill.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, problem, _) = app.seckill_with_key(&alice, "retry", Some("buy-2")).await;
    assert_eq!(
        (status, kind(&problem).as_str()),
        (409, "seckill-already-bought"),
        "another key is another purchase: the per-user limit holds"
    );
    // The key is the caller's: bob's `buy-1` is his own purchase.
    let (status, bobs, _) = app
        .seckill_with_key(&app.token("bob", &["patient"]), "retry", Some("buy-1"))
        .await;
    assert_eq!(status, 202, "{bobs}");
    assert_ne!(bobs["orderId"].as_str(), Some(order.as_str()));
    // Without a key nothing changes: a second attempt is refused.
    let (status, problem, _) = app.seckill(&app.token("bob", &["patient"]), "retry").await;
    assert_eq!(
        (status, kind(&problem).as_str()),
        (409, "seckill-already-bought")
    );
    let (status, problem, _) = app
        .seckill_with_key(
            &app.token("carl", &["patient"]),
            "retry",
            Some(&"k".repeat(256)),
        )
        .await;
    assert_eq!(
        (status, kind(&problem).as_str()),
        (400, "idempotency-key-invalid")
    );

    // The script alone: the first order id under a key is the answer to every retry.
    let seckill = app.services(&redis_url()).seckill;
    let now = Utc::now();
    let first_id = pulse_kit::new_id();
    assert_eq!(
        seckill
            .reserve_once("retry", "dora", first_id, Some("k"), now)
            .await
            .expect("reserve"),
        Attempt::Reserved
    );
    for _ in 0..3 {
        assert_eq!(
            seckill
                .reserve_once("retry", "dora", pulse_kit::new_id(), Some("k"), now)
                .await
                .expect("retry"),
            Attempt::Replayed(first_id)
        );
    }
    let stock: String = redis.get(&keys.stock).await.expect("stock");
    assert_eq!(stock, "2", "alice, bob and dora: one unit each");
}

async fn insert_sale(app: &TestApp, campaign: &str, buyer: &str, status: &str) -> Uuid {
    let order = pulse_kit::new_id();
    sqlx::query(
        "INSERT INTO marketing.seckill_sales (order_id, campaign_id, buyer_subject, status, cancelled_at, released_at)
         VALUES ($1, $2, $3, $4, CASE WHEN $4 = 'CANCELLED' THEN now() END, CASE WHEN $4 = 'CANCELLED' THEN now() END)",
    )
    .bind(order)
    .bind(campaign)
    .bind(buyer)
    .bind(status)
    .execute(&app.pool)
    .await
    .expect("sale");
    order
}

async fn hash(redis: &mut redis::aio::MultiplexedConnection, key: &str) -> HashMap<String, String> {
    redis.hgetall(key).await.expect("hash")
}

#[tokio::test]
async fn a_campaign_redis_lost_is_rebuilt_from_the_durable_sales_not_from_the_stock() {
    let app = TestApp::start().await;
    let campaign = "lost";
    app.open(campaign, 10, 2).await;
    let unpaid = insert_sale(&app, campaign, "u1", "UNPAID").await;
    insert_sale(&app, campaign, "u1", "PAID").await;
    insert_sale(&app, campaign, "u2", "PAID").await;
    insert_sale(&app, campaign, "u3", "CANCELLED").await;
    let other_unpaid = insert_sale(&app, campaign, "u4", "UNPAID").await;
    let keys = app.keys(campaign);
    let mut redis = app.redis().await;
    let registry = pulse_marketing::reservation::registry_key(&app.keyspace);

    // Redis loses everything of the campaign.
    let mut pipe = redis::pipe();
    for key in keys.all() {
        pipe.del(key).ignore();
    }
    pipe.srem(&registry, campaign).ignore();
    pipe.query_async::<()>(&mut redis).await.expect("lose");

    // Unreachable Redis: nothing is rebuilt (and nothing is written anywhere).
    let down = app.services("redis://127.0.0.1:1");
    assert!(down.campaigns.reload_missing().await.is_err());
    let exists: bool = redis.exists(&keys.meta).await.expect("exists");
    assert!(!exists, "no rebuild while Redis is unreachable");

    // Reachable and missing: rebuilt from the sales. The server's own job may get there first.
    let services = app.services(&redis_url());
    services.campaigns.reload_missing().await.expect("reload");
    let counts = loaded_counts(&services.seckill, campaign).await;
    assert_eq!(
        (counts.total, counts.sold, counts.remaining),
        (10, 4, 6),
        "sold = live sales, not 0"
    );
    let buyers = hash(&mut redis, &keys.buyers).await;
    let expected: HashMap<String, String> = [("u1", "2"), ("u2", "1"), ("u4", "1")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(buyers, expected, "the buyers are the live sales' buyers");
    let orders = hash(&mut redis, &keys.orders).await;
    let expected: HashMap<String, String> = [(unpaid, "u1"), (other_unpaid, "u4")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_owned()))
        .collect();
    assert_eq!(orders, expected, "the unpaid ones can still be given back");
    let members: Vec<String> = redis.smembers(&registry).await.expect("registry");
    assert!(
        members.contains(&campaign.to_owned()),
        "ordering reads it again"
    );
    assert_eq!(
        services.campaigns.reload_missing().await.expect("reload"),
        0,
        "a campaign Redis knows is left alone"
    );

    // The buyers' limits hold; the cancelled buyer may buy again.
    let (status, problem, _) = app.seckill(&app.token("u1", &["patient"]), campaign).await;
    assert_eq!(
        (status, kind(&problem).as_str()),
        (409, "seckill-already-bought")
    );
    let (status, won, _) = app.seckill(&app.token("u3", &["patient"]), campaign).await;
    assert_eq!(status, 202, "{won}");
    let in_flight = won["orderId"].as_str().expect("id").to_owned();

    // Redis comes back from an old snapshot: it counts fewer sales than the durable record.
    // The rebuild merges: the durable sales, plus the reservation only Redis knows (u3's, not
    // yet an order).
    let _: () = redis::pipe()
        .hset(&keys.meta, "sold", 1)
        .set(&keys.stock, 9)
        .del(&keys.buyers)
        .hdel(&keys.orders, unpaid.to_string())
        .query_async(&mut redis)
        .await
        .expect("stale");
    services.campaigns.reload_missing().await.expect("reload");
    let counts = loaded_counts(&services.seckill, campaign).await;
    assert_eq!((counts.sold, counts.remaining), (5, 5));
    let buyers = hash(&mut redis, &keys.buyers).await;
    assert_eq!(buyers.get("u1").map(String::as_str), Some("2"));
    assert_eq!(buyers.get("u3").map(String::as_str), Some("1"));
    assert_eq!(buyers.len(), 4);
    let orders = hash(&mut redis, &keys.orders).await;
    assert_eq!(orders.len(), 3);
    assert_eq!(orders.get(&in_flight).map(String::as_str), Some("u3"));
    assert_eq!(
        orders.get(&unpaid.to_string()).map(String::as_str),
        Some("u1")
    );
}

#[tokio::test]
async fn redis_counts_an_order_whose_reservation_it_lost_and_never_invents_a_campaign() {
    let seckill = Seckill::new(
        RedisHandle::new(&redis_url()).expect("redis url"),
        &unique("adopt"),
    );
    let now = Utc::now();
    let spec = LoadSpec {
        id: "c",
        stock: 1,
        starts_at: now - chrono::Duration::minutes(1),
        ends_at: now + chrono::Duration::hours(1),
        closed: false,
        per_user_limit: 1,
        price_minor: 100,
        currency: "EUR",
    };
    // Nothing is created for a campaign Redis does not know.
    let order = pulse_kit::new_id();
    assert_eq!(
        seckill.adopt("c", &[(order, "ann")]).await.expect("adopt"),
        vec![Adopted::Missing]
    );
    assert!(!seckill.release("c", order).await.expect("release"));
    assert!(seckill.update(&spec).await.expect("update").is_none());
    assert!(!seckill.is_loaded("c").await.expect("loaded"));

    seckill.load(&spec).await.expect("load");
    assert_eq!(
        seckill
            .reserve("c", "ann", order, now)
            .await
            .expect("reserve"),
        Attempt::Reserved
    );
    // In one batch: a reservation Redis has is not counted twice; an order Redis never saw
    // (lost before a rebuild) is counted, even past the stock.
    let lost = pulse_kit::new_id();
    let batch = [(order, "ann"), (lost, "ben")];
    assert_eq!(
        seckill.adopt("c", &batch).await.expect("adopt"),
        vec![Adopted::Known, Adopted::Oversold]
    );
    let counts = loaded_counts(&seckill, "c").await;
    assert_eq!((counts.sold, counts.remaining), (2, 0));
    // The same batch again (an event applied twice) changes nothing.
    assert_eq!(
        seckill.adopt("c", &batch).await.expect("adopt"),
        vec![Adopted::Known, Adopted::Known]
    );
    let counts = loaded_counts(&seckill, "c").await;
    assert_eq!((counts.sold, counts.remaining), (2, 0));
    assert_eq!(
        seckill
            .reserve("c", "ben", pulse_kit::new_id(), now)
            .await
            .expect("reserve"),
        Attempt::AlreadyBought
    );
}
