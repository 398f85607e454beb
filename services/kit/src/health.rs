//! Liveness and readiness.
//!
//! `/livez` answers 200 while the process runs; it depends on nothing outside the process, so
//! an outage elsewhere never gets pods restarted. `/readyz` says whether this pod can serve:
//! it answers 200 when every *required* check (the database: without it nothing works) passed
//! on its last run and the process is not draining. The other checks (Redis, Kafka) are
//! *reported*: the pod still serves without them (Redis is an accelerator with fallbacks, the
//! outbox holds events while Kafka is away), so taking every pod out of the load balancer when
//! they fail would turn a partial outage into a total one. Each check's outcome is in the
//! `/readyz` body (`"checks": {"postgres": "ok", "redis": "down: …", "kafka": "ok"}`) and in
//! the gauge `pulse_dependency_up{dependency}` (1 up, 0 down). A background task re-runs the
//! checks every second, so a probe never waits on a dead dependency.
//!
//! A request that fails because the database is unreachable answers 503 with `Retry-After`
//! from the component's own error mapping ([`Problem::from_error`]), not from here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::future::BoxFuture;
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::problem::Problem;

/// Labels of `pulse_dependency_up`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DependencyLabels {
    /// The check's name (`postgres`, `redis`, `kafka`).
    pub dependency: String,
}

/// A dependency check: `Ok` when reachable, `Err(reason)` otherwise.
pub type CheckFn = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// A named dependency check.
#[derive(Clone)]
pub struct Check {
    name: String,
    run: CheckFn,
    required: bool,
}

impl Check {
    /// A check called `name` that readiness requires: while it fails, `/readyz` answers 503.
    pub fn new<F, Fut>(name: &str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        Self {
            name: name.to_owned(),
            run: Arc::new(move || Box::pin(check())),
            required: true,
        }
    }

    /// A check called `name` that is only reported (in the `/readyz` body and the
    /// `pulse_dependency_up` gauge): the pod still serves while it fails.
    pub fn reported<F, Fut>(name: &str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        Self {
            required: false,
            ..Self::new(name, check)
        }
    }

    /// Whether readiness requires it.
    pub fn is_required(&self) -> bool {
        self.required
    }
}

/// Readiness state of the process.
pub struct Health {
    checks: Vec<Check>,
    timeout: Duration,
    draining: AtomicBool,
    results: RwLock<Option<BTreeMap<String, Result<(), String>>>>,
    up: Family<DependencyLabels, Gauge>,
}

impl Health {
    /// Health over `checks`; not ready until the first round has passed.
    pub fn new(checks: Vec<Check>) -> Arc<Self> {
        Arc::new(Self {
            checks,
            timeout: Duration::from_secs(1),
            draining: AtomicBool::new(false),
            results: RwLock::new(None),
            up: Family::default(),
        })
    }

    /// `pulse_dependency_up{dependency}`: 1 when the check passed on its last run, 0 when not;
    /// register it with [`Metrics::register`](crate::metrics::Metrics::register).
    pub fn dependency_gauge(&self) -> Family<DependencyLabels, Gauge> {
        self.up.clone()
    }

    async fn run_one(&self, check: &Check) -> (String, Result<(), String>) {
        let outcome = match tokio::time::timeout(self.timeout, (check.run)()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        };
        (check.name.clone(), outcome)
    }

    /// Runs every check once, concurrently, each bounded by a timeout.
    pub async fn run_checks(&self) {
        let rounds = self.checks.iter().map(|check| self.run_one(check));
        let results: BTreeMap<_, _> = futures::future::join_all(rounds)
            .await
            .into_iter()
            .collect();
        for (name, outcome) in &results {
            if let Err(reason) = outcome {
                tracing::debug!(check = %name, %reason, "dependency check failed");
            }
            self.up
                .get_or_create(&DependencyLabels {
                    dependency: name.clone(),
                })
                .set(i64::from(outcome.is_ok()));
        }
        *self.results.write().await = Some(results);
    }

    /// Re-runs the checks every `interval` until `shutdown`.
    pub fn spawn_checker(
        self: &Arc<Self>,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let health = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                health.run_checks().await;
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        })
    }

    /// Marks the process as draining: readiness fails from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether the process is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Readiness, with every check's outcome (`ok` or `down: <reason>`).
    ///
    /// Not ready before the first round of checks, while draining, and while a required check
    /// fails; reported checks never make the process unready.
    pub async fn readiness(&self) -> (bool, BTreeMap<String, String>) {
        let results = self.results.read().await;
        let mut report = BTreeMap::new();
        let mut ready = !self.is_draining();
        match results.as_ref() {
            None => {
                ready = false;
                report.insert(
                    "startup".to_owned(),
                    "dependency checks have not run yet".to_owned(),
                );
            }
            Some(results) => {
                for check in &self.checks {
                    let Some(outcome) = results.get(&check.name) else {
                        continue;
                    };
                    let shown = match outcome {
                        Ok(()) => "ok".to_owned(),
                        Err(reason) => {
                            ready &= !check.required;
                            format!("down: {reason}")
                        }
                    };
                    report.insert(check.name.clone(), shown);
                }
            }
        }
        if self.is_draining() {
            report.insert(
                "draining".to_owned(),
                "the process is shutting down".to_owned(),
            );
        }
        (ready, report)
    }

    /// The names of the checks that readiness requires.
    fn required(&self) -> impl Iterator<Item = &str> {
        self.checks
            .iter()
            .filter(|c| c.required)
            .map(|c| c.name.as_str())
    }

    /// `/livez` and `/readyz`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/livez", get(livez))
            .route("/readyz", get(readyz))
            .with_state(Arc::clone(self))
    }
}

async fn livez() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "alive" }))
}

async fn readyz(State(health): State<Arc<Health>>) -> Response {
    let (ready, checks) = health.readiness().await;
    if ready {
        (
            StatusCode::OK,
            Json(serde_json::json!({ "status": "ready", "checks": checks })),
        )
            .into_response()
    } else {
        // Only what makes the process unready goes into the detail.
        let blocking: Vec<String> = checks
            .iter()
            .filter(|(name, outcome)| {
                outcome.as_str() != "ok"
                    && (health.required().any(|r| r == name.as_str())
                        || name.as_str() == "draining"
                        || name.as_str() == "startup")
            })
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        Problem::unavailable(format!("not ready: {}", blocking.join("; ")))
            .with("checks", serde_json::to_value(&checks).unwrap_or_default())
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(postgres: bool, redis: bool) -> Arc<Health> {
        let outcome = |up: bool| {
            if up {
                Ok(())
            } else {
                Err("refused".to_owned())
            }
        };
        Health::new(vec![
            Check::new("postgres", move || async move { outcome(postgres) }),
            Check::reported("redis", move || async move { outcome(redis) }),
        ])
    }

    #[tokio::test]
    async fn only_required_checks_and_draining_decide_readiness() {
        let h = health(true, true);
        assert!(!h.readiness().await.0, "not ready before the first round");
        h.run_checks().await;
        let (ready, report) = h.readiness().await;
        assert!(ready);
        assert_eq!(report["postgres"], "ok");
        assert_eq!(report["redis"], "ok");

        let h = health(true, false);
        h.run_checks().await;
        let (ready, report) = h.readiness().await;
        assert!(ready, "a reported check does not make the process unready");
        assert_eq!(report["redis"], "down: refused");
        let gauge = |name: &str| {
            h.dependency_gauge()
                .get_or_create(&DependencyLabels {
                    dependency: name.to_owned(),
                })
                .get()
        };
        assert_eq!((gauge("postgres"), gauge("redis")), (1, 0));
        h.start_draining();
        assert!(!h.readiness().await.0, "draining");

        let h = health(false, true);
        h.run_checks().await;
        let (ready, report) = h.readiness().await;
        assert!(!ready, "a required check decides");
        assert_eq!(report["postgres"], "down: refused");
    }
}
