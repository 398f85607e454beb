//! A `SeckillCampaign` on the real test cluster, run by the real `pulse-operator run` (as the
//! chart's ServiceAccount) against a real `pulse serve --target marketing` process, the way a
//! country runs it: the operator reaches marketing's gRPC through its URL template
//! (`PULSE_MARKETING_GRPC_URL_TEMPLATE`, here the process on loopback instead of the Service
//! `marketing.<namespace>.svc`), buyers buy through marketing's HTTP API, and the campaign's
//! status follows those purchases. Deleting the object closes the campaign in marketing
//! (the finalizer), after which marketing refuses purchases.
//!
//! marketing uses the PostgreSQL, Redis and Kafka that `./dev test` provides (its own database
//! and keyspace). Tenant code of this binary: `at`.

mod support;

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kube::api::Api;
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use pulse_kit::testing::{self, TestDatabase};
use serde_json::{Value, json};
use support::{
    TenantGuard, campaign, client, delete_tenant_and_wait, install_chart, kubectl, kubectl_ok,
    pulse_bin, rfc3339, service_account_kubeconfig, tenant, unique, wait_for,
};

/// The country of this test.
const CODE: &str = "at";
/// How long the operator may take to bring marketing and the status in line (the poll is 1 s).
const FOLLOW: Duration = Duration::from_secs(30);

/// One `pulse serve --target marketing` process with its own database and keyspace; killed
/// on drop.
struct Marketing {
    child: Child,
    log: PathBuf,
    http: u16,
    grpc: u16,
    _db: TestDatabase,
}

impl Marketing {
    /// Starts marketing for the country of `tenant` and waits until it is ready.
    async fn start(tenant: &Value) -> Self {
        let db = TestDatabase::create().await;
        let (http, grpc, admin) = (
            testing::free_port(),
            testing::free_port(),
            testing::free_port(),
        );
        // The keyspace name: at most 20 characters.
        let instance = unique("ce");
        let log = std::env::temp_dir().join(format!("{instance}-marketing.log"));
        let out = File::create(&log).expect("marketing log file");
        let err = out.try_clone().expect("marketing log file");
        let country = &tenant["spec"]["country"];
        let text = |v: &Value| v.as_str().expect("country field").to_owned();
        let child = Command::new(pulse_bin())
            .args(["serve", "--target", "marketing"])
            .env_clear()
            .env("RUST_LOG", "warn")
            .env("PULSE_DATABASE_URL", &db.url)
            .env("PULSE_REDIS_URL", testing::redis_url())
            .env("PULSE_KAFKA_BROKERS", testing::kafka_brokers().join(","))
            .env("PULSE_JWT_SECRET", testing::TEST_JWT_SECRET)
            .env("PULSE_JWT_ISSUER", testing::TEST_JWT_ISSUER)
            .env("PULSE_HTTP_ADDR", format!("127.0.0.1:{http}"))
            .env("PULSE_GRPC_ADDR", format!("127.0.0.1:{grpc}"))
            .env("PULSE_ADMIN_ADDR", format!("127.0.0.1:{admin}"))
            .env("PULSE_DRAIN_SECONDS", "0")
            .env("PULSE_DEVELOPMENT_MODE", "true")
            .env("PULSE_MIGRATE_ON_START", "true")
            .env("PULSE_INSTANCE", &instance)
            .env("PULSE_COUNTRY__CODE", text(&country["code"]))
            .env("PULSE_COUNTRY__TIMEZONE", text(&country["timezone"]))
            .env("PULSE_COUNTRY__CURRENCY", text(&country["currency"]))
            .env("PULSE_COUNTRY__LOCALE", text(&country["locale"]))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", pulse_bin().display()));
        let mut marketing = Self {
            child,
            log,
            http,
            grpc,
            _db: db,
        };
        let readyz = format!("http://127.0.0.1:{admin}/readyz");
        let http_client = reqwest::Client::new();
        let log = marketing.log.clone();
        let child = &mut marketing.child;
        wait_for("marketing to be ready", Duration::from_secs(60), || {
            let exited = child.try_wait().ok().flatten();
            let (http_client, readyz, log) = (http_client.clone(), readyz.clone(), log.clone());
            async move {
                if let Some(status) = exited {
                    panic!(
                        "pulse serve --target marketing exited ({status}):\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                match http_client.get(&readyz).send().await {
                    Ok(r) if r.status() == 200 => Ok(()),
                    Ok(r) => Err(format!("/readyz: {}", r.status())),
                    Err(e) => Err(format!("/readyz: {e}")),
                }
            }
        })
        .await;
        marketing
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    /// `GET /v1/campaigns/{id}` as marketing answers it.
    async fn campaign(&self, id: &str) -> Value {
        let response = reqwest::get(self.url(&format!("/v1/campaigns/{}", encoded(id))))
            .await
            .expect("GET /v1/campaigns/{id}");
        assert_eq!(response.status(), 200, "GET campaign {id}");
        response.json().await.expect("campaign JSON")
    }

    /// One purchase attempt by `buyer`: the HTTP status and the problem type (if refused).
    async fn buy(&self, id: &str, buyer: &str) -> (u16, String) {
        let token = testing::token(buyer, &["customer"], &CODE.to_ascii_uppercase());
        let response = reqwest::Client::new()
            .post(self.url(&format!("/v1/seckill/{}/orders", encoded(id))))
            .bearer_auth(token)
            .send()
            .await
            .expect("POST /v1/seckill/{id}/orders");
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let problem = body["type"].as_str().unwrap_or_default().to_owned();
        (status, problem)
    }
}

impl Drop for Marketing {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A campaign id in a URL path (`/` percent-encoded).
fn encoded(id: &str) -> String {
    id.replace('/', "%2F")
}

/// A campaign open from a minute ago for an hour.
fn open_campaign(namespace: &str, name: &str, stock: i64) -> Value {
    campaign(
        namespace,
        name,
        stock,
        rfc3339(chrono::Duration::minutes(-1)),
        rfc3339(chrono::Duration::hours(1)),
    )
}

/// `kubectl delete` of a campaign, waiting until it is gone (its finalizer run).
fn delete_campaign(namespace: &str, name: &str) {
    kubectl_ok([
        "delete",
        "seckillcampaign",
        name,
        "-n",
        namespace,
        "--timeout=60s",
    ]);
}

/// `kubectl apply -f` of `object` (through a file, as a user does).
fn apply(object: &Value) {
    let path = std::env::temp_dir().join(format!("{}.yaml", unique("campaign-e2e")));
    std::fs::write(&path, serde_yaml::to_string(object).expect("YAML")).expect("write YAML");
    kubectl_ok(["apply", "-f", &path.to_string_lossy()]);
    let _ = std::fs::remove_file(&path);
}

fn campaigns(client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("pulse.dev", "v1alpha1", "SeckillCampaign");
    Api::namespaced_with(client.clone(), namespace, &ApiResource::from_gvk(&gvk))
}

/// What the campaign's status says: (Ready, phase, sold, remaining, observedGeneration).
type Seen = (
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

fn seen(campaign: &DynamicObject) -> Seen {
    let status = &campaign.data["status"];
    let ready = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str())
        .map(str::to_owned);
    (
        ready,
        status["phase"].as_str().map(str::to_owned),
        status["sold"].as_i64(),
        status["remaining"].as_i64(),
        status["observedGeneration"].as_i64(),
    )
}

/// Waits until the campaign's status reads `wanted`.
async fn wait_status(api: &Api<DynamicObject>, name: &str, wanted: Seen) {
    wait_for(
        &format!("SeckillCampaign {name} to show {wanted:?}"),
        FOLLOW,
        || async {
            let campaign = api.get(name).await.map_err(|e| e.to_string())?;
            let now = seen(&campaign);
            if now == wanted {
                Ok(())
            } else {
                Err(format!("status {now:?}: {}", campaign.data["status"]))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_campaign_reaches_marketing_follows_its_sales_and_is_closed_when_deleted() {
    let client = client().await;
    let mut tenant = tenant(CODE);
    // Its namespace goes with it at the end of the test.
    tenant["spec"]["deletionPolicy"] = json!("Delete");
    let marketing = Marketing::start(&tenant).await;

    let chart = install_chart(&unique("pulse-op"));
    let kubeconfig = service_account_kubeconfig(&chart.namespace, &chart.service_account);
    let template = format!("http://127.0.0.1:{}", marketing.grpc);
    let mut operator = support::Operator::spawn_with(
        &kubeconfig,
        &chart.namespace,
        "pulse-operator-0",
        &[
            ("PULSE_MARKETING_GRPC_URL_TEMPLATE", template.as_str()),
            ("PULSE_CAMPAIGN_POLL_SECONDS", "1"),
        ],
    );
    operator.wait_leader(Duration::from_secs(30)).await;

    let _guard = TenantGuard(CODE.to_owned());
    apply(&tenant);
    let namespace = format!("pulse-{CODE}");
    wait_for(
        "the tenant's namespace",
        Duration::from_secs(60),
        || async {
            let out = kubectl(["get", "namespace", &namespace]);
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        },
    )
    .await;
    let api = campaigns(&client, &namespace);

    // Upserted into marketing with the spec, priced in the tenant's currency; the status says so.
    apply(&open_campaign(&namespace, "spring-sale", 5));
    let id = format!("{namespace}/spring-sale");
    let active = |sold, remaining| {
        (
            Some("True".to_owned()),
            Some("Active".to_owned()),
            Some(sold),
            Some(remaining),
            Some(1),
        )
    };
    wait_status(&api, "spring-sale", active(0, 5)).await;
    let held = marketing.campaign(&id).await;
    assert_eq!(
        (
            &held["stock"],
            &held["voucherTitle"],
            &held["priceMinor"],
            &held["currency"],
            &held["closed"],
        ),
        (
            &json!(5),
            &json!("10 EUR off"),
            &json!(100),
            &json!("EUR"),
            &json!(false)
        ),
        "{held}"
    );

    // Real purchases: the status follows them.
    for buyer in ["buyer-1", "buyer-2"] {
        assert_eq!(marketing.buy(&id, buyer).await.0, 202, "{buyer} buys");
    }
    wait_status(&api, "spring-sale", active(2, 3)).await;

    // A small campaign sells out: phase SoldOut, and marketing refuses the next buyer.
    apply(&open_campaign(&namespace, "last-one", 1));
    let last = format!("{namespace}/last-one");
    wait_status(&api, "last-one", active(0, 1)).await;
    assert_eq!(marketing.buy(&last, "buyer-3").await.0, 202);
    wait_status(
        &api,
        "last-one",
        (
            Some("True".to_owned()),
            Some("SoldOut".to_owned()),
            Some(1),
            Some(0),
            Some(1),
        ),
    )
    .await;
    let refused = marketing.buy(&last, "buyer-4").await;
    assert_eq!(refused.0, 409, "{refused:?}");
    assert!(refused.1.ends_with("seckill-sold-out"), "{refused:?}");

    // Deleting the object closes the campaign in marketing before the object goes.
    delete_campaign(&namespace, "spring-sale");
    let held = marketing.campaign(&id).await;
    assert_eq!(held["closed"], json!(true), "{held}");
    let refused = marketing.buy(&id, "buyer-5").await;
    assert_eq!(refused.0, 409, "{refused:?}");
    assert!(refused.1.ends_with("seckill-ended"), "{refused:?}");

    delete_campaign(&namespace, "last-one");
    assert_eq!(marketing.campaign(&last).await["closed"], json!(true));
    delete_tenant_and_wait(&client, CODE, Duration::from_secs(120)).await;
    drop(operator);
}
