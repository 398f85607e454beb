//! gRPC plumbing shared by components: W3C trace context through gRPC metadata, on the server
//! (a tower layer that runs each call in a span continuing the caller's `traceparent`) and on
//! clients (an interceptor that sends the current one).

use std::task::{Context, Poll};

use tonic::metadata::MetadataValue;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::telemetry;

/// Server layer: each call runs in a `grpc.request` span whose parent is the caller's trace.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer;

impl<S> Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService { inner }
    }
}

/// The service [`TraceLayer`] wraps around the gRPC routes.
#[derive(Debug, Clone)]
pub struct TraceService<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for TraceService<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tracing::instrument::Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let span = tracing::info_span!("grpc.request", rpc.method = %request.uri().path());
        if let Some(parent) = request
            .headers()
            .get(telemetry::TRACEPARENT)
            .and_then(|v| v.to_str().ok())
        {
            telemetry::set_remote_parent(&span, parent);
        }
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        future.instrument(span)
    }
}

/// A client channel to `url` (`http://marketing:50051`) that connects on first use: every call
/// ends after `timeout`, and connecting gives up after `timeout` or 500 ms, whichever is
/// shorter, so a dependency that is down costs a caller little.
pub fn lazy_channel(
    url: &str,
    timeout: std::time::Duration,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    Ok(tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect_timeout(timeout.min(std::time::Duration::from_millis(500)))
        .timeout(timeout)
        .tcp_nodelay(true)
        .connect_lazy())
}

/// Client interceptor: adds the current `traceparent` to the call's metadata
/// (`Client::with_interceptor(channel, pulse_kit::grpc::propagate_trace)`).
pub fn propagate_trace(
    mut request: tonic::Request<()>,
) -> Result<tonic::Request<()>, tonic::Status> {
    if let Some(traceparent) = telemetry::current_traceparent()
        && let Ok(value) = MetadataValue::try_from(traceparent.as_str())
    {
        request.metadata_mut().insert(telemetry::TRACEPARENT, value);
    }
    Ok(request)
}

/// The gRPC status for a failed dependency call, by the rule of
/// [`Problem::from_error`](crate::problem::Problem::from_error) (which also logs the cause):
/// `UNAVAILABLE` when the database is unreachable (nothing was done; a retry can succeed),
/// `INTERNAL` otherwise, without the cause's text.
pub fn status_from_error(cause: &(dyn std::error::Error + 'static)) -> tonic::Status {
    let problem = crate::problem::Problem::from_error(cause);
    if problem.status == http::StatusCode::SERVICE_UNAVAILABLE.as_u16() {
        tonic::Status::unavailable(problem.detail.unwrap_or_default())
    } else {
        tonic::Status::internal("internal error")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn trace_id(traceparent: &str) -> &str {
        traceparent.split('-').nth(1).unwrap_or_default()
    }

    fn with_tracing() -> tracing::subscriber::DefaultGuard {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::set_default(subscriber)
    }

    #[tokio::test]
    async fn a_call_continues_the_callers_trace() {
        let _guard = with_tracing();
        let inner = tower::service_fn(|_request: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(telemetry::current_traceparent())
        });
        let mut service = TraceLayer.layer(inner);
        let request = http::Request::builder()
            .uri("/booking.v1.Availability/GetAppointment")
            .header(telemetry::TRACEPARENT, PARENT)
            .body(())
            .expect("request");
        let seen = service
            .call(request)
            .await
            .expect("call")
            .expect("a traceparent inside the call");
        assert_eq!(trace_id(&seen), trace_id(PARENT));
        assert_ne!(seen, PARENT, "the call has its own span id");
    }

    #[tokio::test]
    async fn clients_send_the_current_trace() {
        let _guard = with_tracing();
        let span = tracing::info_span!("caller");
        telemetry::set_remote_parent(&span, PARENT);
        let request = span
            .in_scope(|| propagate_trace(tonic::Request::new(())))
            .expect("interceptor");
        let sent = request
            .metadata()
            .get(telemetry::TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .expect("traceparent metadata")
            .to_owned();
        assert_eq!(trace_id(&sent), trace_id(PARENT));
    }

    #[test]
    fn an_unreachable_database_is_unavailable_and_other_failures_internal() {
        let refused = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(
            super::status_from_error(&refused).code(),
            tonic::Code::Unavailable
        );
        let bug = sqlx::Error::RowNotFound;
        let status = super::status_from_error(&bug);
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(status.message(), "internal error");
    }
}
