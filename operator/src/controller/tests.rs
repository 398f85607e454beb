//! The tenant reconciler against a mocked Kubernetes API (each expected call asserted; a
//! missing or extra call fails the test).

use std::sync::Arc;

use http::Method;
use serde_json::{Value, json};

use super::*;
use crate::fixtures::{
    self, Call, Recorded, Reply, assert_patched, deleting, finalized, finalizer_call, normal,
    tenant, warning,
};
use crate::reconciler::error_policy;

const TENANT: &str = "/apis/pulse.dev/v1alpha1/countrytenants/fr";
const STATUS: &str = "/apis/pulse.dev/v1alpha1/countrytenants/fr/status";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

fn deployment_path(name: &str) -> String {
    format!("/apis/apps/v1/namespaces/pulse-fr/deployments/{name}")
}

/// The API server's answer to a Deployment apply: generation and rollout state.
fn deployment(generation: i64, observed: i64, available: i32) -> Reply {
    Reply::EchoWith(Box::new(move |mut body| {
        body["metadata"]["generation"] = json!(generation);
        body["spec"]["replicas"] = json!(2);
        body["status"] = json!({
            "observedGeneration": observed,
            "replicas": 2,
            "updatedReplicas": 2,
            "readyReplicas": available,
            "availableReplicas": available,
        });
        body
    }))
}

/// A Deployment just created: no status yet.
fn fresh_deployment() -> Reply {
    Reply::EchoWith(Box::new(|mut body| {
        body["metadata"]["generation"] = json!(1);
        body
    }))
}

fn component_calls(component: Component, reply: Reply) -> Vec<Call> {
    let name = component.name();
    vec![
        Call::apply(deployment_path(name)).reply(reply),
        Call::apply(format!("/api/v1/namespaces/pulse-fr/services/{name}")),
        Call::apply(format!(
            "/apis/autoscaling/v2/namespaces/pulse-fr/horizontalpodautoscalers/{name}"
        )),
        Call::apply(format!(
            "/apis/policy/v1/namespaces/pulse-fr/poddisruptionbudgets/{name}"
        )),
    ]
}

/// Everything a full apply pass does before writing the status.
fn apply_calls(tenant: &CountryTenant, mut reply: impl FnMut(Component) -> Reply) -> Vec<Call> {
    let mut calls = vec![
        Call::apply("/api/v1/namespaces/pulse-fr"),
        Call::apply("/api/v1/namespaces/pulse-fr/configmaps/pulse-country"),
    ];
    for component in tenant.spec.components.enabled() {
        calls.extend(component_calls(component, reply(component)));
    }
    // The main Ingress, then the stream Ingress (notifier's SSE path).
    let streams = tenant.spec.components.get(Component::Notifier).enabled;
    for (name, wanted) in [("pulse", true), ("pulse-stream", streams)] {
        if tenant.spec.ingress.is_some() && wanted {
            calls.push(Call::apply(format!(
                "/apis/networking.k8s.io/v1/namespaces/pulse-fr/ingresses/{name}"
            )));
        }
    }
    calls
}

fn status_call(tenant: &CountryTenant) -> Call {
    fixtures::status_call(STATUS, tenant)
}

fn event_call() -> Call {
    Call::new(Method::POST, EVENTS)
}

async fn reconcile_with(
    tenant: CountryTenant,
    calls: Vec<Call>,
) -> (Result<Action, Error>, Vec<Recorded>, Arc<Context>) {
    reconcile_in(tenant, calls, Tenants::new().0).await
}

/// One pass with `tenants` (caches and records of earlier passes) in the context.
async fn reconcile_in(
    tenant: CountryTenant,
    calls: Vec<Call>,
    tenants: Tenants,
) -> (Result<Action, Error>, Vec<Recorded>, Arc<Context>) {
    let (ctx, server) = fixtures::context(tenants);
    let ctx = Arc::new(ctx);
    let limit = Duration::from_secs(20);
    let (result, recorded) =
        fixtures::reconcile_scripted(&tenant, ctx.clone(), server, calls, limit).await;
    (result, recorded, ctx)
}

fn status_of(recorded: &[Recorded]) -> CountryTenantStatus {
    fixtures::last_status(recorded, STATUS, "CountryTenant")
}

fn condition_of<'a>(status: &'a CountryTenantStatus, type_: &str) -> &'a Condition {
    fixtures::condition(&status.conditions, type_)
}

fn events_of(recorded: &[Recorded]) -> Vec<(String, String)> {
    fixtures::events_of(recorded, EVENTS)
}

#[tokio::test]
async fn the_finalizer_comes_first() {
    let t = tenant();
    let calls = vec![finalizer_call(TENANT, &t, true)];
    let (result, recorded, _) = reconcile_with(t, calls).await;
    assert_eq!(result.expect("ok"), Action::await_change());
    assert_patched(
        &recorded[0],
        json!({"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}),
    );
}

#[tokio::test]
async fn creates_a_tenant_from_nothing() {
    let t = finalized(tenant());
    let mut calls = apply_calls(&t, |_| fresh_deployment());
    calls.push(status_call(&t));
    calls.push(event_call());
    let (result, recorded, ctx) = reconcile_with(t.clone(), calls).await;
    assert_eq!(result.expect("ok"), Action::requeue(PROGRESS_RESYNC));

    // What was applied is exactly the desired state, in order.
    let expected = resources::desired(&t)
        .expect("desired")
        .objects()
        .expect("json");
    let applied: Vec<Value> = recorded
        .iter()
        .filter(|r| r.method == Method::PATCH && r.path != STATUS)
        .map(|r| r.body.clone())
        .collect();
    assert_eq!(applied, expected);

    let status = status_of(&recorded);
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.namespace.as_deref(), Some("pulse-fr"));
    assert_eq!(status.url.as_deref(), Some("https://fr.pulse.example"));
    assert_eq!(status.components.len(), Component::ALL.len());
    assert!(status.components.iter().all(|c| !c.available));
    let ready = condition_of(&status, READY);
    assert_eq!(
        (ready.status, ready.reason.as_str()),
        (ConditionStatus::False, "RollingOut")
    );
    assert_eq!(ready.observed_generation, Some(1));
    assert_eq!(
        condition_of(&status, PROGRESSING).status,
        ConditionStatus::True
    );
    assert_eq!(
        condition_of(&status, DEGRADED).status,
        ConditionStatus::False
    );
    assert_eq!(events_of(&recorded), [normal("RollingOut")]);
    assert_eq!(ctx.metrics.failure_count(CONTROLLER, "api_500"), 0);
}

#[tokio::test]
async fn ready_when_every_deployment_has_rolled_out_this_generation() {
    let mut t = finalized(tenant());
    t.metadata.generation = Some(4);
    let mut calls = apply_calls(&t, |_| deployment(3, 3, 2));
    calls.push(status_call(&t));
    calls.push(event_call());
    let (result, recorded, _) = reconcile_with(t, calls).await;
    assert_eq!(result.expect("ok"), Action::requeue(READY_RESYNC));
    let status = status_of(&recorded);
    assert_eq!(status.observed_generation, Some(4));
    let ready = condition_of(&status, READY);
    assert_eq!(
        (ready.status, ready.reason.as_str()),
        (ConditionStatus::True, "Available")
    );
    assert_eq!(ready.observed_generation, Some(4));
    assert!(
        ready.message.contains("https://fr.pulse.example"),
        "{}",
        ready.message
    );
    assert_eq!(
        condition_of(&status, PROGRESSING).status,
        ConditionStatus::False
    );
    assert!(
        status
            .components
            .iter()
            .all(|c| c.available && c.ready_replicas == 2)
    );
    assert_eq!(events_of(&recorded), [normal("Available")]);
}

#[tokio::test]
async fn not_ready_while_a_deployment_lags_its_generation() {
    let t = finalized(tenant());
    // marketing's pods are all available, but for the previous template.
    let mut calls = apply_calls(&t, |c| {
        if c == Component::Marketing {
            deployment(2, 1, 2)
        } else {
            deployment(1, 1, 2)
        }
    });
    calls.push(status_call(&t));
    calls.push(event_call());
    let (result, recorded, _) = reconcile_with(t, calls).await;
    assert_eq!(result.expect("ok"), Action::requeue(PROGRESS_RESYNC));
    let status = status_of(&recorded);
    let ready = condition_of(&status, READY);
    assert_eq!(ready.status, ConditionStatus::False);
    assert!(ready.message.contains("marketing"), "{}", ready.message);
    let marketing = status
        .components
        .iter()
        .find(|c| c.name == "marketing")
        .expect("marketing");
    assert!(!marketing.available);
    assert!(
        status
            .components
            .iter()
            .filter(|c| c.name != "marketing")
            .all(|c| c.available)
    );
}

#[tokio::test]
async fn a_config_change_reapplies_every_deployment() {
    let before = finalized(tenant());
    let old_hash = resources::desired(&before).expect("desired").config_hash;
    let mut t = before.clone();
    t.metadata.generation = Some(2);
    t.spec.country.booking.min_notice_minutes = 30;
    // The tenant was Ready for generation 1.
    t.status = Some(CountryTenantStatus {
        observed_generation: Some(1),
        conditions: vec![Condition::new(
            READY,
            ConditionStatus::True,
            "Available",
            "",
            Some(1),
            Utc::now(),
        )],
        ..CountryTenantStatus::default()
    });
    let mut calls = apply_calls(&t, |_| deployment(2, 1, 2));
    calls.push(status_call(&t));
    calls.push(event_call());
    let (result, recorded, _) = reconcile_with(t, calls).await;
    assert_eq!(result.expect("ok"), Action::requeue(PROGRESS_RESYNC));

    let config_map = recorded
        .iter()
        .find(|r| r.path.ends_with("/configmaps/pulse-country"))
        .expect("ConfigMap applied");
    assert_eq!(
        config_map.body["data"]["PULSE_COUNTRY__BOOKING__MIN_NOTICE_MINUTES"],
        "30"
    );
    let deployments: Vec<&Recorded> = recorded
        .iter()
        .filter(|r| r.path.contains("/deployments/"))
        .collect();
    assert_eq!(deployments.len(), Component::ALL.len());
    for d in deployments {
        let hash = d.body["spec"]["template"]["metadata"]["annotations"]
            [resources::CONFIG_HASH_ANNOTATION]
            .as_str()
            .expect("hash annotation");
        assert_ne!(hash, old_hash, "{} must roll", d.path);
    }
    let status = status_of(&recorded);
    assert_eq!(status.observed_generation, Some(2));
    assert_eq!(condition_of(&status, READY).status, ConditionStatus::False);
    assert_eq!(events_of(&recorded), [normal("RollingOut")]);
}

#[tokio::test]
async fn a_failed_namespace_delete_keeps_the_finalizer() {
    let mut t = deleting(finalized(tenant()));
    t.spec.deletion_policy = DeletionPolicy::Delete;
    let calls = vec![
        Call::new(Method::DELETE, "/api/v1/namespaces/pulse-fr")
            .reply(Reply::Error(500, "InternalError")),
    ];
    let (result, _, ctx) = reconcile_with(t, calls).await;
    let err = result.expect_err("cleanup failed");
    assert_eq!(err.metric_label(), "api_500");
    assert_eq!(ctx.metrics.failure_count(CONTROLLER, "api_500"), 1);
}

#[tokio::test]
async fn an_api_conflict_degrades_counts_and_backs_off() {
    let t = finalized(tenant());
    let calls = vec![
        Call::apply("/api/v1/namespaces/pulse-fr"),
        Call::apply("/api/v1/namespaces/pulse-fr/configmaps/pulse-country")
            .reply(Reply::Error(409, "Conflict")),
        status_call(&t),
        event_call(),
    ];
    let (result, recorded, ctx) = reconcile_with(t.clone(), calls).await;
    let err = result.expect_err("conflict");
    assert_eq!(err.metric_label(), "api_409");
    assert_eq!(ctx.metrics.failure_count(CONTROLLER, "api_409"), 1);
    assert!(ctx.metrics.encode().contains("error=\"api_409\""));

    let status = status_of(&recorded);
    let degraded = condition_of(&status, DEGRADED);
    assert_eq!(
        (degraded.status, degraded.reason.as_str()),
        (ConditionStatus::True, "ReconcileFailed")
    );
    assert!(
        degraded
            .message
            .contains("apply ConfigMap pulse-fr/pulse-country"),
        "{}",
        degraded.message
    );
    assert_eq!(condition_of(&status, READY).status, ConditionStatus::False);
    assert_eq!(events_of(&recorded), [warning("ReconcileFailed")]);

    // Exponential backoff per tenant.
    let tenant = Arc::new(t);
    assert_eq!(
        error_policy(tenant.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(
        error_policy(tenant.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(10))
    );
    assert_eq!(
        error_policy(tenant, &err, ctx),
        Action::requeue(Duration::from_secs(20))
    );
}

#[tokio::test]
async fn a_server_error_on_a_deployment_degrades() {
    let t = finalized(tenant());
    let calls = vec![
        Call::apply("/api/v1/namespaces/pulse-fr"),
        Call::apply("/api/v1/namespaces/pulse-fr/configmaps/pulse-country"),
        Call::apply(deployment_path("identity")).reply(Reply::Error(500, "InternalError")),
        status_call(&t),
        event_call(),
    ];
    let (result, recorded, ctx) = reconcile_with(t, calls).await;
    assert_eq!(result.expect_err("500").metric_label(), "api_500");
    assert_eq!(ctx.metrics.failure_count(CONTROLLER, "api_500"), 1);
    let degraded = condition_of(&status_of(&recorded), DEGRADED).clone();
    assert_eq!(degraded.status, ConditionStatus::True);
    assert!(
        degraded
            .message
            .contains("apply Deployment pulse-fr/identity"),
        "{}",
        degraded.message
    );
}

#[tokio::test]
async fn an_invalid_spec_is_degraded_without_touching_anything() {
    let mut t = finalized(tenant());
    t.spec.country.timezone = "Mars/Olympus".into();
    let calls = vec![status_call(&t), event_call()];
    let (result, recorded, ctx) = reconcile_with(t, calls).await;
    assert_eq!(result.expect_err("invalid").metric_label(), "invalid_spec");
    assert_eq!(ctx.metrics.failure_count(CONTROLLER, "invalid_spec"), 1);
    let degraded = condition_of(&status_of(&recorded), DEGRADED).clone();
    assert_eq!(degraded.reason, "InvalidSpec");
    assert!(
        degraded.message.contains("timezone"),
        "{}",
        degraded.message
    );
    assert_eq!(events_of(&recorded), [warning("InvalidSpec")]);
}

/// A tenant stored before `spec.payments` became required: nothing is deployed (ordering would
/// fall back to the sandbox, where anyone pays any order), and the status says what to add.
#[tokio::test]
async fn a_tenant_without_a_payment_provider_is_degraded_without_deploying() {
    let mut t = finalized(tenant());
    t.spec.payments = None;
    let calls = vec![status_call(&t), event_call()];
    let (result, recorded, ctx) = reconcile_with(t, calls).await;
    assert_eq!(
        result.expect_err("no provider").metric_label(),
        "invalid_spec"
    );
    assert_eq!(ctx.metrics.failure_count(CONTROLLER, "invalid_spec"), 1);
    let status = status_of(&recorded);
    let degraded = condition_of(&status, DEGRADED);
    assert_eq!(
        (degraded.status, degraded.reason.as_str()),
        (ConditionStatus::True, "NoPaymentProvider")
    );
    assert!(
        degraded.message.contains("spec.payments") && degraded.message.contains("stripe"),
        "{}",
        degraded.message
    );
    assert_eq!(condition_of(&status, READY).status, ConditionStatus::False);
    assert_eq!(events_of(&recorded), [warning("NoPaymentProvider")]);
}

/// A tenant stored before `spec.secrets.identityKeyring` and `spec.sms` existed: nothing is
/// deployed (identity could not seal its keys, so no token could be verified anywhere; or it
/// could not send a code), and the status says what to add, with its own reason.
#[tokio::test]
async fn a_tenant_without_identity_keyring_or_sms_is_degraded_without_deploying() {
    let mut no_keyring = finalized(tenant());
    no_keyring.spec.secrets.identity_keyring = None;
    let mut no_sms = finalized(tenant());
    no_sms.spec.sms = None;
    for (t, reason, needles) in [
        (
            no_keyring,
            "NoIdentityKeyring",
            ["spec.secrets.identityKeyring", "openssl rand"],
        ),
        (no_sms, "NoSmsProvider", ["spec.sms", "twilio"]),
    ] {
        let calls = vec![status_call(&t), event_call()];
        let (result, recorded, ctx) = reconcile_with(t, calls).await;
        assert_eq!(result.expect_err(reason).metric_label(), "invalid_spec");
        assert_eq!(ctx.metrics.failure_count(CONTROLLER, "invalid_spec"), 1);
        let status = status_of(&recorded);
        let degraded = condition_of(&status, DEGRADED);
        assert_eq!(
            (degraded.status, degraded.reason.as_str()),
            (ConditionStatus::True, reason)
        );
        for needle in needles {
            assert!(
                degraded.message.contains(needle),
                "{reason}: {}",
                degraded.message
            );
        }
        assert_eq!(condition_of(&status, READY).status, ConditionStatus::False);
        assert_eq!(events_of(&recorded), [warning(reason)]);
    }
}

/// Puts what a pass applied into the caches, as the watches deliver it: with what the server
/// and other controllers add (status, revision annotation, resource version), which must not
/// count as a change.
fn cache_applied(writers: &mut ChildWriters, recorded: &[Recorded]) {
    fn put<K: Clone + serde::de::DeserializeOwned + Resource<DynamicType = ()>>(
        writer: &mut Writer<K>,
        body: &Value,
    ) {
        let object: K = serde_json::from_value(body.clone()).expect("typed object");
        writer.apply_watcher_event(&watcher::Event::Apply(object));
    }
    for call in recorded
        .iter()
        .filter(|r| r.method == Method::PATCH && r.path != STATUS && r.path != TENANT)
    {
        let mut body = call.body.clone();
        body["metadata"]["resourceVersion"] = json!("7");
        match body["kind"].as_str().unwrap_or_default() {
            "ConfigMap" => put(&mut writers.config_maps, &body),
            "Deployment" => {
                body["metadata"]["annotations"] = json!({"deployment.kubernetes.io/revision": "1"});
                body["spec"]["replicas"] = json!(2);
                put(&mut writers.deployments, &body);
            }
            "Service" => {
                body["spec"]["clusterIP"] = json!("10.96.0.10");
                put(&mut writers.services, &body);
            }
            "HorizontalPodAutoscaler" => put(&mut writers.hpas, &body),
            "PodDisruptionBudget" => put(&mut writers.pdbs, &body),
            "Ingress" => put(&mut writers.ingresses, &body),
            _ => {}
        }
    }
}

/// The cached Deployment `name` of the French tenant.
fn cached_deployment(tenants: &Tenants, name: &str) -> Deployment {
    let key = ObjectRef::new(name).within("pulse-fr");
    let cached = tenants.children.deployments.get(&key).expect("cached");
    cached.as_ref().clone()
}

/// The cached Deployment of `component`, rolled out for `generation` with two available pods.
fn roll_out(writers: &mut ChildWriters, tenants: &Tenants, component: Component, generation: i64) {
    let mut deployment = cached_deployment(tenants, component.name());
    deployment.metadata.generation = Some(generation);
    deployment.status = Some(
        serde_json::from_value(json!({
            "observedGeneration": generation, "replicas": 2, "updatedReplicas": 2,
            "readyReplicas": 2, "availableReplicas": 2,
        }))
        .expect("status"),
    );
    writers
        .deployments
        .apply_watcher_event(&watcher::Event::Apply(deployment));
}

/// The tenant as the API server holds it after `recorded` (its last status patch).
fn with_status(tenant: &CountryTenant, recorded: &[Recorded]) -> CountryTenant {
    let mut tenant = tenant.clone();
    tenant.status = Some(status_of(recorded));
    tenant
}

/// The context's records and caches, for the next pass (the pass is over: nothing else holds
/// the context).
fn tenants_of(ctx: Arc<Context>) -> Tenants {
    Arc::try_unwrap(ctx)
        .ok()
        .expect("the context is no longer shared")
        .extra
}

/// The first pass of `t` (everything applied, nothing rolled out yet), its objects put into
/// the caches: the tenant as the server then holds it, the records and caches, and the writers.
async fn first_pass(t: &CountryTenant) -> (CountryTenant, Tenants, ChildWriters) {
    let (tenants, mut writers) = Tenants::new();
    let mut calls = apply_calls(t, |_| fresh_deployment());
    calls.extend([status_call(t), event_call()]);
    let (result, recorded, ctx) = reconcile_in(t.clone(), calls, tenants).await;
    assert_eq!(
        result.expect("first pass"),
        Action::requeue(PROGRESS_RESYNC)
    );
    cache_applied(&mut writers, &recorded);
    (with_status(t, &recorded), tenants_of(ctx), writers)
}

/// While a tenant rolls out, each change of one of its objects wakes it up: those passes read
/// the cache and write only a changed status, without applying anything again.
#[tokio::test]
async fn a_pass_with_nothing_to_change_applies_nothing() {
    let (t, tenants, mut writers) = first_pass(&finalized(tenant())).await;

    // A status change of a child, nothing else: no call at all.
    let (result, recorded, ctx) = reconcile_in(t.clone(), vec![], tenants).await;
    assert_eq!(result.expect("ok"), Action::requeue(PROGRESS_RESYNC));
    assert!(recorded.is_empty(), "{recorded:?}");

    // Every Deployment rolled out: the status (and the Event) follow, from the cache.
    let tenants = tenants_of(ctx);
    for component in Component::ALL {
        roll_out(&mut writers, &tenants, component, 1);
    }
    let calls = vec![status_call(&t), event_call()];
    let (result, recorded, _) = reconcile_in(t, calls, tenants).await;
    assert_eq!(result.expect("ok"), Action::requeue(READY_RESYNC));
    let status = status_of(&recorded);
    assert_eq!(
        condition_of(&status, READY).status,
        ConditionStatus::True,
        "{status:?}"
    );
    assert_eq!(events_of(&recorded), [normal("Available")]);
}

/// A deleted object, or a field the operator sets edited by hand, makes the next pass apply
/// everything again (and the unchanged status is not written).
#[tokio::test]
async fn a_deleted_or_hand_edited_object_is_applied_again() {
    let (t, mut tenants, mut writers) = first_pass(&finalized(tenant())).await;

    type Edit = Box<dyn Fn(&mut ChildWriters, &Tenants)>;
    let edits: [(&str, Edit); 2] = [
        // A deleted Service.
        (
            "missing",
            Box::new(|writers, tenants| {
                let key = ObjectRef::new("booking").within("pulse-fr");
                let service = tenants.children.services.get(&key).expect("cached");
                writers
                    .services
                    .apply_watcher_event(&watcher::Event::Delete(service.as_ref().clone()));
            }),
        ),
        // A hand-edited image.
        (
            "drifted",
            Box::new(|writers, tenants| {
                let mut deployment = cached_deployment(tenants, "ordering");
                if let Some(pod) = deployment
                    .spec
                    .as_mut()
                    .and_then(|s| s.template.spec.as_mut())
                {
                    pod.containers[0].image = Some("someone-else:latest".into());
                }
                writers
                    .deployments
                    .apply_watcher_event(&watcher::Event::Apply(deployment));
            }),
        ),
    ];
    for (what, edit) in edits {
        edit(&mut writers, &tenants);
        let calls = apply_calls(&t, |_| fresh_deployment());
        let (result, recorded, ctx) = reconcile_in(t.clone(), calls, tenants).await;
        assert_eq!(result.expect(what), Action::requeue(PROGRESS_RESYNC));
        assert_eq!(
            recorded.len(),
            apply_calls(&t, |_| Reply::Echo).len(),
            "{what}"
        );
        let counted = format!("pulse_operator_tenant_applies_total{{reason=\"{what}\"}} 1");
        assert!(ctx.metrics.encode().contains(&counted), "{what}");
        cache_applied(&mut writers, &recorded);
        tenants = tenants_of(ctx);
    }
}

/// The cached objects of a disabled component go, with an Event, and so do the Ingresses once
/// `spec.ingress` is removed.
#[tokio::test]
async fn disabled_components_are_removed() {
    let (mut t, tenants, mut writers) = first_pass(&finalized(tenant())).await;
    for component in Component::ALL {
        roll_out(&mut writers, &tenants, component, 1);
    }
    t.metadata.generation = Some(2);
    t.spec.components.get_mut(Component::Notifier).enabled = false;
    t.spec.ingress = None;
    let mut calls = apply_calls(&t, |_| deployment(2, 2, 2));
    calls.extend([
        Call::new(Method::DELETE, deployment_path("notifier")),
        Call::new(
            Method::DELETE,
            "/api/v1/namespaces/pulse-fr/services/notifier",
        ),
        Call::new(
            Method::DELETE,
            "/apis/autoscaling/v2/namespaces/pulse-fr/horizontalpodautoscalers/notifier",
        )
        .reply(Reply::Error(404, "NotFound")),
        Call::new(
            Method::DELETE,
            "/apis/policy/v1/namespaces/pulse-fr/poddisruptionbudgets/notifier",
        ),
        event_call(),
        Call::new(
            Method::DELETE,
            "/apis/networking.k8s.io/v1/namespaces/pulse-fr/ingresses/pulse",
        ),
        Call::new(
            Method::DELETE,
            "/apis/networking.k8s.io/v1/namespaces/pulse-fr/ingresses/pulse-stream",
        ),
        status_call(&t),
        event_call(),
    ]);
    let (result, recorded, _) = reconcile_in(t, calls, tenants).await;
    assert_eq!(result.expect("ok"), Action::requeue(READY_RESYNC));
    assert_eq!(
        events_of(&recorded),
        [normal("ComponentRemoved"), normal("Available")]
    );
    let status = status_of(&recorded);
    assert_eq!(status.components.len(), Component::ALL.len() - 1);
    assert_eq!(status.url, None);
}

#[test]
fn stalled_rollouts_are_degraded() {
    let t = tenant();
    let desired = resources::desired(&t).expect("desired");
    let mut stuck: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "booking", "generation": 1},
        "spec": {"replicas": 2, "selector": {}, "template": {}},
        "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}
    }))
    .expect("deployment");
    assert!(matches!(rollout(&stuck), Rollout::Stalled(_)));
    let status = tenant_status(
        &t,
        &desired,
        &[(Component::Booking, stuck.clone())],
        Utc::now(),
    );
    assert_eq!(
        condition_of(&status, DEGRADED).status,
        ConditionStatus::True
    );
    assert_eq!(condition_of(&status, READY).reason, "RolloutStalled");

    stuck.status = serde_json::from_value(json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2})).expect("status");
    assert!(matches!(rollout(&stuck), Rollout::Waiting(why) if why.contains("old replicas")));
    stuck.status = serde_json::from_value(json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1})).expect("status");
    assert!(matches!(rollout(&stuck), Rollout::Waiting(why) if why.contains("1 of 2")));
    stuck.status = serde_json::from_value(json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2})).expect("status");
    assert_eq!(rollout(&stuck), Rollout::Complete);
}

#[test]
fn children_map_to_their_cluster_scoped_tenant() {
    let t = tenant();
    let desired = resources::desired(&t).expect("desired");
    let owner = controlling_tenant(&desired.components[0].deployment).expect("owned");
    assert_eq!(owner.name, "fr");
    assert_eq!(owner.namespace, None, "tenants are cluster-scoped");
    assert!(controlling_tenant(&desired.namespace).is_none());
    let mut foreign = desired.components[0].service.clone();
    foreign.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "x".into(),
            uid: "u".into(),
            controller: Some(true),
            ..Default::default()
        },
    ]);
    assert!(controlling_tenant(&foreign).is_none());
}
