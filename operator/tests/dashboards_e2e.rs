//! The dashboards and alerts against a real Prometheus: a `pulse serve --target all` under a
//! short load and the real `pulse-operator run` reconciling a tenant on the test cluster are
//! scraped by a Prometheus of this test (the `prometheus` of `./dev test`, Debian's package),
//! then every metric named by a dashboard panel or an alert rule must be among the scraped
//! names, and every panel's query must return at least one series.
//!
//! Dashboard variables are given the values a user picks: `$country` all countries,
//! `$namespace` all namespaces, `$__rate_interval` one minute. Tenant code of this binary: `ob`.

mod support;

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pulse_kit::testing::{self, TestDatabase};
use serde_json::Value;
use support::{
    Operator, TenantGuard, client, delete_tenant_and_wait, install_chart, kubectl_ok, pulse_bin,
    root, service_account_kubeconfig, tenant, unique, wait_for,
};

/// The country of this test.
const CODE: &str = "ob";

/// A child process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every `expr` in a Grafana dashboard (panel targets, nested rows), in order.
fn exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(expr)) = map.get("expr") {
                out.push(expr.clone());
            }
            for child in map.values() {
                exprs(child, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// The dashboards shipped by the chart: (file name, panel queries).
fn dashboards() -> Vec<(String, Vec<String>)> {
    let dir = root().join("charts/pulse/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboard in {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("dashboard file");
            let json: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            let mut found = Vec::new();
            exprs(&json["panels"], &mut found);
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            assert!(!found.is_empty(), "{name} has no query");
            (name, found)
        })
        .collect()
}

/// The metric names (`pulse_…`) a text mentions; recording rules (`pulse:…`) are not metrics.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("pulse_") {
        let start = i + at;
        let before = start.checked_sub(1).map(|b| bytes[b]);
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if !before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
            names.insert(text[start..end].to_owned());
        }
        i = end;
    }
    names
}

/// A dashboard query as Grafana sends it with every variable set to "all".
fn concrete(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("${country}", ".*")
        .replace("$country", ".*")
        .replace("${namespace}", ".*")
        .replace("$namespace", ".*")
}

/// What Prometheus scrapes: a job, its address and the labels it adds.
struct Target<'a> {
    job: &'a str,
    address: String,
    labels: &'a [(&'a str, &'a str)],
}

/// A Prometheus of this test scraping `targets` every second.
fn start_prometheus(dir: &Path, targets: &[Target<'_>]) -> (Killed, u16) {
    let mut config = String::from(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
    );
    for Target {
        job,
        address,
        labels,
    } in targets
    {
        config.push_str(&format!(
            "  - job_name: {job}\n    static_configs:\n      - targets: ['{address}']\n"
        ));
        if !labels.is_empty() {
            config.push_str("        labels:\n");
            for (name, value) in *labels {
                config.push_str(&format!("          {name}: '{value}'\n"));
            }
        }
    }
    let file = dir.join("prometheus.yml");
    std::fs::write(&file, config).expect("prometheus.yml");
    let port = testing::free_port();
    let log = File::create(dir.join("prometheus.log")).expect("prometheus log");
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", file.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start prometheus ({e}): run through `./dev test`, which installs it")
        });
    (Killed(child), port)
}

/// `GET /api/v1/<path>` of the Prometheus on `port`: its `data`.
async fn prometheus_api(
    http: &reqwest::Client,
    port: u16,
    path: &str,
    query: &[(&str, &str)],
) -> Result<Value, String> {
    let response = http
        .get(format!("http://127.0.0.1:{port}/api/v1/{path}"))
        .query(query)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    if !status.is_success() || body["status"] != "success" {
        return Err(format!("{status}: {body}"));
    }
    Ok(body["data"].clone())
}

#[tokio::test]
async fn every_dashboard_panel_and_alert_is_backed_by_scraped_series() {
    let dashboards = dashboards();
    let rules = std::fs::read_to_string(root().join("charts/pulse/templates/prometheusrule.yaml"))
        .expect("charts/pulse/templates/prometheusrule.yaml");
    let dir = std::env::temp_dir().join(unique("dashboards-e2e"));
    std::fs::create_dir_all(&dir).expect("work directory");

    // The operator, as the chart installs it, reconciling a tenant and failing on a campaign
    // whose namespace has no tenant: its reconcile, failure and duration series all exist.
    let kube = client().await;
    let release = unique("obs-op");
    let chart = install_chart(&release);
    let kubeconfig = service_account_kubeconfig(&release, &chart.service_account);
    let mut operator = Operator::spawn(&kubeconfig, &release, "obs-operator-0");
    operator.wait_leader(Duration::from_secs(60)).await;
    let _tenant = TenantGuard(CODE.to_owned());
    let path = dir.join("tenant.yaml");
    std::fs::write(&path, serde_yaml::to_string(&tenant(CODE)).expect("YAML")).expect("tenant");
    kubectl_ok(["apply", "-f", &path.to_string_lossy()]);
    let orphan = unique("obs-no-tenant");
    kubectl_ok(["create", "namespace", &orphan]);
    let campaign = support::campaign(
        &orphan,
        "orphan",
        1,
        support::rfc3339(chrono::Duration::minutes(-1)),
        support::rfc3339(chrono::Duration::hours(1)),
    );
    let path = dir.join("campaign.yaml");
    std::fs::write(&path, serde_yaml::to_string(&campaign).expect("YAML")).expect("campaign");
    kubectl_ok(["apply", "-f", &path.to_string_lossy()]);

    // Pulse with every component for France (identity knows its phone numbers), on a database
    // of its own; Prometheus labels it with this test's country.
    let db = TestDatabase::create().await;
    let (http_port, grpc_port, admin_port) = (
        testing::free_port(),
        testing::free_port(),
        testing::free_port(),
    );
    let log = File::create(dir.join("pulse.log")).expect("pulse log");
    let pulse = Command::new(pulse_bin())
        .args(["serve", "--target", "all"])
        .current_dir(&dir)
        .env_clear()
        .env("RUST_LOG", "warn")
        .env("PULSE_DATABASE_URL", &db.url)
        .env("PULSE_DB_MAX_CONNECTIONS", "4")
        .env("PULSE_REDIS_URL", testing::redis_url())
        .env("PULSE_KAFKA_BROKERS", testing::kafka_brokers().join(","))
        .env("PULSE_JWT_SECRET", testing::TEST_JWT_SECRET)
        .env("PULSE_JWT_ISSUER", testing::TEST_JWT_ISSUER)
        .env("PULSE_HTTP_ADDR", format!("127.0.0.1:{http_port}"))
        .env("PULSE_GRPC_ADDR", format!("127.0.0.1:{grpc_port}"))
        .env("PULSE_ADMIN_ADDR", format!("127.0.0.1:{admin_port}"))
        .env("PULSE_DRAIN_SECONDS", "0")
        .env("PULSE_DEVELOPMENT_MODE", "true")
        .env("PULSE_MIGRATE_ON_START", "true")
        .env("PULSE_INSTANCE", unique("obs"))
        .env("PULSE_COUNTRY__CODE", "FR")
        .env("PULSE_COUNTRY__TIMEZONE", "Europe/Paris")
        .env("PULSE_COUNTRY__CURRENCY", "EUR")
        .env("PULSE_COUNTRY__LOCALE", "fr-FR")
        .envs(testing::sandbox_env(&dir, &testing::unique("whsec_obs")))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", pulse_bin().display()));
    let _pulse = Killed(pulse);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client");
    let base = format!("http://127.0.0.1:{http_port}");
    wait_for("pulse to be ready", Duration::from_secs(60), || {
        let (http, url) = (
            http.clone(),
            format!("http://127.0.0.1:{admin_port}/readyz"),
        );
        async move {
            match http.get(&url).send().await {
                Ok(r) if r.status() == 200 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;

    let (_prometheus, prom) = start_prometheus(
        &dir,
        &[
            Target {
                job: "pulse",
                address: format!("127.0.0.1:{admin_port}"),
                labels: &[("country", CODE)],
            },
            Target {
                job: "pulse-operator",
                address: operator.admin.to_string(),
                labels: &[],
            },
        ],
    );

    // Bookings as patients make them: booked, a conflict on the same slot, a cancellation;
    // the events reach the notifier, which files them in the patients' inboxes.
    let admin = testing::token("obs-admin", &["admin"], "FR");
    let all_day = serde_json::json!([{ "start": "00:00", "end": "23:30" }]);
    let created: Value = http
        .post(format!("{base}/v1/practitioners"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({
            "name": "Dr Observability", "specialty": "dermatology", "city": "Paris",
            "address": "1 rue de la Paix", "latitude": 48.8566, "longitude": 2.3522,
            "languages": ["fr"], "consultationPriceMinor": 2500,
            "schedule": { "slotMinutes": 30, "weekly": {
                "Mon": all_day, "Tue": all_day, "Wed": all_day, "Thu": all_day,
                "Fri": all_day, "Sat": all_day, "Sun": all_day } }
        }))
        .send()
        .await
        .expect("create a practitioner")
        .json()
        .await
        .expect("practitioner JSON");
    let practitioner = created["id"].as_str().expect("practitioner id").to_owned();
    let day = (chrono::Utc::now() + chrono::Duration::days(3))
        .format("%Y-%m-%d")
        .to_string();
    let slots: Value = wait_for("free slots", Duration::from_secs(30), || {
        let (http, url) = (
            http.clone(),
            format!("{base}/v1/practitioners/{practitioner}/slots?from={day}&to={day}"),
        );
        async move {
            let body: Value = http
                .get(&url)
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            if body["slots"].as_array().is_some_and(|s| !s.is_empty()) {
                Ok(body)
            } else {
                Err(body.to_string())
            }
        }
    })
    .await;
    let slot = slots["slots"][0]["id"]
        .as_str()
        .expect("slot id")
        .to_owned();
    let book = |patient: &'static str, key: &'static str| {
        let (http, url, slot) = (
            http.clone(),
            format!("{base}/v1/appointments"),
            slot.clone(),
        );
        async move {
            http.post(url)
                .bearer_auth(testing::token(patient, &["patient"], "FR"))
                .header("Idempotency-Key", key)
                .json(&serde_json::json!({ "slotId": slot }))
                .send()
                .await
                .expect("POST /v1/appointments")
        }
    };
    let booked = book("obs-patient-1", "obs-first").await;
    assert_eq!(booked.status(), 201, "booking a free slot");
    let appointment: Value = booked.json().await.expect("appointment JSON");
    assert_eq!(
        book("obs-patient-2", "obs-second").await.status(),
        409,
        "the slot is taken"
    );
    let cancelled = http
        .post(format!(
            "{base}/v1/appointments/{}/cancel",
            appointment["id"].as_str().expect("appointment id")
        ))
        .bearer_auth(testing::token("obs-patient-1", &["patient"], "FR"))
        .header("Idempotency-Key", "obs-cancel")
        .send()
        .await
        .expect("cancel");
    assert_eq!(cancelled.status(), 200, "cancelling");

    // A short load touching every component: searches, refused bookings, orders and payments,
    // seckill attempts at an unknown campaign, the caller's inbox.
    let token = testing::token(
        "obs-user",
        &["patient", "customer"],
        &CODE.to_ascii_uppercase(),
    );
    for round in 0..20 {
        let _ = http
            .get(format!("{base}/v1/practitioners?city=Paris"))
            .send()
            .await;
        let _ = http
            .post(format!("{base}/v1/appointments"))
            .bearer_auth(&token)
            .header("Idempotency-Key", format!("obs-book-{round}"))
            .json(&serde_json::json!({ "slotId": pulse_kit::new_id() }))
            .send()
            .await;
        let _ = http
            .post(format!("{base}/v1/seckill/obs-unknown/orders"))
            .bearer_auth(&token)
            .header("Idempotency-Key", format!("obs-seckill-{round}"))
            .send()
            .await;
        let _ = http
            .get(format!("{base}/v1/orders"))
            .bearer_auth(&token)
            .send()
            .await;
        let _ = http
            .post(format!("{base}/v1/orders/{}/pay", pulse_kit::new_id()))
            .bearer_auth(&token)
            .header("Idempotency-Key", format!("obs-pay-{round}"))
            .send()
            .await;
        let _ = http
            .get(format!("{base}/v1/me/notifications"))
            .bearer_auth(&token)
            .send()
            .await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Both targets up, with enough samples for one-minute rates and the operator's failure.
    wait_for(
        "Prometheus to scrape pulse and the operator",
        Duration::from_secs(60),
        || {
            let http = http.clone();
            async move {
                let up = prometheus_api(&http, prom, "query", &[("query", "sum(up)")]).await?;
                let value = up["result"][0]["value"][1]
                    .as_str()
                    .unwrap_or("0")
                    .to_owned();
                let failures = prometheus_api(
                    &http,
                    prom,
                    "query",
                    &[("query", "count(pulse_operator_reconcile_failures_total)")],
                )
                .await?;
                let reconciled = prometheus_api(
                    &http,
                    prom,
                    "query",
                    &[(
                        "query",
                        "count(count_over_time(pulse_http_requests_total[1m]) >= 5)",
                    )],
                )
                .await?;
                if value == "2"
                    && !failures["result"].as_array().is_none_or(Vec::is_empty)
                    && !reconciled["result"].as_array().is_none_or(Vec::is_empty)
                {
                    Ok(())
                } else {
                    Err(format!(
                        "up={value}, failures={failures}, samples={reconciled}"
                    ))
                }
            }
        },
    )
    .await;

    let scraped: BTreeSet<String> = prometheus_api(&http, prom, "label/__name__/values", &[])
        .await
        .expect("metric names")
        .as_array()
        .expect("names")
        .iter()
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect();
    let mut missing = Vec::new();
    for (name, queries) in &dashboards {
        for metric in queries.iter().flat_map(|q| metric_names(q)) {
            if !scraped.contains(&metric) {
                missing.push(format!("{name}: {metric}"));
            }
        }
    }
    for metric in metric_names(&rules) {
        if !scraped.contains(&metric) {
            missing.push(format!("prometheusrule.yaml: {metric}"));
        }
    }
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "metrics named but never scraped:\n{}",
        missing.join("\n")
    );

    let mut empty = Vec::new();
    let mut checked = 0;
    for (name, queries) in &dashboards {
        for expr in queries {
            let query = concrete(expr);
            match prometheus_api(&http, prom, "query", &[("query", &query)]).await {
                Ok(data) if data["result"].as_array().is_some_and(|r| !r.is_empty()) => {
                    checked += 1
                }
                Ok(_) => empty.push(format!("{name}: no series: {expr}")),
                Err(err) => empty.push(format!("{name}: refused ({err}): {expr}")),
            }
        }
    }
    assert!(
        empty.is_empty(),
        "{} of {} panel queries return nothing:\n{}",
        empty.len(),
        checked + empty.len(),
        empty.join("\n")
    );
    println!(
        "{checked} panel queries return series; {} metric names checked",
        scraped.len()
    );

    // The campaign's finalizer cannot close a campaign of no country: the namespace goes with
    // the test cluster.
    kubectl_ok(["delete", "namespace", &orphan, "--wait=false"]);
    delete_tenant_and_wait(&kube, CODE, Duration::from_secs(120)).await;
    let _ = std::fs::remove_dir_all(&dir);
}
