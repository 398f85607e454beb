//! `./dev bench operator`: 100 CountryTenants of the `manifests/examples/fr.yaml` shape (codes
//! `aa`..`dv`, every component at one replica) applied at once on a real control plane
//! (`scripts/k8s-cluster.sh`: etcd, kube-apiserver, controller manager, scheduler and a kwok node
//! that makes pods Ready), reconciled by the real `pulse-operator run` binary running as a local
//! process under the chart's ServiceAccount (the chart is installed with helm, the operator gets
//! a TokenRequest token of that account). It prints, beside the wall time until all 100 are
//! Ready: the API requests the operator made per tenant, its peak RSS and its own reconcile time.
//!
//! API requests: the operator counts none itself (its metrics are reconciliations, failures and
//! reconcile durations), and the API server's `apiserver_request_total` has no user label. So the
//! bench gives the operator's ServiceAccount a FlowSchema of its own (API Priority and Fairness,
//! the same priority level `workload-low` that the built-in `service-accounts` FlowSchema gives
//! it, so its requests are treated as before) and reads
//! `apiserver_flowcontrol_dispatched_requests_total{flow_schema="pulse-bench-operator"}` from the
//! API server's `/metrics` before and after: exactly the requests of that account.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::flowcontrol::v1::FlowSchema;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};
use serde_json::{Value, json};

/// Tenants applied at once.
pub const TENANTS: usize = 100;
/// The target: all Ready within this.
const TARGET_READY: Duration = Duration::from_secs(60);
/// The target: the operator's peak RSS under this many MiB.
const TARGET_RSS_MIB: f64 = 64.0;
/// How long the bench waits for all Ready before it gives up (and reports how far it got).
const GIVE_UP: Duration = Duration::from_secs(300);
/// Field manager of the bench's own writes.
const MANAGER: &str = "pulse-bench";
/// Namespace of the chart release (the operator's ServiceAccount and its Lease).
const RELEASE_NAMESPACE: &str = "pulse-bench-system";
/// Helm release name; the chart names its ServiceAccount `<release>-operator`.
const RELEASE: &str = "pulse";
/// The FlowSchema that isolates the operator's requests.
const FLOW_SCHEMA: &str = "pulse-bench-operator";

/// Tenant codes: `aa`, `ab`, … (`aa`..`dv` for 100).
pub fn codes(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let first = (b'a' + (i / 26) as u8) as char;
            let second = (b'a' + (i % 26) as u8) as char;
            format!("{first}{second}")
        })
        .collect()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml_file(relative: &str) -> anyhow::Result<Value> {
    let path = root().join(relative);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_yaml::from_str(&text).with_context(|| format!("{relative} is not YAML"))
}

/// The French example as tenant `code`: its own country code, host and TLS secret, every
/// component at exactly one replica (the autoscaler's min and max).
pub fn tenant(example: &Value, code: &str) -> Value {
    let mut tenant = example.clone();
    let upper = code.to_uppercase();
    tenant["metadata"] = json!({ "name": code, "labels": { "pulse.dev/bench": "operator" } });
    tenant["spec"]["displayName"] = json!(format!("Bench {upper}"));
    tenant["spec"]["country"]["code"] = json!(upper);
    tenant["spec"]["ingress"]["host"] = json!(format!("{code}.pulse.example"));
    tenant["spec"]["ingress"]["tlsSecretName"] = json!(format!("pulse-{code}-tls"));
    for component in [
        "identity",
        "booking",
        "marketing",
        "ordering",
        "notifier",
        "web",
    ] {
        let spec = &mut tenant["spec"]["components"][component];
        if spec.is_null() {
            *spec = json!({});
        }
        spec["minReplicas"] = json!(1);
        spec["maxReplicas"] = json!(1);
    }
    // Secret names follow the code (only referenced, by the pods).
    let secrets = &mut tenant["spec"]["secrets"];
    for (key, secret) in [
        ("database", "backends"),
        ("redis", "backends"),
        ("kafka", "backends"),
    ] {
        secrets[key]["name"] = json!(format!("pulse-{code}-{secret}"));
    }
    secrets["jwt"]["secret"]["name"] = json!(format!("pulse-{code}-jwt"));
    secrets["identityKeyring"]["name"] = json!(format!("pulse-{code}-identity"));
    secrets["providers"] = json!([{ "name": format!("pulse-{code}-providers") }]);
    tenant
}

fn country_tenants(client: &Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("pulse.dev", "v1alpha1", "CountryTenant");
    Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk))
}

fn is_ready(tenant: &DynamicObject) -> bool {
    let generation = tenant.metadata.generation;
    let status = &tenant.data["status"];
    status["observedGeneration"].as_i64() == generation
        && status["conditions"].as_array().is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Installs every CRD of `crds/` (server-side apply) and waits until each is Established.
async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for entry in std::fs::read_dir(root().join("crds"))? {
        let path = entry?.path();
        if path.extension().is_none_or(|ext| ext != "yaml") {
            continue;
        }
        let relative = format!("crds/{}", path.file_name().unwrap_or_default().display());
        let crd: CustomResourceDefinition = serde_json::from_value(yaml_file(&relative)?)?;
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("applying {relative}"))?;
        tokio::time::timeout(
            Duration::from_secs(60),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .with_context(|| format!("CRD {name} not Established within 60 s"))??;
    }
    Ok(())
}

// ------------------------------------------------------------------ the operator's account

/// helm: `$PULSE_HELM`, else the one scripts/k8s-checks.sh installs in the cache.
fn helm() -> PathBuf {
    if let Some(helm) = std::env::var_os("PULSE_HELM") {
        return PathBuf::from(helm);
    }
    let cache = std::env::var_os("PULSE_CACHE").map_or_else(
        || {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                .join(".cache/pulse")
        },
        PathBuf::from,
    );
    cache.join("k8s-tools/bin/helm")
}

fn command_output(command: &mut Command) -> anyhow::Result<String> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Installs the chart (no operator replicas: the operator runs here as a local process), so its
/// ServiceAccount, ClusterRole and Lease Role exist as a real install has them.
fn install_chart() -> anyhow::Result<()> {
    let helm = helm();
    if !helm.exists() {
        bail!(
            "no helm at {} (set PULSE_HELM, or run scripts/k8s-checks.sh once: it installs helm into the cache)",
            helm.display()
        );
    }
    command_output(
        Command::new(&helm)
            .args(["upgrade", "--install", RELEASE])
            .arg(root().join("charts/pulse"))
            .args(["--namespace", RELEASE_NAMESPACE, "--create-namespace"])
            .args([
                "--set",
                "replicaCount=0",
                "--set",
                "podDisruptionBudget.enabled=false",
            ])
            .args(["--skip-crds", "--wait", "--timeout", "60s"]),
    )?;
    Ok(())
}

fn uninstall_chart() {
    let _ = command_output(
        Command::new(helm())
            .args(["uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE])
            .args(["--wait", "--timeout", "60s"]),
    );
}

fn service_account() -> String {
    format!("{RELEASE}-operator")
}

/// A kubeconfig for the current cluster of `KUBECONFIG` that authenticates with a one-hour
/// TokenRequest token of the chart's ServiceAccount.
async fn operator_kubeconfig(client: &Client, dir: &Path) -> anyhow::Result<PathBuf> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    let request: TokenRequest = serde_json::from_value(json!({
        "spec": { "audiences": [], "expirationSeconds": 3600 }
    }))?;
    let token = accounts
        .create_token_request(&service_account(), &PostParams::default(), &request)
        .await
        .context("TokenRequest for the chart's ServiceAccount")?
        .status
        .context("TokenRequest without status")?
        .token;
    let admin = Kubeconfig::read().context("reading KUBECONFIG")?;
    let context = admin
        .current_context
        .as_deref()
        .and_then(|name| admin.contexts.iter().find(|c| c.name == name))
        .and_then(|c| c.context.as_ref())
        .context("KUBECONFIG has no current context")?;
    let cluster = admin
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .and_then(|c| c.cluster.as_ref())
        .context("KUBECONFIG has no cluster for its current context")?;
    let kubeconfig = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{ "name": "bench", "cluster": serde_json::to_value(cluster)? }],
        "users": [{ "name": "operator", "user": { "token": token } }],
        "contexts": [{ "name": "bench", "context": { "cluster": "bench", "user": "operator" } }],
        "current-context": "bench",
    });
    let path = dir.join("operator.kubeconfig");
    std::fs::write(&path, serde_json::to_string_pretty(&kubeconfig)?)?;
    Ok(path)
}

/// The FlowSchema that puts the operator's ServiceAccount, and only it, into a flow of its own
/// at the priority level the built-in `service-accounts` FlowSchema would give it.
async fn isolate_requests(client: &Client) -> anyhow::Result<()> {
    let api: Api<FlowSchema> = Api::all(client.clone());
    let builtin = api
        .get("service-accounts")
        .await
        .context("reading the built-in FlowSchema service-accounts")?;
    let level = builtin
        .spec
        .map(|s| s.priority_level_configuration.name)
        .unwrap_or_else(|| "workload-low".into());
    let schema: FlowSchema = serde_json::from_value(json!({
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema",
        "metadata": { "name": FLOW_SCHEMA },
        "spec": {
            "matchingPrecedence": 500,
            "priorityLevelConfiguration": { "name": level },
            "distinguisherMethod": { "type": "ByUser" },
            "rules": [{
                "subjects": [{ "kind": "ServiceAccount", "serviceAccount": {
                    "name": service_account(), "namespace": RELEASE_NAMESPACE } }],
                "resourceRules": [{ "verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                                    "namespaces": ["*"], "clusterScope": true }],
                "nonResourceRules": [{ "verbs": ["*"], "nonResourceURLs": ["*"] }],
            }],
        },
    }))?;
    api.patch(
        FLOW_SCHEMA,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&schema),
    )
    .await
    .context("applying the bench FlowSchema")?;
    Ok(())
}

/// Requests the API server dispatched in the bench FlowSchema so far.
async fn operator_requests(client: &Client) -> anyhow::Result<f64> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client
        .request_text(request)
        .await
        .context("API server /metrics")?;
    Ok(sum_metric(
        &text,
        "apiserver_flowcontrol_dispatched_requests_total",
        &format!("flow_schema=\"{FLOW_SCHEMA}\""),
    ))
}

/// The sum of every sample of `name` whose labels contain `label`.
fn sum_metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                && line.contains(label)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

// ------------------------------------------------------------------ the operator process

/// The `pulse-operator` binary: `$PULSE_OPERATOR_BIN`, else the release build in the target dir.
fn operator_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("PULSE_OPERATOR_BIN") {
        return PathBuf::from(bin);
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    target.join("release/pulse-operator")
}

/// `pulse-operator run`, killed when dropped.
struct Operator {
    child: Child,
    admin: String,
}

impl Operator {
    fn spawn(kubeconfig: &Path, log: &Path) -> anyhow::Result<Self> {
        let bin = operator_bin();
        if !bin.exists() {
            bail!(
                "{} is missing: build it with `cargo build --release -p pulse-operator` (./dev bench operator does)",
                bin.display()
            );
        }
        let port = pulse_kit::testing::free_port();
        let admin = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(log)?;
        let child = Command::new(&bin)
            .arg("run")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .args(["--admin-addr", &admin])
            .args(["--lease-namespace", RELEASE_NAMESPACE])
            .args(["--identity", "pulse-bench-operator"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        Ok(Self { child, admin })
    }

    async fn get(&self, path: &str) -> anyhow::Result<String> {
        Ok(reqwest::get(format!("http://{}{path}", self.admin))
            .await?
            .error_for_status()?
            .text()
            .await?)
    }

    /// Waits until it holds the lease and runs its controllers.
    async fn wait_leader(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("pulse-operator exited at start: {status}");
            }
            if self
                .get("/readyz")
                .await
                .is_ok_and(|r| r.contains("leader"))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("pulse-operator did not lead within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// CPU time (user + system) the process used so far.
    fn cpu(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the command name (which may hold spaces) in parentheses.
        let fields: Vec<&str> = stat
            .rsplit_once(") ")
            .context("malformed /proc/<pid>/stat")?
            .1
            .split_whitespace()
            .collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime are fields 14 and 15 of stat, 11 and 12 after the name and state.
        Ok(Duration::from_millis(
            (ticks(11) + ticks(12)) * 1000 / clock_ticks(),
        ))
    }

    /// VmHWM (peak resident set) and VmRSS of the process, in KiB.
    fn memory_kib(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .with_context(|| format!("no {name} in /proc/<pid>/status"))
        };
        Ok((field("VmHWM:")?, field("VmRSS:")?))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Clock ticks per second of /proc times (USER_HZ).
fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

/// Busy and total CPU ticks of the whole machine (all cores) so far, from /proc/stat.
fn machine_ticks() -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .context("no cpu line in /proc/stat")?
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = cpu.iter().take(8).sum();
    let idle = cpu.get(3).copied().unwrap_or(0) + cpu.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}

// ------------------------------------------------------------------ the run

/// What one run measured.
struct Row {
    ready: usize,
    wall: Duration,
    requests: f64,
    reconciles: f64,
    applies: f64,
    reconcile_sum: f64,
    reconcile_count: f64,
    peak_rss_kib: u64,
    rss_kib: u64,
    operator_cpu: Duration,
    machine_busy: f64,
    cores: usize,
}

/// Runs the bench on the cluster of `KUBECONFIG` and prints one table.
pub async fn run() -> anyhow::Result<()> {
    if std::env::var_os("KUBECONFIG").is_none() {
        bail!(
            "KUBECONFIG is not set: run `./dev bench operator`, which starts a cluster (scripts/k8s-cluster.sh) for it"
        );
    }
    let config = Config::infer().await.context("reading KUBECONFIG")?;
    let client = Client::try_from(config)?;
    let dir = pulse_kit::testing::TempDir::new("bench-operator");
    let codes = codes(TENANTS);
    let tenants = country_tenants(&client);

    install_crds(&client).await?;
    for code in &codes {
        if tenants.get_opt(code).await?.is_some() {
            bail!(
                "CountryTenant {code} already exists on this cluster: the bench needs codes aa..dv to itself (run it on its own cluster: unset KUBECONFIG)"
            );
        }
    }
    eprintln!(
        "bench: installing the chart (release {RELEASE} in {RELEASE_NAMESPACE}, no operator replicas)"
    );
    install_chart()?;
    isolate_requests(&client).await?;
    let kubeconfig = operator_kubeconfig(&client, dir.path()).await?;
    let log = dir.path().join("operator.log");
    let mut operator = Operator::spawn(&kubeconfig, &log)?;
    let result = measure(&client, &mut operator, &codes).await;
    if result.is_err() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        eprintln!("bench: operator log (last lines):");
        for line in tail.into_iter().rev() {
            eprintln!("  {line}");
        }
    }
    eprintln!("bench: deleting the {TENANTS} tenants and their namespaces");
    let cleaned = cleanup(&client, &codes).await;
    drop(operator);
    cleanup_namespaces(&client, &codes).await;
    let _ = Api::<FlowSchema>::all(client.clone())
        .delete(FLOW_SCHEMA, &DeleteParams::default())
        .await;
    uninstall_chart();
    let row = result?;
    cleaned?;
    print(&row);
    if row.ready < TENANTS {
        bail!(
            "only {} of {TENANTS} tenants Ready after {GIVE_UP:?}",
            row.ready
        );
    }
    Ok(())
}

async fn measure(
    client: &Client,
    operator: &mut Operator,
    codes: &[String],
) -> anyhow::Result<Row> {
    operator.wait_leader().await?;
    let example = yaml_file("manifests/examples/fr.yaml")?;
    let objects: Vec<DynamicObject> = codes
        .iter()
        .map(|code| serde_json::from_value(tenant(&example, code)))
        .collect::<Result<_, _>>()?;
    let api = country_tenants(client);
    let before = operator_requests(client).await?;
    let metrics_before = operator.get("/metrics").await?;
    let cpu_before = operator.cpu()?;
    let machine_before = machine_ticks()?;

    eprintln!("bench: applying {TENANTS} CountryTenants at once");
    let started = Instant::now();
    futures::stream::iter(objects.iter())
        .map(|object| {
            let api = api.clone();
            async move {
                let name = object.metadata.name.clone().unwrap_or_default();
                api.patch(&name, &PatchParams::apply(MANAGER), &Patch::Apply(object))
                    .await
                    .with_context(|| format!("applying CountryTenant {name}"))
            }
        })
        .buffer_unordered(TENANTS)
        .try_collect::<Vec<_>>()
        .await?;
    let applied = started.elapsed();
    eprintln!(
        "bench: applied in {:.2} s; waiting until all are Ready",
        applied.as_secs_f64()
    );

    let selector = ListParams::default().labels("pulse.dev/bench=operator");
    let mut ready = 0;
    let mut last_report = Instant::now();
    while started.elapsed() < GIVE_UP {
        let list = api.list(&selector).await?;
        ready = list.items.iter().filter(|t| is_ready(t)).count();
        if ready >= TENANTS {
            break;
        }
        if let Some(status) = operator.child.try_wait()? {
            bail!("pulse-operator exited: {status}");
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "bench: {ready}/{TENANTS} Ready after {:.0} s{}",
                started.elapsed().as_secs_f64(),
                waiting_for(&list.items)
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wall = started.elapsed();
    let after = operator_requests(client).await?;
    let metrics = operator.get("/metrics").await?;
    let (peak_rss_kib, rss_kib) = operator.memory_kib()?;
    let operator_cpu = operator.cpu()?.saturating_sub(cpu_before);
    let machine_after = machine_ticks()?;
    let busy = machine_after.0.saturating_sub(machine_before.0) as f64;
    let total = machine_after.1.saturating_sub(machine_before.1).max(1) as f64;
    let controller = "controller=\"countrytenant\"";
    let delta = |name: &str| {
        sum_metric(&metrics, name, controller) - sum_metric(&metrics_before, name, controller)
    };
    Ok(Row {
        ready,
        wall,
        requests: after - before,
        reconciles: delta("pulse_operator_reconciliations_total"),
        applies: sum_metric(&metrics, "pulse_operator_tenant_applies_total", "reason=")
            - sum_metric(
                &metrics_before,
                "pulse_operator_tenant_applies_total",
                "reason=",
            ),
        reconcile_sum: delta("pulse_operator_reconcile_duration_seconds_sum"),
        reconcile_count: delta("pulse_operator_reconcile_duration_seconds_count"),
        peak_rss_kib,
        rss_kib,
        operator_cpu,
        machine_busy: busy / total,
        cores: std::thread::available_parallelism().map_or(1, usize::from),
    })
}

/// What the tenants that are not Ready say, the most common first (for the progress lines).
fn waiting_for(tenants: &[DynamicObject]) -> String {
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for tenant in tenants.iter().filter(|t| !is_ready(t)) {
        let ready = tenant.data["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"));
        let reason = match ready {
            Some(c) => {
                let message = c["message"].as_str().unwrap_or_default();
                // "booking: 0 of 1 updated replicas available" -> "0 of 1 updated replicas available"
                let message = message.split("; ").next().unwrap_or_default();
                let message = message.split_once(": ").map_or(message, |(_, m)| m);
                format!("{}: {message}", c["reason"].as_str().unwrap_or_default())
            }
            None => "no status yet".to_owned(),
        };
        *reasons.entry(reason).or_default() += 1;
    }
    let mut reasons: Vec<(String, usize)> = reasons.into_iter().collect();
    reasons.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    reasons
        .iter()
        .take(3)
        .map(|(reason, n)| format!("; {n} {reason}"))
        .collect()
}

async fn cleanup(client: &Client, codes: &[String]) -> anyhow::Result<()> {
    let api = country_tenants(client);
    futures::stream::iter(codes)
        .map(|code| {
            let api = api.clone();
            async move { api.delete(code, &DeleteParams::background()).await }
        })
        .buffer_unordered(20)
        .collect::<Vec<_>>()
        .await;
    // The operator's finalizer lets each tenant go.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = api
            .list(&ListParams::default().labels("pulse.dev/bench=operator"))
            .await?
            .items
            .len();
        if left == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{left} bench tenants still there 120 s after their deletion");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The tenants keep their namespaces (deletionPolicy Retain, as in fr.yaml): delete them.
async fn cleanup_namespaces(client: &Client, codes: &[String]) {
    let api: Api<Namespace> = Api::all(client.clone());
    futures::stream::iter(codes)
        .map(|code| {
            let api = api.clone();
            async move {
                api.delete(&format!("pulse-{code}"), &DeleteParams::background())
                    .await
            }
        })
        .buffer_unordered(20)
        .collect::<Vec<_>>()
        .await;
}

fn print(row: &Row) {
    let per_tenant = row.requests / TENANTS as f64;
    let mean_ms = if row.reconcile_count > 0.0 {
        row.reconcile_sum / row.reconcile_count * 1000.0
    } else {
        0.0
    };
    let peak_mib = row.peak_rss_kib as f64 / 1024.0;
    let mut verdict = BTreeMap::new();
    verdict.insert(
        "all Ready < 60 s",
        row.ready == TENANTS && row.wall < TARGET_READY,
    );
    verdict.insert("peak RSS < 64 MiB", peak_mib < TARGET_RSS_MIB);
    println!();
    println!(
        "{:<9} {:>7} {:>7} {:>10} {:>10} {:>9} {:>11} {:>8} {:>12} {:>12} {:>11} {:>9}",
        "scenario",
        "tenants",
        "ready",
        "wall s",
        "api reqs",
        "reqs/ten",
        "reconciles",
        "applies",
        "reconcile s",
        "mean rec ms",
        "peak RSS MiB",
        "RSS MiB",
    );
    println!(
        "{:<9} {:>7} {:>7} {:>10.2} {:>10.0} {:>9.1} {:>11.0} {:>8.0} {:>12.2} {:>12.1} {:>11.1} {:>9.1}",
        "operator",
        TENANTS,
        row.ready,
        row.wall.as_secs_f64(),
        row.requests,
        per_tenant,
        row.reconciles,
        row.applies,
        row.reconcile_sum,
        mean_ms,
        peak_mib,
        row.rss_kib as f64 / 1024.0,
    );
    println!();
    println!(
        "CPU in that time: the operator {:.1} s ({:.0}% of one core); the whole machine {:.0}% busy on {} cores (API server, etcd, controller manager, scheduler, kwok, operator)",
        row.operator_cpu.as_secs_f64(),
        row.operator_cpu.as_secs_f64() / row.wall.as_secs_f64() * 100.0,
        row.machine_busy * 100.0,
        row.cores,
    );
    println!(
        "wall s: from the apply of the first tenant until all {TENANTS} have Ready=True for their generation;"
    );
    println!(
        "api reqs: requests of the operator's ServiceAccount dispatched by the API server in that time"
    );
    println!(
        "  (apiserver_flowcontrol_dispatched_requests_total of a FlowSchema matching only that account);"
    );
    println!(
        "applies: reconciliations that applied every object (pulse_operator_tenant_applies_total); the others only read the watch caches;"
    );
    println!(
        "reconcile s: the operator's pulse_operator_reconcile_duration_seconds sum over the same time (mean = sum/count)."
    );
    for (target, met) in verdict {
        println!("target {target}: {}", if met { "met" } else { "NOT met" });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_run_from_aa_to_dv() {
        let codes = codes(TENANTS);
        assert_eq!(codes.first().map(String::as_str), Some("aa"));
        assert_eq!(codes.last().map(String::as_str), Some("dv"));
        let distinct: std::collections::HashSet<&String> = codes.iter().collect();
        assert_eq!(distinct.len(), TENANTS);
    }

    #[test]
    fn sums_samples_with_a_label() {
        let text = "x_total{a=\"1\",flow_schema=\"f\"} 2\nx_total{flow_schema=\"g\"} 5\nx_total_other{flow_schema=\"f\"} 7\nx_total{flow_schema=\"f\",b=\"2\"} 3\n";
        assert_eq!(sum_metric(text, "x_total", "flow_schema=\"f\""), 5.0);
    }
}
