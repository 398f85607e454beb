//! The life of a tenant and a campaign on the real test cluster that `./dev test` starts
//! (`scripts/k8s-cluster.sh`), as a platform engineer lives it:
//! - admission: what the CRDs forbid is refused by the API server when applied with
//!   `kubectl apply -f`, with a message that says what to fix;
//! - disable and delete: the operator (the real `pulse-operator run` binary, as the chart's
//!   ServiceAccount) removes a disabled component's objects, and deleting a tenant follows its
//!   `deletionPolicy` (the namespace controller and the garbage collector do the rest);
//! - leader election: two replicas, one Lease holder; `kill -9` of the leader and the other one
//!   takes over within the lease duration.
//!
//! Tenant codes of this binary (two-letter codes are shared by every test of the run):
//! `pt` (admission, never stored), `it` and `es` (disable and delete), `nl` and `be` (leader
//! election).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

mod support;

use support::{TenantGuard, campaign, kubectl_ok, rfc3339, tenant, unique};

const WAIT: Duration = Duration::from_secs(60);

/// The test cluster's kubectl; fails (never skips) without the cluster `./dev test` starts.
fn kubectl_path() -> PathBuf {
    if std::env::var_os("KUBECONFIG").is_none() {
        panic!(
            "KUBECONFIG is not set: these tests need the test cluster that `./dev test` starts \
             (scripts/k8s-cluster.sh); run them with `./dev test -p pulse-operator --test lifecycle_e2e`"
        );
    }
    let bin = std::env::var_os("PULSE_K8S_BIN").unwrap_or_else(|| {
        panic!("PULSE_K8S_BIN is not set: run these tests with `./dev test -p pulse-operator`")
    });
    PathBuf::from(bin).join("kubectl")
}

/// Runs kubectl (as the cluster admin of `KUBECONFIG`) with `stdin` on its standard input.
fn kubectl_with(args: &[&str], stdin: &str) -> Output {
    let path = kubectl_path();
    let mut child = Command::new(&path)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", path.display()));
    child
        .stdin
        .take()
        .expect("kubectl stdin")
        .write_all(stdin.as_bytes())
        .expect("write kubectl stdin");
    child.wait_with_output().expect("kubectl output")
}

/// `kubectl apply -f -` of `object`, as a user does it.
fn apply(object: &Value) -> Output {
    let yaml = serde_yaml::to_string(object).expect("object as YAML");
    kubectl_with(&["apply", "-f", "-"], &yaml)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Applies `object` and returns kubectl's standard error, failing if the API server took it.
fn refused(object: &Value, what: &str) -> String {
    let out = apply(object);
    if out.status.success() {
        let yaml = serde_yaml::to_string(object).expect("YAML");
        let _ = kubectl_with(&["delete", "--wait=false", "-f", "-"], &yaml);
        panic!(
            "the API server accepted {what}, which the CRD forbids: {}",
            text(&out.stdout)
        );
    }
    let stderr = text(&out.stderr);
    println!("{what}: kubectl apply said: {}", stderr.trim());
    stderr
}

fn assert_says(stderr: &str, words: &[&str]) {
    for word in words {
        assert!(
            stderr.contains(word),
            "expected {word:?} in kubectl's message: {stderr}"
        );
    }
}

/// Installs the CRDs as a user does (`kubectl apply --server-side -f crds/`) and waits until
/// they are Established.
fn install_crds() {
    let crds = support::root().join("crds");
    let crds = crds.to_string_lossy();
    kubectl_ok([
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=pulse-lifecycle-tests",
        "-f",
        &crds,
    ]);
    kubectl_ok([
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/countrytenants.pulse.dev",
        "crd/seckillcampaigns.pulse.dev",
    ]);
}

/// Deletes the namespace when dropped, so a failed assertion leaves nothing behind.
struct NamespaceGuard(String);

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        let _ = kubectl_with(
            &[
                "delete",
                "namespace",
                &self.0,
                "--wait=false",
                "--ignore-not-found",
            ],
            "",
        );
    }
}

#[test]
fn kubectl_apply_of_what_the_crds_forbid_is_refused_with_what_to_fix() {
    install_crds();

    // A country code that is no ISO 3166-1 alpha-2 code: the schema's pattern.
    let mut bad_code = tenant("pt");
    bad_code["metadata"]["name"] = json!("p1");
    bad_code["spec"]["country"]["code"] = json!("P1");
    let stderr = refused(&bad_code, "a tenant with country code P1");
    assert_says(
        &stderr,
        &[
            r#"CountryTenant "p1" is invalid"#,
            "spec.country.code",
            "should match '^[A-Z]{2}$'",
        ],
    );

    // More replicas at the least than at the most: the CEL rule of a component.
    let mut replicas = tenant("pt");
    replicas["spec"]["components"]["booking"] = json!({ "minReplicas": 6, "maxReplicas": 3 });
    let stderr = refused(
        &replicas,
        "a tenant with booking minReplicas 6 > maxReplicas 3",
    );
    assert_says(
        &stderr,
        &[
            r#"CountryTenant "pt" is invalid"#,
            "spec.components.booking",
            "minReplicas must not be greater than maxReplicas",
        ],
    );

    // Campaigns live in a namespace; this one is the test's own.
    let ns = unique("pulse-test-admission");
    kubectl_ok(["create", "namespace", &ns]);
    let _guard = NamespaceGuard(ns.clone());

    // A sale that ends before it starts.
    let backwards = campaign(
        &ns,
        "backwards",
        100,
        rfc3339(chrono::Duration::days(2)),
        rfc3339(chrono::Duration::days(1)),
    );
    let stderr = refused(&backwards, "a campaign ending before it starts");
    assert_says(
        &stderr,
        &[
            r#"SeckillCampaign "backwards" is invalid"#,
            "endsAt must be after startsAt",
        ],
    );

    // An open sale (started an hour ago, ends tomorrow). The rule keys on the phase the operator
    // writes into the status from marketing's answer (CEL has no clock); until then the stock
    // may still change, so a typo before the sale is picked up can be fixed.
    let mut open = campaign(
        &ns,
        "open",
        100,
        rfc3339(chrono::Duration::hours(-1)),
        rfc3339(chrono::Duration::days(1)),
    );
    let out = apply(&open);
    assert!(
        out.status.success(),
        "an open campaign was refused: {}",
        text(&out.stderr)
    );
    open["spec"]["stock"] = json!(120);
    let out = apply(&open);
    assert!(
        out.status.success(),
        "changing the stock of a campaign the operator has not yet seen active was refused: {}",
        text(&out.stderr)
    );
    // What the operator writes once marketing answers Active (here the test stands in for it).
    kubectl_ok([
        "patch",
        "seckillcampaign",
        "open",
        "-n",
        &ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Active"}}"#,
    ]);
    open["spec"]["stock"] = json!(150);
    let stderr = refused(&open, "a stock change of an active campaign");
    assert_says(
        &stderr,
        &[
            r#"SeckillCampaign "open" is invalid"#,
            "spec.stock is immutable once the campaign is active",
        ],
    );
    let stock = kubectl_ok([
        "get",
        "seckillcampaign",
        "open",
        "-n",
        &ns,
        "-o",
        "jsonpath={.spec.stock}",
    ]);
    assert_eq!(stock, "120", "the refused apply left the stock alone");
}

// ------------------------------------------------------------------ with the operator running

/// Kinds the operator creates per component in `pulse-<code>` (kubectl resource names).
const COMPONENT_KINDS: [&str; 4] = [
    "deployment",
    "service",
    "horizontalpodautoscaler",
    "poddisruptionbudget",
];

/// Names of objects of `kind` in `ns` (empty when the namespace is gone).
fn names(kind: &str, ns: &str) -> Vec<String> {
    let out = support::kubectl([
        "get",
        kind,
        "-n",
        ns,
        "--ignore-not-found",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    text(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The namespace's phase (`Active`, `Terminating`), or `None` once it is gone.
fn namespace_phase(ns: &str) -> Option<String> {
    let out = support::kubectl([
        "get",
        "namespace",
        ns,
        "--ignore-not-found",
        "-o",
        "jsonpath={.status.phase}",
    ]);
    let phase = text(&out.stdout).trim().to_owned();
    (!phase.is_empty()).then_some(phase)
}

fn tenant_exists(code: &str) -> bool {
    let out = support::kubectl([
        "get",
        "countrytenant",
        code,
        "--ignore-not-found",
        "-o",
        "name",
    ]);
    !text(&out.stdout).trim().is_empty()
}

/// The Service that the Ingress `pulse` of `ns` sends `path` to (a `Prefix` path of its one
/// rule), as the API server holds it.
fn ingress_backend(ns: &str, path: &str) -> Option<String> {
    let out = support::kubectl([
        "get",
        "ingress",
        "pulse",
        "-n",
        ns,
        "-o",
        "jsonpath={range .spec.rules[0].http.paths[*]}{.path} {.pathType} {.backend.service.name}{\"\\n\"}{end}",
    ]);
    assert!(
        out.status.success(),
        "kubectl get ingress pulse -n {ns}: {}",
        text(&out.stderr)
    );
    text(&out.stdout).lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (Some(p), Some(kind), Some(service)) = (fields.next(), fields.next(), fields.next())
        else {
            return None;
        };
        assert_eq!(kind, "Prefix", "{line}");
        (p == path).then(|| service.to_owned())
    })
}

/// Waits until every object the operator makes for `components` exists in `ns`.
async fn wait_for_components(ns: &str, components: &[&str]) {
    support::wait_for(
        &format!("the objects of {components:?} in {ns}"),
        WAIT,
        || async move {
            for kind in COMPONENT_KINDS {
                let have = names(kind, ns);
                let missing: Vec<&&str> = components
                    .iter()
                    .filter(|c| !have.iter().any(|h| h == *c))
                    .collect();
                if !missing.is_empty() {
                    return Err(format!("{kind}: have {have:?}, missing {missing:?}"));
                }
            }
            if names("configmap", ns).is_empty() {
                return Err("no ConfigMap yet".to_owned());
            }
            Ok(())
        },
    )
    .await;
}

/// The chart installed in a namespace of the test and one operator replica running as its
/// ServiceAccount, leading.
async fn chart_and_operator(identity: &str) -> (support::Chart, PathBuf, support::Operator) {
    let chart = support::install_chart(&unique("pulse-test-lifecycle"));
    let kubeconfig = support::service_account_kubeconfig(&chart.namespace, &chart.service_account);
    let mut operator = support::Operator::spawn(&kubeconfig, &chart.namespace, identity);
    operator.wait_leader(WAIT).await;
    (chart, kubeconfig, operator)
}

/// Removes what an earlier, interrupted run may have left of `code` (the operator must run).
async fn fresh(client: &kube::Client, code: &'static str) {
    support::delete_tenant_and_wait(client, code, WAIT).await;
    let ns = format!("pulse-{code}");
    let _ = support::kubectl(["delete", "namespace", ns.as_str(), "--ignore-not-found"]);
}

#[tokio::test]
async fn a_disabled_component_is_removed_and_deleting_a_tenant_follows_its_deletion_policy() {
    let client = support::client().await;
    let (_chart, _kubeconfig, operator) = chart_and_operator("lifecycle-0").await;
    let all = [
        "identity",
        "booking",
        "marketing",
        "ordering",
        "notifier",
        "web",
    ];

    // `it`: Retain (the example's policy).
    fresh(&client, "it").await;
    let _it = TenantGuard("it".to_owned());
    let mut it = tenant("it");
    let out = apply(&it);
    assert!(
        out.status.success(),
        "kubectl apply of tenant it: {}",
        text(&out.stderr)
    );
    wait_for_components("pulse-it", &all).await;
    assert_eq!(
        names("ingress", "pulse-it").len(),
        2,
        "pulse and pulse-stream"
    );
    assert_eq!(
        ingress_backend("pulse-it", "/").as_deref(),
        Some("web"),
        "the web app at `/`"
    );
    // What the platform engineer puts into the namespace: the tenant's Secrets.
    kubectl_ok([
        "create",
        "secret",
        "generic",
        "pulse-it-backends",
        "-n",
        "pulse-it",
        "--from-literal=database-url=postgres://db.invalid/pulse",
    ]);
    let owners = kubectl_ok([
        "get",
        "deployment",
        "booking",
        "-n",
        "pulse-it",
        "-o",
        "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}/{.metadata.ownerReferences[0].controller}",
    ]);
    assert_eq!(
        owners, "CountryTenant/it/true",
        "booking is owned by its tenant"
    );

    // Disable notifier and web: their Deployments, Services, autoscalers, disruption budgets,
    // notifier's stream Ingress and web's `/` path go; the others stay.
    it["spec"]["components"]["notifier"] = json!({ "enabled": false });
    it["spec"]["components"]["web"] = json!({ "enabled": false });
    let out = apply(&it);
    assert!(
        out.status.success(),
        "kubectl apply disabling notifier and web: {}",
        text(&out.stderr)
    );
    let started = std::time::Instant::now();
    support::wait_for(
        "the objects of notifier and web to be removed from pulse-it",
        WAIT,
        || async {
            let left: Vec<String> = COMPONENT_KINDS
                .iter()
                .flat_map(|kind| {
                    names(kind, "pulse-it")
                        .into_iter()
                        .filter(|n| n == "notifier" || n == "web")
                        .map(move |n| format!("{kind} {n}"))
                })
                .chain(
                    names("ingress", "pulse-it")
                        .into_iter()
                        .filter(|n| n == "pulse-stream")
                        .map(|n| format!("ingress {n}")),
                )
                .chain(
                    ingress_backend("pulse-it", "/")
                        .map(|service| format!("ingress pulse: `/` to {service}")),
                )
                .collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("still there: {left:?}"))
            }
        },
    )
    .await;
    println!(
        "notifier and web disabled: their objects removed in {:?}",
        started.elapsed()
    );
    wait_for_components("pulse-it", &all[..4]).await;
    assert_eq!(
        names("ingress", "pulse-it"),
        ["pulse"],
        "the main Ingress stays"
    );
    // With the APIs only: no `/` rule, the API paths as before.
    assert_eq!(ingress_backend("pulse-it", "/"), None);
    assert_eq!(
        ingress_backend("pulse-it", "/v1/orders").as_deref(),
        Some("ordering")
    );

    // Delete the tenant (Retain): the tenant's objects go with it (garbage collector, through
    // their owner references), the namespace and the Secret stay.
    let started = std::time::Instant::now();
    kubectl_ok([
        "delete",
        "countrytenant",
        "it",
        "--wait=true",
        "--timeout=60s",
    ]);
    support::wait_for(
        "the garbage collector to empty pulse-it of the tenant's objects",
        WAIT,
        || async {
            let mut left = Vec::new();
            for kind in
                COMPONENT_KINDS
                    .iter()
                    .chain(&["configmap/pulse", "ingress", "replicaset", "pod"])
            {
                let (kind, only) = kind.split_once('/').unwrap_or((kind, ""));
                for name in names(kind, "pulse-it") {
                    if only.is_empty() || name == only {
                        left.push(format!("{kind} {name}"));
                    }
                }
            }
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("still there: {left:?}"))
            }
        },
    )
    .await;
    println!(
        "tenant it (Retain) deleted, its objects collected in {:?}",
        started.elapsed()
    );
    assert_eq!(
        namespace_phase("pulse-it").as_deref(),
        Some("Active"),
        "Retain keeps pulse-it"
    );
    assert_eq!(
        names("secret", "pulse-it"),
        ["pulse-it-backends"],
        "Retain keeps the Secrets"
    );

    // `es`: Delete: the namespace goes, with everything in it (namespace controller).
    fresh(&client, "es").await;
    let _es = TenantGuard("es".to_owned());
    let mut es = tenant("es");
    es["spec"]["deletionPolicy"] = json!("Delete");
    let out = apply(&es);
    assert!(
        out.status.success(),
        "kubectl apply of tenant es: {}",
        text(&out.stderr)
    );
    wait_for_components("pulse-es", &all).await;
    kubectl_ok([
        "create",
        "secret",
        "generic",
        "pulse-es-backends",
        "-n",
        "pulse-es",
        "--from-literal=database-url=postgres://db.invalid/pulse",
    ]);
    let started = std::time::Instant::now();
    kubectl_ok([
        "delete",
        "countrytenant",
        "es",
        "--wait=true",
        "--timeout=60s",
    ]);
    assert!(!tenant_exists("es"));
    support::wait_for(
        "namespace pulse-es to be gone (deletionPolicy Delete)",
        WAIT,
        || async {
            match namespace_phase("pulse-es") {
                None => Ok(()),
                Some(phase) => Err(format!("pulse-es is {phase}")),
            }
        },
    )
    .await;
    println!(
        "tenant es (Delete) deleted, namespace pulse-es gone in {:?}",
        started.elapsed()
    );
    // Retain kept pulse-it; the test's own cleanup.
    kubectl_ok(["delete", "namespace", "pulse-it", "--wait=false"]);
    drop(operator);
}

/// The Lease's holder and duration, if there is a Lease.
fn lease(ns: &str) -> Option<(String, u64)> {
    let out = support::kubectl([
        "get",
        "lease",
        "pulse-operator",
        "-n",
        ns,
        "--ignore-not-found",
        "-o",
        "jsonpath={.spec.holderIdentity} {.spec.leaseDurationSeconds}",
    ]);
    let stdout = text(&out.stdout);
    let (holder, seconds) = stdout.trim().split_once(' ')?;
    Some((holder.to_owned(), seconds.parse().ok()?))
}

/// What `/readyz` of an operator answers.
async fn readyz(operator: &support::Operator) -> String {
    let url = format!("http://{}/readyz", operator.admin);
    match reqwest::get(&url).await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(err) => format!("unreachable: {err}"),
    }
}

/// The `reportingInstance` of the Events about CountryTenant `code` as it is now (its uid:
/// Events about an earlier tenant of the same name outlive it): which replica reconciled it.
fn reporters(code: &str) -> Vec<String> {
    let uid = kubectl_ok([
        "get",
        "countrytenant",
        code,
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let out = support::kubectl(["get", "events.events.k8s.io", "-A", "-o", "json"]);
    let events: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let mut instances: Vec<String> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["regarding"]["kind"] == "CountryTenant" && e["regarding"]["uid"] == uid.as_str()
        })
        .filter_map(|e| e["reportingInstance"].as_str().map(str::to_owned))
        .collect();
    instances.sort();
    instances.dedup();
    instances
}

/// Waits until the operator wrote the status of tenant `code` (it reconciled it).
async fn wait_reconciled(code: &str) {
    support::wait_for(
        &format!("the operator to reconcile tenant {code}"),
        WAIT,
        || async move {
            let out = support::kubectl([
                "get",
                "countrytenant",
                code,
                "-o",
                "jsonpath={.status.observedGeneration}",
            ]);
            if text(&out.stdout).trim().is_empty() {
                Err(format!("no status yet: {}", text(&out.stderr)))
            } else {
                Ok(())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_standby_replica_takes_over_within_the_lease_duration_when_the_leader_is_killed() {
    let client = support::client().await;
    let chart = support::install_chart(&unique("pulse-test-leader"));
    let kubeconfig = support::service_account_kubeconfig(&chart.namespace, &chart.service_account);
    let mut replicas = [
        support::Operator::spawn(&kubeconfig, &chart.namespace, "replica-a"),
        support::Operator::spawn(&kubeconfig, &chart.namespace, "replica-b"),
    ];

    // Exactly one holds the Lease and says so; the other stands by.
    let holder = support::wait_for("one replica to hold the Lease", WAIT, || async {
        lease(&chart.namespace)
            .map(|(holder, _)| holder)
            .filter(|h| !h.is_empty())
            .ok_or_else(|| "no Lease holder yet".to_owned())
    })
    .await;
    let leader = replicas
        .iter()
        .position(|r| r.identity == holder)
        .unwrap_or_else(|| panic!("the Lease holder {holder:?} is neither replica"));
    let standby = 1 - leader;
    replicas[leader].wait_leader(WAIT).await;
    let said = readyz(&replicas[standby]).await;
    assert!(
        said.contains("standby"),
        "the other replica stands by: {said}"
    );
    let (_, seconds) = lease(&chart.namespace).expect("the Lease");
    // The timings of leader.rs (client-go's defaults), which `pulse-operator run` uses.
    let settings = pulse_operator::leader::LeaseSettings::new("l", "n", "i");
    let duration = settings.lease_duration;
    assert_eq!(
        seconds,
        duration.as_secs(),
        "the Lease carries leader.rs' duration"
    );

    // The leader reconciles (its Events name it), the standby does not.
    fresh(&client, "nl").await;
    let _nl = TenantGuard("nl".to_owned());
    let out = apply(&tenant("nl"));
    assert!(
        out.status.success(),
        "kubectl apply of tenant nl: {}",
        text(&out.stderr)
    );
    wait_reconciled("nl").await;
    support::wait_for("an Event about nl", WAIT, || async {
        let seen = reporters("nl");
        if seen.is_empty() {
            Err("none".to_owned())
        } else {
            Ok(())
        }
    })
    .await;
    assert_eq!(
        reporters("nl"),
        std::slice::from_ref(&holder),
        "only the leader reconciled nl"
    );

    // kill -9 of the leader (no release of the Lease), then a new tenant: the standby takes
    // the Lease once it has seen it unchanged for a whole lease duration, and reconciles it.
    fresh(&client, "be").await;
    let _be = TenantGuard("be".to_owned());
    replicas[leader].kill();
    let killed = std::time::Instant::now();
    let out = apply(&tenant("be"));
    assert!(
        out.status.success(),
        "kubectl apply of tenant be: {}",
        text(&out.stderr)
    );
    // The Lease changing hands and the tenant's status, polled together.
    let standby_id = replicas[standby].identity.clone();
    let lease_ns = chart.namespace.as_str();
    let mut handed_over = None;
    let took_over = support::wait_for("the standby to take over and reconcile be", WAIT, || {
        if handed_over.is_none() && lease(lease_ns).is_some_and(|(h, _)| h == standby_id) {
            handed_over = Some(killed.elapsed());
        }
        async move {
            let out = support::kubectl([
                "get",
                "countrytenant",
                "be",
                "-o",
                "jsonpath={.status.observedGeneration}",
            ]);
            if text(&out.stdout).trim().is_empty() {
                Err(format!(
                    "be has no status yet; Lease holder {:?}",
                    lease(lease_ns)
                ))
            } else {
                Ok(killed.elapsed())
            }
        }
    })
    .await;
    let (new_holder, _) = lease(&chart.namespace).expect("the Lease");
    assert_eq!(new_holder, standby_id, "the standby holds the Lease");
    let handed_over = handed_over.unwrap_or(took_over);
    // The standby counts the lease duration from when it saw the last renewal, which it reads
    // up to one retry late, and checks again every retry: it holds the Lease at most
    // duration + 2 retries after the kill. Then it starts its watches, waits out the controller's
    // debounce (1 s) and applies the tenant's objects: a few seconds more.
    let bound = duration + 2 * settings.retry_every + Duration::from_secs(6);
    println!(
        "leader {holder} killed: {standby_id} held the Lease {handed_over:?} later and reconciled the new tenant be {took_over:?} later (lease {duration:?}, bound {bound:?})"
    );
    assert!(
        took_over <= bound,
        "the standby reconciled a new tenant {took_over:?} after the leader's kill (Lease taken after {handed_over:?}), more than the lease duration {duration:?} plus a few seconds ({bound:?}); its log:\n{}",
        replicas[standby].log_tail(40)
    );
    // The last renewal was at most one renewal period before the kill.
    assert!(
        handed_over >= duration - settings.renew_every,
        "the standby took the Lease {handed_over:?} after the kill, before it could have expired ({duration:?})"
    );
    support::wait_for("an Event about be", WAIT, || async {
        let seen = reporters("be");
        if seen.is_empty() {
            Err("none".to_owned())
        } else {
            Ok(())
        }
    })
    .await;
    assert_eq!(
        reporters("be"),
        [new_holder],
        "the new leader reconciled be"
    );

    // Clean up while an operator runs (the tenants' finalizers).
    support::delete_tenant_and_wait(&client, "be", WAIT).await;
    support::delete_tenant_and_wait(&client, "nl", WAIT).await;
    // deletionPolicy Retain (the example's) kept their namespaces.
    kubectl_ok([
        "delete",
        "namespace",
        "pulse-be",
        "pulse-nl",
        "--wait=false",
    ]);
}
