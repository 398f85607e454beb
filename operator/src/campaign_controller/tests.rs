//! The campaign reconciler against a real `marketing` (started here with its own database, real
//! Redis and Kafka) and a mocked Kubernetes API (each expected call asserted; a missing or extra
//! call fails the test).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use http::Method;
use kube::runtime::controller::Action;
use pulse_kit::component::Component;
use pulse_kit::server::{RunningServer, start};
use pulse_kit::testing::{self, TestDatabase};
use pulse_proto::marketing::v1 as pb;
use serde_json::json;

use super::*;
use crate::campaign::SKEW_RETRY;
use crate::crd::VoucherSpec;
use crate::fixtures::{
    self, Call, Recorded, Reply, assert_patched, deleting, finalized, finalizer_call, normal,
    warning,
};
use crate::marketing::MarketingSettings;
use crate::metrics::Metrics;
use crate::reconciler::error_policy;

const NS: &str = "pulse-fr";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/pulse-fr/events";
const TENANT: &str = "/apis/pulse.dev/v1alpha1/countrytenants/fr";
const NAMESPACE: &str = "/api/v1/namespaces/pulse-fr";
const POLL: Duration = Duration::from_secs(10);

// ------------------------------------------------------------------ a real marketing server

struct Marketing {
    _db: TestDatabase,
    _server: RunningServer,
    http: String,
    grpc: SocketAddr,
    client: reqwest::Client,
}

/// France with rate limits far above what the test sends.
fn france() -> pulse_kit::config::CountryConfig {
    let mut country = testing::france();
    country.rate_limits.seckill_attempts_per_second = 1_000;
    country
}

impl Marketing {
    async fn start() -> Self {
        let db = TestDatabase::create().await;
        let marketing = pulse_marketing::Marketing;
        pulse_kit::db::migrate(&db.url, marketing.name(), marketing.migrations())
            .await
            .expect("migrate");
        let mut settings = testing::server_settings(&db.url, &testing::redis_url());
        settings.db_max_connections = 5;
        let components: Vec<Arc<dyn Component>> = vec![Arc::new(marketing)];
        let server = start(&settings, france(), components)
            .await
            .expect("marketing starts");
        Self {
            http: format!("http://{}", server.http_addr),
            grpc: server.grpc_addr,
            _server: server,
            _db: db,
            client: reqwest::Client::new(),
        }
    }

    /// How the operator reaches this server (whatever the namespace).
    fn settings(&self) -> MarketingSettings {
        MarketingSettings {
            url_template: format!("http://{}", self.grpc),
            timeout: Duration::from_secs(5),
        }
    }

    /// A seckill attempt through marketing's public HTTP API; returns the HTTP status.
    async fn buy(&self, campaign_id: &str, user: &str) -> u16 {
        let encoded = campaign_id.replace('/', "%2F");
        let response = self
            .client
            .post(format!("{}/v1/seckill/{encoded}/orders", self.http))
            .bearer_auth(testing::token(user, &["customer"], "FR"))
            .send()
            .await
            .expect("seckill request");
        response.status().as_u16()
    }

    /// What marketing says about a campaign (its own gRPC API, not the operator's status).
    async fn status(&self, campaign_id: &str) -> pb::CampaignStatus {
        MarketingClient::new(self.settings())
            .get_status(NS, campaign_id)
            .await
            .expect("GetStatus")
            .expect("marketing knows the campaign")
    }
}

// --------------------------------------------------------------------- objects and API calls

fn at(now: DateTime<Utc>, seconds: i64) -> DateTime<Utc> {
    now + chrono::Duration::seconds(seconds)
}

/// A whole-second "now", so that times survive every round trip exactly.
fn now_seconds() -> DateTime<Utc> {
    DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("now")
}

fn campaign(
    name: &str,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    stock: i64,
) -> SeckillCampaign {
    let mut campaign = SeckillCampaign::new(
        name,
        SeckillCampaignSpec {
            voucher: VoucherSpec {
                title: "10 EUR off".into(),
                value: 1000,
            },
            price: 100,
            stock,
            per_user_limit: 1,
            starts_at,
            ends_at,
        },
    );
    campaign.metadata.namespace = Some(NS.into());
    campaign.metadata.uid = Some(format!("uid-{name}"));
    campaign.metadata.generation = Some(1);
    campaign.metadata.resource_version = Some("1".into());
    campaign
}

fn object_path(name: &str) -> String {
    format!("/apis/pulse.dev/v1alpha1/namespaces/{NS}/seckillcampaigns/{name}")
}

fn status_path(name: &str) -> String {
    format!("{}/status", object_path(name))
}

fn tenant_call() -> Call {
    Call::new(Method::GET, TENANT).reply(Reply::Json(
        200,
        serde_json::to_value(fixtures::tenant()).expect("tenant JSON"),
    ))
}

fn status_call(campaign: &SeckillCampaign) -> Call {
    fixtures::status_call(status_path(&campaign.name_any()), campaign)
}

fn event_call() -> Call {
    Call::new(Method::POST, EVENTS)
}

fn status_of(recorded: &[Recorded], name: &str) -> SeckillCampaignStatus {
    fixtures::last_status(recorded, &status_path(name), "SeckillCampaign")
}

fn condition_of<'a>(status: &'a SeckillCampaignStatus, type_: &str) -> &'a Condition {
    fixtures::condition(&status.conditions, type_)
}

fn events_of(recorded: &[Recorded]) -> Vec<(String, String)> {
    fixtures::events_of(recorded, EVENTS)
}

fn event_notes(recorded: &[Recorded]) -> Vec<String> {
    recorded
        .iter()
        .filter(|r| r.path == EVENTS)
        .map(|r| r.body["note"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// A pass that upserts `campaign`: the currency lookup, the status, then `events` Events.
fn upsert_calls(campaign: &SeckillCampaign, events: usize) -> Vec<Call> {
    let mut calls = vec![tenant_call(), status_call(campaign)];
    calls.extend((0..events).map(|_| event_call()));
    calls
}

/// The object as the API server has it after the pass that `recorded` shows: its status is the
/// one the operator wrote, with a new resource version.
fn after(campaign: &SeckillCampaign, recorded: &[Recorded]) -> SeckillCampaign {
    let mut next = campaign.clone();
    next.status = Some(status_of(recorded, &campaign.name_any()));
    let version: u64 = campaign
        .metadata
        .resource_version
        .as_deref()
        .unwrap_or("1")
        .parse()
        .expect("numeric version");
    next.metadata.resource_version = Some((version + 1).to_string());
    next
}

fn campaigns(settings: MarketingSettings) -> Campaigns {
    Campaigns {
        marketing: MarketingClient::new(settings),
        poll: POLL,
    }
}

/// One reconciliation with a fresh context whose clock reads `now`, against `calls`.
async fn reconcile_with(
    settings: &MarketingSettings,
    now: DateTime<Utc>,
    campaign: &SeckillCampaign,
    calls: Vec<Call>,
) -> (Result<Action, Error>, Vec<Recorded>, Arc<CampaignContext>) {
    let (ctx, server) = fixtures::context(campaigns(settings.clone()));
    let ctx = Arc::new(ctx.with_clock(Arc::new(move || now)));
    let limit = Duration::from_secs(30);
    let (result, recorded) =
        fixtures::reconcile_scripted(campaign, ctx.clone(), server, calls, limit).await;
    (result, recorded, ctx)
}

// ---------------------------------------------------------------------------------- scenarios

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_campaign_follows_the_sales_and_is_closed_on_delete() {
    let marketing = Marketing::start().await;
    let settings = marketing.settings();
    let now = now_seconds();
    let id = "pulse-fr/summer-sale";
    let c = campaign("summer-sale", at(now, -60), at(now, 3600), 5);

    // 1. The finalizer comes first; nothing is sent to marketing yet.
    let (result, recorded, _) = reconcile_with(
        &settings,
        now,
        &c,
        vec![finalizer_call(object_path("summer-sale"), &c, true)],
    )
    .await;
    assert_eq!(result.expect("ok"), Action::await_change());
    assert_patched(
        &recorded[0],
        json!({"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}),
    );
    assert!(
        MarketingClient::new(settings.clone())
            .get_status(NS, id)
            .await
            .expect("GetStatus")
            .is_none(),
        "not upserted before the finalizer is in place"
    );

    // 2. First sync: the currency comes from the tenant, Upsert creates the campaign.
    let c = finalized(c);
    let (result, recorded, ctx) = reconcile_with(&settings, now, &c, upsert_calls(&c, 2)).await;
    // Open for an hour: the next look is the poll interval.
    assert_eq!(result.expect("ok"), Action::requeue(POLL));
    assert_eq!(
        ctx.metrics
            .failure_count(CONTROLLER, "marketing_unavailable"),
        0
    );
    let in_marketing = marketing.status(id).await;
    assert_eq!(
        (
            in_marketing.phase(),
            in_marketing.stock,
            in_marketing.sold,
            in_marketing.remaining
        ),
        (pb::CampaignPhase::Active, 5, 0, 5)
    );
    let status = status_of(&recorded, "summer-sale");
    assert_eq!(status.phase, Some(CampaignPhase::Active));
    assert_eq!((status.sold, status.remaining), (Some(0), Some(5)));
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.last_sync_time, Some(now));
    let ready = condition_of(&status, READY);
    assert_eq!(
        (
            ready.status,
            ready.reason.as_str(),
            ready.observed_generation
        ),
        (ConditionStatus::True, "Synced", Some(1))
    );
    assert!(ready.message.contains("0 of 5 sold"), "{}", ready.message);
    assert!(
        ready.message.contains(&settings.url_for(NS)),
        "{}",
        ready.message
    );
    assert_eq!(
        condition_of(&status, DEGRADED).status,
        ConditionStatus::False
    );
    assert_eq!(events_of(&recorded), [normal("Upserted"), normal("Active")]);
    assert!(
        event_notes(&recorded)[0].contains("generation 1 is new"),
        "{:?}",
        event_notes(&recorded)
    );

    // 3. Real purchases through marketing's HTTP API.
    for user in ["u1", "u2", "u3"] {
        assert_eq!(marketing.buy(id, user).await, 202, "{user} buys");
    }
    assert_eq!(marketing.buy(id, "u1").await, 409, "one per user");

    // The next pass only reads the sales: no tenant lookup, no Upsert, no Event.
    let c = after(&c, &recorded);
    let (result, recorded, _) = reconcile_with(&settings, now, &c, vec![status_call(&c)]).await;
    assert_eq!(result.expect("ok"), Action::requeue(POLL));
    let status = status_of(&recorded, "summer-sale");
    assert_eq!(status.phase, Some(CampaignPhase::Active));
    assert_eq!((status.sold, status.remaining), (Some(3), Some(2)));
    let ready = condition_of(&status, READY);
    assert!(ready.message.contains("3 of 5 sold"), "{}", ready.message);
    // The condition did not change status, so its transition time stays.
    assert_eq!(
        ready.last_transition_time,
        condition_of(c.status.as_ref().expect("status"), READY).last_transition_time
    );

    // 4. Sold out.
    for user in ["u4", "u5"] {
        assert_eq!(marketing.buy(id, user).await, 202, "{user} buys");
    }
    assert_eq!(marketing.buy(id, "u6").await, 409, "nothing left");
    let c = after(&c, &recorded);
    let (result, recorded, _) =
        reconcile_with(&settings, now, &c, vec![status_call(&c), event_call()]).await;
    // Stock can come back (unpaid orders), so a sold-out campaign is still polled.
    assert_eq!(result.expect("ok"), Action::requeue(POLL));
    let status = status_of(&recorded, "summer-sale");
    assert_eq!(status.phase, Some(CampaignPhase::SoldOut));
    assert_eq!((status.sold, status.remaining), (Some(5), Some(0)));
    assert_eq!(events_of(&recorded), [normal("SoldOut")]);

    // 5. A spec change (new generation) is upserted; what was sold stays sold.
    let mut c = after(&c, &recorded);
    c.metadata.generation = Some(2);
    c.spec.ends_at = at(now, 7200);
    c.spec.voucher.title = "12 EUR off".into();
    let (result, recorded, _) = reconcile_with(&settings, now, &c, upsert_calls(&c, 1)).await;
    assert_eq!(result.expect("ok"), Action::requeue(POLL));
    let in_marketing = marketing.status(id).await;
    assert_eq!(
        in_marketing.ends_at.as_ref().map(|t| t.seconds),
        Some(at(now, 7200).timestamp())
    );
    assert_eq!((in_marketing.sold, in_marketing.remaining), (5, 0));
    let status = status_of(&recorded, "summer-sale");
    assert_eq!(status.observed_generation, Some(2));
    assert_eq!(condition_of(&status, READY).observed_generation, Some(2));
    assert_eq!(events_of(&recorded), [normal("Upserted")]);

    // 6. Deletion closes the campaign in marketing, then removes the finalizer.
    let c = deleting(after(&c, &recorded));
    let close_calls = || {
        vec![
            event_call(),
            finalizer_call(object_path("summer-sale"), &c, false),
        ]
    };
    let (result, recorded, _) = reconcile_with(&settings, now, &c, close_calls()).await;
    assert_eq!(result.expect("ok"), Action::await_change());
    assert_eq!(events_of(&recorded), [normal("Closed")]);
    assert!(
        event_notes(&recorded)[0].contains("5 of 5 sold"),
        "{:?}",
        event_notes(&recorded)
    );
    assert_patched(
        &recorded[1],
        json!({"op": "remove", "path": "/metadata/finalizers/0"}),
    );
    let in_marketing = marketing.status(id).await;
    assert_eq!(in_marketing.phase(), pb::CampaignPhase::Ended);
    assert!(in_marketing.closed);
    assert_eq!(
        marketing.buy(id, "u7").await,
        409,
        "closed campaigns refuse"
    );

    // Closing again (a retry after a lost response) is fine: Close is idempotent.
    let (result, recorded, _) = reconcile_with(&settings, now, &c, close_calls()).await;
    assert_eq!(result.expect("ok"), Action::await_change());
    assert_eq!(events_of(&recorded), [normal("Closed")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeues_at_the_start_and_the_end_and_repairs_marketing() {
    let marketing = Marketing::start().await;
    let settings = marketing.settings();
    let now = now_seconds();

    // A scheduled campaign: upserted with its stock, looked at again exactly at its start.
    let c = finalized(campaign("night-sale", at(now, 3600), at(now, 7200), 7));
    let (result, recorded, _) = reconcile_with(&settings, now, &c, upsert_calls(&c, 2)).await;
    assert_eq!(
        result.expect("ok"),
        Action::requeue(Duration::from_secs(3600))
    );
    let status = status_of(&recorded, "night-sale");
    assert_eq!(status.phase, Some(CampaignPhase::Scheduled));
    assert_eq!((status.sold, status.remaining), (Some(0), Some(7)));
    assert_eq!(
        events_of(&recorded),
        [normal("Upserted"), normal("Scheduled")]
    );
    let in_marketing = marketing.status("pulse-fr/night-sale").await;
    assert_eq!(
        (in_marketing.phase(), in_marketing.stock),
        (pb::CampaignPhase::Scheduled, 7)
    );
    assert_eq!(
        marketing.buy("pulse-fr/night-sale", "early").await,
        409,
        "not started"
    );

    // At the start (by the operator's clock) marketing, whose clock is still before it, says
    // Scheduled: look again shortly instead of a whole poll later.
    let c = after(&c, &recorded);
    let (result, _, _) = reconcile_with(&settings, at(now, 3600), &c, vec![status_call(&c)]).await;
    assert_eq!(result.expect("ok"), Action::requeue(SKEW_RETRY));

    // An open campaign that ends before the next poll: looked at again exactly at its end.
    let now = now_seconds();
    let c = finalized(campaign("last-minute", at(now, -60), at(now, 8), 3));
    let (result, recorded, _) = reconcile_with(&settings, now, &c, upsert_calls(&c, 2)).await;
    assert_eq!(result.expect("ok"), Action::requeue(Duration::from_secs(8)));
    assert_eq!(
        status_of(&recorded, "last-minute").phase,
        Some(CampaignPhase::Active)
    );

    // A campaign whose status says it was synced, but marketing does not know it (its database
    // was replaced, say), after a failure: upserted again, and the recovery is announced.
    let mut c = finalized(campaign("lost", at(now, -60), at(now, 3600), 4));
    c.status = Some(SeckillCampaignStatus {
        observed_generation: Some(1),
        conditions: vec![
            Condition::new(
                READY,
                ConditionStatus::False,
                "MarketingUnavailable",
                "down",
                Some(1),
                at(now, -30),
            ),
            Condition::new(
                DEGRADED,
                ConditionStatus::True,
                "MarketingUnavailable",
                "down",
                Some(1),
                at(now, -30),
            ),
        ],
        phase: Some(CampaignPhase::Active),
        sold: Some(0),
        remaining: Some(4),
        last_sync_time: Some(at(now, -40)),
    });
    let (result, recorded, _) = reconcile_with(&settings, now, &c, upsert_calls(&c, 2)).await;
    assert_eq!(result.expect("ok"), Action::requeue(POLL));
    assert_eq!(
        events_of(&recorded),
        [normal("Upserted"), normal("Recovered")]
    );
    assert!(
        event_notes(&recorded)[0].contains("did not know"),
        "{:?}",
        event_notes(&recorded)
    );
    let status = status_of(&recorded, "lost");
    assert_eq!(
        condition_of(&status, DEGRADED).status,
        ConditionStatus::False
    );
    assert_eq!(condition_of(&status, READY).status, ConditionStatus::True);
    assert_eq!(marketing.status("pulse-fr/lost").await.stock, 4);

    // Marketing's stock changed behind the operator's back (admin API): the spec wins again.
    let mut drifted =
        pulse_proto::marketing::v1::campaign_admin_client::CampaignAdminClient::connect(format!(
            "http://{}",
            marketing.grpc
        ))
        .await
        .expect("connect");
    let c = after(&c, &recorded);
    let mut request = upsert_request(&c.spec, "pulse-fr/lost", "EUR").expect("request");
    request.stock = 40;
    drifted.upsert(request).await.expect("drift");
    let (result, recorded, _) = reconcile_with(&settings, now, &c, upsert_calls(&c, 1)).await;
    assert_eq!(result.expect("ok"), Action::requeue(POLL));
    assert!(
        event_notes(&recorded)[0].contains("stock 40 instead of 4"),
        "{:?}",
        event_notes(&recorded)
    );
    assert_eq!(marketing.status("pulse-fr/lost").await.stock, 4);
    assert_eq!(status_of(&recorded, "lost").remaining, Some(4));

    // An ended campaign is not looked at again until it changes.
    let c = finalized(campaign("yesterday", at(now, -7200), at(now, -3600), 2));
    let (result, recorded, _) = reconcile_with(&settings, now, &c, upsert_calls(&c, 2)).await;
    assert_eq!(result.expect("ok"), Action::await_change());
    assert_eq!(
        status_of(&recorded, "yesterday").phase,
        Some(CampaignPhase::Ended)
    );

    // Marketing refuses what it cannot sell: Degraded with its message, metric, Warning.
    let c = finalized(campaign("empty", at(now, 60), at(now, 120), 0));
    let (result, recorded, ctx) = reconcile_with(&settings, now, &c, upsert_calls(&c, 1)).await;
    let err = result.expect_err("stock 0 is refused");
    assert_eq!(err.metric_label(), "marketing_rejected");
    assert_eq!(
        ctx.metrics.failure_count(CONTROLLER, "marketing_rejected"),
        1
    );
    let status = status_of(&recorded, "empty");
    let degraded = condition_of(&status, DEGRADED);
    assert_eq!(
        (degraded.status, degraded.reason.as_str()),
        (ConditionStatus::True, "MarketingRejected")
    );
    assert!(degraded.message.contains("stock"), "{}", degraded.message);
    assert_eq!(status.observed_generation, None, "nothing was accepted");
    assert_eq!(events_of(&recorded), [warning("MarketingRejected")]);
}

// ------------------------------------------------------------------- marketing unreachable

/// Settings pointing at a port where nothing listens.
fn unreachable() -> MarketingSettings {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    MarketingSettings {
        url_template: format!("http://127.0.0.1:{port}"),
        timeout: Duration::from_secs(2),
    }
}

#[tokio::test]
async fn an_unreachable_marketing_degrades_counts_and_backs_off() {
    let settings = unreachable();
    let now = now_seconds();
    let c = finalized(campaign("summer-sale", at(now, -60), at(now, 3600), 5));
    let (result, recorded, ctx) = reconcile_with(&settings, now, &c, upsert_calls(&c, 1)).await;
    let err = result.expect_err("unreachable");
    assert_eq!(err.metric_label(), "marketing_unavailable");
    assert_eq!(
        ctx.metrics
            .failure_count(CONTROLLER, "marketing_unavailable"),
        1
    );
    assert!(
        ctx.metrics.encode().contains(
            "pulse_operator_reconcile_failures_total{controller=\"seckillcampaign\",error=\"marketing_unavailable\"} 1"
        )
    );
    let status = status_of(&recorded, "summer-sale");
    let degraded = condition_of(&status, DEGRADED);
    assert_eq!(
        (
            degraded.status,
            degraded.reason.as_str(),
            degraded.observed_generation
        ),
        (ConditionStatus::True, "MarketingUnavailable", Some(1))
    );
    assert!(
        degraded.message.contains(&settings.url_for(NS))
            && degraded.message.contains("CampaignAdmin/Upsert"),
        "{}",
        degraded.message
    );
    assert_eq!(condition_of(&status, READY).status, ConditionStatus::False);
    assert_eq!(status.phase, None);
    assert_eq!(events_of(&recorded), [warning("MarketingUnavailable")]);

    let campaign = Arc::new(c);
    for seconds in [5, 10, 20, 40] {
        assert_eq!(
            error_policy(campaign.clone(), &err, ctx.clone()),
            Action::requeue(Duration::from_secs(seconds))
        );
    }
}

#[tokio::test]
async fn deletion_keeps_the_finalizer_while_marketing_is_unreachable() {
    let settings = unreachable();
    let now = now_seconds();
    let mut c = finalized(campaign("summer-sale", at(now, -60), at(now, 3600), 5));
    c.status = Some(SeckillCampaignStatus {
        observed_generation: Some(1),
        phase: Some(CampaignPhase::Active),
        sold: Some(2),
        remaining: Some(3),
        ..SeckillCampaignStatus::default()
    });
    let c = deleting(c);
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}, "status": {"phase": "Active"}});
    // No finalizer removal may follow: the mock fails on any extra call.
    let (result, recorded, ctx) = reconcile_with(
        &settings,
        now,
        &c,
        vec![
            Call::new(Method::GET, NAMESPACE).reply(Reply::Json(200, namespace)),
            status_call(&c),
            event_call(),
        ],
    )
    .await;
    let err = result.expect_err("Close failed");
    assert_eq!(err.metric_label(), "marketing_unavailable");
    assert_eq!(
        ctx.metrics
            .failure_count(CONTROLLER, "marketing_unavailable"),
        1
    );
    let status = status_of(&recorded, "summer-sale");
    let degraded = condition_of(&status, DEGRADED);
    assert_eq!(degraded.reason, "CloseFailed");
    assert!(
        degraded.message.contains("CampaignAdmin/Close")
            && degraded.message.contains("retried with backoff")
            && degraded.message.contains(FINALIZER),
        "{}",
        degraded.message
    );
    // The last mirrored sales stay.
    assert_eq!((status.sold, status.remaining), (Some(2), Some(3)));
    assert_eq!(events_of(&recorded), [warning("CloseFailed")]);
    assert_eq!(
        error_policy(Arc::new(c), &err, ctx),
        Action::requeue(Duration::from_secs(5))
    );
}

#[tokio::test]
async fn deletion_gives_up_closing_when_the_namespace_goes_away() {
    let settings = unreachable();
    let now = now_seconds();
    let c = deleting(finalized(campaign(
        "summer-sale",
        at(now, -60),
        at(now, 3600),
        5,
    )));
    let (result, recorded, _) = reconcile_with(
        &settings,
        now,
        &c,
        vec![
            Call::new(Method::GET, NAMESPACE).reply(Reply::Error(404, "NotFound")),
            event_call(),
            finalizer_call(object_path("summer-sale"), &c, false),
        ],
    )
    .await;
    assert_eq!(result.expect("ok"), Action::await_change());
    assert_eq!(events_of(&recorded), [warning("CloseSkipped")]);
}

#[tokio::test]
async fn a_namespace_without_a_country_is_degraded() {
    let settings = unreachable();
    let now = now_seconds();
    let c = finalized(campaign("summer-sale", at(now, -60), at(now, 3600), 5));
    let (result, recorded, ctx) = reconcile_with(
        &settings,
        now,
        &c,
        vec![
            Call::new(Method::GET, TENANT).reply(Reply::Error(404, "NotFound")),
            status_call(&c),
            event_call(),
        ],
    )
    .await;
    assert_eq!(result.expect_err("no tenant").metric_label(), "no_country");
    assert_eq!(ctx.metrics.failure_count(CONTROLLER, "no_country"), 1);
    let degraded = condition_of(&status_of(&recorded, "summer-sale"), DEGRADED).clone();
    assert_eq!(degraded.reason, "NoCountry");
    assert!(
        degraded.message.contains("CountryTenant `fr`"),
        "{}",
        degraded.message
    );
}

/// A `marketing` that answers `Upsert` with a phase this operator does not know (a newer one).
struct NewerMarketing;

#[tonic::async_trait]
impl pb::campaign_admin_server::CampaignAdmin for NewerMarketing {
    async fn upsert(
        &self,
        request: tonic::Request<pb::UpsertCampaignRequest>,
    ) -> Result<tonic::Response<pb::CampaignStatus>, tonic::Status> {
        let r = request.into_inner();
        Ok(tonic::Response::new(pb::CampaignStatus {
            campaign_id: r.campaign_id,
            phase: 9,
            stock: r.stock,
            sold: 0,
            remaining: r.stock,
            starts_at: r.starts_at,
            ends_at: r.ends_at,
            closed: false,
        }))
    }

    async fn get_status(
        &self,
        _request: tonic::Request<pb::GetCampaignStatusRequest>,
    ) -> Result<tonic::Response<pb::CampaignStatus>, tonic::Status> {
        Err(tonic::Status::not_found("unknown campaign"))
    }

    async fn close(
        &self,
        _request: tonic::Request<pb::CloseCampaignRequest>,
    ) -> Result<tonic::Response<pb::CampaignStatus>, tonic::Status> {
        Err(tonic::Status::not_found("unknown campaign"))
    }
}

/// The phase is marketing's to say; one the operator does not know is not replaced by a guess.
#[tokio::test]
async fn a_phase_marketing_does_not_say_is_refused() {
    let incoming =
        tonic::transport::server::TcpIncoming::bind(([127, 0, 0, 1], 0).into()).expect("bind");
    let addr = incoming.local_addr().expect("addr");
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::campaign_admin_server::CampaignAdminServer::new(
                NewerMarketing,
            ))
            .serve_with_incoming(incoming),
    );
    let settings = MarketingSettings {
        url_template: format!("http://{addr}"),
        timeout: Duration::from_secs(5),
    };
    let now = now_seconds();
    let c = finalized(campaign("summer-sale", at(now, -60), at(now, 3600), 5));
    let (result, recorded, ctx) = reconcile_with(&settings, now, &c, upsert_calls(&c, 1)).await;
    server.abort();
    let err = result.expect_err("unknown phase");
    assert_eq!(err.metric_label(), "marketing_incompatible");
    assert_eq!(
        ctx.metrics
            .failure_count(CONTROLLER, "marketing_incompatible"),
        1
    );
    let status = status_of(&recorded, "summer-sale");
    let degraded = condition_of(&status, DEGRADED);
    assert_eq!(
        (degraded.status, degraded.reason.as_str()),
        (ConditionStatus::True, "MarketingIncompatible")
    );
    assert!(
        degraded.message.contains("phase 9") && degraded.message.contains(&addr.to_string()),
        "{}",
        degraded.message
    );
    assert_eq!(status.phase, None);
    assert_eq!(events_of(&recorded), [warning("MarketingIncompatible")]);
}

// ------------------------------------------------------------------------------ pure rules

fn marketing_status(phase: pb::CampaignPhase, stock: u32, sold: u32) -> pb::CampaignStatus {
    pb::CampaignStatus {
        campaign_id: "pulse-fr/x".into(),
        phase: phase.into(),
        stock,
        sold,
        remaining: stock - sold,
        starts_at: None,
        ends_at: None,
        closed: false,
    }
}

#[test]
fn only_spec_finalizer_and_deletion_changes_wake_the_controller() {
    let now = now_seconds();
    let c = campaign("x", at(now, 60), at(now, 120), 5);
    let base = worth_reconciling(&c);

    let mut status_only = c.clone();
    status_only.status = Some(SeckillCampaignStatus {
        sold: Some(3),
        last_sync_time: Some(now),
        ..SeckillCampaignStatus::default()
    });
    status_only.metadata.resource_version = Some("99".into());
    assert_eq!(worth_reconciling(&status_only), base);

    let mut spec = c.clone();
    spec.metadata.generation = Some(2);
    assert_ne!(worth_reconciling(&spec), base);
    assert_ne!(worth_reconciling(&finalized(c.clone())), base);
    assert_ne!(worth_reconciling(&deleting(c)), base);
}

#[test]
fn next_action_follows_the_clock_and_marketing() {
    let now = now_seconds();
    let c = campaign("x", at(now, 3600), at(now, 7200), 5);
    let scheduled = marketing_status(pb::CampaignPhase::Scheduled, 5, 0);
    assert_eq!(
        next_action(&c.spec, &scheduled, now, POLL),
        Action::requeue(Duration::from_secs(3600))
    );
    let active = marketing_status(pb::CampaignPhase::Active, 5, 1);
    assert_eq!(
        next_action(&c.spec, &active, at(now, 3600), POLL),
        Action::requeue(POLL)
    );
    assert_eq!(
        next_action(&c.spec, &active, at(now, 7197), POLL),
        Action::requeue(Duration::from_secs(3))
    );
    // marketing still open although the end has passed by the operator's clock.
    assert_eq!(
        next_action(&c.spec, &active, at(now, 7200), POLL),
        Action::requeue(SKEW_RETRY)
    );
    let ended = marketing_status(pb::CampaignPhase::Ended, 5, 5);
    assert_eq!(
        next_action(&c.spec, &ended, at(now, 7200), POLL),
        Action::await_change()
    );
    // Closed early: nothing more to follow.
    let mut closed = active.clone();
    closed.closed = true;
    closed.phase = pb::CampaignPhase::Ended.into();
    assert_eq!(
        next_action(&c.spec, &closed, at(now, 4000), POLL),
        Action::await_change()
    );
    assert_eq!(marketing_phase(&closed), Some(CampaignPhase::Ended));
    // The phase is marketing's to say: without one the operator has none to show (and the
    // pass fails as `MarketingIncompatible`, see `a_phase_marketing_does_not_say_is_refused`).
    let unspecified = marketing_status(pb::CampaignPhase::Unspecified, 5, 5);
    assert_eq!(marketing_phase(&unspecified), None);
}

#[test]
fn upsert_requests_carry_the_spec() {
    let now = now_seconds();
    let c = campaign("x", at(now, 60), at(now, 120), 5);
    let request = upsert_request(&c.spec, "pulse-fr/x", "EUR").expect("request");
    assert_eq!(request.campaign_id, "pulse-fr/x");
    assert_eq!(request.voucher_title, "10 EUR off");
    assert_eq!(
        (
            request.voucher_value_minor,
            request.price_minor,
            request.stock,
            request.per_user_limit
        ),
        (1000, 100, 5, 1)
    );
    assert_eq!(request.currency, "EUR");
    assert_eq!(
        request.starts_at.as_ref().map(|t| t.seconds),
        Some(at(now, 60).timestamp())
    );

    let mut huge = c.spec.clone();
    huge.stock = i64::from(u32::MAX) + 1;
    let err = upsert_request(&huge, "pulse-fr/x", "EUR").expect_err("too big");
    assert_eq!(err.reason(), "InvalidSpec");

    // The spec as marketing holds it does not drift; another stock does.
    let mut held = marketing_status(pb::CampaignPhase::Scheduled, 5, 0);
    held.starts_at = request.starts_at;
    held.ends_at = request.ends_at;
    assert_eq!(drift(&c.spec, &held), None);
    held.stock = 6;
    assert!(
        drift(&c.spec, &held).is_some_and(|d| d.contains("stock 6 instead of 5")),
        "{:?}",
        drift(&c.spec, &held)
    );
}

#[test]
fn ids_are_namespace_and_name() {
    assert_eq!(
        campaign_id("pulse-fr", "summer-sale"),
        "pulse-fr/summer-sale"
    );
}

// ----------------------------------------------------------------- the running controller

/// The controller as `pulse-operator run` starts it, against a scripted API server that answers
/// by path (the watch and the reconciler run concurrently, so no strict order): a campaign is
/// listed and reconciled; the operator's own status write coming back through the watch does
/// not reconcile it again; a new generation does.
#[tokio::test]
async fn the_controller_reconciles_on_spec_changes_but_not_on_status_writes() {
    use http::{Request, Response};
    use kube::client::Body;
    use std::pin::Pin;
    use tokio::time::{Instant, Sleep, sleep, sleep_until};

    let now = now_seconds();
    let mut listed = finalized(campaign("summer-sale", at(now, -60), at(now, 3600), 5));
    listed.status = Some(SeckillCampaignStatus {
        observed_generation: Some(1),
        phase: Some(CampaignPhase::Active),
        sold: Some(1),
        remaining: Some(4),
        ..SeckillCampaignStatus::default()
    });
    // What the watch later reports: first only the status changed, then the spec.
    let mut status_only = listed.clone();
    status_only.metadata.resource_version = Some("2".into());
    status_only.status = Some(SeckillCampaignStatus {
        sold: Some(2),
        remaining: Some(3),
        ..listed.status.clone().expect("status")
    });
    let mut new_generation = status_only.clone();
    new_generation.metadata.resource_version = Some("3".into());
    new_generation.metadata.generation = Some(2);
    new_generation.spec.voucher.title = "12 EUR off".into();

    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let ctx = Arc::new(CampaignContext::new(
        client,
        Arc::new(Metrics::new()),
        fixtures::reporter(),
        campaigns(unreachable()),
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(run(ctx.clone(), async move {
        let _ = stop_rx.await;
    }));

    type Responder = tower_test::mock::SendResponse<Response<Body>>;
    fn json_response(code: u16, body: &serde_json::Value) -> Response<Body> {
        Response::builder()
            .status(code)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(body).expect("json")))
            .expect("response")
    }
    fn watch_response(object: &SeckillCampaign) -> Response<Body> {
        let line = json!({"type": "MODIFIED", "object": object});
        let mut bytes = serde_json::to_vec(&line).expect("json");
        bytes.push(b'\n');
        Response::builder()
            .status(200)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(bytes))
            .expect("response")
    }

    // What happened, in order: `status` (a status patch), `event`, `tenant` (the currency
    // lookup), `status-only` and `new-generation` (the watch answers).
    let mut log: Vec<&'static str> = Vec::new();
    let mut watches = 0;
    let mut first_watch = None;
    // The second watch is answered a second after it came, with the new generation.
    let mut second_watch: Option<(Responder, Pin<Box<Sleep>>)> = None;
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if log.iter().filter(|e| **e == "event").count() == 2 {
            // Give a stray reconciliation a moment to show up before stopping.
            sleep(Duration::from_millis(500)).await;
        }
        let second_due = async {
            match second_watch.as_mut() {
                Some((_, timer)) => timer.as_mut().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep_until(deadline) => break,
            () = second_due => {
                let (send, _) = second_watch.take().expect("second watch");
                send.send_response(watch_response(&new_generation));
                log.push("new-generation");
            }
            next = tokio::time::timeout(Duration::from_millis(600), handle.next_request()) => {
                let Ok(Some((request, send))) = next else {
                    if log.iter().filter(|e| **e == "event").count() >= 2 {
                        break;
                    }
                    continue;
                };
                let path = request.uri().path().to_owned();
                let query = request.uri().query().unwrap_or("").to_owned();
                let method = request.method().clone();
                let body = request.into_body().collect_bytes().await.expect("body");
                let body: serde_json::Value = if body.is_empty() {
                    serde_json::Value::Null
                } else {
                    serde_json::from_slice(&body).expect("JSON body")
                };
                match (method.as_str(), path.as_str()) {
                    ("GET", "/apis/pulse.dev/v1alpha1/seckillcampaigns") if query.contains("watch=true") => {
                        watches += 1;
                        match watches {
                            1 => first_watch = Some(send),
                            2 => second_watch = Some((send, Box::pin(sleep(Duration::from_secs(1))))),
                            _ => held.push(send),
                        }
                    }
                    ("GET", "/apis/pulse.dev/v1alpha1/seckillcampaigns") => {
                        let list = json!({
                            "apiVersion": "pulse.dev/v1alpha1",
                            "kind": "SeckillCampaignList",
                            "metadata": {"resourceVersion": "1"},
                            "items": [listed],
                        });
                        send.send_response(json_response(200, &list));
                    }
                    ("GET", TENANT) => {
                        log.push("tenant");
                        send.send_response(json_response(
                            200,
                            &serde_json::to_value(fixtures::tenant()).expect("tenant"),
                        ));
                    }
                    ("PATCH", p) if p == status_path("summer-sale") => {
                        log.push("status");
                        let mut object = serde_json::to_value(&listed).expect("json");
                        object["status"] = body["status"].clone();
                        send.send_response(json_response(200, &object));
                    }
                    // A new Event, or the next of a series (same reason and object).
                    ("POST", EVENTS) => {
                        log.push("event");
                        send.send_response(json_response(201, &body));
                    }
                    ("PATCH", p) if p.starts_with(&format!("{EVENTS}/")) => {
                        log.push("event");
                        send.send_response(json_response(200, &body));
                    }
                    other => panic!("unexpected call {other:?} (query {query})"),
                }
                // The watch reports the operator's own status write only once it happened.
                if log.contains(&"event") && let Some(send) = first_watch.take() {
                    send.send_response(watch_response(&status_only));
                    log.push("status-only");
                }
            }
        }
    }
    let _ = stop_tx.send(());
    controller.abort();
    drop(held);

    assert_eq!(
        log,
        [
            // The listed campaign: marketing is unreachable, so Degraded.
            "status",
            "event",
            // Its status write comes back: nothing happens.
            "status-only",
            // A new generation is upserted (the currency first), which fails the same way.
            "new-generation",
            "tenant",
            "status",
            "event",
        ]
    );
    assert_eq!(
        ctx.metrics
            .failure_count(CONTROLLER, "marketing_unavailable"),
        2
    );
}
