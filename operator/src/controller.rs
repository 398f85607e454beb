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

fn kube_label(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => format!("api_{}", status.code),
        _ => "kube_client".to_owned(),
    }
}

fn kube_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Kube { action, source }
}

fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}

/// What every reconciliation shares.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Publishes Events on tenants.
    pub recorder: Recorder,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context for `client`, reporting Events as `reporter`.
    pub fn new(client: Client, metrics: Arc<Metrics>, reporter: Reporter) -> Self {
        let recorder = Recorder::new(client.clone(), reporter);
        Self {
            client,
            metrics,
            recorder,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records one more failure in a row for `name` and returns how many there are now.
    fn next_failure(&self, name: &str) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = failures.entry(name.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    fn reset_failures(&self, name: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(name);
    }

    async fn publish(&self, tenant: &CountryTenant, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(truncate(note, 1000)),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, &tenant.object_ref(&())).await {
            tracing::warn!(tenant = %tenant.name_any(), reason, error = %err, "cannot publish Event");
        }
    }
}

fn truncate(mut text: String, max: usize) -> String {
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
    controller
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
