//! Payments against real servers: the sandbox's signed webhooks, the webhook's checks and
//! idempotency, refunds, and the Stripe-compatible adapter against a local fake of the API.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::post;
use common::{Options, TestApp, WEBHOOK_SECRET, eventually, kind, raw};
use futures::StreamExt;
use pulse_ordering::payments::signature;
use pulse_ordering::settings::{OrderingSettings, PaymentSettings};
use serde_json::{Value, json};

fn checkout_completed(event_id: &str, order: &str, amount: i64) -> String {
    json!({
        "id": event_id,
        "object": "event",
        "type": "checkout.session.completed",
        "data": {"object": {
            "id": format!("cs_test_{order}"),
            "object": "checkout.session",
            "client_reference_id": order,
            "payment_intent": format!("pi_test_{order}"),
            "payment_status": "paid",
            "amount_total": amount,
            "currency": "eur",
        }}
    })
    .to_string()
}

async fn send_webhook(app: &TestApp, body: &str, header: Option<String>) -> (u16, Value) {
    let mut request = app
        .client
        .post(format!("{}/v1/payments/webhook", app.base))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(header) = header {
        request = request.header("Stripe-Signature", header);
    }
    let response = request.send().await.expect("webhook");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn signed(body: &str, at: i64) -> Option<String> {
    Some(signature::header(
        &[WEBHOOK_SECRET.as_bytes()],
        at,
        body.as_bytes(),
    ))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A sandbox that never pays by itself (the test sends the webhooks).
fn sandbox_never_pays(settings: &mut OrderingSettings) {
    settings.payment = PaymentSettings::Sandbox {
        webhook_url: "http://127.0.0.1:9/unused".into(),
        return_url: "/#/orders/{ORDER_ID}".into(),
        auto_pay_after: None,
    };
}

/// A product order waiting for its payment: (order id, amount).
async fn pending_order(app: &TestApp, buyer: &str) -> (String, i64) {
    let product = app.product(1999, 10).await;
    let (status, order, _) = app
        .order(buyer, &json!({ "productId": product["id"], "quantity": 1 }))
        .await;
    assert_eq!(status, 201, "{order}");
    (
        order["id"].as_str().expect("id").to_owned(),
        order["amountMinor"].as_i64().expect("amount"),
    )
}

async fn paid_at(app: &TestApp, order: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    sqlx::query_scalar("SELECT paid_at FROM ordering.orders WHERE id = $1::uuid")
        .bind(order)
        .fetch_one(&app.pool)
        .await
        .expect("paid_at")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_stale_or_unknown_webhooks_change_nothing_and_a_repeated_event_changes_once() {
    let app = TestApp::start_with(Options {
        // The sandbox is not used here; keep it from paying anything by itself.
        settings: Box::new(sandbox_never_pays),
        ..Options::default()
    })
    .await;
    let buyer = app.token("dave", &["patient"]);
    let (order, amount) = pending_order(&app, &buyer).await;
    let body = checkout_completed("evt_1", &order, amount);

    // Signed with another secret.
    let forged = Some(signature::header(
        &[b"whsec_someone_else"],
        now(),
        body.as_bytes(),
    ));
    let (status, problem) = send_webhook(&app, &body, forged).await;
    assert_eq!(
        (status, kind(&problem).as_str()),
        (400, "webhook-signature-invalid")
    );
    // Correctly signed, but 301 s old (a replay).
    let (status, problem) = send_webhook(&app, &body, signed(&body, now() - 301)).await;
    assert_eq!(
        (status, kind(&problem).as_str()),
        (400, "webhook-signature-stale")
    );
    // No signature at all.
    let (status, problem) = send_webhook(&app, &body, None).await;
    assert_eq!(
        (status, kind(&problem).as_str()),
        (400, "webhook-signature-invalid")
    );
    // The body changed after signing.
    let header = signed(&body, now());
    let tampered = body.replace(&amount.to_string(), "1");
    let (status, _) = send_webhook(&app, &tampered, header).await;
    assert_eq!(status, 400);
    // Properly signed, for an order that does not exist.
    let ghost = checkout_completed("evt_ghost", &pulse_kit::new_id().to_string(), amount);
    let (status, problem) = send_webhook(&app, &ghost, signed(&ghost, now())).await;
    assert_eq!(
        (status, kind(&problem).as_str()),
        (404, "webhook-unknown-order")
    );
    // Not an event.
    let junk = r#"{"hello":"world"}"#;
    let (status, problem) = send_webhook(&app, junk, signed(junk, now())).await;
    assert_eq!(
        (status, kind(&problem).as_str()),
        (400, "webhook-malformed")
    );

    assert_eq!(
        app.order_status(&order).await.as_deref(),
        Some("PENDING_PAYMENT")
    );
    assert_eq!(app.outbox_count("ordering", "OrderPaid", &order).await, 0);
    let recorded = app
        .count("SELECT count(*) FROM ordering.payment_events")
        .await;
    assert_eq!(recorded, 0, "refused webhooks record nothing");
    assert!(app.metric("pulse_ordering_webhooks_refused_total").await >= 6.0);

    // The real event, delivered 20 times at once (a provider retrying): one change.
    let answers: Vec<(u16, Value)> = futures::stream::iter(0..20)
        .map(|_| {
            let header = signed(&body, now());
            let app = &app;
            let body = &body;
            async move { send_webhook(app, body, header).await }
        })
        .buffer_unordered(20)
        .collect()
        .await;
    let outcomes: Vec<&str> = answers
        .iter()
        .map(|(s, b)| {
            assert_eq!(*s, 200, "{b}");
            b["outcome"].as_str().unwrap_or_default()
        })
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| **o == "paid").count(),
        1,
        "{outcomes:?}"
    );
    assert!(
        outcomes.iter().all(|o| *o == "paid" || *o == "duplicate"),
        "{outcomes:?}"
    );
    assert_eq!(app.order_status(&order).await.as_deref(), Some("PAID"));
    assert_eq!(app.outbox_count("ordering", "OrderPaid", &order).await, 1);
    let first_paid_at = paid_at(&app, &order).await;

    // The same event later, and another event for the same payment: nothing moves.
    let (status, ack) = send_webhook(&app, &body, signed(&body, now())).await;
    assert_eq!((status, ack["outcome"].as_str()), (200, Some("duplicate")));
    let other = checkout_completed("evt_2", &order, amount);
    let (status, ack) = send_webhook(&app, &other, signed(&other, now())).await;
    assert_eq!(
        (status, ack["outcome"].as_str()),
        (200, Some("already-paid"))
    );
    assert_eq!(app.outbox_count("ordering", "OrderPaid", &order).await, 1);
    assert_eq!(paid_at(&app, &order).await, first_paid_at);

    // A key rotation: the provider signs with the old and the new secret.
    let (order2, amount2) = pending_order(&app, &buyer).await;
    let rotated = checkout_completed("evt_3", &order2, amount2);
    let header = signature::header(
        &[b"whsec_retired_secret_00", WEBHOOK_SECRET.as_bytes()],
        now(),
        rotated.as_bytes(),
    );
    let (status, ack) = send_webhook(&app, &rotated, Some(header)).await;
    assert_eq!((status, ack["outcome"].as_str()), (200, Some("paid")));

    // A payment of another amount is recorded but does not mark the order paid.
    let (order3, amount3) = pending_order(&app, &buyer).await;
    let short = checkout_completed("evt_4", &order3, amount3 - 1);
    let (status, ack) = send_webhook(&app, &short, signed(&short, now())).await;
    assert_eq!(
        (status, ack["outcome"].as_str()),
        (200, Some("amount-mismatch"))
    );
    assert_eq!(
        app.order_status(&order3).await.as_deref(),
        Some("PENDING_PAYMENT")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sandbox_pays_by_signed_webhook_and_the_voucher_lands_in_the_wallet() {
    let app = TestApp::start().await;
    let campaign = "wallet";
    app.campaign(campaign, 10, 1).await;
    let erin = app.token("erin", &["patient"]);
    let (status, won, _) = app.seckill(&erin, campaign).await;
    assert_eq!(status, 202);
    let order = won["orderId"].as_str().expect("id").to_owned();
    eventually("the order exists", Duration::from_secs(10), || async {
        app.order_status(&order).await.is_some()
    })
    .await;
    // Someone else cannot pay it, or see it.
    let (status, _) = app
        .post(
            &app.token("frank", &["patient"]),
            &format!("/v1/orders/{order}/pay"),
        )
        .await;
    assert_eq!(status, 404);
    let (status, started) = app.post(&erin, &format!("/v1/orders/{order}/pay")).await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(started["provider"], "sandbox");
    // Starting again answers the same checkout.
    let (_, again) = app.post(&erin, &format!("/v1/orders/{order}/pay")).await;
    assert_eq!(again["sessionId"], started["sessionId"]);

    eventually(
        "paid by the sandbox's webhook",
        Duration::from_secs(10),
        || async { app.order_status(&order).await.as_deref() == Some("PAID") },
    )
    .await;
    let outcome: String =
        sqlx::query_scalar("SELECT outcome FROM ordering.payment_events WHERE order_id = $1::uuid")
            .bind(&order)
            .fetch_one(&app.pool)
            .await
            .expect("recorded");
    assert_eq!(outcome, "paid");
    // OrderPaid reaches marketing, which issues the voucher into the wallet.
    let mut wallet = Value::Null;
    for _ in 0..200 {
        let (status, body) = app.get(&erin, "/v1/vouchers").await;
        assert_eq!(status, 200);
        if body["items"]
            .as_array()
            .is_some_and(|items| !items.is_empty())
        {
            wallet = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let items = wallet["items"].as_array().expect("a voucher arrived");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["status"], "AVAILABLE");
    assert_eq!(items[0]["valueMinor"], 1000);
    assert_eq!(items[0]["boughtWithOrderId"], order);
    assert_eq!(
        app.outbox_count(
            "marketing",
            "VoucherIssued",
            items[0]["id"].as_str().expect("id")
        )
        .await,
        1
    );
    // A paid reservation is no longer given back.
    let unpaid: bool =
        redis::AsyncCommands::hexists(&mut app.redis().await, &app.keys(campaign).orders, &order)
            .await
            .expect("hexists");
    assert!(!unpaid);

    // Only an admin refunds; the order becomes REFUNDED and the voucher is taken back.
    let (status, _) = app.post(&erin, &format!("/v1/orders/{order}/refund")).await;
    assert_eq!(status, 403);
    let (status, refunded) = app
        .post(&app.admin(), &format!("/v1/orders/{order}/refund"))
        .await;
    assert_eq!(status, 200, "{refunded}");
    assert_eq!(refunded["status"], "REFUNDED");
    assert_eq!(
        app.outbox_count("ordering", "OrderRefunded", &order).await,
        1
    );
    let (status, again) = app
        .post(&app.admin(), &format!("/v1/orders/{order}/refund"))
        .await;
    assert_eq!((status, again["status"].as_str()), (200, Some("REFUNDED")));
    assert_eq!(
        app.outbox_count("ordering", "OrderRefunded", &order).await,
        1
    );
    let voucher = items[0]["id"].as_str().expect("id").to_owned();
    eventually(
        "the voucher is revoked",
        Duration::from_secs(15),
        || async {
            app.get(&erin, &format!("/v1/vouchers/{voucher}")).await.1["status"] == "REVOKED"
        },
    )
    .await;
}

/// One request to the fake API: path, headers, form fields.
type Seen1 = (String, HeaderMap, Vec<(String, String)>);

/// What the fake Stripe API saw.
#[derive(Default)]
struct Seen {
    requests: Vec<Seen1>,
    refuse_refunds: bool,
}

type Fake = Arc<Mutex<Seen>>;

async fn fake_sessions(
    State(seen): State<Fake>,
    headers: HeaderMap,
    body: String,
) -> axum::Json<Value> {
    let form: Vec<(String, String)> = serde_urlencoded_pairs(&body);
    let order = form
        .iter()
        .find(|(k, _)| k == "client_reference_id")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    if let Ok(mut seen) = seen.lock() {
        seen.requests
            .push(("/v1/checkout/sessions".into(), headers, form));
    }
    axum::Json(json!({
        "id": format!("cs_test_{order}"),
        "object": "checkout.session",
        "url": format!("https://checkout.stripe.test/c/{order}"),
        "payment_intent": null,
    }))
}

async fn fake_refunds(
    State(seen): State<Fake>,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let form = serde_urlencoded_pairs(&body);
    let refuse = seen.lock().map(|s| s.refuse_refunds).unwrap_or(false);
    if let Ok(mut seen) = seen.lock() {
        seen.requests.push(("/v1/refunds".into(), headers, form));
    }
    if refuse {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": {"type": "invalid_request_error",
                                        "message": "Charge has already been refunded."}})),
        )
            .into_response();
    }
    axum::Json(json!({"id": "re_test_1", "object": "refund", "status": "succeeded"}))
        .into_response()
}

async fn fake_expire(
    State(seen): State<Fake>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> axum::Json<Value> {
    if let Ok(mut seen) = seen.lock() {
        seen.requests.push((
            format!("/v1/checkout/sessions/{id}/expire"),
            headers,
            Vec::new(),
        ));
    }
    axum::Json(json!({"id": id, "status": "expired"}))
}

/// A form body (`a=1&b=2`, percent-encoded) as pairs.
fn serde_urlencoded_pairs(body: &str) -> Vec<(String, String)> {
    let uri: axum::http::Uri = format!("/?{body}").parse().expect("form body");
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .expect("form pairs")
        .0
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A fake of the Stripe API on a free port, and the server using it: (what the fake saw, app).
async fn with_fake_stripe() -> (Fake, TestApp) {
    let seen: Fake = Arc::default();
    let fake = axum::Router::new()
        .route("/v1/checkout/sessions", post(fake_sessions))
        .route("/v1/checkout/sessions/{id}/expire", post(fake_expire))
        .route("/v1/refunds", post(fake_refunds))
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let fake_addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, fake).await;
    });
    let app = TestApp::start_with(Options {
        settings: Box::new(move |s| {
            s.payment = PaymentSettings::Stripe {
                base_url: format!("http://{fake_addr}"),
                api_key: pulse_kit::settings::Secret::new("sk_test_pulse"),
                return_url: "https://shop.example/orders/{ORDER_ID}".into(),
            };
        }),
        ..Options::default()
    })
    .await;
    (seen, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_stripe_adapter_talks_to_a_compatible_api_and_its_webhooks_settle_orders() {
    let (seen, app) = with_fake_stripe().await;
    let buyer = app.token("gina", &["patient"]);
    let (order, amount) = pending_order(&app, &buyer).await;
    let (status, started) = app.post(&buyer, &format!("/v1/orders/{order}/pay")).await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(started["provider"], "stripe");
    assert_eq!(started["sessionId"], format!("cs_test_{order}"));
    assert_eq!(
        started["checkoutUrl"],
        format!("https://checkout.stripe.test/c/{order}")
    );
    // The sandbox's checkout pages exist only with the sandbox.
    let session = format!("cs_sandbox_{}", order.replace('-', ""));
    let (status, headers, _) = raw(app.client.get(format!(
        "{}/v1/payments/sandbox/checkout/{session}",
        app.base
    )))
    .await;
    assert_eq!(status, 404);
    assert_eq!(headers["content-type"], "application/problem+json");
    {
        let seen = seen.lock().expect("seen");
        let (path, headers, form) = &seen.requests[0];
        assert_eq!(path, "/v1/checkout/sessions");
        assert_eq!(headers["authorization"], "Bearer sk_test_pulse");
        assert_eq!(
            headers["idempotency-key"],
            format!("pulse-checkout-{order}").as_str()
        );
        assert_eq!(field(form, "mode"), Some("payment"));
        assert_eq!(field(form, "client_reference_id"), Some(order.as_str()));
        assert_eq!(field(form, "metadata[order_id]"), Some(order.as_str()));
        assert_eq!(
            field(form, "line_items[0][price_data][currency]"),
            Some("eur")
        );
        assert_eq!(
            field(form, "line_items[0][price_data][unit_amount]"),
            Some(amount.to_string().as_str())
        );
        assert_eq!(
            field(form, "success_url"),
            Some(format!("https://shop.example/orders/{order}").as_str())
        );
    }
    // Stripe's webhook for the finished checkout.
    let body = checkout_completed("evt_stripe_1", &order, amount);
    let (status, ack) = send_webhook(&app, &body, signed(&body, now())).await;
    assert_eq!(
        (status, ack["outcome"].as_str()),
        (200, Some("paid")),
        "{ack}"
    );

    // The refund goes to the API with the payment intent the webhook carried.
    let (status, refunded) = app
        .post(&app.admin(), &format!("/v1/orders/{order}/refund"))
        .await;
    assert_eq!(status, 200, "{refunded}");
    assert_eq!(refunded["status"], "REFUNDED");
    {
        let seen = seen.lock().expect("seen");
        let (path, headers, form) = seen.requests.last().expect("refund");
        assert_eq!(path, "/v1/refunds");
        assert_eq!(
            headers["idempotency-key"],
            format!("pulse-refund-{order}").as_str()
        );
        assert_eq!(
            field(form, "payment_intent"),
            Some(format!("pi_test_{order}").as_str())
        );
    }
    // A refund made from the dashboard arrives as charge.refunded: already refunded, no change.
    let charge = json!({"id": "evt_stripe_2", "type": "charge.refunded",
        "data": {"object": {"id": "ch_1", "payment_intent": format!("pi_test_{order}")}}})
    .to_string();
    let (status, ack) = send_webhook(&app, &charge, signed(&charge, now())).await;
    assert_eq!((status, ack["outcome"].as_str()), (200, Some("ignored")));
    assert_eq!(
        app.outbox_count("ordering", "OrderRefunded", &order).await,
        1
    );

    // The API refusing a refund is a 502 problem, and the order stays paid.
    let (order2, amount2) = pending_order(&app, &buyer).await;
    let body = checkout_completed("evt_stripe_3", &order2, amount2);
    let (status, _) = send_webhook(&app, &body, signed(&body, now())).await;
    assert_eq!(status, 200);
    seen.lock().expect("seen").refuse_refunds = true;
    let (status, problem) = app
        .post(&app.admin(), &format!("/v1/orders/{order2}/refund"))
        .await;
    assert_eq!(
        (status, kind(&problem).as_str()),
        (502, "payment-provider-error")
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("already been refunded")
    );
    assert_eq!(app.order_status(&order2).await.as_deref(), Some("PAID"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payment_after_the_timeout_is_refunded_not_applied() {
    let app = TestApp::start_with(Options {
        country: common::france(1),
        settings: Box::new(sandbox_never_pays),
        ..Options::default()
    })
    .await;
    let buyer = app.token("hank", &["patient"]);
    let (order, amount) = pending_order(&app, &buyer).await;
    eventually("cancelled", Duration::from_secs(15), || async {
        app.order_status(&order).await.as_deref() == Some("CANCELLED")
    })
    .await;
    let body = checkout_completed("evt_late", &order, amount);
    let (status, ack) = send_webhook(&app, &body, signed(&body, now())).await;
    assert_eq!(
        (status, ack["outcome"].as_str()),
        (200, Some("late-payment-refunded"))
    );
    assert_eq!(app.order_status(&order).await.as_deref(), Some("CANCELLED"));
    let refund: Option<String> =
        sqlx::query_scalar("SELECT refund_id FROM ordering.orders WHERE id = $1::uuid")
            .bind(&order)
            .fetch_one(&app.pool)
            .await
            .expect("refund id");
    assert!(refund.is_some());
    assert_eq!(app.outbox_count("ordering", "OrderPaid", &order).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicates_of_a_payment_start_one_checkout_and_never_expire_it() {
    let (seen, app) = with_fake_stripe().await;
    let buyer = app.token("iris", &["patient"]);
    let (order, _) = pending_order(&app, &buyer).await;
    let key = pulse_kit::new_id().to_string();

    // Both requests get past the idempotency lookup and ask the provider for a checkout before
    // either stores it: the test holds the order's row until both wait for it. The first one
    // stores the checkout with its answer; the second one's transaction collides with that
    // answer and rolls back, and must not expire the checkout, which is the order's.
    let pay = || async {
        let (status, headers, body) =
            raw(app.post_with_key(&buyer, &format!("/v1/orders/{order}/pay"), &key)).await;
        (status, headers.contains_key("idempotent-replayed"), body)
    };
    let (first, second) = app
        .while_row_locked(
            "ordering.orders",
            &order,
            2,
            "both payments wait for the order",
            async { tokio::join!(pay(), pay()) },
        )
        .await;

    assert_eq!((first.0, second.0), (200, 200));
    assert_eq!(first.2, second.2, "the same answer, byte for byte");
    assert!(first.1 ^ second.1, "one of them is the replay of the other");
    let started: Value = serde_json::from_slice(&first.2).expect("json");
    assert_eq!(started["sessionId"], format!("cs_test_{order}"));
    let stored: Option<String> =
        sqlx::query_scalar("SELECT checkout_session_id FROM ordering.orders WHERE id = $1::uuid")
            .bind(&order)
            .fetch_one(&app.pool)
            .await
            .expect("session");
    assert_eq!(stored.as_deref(), Some(format!("cs_test_{order}").as_str()));
    let seen = seen.lock().expect("seen");
    let paths: Vec<&str> = seen.requests.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        ["/v1/checkout/sessions", "/v1/checkout/sessions"],
        "two creations of one checkout, no expiry"
    );
    for (_, headers, _) in &seen.requests {
        assert_eq!(
            headers["idempotency-key"],
            format!("pulse-checkout-{order}").as_str(),
            "the provider sees one operation"
        );
    }
}
