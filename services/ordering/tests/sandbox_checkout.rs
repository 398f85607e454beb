//! The sandbox's checkout page against real servers, as a browser uses it: the page, Pay (the
//! real signed webhook, then back to the web app), Cancel (back, the order still unpaid), a
//! double Pay, expired and unknown sessions, and a second replica serving a checkout the first
//! one started.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use axum::routing::post;
use common::{Options, TestApp, WEBHOOK_SECRET, eventually};
use pulse_kit::component::Component;
use pulse_kit::settings::{Env, ordering as vars};
use pulse_kit::testing::{self, free_port, redis_url};
use pulse_ordering::payments::signature;
use pulse_ordering::settings::{OrderingSettings, PaymentSettings};
use serde_json::{Value, json};

/// The sandbox as `./dev up` runs it: the buyer pays on the page, nothing pays by itself.
fn paid_on_the_page(settings: &mut OrderingSettings) {
    if let PaymentSettings::Sandbox { auto_pay_after, .. } = &mut settings.payment {
        *auto_pay_after = None;
    }
}

async fn start(country: pulse_kit::config::CountryConfig) -> TestApp {
    TestApp::start_with(Options {
        country,
        settings: Box::new(paid_on_the_page),
        ..Options::without_marketing()
    })
    .await
}

/// A browser: follows no redirect (the test looks at them).
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// An order of one "Lamp" at `price_minor`, waiting for its payment.
async fn pending_order(app: &TestApp, buyer: &str, price_minor: i64) -> String {
    let product = app.product(price_minor, 10).await;
    let (status, order, _) = app
        .order(buyer, &json!({ "productId": product["id"], "quantity": 1 }))
        .await;
    assert_eq!(status, 201, "{order}");
    order["id"].as_str().expect("id").to_owned()
}

/// Starts the payment of `order` as its buyer: the checkout URL.
async fn checkout_url(app: &TestApp, buyer: &str, order: &str) -> String {
    let (status, started) = app.post(buyer, &format!("/v1/orders/{order}/pay")).await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(started["provider"], "sandbox");
    let url = started["checkoutUrl"].as_str().expect("url").to_owned();
    let session = started["sessionId"].as_str().expect("session");
    assert_eq!(url, format!("/v1/payments/sandbox/checkout/{session}"));
    url
}

/// `GET base + path`: (status, headers, text).
async fn get(base: &str, path: &str) -> (u16, HeaderMap, String) {
    let response = browser()
        .get(format!("{base}{path}"))
        .send()
        .await
        .expect("GET");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.expect("text"))
}

/// Presses `button` of the page at `base + page` (an empty form POST, as a browser sends it):
/// (status, `Location`, text).
async fn press(base: &str, page: &str, button: &str) -> (u16, Option<String>, String) {
    let (path, query) = page.split_once('?').unwrap_or((page, ""));
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    let response = browser()
        .post(format!("{base}{path}/{button}{query}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("")
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, location, response.text().await.expect("text"))
}

fn is_html(headers: &HeaderMap) -> bool {
    headers
        .get("content-type")
        .is_some_and(|v| v == "text/html; charset=utf-8")
}

/// The webhook events recorded for `order`: (event type, outcome).
async fn events(app: &TestApp, order: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT event_type, outcome FROM ordering.payment_events WHERE order_id = $1::uuid
         ORDER BY received_at",
    )
    .bind(order)
    .fetch_all(&app.pool)
    .await
    .expect("payment events")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_shows_the_order_and_pay_settles_it_through_the_signed_webhook() {
    let app = start(common::france(900)).await;
    let buyer = app.token("lena", &["patient"]);
    let order = pending_order(&app, &buyer, 1990).await;
    let url = checkout_url(&app, &buyer, &order).await;
    let session = url.rsplit('/').next().expect("session").to_owned();

    // The page, in the country's language (France: French, amounts the French way).
    let (status, headers, page) = get(&app.base, &url).await;
    assert_eq!(status, 200, "{page}");
    assert!(is_html(&headers), "{headers:?}");
    assert_eq!(headers["cache-control"], "no-store");
    for expected in [
        "<html lang=\"fr\">",
        "name=\"viewport\"",
        "Bac à sable — aucun argent réel",
        &order,
        "1 × Lamp",
        "19,90\u{a0}€",
        &format!("<form method=\"post\" action=\"{session}/pay\">"),
        &format!("<form method=\"post\" action=\"{session}/cancel\">"),
        "<button type=\"submit\" class=\"pay\">Payer 19,90\u{a0}€</button>",
        ">Annuler</button>",
    ] {
        assert!(page.contains(expected), "{expected} not in {page}");
    }
    assert!(!page.contains("<script"), "no JavaScript");
    // Another language on request; the forms keep it.
    let (_, _, de) = get(&app.base, &format!("{url}?lang=de")).await;
    for expected in [
        "<html lang=\"de\">",
        "Sandbox – kein echtes Geld",
        "19,90\u{a0}€ bezahlen</button>",
        &format!("action=\"{session}/pay?lang=de\""),
    ] {
        assert!(de.contains(expected), "{expected} not in {de}");
    }
    let (_, _, en) = get(&app.base, &format!("{url}?lang=en")).await;
    for expected in [
        "<html lang=\"en\">",
        "Sandbox — no real money",
        "Pay €19.90",
    ] {
        assert!(en.contains(expected), "{expected} not in {en}");
    }

    // Nothing pays by itself.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.order_status(&order).await.as_deref(),
        Some("PENDING_PAYMENT")
    );
    assert!(events(&app, &order).await.is_empty());

    // Pay: the signed webhook marks the order paid, and the buyer goes back to the web app.
    let (status, location, _) = press(&app.base, &url, "pay").await;
    assert_eq!(status, 303);
    assert_eq!(location, Some(format!("/#/orders/{order}")));
    eventually("paid by the webhook", Duration::from_secs(10), || async {
        app.order_status(&order).await.as_deref() == Some("PAID")
    })
    .await;
    assert_eq!(
        events(&app, &order).await,
        [("checkout.session.completed".to_owned(), "paid".to_owned())]
    );
    assert_eq!(app.outbox_count("ordering", "OrderPaid", &order).await, 1);
    let (_, view) = app.get(&buyer, &format!("/v1/orders/{order}")).await;
    assert_eq!(view["status"], "PAID");

    // Pay again (the back button): back to the order, nothing sent, nothing paid twice.
    let (status, location, _) = press(&app.base, &url, "pay").await;
    assert_eq!(
        (status, location),
        (303, Some(format!("/#/orders/{order}")))
    );
    assert_eq!(events(&app, &order).await.len(), 1);
    assert_eq!(app.outbox_count("ordering", "OrderPaid", &order).await, 1);

    // The page of a paid checkout says so, with a way back; Cancel has nothing to do.
    let (status, headers, page) = get(&app.base, &url).await;
    assert_eq!(status, 409);
    assert!(is_html(&headers));
    assert!(page.contains("Commande déjà payée"), "{page}");
    assert!(
        page.contains(&format!("href=\"/#/orders/{order}\"")),
        "{page}"
    );
    assert!(!page.contains("<form"), "{page}");
    let (status, location, page) = press(&app.base, &url, "cancel").await;
    assert_eq!((status, location), (409, None));
    assert!(page.contains("Commande déjà payée"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pay_pressed_twice_at_once_pays_once() {
    let app = start(common::france(900)).await;
    let buyer = app.token("mona", &["patient"]);
    let order = pending_order(&app, &buyer, 4200).await;
    let url = checkout_url(&app, &buyer, &order).await;

    let (first, second) =
        tokio::join!(press(&app.base, &url, "pay"), press(&app.base, &url, "pay"));
    for (status, location, text) in [first, second] {
        assert_eq!(status, 303, "{text}");
        assert_eq!(location, Some(format!("/#/orders/{order}")));
    }
    eventually("paid", Duration::from_secs(10), || async {
        app.order_status(&order).await.as_deref() == Some("PAID")
    })
    .await;
    // One event (the same event id from both presses), one payment.
    assert_eq!(
        events(&app, &order).await,
        [("checkout.session.completed".to_owned(), "paid".to_owned())]
    );
    assert_eq!(app.outbox_count("ordering", "OrderPaid", &order).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_sends_the_buyer_back_and_the_order_stays_payable() {
    let app = start(common::france(900)).await;
    let buyer = app.token("nina", &["patient"]);
    let order = pending_order(&app, &buyer, 990).await;
    let url = checkout_url(&app, &buyer, &order).await;

    // Cancel, as a real provider's back link: no event, the order stays unpaid.
    let (status, location, _) = press(&app.base, &url, "cancel").await;
    assert_eq!(
        (status, location),
        (303, Some(format!("/#/orders/{order}")))
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.order_status(&order).await.as_deref(),
        Some("PENDING_PAYMENT")
    );
    assert!(events(&app, &order).await.is_empty());
    assert_eq!(
        app.outbox_count("ordering", "OrderCancelled", &order).await,
        0
    );

    // The buyer changes their mind: the same checkout, still open, and payable.
    assert_eq!(checkout_url(&app, &buyer, &order).await, url);
    let (status, _, page) = get(&app.base, &url).await;
    assert_eq!(status, 200, "{page}");
    let (status, _, _) = press(&app.base, &url, "pay").await;
    assert_eq!(status, 303);
    eventually("paid after all", Duration::from_secs(10), || async {
        app.order_status(&order).await.as_deref() == Some("PAID")
    })
    .await;
}

/// What a fake webhook endpoint received: (signature header, body).
type Received = Arc<Mutex<Vec<(String, String)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_checkout_says_so_pays_nothing_and_sends_the_expiry_event() {
    // The sandbox's webhooks go to a fake endpoint that keeps them.
    let received: Received = Arc::default();
    let endpoint = axum::Router::new()
        .route(
            "/webhook",
            post(
                |axum::extract::State(received): axum::extract::State<Received>,
                 headers: HeaderMap,
                 body: String| async move {
                    let signature = headers
                        .get("stripe-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    if let Ok(mut received) = received.lock() {
                        received.push((signature, body));
                    }
                    axum::Json(json!({"received": true}))
                },
            ),
        )
        .with_state(Arc::clone(&received));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint_url = format!("http://{}/webhook", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, endpoint).await;
    });
    let app = TestApp::start_with(Options {
        // Three seconds to pay.
        country: common::france(3),
        settings: Box::new(move |s| {
            s.payment = PaymentSettings::Sandbox {
                webhook_url: endpoint_url,
                return_url: "http://127.0.0.1:5173/#/orders/{ORDER_ID}".into(),
                auto_pay_after: None,
            };
        }),
        ..Options::without_marketing()
    })
    .await;
    let buyer = app.token("olga", &["patient"]);
    let order = pending_order(&app, &buyer, 1500).await;
    let url = checkout_url(&app, &buyer, &order).await;
    let session = url.rsplit('/').next().expect("session").to_owned();
    eventually(
        "cancelled at its deadline",
        Duration::from_secs(20),
        || async { app.order_status(&order).await.as_deref() == Some("CANCELLED") },
    )
    .await;

    // The page, Pay and Cancel: 409, with words and the way back to the order.
    let back = format!("href=\"http://127.0.0.1:5173/#/orders/{order}\"");
    let (status, headers, page) = get(&app.base, &format!("{url}?lang=en")).await;
    assert_eq!(status, 409);
    assert!(is_html(&headers));
    assert!(page.contains("Payment expired"), "{page}");
    assert!(page.contains(&back), "{page}");
    for button in ["pay", "cancel"] {
        let (status, location, page) = press(&app.base, &url, button).await;
        assert_eq!((status, location), (409, None), "{button}");
        assert!(page.contains("Paiement expiré"), "{page}");
    }
    assert_eq!(app.order_status(&order).await.as_deref(), Some("CANCELLED"));
    assert_eq!(app.outbox_count("ordering", "OrderPaid", &order).await, 0);

    // The expiry was told, as the provider tells it: signed `checkout.session.expired`.
    eventually("the expiry event", Duration::from_secs(10), || async {
        received.lock().map(|r| !r.is_empty()).unwrap_or(false)
    })
    .await;
    let received = received.lock().expect("received").clone();
    assert_eq!(received.len(), 1, "{received:?}");
    let (header, body) = &received[0];
    signature::verify(
        header,
        body.as_bytes(),
        &[WEBHOOK_SECRET.as_bytes()],
        chrono::Utc::now().timestamp(),
    )
    .expect("signed with the webhook secret");
    let event: Value = serde_json::from_str(body).expect("json");
    assert_eq!(event["type"], "checkout.session.expired");
    assert_eq!(event["data"]["object"]["id"], session.as_str());
    assert_eq!(
        event["data"]["object"]["client_reference_id"],
        order.as_str()
    );
    // Ordering acknowledges it and changes nothing.
    let header = signature::header(
        &[WEBHOOK_SECRET.as_bytes()],
        chrono::Utc::now().timestamp(),
        body.as_bytes(),
    );
    let response = app
        .client
        .post(format!("{}/v1/payments/webhook", app.base))
        .header("stripe-signature", header)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .expect("webhook");
    assert_eq!(response.status(), 200);
    let ack: Value = response.json().await.expect("ack");
    assert_eq!(ack["outcome"], "ignored");
    assert_eq!(app.order_status(&order).await.as_deref(), Some("CANCELLED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_sessions_get_a_page_that_says_so() {
    let app = start(common::france(900)).await;
    let buyer = app.token("pia", &["patient"]);
    // An order whose payment never started has no checkout either.
    let unpaid = pending_order(&app, &buyer, 500).await;
    let paths = [
        "cs_sandbox_nope".to_owned(),
        format!("cs_sandbox_{}", pulse_kit::new_id().simple()),
        format!("cs_sandbox_{}", unpaid.replace('-', "")),
        "%FF%FE".to_owned(),
        "cs_test_a1b2c3".to_owned(),
    ];
    for session in &paths {
        let page = format!("/v1/payments/sandbox/checkout/{session}");
        let (status, headers, text) = get(&app.base, &page).await;
        assert_eq!(status, 404, "{session}: {text}");
        assert!(is_html(&headers), "{session}: {headers:?}");
        assert!(text.contains("Paiement introuvable"), "{text}");
        assert!(text.contains("<html lang=\"fr\">"), "{text}");
        for button in ["pay", "cancel"] {
            let (status, location, text) = press(&app.base, &page, button).await;
            assert_eq!((status, location), (404, None), "{session}/{button}");
            assert!(text.contains("Paiement introuvable"), "{text}");
        }
    }
    let (status, _, text) = get(&app.base, "/v1/payments/sandbox/checkout/x?lang=en").await;
    assert_eq!(status, 404);
    assert!(text.contains("Payment not found"), "{text}");
    assert_eq!(
        app.order_status(&unpaid).await.as_deref(),
        Some("PENDING_PAYMENT")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_replica_serves_and_pays_a_checkout_another_one_started() {
    let app = start(common::france(900)).await;
    let buyer = app.token("quinn", &["patient"]);
    let order = pending_order(&app, &buyer, 2500).await;
    let url = checkout_url(&app, &buyer, &order).await;

    // A second ordering process on the same database, webhooks to itself.
    let (http, grpc) = (free_port(), free_port());
    let mut settings = testing::server_settings(&app.db.url, &redis_url());
    settings.http_addr = ([127, 0, 0, 1], http).into();
    settings.grpc_addr = ([127, 0, 0, 1], grpc).into();
    let mut ordering = OrderingSettings::read(
        &Env::from_map([(vars::PAYMENT_WEBHOOK_SECRET.var, WEBHOOK_SECRET)]),
        &settings,
    )
    .expect("ordering settings");
    paid_on_the_page(&mut ordering);
    let components: Vec<Arc<dyn Component>> =
        vec![Arc::new(pulse_ordering::Ordering::new(ordering))];
    let replica = pulse_kit::server::start(&settings, app.country.clone(), components)
        .await
        .expect("second replica");
    let other = format!("http://{}", replica.http_addr);

    let (status, _, page) = get(&other, &url).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("25,00\u{a0}€"), "{page}");
    let (status, location, _) = press(&other, &url, "pay").await;
    assert_eq!(
        (status, location),
        (303, Some(format!("/#/orders/{order}")))
    );
    eventually(
        "paid through the other replica",
        Duration::from_secs(10),
        || async { app.order_status(&order).await.as_deref() == Some("PAID") },
    )
    .await;
    // The first replica knows it is paid too.
    let (status, location, _) = press(&app.base, &url, "pay").await;
    assert_eq!(
        (status, location),
        (303, Some(format!("/#/orders/{order}")))
    );
    let (status, _, _) = get(&app.base, &url).await;
    assert_eq!(status, 409);
    assert_eq!(events(&app, &order).await.len(), 1);
    replica.shutdown().await;
}
