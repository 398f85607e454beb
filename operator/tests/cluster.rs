//! The operator's CRDs against a real API server: the control plane `./dev test` starts once
//! for the whole run (`scripts/k8s-cluster.sh`: etcd, kube-apiserver with RBAC and admission,
//! kube-controller-manager, kube-scheduler and a kwok node that makes pods Ready), found through
//! `KUBECONFIG`. The tests share that cluster: each works in namespaces and on objects with names
//! of its own, and installs the CRDs by server-side apply (idempotent).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};
use serde_json::{Value, json};

const MANAGER: &str = "pulse-cluster-tests";
const WAIT: Duration = Duration::from_secs(60);

#[path = "support/root.rs"]
mod workspace;
use workspace::root;

/// A client for the shared test cluster; fails (never skips) when there is none.
async fn client() -> Client {
    let kubeconfig = std::env::var_os("KUBECONFIG").unwrap_or_else(|| {
        panic!(
            "KUBECONFIG is not set: these tests need the test cluster that `./dev test` starts \
             (scripts/k8s-cluster.sh); run them with `./dev test -p pulse-operator`"
        )
    });
    let config = Config::infer().await.unwrap_or_else(|err| {
        panic!(
            "cannot read KUBECONFIG={}: {err}",
            kubeconfig.to_string_lossy()
        )
    });
    Client::try_from(config).expect("a client for the test cluster")
}

/// A name nobody else uses on the shared cluster: `<prefix>-<pid>-<time>`.
fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!("{prefix}-{}-{:x}", std::process::id(), nanos & 0xff_ffff)
}

fn yaml_file(relative: &str) -> Value {
    let path = root().join(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|err| panic!("{relative} is not YAML: {err}"))
}

/// Installs every CRD of `crds/` (server-side apply) and waits until each is Established.
async fn install_crds(client: &Client) -> Vec<CustomResourceDefinition> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut paths: Vec<PathBuf> = std::fs::read_dir(root().join("crds"))
        .expect("crds/")
        .map(|entry| entry.expect("crds/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "crds/ holds no CRD");
    let mut crds = Vec::new();
    for path in paths {
        let relative = format!(
            "crds/{}",
            path.file_name().expect("file name").to_string_lossy()
        );
        let crd: CustomResourceDefinition = serde_json::from_value(yaml_file(&relative))
            .unwrap_or_else(|err| panic!("{relative} is not a CustomResourceDefinition: {err}"));
        let name = crd.metadata.name.clone().expect("CRD name");
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|err| panic!("server-side apply of {relative} failed: {err}"));
        tokio::time::timeout(
            WAIT,
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not Established within {WAIT:?}"))
        .expect("watching the CRD");
        crds.push(crd);
    }
    crds
}

/// Creates a namespace of this test and waits for its `default` service account (pods need it).
async fn namespace(client: &Client, prefix: &str) -> String {
    let name = unique(prefix);
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": { "name": name, "labels": { "pulse.dev/test": "cluster" } }
    }))
    .expect("a Namespace");
    api.create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|err| panic!("cannot create namespace {name}: {err}"));
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
    tokio::time::timeout(
        WAIT,
        await_condition(accounts, "default", |sa: Option<&ServiceAccount>| {
            sa.is_some()
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("no default service account in {name} within {WAIT:?}: is the controller manager running?"))
    .expect("watching the service account");
    name
}

async fn delete_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    api.delete(name, &DeleteParams::default())
        .await
        .unwrap_or_else(|err| panic!("cannot delete namespace {name}: {err}"));
}

fn country_tenants(client: &Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("pulse.dev", "v1alpha1", "CountryTenant");
    Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk))
}

/// Applies a CountryTenant and returns the API server's refusal (422), failing if it was taken.
async fn refused(client: &Client, tenant: Value) -> kube::core::Status {
    let api = country_tenants(client);
    let name = tenant["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_owned();
    let object: DynamicObject = serde_json::from_value(tenant).expect("a CountryTenant object");
    match api
        .patch(&name, &PatchParams::apply(MANAGER), &Patch::Apply(&object))
        .await
    {
        Err(kube::Error::Api(response)) => *response,
        Err(other) => panic!("applying CountryTenant {name} failed, but not at admission: {other}"),
        Ok(_) => {
            let _ = api.delete(&name, &DeleteParams::default()).await;
            panic!("the API server accepted CountryTenant {name}, which its CRD forbids")
        }
    }
}

#[tokio::test]
async fn the_api_server_refuses_a_country_tenant_its_crd_forbids() {
    let client = client().await;
    let crds = install_crds(&client).await;
    let crd = crds
        .iter()
        .find(|crd| crd.spec.names.kind == "CountryTenant")
        .expect("the CountryTenant CRD");
    let crd = serde_json::to_value(crd).expect("CRD as JSON");
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let pattern =
        schema["properties"]["spec"]["properties"]["country"]["properties"]["code"]["pattern"]
            .as_str()
            .expect("spec.country.code has a pattern in the CRD");
    let name_rule = schema["x-kubernetes-validations"]
        .as_array()
        .and_then(|rules| {
            rules.iter().find(|rule| {
                rule["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("metadata.name"))
            })
        })
        .and_then(|rule| rule["message"].as_str())
        .expect("the CRD's rule on metadata.name");

    // The French example with a country code that is no ISO 3166-1 alpha-2 code: the schema's
    // pattern refuses it. Nothing is stored, so the name cannot clash with another test's.
    let mut tenant = yaml_file("manifests/examples/fr.yaml");
    tenant["metadata"]["name"] = json!("f1");
    tenant["spec"]["country"]["code"] = json!("F1");
    let refusal = refused(&client, tenant).await;
    assert_eq!(refusal.code, 422, "{refusal:?}");
    assert_eq!(refusal.reason, "Invalid", "{refusal:?}");
    assert!(
        refusal.message.contains("spec.country.code") && refusal.message.contains(pattern),
        "expected the CRD's pattern {pattern} for spec.country.code in: {}",
        refusal.message
    );

    // A valid code under another name: the CRD's CEL rule refuses it, with the CRD's message.
    let mut tenant = yaml_file("manifests/examples/fr.yaml");
    let name = unique("fr");
    tenant["metadata"]["name"] = json!(name);
    let refusal = refused(&client, tenant).await;
    assert_eq!(refusal.code, 422, "{refusal:?}");
    assert!(
        refusal.message.contains(name_rule),
        "expected {name_rule:?} in: {}",
        refusal.message
    );
}

#[tokio::test]
async fn a_deployment_gets_a_ready_pod_on_the_kwok_node_and_its_deletion_collects_it() {
    let client = client().await;
    let ns = namespace(&client, "pulse-test-deploy").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let name = unique("web");
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "web", "image": "registry.invalid/pulse-test:1" }] }
            }
        }
    }))
    .expect("a Deployment");
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap_or_else(|err| panic!("cannot create Deployment {ns}/{name}: {err}"));

    // Deployment → ReplicaSet → Pod (controllers), Pod → node (scheduler), Pod Ready (kwok).
    let ready = |d: Option<&Deployment>| {
        d.and_then(|d| d.status.as_ref())
            .and_then(|s| s.ready_replicas)
            == Some(1)
    };
    tokio::time::timeout(WAIT, await_condition(deployments.clone(), &name, ready))
        .await
        .unwrap_or_else(|_| panic!("Deployment {ns}/{name} has no Ready pod after {WAIT:?}"))
        .expect("watching the Deployment");

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let list = pods
        .list(&ListParams::default().labels(&format!("app={name}")))
        .await
        .expect("list pods");
    assert_eq!(list.items.len(), 1, "one pod for one replica");
    let pod = &list.items[0];
    let spec = pod.spec.as_ref().expect("pod spec");
    assert!(
        spec.node_name.as_deref().is_some_and(|n| !n.is_empty()),
        "the scheduler put the pod on a node"
    );
    let status = pod.status.as_ref().expect("pod status");
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert!(
        status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        "the pod is Ready: {status:?}"
    );

    // The garbage collector: deleting the Deployment (background propagation) takes its
    // ReplicaSet and pod with it, through their owner references.
    deployments
        .delete(&name, &DeleteParams::background())
        .await
        .unwrap_or_else(|err| panic!("cannot delete Deployment {ns}/{name}: {err}"));
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let selector = ListParams::default().labels(&format!("app={name}"));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left_sets = replica_sets
            .list(&selector)
            .await
            .expect("list ReplicaSets");
        let left_pods = pods.list(&selector).await.expect("list pods");
        if left_sets.items.is_empty() && left_pods.items.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the garbage collector left {} ReplicaSet(s) and {} pod(s) of Deployment {ns}/{name} after {WAIT:?}",
            left_sets.items.len(),
            left_pods.items.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    delete_namespace(&client, &ns).await;
}
