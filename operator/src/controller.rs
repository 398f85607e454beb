//! The `CountryTenant` reconciler.
//!
//! Each pass applies the desired objects from [`crate::resources`] with server-side apply (one
//! field manager, forced), removes the objects of components that were disabled (and an Ingress
//! left without paths or without `spec.ingress`), computes the
//! status from the Deployments the API server returned and writes it to the status
//! subresource. A finalizer runs the deletion policy before the tenant goes. The shared parts
//! (finalizer, metrics, backoff, `Degraded` on errors, Events) are in [`crate::reconciler`].

use std::fmt::Debug;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use pulse_kit::settings::cluster;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crd::condition::{self, DEGRADED, PROGRESSING, READY};
use crate::crd::{
    Component, ComponentStatus, Condition, ConditionStatus, CountryTenant, CountryTenantStatus,
    DeletionPolicy,
};
use crate::reconciler::{self, Error, Reconcile, is_not_found, patch_status};
use crate::resources::{self, Desired, INGRESS, MANAGER, STREAM_INGRESS};

/// Finalizer that runs the deletion policy.
pub const FINALIZER: &str = "pulse.dev/tenant-cleanup";
/// Metric label of this controller.
pub const CONTROLLER: &str = "countrytenant";
/// How often a Ready tenant is checked again without any change.
pub const READY_RESYNC: Duration = Duration::from_secs(300);
/// How often a tenant that is still rolling out is checked again (Deployment changes also wake it).
pub const PROGRESS_RESYNC: Duration = Duration::from_secs(15);

/// What every tenant reconciliation shares (nothing beyond the common parts).
pub type Context = reconciler::Context<()>;

impl Reconcile for CountryTenant {
    const CONTROLLER: &'static str = CONTROLLER;
    const FINALIZER: &'static str = FINALIZER;
    type Extra = ();
    type Status = CountryTenantStatus;

    fn api(&self, client: Client) -> Result<Api<Self>, Error> {
        Ok(Api::all(client))
    }

    /// Applies every object, then writes the status and says when `Ready` changed.
    #[tracing::instrument(skip_all)]
    async fn reconcile(&self, ctx: &Context) -> Result<Action, Error> {
        let applied = async {
            let desired = resources::desired(self)?;
            let deployments = apply_objects(self, &desired, ctx).await?;
            Ok::<_, Error>((desired, deployments))
        }
        .await;
        let (desired, deployments) = ctx.degrade_on_error(self, applied).await?;
        let status = tenant_status(self, &desired, &deployments, ctx.now());
        patch_status(self, &status, &ctx.client).await?;

        let before = self
            .status
            .as_ref()
            .and_then(|s| condition::find(&s.conditions, READY))
            .map(|c| (c.status, c.reason.clone()));
        let ready = condition::find(&status.conditions, READY);
        if let Some(ready) = ready
            && before.as_ref() != Some(&(ready.status, ready.reason.clone()))
        {
            let type_ = if ready.reason == "RolloutStalled" {
                EventType::Warning
            } else {
                EventType::Normal
            };
            ctx.publish(self, type_, &ready.reason, ready.message.clone())
                .await;
        }
        Ok(Action::requeue(
            if condition::is_true(&status.conditions, READY) {
                READY_RESYNC
            } else {
                PROGRESS_RESYNC
            },
        ))
    }

    /// Runs the deletion policy on the namespace; the tenant's own objects go with it through
    /// their owner references.
    #[tracing::instrument(skip_all)]
    async fn cleanup(&self, ctx: &Context) -> Result<Action, Error> {
        let ns = cluster::namespace(&self.spec.country.code);
        match self.spec.deletion_policy {
            DeletionPolicy::Delete => {
                let deleted =
                    delete_if_present(&Api::<Namespace>::all(ctx.client.clone()), &ns).await?;
                let note = if deleted {
                    format!("deletionPolicy Delete: deleting namespace {ns}")
                } else {
                    format!("deletionPolicy Delete: namespace {ns} was already gone")
                };
                ctx.publish(self, EventType::Normal, "NamespaceDeleted", note)
                    .await;
            }
            DeletionPolicy::Retain => {
                ctx.publish(
                    self,
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

    /// `Ready` false, `Degraded` true with the error, for the tenant's current generation.
    fn failed_status(&self, err: &Error, now: DateTime<Utc>) -> CountryTenantStatus {
        let generation = self.metadata.generation;
        let previous = self.status.clone().unwrap_or_default();
        let fresh = condition::failed(err.reason(), &err.to_string(), generation, now);
        CountryTenantStatus {
            observed_generation: generation,
            conditions: condition::merge(&previous.conditions, fresh),
            namespace: Some(cluster::namespace(&self.spec.country.code)),
            ..previous
        }
    }
}

async fn apply_object<K>(api: &Api<K>, object: &K) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let what = format!("apply {} {}", K::kind(&()), reconciler::key(object));
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(Error::kube(what))
}

async fn delete_if_present<K>(api: &Api<K>, name: &str) -> Result<bool, Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(err) if is_not_found(&err) => Ok(false),
        Err(err) => Err(Error::kube(format!("delete {} {name}", K::kind(&())))(err)),
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
    for (ingress, name) in [
        (&desired.ingress, INGRESS),
        (&desired.stream_ingress, STREAM_INGRESS),
    ] {
        match ingress {
            Some(ingress) => {
                apply_object(&ingresses, ingress).await?;
            }
            None => {
                delete_if_present(&ingresses, name).await?;
            }
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
        .map_err(Error::kube(format!("list Deployments in {ns}")))?;
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
    let ready = if waiting.is_empty() && stalled.is_empty() {
        let url = desired.url.as_ref();
        let served = url.map(|u| format!(", served on {u}")).unwrap_or_default();
        let message = format!(
            "{} component(s) available in {ns}{served}",
            components.len()
        );
        Condition::new(
            READY,
            ConditionStatus::True,
            "Available",
            message,
            generation,
            now,
        )
    } else {
        let reason = if stalled.is_empty() {
            "RollingOut"
        } else {
            "RolloutStalled"
        };
        let message = stalled.iter().chain(&waiting).cloned().collect::<Vec<_>>();
        Condition::new(
            READY,
            ConditionStatus::False,
            reason,
            message.join("; "),
            generation,
            now,
        )
    };
    let progressing = if waiting.is_empty() {
        let message = "every component runs its current configuration";
        Condition::new(
            PROGRESSING,
            ConditionStatus::False,
            "Complete",
            message,
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
    };
    let degraded = if stalled.is_empty() {
        condition::as_expected(generation, now)
    } else {
        Condition::new(
            DEGRADED,
            ConditionStatus::True,
            "RolloutStalled",
            stalled.join("; "),
            generation,
            now,
        )
    };
    let previous = tenant
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    CountryTenantStatus {
        observed_generation: generation,
        conditions: condition::merge(previous, vec![ready, progressing, degraded]),
        namespace: Some(ns),
        url: desired.url.clone(),
        components,
    }
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
    ctx: std::sync::Arc<Context>,
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
    reconciler::run(controller, config, ctx, shutdown).await;
}

#[cfg(test)]
mod tests;
