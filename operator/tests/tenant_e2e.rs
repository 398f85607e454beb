//! The operator against the real test cluster, the way a platform engineer runs it: `helm
//! install` of `charts/pulse`, the real `pulse-operator run` authenticated as the chart's
//! ServiceAccount (so the chart's RBAC is what is tested), CountryTenants applied with
//! `kubectl apply -f`, kwok making the tenants' pods Ready.
//!
//! Tenant codes used here (each test has its own; the shared cluster is one per `./dev test`):
//! `fr` (manifests/examples/fr.yaml as it is), `lu` (rollout), `mc` (drift).
//!
//! These tests run operator processes that watch the whole cluster: they are in the nextest
//! group `k8s-operator` (one test at a time, see `.config/nextest.toml`).

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, ListParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Client, ResourceExt};
use serde::Deserialize as _;
use serde_json::Value;
use support::{
    Chart, Operator, TenantGuard, client, country_tenants, delete_tenant_and_wait, install_chart,
    kubectl, kubectl_ok, root, service_account_kubeconfig, unique, wait_for,
};

/// How long a whole tenant may take to become Ready (apply, scheduling, kwok, HPA scaling).
const READY: Duration = Duration::from_secs(120);
/// How long the operator may take to repair a drifted object.
const REPAIR: Duration = Duration::from_secs(15);

/// The chart installed into a namespace of the test, and the operator running as its
/// ServiceAccount and leading.
async fn operator_from_chart() -> (Client, Chart, Operator) {
    let client = client().await;
    let started = Instant::now();
    let chart = install_chart(&unique("pulse-op"));
    let kubeconfig = service_account_kubeconfig(&chart.namespace, &chart.service_account);
    let mut operator = Operator::spawn(&kubeconfig, &chart.namespace, "pulse-operator-0");
    operator.wait_leader(Duration::from_secs(30)).await;
    eprintln!(
        "helm install + operator leading as {}/{}: {:?}",
        chart.namespace,
        chart.service_account,
        started.elapsed()
    );
    (client, chart, operator)
}

/// manifests/examples/fr.yaml turned into the tenant of another country (`code`, e.g. `lu`):
/// its name, code, namespace, Secret names and host follow.
fn example_for(code: &str) -> String {
    let text = std::fs::read_to_string(root().join("manifests/examples/fr.yaml"))
        .expect("manifests/examples/fr.yaml");
    let upper = code.to_uppercase();
    text.replace("name: fr\n", &format!("name: {code}\n"))
        .replace("code: FR", &format!("code: {upper}"))
        .replace("pulse-fr", &format!("pulse-{code}"))
        .replace("fr.pulse.example", &format!("{code}.pulse.example"))
}

/// `kubectl apply -f` of a tenant manifest given as text (written to a file, as a user has it).
fn apply_tenant(text: &str) {
    let path = std::env::temp_dir().join(format!("{}.yaml", unique("tenant")));
    std::fs::write(&path, text).expect("write the tenant manifest");
    kubectl_ok(["apply", "-f", path.to_str().expect("UTF-8 path")]);
    let _ = std::fs::remove_file(path);
}

/// `kubectl wait countrytenant/<name> --for=condition=Ready`.
fn kubectl_wait_ready(name: &str, operator: &Operator) {
    let output = kubectl([
        "wait",
        &format!("countrytenant/{name}"),
        "--for=condition=Ready",
        &format!("--timeout={}s", READY.as_secs()),
    ]);
    assert!(
        output.status.success(),
        "kubectl wait countrytenant/{name} --for=condition=Ready failed: {}{}\nstatus: {}\noperator log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(
            &kubectl(["get", "countrytenant", name, "-o", "jsonpath={.status}"]).stdout
        ),
        operator.log_tail(30)
    );
}

/// Waits until the tenant is Ready for its current generation and every Deployment of its
/// namespace runs the replicas its autoscaler asks for (minReplicas, no metrics here), all
/// Ready: the state after which nothing moves by itself.
async fn wait_settled(client: &Client, name: &str, ns: &str) {
    let tenants = country_tenants(client);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let hpas: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
        )),
    );
    wait_for(
        &format!("tenant {name} Ready with every Deployment at its minReplicas"),
        READY,
        || {
            let (tenants, deployments, hpas) = (tenants.clone(), deployments.clone(), hpas.clone());
            async move {
                let tenant = tenants.get(name).await.map_err(|e| e.to_string())?;
                let (ready, observed) = ready_of(&tenant);
                if ready.as_deref() != Some("True") || observed != tenant.metadata.generation {
                    return Err(format!("Ready {ready:?}, observedGeneration {observed:?}"));
                }
                let list = deployments
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| e.to_string())?;
                if list.items.is_empty() {
                    return Err("no Deployment".into());
                }
                for d in list.items {
                    let hpa = hpas.get(&d.name_any()).await.map_err(|e| e.to_string())?;
                    let min = hpa.data["spec"]["minReplicas"].as_i64().unwrap_or(1) as i32;
                    let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    let ready = d
                        .status
                        .as_ref()
                        .and_then(|s| s.ready_replicas)
                        .unwrap_or(0);
                    if wanted != min || ready != min {
                        return Err(format!(
                            "{}: {ready} ready of {wanted}, autoscaler minReplicas {min}",
                            d.name_any()
                        ));
                    }
                }
                Ok(())
            }
        },
    )
    .await;
}

/// The tenant's Ready status and its `status.observedGeneration`.
fn ready_of(tenant: &DynamicObject) -> (Option<String>, Option<i64>) {
    let status = &tenant.data["status"];
    let ready = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str().map(str::to_owned));
    (ready, status["observedGeneration"].as_i64())
}

/// Deletes the tenant (its finalizer runs in the operator) and its namespace (deletionPolicy
/// Retain keeps it).
async fn remove_tenant(client: &Client, name: &str) {
    delete_tenant_and_wait(client, name, Duration::from_secs(60)).await;
    kubectl_ok([
        "delete",
        "namespace",
        &format!("pulse-{name}"),
        "--wait=false",
        "--ignore-not-found",
    ]);
}

/// Where `desired` (what the operator renders) is not in `actual` (what the server holds):
/// every field the operator sets must be there with the same value; fields the server added
/// (defaults, status) are tolerated.
fn differences(desired: &Value, actual: &Value, path: &str, out: &mut Vec<String>) {
    match (desired, actual) {
        (Value::Object(want), Value::Object(have)) => {
            for (key, value) in want {
                let at = format!("{path}.{key}");
                match have.get(key) {
                    Some(got) => differences(value, got, &at, out),
                    None if value.is_null() => {}
                    None => out.push(format!("{at}: missing (want {value})")),
                }
            }
        }
        (Value::Array(want), Value::Array(have)) => {
            if want.len() != have.len() {
                out.push(format!(
                    "{path}: {} items, want {}: {actual} vs {desired}",
                    have.len(),
                    want.len()
                ));
                return;
            }
            for (i, (w, h)) in want.iter().zip(have).enumerate() {
                differences(w, h, &format!("{path}[{i}]"), out);
            }
        }
        // A number the server keeps as a number, or a quantity it keeps as the same string.
        (Value::Number(w), Value::Number(h)) if w.as_f64() == h.as_f64() => {}
        (w, h) if w == h => {}
        (w, h) => out.push(format!("{path}: {h}, want {w}")),
    }
}

/// Every object that `pulse-operator render -f <file>` prints, as JSON.
fn rendered(file: &str) -> Vec<Value> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pulse-operator"))
        .args(["render", "-f", file])
        .current_dir(root())
        .output()
        .expect("run pulse-operator render");
    assert!(
        output.status.success(),
        "pulse-operator render -f {file}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML"))
        .filter(|doc| !doc.is_null())
        .collect()
}

/// Which part of an object the operator sets and the comparison checks.
fn compared_part(kind: &str) -> &'static str {
    match kind {
        "ConfigMap" => "data",
        "Namespace" => "metadata",
        _ => "spec",
    }
}

#[tokio::test]
async fn the_chart_installs_and_its_operator_reconciles_the_french_example() {
    let test = Instant::now();
    let (client, _chart, operator) = operator_from_chart().await;

    // As a user does: kubectl apply -f the example, kubectl wait for Ready.
    let applied = Instant::now();
    let _guard = TenantGuard("fr".into());
    kubectl_ok(["apply", "-f", "manifests/examples/fr.yaml"]);
    kubectl_wait_ready("fr", &operator);
    eprintln!("fr applied -> Ready: {:?}", applied.elapsed());
    wait_settled(&client, "fr", "pulse-fr").await;
    eprintln!(
        "fr applied -> settled (autoscalers at minReplicas, all Ready): {:?}",
        applied.elapsed()
    );

    // Every object the operator renders is in the cluster with what the operator sets.
    let objects = rendered("manifests/examples/fr.yaml");
    assert!(
        objects.len() > 10,
        "render printed {} objects",
        objects.len()
    );
    let mut problems = Vec::new();
    for object in &objects {
        let api_version = object["apiVersion"].as_str().expect("apiVersion");
        let kind = object["kind"].as_str().expect("kind");
        let name = object["metadata"]["name"].as_str().expect("name");
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        let Some(actual) = api
            .get_opt(name)
            .await
            .unwrap_or_else(|err| panic!("get {kind} {name}: {err}"))
        else {
            problems.push(format!("{kind} {name}: not in the cluster"));
            continue;
        };
        let actual = serde_json::to_value(&actual).expect("JSON");
        let part = compared_part(kind);
        let want = if part == "metadata" {
            // A namespace's labels and annotations are what the operator sets on it.
            serde_json::json!({
                "labels": object["metadata"]["labels"],
                "annotations": object["metadata"]["annotations"],
            })
        } else {
            object[part].clone()
        };
        let mut found = Vec::new();
        differences(
            &want,
            &actual[part],
            &format!("{kind} {name} .{part}"),
            &mut found,
        );
        // Labels of every object: the tenant's selector (pruning, watches) relies on them.
        differences(
            &object["metadata"]["labels"],
            &actual["metadata"]["labels"],
            &format!("{kind} {name} .metadata.labels"),
            &mut found,
        );
        problems.extend(found);
    }
    assert!(
        problems.is_empty(),
        "the cluster differs from `pulse-operator render -f manifests/examples/fr.yaml`:\n{}",
        problems.join("\n")
    );

    // The web app: its Deployment runs `--target web` (no schema, so no migration first), its
    // Service takes the HTTP port, and the Ingress sends `/` to it while every API path keeps
    // going to its component.
    check_web_app(&client, "pulse-fr").await;

    // kwok made every pod Ready.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "pulse-fr");
    let pods = pods.list(&ListParams::default()).await.expect("list pods");
    assert!(!pods.items.is_empty(), "no pod in pulse-fr");
    for pod in &pods.items {
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        assert!(
            ready,
            "pod {} is not Ready: {:?}",
            pod.name_any(),
            pod.status
        );
    }

    // kubectl get ct: the CRD's printer columns, with the tenant's row.
    let crd: Value = serde_json::from_str(&kubectl_ok([
        "get",
        "crd",
        "countrytenants.pulse.dev",
        "-o",
        "json",
    ]))
    .expect("CRD JSON");
    let columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .expect("additionalPrinterColumns")
        .clone();
    let names = |wide: bool| -> Vec<String> {
        std::iter::once("NAME".to_owned())
            .chain(
                columns
                    .iter()
                    .filter(|c| wide || c["priority"].as_i64().unwrap_or(0) == 0)
                    .map(|c| c["name"].as_str().expect("column name").to_uppercase()),
            )
            .collect()
    };
    for wide in [false, true] {
        let mut args = vec!["get", "ct", "fr"];
        if wide {
            args.extend(["-o", "wide"]);
        }
        let table = kubectl_ok(&args);
        let mut lines = table.lines();
        let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
        assert_eq!(header, names(wide), "kubectl get ct header:\n{table}");
        let row: Vec<&str> = lines.next().expect("a row").split_whitespace().collect();
        let cell = |column: &str| {
            let i = header.iter().position(|h| *h == column).expect("column");
            row.get(i).copied().unwrap_or_default()
        };
        assert_eq!(cell("NAME"), "fr", "{table}");
        assert_eq!(cell("CODE"), "FR", "{table}");
        assert_eq!(cell("NAMESPACE"), "pulse-fr", "{table}");
        assert_eq!(cell("READY"), "True", "{table}");
        assert_eq!(cell("URL"), "https://fr.pulse.example", "{table}");
        assert_eq!(cell("DEVELOPMENT"), "true", "{table}");
        if wide {
            assert_eq!(cell("PAYMENTS"), "sandbox", "{table}");
            assert_eq!(cell("SMS"), "sandbox", "{table}");
            assert_eq!(cell("IMAGE"), "pulse:0.1.0", "{table}");
        }
    }

    remove_tenant(&client, "fr").await;
    eprintln!("test took {:?}", test.elapsed());
}

/// What the cluster holds of the web app in `ns`: the Deployment `web` (`pulse serve --target
/// web`, Ready at its minReplicas: `wait_settled` saw to that), the Service `web`, and the
/// Ingress `pulse` routing `/` (`Prefix`) to that Service's HTTP port, the API prefixes to their
/// components; the stream Ingress has notifier's stream only.
async fn check_web_app(client: &Client, ns: &str) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let web = deployments.get("web").await.expect("Deployment web");
    let pod = web
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("pod template");
    assert_eq!(
        pod.containers[0].args.clone().unwrap_or_default(),
        ["serve", "--target", "web"]
    );
    assert_eq!(pod.init_containers.unwrap_or_default().len(), 0);
    let ready = web.status.and_then(|s| s.ready_replicas).unwrap_or(0);
    assert!(ready >= 1, "web has {ready} ready replicas");

    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let service = services.get("web").await.expect("Service web");
    let spec = service.spec.expect("Service spec");
    assert_eq!(
        spec.selector
            .unwrap_or_default()
            .get("app.kubernetes.io/component")
            .map(String::as_str),
        Some("web")
    );
    let http = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.name.as_deref() == Some("http"))
        .expect("http port");
    assert_eq!(http.port, 8080);

    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), ns);
    let paths_of = |ingress: Ingress| -> Vec<(String, String, String, String)> {
        ingress
            .spec
            .and_then(|s| s.rules)
            .unwrap_or_default()
            .into_iter()
            .flat_map(|r| r.http.map(|h| h.paths).unwrap_or_default())
            .map(|p| {
                let backend = p.backend.service.expect("service backend");
                let port = backend.port.and_then(|p| p.name).unwrap_or_default();
                (p.path.unwrap_or_default(), p.path_type, backend.name, port)
            })
            .collect()
    };
    let main = paths_of(ingresses.get("pulse").await.expect("Ingress pulse"));
    let root: Vec<_> = main.iter().filter(|(path, ..)| path == "/").collect();
    assert_eq!(
        root,
        [&(
            "/".to_owned(),
            "Prefix".to_owned(),
            "web".to_owned(),
            "http".to_owned()
        )],
        "{main:?}"
    );
    // Every other path is an API prefix of another component, so the longest match keeps API
    // requests away from the web app.
    for (path, kind, service, _) in &main {
        assert_eq!(kind, "Prefix", "{path}");
        if path != "/" {
            assert!(path.starts_with("/v1/") || path == "/.well-known", "{path}");
            assert_ne!(service, "web", "{path}");
        }
    }
    for (path, service) in [
        ("/v1/auth", "identity"),
        ("/v1/appointments", "booking"),
        ("/v1/orders", "ordering"),
        ("/v1/notifications", "notifier"),
    ] {
        assert!(
            main.iter().any(|(p, _, s, _)| p == path && s == service),
            "{path} -> {service}: {main:?}"
        );
    }
    let stream = paths_of(
        ingresses
            .get("pulse-stream")
            .await
            .expect("Ingress pulse-stream"),
    );
    assert_eq!(
        stream,
        [(
            "/v1/notifications/stream".to_owned(),
            "Prefix".to_owned(),
            "notifier".to_owned(),
            "http".to_owned()
        )]
    );
}

/// The revision (`deployment.kubernetes.io/revision`) of every Deployment of `ns`, by name.
async fn revisions(client: &Client, ns: &str) -> Vec<(String, i64)> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let mut out: Vec<(String, i64)> = deployments
        .list(&ListParams::default())
        .await
        .expect("list Deployments")
        .items
        .iter()
        .map(|d| {
            let revision = d
                .annotations()
                .get("deployment.kubernetes.io/revision")
                .and_then(|r| r.parse().ok())
                .unwrap_or(0);
            (d.name_any(), revision)
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_configuration_change_rolls_every_deployment_and_ready_follows() {
    let test = Instant::now();
    let (client, _chart, operator) = operator_from_chart().await;
    let (name, ns) = ("lu", "pulse-lu");
    let _guard = TenantGuard(name.into());
    apply_tenant(&example_for(name));
    kubectl_wait_ready(name, &operator);
    wait_settled(&client, name, ns).await;
    let before = revisions(&client, ns).await;
    eprintln!("lu Ready and settled: {:?}", test.elapsed());

    // Every status the operator writes from now on, in order.
    let tenants = country_tenants(&client);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorder = {
        let seen = seen.clone();
        let tenants = tenants.clone();
        tokio::spawn(async move {
            use futures::StreamExt;
            use kube::runtime::{WatchStreamExt, watcher};
            let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
            let mut stream = std::pin::pin!(watcher(tenants, config).applied_objects());
            while let Some(Ok(tenant)) = stream.next().await {
                let (ready, observed) = ready_of(&tenant);
                seen.lock()
                    .expect("lock")
                    .push((tenant.metadata.generation, observed, ready));
            }
        })
    };
    // The recorder has seen the tenant as it is before the change.
    wait_for("the watch to start", Duration::from_secs(10), || {
        let n = seen.lock().expect("lock").len();
        async move {
            if n > 0 {
                Ok(())
            } else {
                Err("nothing yet".into())
            }
        }
    })
    .await;

    let changed = Instant::now();
    kubectl_ok([
        "patch",
        "countrytenant",
        name,
        "--type=merge",
        "-p",
        r#"{"spec":{"country":{"booking":{"horizonDays":90}}}}"#,
    ]);
    let generation = tenants
        .get(name)
        .await
        .expect("get tenant")
        .metadata
        .generation
        .expect("generation");

    // Ready turns False for the new generation, then True again once the rollouts are done.
    wait_for(
        "Ready False, then True, for the new generation",
        READY,
        || {
            let seen = seen.lock().expect("lock").clone();
            async move {
                let mine: Vec<_> = seen
                    .iter()
                    .filter(|(_, observed, _)| *observed == Some(generation))
                    .collect();
                let went_false = mine
                    .iter()
                    .position(|(_, _, ready)| ready.as_deref() == Some("False"));
                match went_false {
                    Some(i)
                        if mine[i..]
                            .iter()
                            .any(|(_, _, r)| r.as_deref() == Some("True")) =>
                    {
                        Ok(())
                    }
                    _ => Err(format!("statuses (generation, observed, Ready): {seen:?}")),
                }
            }
        },
    )
    .await;
    eprintln!("change -> Ready False -> True: {:?}", changed.elapsed());
    recorder.abort();

    // Every Deployment rolled to a new ReplicaSet (the config hash in its pod template changed),
    // and `kubectl rollout status` agrees it is done.
    let after = revisions(&client, ns).await;
    assert_eq!(after.len(), before.len(), "{before:?} -> {after:?}");
    for ((name_before, rev_before), (name_after, rev_after)) in before.iter().zip(&after) {
        assert_eq!(name_before, name_after);
        assert!(
            rev_after > rev_before,
            "Deployment {name_after} did not roll: revision {rev_before} -> {rev_after}"
        );
        kubectl_ok([
            "rollout",
            "status",
            &format!("deployment/{name_after}"),
            "-n",
            ns,
            "--timeout=60s",
        ]);
    }
    let horizon = kubectl_ok([
        "get",
        "configmap",
        "pulse-country",
        "-n",
        ns,
        "-o",
        "jsonpath={.data.PULSE_COUNTRY__BOOKING__HORIZON_DAYS}",
    ]);
    assert_eq!(horizon, "90", "the ConfigMap carries the new horizon");

    wait_settled(&client, name, ns).await;
    let tenant = tenants.get(name).await.expect("get tenant");
    assert_eq!(ready_of(&tenant).1, tenant.metadata.generation);
    eprintln!("change -> settled: {:?}", changed.elapsed());

    remove_tenant(&client, name).await;
    eprintln!("test took {:?}", test.elapsed());
}

#[tokio::test]
async fn a_deleted_service_and_a_hand_edited_deployment_are_repaired() {
    let test = Instant::now();
    let (client, _chart, operator) = operator_from_chart().await;
    let (name, ns) = ("mc", "pulse-mc");
    let _guard = TenantGuard(name.into());
    apply_tenant(&example_for(name));
    kubectl_wait_ready(name, &operator);
    wait_settled(&client, name, ns).await;
    eprintln!("mc Ready and settled: {:?}", test.elapsed());

    // A Service deleted by hand comes back.
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let old_uid = services
        .get("booking")
        .await
        .expect("Service booking")
        .uid();
    let deleted = Instant::now();
    kubectl_ok(["delete", "service", "booking", "-n", ns]);
    wait_for("Service booking to be recreated", REPAIR, || {
        let services = services.clone();
        let old_uid = old_uid.clone();
        async move {
            match services.get_opt("booking").await {
                Ok(Some(s)) if s.uid() != old_uid => Ok(()),
                Ok(Some(_)) => Err("the old Service is still there".into()),
                Ok(None) => Err("gone".into()),
                Err(err) => Err(err.to_string()),
            }
        }
    })
    .await;
    eprintln!("deleted Service repaired in {:?}", deleted.elapsed());

    // A hand-edited image goes back to the tenant's.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let image = |d: &Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers.first())
            .and_then(|c| c.image.clone())
    };
    let original = image(
        &deployments
            .get("booking")
            .await
            .expect("Deployment booking"),
    );
    assert_eq!(original.as_deref(), Some("pulse:0.1.0"));
    let edited = Instant::now();
    kubectl_ok([
        "set",
        "image",
        "deployment/booking",
        "-n",
        ns,
        "*=registry.invalid/hand-edited:1",
    ]);
    wait_for("Deployment booking's image to be repaired", REPAIR, || {
        let deployments = deployments.clone();
        let original = original.clone();
        async move {
            let d = deployments
                .get("booking")
                .await
                .map_err(|e| e.to_string())?;
            if image(&d) == original {
                Ok(())
            } else {
                Err(format!("image {:?}", image(&d)))
            }
        }
    })
    .await;
    eprintln!("hand-edited Deployment repaired in {:?}", edited.elapsed());
    wait_settled(&client, name, ns).await;

    remove_tenant(&client, name).await;
    eprintln!("test took {:?}", test.elapsed());
}
