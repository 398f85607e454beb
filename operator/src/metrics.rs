//! Prometheus metrics of the operator (served on `/metrics` of the admin listener).

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels naming a controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `countrytenant` or `seckillcampaign`.
    pub controller: String,
}

/// Labels of reconcile failures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// `countrytenant` or `seckillcampaign`.
    pub controller: String,
    /// Short error kind (`api_409`, `api_500`, `invalid_spec`, …).
    pub error: String,
}

/// Labels of the tenant reconciler's full applies.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApplyLabels {
    /// Why everything was applied (`never_applied`, `desired_changed`, `periodic`, `missing`,
    /// `drifted`; see `crate::applied::Reapply`).
    pub reason: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// The operator's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    /// Reconciliations started, by controller.
    pub reconciliations: Family<ControllerLabels, Counter>,
    /// Reconciliations that failed, by controller and error kind.
    pub failures: Family<FailureLabels, Counter>,
    /// Reconcile duration in seconds, by controller.
    pub duration: Family<ControllerLabels, Histogram, fn() -> Histogram>,
    /// Full applies of a tenant's objects, by reason (the other passes apply nothing).
    pub tenant_applies: Family<ApplyLabels, Counter>,
    /// 1 while this replica holds the leader lease.
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered (names start with `pulse_operator_`).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pulse_operator");
        let reconciliations = Family::<ControllerLabels, Counter>::default();
        registry.register(
            "reconciliations",
            "Reconciliations started",
            reconciliations.clone(),
        );
        let failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "reconcile_failures",
            "Reconciliations that failed, by error kind",
            failures.clone(),
        );
        let duration =
            Family::<ControllerLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation",
            duration.clone(),
        );
        let tenant_applies = Family::<ApplyLabels, Counter>::default();
        registry.register(
            "tenant_applies",
            "Full applies of a CountryTenant's objects, by reason; passes that would change nothing apply nothing",
            tenant_applies.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        Self {
            registry,
            reconciliations,
            failures,
            duration,
            tenant_applies,
            leader,
        }
    }

    /// Counts a reconciliation of `controller` and returns a timer that records its duration
    /// when dropped.
    pub fn start(&self, controller: &str) -> ReconcileTimer<'_> {
        let labels = ControllerLabels {
            controller: controller.to_owned(),
        };
        self.reconciliations.get_or_create(&labels).inc();
        ReconcileTimer {
            metrics: self,
            labels,
            started: Instant::now(),
        }
    }

    /// Counts a failed reconciliation.
    pub fn failure(&self, controller: &str, error: &str) {
        self.failures
            .get_or_create(&FailureLabels {
                controller: controller.to_owned(),
                error: error.to_owned(),
            })
            .inc();
    }

    /// Counts a full apply of a tenant's objects for `reason`.
    pub fn tenant_applied(&self, reason: &str) {
        self.tenant_applies
            .get_or_create(&ApplyLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Failures counted so far for `controller` and `error` (for tests and diagnostics).
    pub fn failure_count(&self, controller: &str, error: &str) -> u64 {
        self.failures
            .get_or_create(&FailureLabels {
                controller: controller.to_owned(),
                error: error.to_owned(),
            })
            .get()
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Records a reconcile duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    labels: ControllerLabels,
    started: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .get_or_create(&self.labels)
            .observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_three_reconcile_metrics() {
        let metrics = Metrics::new();
        drop(metrics.start("countrytenant"));
        metrics.failure("countrytenant", "api_500");
        let text = metrics.encode();
        assert!(
            text.contains("pulse_operator_reconciliations_total{controller=\"countrytenant\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "pulse_operator_reconcile_failures_total{controller=\"countrytenant\",error=\"api_500\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "pulse_operator_reconcile_duration_seconds_count{controller=\"countrytenant\"} 1"
            ),
            "{text}"
        );
        assert_eq!(metrics.failure_count("countrytenant", "api_500"), 1);
    }
}
