//! Prometheus metrics shared by the kit: HTTP traffic, outbox publishing and consumer progress.
//! Components register their own metrics in the same registry through [`Metrics::register`].

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

/// Labels of HTTP request metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Component serving the route (`booking`, …), `kit` for the kit's own routes.
    pub component: &'static str,
    /// Route template (`/v1/practitioners/{id}`), never the raw path; shared, so labelling a
    /// request does not copy it.
    pub route: std::sync::Arc<String>,
    /// HTTP method (`other` for extension methods).
    pub method: &'static str,
    /// Response status code.
    pub status: u16,
}

/// Labels of per-component metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabels {
    /// Component name.
    pub component: String,
}

/// Labels of database pool metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// Component owning the pool.
    pub component: String,
    /// `in_use` or `idle`.
    pub state: &'static str,
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

/// Upper bounds (seconds) of the request latency buckets. SLO latency thresholds (the chart's
/// `slo.*.latency.thresholdSeconds`) must be one of them: a latency SLO counts the requests in
/// the bucket at the threshold.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Creates `family`'s series for each of `label_sets` at 0, so that dashboards and alerts see
/// 0 before the first event rather than no series at all.
pub fn preset<S, M, C>(family: &Family<S, M, C>, label_sets: impl IntoIterator<Item = S>)
where
    S: Clone + std::hash::Hash + Eq,
    C: MetricConstructor<M>,
{
    for labels in label_sets {
        // The guard is dropped at once: asking the family again while holding it would deadlock.
        drop(family.get_or_create(&labels));
    }
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
    /// Publishing attempts that Kafka failed (the relay retries them).
    pub outbox_publish_failures: Family<ComponentLabels, Counter>,
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
    /// Fetches and offset commits that Kafka failed (retried).
    pub consumer_fetch_failures: Family<GroupLabels, Counter>,
    /// Partitions this process currently owns.
    pub consumer_partitions_owned: Family<GroupLabels, Gauge>,
    /// Connections of each component's database pool, in use or idle.
    pub db_pool_connections: Family<PoolLabels, Gauge>,
    /// The most connections each component's pool opens.
    pub db_pool_max_connections: Family<ComponentLabels, Gauge>,
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
        let outbox_publish_failures = Family::<ComponentLabels, Counter>::default();
        registry.register(
            "outbox_publish_failures",
            "Outbox publishing attempts that Kafka failed (retried)",
            outbox_publish_failures.clone(),
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
        let consumer_fetch_failures = Family::<GroupLabels, Counter>::default();
        registry.register(
            "consumer_fetch_failures",
            "Fetches and offset commits that Kafka failed (retried)",
            consumer_fetch_failures.clone(),
        );
        let db_pool_connections = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "Connections of a component's database pool, by state (in_use, idle)",
            db_pool_connections.clone(),
        );
        let db_pool_max_connections = Family::<ComponentLabels, Gauge>::default();
        registry.register(
            "db_pool_max_connections",
            "The most connections a component's database pool opens",
            db_pool_max_connections.clone(),
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
            outbox_publish_failures,
            outbox_lag_seconds,
            consumer_lag,
            consumer_handled,
            consumer_failures,
            consumer_dead_lettered,
            consumer_fetch_failures,
            consumer_partitions_owned,
            db_pool_connections,
            db_pool_max_connections,
        }
    }

    /// Keeps `component`'s pool gauges current (once a second) until `shutdown`.
    pub async fn watch_pool(
        self: std::sync::Arc<Self>,
        component: &'static str,
        pool: sqlx::PgPool,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let labels = |state| PoolLabels {
            component: component.to_owned(),
            state,
        };
        // `get_or_create` holds the family's lock until its guard drops: owned values, one at a
        // time, or the second call waits forever for the first.
        let in_use = self
            .db_pool_connections
            .get_or_create_owned(&labels("in_use"));
        let idle = self
            .db_pool_connections
            .get_or_create_owned(&labels("idle"));
        self.db_pool_max_connections
            .get_or_create(&ComponentLabels {
                component: component.to_owned(),
            })
            .set(i64::from(pool.options().get_max_connections()));
        loop {
            let idle_now = i64::try_from(pool.num_idle()).unwrap_or(i64::MAX);
            idle.set(idle_now);
            in_use.set((i64::from(pool.size()) - idle_now).max(0));
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
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
