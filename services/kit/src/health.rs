//! Liveness and readiness.
//!
//! `/livez` answers 200 while the process runs. `/readyz` answers 200 only when every dependency
//! check (PostgreSQL, Redis, Kafka) passed on its last run and the process is not draining; a
//! background task re-runs the checks every second, so a probe never waits on a dead dependency.

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

use crate::problem::Problem;

/// A dependency check: `Ok` when reachable, `Err(reason)` otherwise.
pub type CheckFn = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// A named dependency check.
#[derive(Clone)]
pub struct Check {
    name: String,
    run: CheckFn,
}

impl Check {
    /// A check called `name`.
    pub fn new<F, Fut>(name: &str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        Self {
            name: name.to_owned(),
            run: Arc::new(move || Box::pin(check())),
        }
    }
}

/// Readiness state of the process.
pub struct Health {
    checks: Vec<Check>,
    timeout: Duration,
    draining: AtomicBool,
    results: RwLock<Option<BTreeMap<String, Result<(), String>>>>,
}

impl Health {
    /// Health over `checks`; not ready until the first round has passed.
    pub fn new(checks: Vec<Check>) -> Arc<Self> {
        Arc::new(Self {
            checks,
            timeout: Duration::from_secs(1),
            draining: AtomicBool::new(false),
            results: RwLock::new(None),
        })
    }

    /// Runs every check once, concurrently, each bounded by a timeout.
    pub async fn run_checks(&self) {
        let rounds = self.checks.iter().map(|check| async move {
            let outcome = match tokio::time::timeout(self.timeout, (check.run)()).await {
                Ok(outcome) => outcome,
                Err(_) => Err(format!("no answer within {:?}", self.timeout)),
            };
            (check.name.clone(), outcome)
        });
        let results: BTreeMap<_, _> = futures::future::join_all(rounds)
            .await
            .into_iter()
            .collect();
        for (name, outcome) in &results {
            if let Err(reason) = outcome {
                tracing::debug!(check = %name, %reason, "dependency check failed");
            }
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

    /// Readiness, with the reason when not ready.
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
                for (name, outcome) in results {
                    match outcome {
                        Ok(()) => {
                            report.insert(name.clone(), "ok".to_owned());
                        }
                        Err(reason) => {
                            ready = false;
                            report.insert(name.clone(), reason.clone());
                        }
                    }
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
        let failing: Vec<String> = checks
            .iter()
            .filter(|(_, v)| v.as_str() != "ok")
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        Problem::unavailable(format!("not ready: {}", failing.join("; ")))
            .with("checks", serde_json::to_value(&checks).unwrap_or_default())
            .into_response()
    }
}
