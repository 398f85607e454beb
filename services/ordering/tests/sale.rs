//! The normal sale against real servers: a crowd on one product, vouchers over gRPC, and the
//! circuit breaker when marketing is unreachable.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use common::{Options, Raw, TestApp, eventually, kind, raw, replayed, tally};
use futures::StreamExt;
use serde_json::{Value, json};

/// One buyer: retries while the product is busy (as a client honouring Retry-After would).
async fn buy(app: &TestApp, token: &str, product: &str) -> (u16, Value) {
    let mut busy = 0;
    loop {
        let (status, body, _) = app
            .order(token, &json!({ "productId": product, "quantity": 1 }))
            .await;
        if status == 503 && kind(&body) == "product-busy" && busy < 50 {
            busy += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        return (status, body);
    }
}

async fn stock(app: &TestApp, product: &str) -> i64 {
    sqlx::query_scalar("SELECT stock::int8 FROM ordering.products WHERE id = $1::uuid")
        .bind(product)
        .fetch_one(&app.pool)
        .await
        .expect("stock")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_buyers_of_fifty_units_make_exactly_fifty_orders() {
    let permits = 8;
    let app = TestApp::start_with(Options {
        settings: Box::new(move |s| {
            s.product_permits = permits;
            s.permit_wait = Duration::from_millis(300);
        }),
        ..Options::without_marketing()
    })
    .await;
    let id = app.product_id(1500, 50).await;
    let tokens: Vec<String> = (0..300)
        .map(|i| app.token(&format!("shopper-{i}"), &["patient"]))
        .collect();

    // Watch the stock while the crowd buys: it never goes below zero.
    let lowest = Arc::new(AtomicI64::new(i64::MAX));
    let racing = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (lowest, racing, pool, id) = (
            Arc::clone(&lowest),
            Arc::clone(&racing),
            app.pool.clone(),
            id.clone(),
        );
        tokio::spawn(async move {
            while racing.load(Ordering::SeqCst) {
                if let Ok(s) = sqlx::query_scalar::<_, i64>(
                    "SELECT stock::int8 FROM ordering.products WHERE id = $1::uuid",
                )
                .bind(&id)
                .fetch_one(&pool)
                .await
                {
                    lowest.fetch_min(s, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let answers: Vec<(u16, Value)> = futures::stream::iter(tokens.iter())
        .map(|token| buy(&app, token, &id))
        .buffer_unordered(300)
        .collect()
        .await;
    racing.store(false, Ordering::SeqCst);
    let _ = watcher.await;

    let statuses = tally(answers.iter().map(|(s, b)| match s {
        201 => "created",
        409 if kind(b) == "out-of-stock" => "out-of-stock",
        _ => panic!("unexpected answer {s}: {b}"),
    }));
    assert_eq!(statuses.get("created"), Some(&50), "{statuses:?}");
    assert_eq!(statuses.get("out-of-stock"), Some(&250), "{statuses:?}");
    assert_eq!(stock(&app, &id).await, 0);
    assert!(
        lowest.load(Ordering::SeqCst) >= 0,
        "the stock never went negative"
    );
    let orders: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ordering.orders WHERE product_id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .expect("orders");
    assert_eq!(orders, 50);
    let created_events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ordering.outbox o JOIN ordering.orders r ON r.id::text = o.partition_key
         WHERE o.event_type = 'OrderCreated' AND r.product_id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&app.pool)
    .await
    .expect("events");
    assert_eq!(created_events, 50, "one OrderCreated per order");
    // The permits held the crowd back: never more than `permits` buyers in the transaction.
    let most = app.metric("pulse_ordering_stock_writers_max").await;
    assert!(
        most >= 1.0 && most <= f64::from(permits),
        "at most {permits} at once, saw {most}"
    );
    // Every permit was given back (a release Redis failed is retried in the background).
    no_permit_leaked(&app, &id).await;
}

async fn no_permit_leaked(app: &TestApp, product: &str) {
    let key = format!("{{ordering:{}}}:permits:{product}", app.keyspace);
    eventually("no permit leaked", Duration::from_secs(15), || async {
        let held: i64 = redis::AsyncCommands::zcard(&mut app.redis().await, &key)
            .await
            .expect("permit holders");
        held == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_marketing_unreachable_the_breaker_opens_and_orders_without_a_voucher_go_through() {
    // Marketing never answers: a socket that takes connections and says nothing, so every
    // call to it lasts its whole deadline (a machine's load can make a request slow, never
    // make it fast).
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let marketing = format!("http://{}", black_hole.local_addr().expect("address"));
    let deadline = Duration::from_secs(1);
    let app = TestApp::start_with(Options {
        settings: Box::new(move |s| {
            s.marketing_grpc_url = marketing;
            s.marketing_timeout = deadline;
            s.marketing_retries = 1;
            s.marketing_breaker.failure_threshold = 3;
            s.marketing_breaker.open_for = Duration::from_secs(60);
        }),
        ..Options::without_marketing()
    })
    .await;
    let id = app.product_id(900, 20).await;
    let buyer = app.token("ivy", &["patient"]);
    let with_voucher = json!({ "productId": id, "voucherId": pulse_kit::new_id() });

    // Failing calls (retried once each) open the breaker.
    let started = Instant::now();
    let (status, first, headers) = app.order(&buyer, &with_voucher).await;
    let slow = started.elapsed();
    assert_eq!(
        (status, kind(&first).as_str()),
        (503, "marketing-unavailable"),
        "{first}"
    );
    assert!(headers.contains_key("retry-after"));
    assert!(slow >= deadline, "marketing was waited for ({slow:?})");
    let (status, second, _) = app.order(&buyer, &with_voucher).await;
    assert_eq!(status, 503, "{second}");
    // Open: answered at once, without calling marketing.
    let started = Instant::now();
    let (status, open, headers) = app.order(&buyer, &with_voucher).await;
    let fast = started.elapsed();
    assert_eq!(
        (status, kind(&open).as_str()),
        (503, "marketing-circuit-open"),
        "{open}"
    );
    assert!(
        fast < deadline,
        "an open breaker answers without waiting for marketing ({fast:?})"
    );
    let retry: u64 = headers["retry-after"]
        .to_str()
        .expect("text")
        .parse()
        .expect("secs");
    assert!((1..=61).contains(&retry));
    assert_eq!(
        app.metric("pulse_ordering_marketing_breaker_open").await,
        1.0
    );
    // Nothing was taken for the refused orders.
    assert_eq!(stock(&app, &id).await, 20);

    // Orders without a voucher never call marketing: they go through.
    for _ in 0..5 {
        let (status, order, _) = app.order(&buyer, &json!({ "productId": id })).await;
        assert_eq!(status, 201, "{order}");
        assert_eq!(order["discountMinor"], 0);
    }
    assert_eq!(stock(&app, &id).await, 15);
    drop(black_hole);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_voucher_takes_its_value_off_once_and_comes_back_when_the_order_dies() {
    let app = TestApp::start().await;
    // A voucher in the wallet: won in a seckill, paid through the sandbox.
    app.campaign("vouchers", 5, 1).await;
    let jane = app.token("jane", &["patient"]);
    let (status, won, _) = app.seckill(&jane, "vouchers").await;
    assert_eq!(status, 202);
    let seckill_order = won["orderId"].as_str().expect("id").to_owned();
    eventually("the seckill order", Duration::from_secs(10), || async {
        app.order_status(&seckill_order).await.is_some()
    })
    .await;
    let (status, _) = app
        .post(&jane, &format!("/v1/orders/{seckill_order}/pay"))
        .await;
    assert_eq!(status, 200);
    eventually("the voucher is issued", Duration::from_secs(20), || async {
        let (_, wallet) = app.get(&jane, "/v1/vouchers").await;
        wallet["items"][0]["id"].is_string()
    })
    .await;
    let (_, wallet) = app.get(&jane, "/v1/vouchers").await;
    let voucher = wallet["items"][0]["id"]
        .as_str()
        .expect("voucher")
        .to_owned();

    let pid = app.product_id(2500, 2).await;
    // Someone else's voucher is refused.
    let (status, problem, _) = app
        .order(
            &app.token("kim", &["patient"]),
            &json!({ "productId": pid, "voucherId": voucher }),
        )
        .await;
    assert_eq!((status, kind(&problem).as_str()), (422, "voucher-rejected"));
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("someone else")
    );

    // A voucher that does not exist is not found, like an unknown product.
    let (status, problem, _) = app
        .order(
            &jane,
            &json!({ "productId": pid, "voucherId": uuid::Uuid::new_v4() }),
        )
        .await;
    assert_eq!(
        (status, kind(&problem).as_str()),
        (404, "voucher-not-found")
    );
    assert_eq!(problem["field"], "voucherId");

    let (status, order, _) = app
        .order(&jane, &json!({ "productId": pid, "voucherId": voucher }))
        .await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(
        (
            order["subtotalMinor"].as_i64(),
            order["discountMinor"].as_i64(),
            order["amountMinor"].as_i64()
        ),
        (Some(2500), Some(1000), Some(1500))
    );
    let order_id = order["id"].as_str().expect("id").to_owned();
    eventually("the voucher is used", Duration::from_secs(15), || async {
        app.get(&jane, &format!("/v1/vouchers/{voucher}")).await.1["status"] == "USED"
    })
    .await;
    // Used once only.
    let (status, problem, _) = app
        .order(&jane, &json!({ "productId": pid, "voucherId": voucher }))
        .await;
    assert_eq!((status, kind(&problem).as_str()), (422, "voucher-rejected"));

    // The order dies: the voucher comes back and can be used again.
    let (status, cancelled) = app
        .post(&jane, &format!("/v1/orders/{order_id}/cancel"))
        .await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (200, Some("CANCELLED"))
    );
    eventually("the voucher is back", Duration::from_secs(15), || async {
        app.get(&jane, &format!("/v1/vouchers/{voucher}")).await.1["status"] == "AVAILABLE"
    })
    .await;
    let (status, again, _) = app
        .order(
            &jane,
            &json!({ "productId": pid, "voucherId": voucher, "quantity": 2 }),
        )
        .await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["amountMinor"], 4000);

    // An order that cannot happen (no stock left) gives the voucher back at once.
    let other_product = app.product(500, 0).await;
    let (status, _) = app
        .post(
            &app.admin(),
            &format!("/v1/orders/{}/refund", again["id"].as_str().expect("id")),
        )
        .await;
    assert_eq!(status, 409, "an unpaid order is not refundable");
    let again_id = again["id"].as_str().expect("id").to_owned();
    let (status, _) = app
        .post(&jane, &format!("/v1/orders/{again_id}/cancel"))
        .await;
    assert_eq!(status, 200);
    eventually(
        "the voucher is back again",
        Duration::from_secs(15),
        || async {
            app.get(&jane, &format!("/v1/vouchers/{voucher}")).await.1["status"] == "AVAILABLE"
        },
    )
    .await;
    let (status, problem, _) = app
        .order(
            &jane,
            &json!({ "productId": other_product["id"], "voucherId": voucher }),
        )
        .await;
    assert_eq!((status, kind(&problem).as_str()), (409, "out-of-stock"));
    let (_, v) = app.get(&jane, &format!("/v1/vouchers/{voucher}")).await;
    assert_eq!(v["status"], "AVAILABLE", "released right away: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_orders_are_problems_and_write_nothing() {
    let app = TestApp::start_with(Options::without_marketing()).await;
    let id = app.product_id(100, 5).await;
    let buyer = app.token("leo", &["patient"]);
    let cases = [
        (json!({ "productId": id, "quantity": 0 }), 422),
        (json!({ "productId": id, "quantity": 101 }), 422),
        (json!({ "productId": "nope" }), 422),
        (json!({ "productId": id, "colour": "red" }), 422),
        (json!({ "productId": pulse_kit::new_id() }), 404),
        (json!({ "productId": id, "quantity": 6 }), 409),
    ];
    for (body, expected) in cases {
        let (status, problem, headers) = app.order(&buyer, &body).await;
        assert_eq!(status, expected, "{body} → {problem}");
        assert_eq!(headers["content-type"], "application/problem+json");
    }
    // Without an Idempotency-Key, or a token.
    let response = app
        .client
        .post(format!("{}/v1/orders", app.base))
        .bearer_auth(&buyer)
        .json(&json!({ "productId": id }))
        .send()
        .await
        .expect("order");
    assert_eq!(response.status(), 400);
    let response = app
        .client
        .post(format!("{}/v1/orders", app.base))
        .header("Idempotency-Key", "k1")
        .json(&json!({ "productId": id }))
        .send()
        .await
        .expect("order");
    assert_eq!(response.status(), 401);
    // Products are admin business.
    let response = app
        .client
        .post(format!("{}/v1/products", app.base))
        .bearer_auth(&buyer)
        .json(&json!({ "name": "x", "priceMinor": 1, "stock": 1 }))
        .send()
        .await
        .expect("product");
    assert_eq!(response.status(), 403);
    assert_eq!(stock(&app, &id).await, 5);
    assert_eq!(app.count("SELECT count(*) FROM ordering.orders").await, 0);
    // Someone else's order is not found.
    let (status, order, _) = app.order(&buyer, &json!({ "productId": id })).await;
    assert_eq!(status, 201);
    let (status, _) = app
        .get(
            &app.token("mia", &["patient"]),
            &format!("/v1/orders/{}", order["id"].as_str().expect("id")),
        )
        .await;
    assert_eq!(status, 404);
    let (status, problem) = app.get(&buyer, "/v1/orders/not-a-uuid").await;
    assert_eq!((status, problem["field"].as_str()), (400, Some("id")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicates_of_an_order_make_one_order_and_answer_it_byte_for_byte() {
    let app = TestApp::start_with(Options::without_marketing()).await;
    let id = app.product_id(1200, 10).await;
    let buyer = app.token("nina", &["patient"]);
    let key = pulse_kit::new_id().to_string();
    let body = json!({ "productId": id, "quantity": 1 });

    // A client retrying over and over while its first request still runs. So that every
    // duplicate gets past the idempotency lookup before any of them commits, the test holds
    // the product's row lock until all of them wait for it in their stock update: then one
    // commits, and each of the others takes the stock in its own transaction, collides with
    // the first one's record on commit's doorstep and rolls back.
    let duplicates: i64 = 8;
    let requests = futures::future::join_all(
        (0..duplicates).map(|_| raw(app.order_request(&buyer, &key, &body))),
    );
    let answers: Vec<Raw> = app
        .while_row_locked(
            "ordering.products",
            &id,
            duplicates,
            "every duplicate waits for the stock",
            requests,
        )
        .await;

    for (status, _, bytes) in &answers {
        assert_eq!(*status, 201, "{}", String::from_utf8_lossy(bytes));
    }
    let first = answers
        .iter()
        .filter(|(_, headers, _)| !replayed(headers))
        .collect::<Vec<_>>();
    assert_eq!(first.len(), 1, "one request ran, the others were replayed");
    let (_, first_headers, first_body) = first[0];
    for (_, headers, bytes) in &answers {
        assert_eq!(
            bytes, first_body,
            "every answer is the first, byte for byte"
        );
        assert_eq!(headers["location"], first_headers["location"]);
        assert_eq!(headers["content-type"], "application/json");
    }
    let order: Value = serde_json::from_slice(first_body).expect("json");
    assert_eq!(
        first_headers["location"].to_str().ok(),
        Some(format!("/v1/orders/{}", order["id"].as_str().expect("id")).as_str())
    );

    // One order, one stock unit, one event; the losers' transactions left nothing behind.
    assert_eq!(app.count("SELECT count(*) FROM ordering.orders").await, 1);
    assert_eq!(stock(&app, &id).await, 9);
    let created_events = app
        .count("SELECT count(*) FROM ordering.outbox WHERE event_type = 'OrderCreated'")
        .await;
    assert_eq!(created_events, 1);
    no_permit_leaked(&app, &id).await;

    // Later, the same key still answers the same order; another body with it is refused.
    let (status, headers, bytes) = raw(app.order_request(&buyer, &key, &body)).await;
    assert_eq!((status, replayed(&headers)), (201, true));
    assert_eq!(&bytes, first_body);
    let (status, _, bytes) =
        raw(app.order_request(&buyer, &key, &json!({ "productId": id, "quantity": 2 }))).await;
    let problem: Value = serde_json::from_slice(&bytes).expect("problem");
    assert_eq!(
        (status, kind(&problem).as_str()),
        (422, "idempotency-key-reused")
    );
    assert_eq!(stock(&app, &id).await, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_buyer_without_a_token_gets_401_whatever_the_body_or_the_key() {
    let app = TestApp::start_with(Options::without_marketing()).await;
    let id = app.product_id(100, 5).await;
    let order = format!("{}/v1/orders", app.base);
    let bodies = [
        json!({ "productId": id }),
        json!({}),
        json!({ "productId": "nope", "quantity": 0 }),
        json!([1, 2, 3]),
    ];
    let keys = [None, Some("k-1"), Some("")];
    let tokens = [None, Some("not-a-jwt")];
    for body in &bodies {
        for key in keys {
            for token in tokens {
                let mut request = app.client.post(&order).json(body);
                if let Some(key) = key {
                    request = request.header("Idempotency-Key", key);
                }
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                let (status, headers, bytes) = raw(request).await;
                assert_eq!(
                    status,
                    401,
                    "{body} key {key:?} token {token:?}: {}",
                    String::from_utf8_lossy(&bytes)
                );
                assert_eq!(headers["content-type"], "application/problem+json");
            }
        }
    }
    // Not JSON at all.
    let (status, _, _) = raw(app
        .client
        .post(&order)
        .header("Idempotency-Key", "k-2")
        .header("content-type", "application/json")
        .body("{not json"))
    .await;
    assert_eq!(status, 401);
    // The other buyer endpoints too.
    let ghost = pulse_kit::new_id();
    for action in ["pay", "cancel"] {
        let (status, _, _) = raw(app
            .client
            .post(format!("{}/v1/orders/{ghost}/{action}", app.base))
            .header("Idempotency-Key", "k-3"))
        .await;
        assert_eq!(status, 401, "{action}");
    }
    assert_eq!(app.count("SELECT count(*) FROM ordering.orders").await, 0);
    assert_eq!(stock(&app, &id).await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn products_are_admin_business_before_their_body_is_even_read() {
    let app = TestApp::start_with(Options::without_marketing()).await;
    let id = app.product_id(100, 5).await;
    let buyer = app.token("otto", &["patient"]);
    let products = format!("{}/v1/products", app.base);
    let one = format!("{products}/{id}");

    // A non-admin: 403, whatever the body (even an empty object that would be a 422).
    for body in [
        json!({}),
        json!({ "name": "", "priceMinor": -1 }),
        json!("x"),
    ] {
        for with_key in [false, true] {
            let create = app.client.post(&products).bearer_auth(&buyer).json(&body);
            let update = app.client.put(&one).bearer_auth(&buyer).json(&body);
            for mut request in [create, update] {
                if with_key {
                    request = request.header("Idempotency-Key", pulse_kit::new_id().to_string());
                }
                let (status, _, bytes) = raw(request).await;
                let problem: Value = serde_json::from_slice(&bytes).expect("problem");
                assert_eq!(status, 403, "{body}: {problem}");
            }
        }
    }
    // Without a token: 401; an admin with the empty object: the validation's 422.
    let (status, _, _) = raw(app.client.post(&products).json(&json!({}))).await;
    assert_eq!(status, 401);
    let (status, _, _) = raw(app
        .client
        .post(&products)
        .bearer_auth(app.admin())
        .json(&json!({})))
    .await;
    assert_eq!(status, 422);
    let count = app.count("SELECT count(*) FROM ordering.products").await;
    assert_eq!(count, 1, "nothing was created");

    // An admin retrying a creation with its key gets the first product back, byte for byte.
    let key = pulse_kit::new_id().to_string();
    let create = || {
        app.post_with_key(&app.admin(), "/v1/products", &key)
            .json(&json!({ "name": "Desk", "priceMinor": 9900, "stock": 3 }))
    };
    let (status, headers, first) = raw(create()).await;
    assert_eq!((status, replayed(&headers)), (201, false));
    let (status, again_headers, again) = raw(create()).await;
    assert_eq!((status, replayed(&again_headers)), (201, true));
    assert_eq!(again, first);
    assert_eq!(again_headers["location"], headers["location"]);
    let count = app.count("SELECT count(*) FROM ordering.products").await;
    assert_eq!(count, 2, "one product for the two requests");
}
