//! Prometheus metrics shared by the kit: HTTP traffic, outbox publishing and consumer progress.
//! Components register their own metrics in the same registry through [`Metrics::register`].

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

/// Labels of HTTP request metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Route template (`/v1/practitioners/{id}`), never the raw path.
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// Response status code.
    pub status: u16,
}

/// Labels of per-component metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabels {
    /// Component name.
    pub component: String,
}

/// Labels of consumer metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabels {
    /// Consumer group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
}

/// Labels of consumer metrics that are not per partition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    /// Consumer group.
    pub group: String,
    /// Topic.
    pub topic: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// All kit metrics, plus the registry they live in.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Requests served, by route, method and status.
    pub http_requests: Family<HttpLabels, Counter>,
    /// Request latency in seconds, by route, method and status.
    pub http_duration: Family<HttpLabels, Histogram, fn() -> Histogram>,
    /// Events published by the outbox relay.
    pub outbox_published: Family<ComponentLabels, Counter>,
    /// Age in seconds of the oldest event not yet published (0 when the outbox is empty).
    pub outbox_lag_seconds: Family<ComponentLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Records behind the partition's high watermark.
    pub consumer_lag: Family<ConsumerLabels, Gauge>,
    /// Records handled successfully.
    pub consumer_handled: Family<GroupLabels, Counter>,
    /// Handler failures (each attempt).
    pub consumer_failures: Family<GroupLabels, Counter>,
    /// Records sent to the dead-letter topic.
    pub consumer_dead_lettered: Family<GroupLabels, Counter>,
    /// Partitions this process currently owns.
    pub consumer_partitions_owned: Family<GroupLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every kit metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pulse");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests served",
            http_requests.clone(),
        );
        let http_duration =
            Family::<HttpLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            http_duration.clone(),
        );
        let outbox_published = Family::<ComponentLabels, Counter>::default();
        registry.register(
            "outbox_published_events",
            "Events published to Kafka by the outbox relay",
            outbox_published.clone(),
        );
        let outbox_lag_seconds = Family::default();
        registry.register(
            "outbox_publish_lag_seconds",
            "Age of the oldest unpublished outbox event",
            Clone::clone(&outbox_lag_seconds),
        );
        let consumer_lag = Family::<ConsumerLabels, Gauge>::default();
        registry.register(
            "consumer_lag_records",
            "Records between the committed offset and the high watermark",
            consumer_lag.clone(),
        );
        let consumer_handled = Family::<GroupLabels, Counter>::default();
        registry.register(
            "consumer_handled_records",
            "Records handled",
            consumer_handled.clone(),
        );
        let consumer_failures = Family::<GroupLabels, Counter>::default();
        registry.register(
            "consumer_handler_failures",
            "Failed handler attempts",
            consumer_failures.clone(),
        );
        let consumer_dead_lettered = Family::<GroupLabels, Counter>::default();
        registry.register(
            "consumer_dead_lettered_records",
            "Records moved to the dead-letter topic",
            consumer_dead_lettered.clone(),
        );
        let consumer_partitions_owned = Family::<GroupLabels, Gauge>::default();
        registry.register(
            "consumer_partitions_owned",
            "Partitions owned by this process",
            consumer_partitions_owned.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            http_requests,
            http_duration,
            outbox_published,
            outbox_lag_seconds,
            consumer_lag,
            consumer_handled,
            consumer_failures,
            consumer_dead_lettered,
            consumer_partitions_owned,
        }
    }

    /// Registers a component's own metric.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        if let Ok(mut registry) = self.registry.lock() {
            registry.register(name, help, metric);
        }
    }

    /// Everything in the Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            // Writing into a String cannot fail.
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        }
        out
    }
}
