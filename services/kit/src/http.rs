//! HTTP scaffolding shared by every component: request metrics and tracing, the admin router,
//! and serving with graceful shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::health::Health;
use crate::metrics::{HttpLabels, Metrics};
use crate::telemetry;

/// Which component serves each route template: the `component` label of request metrics, and
/// the template itself, made once, as the `route` label.
#[derive(Debug, Clone, Default)]
pub struct RouteOwners(HashMap<String, (Arc<String>, &'static str)>);

impl RouteOwners {
    /// Records `component` as the owner of every path of its OpenAPI document (`paths` keys are
    /// the route templates axum matches, e.g. `/v1/practitioners/{id}`).
    pub fn add_documented(&mut self, component: &'static str, openapi: &serde_json::Value) {
        if let Some(paths) = openapi.get("paths").and_then(|p| p.as_object()) {
            for path in paths.keys() {
                self.0
                    .insert(path.clone(), (Arc::new(path.clone()), component));
            }
        }
    }

    /// The `route` and `component` labels of a request to `route` (a template): documented
    /// routes share one copy of their template and name their component; the kit's own and
    /// unknown routes get a copy each time and `kit`.
    fn labels(&self, route: &str) -> (Arc<String>, &'static str) {
        self.0.get(route).map_or_else(
            || (Arc::new(route.to_owned()), "kit"),
            |(template, owner)| (Arc::clone(template), owner),
        )
    }
}

/// The method as a metric label without allocating: the standard methods, else `other` (an
/// extension method must not mint label values).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// State of the request observer.
#[derive(Clone)]
struct Observer {
    metrics: Arc<Metrics>,
    owners: Arc<RouteOwners>,
}

/// Records request count and latency by component, route template, method and status, and runs the
/// request in a span that continues the caller's `traceparent`: `http.request` (OpenTelemetry
/// kind server, with the semantic conventions' `http.request.method`, `http.route` and
/// `http.response.status_code`; a 5xx answer sets its status to error). Each request ends
/// with a `debug` line of target `pulse_kit::http` (`RUST_LOG=info,pulse_kit::http=debug`)
/// in that span, so it carries the request's `trace_id`.
async fn observe(State(observer): State<Observer>, request: Request, next: Next) -> Response {
    let Observer { metrics, owners } = observer;
    let (route, component) = owners.labels(
        request
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", MatchedPath::as_str),
    );
    let method = method_label(request.method());
    let span = tracing::info_span!(
        "http.request",
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    if let Some(parent) = request
        .headers()
        .get(telemetry::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
    {
        telemetry::set_remote_parent(&span, parent);
    }
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "error");
    }
    span.in_scope(|| {
        tracing::debug!(
            status,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "request handled"
        );
    });
    let labels = HttpLabels {
        component,
        route,
        method,
        status,
    };
    metrics.http_requests.get_or_create(&labels).inc();
    metrics
        .http_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Adds request metrics and tracing to `router`, labelling routes with their `owners`.
pub fn with_observability(router: Router, metrics: Arc<Metrics>, owners: RouteOwners) -> Router {
    let observer = Observer {
        metrics,
        owners: Arc::new(owners),
    };
    router.layer(axum::middleware::from_fn_with_state(observer, observe))
}

/// The admin listener's routes: `/livez`, `/readyz`, `/metrics`.
pub fn admin_router(health: &Arc<Health>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .with_state(metrics)
        .merge(health.router())
}

async fn metrics_text(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // The peer address feeds the rate limiter.
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use tower::ServiceExt;
    use tracing_subscriber::layer::SubscriberExt;

    #[tokio::test]
    async fn requests_continue_the_callers_trace_and_are_counted() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let _guard = tracing::subscriber::set_default(subscriber);
        let metrics = Arc::new(Metrics::new());
        let router = with_observability(
            Router::new().route(
                "/v1/things/{id}",
                get(|| async { telemetry::current_traceparent().unwrap_or_default() }),
            ),
            Arc::clone(&metrics),
            {
                let mut owners = RouteOwners::default();
                owners.add_documented(
                    "things",
                    &serde_json::json!({ "paths": { "/v1/things/{id}": {} } }),
                );
                owners
            },
        );
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let request = axum::http::Request::get("/v1/things/42")
            .header(telemetry::TRACEPARENT, parent)
            .body(axum::body::Body::empty())
            .expect("request");
        let response = router.oneshot(request).await.expect("response");
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .expect("body")
            .to_bytes();
        let seen = String::from_utf8(body.to_vec()).expect("utf8");
        assert_eq!(
            seen.split('-').nth(1),
            parent.split('-').nth(1),
            "same trace id: {seen}"
        );
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"pulse_http_requests_total{component="things",route="/v1/things/{id}",method="GET",status="200"} 1"#
            ),
            "{text}"
        );
    }
}
