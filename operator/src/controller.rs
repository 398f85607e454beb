//! The `CountryTenant` reconciler.
//!
//! Each pass applies the desired objects from [`crate::resources`] with server-side apply (one
//! field manager, forced) when applying would change something ([`crate::applied`]: a new or
//! changed tenant, a missing or hand-edited object, or five minutes since the last full apply),
//! removes the objects of components that were disabled (and an Ingress left without paths or
//! without `spec.ingress`), computes the status from the Deployments (as the apply answered, or
//! from the watch cache) and writes it to the status subresource when it changed. The objects
//! are applied one after the other, namespace and ConfigMap first. A finalizer
//! runs the deletion policy before the tenant goes. The shared parts (finalizer, metrics,
//! backoff, `Degraded` on errors, Events) are in [`crate::reconciler`].
//!
//! The objects the operator manages (label `app.kubernetes.io/managed-by: pulse-operator`) are
//! watched into caches ([`Children`]); a change to one wakes its tenant up. While a tenant rolls
//! out, most passes therefore read the cache and write at most the status.

use std::collections::HashMap;
use std::fmt::Debug;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use pulse_kit::settings::cluster;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::applied::{self, Applied, Cached, ObjectKey, Reapply, Record};
use crate::crd::condition::{self, DEGRADED, PROGRESSING, READY};
use crate::crd::{
    Component, ComponentStatus, Condition, ConditionStatus, CountryTenant, CountryTenantStatus,
    DeletionPolicy,
};
use crate::reconciler::{self, Error, Reconcile, is_not_found, patch_status};
use crate::resources::{self, Desired, INGRESS, MANAGER, STREAM_INGRESS, TENANT_LABEL};

/// Finalizer that runs the deletion policy.
pub const FINALIZER: &str = "pulse.dev/tenant-cleanup";
/// Metric label of this controller.
pub const CONTROLLER: &str = "countrytenant";
/// How often a Ready tenant is checked again without any change.
pub const READY_RESYNC: Duration = Duration::from_secs(300);
/// How often a tenant that is still rolling out is checked again (Deployment changes also wake it).
pub const PROGRESS_RESYNC: Duration = Duration::from_secs(15);

/// Passes the tenant controller runs at once.
pub const CONCURRENCY: u16 = 8;

/// What only the tenant controller needs: the watch caches of the objects it manages, and what
/// it last applied.
pub struct Tenants {
    /// The managed objects as the watches last saw them.
    pub children: Children,
    /// The last full apply of each tenant by this process.
    pub applied: Applied,
}

impl Tenants {
    /// Empty caches, and the writers [`run`] fills them with.
    pub fn new() -> (Self, ChildWriters) {
        let (config_maps, config_maps_writer) = reflector::store();
        let (deployments, deployments_writer) = reflector::store();
        let (services, services_writer) = reflector::store();
        let (hpas, hpas_writer) = reflector::store();
        let (pdbs, pdbs_writer) = reflector::store();
        let (ingresses, ingresses_writer) = reflector::store();
        let tenants = Tenants {
            children: Children {
                config_maps,
                deployments,
                services,
                hpas,
                pdbs,
                ingresses,
            },
            applied: Applied::default(),
        };
        let writers = ChildWriters {
            config_maps: config_maps_writer,
            deployments: deployments_writer,
            services: services_writer,
            hpas: hpas_writer,
            pdbs: pdbs_writer,
            ingresses: ingresses_writer,
        };
        (tenants, writers)
    }
}

/// Watch caches of the objects the operator manages, in every namespace (managed fields
/// dropped: nothing reads them, and they are most of an object's size).
pub struct Children {
    /// The countries' ConfigMaps.
    pub config_maps: Store<ConfigMap>,
    /// The components' Deployments.
    pub deployments: Store<Deployment>,
    /// The components' Services.
    pub services: Store<Service>,
    /// The components' autoscalers.
    pub hpas: Store<HorizontalPodAutoscaler>,
    /// The components' disruption budgets.
    pub pdbs: Store<PodDisruptionBudget>,
    /// The countries' Ingresses.
    pub ingresses: Store<Ingress>,
}

/// The writing halves of [`Children`], consumed by the watches of [`run`].
pub struct ChildWriters {
    config_maps: Writer<ConfigMap>,
    deployments: Writer<Deployment>,
    services: Writer<Service>,
    hpas: Writer<HorizontalPodAutoscaler>,
    pdbs: Writer<PodDisruptionBudget>,
    ingresses: Writer<Ingress>,
}

/// What every tenant reconciliation shares.
pub type Context = reconciler::Context<Tenants>;

impl Reconcile for CountryTenant {
    const CONTROLLER: &'static str = CONTROLLER;
    const FINALIZER: &'static str = FINALIZER;
    type Extra = Tenants;
    type Status = CountryTenantStatus;

    fn api(&self, client: Client) -> Result<Api<Self>, Error> {
        Ok(Api::all(client))
    }

    /// Applies the objects when that changes something, removes what is no longer wanted,
    /// then writes the status when it changed and says when `Ready` changed.
    #[tracing::instrument(skip_all)]
    async fn reconcile(&self, ctx: &Context) -> Result<Action, Error> {
        let synced = async {
            let desired = resources::desired(self)?;
            let deployments = sync_objects(self, &desired, ctx).await?;
            remove_undesired(self, &desired, ctx).await?;
            Ok::<_, Error>((desired, deployments))
        }
        .await;
        if synced.is_err() {
            ctx.extra.applied.forget(&self.name_any());
        }
        let (desired, deployments) = ctx.degrade_on_error(self, synced).await?;
        let status = tenant_status(self, &desired, &deployments, ctx.now());
        if serde_json::to_value(&status)? != serde_json::to_value(&self.status)? {
            patch_status(self, &status, &ctx.client).await?;
        }

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
        ctx.extra.applied.forget(&self.name_any());
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

/// Applies `object` and returns the server's answer, with the fingerprint of the fields the
/// operator sets ([`applied::fingerprint`]).
async fn apply_fingerprinted<K>(api: &Api<K>, object: &K) -> Result<(ObjectKey, u64, K), Error>
where
    K: k8s_openapi::Resource
        + Resource<DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let answer = apply_object(api, object).await?;
    let print = applied::fingerprint(
        &serde_json::to_value(&answer)?,
        &serde_json::to_value(object)?,
    );
    Ok(((K::KIND, object.name_any()), print, answer))
}

fn cached<K>(store: &Store<K>, ns: &str, object: &K) -> Result<Cached, Error>
where
    K: k8s_openapi::Resource + Resource<DynamicType = ()> + Clone + Serialize + 'static,
{
    let name = object.name_any();
    let live = store
        .get(&ObjectRef::new(&name).within(ns))
        .map(|live| serde_json::to_value(live.as_ref()))
        .transpose()?;
    Ok(((K::KIND, name), serde_json::to_value(object)?, live))
}

/// Every desired object but the namespace (not watched), beside its cached copy.
fn cached_objects(desired: &Desired, children: &Children) -> Result<Vec<Cached>, Error> {
    let ns = desired.namespace.name_any();
    let mut out = vec![cached(&children.config_maps, &ns, &desired.config_map)?];
    for objects in &desired.components {
        out.push(cached(&children.deployments, &ns, &objects.deployment)?);
        out.push(cached(&children.services, &ns, &objects.service)?);
        out.push(cached(&children.hpas, &ns, &objects.hpa)?);
        out.push(cached(&children.pdbs, &ns, &objects.pdb)?);
    }
    for ingress in desired.ingress.iter().chain(&desired.stream_ingress) {
        out.push(cached(&children.ingresses, &ns, ingress)?);
    }
    Ok(out)
}

/// Applies the tenant's objects when [`Record::reapply`] says that would change something, and
/// returns each enabled component's Deployment: as the apply answered, or from the cache.
async fn sync_objects(
    tenant: &CountryTenant,
    desired: &Desired,
    ctx: &Context,
) -> Result<Vec<(Component, Deployment)>, Error> {
    let name = tenant.name_any();
    let ns = desired.namespace.name_any();
    let children = &ctx.extra.children;
    let desired_hash = applied::hash_desired(&desired.objects()?);
    let cached_deployments: Option<Vec<(Component, Deployment)>> = desired
        .components
        .iter()
        .map(|objects| {
            let key = ObjectRef::new(objects.component.name()).within(&ns);
            children
                .deployments
                .get(&key)
                .map(|deployment| (objects.component, deployment.as_ref().clone()))
        })
        .collect();
    let reapply = match ctx.extra.applied.get(&name) {
        None => Some(Reapply::NeverApplied),
        Some(record) => {
            let cached = cached_objects(desired, children)?;
            record.reapply(desired_hash, &cached, Instant::now())
        }
    };
    if let (None, Some(deployments)) = (&reapply, cached_deployments) {
        return Ok(deployments);
    }
    // The cache lacked a Deployment the record has: it was just deleted.
    let reapply = reapply.unwrap_or(Reapply::Missing((
        <Deployment as k8s_openapi::Resource>::KIND,
        String::new(),
    )));
    tracing::debug!(?reapply, "applying every object");
    ctx.metrics.tenant_applied(reapply.label());
    let (objects, deployments) = apply_objects(desired, ctx).await?;
    ctx.extra.applied.insert(
        &name,
        Record {
            desired: desired_hash,
            at: Instant::now(),
            objects,
        },
    );
    Ok(deployments)
}

/// Applies every object in order: the namespace, the ConfigMap the pods read, each component's
/// Deployment, Service, autoscaler and disruption budget, then the Ingresses (one at a time, so
/// a pass is one predictable sequence of calls; tenants are reconciled side by side instead). Returns the fingerprints of what was applied and each enabled
/// component's Deployment as the server has it.
async fn apply_objects(
    desired: &Desired,
    ctx: &Context,
) -> Result<(HashMap<ObjectKey, u64>, Vec<(Component, Deployment)>), Error> {
    let client = &ctx.client;
    let ns = desired.namespace.name_any();
    apply_object(&Api::<Namespace>::all(client.clone()), &desired.namespace).await?;
    let (key, print, _) = apply_fingerprinted(
        &Api::<ConfigMap>::namespaced(client.clone(), &ns),
        &desired.config_map,
    )
    .await?;
    let mut prints = HashMap::from([(key, print)]);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), &ns);

    let mut applied = Vec::new();
    for objects in &desired.components {
        let (key, print, deployment) =
            apply_fingerprinted(&deployments, &objects.deployment).await?;
        prints.insert(key, print);
        let (key, print, _) = apply_fingerprinted(&services, &objects.service).await?;
        prints.insert(key, print);
        let (key, print, _) = apply_fingerprinted(&hpas, &objects.hpa).await?;
        prints.insert(key, print);
        let (key, print, _) = apply_fingerprinted(&pdbs, &objects.pdb).await?;
        prints.insert(key, print);
        applied.push((objects.component, deployment));
    }
    for ingress in desired.ingress.iter().chain(&desired.stream_ingress) {
        let (key, print, _) = apply_fingerprinted(&ingresses, ingress).await?;
        prints.insert(key, print);
    }
    Ok((prints, applied))
}

/// Deletes `name` in `ns` if the cache holds it for `tenant`; whether it was deleted.
async fn delete_cached<K>(
    store: &Store<K>,
    client: &Client,
    ns: &str,
    name: &str,
    tenant: &str,
) -> Result<bool, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned
        + 'static,
{
    let ours = store
        .get(&ObjectRef::new(name).within(ns))
        .is_some_and(|cached| {
            cached.labels().get(TENANT_LABEL).map(String::as_str) == Some(tenant)
        });
    if !ours {
        return Ok(false);
    }
    delete_if_present(&Api::<K>::namespaced(client.clone(), ns), name).await
}

/// Removes what the caches hold of the components that are not enabled, and the Ingresses
/// that are not wanted (no `spec.ingress`, or no component with such paths); an Event per
/// removed component.
async fn remove_undesired(
    tenant: &CountryTenant,
    desired: &Desired,
    ctx: &Context,
) -> Result<(), Error> {
    let owner = tenant.name_any();
    let ns = desired.namespace.name_any();
    let children = &ctx.extra.children;
    let client = &ctx.client;
    let enabled: Vec<Component> = desired.components.iter().map(|c| c.component).collect();
    for component in Component::ALL {
        if enabled.contains(&component) {
            continue;
        }
        let name = component.name();
        let mut removed = delete_cached(&children.deployments, client, &ns, name, &owner).await?;
        removed |= delete_cached(&children.services, client, &ns, name, &owner).await?;
        removed |= delete_cached(&children.hpas, client, &ns, name, &owner).await?;
        removed |= delete_cached(&children.pdbs, client, &ns, name, &owner).await?;
        if removed {
            ctx.publish(
                tenant,
                EventType::Normal,
                "ComponentRemoved",
                format!("{name} is disabled: removed its Deployment, Service, autoscaler and disruption budget from {ns}"),
            )
            .await;
        }
    }
    for (ingress, name) in [
        (&desired.ingress, INGRESS),
        (&desired.stream_ingress, STREAM_INGRESS),
    ] {
        if ingress.is_none() {
            delete_cached(&children.ingresses, client, &ns, name, &owner).await?;
        }
    }
    Ok(())
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

/// Watches the objects of kind `K` the operator manages into `cache`; a change wakes up the
/// tenant that controls the object.
fn watch_children<K>(
    controller: Controller<CountryTenant>,
    client: &Client,
    cache: Writer<K>,
) -> Controller<CountryTenant>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let managed = watcher::Config::default()
        .labels(&format!("app.kubernetes.io/managed-by={MANAGER}"))
        .any_semantic();
    let changes = watcher(Api::<K>::all(client.clone()), managed)
        .default_backoff()
        .modify(|object: &mut K| object.managed_fields_mut().clear())
        .reflect(cache)
        .touched_objects();
    controller.watches_stream(changes, |object: K| controlling_tenant(&object))
}

/// Runs the tenant controller until `shutdown` completes, filling the caches of `ctx` through
/// `writers`.
pub async fn run(
    ctx: std::sync::Arc<Context>,
    writers: ChildWriters,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let tenants: Api<CountryTenant> = Api::all(client.clone());
    let mut controller = Controller::new(tenants, watcher::Config::default().any_semantic());
    controller = watch_children(controller, &client, writers.deployments);
    controller = watch_children(controller, &client, writers.config_maps);
    controller = watch_children(controller, &client, writers.services);
    controller = watch_children(controller, &client, writers.hpas);
    controller = watch_children(controller, &client, writers.pdbs);
    controller = watch_children(controller, &client, writers.ingresses);
    // A rollout changes a Deployment's status many times a second; one pass per burst is enough.
    let config = kube::runtime::controller::Config::default()
        .debounce(Duration::from_secs(1))
        .concurrency(CONCURRENCY);
    reconciler::run(controller, config, ctx, shutdown).await;
}

#[cfg(test)]
mod tests;
