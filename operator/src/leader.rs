//! Leader election over a `coordination.k8s.io/v1` Lease, so two operator replicas are safe:
//! only the holder of the lease reconciles.
//!
//! The rules are client-go's: the holder renews the lease every `renew_every`; another replica
//! takes it over only after it has watched the same record stay unchanged for a whole
//! `lease_duration` (measured on its own monotonic clock, so clock skew between nodes does not
//! matter). Every write carries the `resourceVersion` it read, so two candidates can never both
//! win: the API server rejects the slower one with 409 Conflict.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// How the election is run.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// Lease name.
    pub name: String,
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews.
    pub renew_every: Duration,
    /// How often a follower checks whether the lease is free.
    pub retry_every: Duration,
}

impl LeaseSettings {
    /// Settings with client-go's default timings (15 s lease, 5 s renew, 2 s retry).
    pub fn new(name: &str, namespace: &str, identity: &str) -> Self {
        Self {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            identity: identity.to_owned(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            retry_every: Duration::from_secs(2),
        }
    }
}

/// What a candidate does with the lease it read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// There is no lease: create it.
    Create,
    /// We hold it: renew it.
    Renew,
    /// It is free or expired: take it over.
    TakeOver,
    /// Someone else holds it.
    Follow {
        /// The holder.
        holder: String,
    },
}

/// The part of a lease that changes with every renewal, to tell whether it moved.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RecordKey {
    holder: Option<String>,
    renew_time: Option<Timestamp>,
    resource_version: Option<String>,
}

fn record_key(lease: &Lease) -> RecordKey {
    let spec = lease.spec.clone().unwrap_or_default();
    RecordKey {
        holder: spec.holder_identity,
        renew_time: spec.renew_time.map(|t| t.0),
        resource_version: lease.metadata.resource_version.clone(),
    }
}

/// Decides what to do with `lease`, which this candidate has seen unchanged for `unchanged_for`.
pub fn decide(
    lease: Option<&Lease>,
    identity: &str,
    unchanged_for: Duration,
    default_duration: Duration,
) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_default();
    if holder.is_empty() {
        return Decision::TakeOver;
    }
    if holder == identity {
        return Decision::Renew;
    }
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(default_duration);
    if unchanged_for >= duration {
        Decision::TakeOver
    } else {
        Decision::Follow { holder }
    }
}

/// One candidate in the election.
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
    observed: Option<(RecordKey, Instant)>,
}

impl LeaderElector {
    /// A candidate using `client`.
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        let api = Api::namespaced(client, &settings.namespace);
        Self {
            api,
            settings,
            observed: None,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    fn seconds(&self) -> i32 {
        i32::try_from(self.settings.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    /// One round: reads the lease and acquires or renews it when allowed. `Ok(true)` when this
    /// replica holds the lease afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let current = self.api.get_opt(&self.settings.name).await?;
        let unchanged_for = match &current {
            Some(lease) => {
                let key = record_key(lease);
                match &self.observed {
                    Some((seen, since)) if *seen == key => since.elapsed(),
                    _ => {
                        self.observed = Some((key, Instant::now()));
                        Duration::ZERO
                    }
                }
            }
            None => Duration::ZERO,
        };
        let decision = decide(
            current.as_ref(),
            &self.settings.identity,
            unchanged_for,
            self.settings.lease_duration,
        );
        let now = MicroTime(Timestamp::now());
        let result = match decision {
            Decision::Follow { .. } => return Ok(false),
            Decision::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.settings.name.clone()),
                        namespace: Some(self.settings.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.settings.identity.clone()),
                        lease_duration_seconds: Some(self.seconds()),
                        acquire_time: Some(now.clone()),
                        renew_time: Some(now),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Decision::Renew | Decision::TakeOver => {
                let Some(mut lease) = current else {
                    return Ok(false);
                };
                let mut spec = lease.spec.take().unwrap_or_default();
                if decision == Decision::TakeOver {
                    spec.holder_identity = Some(self.settings.identity.clone());
                    spec.acquire_time = Some(now.clone());
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(self.seconds());
                spec.renew_time = Some(now);
                lease.spec = Some(spec);
                // Replace carries the resourceVersion we read: a concurrent writer makes it 409.
                self.api
                    .replace(&self.settings.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(lease) => {
                self.observed = Some((record_key(&lease), Instant::now()));
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Gives the lease up (on shutdown), so a standby takes over at once.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            return Ok(());
        };
        let mut spec = lease.spec.take().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Runs the election forever: publishes `true` on `leader` while this replica holds the
    /// lease and `false` once it lost it (a renewal failing for a whole lease duration).
    pub async fn run(mut self, leader: watch::Sender<bool>) {
        let mut last_renewal: Option<Instant> = None;
        loop {
            let holding = *leader.borrow();
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    last_renewal = Some(Instant::now());
                    if !holding {
                        tracing::info!(identity = %self.settings.identity, lease = %self.settings.name, "became leader");
                        leader.send_replace(true);
                    }
                }
                Ok(false) => {
                    if holding {
                        tracing::warn!(identity = %self.settings.identity, "lost the leader lease to another replica");
                        leader.send_replace(false);
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "leader election: cannot read or write the lease");
                    let expired =
                        last_renewal.is_none_or(|at| at.elapsed() >= self.settings.lease_duration);
                    if holding && expired {
                        tracing::warn!("could not renew the leader lease in time; stepping down");
                        leader.send_replace(false);
                    }
                }
            }
            let pause = if *leader.borrow() {
                self.settings.renew_every
            } else {
                self.settings.retry_every
            };
            tokio::time::sleep(pause).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, seconds: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("pulse-operator".into()),
                resource_version: Some("7".into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(seconds),
                ..LeaseSpec::default()
            }),
        }
    }

    const D: Duration = Duration::from_secs(15);
    const LEASE: &str =
        "/apis/coordination.k8s.io/v1/namespaces/pulse-system/leases/pulse-operator";

    fn new_elector() -> (LeaderElector, crate::fixtures::ApiServer) {
        let (client, server) = crate::fixtures::mock_client();
        let settings = LeaseSettings::new("pulse-operator", "pulse-system", "a");
        (LeaderElector::new(client, settings), server)
    }

    fn lease_json(holder: &str, seconds: i32) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "pulse-operator", "namespace": "pulse-system", "resourceVersion": "7"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": seconds, "leaseTransitions": 2,
                     "renewTime": "2026-01-01T00:00:00.000000Z"}
        })
    }

    #[tokio::test]
    async fn losing_the_write_race_is_not_leading() {
        use crate::fixtures::{Call, Reply, finish};
        use http::Method;
        let (mut elector, server) = new_elector();
        let server = server.run(vec![
            Call::new(Method::GET, LEASE).reply(Reply::Json(200, lease_json("b", 0))),
            Call::new(Method::PUT, LEASE).reply(Reply::Error(409, "Conflict")),
        ]);
        assert!(!elector.try_acquire_or_renew().await.expect("round"));
        finish(server).await;
    }

    #[test]
    fn decisions() {
        assert_eq!(decide(None, "a", Duration::ZERO, D), Decision::Create);
        assert_eq!(
            decide(Some(&lease(Some("a"), 15)), "a", Duration::from_secs(60), D),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&lease(Some("b"), 15)), "a", Duration::from_secs(14), D),
            Decision::Follow { holder: "b".into() }
        );
        assert_eq!(
            decide(Some(&lease(Some("b"), 15)), "a", Duration::from_secs(15), D),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&lease(None, 15)), "a", Duration::ZERO, D),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&lease(Some(""), 15)), "a", Duration::ZERO, D),
            Decision::TakeOver
        );
    }
}
