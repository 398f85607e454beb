//! `pulse-operator run`: the admin listener, the CRD check, leader election and the controllers
//! (tenants and campaigns, both only on the leader).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use kube::api::ListParams;
use kube::runtime::events::Reporter;
use kube::{Api, Client};
use tokio::sync::watch;

use crate::campaign_controller::{self, CampaignContext, Campaigns};
use crate::controller::{self, ChildWriters, Context, Tenants};
use crate::crd::{CountryTenant, SeckillCampaign};
use crate::leader::{LeaderElector, LeaseSettings};
use crate::marketing::{MarketingClient, MarketingSettings};
use crate::metrics::Metrics;

/// Settings of `pulse-operator run`.
#[derive(Clone, Debug)]
pub struct RunSettings {
    /// Admin listener: `/livez`, `/readyz`, `/metrics`.
    pub admin_addr: SocketAddr,
    /// Leader election, or `None` to reconcile without it (a single replica only).
    pub lease: Option<LeaseSettings>,
    /// Name of this replica in Events (its pod name).
    pub instance: Option<String>,
    /// How to reach each country's `marketing` (campaigns).
    pub marketing: MarketingSettings,
    /// How often an open campaign's sales are read.
    pub campaign_poll: Duration,
}

#[derive(Clone)]
struct AdminState {
    metrics: Arc<Metrics>,
    leader: watch::Receiver<bool>,
}

/// The admin router: `/livez` (always 200 while serving), `/readyz` (200, saying whether this
/// replica leads; standbys are ready too) and `/metrics`.
pub fn admin_router(metrics: Arc<Metrics>, leader: watch::Receiver<bool>) -> axum::Router {
    axum::Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState { metrics, leader })
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if *state.leader.borrow() {
        (StatusCode::OK, "ok: leader\n")
    } else {
        (StatusCode::OK, "ok: standby\n")
    }
}

async fn metrics_text(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

/// Fails with a hint when the CRDs are not installed (or not readable by this account).
pub async fn check_crds(client: &Client) -> anyhow::Result<()> {
    let probe = ListParams::default().limit(1);
    let tenants = Api::<CountryTenant>::all(client.clone()).list(&probe).await;
    let campaigns = Api::<SeckillCampaign>::all(client.clone())
        .list(&probe)
        .await;
    for (name, result) in [
        ("countrytenants.pulse.dev", tenants.map(|_| ())),
        ("seckillcampaigns.pulse.dev", campaigns.map(|_| ())),
    ] {
        match result {
            Ok(()) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => bail!(
                "the CustomResourceDefinition {name} is not installed: install the chart (helm install pulse charts/pulse) or apply crds/ (kubectl apply -f crds/)"
            ),
            Err(kube::Error::Api(status)) if status.code == 403 => bail!(
                "this service account may not list {name}: {}; install the chart's ClusterRole or grant list/watch on it",
                status.message
            ),
            Err(err) => return Err(err).with_context(|| format!("cannot list {name}")),
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Runs the tenant and campaign controllers until `stop` turns true.
async fn run_controllers(
    tenants: Arc<Context>,
    caches: ChildWriters,
    campaigns: Arc<CampaignContext>,
    stop: watch::Receiver<bool>,
) {
    let stopped = |mut stop: watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tracing::info!(
        marketing = %campaigns.extra.marketing.settings().url_template,
        poll_seconds = campaigns.extra.poll.as_secs(),
        "reconciling CountryTenants and SeckillCampaigns"
    );
    tokio::join!(
        controller::run(tenants, caches, stopped(stop.clone())),
        campaign_controller::run(campaigns, stopped(stop)),
    );
}

/// Runs the operator until SIGTERM/Ctrl-C, or until it loses the leader lease (an error, so
/// the pod restarts as a standby).
pub async fn run(settings: RunSettings) -> anyhow::Result<()> {
    settings
        .marketing
        .validate()
        .context("invalid marketing settings")?;
    if settings.campaign_poll.is_zero() {
        bail!("the campaign poll interval must be more than zero");
    }
    let client = Client::try_default().await.context(
        "cannot configure a Kubernetes client (in-cluster service account or KUBECONFIG)",
    )?;
    let metrics = Arc::new(Metrics::new());
    let (leader_tx, leader_rx) = watch::channel(false);

    let listener = tokio::net::TcpListener::bind(settings.admin_addr)
        .await
        .with_context(|| format!("cannot listen on {}", settings.admin_addr))?;
    tracing::info!(addr = %settings.admin_addr, "admin listener: /livez /readyz /metrics");
    let router = admin_router(metrics.clone(), leader_rx.clone());
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, router).await {
            tracing::error!(error = %err, "admin listener failed");
        }
    });

    check_crds(&client).await?;

    let reporter = Reporter {
        controller: crate::resources::MANAGER.to_owned(),
        instance: settings.instance.clone(),
    };
    let (tenants, caches) = Tenants::new();
    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics.clone(),
        reporter.clone(),
        tenants,
    ));
    let campaigns = Arc::new(CampaignContext::new(
        client.clone(),
        metrics.clone(),
        reporter,
        Campaigns {
            marketing: MarketingClient::new(settings.marketing.clone()),
            poll: settings.campaign_poll,
        },
    ));

    let Some(lease) = settings.lease.clone() else {
        tracing::warn!("leader election is off: run a single replica only");
        leader_tx.send_replace(true);
        metrics.leader.set(1);
        let (stop_tx, stop_rx) = watch::channel(false);
        let signal = tokio::spawn(async move {
            shutdown_signal().await;
            stop_tx.send_replace(true);
        });
        run_controllers(ctx, caches, campaigns, stop_rx).await;
        signal.abort();
        return Ok(());
    };

    let elector = LeaderElector::new(client.clone(), lease.clone());
    let election = tokio::spawn(elector.run(leader_tx));
    let mut leader = leader_rx.clone();
    tracing::info!(identity = %lease.identity, lease = %lease.name, namespace = %lease.namespace, "waiting for the leader lease");
    tokio::select! {
        _ = shutdown_signal() => {
            election.abort();
            return Ok(());
        }
        changed = leader.wait_for(|is_leader| *is_leader) => {
            changed.context("leader election stopped")?;
        }
    }
    metrics.leader.set(1);

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut lost = leader_rx.clone();
    let watcher = tokio::spawn(async move {
        tokio::select! {
            _ = shutdown_signal() => false,
            _ = lost.wait_for(|is_leader| !*is_leader) => true,
        }
    });
    let controller = tokio::spawn(run_controllers(ctx, caches, campaigns, stop_rx));
    let lost_leadership = watcher.await.unwrap_or(true);
    stop_tx.send_replace(true);
    let _ = controller.await;
    election.abort();
    metrics.leader.set(0);
    if lost_leadership {
        bail!("lost the leader lease; exiting so that this replica restarts as a standby");
    }
    let mut elector = LeaderElector::new(client, lease);
    if let Err(err) = elector.release().await {
        tracing::warn!(error = %err, "cannot release the leader lease; the standby takes over when it expires");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    async fn get(router: axum::Router, path: &str) -> (StatusCode, String) {
        let response = router
            .oneshot(
                axum::http::Request::get(path)
                    .body(axum::body::Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn a_missing_crd_is_reported_with_a_hint() {
        use crate::fixtures::{Call, Reply, finish, mock_client};
        use http::Method;
        let empty = |kind: &str| serde_json::json!({"apiVersion": "pulse.dev/v1alpha1", "kind": kind, "metadata": {}, "items": []});
        let (client, server) = mock_client();
        let server = server.run(vec![
            Call::new(Method::GET, "/apis/pulse.dev/v1alpha1/countrytenants")
                .reply(Reply::Json(200, empty("CountryTenantList"))),
            Call::new(Method::GET, "/apis/pulse.dev/v1alpha1/seckillcampaigns")
                .reply(Reply::Json(200, empty("SeckillCampaignList"))),
        ]);
        check_crds(&client).await.expect("both CRDs installed");
        finish(server).await;

        let (client, server) = mock_client();
        let server = server.run(vec![
            Call::new(Method::GET, "/apis/pulse.dev/v1alpha1/countrytenants")
                .reply(Reply::Json(200, empty("CountryTenantList"))),
            Call::new(Method::GET, "/apis/pulse.dev/v1alpha1/seckillcampaigns")
                .reply(Reply::Error(404, "NotFound")),
        ]);
        let err = check_crds(&client).await.expect_err("campaign CRD missing");
        finish(server).await;
        let text = err.to_string();
        assert!(
            text.contains("seckillcampaigns.pulse.dev is not installed"),
            "{text}"
        );
        assert!(
            text.contains("helm install") && text.contains("kubectl apply -f crds/"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn admin_endpoints() {
        let metrics = Arc::new(Metrics::new());
        drop(metrics.start(crate::controller::CONTROLLER));
        metrics.failure(campaign_controller::CONTROLLER, "marketing_unavailable");
        let (leader_tx, leader_rx) = watch::channel(false);
        let router = admin_router(metrics, leader_rx);
        assert_eq!(get(router.clone(), "/livez").await.0, StatusCode::OK);
        assert_eq!(
            get(router.clone(), "/readyz").await,
            (StatusCode::OK, "ok: standby\n".to_owned())
        );
        leader_tx.send_replace(true);
        assert_eq!(
            get(router.clone(), "/readyz").await,
            (StatusCode::OK, "ok: leader\n".to_owned())
        );
        let (status, text) = get(router, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            text.contains("pulse_operator_reconciliations_total{controller=\"countrytenant\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pulse_operator_reconcile_duration_seconds_bucket"),
            "{text}"
        );
        assert!(
            text.contains("pulse_operator_reconcile_failures_total{controller=\"seckillcampaign\",error=\"marketing_unavailable\"} 1"),
            "{text}"
        );
    }
}
