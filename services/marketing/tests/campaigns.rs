//! Campaigns, the seckill endpoint and vouchers against real PostgreSQL, Redis and Kafka.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{TestApp, kind};
use pulse_proto::marketing::v1::campaign_admin_client::CampaignAdminClient;
use pulse_proto::marketing::v1::vouchers_client::VouchersClient;
use pulse_proto::marketing::v1::{
    CampaignPhase, CloseCampaignRequest, GetCampaignStatusRequest, RedeemVoucherRequest,
    ReleaseVoucherRequest, UpsertCampaignRequest, ValidateVoucherRequest, VoucherRejection,
};
use redis::AsyncCommands;
use serde_json::json;
use tonic::Code;

fn ts(at: chrono::DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(pulse_proto::time::to_timestamp(at))
}

fn upsert(id: &str, stock: u32) -> UpsertCampaignRequest {
    let now = Utc::now();
    UpsertCampaignRequest {
        campaign_id: id.to_owned(),
        voucher_title: "Summer: 10 € off".into(),
        voucher_value_minor: 1000,
        currency: "EUR".into(),
        price_minor: 199,
        stock,
        per_user_limit: 0,
        starts_at: ts(now - chrono::Duration::minutes(1)),
        ends_at: ts(now + chrono::Duration::hours(2)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_admin_upserts_idempotently_and_never_resets_what_was_sold() {
    let app = TestApp::start().await;
    let mut admin = CampaignAdminClient::connect(format!("http://{}", app.grpc))
        .await
        .expect("connect");
    let id = "pulse-fr/summer-sale";
    let first = admin
        .upsert(upsert(id, 10))
        .await
        .expect("upsert")
        .into_inner();
    assert_eq!(first.phase(), CampaignPhase::Active);
    assert_eq!((first.stock, first.sold, first.remaining), (10, 0, 10));
    let again = admin
        .upsert(upsert(id, 10))
        .await
        .expect("upsert")
        .into_inner();
    assert_eq!((again.stock, again.sold, again.remaining), (10, 0, 10));

    for user in ["u1", "u2", "u3"] {
        let (status, body, _) = app.seckill(&app.token(user, &["patient"]), id).await;
        assert_eq!(status, 202, "{body}");
    }
    let status = admin
        .get_status(GetCampaignStatusRequest {
            campaign_id: id.into(),
        })
        .await
        .expect("status")
        .into_inner();
    assert_eq!((status.sold, status.remaining), (3, 7));
    // Re-applying the same campaign keeps what was sold.
    let same = admin
        .upsert(upsert(id, 10))
        .await
        .expect("upsert")
        .into_inner();
    assert_eq!((same.stock, same.sold, same.remaining), (10, 3, 7));
    let more = admin
        .upsert(upsert(id, 20))
        .await
        .expect("upsert")
        .into_inner();
    assert_eq!((more.stock, more.sold, more.remaining), (20, 3, 17));
    let fewer = admin
        .upsert(upsert(id, 2))
        .await
        .expect("upsert")
        .into_inner();
    assert_eq!((fewer.stock, fewer.sold, fewer.remaining), (2, 3, 0));
    assert_eq!(fewer.phase(), CampaignPhase::SoldOut);
    let back = admin
        .upsert(upsert(id, 10))
        .await
        .expect("upsert")
        .into_inner();
    assert_eq!((back.sold, back.remaining), (3, 7), "sold is never reset");
    let stock: String = app
        .redis()
        .await
        .get(&app.keys(id).stock)
        .await
        .expect("stock");
    assert_eq!(stock, "7");

    // A future window is SCHEDULED.
    let mut later = upsert("pulse-fr/later", 5);
    let start = Utc::now() + chrono::Duration::days(1);
    later.starts_at = ts(start);
    later.ends_at = ts(start + chrono::Duration::hours(1));
    let scheduled = admin.upsert(later).await.expect("upsert").into_inner();
    assert_eq!(scheduled.phase(), CampaignPhase::Scheduled);

    // Bad requests say which field.
    let cases: Vec<(UpsertCampaignRequest, &str)> = vec![
        (upsert("", 5), "campaignId"),
        (upsert("has space", 5), "campaignId"),
        (upsert("x", 0), "stock"),
        (
            UpsertCampaignRequest {
                currency: "EURO".into(),
                ..upsert("x", 5)
            },
            "currency",
        ),
        (
            UpsertCampaignRequest {
                ends_at: ts(Utc::now() - chrono::Duration::days(1)),
                ..upsert("x", 5)
            },
            "endsAt",
        ),
        (
            UpsertCampaignRequest {
                starts_at: None,
                ..upsert("x", 5)
            },
            "starts_at",
        ),
        (
            UpsertCampaignRequest {
                voucher_value_minor: 0,
                ..upsert("x", 5)
            },
            "voucherValueMinor",
        ),
    ];
    for (request, field) in cases {
        let err = admin.upsert(request).await.expect_err(field);
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(err.message().contains(field), "{field}: {}", err.message());
    }
    let missing = admin
        .get_status(GetCampaignStatusRequest {
            campaign_id: "nope".into(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(missing.code(), Code::NotFound);

    // Close ends it; selling stops; a later upsert does not reopen it.
    let closed = admin
        .close(CloseCampaignRequest {
            campaign_id: id.into(),
        })
        .await
        .expect("close")
        .into_inner();
    assert_eq!(closed.phase(), CampaignPhase::Ended);
    assert!(closed.closed);
    let (status, problem, _) = app.seckill(&app.token("u9", &["patient"]), id).await;
    assert_eq!((status, kind(&problem).as_str()), (409, "seckill-ended"));
    let still = admin
        .upsert(upsert(id, 10))
        .await
        .expect("upsert")
        .into_inner();
    assert_eq!(still.phase(), CampaignPhase::Ended);
    assert!(still.closed);
    let (status, problem, _) = app.seckill(&app.token("u9", &["patient"]), id).await;
    assert_eq!((status, kind(&problem).as_str()), (409, "seckill-ended"));
}

#[tokio::test]
async fn the_http_mirror_needs_an_admin_and_takes_percent_encoded_ids() {
    let app = TestApp::start().await;
    let now = Utc::now();
    let body = TestApp::body(
        50,
        2,
        now - chrono::Duration::seconds(1),
        now + chrono::Duration::hours(1),
    );
    let id = "pulse-fr/black-friday";
    let response = app
        .client
        .put(format!("{}/v1/campaigns/pulse-fr%2Fblack-friday", app.base))
        .json(&body)
        .send()
        .await
        .expect("put");
    assert_eq!(response.status(), 401);
    let (status, problem) = app.put(&app.token("p", &["patient"]), id, &body).await;
    assert_eq!((status, kind(&problem).as_str()), (403, "forbidden"));
    let (status, view) = app.put(&app.admin(), id, &body).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["id"], id);
    assert_eq!(view["phase"], "ACTIVE");
    assert_eq!(
        (view["sold"].as_u64(), view["remaining"].as_u64()),
        (Some(0), Some(50))
    );
    assert_eq!(view["perUserLimit"], 2);

    let (status, got) = app.get("/v1/campaigns/pulse-fr%2Fblack-friday").await;
    assert_eq!(status, 200);
    assert_eq!(got["voucherTitle"], "5 € off");
    let (status, list) = app.get("/v1/campaigns").await;
    assert_eq!(status, 200);
    assert!(
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|c| c["id"] == id)
    );
    let (status, problem) = app.get("/v1/campaigns/unknown").await;
    assert_eq!(
        (status, kind(&problem).as_str()),
        (404, "campaign-not-found")
    );

    for (change, field) in [
        (json!({ "stock": 0 }), "stock"),
        (json!({ "currency": "euro" }), "currency"),
        (json!({ "priceMinor": -5 }), "priceMinor"),
        (
            json!({ "endsAt": now - chrono::Duration::hours(1) }),
            "endsAt",
        ),
        (json!({ "voucherTitle": "" }), "voucherTitle"),
    ] {
        let mut bad = body.clone();
        for (k, v) in change.as_object().expect("object") {
            bad[k] = v.clone();
        }
        let (status, problem) = app.put(&app.admin(), "pulse-fr/bad", &bad).await;
        assert_eq!(status, 422, "{field}: {problem}");
        assert_eq!(problem["field"], field);
    }
    let mut unknown_field = body.clone();
    unknown_field["colour"] = json!("red");
    let (status, _) = app.put(&app.admin(), "pulse-fr/bad", &unknown_field).await;
    assert_eq!(status, 422);
    let (status, _) = app.get("/v1/campaigns/pulse-fr%2Fbad").await;
    assert_eq!(status, 404, "nothing half-written");

    let response = app
        .client
        .post(format!(
            "{}/v1/campaigns/pulse-fr%2Fblack-friday/close",
            app.base
        ))
        .bearer_auth(app.admin())
        .send()
        .await
        .expect("close");
    assert_eq!(response.status(), 200);
    let (_, got) = app.get("/v1/campaigns/pulse-fr%2Fblack-friday").await;
    assert_eq!(
        (got["phase"].as_str(), got["closed"].as_bool()),
        (Some("ENDED"), Some(true))
    );
}

#[tokio::test]
async fn each_seckill_refusal_has_its_own_problem_and_winners_are_in_the_stream() {
    let app = TestApp::start().await;
    let now = Utc::now();
    let admin = app.admin();
    let later = TestApp::body(
        5,
        1,
        now + chrono::Duration::hours(1),
        now + chrono::Duration::hours(2),
    );
    assert_eq!(app.put(&admin, "later", &later).await.0, 200);
    let over = TestApp::body(
        5,
        1,
        now - chrono::Duration::hours(2),
        now - chrono::Duration::hours(1),
    );
    assert_eq!(app.put(&admin, "over", &over).await.0, 200);
    app.open("limit-two", 3, 2).await;

    let nina = app.token("nina", &["patient"]);
    let (status, problem, headers) = app.seckill(&nina, "later").await;
    assert_eq!(
        (status, kind(&problem).as_str()),
        (409, "seckill-not-started")
    );
    assert_eq!(headers["content-type"], "application/problem+json");
    let (status, problem, _) = app.seckill(&nina, "over").await;
    assert_eq!((status, kind(&problem).as_str()), (409, "seckill-ended"));
    let (status, problem, _) = app.seckill(&nina, "no-such-campaign").await;
    assert_eq!(
        (status, kind(&problem).as_str()),
        (404, "campaign-not-found")
    );
    let (status, problem, _) = app.seckill(&nina, "bad{id}").await;
    assert_eq!(
        (status, kind(&problem).as_str()),
        (404, "campaign-not-found")
    );
    let response = app
        .client
        .post(format!("{}/v1/seckill/limit-two/orders", app.base))
        .send()
        .await
        .expect("anonymous");
    assert_eq!(response.status(), 401);

    // Those were three attempts: nina's burst is used up; let it refill.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let mut won = Vec::new();
    for (user, expected) in [("nina", 202), ("nina", 202), ("olga", 202), ("pia", 409)] {
        let (status, body, headers) = app
            .seckill(&app.token(user, &["patient"]), "limit-two")
            .await;
        assert_eq!(status, expected, "{user}: {body}");
        if status == 202 {
            assert_eq!(body["status"], "RESERVED");
            let order = body["orderId"].as_str().expect("id").to_owned();
            assert_eq!(
                headers["location"].to_str().expect("location"),
                format!("/v1/orders/{order}")
            );
            won.push((user, order));
        } else {
            assert_eq!(kind(&body), "seckill-sold-out");
        }
    }
    let (status, problem, _) = app.seckill(&nina, "limit-two").await;
    assert_eq!(
        (status, kind(&problem).as_str()),
        (409, "seckill-already-bought")
    );

    // Each winner is one entry of the campaign's stream, with the reservation's fields.
    let mut redis = app.redis().await;
    let entries: redis::streams::StreamRangeReply = redis
        .xrange_all(&app.keys("limit-two").stream)
        .await
        .expect("stream");
    assert_eq!(entries.ids.len(), won.len());
    for (entry, (user, order)) in entries.ids.iter().zip(&won) {
        assert_eq!(
            entry.get::<String>("order").as_deref(),
            Some(order.as_str())
        );
        assert_eq!(entry.get::<String>("user").as_deref(), Some(*user));
        assert_eq!(
            entry.get::<String>("campaign").as_deref(),
            Some("limit-two")
        );
        assert_eq!(entry.get::<String>("price").as_deref(), Some("99"));
        assert_eq!(entry.get::<String>("currency").as_deref(), Some("EUR"));
    }
    let registry: Vec<String> = redis
        .smembers(pulse_marketing::reservation::registry_key(&app.keyspace))
        .await
        .expect("registry");
    assert!(registry.contains(&"limit-two".to_owned()));

    // Hammering: one user's attempts beyond the country's rate get 429 with Retry-After.
    let quentin = app.token("quentin", &["patient"]);
    let mut limited = None;
    for _ in 0..10 {
        let (status, body, headers) = app.seckill(&quentin, "later").await;
        if status == 429 {
            limited = Some((body, headers));
            break;
        }
    }
    let (body, headers) = limited.expect("rate limited");
    assert_eq!(kind(&body), "seckill-rate-limited");
    assert!(headers.contains_key("retry-after"));
}

#[tokio::test]
async fn with_redis_down_seckill_fails_closed() {
    // Nothing listens on port 1: every Redis call fails.
    let app = TestApp::start_with(common::france(), "redis://127.0.0.1:1").await;
    let now = Utc::now();
    let body = TestApp::body(
        10,
        1,
        now - chrono::Duration::seconds(1),
        now + chrono::Duration::hours(1),
    );
    let (status, problem) = app.put(&app.admin(), "down", &body).await;
    assert_eq!(
        (status, kind(&problem).as_str()),
        (503, "campaign-store-unavailable")
    );
    for _ in 0..3 {
        let (status, problem, headers) = app.seckill(&app.token("r", &["patient"]), "down").await;
        assert_eq!(
            (status, kind(&problem).as_str()),
            (503, "seckill-unavailable")
        );
        assert_eq!(headers["content-type"], "application/problem+json");
    }
    // Reading still works, without the counters.
    let (status, view) = app.get("/v1/campaigns/down").await;
    assert_eq!(status, 200);
    assert!(view["sold"].is_null() && view["remaining"].is_null());
    let mut admin = CampaignAdminClient::connect(format!("http://{}", app.grpc))
        .await
        .expect("connect");
    let err = admin
        .get_status(GetCampaignStatusRequest {
            campaign_id: "down".into(),
        })
        .await
        .expect_err("unavailable");
    assert_eq!(err.code(), Code::Unavailable);
}

#[tokio::test]
async fn vouchers_are_validated_held_and_released_per_order() {
    let app = TestApp::start().await;
    app.open("v", 1, 1).await;
    let pool = sqlx::PgPool::connect(&app.db.url).await.expect("pool");
    let voucher = pulse_kit::new_id();
    sqlx::query(
        "INSERT INTO marketing.vouchers (id, owner_subject, campaign_id, source_order_id, title, value_minor, currency, status)
         VALUES ($1, 'sam', 'v', $2, '10 € off', 1000, 'EUR', 'AVAILABLE')",
    )
    .bind(voucher)
    .bind(pulse_kit::new_id())
    .execute(&pool)
    .await
    .expect("voucher");
    let mut client = VouchersClient::connect(format!("http://{}", app.grpc))
        .await
        .expect("connect");
    let validate = |user: &str, amount: i64, currency: &str| ValidateVoucherRequest {
        voucher_id: voucher.to_string(),
        user_id: user.into(),
        amount_minor: amount,
        currency: currency.into(),
    };
    let ok = client
        .validate(validate("sam", 2500, "EUR"))
        .await
        .expect("validate")
        .into_inner();
    assert!(ok.valid);
    assert_eq!(ok.discount_minor, 1000);
    let capped = client
        .validate(validate("sam", 400, "EUR"))
        .await
        .expect("validate")
        .into_inner();
    assert_eq!(capped.discount_minor, 400);
    let other = client
        .validate(validate("tom", 2500, "EUR"))
        .await
        .expect("validate")
        .into_inner();
    assert_eq!(
        (other.valid, other.rejection()),
        (false, VoucherRejection::NotOwner)
    );
    let usd = client
        .validate(validate("sam", 2500, "USD"))
        .await
        .expect("validate")
        .into_inner();
    assert_eq!(usd.rejection(), VoucherRejection::CurrencyMismatch);
    let unknown = client
        .validate(ValidateVoucherRequest {
            voucher_id: "nope".into(),
            ..validate("sam", 1, "EUR")
        })
        .await
        .expect("validate")
        .into_inner();
    assert_eq!(unknown.rejection(), VoucherRejection::NotFound);

    let (order_a, order_b) = (pulse_kit::new_id(), pulse_kit::new_id());
    let redeem = |order: uuid::Uuid| RedeemVoucherRequest {
        voucher_id: voucher.to_string(),
        user_id: "sam".into(),
        order_id: order.to_string(),
        amount_minor: 2500,
        currency: "EUR".into(),
    };
    assert_eq!(
        client
            .redeem(redeem(order_a))
            .await
            .expect("hold")
            .into_inner()
            .discount_minor,
        1000
    );
    // Idempotent for the same order; refused for another.
    assert!(client.redeem(redeem(order_a)).await.is_ok());
    let refused = client.redeem(redeem(order_b)).await.expect_err("held");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let held = client
        .validate(validate("sam", 2500, "EUR"))
        .await
        .expect("validate")
        .into_inner();
    assert_eq!(held.rejection(), VoucherRejection::NotAvailable);
    // Only the holding order releases it.
    let release = |order: uuid::Uuid| ReleaseVoucherRequest {
        voucher_id: voucher.to_string(),
        order_id: order.to_string(),
    };
    assert!(
        !client
            .release(release(order_b))
            .await
            .expect("release")
            .into_inner()
            .released
    );
    assert!(
        client
            .release(release(order_a))
            .await
            .expect("release")
            .into_inner()
            .released
    );
    assert!(
        !client
            .release(release(order_a))
            .await
            .expect("release")
            .into_inner()
            .released
    );
    assert!(client.redeem(redeem(order_b)).await.is_ok());
    let bad = client
        .redeem(RedeemVoucherRequest {
            order_id: "x".into(),
            ..redeem(order_b)
        })
        .await
        .expect_err("bad order id");
    assert_eq!(bad.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn campaigns_over_for_a_day_leave_the_registry_and_their_keys_expire() {
    let app = TestApp::start().await;
    let now = Utc::now();
    let old = TestApp::body(
        5,
        1,
        now - chrono::Duration::days(3),
        now - chrono::Duration::days(2),
    );
    assert_eq!(app.put(&app.admin(), "old", &old).await.0, 200);
    app.open("current", 5, 1).await;
    let mut redis = app.redis().await;
    let registry = pulse_marketing::reservation::registry_key(&app.keyspace);

    // What the marketing job runs every few seconds; the server's own job may get there first,
    // so retire until only the current campaign is registered.
    let parts = app.services(&pulse_kit::testing::redis_url());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        parts.campaigns.retire_ended().await.expect("retire");
        let members: Vec<String> = redis.smembers(&registry).await.expect("registry");
        if members == vec!["current".to_owned()] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "old campaign never retired: {members:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        parts.campaigns.retire_ended().await.expect("retire"),
        0,
        "retiring twice does nothing"
    );
    let members: Vec<String> = redis.smembers(&registry).await.expect("registry");
    assert_eq!(members, vec!["current".to_owned()]);
    let ttl: i64 = redis.pttl(&app.keys("old").meta).await.expect("ttl");
    assert!(ttl > 0, "the old campaign's keys expire ({ttl})");
    let ttl: i64 = redis.pttl(&app.keys("current").meta).await.expect("ttl");
    assert_eq!(ttl, -1, "current campaigns keep theirs");
}

#[tokio::test]
async fn campaign_admin_endpoints_authorize_before_they_validate() {
    let app = TestApp::start().await;
    let patient = app.token("p", &["patient"]);
    let url = |path: &str| format!("{}/v1/campaigns/{path}", app.base);
    // No token: 401 whatever the body and the key.
    for body in [json!({}), json!({ "stock": "many" })] {
        for key in [None, Some("k-1")] {
            let mut request = app.client.put(url("pulse-fr%2Fauth")).json(&body);
            if let Some(key) = key {
                request = request.header("Idempotency-Key", key);
            }
            let response = request.send().await.expect("put");
            assert_eq!(response.status(), 401, "{body} {key:?}");
        }
        let response = app
            .client
            .post(url("pulse-fr%2Fauth/close"))
            .json(&body)
            .send()
            .await
            .expect("close");
        assert_eq!(response.status(), 401);
    }
    // A patient: 403 before the body is looked at (an invalid one would be 422).
    for body in [json!({}), json!({ "stock": "many" }), json!([])] {
        let (status, problem) = app.put(&patient, "pulse-fr/auth", &body).await;
        assert_eq!(
            (status, kind(&problem).as_str()),
            (403, "forbidden"),
            "{body}"
        );
    }
    let (status, problem) = app
        .post(Some(&patient), "/v1/campaigns/unknown/close", None)
        .await;
    assert_eq!((status, kind(&problem).as_str()), (403, "forbidden"));
    // An admin gets the validation problem.
    let (status, problem) = app.put(&app.admin(), "pulse-fr/auth", &json!({})).await;
    assert_eq!(status, 422, "{problem}");
    let (status, problem) = app
        .post(Some(&app.admin()), "/v1/campaigns/unknown/close", None)
        .await;
    assert_eq!(
        (status, kind(&problem).as_str()),
        (404, "campaign-not-found")
    );

    // Upsert and close are idempotent; a retry with the same key gets the first answer.
    let now = Utc::now();
    let body = TestApp::body(
        10,
        1,
        now - chrono::Duration::seconds(1),
        now + chrono::Duration::hours(1),
    );
    let put = |key: &'static str| {
        app.client
            .put(url("pulse-fr%2Fauth"))
            .bearer_auth(app.admin())
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let first = put("upsert-1").await.expect("put");
    assert_eq!(first.status(), 200);
    let first: serde_json::Value = first.json().await.expect("json");
    let again = put("upsert-1").await.expect("put again");
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(
        again.json::<serde_json::Value>().await.expect("json"),
        first
    );
}
