//! What the tenant and campaign reconcilers share, in the shape of kube-rs' `controller-rs`: a
//! thin [`reconcile`] (metrics, a tracing span, the finalizer) that calls the kind's
//! [`Reconcile::reconcile`] or [`Reconcile::cleanup`]; an [`error_policy`] with exponential
//! backoff per object; the status patch; `Degraded` and a Warning Event for a failed step
//! ([`Context::degrade_on_error`]); Events; and [`run`], which drives a `Controller`.
//!
//! Each controller keeps only what differs: its objects, its status, its watches.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::Controller;
use kube::runtime::controller::{Action, Config};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use crate::error::{Error, is_not_found};
use crate::metrics::Metrics;
use crate::resources::MANAGER;

/// First retry delay after an error; it doubles with each failure in a row.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Longest Event note (the API server refuses longer ones).
const EVENT_NOTE_MAX: usize = 1000;

/// A kind this operator reconciles.
pub trait Reconcile:
    Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// Name of the controller: the `controller` label of the metrics (`countrytenant`).
    const CONTROLLER: &'static str;
    /// The finalizer that makes [`Reconcile::cleanup`] run before the object goes.
    const FINALIZER: &'static str;
    /// What only this controller's context holds (`()` for nothing).
    type Extra: Send + Sync + 'static;
    /// The status subresource.
    type Status: Serialize + Send + Sync;

    /// The API of this kind where this object lives.
    fn api(&self, client: Client) -> Result<Api<Self>, Error>;

    /// Brings the world in line with the object (its finalizer is in place).
    fn reconcile(
        &self,
        ctx: &Context<Self::Extra>,
    ) -> impl Future<Output = Result<Action, Error>> + Send;

    /// Runs when the object is being deleted; the finalizer goes once it succeeds.
    fn cleanup(
        &self,
        ctx: &Context<Self::Extra>,
    ) -> impl Future<Output = Result<Action, Error>> + Send;

    /// The status recording a failed step: `Ready` false and `Degraded` true with the error.
    fn failed_status(&self, err: &Error, now: DateTime<Utc>) -> Self::Status;
}

/// The clock of the reconcilers (the real one outside tests).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// What every reconciliation of one controller shares.
pub struct Context<T = ()> {
    /// Kubernetes client.
    pub client: Client,
    /// Metrics (shared by the controllers).
    pub metrics: Arc<Metrics>,
    /// Publishes Events on the reconciled objects.
    pub recorder: Recorder,
    /// What only this controller needs.
    pub extra: T,
    clock: Clock,
    failures: Failures,
}

impl<T> Context<T> {
    /// A context for `client`, reporting Events as `reporter`.
    pub fn new(client: Client, metrics: Arc<Metrics>, reporter: Reporter, extra: T) -> Self {
        let recorder = Recorder::new(client.clone(), reporter);
        Self {
            client,
            metrics,
            recorder,
            extra,
            clock: Arc::new(Utc::now),
            failures: Failures::default(),
        }
    }

    /// The same context reading time from `clock` (tests freeze it).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The time now.
    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// Publishes an Event about `object`; a failure is only logged (Events are best effort).
    pub async fn publish<K>(&self, object: &K, type_: EventType, reason: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(truncate(note, EVENT_NOTE_MAX)),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(kind = %K::kind(&()), object = %key(object), reason, error = %err, "cannot publish Event");
        }
    }

    /// Passes `result` on; a failure is first recorded: `Degraded` in the object's status and a
    /// Warning Event. Failing to record it is only logged: the original error is what the
    /// reconciliation reports.
    pub async fn degrade_on_error<K, V>(
        &self,
        object: &K,
        result: Result<V, Error>,
    ) -> Result<V, Error>
    where
        K: Reconcile<Extra = T>,
    {
        if let Err(err) = &result {
            let status = object.failed_status(err, self.now());
            if let Err(status_err) = patch_status(object, &status, &self.client).await {
                tracing::warn!(object = %key(object), error = %status_err, "cannot record the failure in the status");
            }
            self.publish(object, EventType::Warning, err.reason(), err.to_string())
                .await;
        }
        result
    }
}

/// `<namespace>/<name>`, or the name of a cluster-scoped object: how logs and backoff name it.
pub fn key<K: Resource>(object: &K) -> String {
    match object.meta().namespace.as_deref() {
        Some(namespace) => format!("{namespace}/{}", object.name_any()),
        None => object.name_any(),
    }
}

/// Writes `status` to the object's status subresource (server-side apply, forced).
pub async fn patch_status<K: Reconcile>(
    object: &K,
    status: &K::Status,
    client: &Client,
) -> Result<(), Error> {
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    object
        .api(client.clone())?
        .patch_status(
            &object.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(Error::kube(format!(
            "update status of {} {}",
            K::kind(&()),
            key(object)
        )))?;
    Ok(())
}

/// Reconciles one object (the `Controller`'s reconcile function): the finalizer first, then the
/// kind's `reconcile`, or its `cleanup` once the object is being deleted. One pass is one span.
#[tracing::instrument(skip_all, fields(
    controller = K::CONTROLLER,
    name = %object.name_any(),
    namespace = object.meta().namespace.as_deref(),
    generation = object.meta().generation,
))]
pub async fn reconcile<K: Reconcile>(
    object: Arc<K>,
    ctx: Arc<Context<K::Extra>>,
) -> Result<Action, Error> {
    let _timer = ctx.metrics.start(K::CONTROLLER);
    let key = key(object.as_ref());
    let result = match object.api(ctx.client.clone()) {
        Ok(api) => finalizer(&api, K::FINALIZER, object, |event| async {
            match event {
                FinalizerEvent::Apply(object) => object.reconcile(&ctx).await,
                FinalizerEvent::Cleanup(object) => object.cleanup(&ctx).await,
            }
        })
        .await
        .map_err(|err| Error::from_finalizer(K::FINALIZER, err)),
        Err(err) => Err(err),
    };
    match &result {
        Ok(_) => ctx.failures.reset(&key),
        Err(err) => {
            ctx.metrics.failure(K::CONTROLLER, &err.metric_label());
            tracing::warn!(error = %err, "reconcile failed");
        }
    }
    result
}

/// The `Controller`'s error policy: exponential backoff per object (5 s doubling to 5 minutes).
pub fn error_policy<K: Reconcile>(
    object: Arc<K>,
    _err: &Error,
    ctx: Arc<Context<K::Extra>>,
) -> Action {
    Action::requeue(backoff_delay(ctx.failures.next(&key(object.as_ref()))))
}

/// Retry delay after `failures` failures in a row: 5 s, 10 s, 20 s, … up to 5 minutes.
pub fn backoff_delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    BACKOFF_BASE
        .saturating_mul(1u32 << exponent)
        .min(BACKOFF_MAX)
}

/// Runs `controller` with [`reconcile`] and [`error_policy`] until `shutdown` completes.
pub async fn run<K: Reconcile>(
    controller: Controller<K>,
    config: Config,
    ctx: Arc<Context<K::Extra>>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    controller
        .with_config(config)
        .graceful_shutdown_on(shutdown)
        .run(reconcile::<K>, error_policy::<K>, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, action)) => {
                    tracing::debug!(controller = K::CONTROLLER, name = %object.name, namespace = ?object.namespace, ?action, "reconciled");
                }
                Err(err) => {
                    tracing::debug!(controller = K::CONTROLLER, error = %err, "controller event");
                }
            }
        })
        .await;
}

/// Failures in a row per object, for the exponential backoff of the error policy.
#[derive(Debug, Default)]
struct Failures(Mutex<HashMap<String, u32>>);

impl Failures {
    /// Records one more failure in a row for `key` and returns how many there are now.
    fn next(&self, key: &str) -> u32 {
        let mut failures = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = failures.entry(key.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    /// Forgets the failures of `key` after a success.
    fn reset(&self, key: &str) {
        let mut failures = self.0.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(key);
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!(backoff_delay(1), Duration::from_secs(5));
        assert_eq!(backoff_delay(2), Duration::from_secs(10));
        assert_eq!(backoff_delay(4), Duration::from_secs(40));
        assert_eq!(backoff_delay(7), Duration::from_secs(300));
        assert_eq!(backoff_delay(1000), Duration::from_secs(300));
    }

    #[test]
    fn notes_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("abc".into(), 5), "abc");
        assert_eq!(truncate("né".into(), 2), "n");
    }
}
