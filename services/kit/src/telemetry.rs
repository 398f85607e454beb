//! Logs and traces: JSON log lines on stdout, OpenTelemetry spans exported over OTLP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and W3C `traceparent` propagation helpers for HTTP,
//! gRPC metadata and Kafka headers.
//!
//! A log line written inside a span carries the `trace_id` (32 hex digits) and `span_id` (16)
//! of that span's OpenTelemetry context, so a search of the logs for a trace id finds its lines
//! and a line leads to its trace.

use std::collections::HashMap;
use std::fmt;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Event, Subscriber};
use tracing_opentelemetry::{OpenTelemetrySpanExt, OtelData};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Name of the W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";

/// Keeps the tracer provider alive; flushes spans when dropped.
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(err) = self.provider.shutdown() {
            eprintln!("telemetry: flushing spans failed: {err}");
        }
    }
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built.
    #[error("cannot build the OTLP span exporter: {0}")]
    Exporter(String),
    /// A global subscriber was already installed.
    #[error("cannot install the log subscriber: {0}")]
    Subscriber(String),
}

/// Installs JSON logging (level from `RUST_LOG`, default `info`) and tracing.
///
/// Spans always get real trace ids, so `traceparent` propagates even when no collector is
/// configured; they are exported only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
pub fn init(service_name: &'static str) -> Result<TelemetryGuard, TelemetryError> {
    let mut builder = SdkTracerProvider::builder().with_resource(
        opentelemetry_sdk::Resource::builder()
            .with_service_name(service_name)
            .build(),
    );
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let tracer = provider.tracer(service_name);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(filter)
        .with(json_log_layer(std::io::stdout))
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .try_init()
        .map_err(|e| TelemetryError::Subscriber(e.to_string()))?;
    Ok(TelemetryGuard { provider })
}

/// The log layer [`init`] installs, writing to `writer`: one JSON object a line with the
/// current span's fields (`span`) and, inside a span, its `trace_id` and `span_id` (see
/// [`TraceIds`]). Needs the `tracing_opentelemetry` layer in the same subscriber.
pub fn json_log_layer<S, W>(
    writer: W,
) -> tracing_subscriber::fmt::Layer<S, JsonFields, TraceIds<Format<Json>>, W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .map_event_format(|format| TraceIds { inner: format })
        .with_writer(writer)
}

/// A JSON event format that adds `"trace_id"` and `"span_id"` (lower-case hex, as in
/// `traceparent` and in trace back ends) of the OpenTelemetry span an event happens in to the
/// lines of the JSON format it wraps. Lines outside any span are left as they are.
///
/// The ids come from the span's [`OtelData`] (the `tracing_opentelemetry` layer's span
/// extension): the event's span, or the nearest enclosing one whose OpenTelemetry span has
/// started (a span starts when first entered, or when its context is asked for). They are
/// written straight into the line, with no allocation of their own.
#[derive(Debug, Clone)]
pub struct TraceIds<F> {
    inner: F,
}

impl<S, N, F> FormatEvent<S, N> for TraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some((trace_id, span_id)) = event_trace_ids(ctx) else {
            return self.inner.format_event(ctx, writer, event);
        };
        // The wrapped format opens its object with `{`: the ids go first, its fields after.
        write!(
            writer,
            "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\","
        )?;
        let mut rest = WithoutOpeningBrace {
            out: &mut writer,
            started: false,
        };
        self.inner.format_event(ctx, Writer::new(&mut rest), event)
    }
}

/// The trace and span ids of the span `ctx`'s event is in, if any.
fn event_trace_ids<S, N>(ctx: &FmtContext<'_, S, N>) -> Option<(TraceId, SpanId)>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    ctx.event_scope()?.find_map(|span| {
        let extensions = span.extensions();
        let data = extensions.get::<OtelData>()?;
        let trace_id = data.trace_id()?;
        let span_id = data.span_id()?;
        (trace_id != TraceId::INVALID).then_some((trace_id, span_id))
    })
}

/// Passes writes on, minus the `{` the first one starts with.
struct WithoutOpeningBrace<'a, W> {
    out: &'a mut W,
    started: bool,
}

impl<W: fmt::Write> fmt::Write for WithoutOpeningBrace<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.started {
            return self.out.write_str(s);
        }
        if s.is_empty() {
            return Ok(());
        }
        self.started = true;
        self.out.write_str(s.strip_prefix('{').unwrap_or(s))
    }
}

/// The `traceparent` of the current span, if it belongs to a trace.
pub fn current_traceparent() -> Option<String> {
    span_traceparent(&tracing::Span::current())
}

/// The `traceparent` of `span` (starting its OpenTelemetry span if it has not started yet:
/// set its remote parent first), if it belongs to a trace.
pub fn span_traceparent(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// The current `traceparent`, or a new root one when the caller runs outside any trace, so
/// every event can be followed from its producer to its consumers.
pub fn current_or_new_traceparent() -> String {
    current_traceparent().unwrap_or_else(|| {
        let trace_id = TraceId::from_bytes(uuid::Uuid::new_v4().into_bytes());
        let span_bytes = uuid::Uuid::new_v4().into_bytes();
        let mut span = [0u8; 8];
        span.copy_from_slice(&span_bytes[..8]);
        let context = SpanContext::new(
            trace_id,
            SpanId::from_bytes(span),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let cx = opentelemetry::Context::new().with_remote_span_context(context);
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut carrier);
        carrier.remove(TRACEPARENT).unwrap_or_default()
    })
}

/// Makes `span` a child of the remote `traceparent` (from an HTTP header, gRPC metadata or a
/// Kafka record header). An invalid value is ignored: the span starts a new trace.
pub fn set_remote_parent(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    if context.span().span_context().is_valid() {
        // Fails only when the span is disabled; then there is nothing to link.
        let _ = span.set_parent(context);
    }
}

/// Checks the W3C `traceparent` syntax (`00-<32 hex>-<16 hex>-<2 hex>`).
pub fn is_valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    parts.len() == 4
        && parts[0].len() == 2
        && parts[1].len() == 32
        && parts[2].len() == 16
        && parts[3].len() == 2
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
        && parts[1].bytes().any(|b| b != b'0')
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Log output kept in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log buffer").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        /// Every line, parsed.
        fn lines(&self) -> Vec<serde_json::Value> {
            let bytes = self.0.lock().expect("log buffer").clone();
            String::from_utf8(bytes)
                .expect("utf-8")
                .lines()
                .map(|line| {
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
                })
                .collect()
        }
    }

    #[test]
    fn log_lines_carry_the_trace_and_span_ids_of_their_span() {
        let provider = SdkTracerProvider::builder().build();
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::registry()
            .with(json_log_layer(move || writer.clone()))
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (request, transaction) = tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside any span");
            let request = tracing::info_span!("http.request", http.route = "/v1/things");
            set_remote_parent(&request, parent);
            request.in_scope(|| {
                tracing::info!(answer = 42, "in the request");
                let transaction = tracing::info_span!("db.transaction");
                transaction.in_scope(|| tracing::warn!("in the transaction"));
                (
                    request.context().span().span_context().clone(),
                    transaction.context().span().span_context().clone(),
                )
            })
        });
        let lines = captured.lines();
        assert_eq!(lines.len(), 3, "{lines:?}");

        assert!(lines[0].get("trace_id").is_none(), "{}", lines[0]);
        assert!(lines[0].get("span_id").is_none(), "{}", lines[0]);
        assert_eq!(lines[0]["fields"]["message"], "outside any span");

        // The ids are those of the span's OpenTelemetry context: the caller's trace.
        assert_eq!(
            request.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(lines[1]["trace_id"], request.trace_id().to_string());
        assert_eq!(lines[1]["span_id"], request.span_id().to_string());
        assert_eq!(lines[1]["fields"]["answer"], 42);
        assert_eq!(lines[1]["span"]["name"], "http.request");
        assert_eq!(lines[1]["level"], "INFO");

        // A nested span: same trace, its own span id.
        assert_eq!(lines[2]["trace_id"], request.trace_id().to_string());
        assert_eq!(lines[2]["span_id"], transaction.span_id().to_string());
        assert_ne!(transaction.span_id(), request.span_id());
        assert_eq!(lines[2]["span"]["name"], "db.transaction");
        for line in &lines[1..] {
            let trace_id = line["trace_id"].as_str().expect("trace_id");
            let span_id = line["span_id"].as_str().expect("span_id");
            assert!(trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit()));
            assert!(span_id.len() == 16 && span_id.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }

    #[test]
    fn a_spans_traceparent_names_that_span() {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            let span = tracing::info_span!("outbox.publish");
            set_remote_parent(&span, parent);
            let value = span_traceparent(&span).expect("a traceparent");
            let parts: Vec<&str> = value.split('-').collect();
            assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736", "{value}");
            assert_ne!(parts[2], "00f067aa0ba902b7", "the span's own id: {value}");
            assert_eq!(
                parts[2],
                span.context().span().span_context().span_id().to_string()
            );
        });
    }

    #[test]
    fn a_new_traceparent_is_valid_w3c() {
        let value = current_or_new_traceparent();
        assert!(is_valid_traceparent(&value), "{value}");
        assert_ne!(value, current_or_new_traceparent());
    }

    #[test]
    fn invalid_traceparents_are_recognised() {
        assert!(!is_valid_traceparent("00-0000-0000-01"));
        assert!(!is_valid_traceparent(
            "00-00000000000000000000000000000000-0000000000000001-01"
        ));
        assert!(is_valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
    }
}
