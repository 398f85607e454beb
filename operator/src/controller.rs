//! The `CountryTenant` reconciler.
//!
//! Each pass applies the desired objects from [`crate::resources`] with server-side apply (one
//! field manager, forced), removes the objects of components that were disabled, computes the
//! status from the Deployments the API server returned and writes it to the status
//! subresource. A finalizer runs the deletion policy before the tenant goes. Errors set
//! `Degraded` with the message, count in the failure metric and requeue with exponential backoff.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crd::condition::{self, DEGRADED, PROGRESSING, READY};
use crate::crd::{
    Component, ComponentStatus, Condition, ConditionStatus, CountryTenant, CountryTenantStatus,
    DeletionPolicy,
};
use crate::metrics::Metrics;
use crate::resources::{self, Desired, INGRESS, MANAGER, SpecError, namespace_name};

/// Finalizer that runs the deletion policy.
pub const FINALIZER: &str = "pulse.dev/tenant-cleanup";
/// Metric label of this controller.
pub const CONTROLLER: &str = "countrytenant";
/// How often a Ready tenant is checked again without any change.
pub const READY_RESYNC: Duration = Duration::from_secs(300);
/// How often a tenant that is still rolling out is checked again (Deployment changes also wake it).
pub const PROGRESS_RESYNC: Duration = Duration::from_secs(15);
/// First retry delay after an error; it doubles with each failure in a row.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Why a reconciliation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The tenant cannot be turned into objects.
    #[error("invalid CountryTenant: {0}")]
    Spec(#[from] SpecError),
    /// A Kubernetes API call failed.
    #[error("{action}: {source}")]
    Kube {
        /// What the operator was doing (`apply Deployment pulse-fr/booking`).
        action: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// An object could not be serialised.
    #[error("cannot serialise an object: {0}")]
    Serialize(#[from] serde_json::Error),
    /// Adding or removing the finalizer failed.
    #[error("finalizer {FINALIZER}: {0}")]
    Finalizer(#[source] kube::Error),
    /// The finalizer helper reported an internal error.
    #[error("finalizer {FINALIZER}: {0}")]
    FinalizerState(String),
}

impl Error {
    /// Short kind used as the `error` label of the failure metric.
    pub fn metric_label(&self) -> String {
        match self {
            Self::Spec(_) => "invalid_spec".to_owned(),
            Self::Kube { source, .. } | Self::Finalizer(source) => kube_label(source),
            Self::Serialize(_) => "serialize".to_owned(),
            Self::FinalizerState(_) => "finalizer".to_owned(),
        }
    }

    fn from_finalizer(err: kube::runtime::finalizer::Error<Error>) -> Self {
        use kube::runtime::finalizer::Error as F;
        match err {
            F::ApplyFailed(inner) | F::CleanupFailed(inner) => inner,
            F::AddFinalizer(source) | F::RemoveFinalizer(source) => Self::Finalizer(source),
            other => Self::FinalizerState(other.to_string()),
        }
    }
}

pub(crate) fn kube_label(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => format!("api_{}", status.code),
        _ => "kube_client".to_owned(),
    }
}

fn kube_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Kube { action, source }
}

pub(crate) fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}

/// Failures in a row per object, for the exponential backoff of an error policy.
#[derive(Debug, Default)]
pub(crate) struct Failures(Mutex<HashMap<String, u32>>);

impl Failures {
    /// Records one more failure in a row for `key` and returns how many there are now.
    pub(crate) fn next(&self, key: &str) -> u32 {
        let mut failures = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = failures.entry(key.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    /// Forgets the failures of `key` after a success.
    pub(crate) fn reset(&self, key: &str) {
        let mut failures = self.0.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(key);
    }
}

/// Publishes an Event about `object`; a failure is only logged (Events are best effort).
pub(crate) async fn publish_event<K>(
    recorder: &Recorder,
    object: &K,
    type_: EventType,
    reason: &str,
    note: String,
) where
    K: Resource<DynamicType = ()>,
{
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(truncate(note, 1000)),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    if let Err(err) = recorder.publish(&event, &object.object_ref(&())).await {
        tracing::warn!(kind = %K::kind(&()), name = %object.meta().name.as_deref().unwrap_or_default(), reason, error = %err, "cannot publish Event");
    }
}

/// What every reconciliation shares.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Publishes Events on tenants.
    pub recorder: Recorder,
    failures: Failures,
}

impl Context {
    /// A context for `client`, reporting Events as `reporter`.
    pub fn new(client: Client, metrics: Arc<Metrics>, reporter: Reporter) -> Self {
        let recorder = Recorder::new(client.clone(), reporter);
        Self {
            client,
            metrics,
            recorder,
            failures: Failures::default(),
        }
    }

    fn next_failure(&self, name: &str) -> u32 {
        self.failures.next(name)
    }

    fn reset_failures(&self, name: &str) {
        self.failures.reset(name);
    }

    async fn publish(&self, tenant: &CountryTenant, type_: EventType, reason: &str, note: String) {
        publish_event(&self.recorder, tenant, type_, reason, note).await;
    }
}

pub(crate) fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// Retry delay after `failures` failures in a row: 5 s, 10 s, 20 s, … up to 5 minutes.
pub fn backoff_delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    BACKOFF_BASE
        .saturating_mul(1u32 << exponent)
        .min(BACKOFF_MAX)
}

/// Reconciles one tenant (the `Controller`'s reconcile function).
pub async fn reconcile(tenant: Arc<CountryTenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.start(CONTROLLER);
    let name = tenant.name_any();
    let api: Api<CountryTenant> = Api::all(ctx.client.clone());
    let result = finalizer(&api, FINALIZER, tenant, |event| async {
        match event {
            FinalizerEvent::Apply(tenant) => apply(tenant, &ctx).await,
            FinalizerEvent::Cleanup(tenant) => cleanup(tenant, &ctx).await,
        }
    })
    .await
    .map_err(Error::from_finalizer);
    match &result {
        Ok(_) => ctx.reset_failures(&name),
        Err(err) => {
            ctx.metrics.failure(CONTROLLER, &err.metric_label());
            tracing::warn!(tenant = %name, error = %err, "reconcile failed");
        }
    }
    result
}

/// The `Controller`'s error policy: exponential backoff per tenant.
pub fn error_policy(tenant: Arc<CountryTenant>, _err: &Error, ctx: Arc<Context>) -> Action {
    Action::requeue(backoff_delay(ctx.next_failure(&tenant.name_any())))
}

async fn apply_object<K>(api: &Api<K>, object: &K) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let what = format!(
        "apply {} {}{}",
        K::kind(&()),
        object
            .meta()
            .namespace
            .as_deref()
            .map(|ns| format!("{ns}/"))
            .unwrap_or_default(),
        name
    );
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(kube_err(what))
}

async fn delete_if_present<K>(api: &Api<K>, name: &str) -> Result<bool, Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(err) if is_not_found(&err) => Ok(false),
        Err(err) => Err(kube_err(format!("delete {} {name}", K::kind(&())))(err)),
    }
}

/// Applies everything and returns each enabled component's Deployment as the server has it.
async fn apply_objects(
    tenant: &CountryTenant,
    desired: &Desired,
    ctx: &Context,
) -> Result<Vec<(Component, Deployment)>, Error> {
    let client = &ctx.client;
    let ns = desired.namespace.name_any();
    apply_object(&Api::<Namespace>::all(client.clone()), &desired.namespace).await?;
    apply_object(
        &Api::<ConfigMap>::namespaced(client.clone(), &ns),
        &desired.config_map,
    )
    .await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), &ns);

    let mut applied = Vec::new();
    for objects in &desired.components {
        let deployment = apply_object(&deployments, &objects.deployment).await?;
        apply_object(&services, &objects.service).await?;
        apply_object(&hpas, &objects.hpa).await?;
        apply_object(&pdbs, &objects.pdb).await?;
        applied.push((objects.component, deployment));
    }
    match &desired.ingress {
        Some(ingress) => {
            apply_object(&ingresses, ingress).await?;
        }
        None => {
            delete_if_present(&ingresses, INGRESS).await?;
        }
    }

    // Remove what belongs to components that are no longer enabled.
    let enabled: Vec<&str> = desired
        .components
        .iter()
        .map(|c| c.component.name())
        .collect();
    let existing = deployments
        .list(&ListParams::default().labels(&resources::tenant_selector(&tenant.name_any())))
        .await
        .map_err(kube_err(format!("list Deployments in {ns}")))?;
    for deployment in existing {
        let name = deployment.name_any();
        if enabled.contains(&name.as_str()) || Component::from_name(&name).is_none() {
            continue;
        }
        delete_if_present(&deployments, &name).await?;
        delete_if_present(&services, &name).await?;
        delete_if_present(&hpas, &name).await?;
        delete_if_present(&pdbs, &name).await?;
        ctx.publish(
            tenant,
            EventType::Normal,
            "ComponentRemoved",
            format!("{name} is disabled: removed its Deployment, Service, autoscaler and disruption budget from {ns}"),
        )
        .await;
    }
    Ok(applied)
}

/// How far a Deployment's rollout is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rollout {
    /// The current generation is fully rolled out and available.
    Complete,
    /// Still rolling out; the text says what it waits for.
    Waiting(String),
    /// The Deployment exceeded its progress deadline.
    Stalled(String),
}

/// The rollout state of a Deployment, by the rules of `kubectl rollout status`.
pub fn rollout(deployment: &Deployment) -> Rollout {
    let name = deployment.name_any();
    let generation = deployment.metadata.generation.unwrap_or(0);
    let Some(status) = &deployment.status else {
        return Rollout::Waiting(format!("{name}: no status yet"));
    };
    if status.observed_generation.unwrap_or(0) < generation {
        return Rollout::Waiting(format!(
            "{name}: generation {generation} not yet observed by the Deployment controller"
        ));
    }
    let stalled = status.conditions.iter().flatten().any(|c| {
        c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if stalled {
        return Rollout::Stalled(format!("{name}: rollout exceeded its progress deadline"));
    }
    let wanted = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < wanted {
        return Rollout::Waiting(format!("{name}: {updated} of {wanted} replicas updated"));
    }
    if total > updated {
        return Rollout::Waiting(format!(
            "{name}: {} old replicas pending termination",
            total - updated
        ));
    }
    if available < updated {
        return Rollout::Waiting(format!(
            "{name}: {available} of {updated} updated replicas available"
        ));
    }
    Rollout::Complete
}

/// The status of a tenant after a successful apply: `Ready` only when every enabled
/// component's Deployment has rolled out its current generation, computed for the tenant's
/// current generation.
pub fn tenant_status(
    tenant: &CountryTenant,
    desired: &Desired,
    deployments: &[(Component, Deployment)],
    now: DateTime<Utc>,
) -> CountryTenantStatus {
    let generation = tenant.metadata.generation;
    let mut components = Vec::new();
    let mut waiting = Vec::new();
    let mut stalled = Vec::new();
    for (component, deployment) in deployments {
        let state = rollout(deployment);
        let status = deployment.status.clone().unwrap_or_default();
        components.push(ComponentStatus {
            name: component.name().to_owned(),
            replicas: status.replicas.unwrap_or(0),
            ready_replicas: status.ready_replicas.unwrap_or(0),
            updated_replicas: status.updated_replicas.unwrap_or(0),
            available_replicas: status.available_replicas.unwrap_or(0),
            available: state == Rollout::Complete,
        });
        match state {
            Rollout::Complete => {}
            Rollout::Waiting(why) => waiting.push(why),
            Rollout::Stalled(why) => stalled.push(why),
        }
    }
    let ns = desired.namespace.name_any();
    let ready = waiting.is_empty() && stalled.is_empty();
    let fresh = vec![
        if ready {
            Condition::new(
                READY,
                ConditionStatus::True,
                "Available",
                format!(
                    "{} component(s) available in {ns}{}",
                    components.len(),
                    desired
                        .url
                        .as_ref()
                        .map(|u| format!(", served on {u}"))
                        .unwrap_or_default()
                ),
                generation,
                now,
            )
        } else {
            Condition::new(
                READY,
                ConditionStatus::False,
                if stalled.is_empty() {
                    "RollingOut"
                } else {
                    "RolloutStalled"
                },
                stalled
                    .iter()
                    .chain(waiting.iter())
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; "),
                generation,
                now,
            )
        },
        if waiting.is_empty() {
            Condition::new(
                PROGRESSING,
                ConditionStatus::False,
                "Complete",
                "every component runs its current configuration",
                generation,
                now,
            )
        } else {
            Condition::new(
                PROGRESSING,
                ConditionStatus::True,
                "RollingOut",
                waiting.join("; "),
                generation,
                now,
            )
        },
        if stalled.is_empty() {
            Condition::new(
                DEGRADED,
                ConditionStatus::False,
                "AsExpected",
                "",
                generation,
                now,
            )
        } else {
            Condition::new(
                DEGRADED,
                ConditionStatus::True,
                "RolloutStalled",
                stalled.join("; "),
                generation,
                now,
            )
        },
    ];
    let previous = tenant
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    CountryTenantStatus {
        observed_generation: generation,
        conditions: condition::merge(previous, fresh),
        namespace: Some(ns),
        url: desired.url.clone(),
        components,
    }
}

/// The status after a failed reconciliation: `Ready` false, `Degraded` true with the error.
pub fn failed_status(
    tenant: &CountryTenant,
    err: &Error,
    now: DateTime<Utc>,
) -> CountryTenantStatus {
    let generation = tenant.metadata.generation;
    let previous = tenant.status.clone().unwrap_or_default();
    let reason = match err {
        Error::Spec(_) => "InvalidSpec",
        _ => "ReconcileFailed",
    };
    let message = err.to_string();
    let fresh = vec![
        Condition::new(
            READY,
            ConditionStatus::False,
            reason,
            message.clone(),
            generation,
            now,
        ),
        Condition::new(
            DEGRADED,
            ConditionStatus::True,
            reason,
            message,
            generation,
            now,
        ),
    ];
    CountryTenantStatus {
        observed_generation: generation,
        conditions: condition::merge(&previous.conditions, fresh),
        namespace: Some(namespace_name(&tenant.spec.country.code)),
        ..previous
    }
}

async fn patch_status(
    tenant: &CountryTenant,
    status: &CountryTenantStatus,
    ctx: &Context,
) -> Result<(), Error> {
    let api: Api<CountryTenant> = Api::all(ctx.client.clone());
    let patch = serde_json::json!({
        "apiVersion": CountryTenant::api_version(&()),
        "kind": CountryTenant::kind(&()),
        "status": status,
    });
    api.patch_status(
        &tenant.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(kube_err(format!(
        "update status of CountryTenant {}",
        tenant.name_any()
    )))?;
    Ok(())
}

/// Writes `Degraded` and publishes a Warning; failures here are only logged, the original
/// error is what the reconciliation reports.
async fn degrade(tenant: &CountryTenant, err: &Error, ctx: &Context) {
    let status = failed_status(tenant, err, Utc::now());
    if let Err(status_err) = patch_status(tenant, &status, ctx).await {
        tracing::warn!(tenant = %tenant.name_any(), error = %status_err, "cannot record the failure in the status");
    }
    let reason = match err {
        Error::Spec(_) => "InvalidSpec",
        _ => "ReconcileFailed",
    };
    ctx.publish(tenant, EventType::Warning, reason, err.to_string())
        .await;
}

async fn apply(tenant: Arc<CountryTenant>, ctx: &Context) -> Result<Action, Error> {
    let desired = match resources::desired(&tenant) {
        Ok(desired) => desired,
        Err(err) => {
            let err = Error::Spec(err);
            degrade(&tenant, &err, ctx).await;
            return Err(err);
        }
    };
    let deployments = match apply_objects(&tenant, &desired, ctx).await {
        Ok(deployments) => deployments,
        Err(err) => {
            degrade(&tenant, &err, ctx).await;
            return Err(err);
        }
    };
    let status = tenant_status(&tenant, &desired, &deployments, Utc::now());
    patch_status(&tenant, &status, ctx).await?;

    let before = tenant
        .status
        .as_ref()
        .and_then(|s| condition::find(&s.conditions, READY))
        .map(|c| (c.status, c.reason.clone()));
    let ready = condition::find(&status.conditions, READY);
    let ready_now = ready.is_some_and(|c| c.status == ConditionStatus::True);
    if let Some(ready) = ready
        && before.as_ref() != Some(&(ready.status, ready.reason.clone()))
    {
        let type_ = if ready.reason == "RolloutStalled" {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.publish(&tenant, type_, &ready.reason, ready.message.clone())
            .await;
    }
    Ok(Action::requeue(if ready_now {
        READY_RESYNC
    } else {
        PROGRESS_RESYNC
    }))
}

async fn cleanup(tenant: Arc<CountryTenant>, ctx: &Context) -> Result<Action, Error> {
    let ns = namespace_name(&tenant.spec.country.code);
    match tenant.spec.deletion_policy {
        DeletionPolicy::Delete => {
            let deleted =
                delete_if_present(&Api::<Namespace>::all(ctx.client.clone()), &ns).await?;
            let note = if deleted {
                format!("deletionPolicy Delete: deleting namespace {ns}")
            } else {
                format!("deletionPolicy Delete: namespace {ns} was already gone")
            };
            ctx.publish(&tenant, EventType::Normal, "NamespaceDeleted", note)
                .await;
        }
        DeletionPolicy::Retain => {
            ctx.publish(
                &tenant,
                EventType::Normal,
                "NamespaceRetained",
                format!(
                    "deletionPolicy Retain: namespace {ns} and its Secrets are kept; the operator's objects go with the tenant"
                ),
            )
            .await;
        }
    }
    Ok(Action::await_change())
}

/// The tenant that controls `object`, from its controller owner reference. (`Controller::owns`
/// would look the owner up in the child's namespace, which is wrong for a cluster-scoped owner.)
pub fn controlling_tenant<K: Resource>(object: &K) -> Option<ObjectRef<CountryTenant>> {
    let api_version = CountryTenant::api_version(&());
    let kind = CountryTenant::kind(&());
    object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true) && o.api_version == api_version && o.kind == kind)
        .map(|o| ObjectRef::new(&o.name))
}

fn watch_children<K>(
    controller: Controller<CountryTenant>,
    client: &Client,
) -> Controller<CountryTenant>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let managed = watcher::Config::default()
        .labels(&format!("app.kubernetes.io/managed-by={MANAGER}"))
        .any_semantic();
    controller.watches(Api::<K>::all(client.clone()), managed, |object: K| {
        controlling_tenant(&object)
    })
}

/// Runs the tenant controller until `shutdown` completes.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let tenants: Api<CountryTenant> = Api::all(client.clone());
    let mut controller = Controller::new(tenants, watcher::Config::default().any_semantic());
    controller = watch_children::<Deployment>(controller, &client);
    controller = watch_children::<ConfigMap>(controller, &client);
    controller = watch_children::<Service>(controller, &client);
    controller = watch_children::<HorizontalPodAutoscaler>(controller, &client);
    controller = watch_children::<PodDisruptionBudget>(controller, &client);
    controller = watch_children::<Ingress>(controller, &client);
    // A rollout changes a Deployment's status many times a second; one pass per burst is enough.
    let config = kube::runtime::controller::Config::default()
        .debounce(Duration::from_secs(1))
        .concurrency(4);
    controller
        .with_config(config)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, action)) => {
                    tracing::debug!(tenant = %object.name, ?action, "reconciled");
                }
                Err(err) => tracing::debug!(error = %err, "controller event"),
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{self, Call, Recorded, Reply, deleting, finalized, finish, tenant};
    use http::Method;
    use serde_json::{Value, json};

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

    fn deployment_list(names: &[&str]) -> Reply {
        let items: Vec<Value> = names
            .iter()
            .map(|n| json!({"metadata": {"name": n, "namespace": "pulse-fr"}, "spec": {"selector": {}, "template": {}}}))
            .collect();
        Reply::Json(
            200,
            json!({"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {}, "items": items}),
        )
    }

    /// Everything a successful apply pass does before writing the status.
    fn apply_calls(
        tenant: &CountryTenant,
        mut reply: impl FnMut(Component) -> Reply,
        listed: &[&str],
    ) -> Vec<Call> {
        let mut calls = vec![
            Call::apply("/api/v1/namespaces/pulse-fr"),
            Call::apply("/api/v1/namespaces/pulse-fr/configmaps/pulse-country"),
        ];
        for component in tenant.spec.components.enabled() {
            calls.extend(component_calls(component, reply(component)));
        }
        calls.push(if tenant.spec.ingress.is_some() {
            Call::apply("/apis/networking.k8s.io/v1/namespaces/pulse-fr/ingresses/pulse")
        } else {
            Call::new(
                Method::DELETE,
                "/apis/networking.k8s.io/v1/namespaces/pulse-fr/ingresses/pulse",
            )
            .reply(Reply::Error(404, "NotFound"))
        });
        calls.push(
            Call::new(Method::GET, "/apis/apps/v1/namespaces/pulse-fr/deployments")
                .reply(deployment_list(listed)),
        );
        calls
    }

    fn status_call(tenant: &CountryTenant) -> Call {
        let base = serde_json::to_value(tenant).expect("tenant JSON");
        Call::apply(STATUS).reply(Reply::EchoWith(Box::new(move |body| {
            let mut object = base;
            object["status"] = body["status"].clone();
            object
        })))
    }

    fn event_call() -> Call {
        Call::new(Method::POST, EVENTS)
    }

    async fn reconcile_with(
        tenant: CountryTenant,
        calls: Vec<Call>,
    ) -> (Result<Action, Error>, Vec<Recorded>, Arc<Context>) {
        let (ctx, server) = fixtures::context();
        let server = server.run(calls);
        let result = tokio::time::timeout(
            Duration::from_secs(20),
            reconcile(Arc::new(tenant), ctx.clone()),
        )
        .await
        .expect("reconcile finished");
        let recorded = finish(server).await;
        (result, recorded, ctx)
    }

    fn status_of(recorded: &[Recorded]) -> CountryTenantStatus {
        fixtures::last_status(recorded, STATUS, "CountryTenant")
    }

    fn condition_of<'a>(status: &'a CountryTenantStatus, type_: &str) -> &'a Condition {
        condition::find(&status.conditions, type_).unwrap_or_else(|| panic!("no {type_} condition"))
    }

    fn events_of(recorded: &[Recorded]) -> Vec<(String, String)> {
        fixtures::events_of(recorded, EVENTS)
    }

    #[tokio::test]
    async fn the_finalizer_comes_first() {
        let t = tenant();
        let reply = serde_json::to_value(finalized(t.clone())).expect("json");
        let (result, recorded, _) = reconcile_with(
            t,
            vec![Call::new(Method::PATCH, TENANT).reply(Reply::Json(200, reply))],
        )
        .await;
        assert_eq!(result.expect("ok"), Action::await_change());
        let patch = recorded[0].body.as_array().cloned().expect("a JSON patch");
        assert!(
            patch.contains(
                &json!({"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]})
            ),
            "{patch:?}"
        );
    }

    #[tokio::test]
    async fn creates_a_tenant_from_nothing() {
        let t = finalized(tenant());
        let mut calls = apply_calls(
            &t,
            |_| fresh_deployment(),
            &["identity", "booking", "marketing", "ordering", "notifier"],
        );
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
        assert_eq!(status.components.len(), 5);
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
        assert_eq!(
            events_of(&recorded),
            [("Normal".to_owned(), "RollingOut".to_owned())]
        );
        assert_eq!(ctx.metrics.failure_count(CONTROLLER, "api_500"), 0);
    }

    #[tokio::test]
    async fn ready_when_every_deployment_has_rolled_out_this_generation() {
        let mut t = finalized(tenant());
        t.metadata.generation = Some(4);
        let mut calls = apply_calls(&t, |_| deployment(3, 3, 2), &[]);
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
        assert_eq!(
            events_of(&recorded),
            [("Normal".to_owned(), "Available".to_owned())]
        );
    }

    #[tokio::test]
    async fn not_ready_while_a_deployment_lags_its_generation() {
        let t = finalized(tenant());
        // marketing's pods are all available, but for the previous template.
        let mut calls = apply_calls(
            &t,
            |c| {
                if c == Component::Marketing {
                    deployment(2, 1, 2)
                } else {
                    deployment(1, 1, 2)
                }
            },
            &[],
        );
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
        let mut calls = apply_calls(&t, |_| deployment(2, 1, 2), &[]);
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
        assert_eq!(deployments.len(), 5);
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
        assert_eq!(
            events_of(&recorded),
            [("Normal".to_owned(), "RollingOut".to_owned())]
        );
    }

    #[tokio::test]
    async fn delete_with_retain_keeps_the_namespace() {
        let t = deleting(finalized(tenant()));
        let mut gone = t.clone();
        gone.metadata.finalizers = None;
        let calls = vec![
            event_call(),
            Call::new(Method::PATCH, TENANT)
                .reply(Reply::Json(200, serde_json::to_value(gone).expect("json"))),
        ];
        let (result, recorded, _) = reconcile_with(t, calls).await;
        assert_eq!(result.expect("ok"), Action::await_change());
        assert_eq!(
            events_of(&recorded),
            [("Normal".to_owned(), "NamespaceRetained".to_owned())]
        );
        let patch = recorded[1].body.as_array().cloned().expect("JSON patch");
        assert!(
            patch.contains(&json!({"op": "remove", "path": "/metadata/finalizers/0"})),
            "{patch:?}"
        );
    }

    #[tokio::test]
    async fn delete_with_delete_removes_the_namespace() {
        let mut t = deleting(finalized(tenant()));
        t.spec.deletion_policy = DeletionPolicy::Delete;
        let mut gone = t.clone();
        gone.metadata.finalizers = None;
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "pulse-fr"}, "status": {"phase": "Terminating"}});
        let calls = vec![
            Call::new(Method::DELETE, "/api/v1/namespaces/pulse-fr")
                .reply(Reply::Json(200, namespace)),
            event_call(),
            Call::new(Method::PATCH, TENANT)
                .reply(Reply::Json(200, serde_json::to_value(gone).expect("json"))),
        ];
        let (result, recorded, _) = reconcile_with(t, calls).await;
        assert_eq!(result.expect("ok"), Action::await_change());
        assert_eq!(
            events_of(&recorded),
            [("Normal".to_owned(), "NamespaceDeleted".to_owned())]
        );
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
        assert_eq!(
            events_of(&recorded),
            [("Warning".to_owned(), "ReconcileFailed".to_owned())]
        );

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
        assert_eq!(
            events_of(&recorded),
            [("Warning".to_owned(), "InvalidSpec".to_owned())]
        );
    }

    #[tokio::test]
    async fn disabled_components_are_removed() {
        let mut t = finalized(tenant());
        t.spec.components.get_mut(Component::Notifier).enabled = false;
        t.spec.ingress = None;
        let mut calls = apply_calls(
            &t,
            |_| deployment(1, 1, 2),
            &["identity", "booking", "marketing", "ordering", "notifier"],
        );
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
            status_call(&t),
            event_call(),
        ]);
        let (result, recorded, _) = reconcile_with(t, calls).await;
        assert_eq!(result.expect("ok"), Action::requeue(READY_RESYNC));
        let list = recorded
            .iter()
            .find(|r| r.method == Method::GET)
            .expect("list");
        assert!(
            list.query.contains("pulse.dev%2Ftenant%3Dfr")
                || list.query.contains("pulse.dev/tenant=fr"),
            "{}",
            list.query
        );
        assert_eq!(
            events_of(&recorded),
            [
                ("Normal".to_owned(), "ComponentRemoved".to_owned()),
                ("Normal".to_owned(), "Available".to_owned())
            ]
        );
        let status = status_of(&recorded);
        assert_eq!(status.components.len(), 4);
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
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!(backoff_delay(1), Duration::from_secs(5));
        assert_eq!(backoff_delay(2), Duration::from_secs(10));
        assert_eq!(backoff_delay(4), Duration::from_secs(40));
        assert_eq!(backoff_delay(7), Duration::from_secs(300));
        assert_eq!(backoff_delay(1000), Duration::from_secs(300));
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
}
