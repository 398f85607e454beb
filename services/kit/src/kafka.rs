//! Kafka access through rskafka: a lazily connecting client handle, topic provisioning and
//! topic naming.

use std::sync::Arc;
use std::time::Duration;

use rskafka::BackoffConfig;
use rskafka::client::{Client, ClientBuilder};
use tokio::sync::Mutex;

/// Why Kafka could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// The client reported an error.
    #[error("kafka: {0}")]
    Client(#[from] rskafka::client::error::Error),
    /// The broker did not answer in time.
    #[error("kafka: no answer from {brokers} within {timeout:?}")]
    Timeout {
        /// The bootstrap brokers.
        brokers: String,
        /// How long we waited.
        timeout: Duration,
    },
}

/// The topic that carries `component`'s events in `keyspace` (`pulse.fr.booking.events`).
pub fn events_topic(keyspace: &str, component: &str) -> String {
    format!("pulse.{keyspace}.{component}.events")
}

/// The dead-letter topic of a consumer group reading `topic`.
pub fn dead_letter_topic(topic: &str, group: &str) -> String {
    format!("{topic}.{group}.dlq")
}

/// A Kafka client made on first use and made again after it fails.
#[derive(Clone)]
pub struct KafkaHandle {
    brokers: Vec<String>,
    client: Arc<Mutex<Option<Arc<Client>>>>,
    timeout: Duration,
}

impl std::fmt::Debug for KafkaHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaHandle")
            .field("brokers", &self.brokers)
            .finish_non_exhaustive()
    }
}

impl KafkaHandle {
    /// A handle for the bootstrap `brokers` (`host:port`).
    pub fn new(brokers: Vec<String>) -> Self {
        Self {
            brokers,
            client: Arc::new(Mutex::new(None)),
            timeout: Duration::from_secs(5),
        }
    }

    /// The connected client.
    pub async fn client(&self) -> Result<Arc<Client>, KafkaError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref() {
            return Ok(Arc::clone(client));
        }
        let builder = ClientBuilder::new(self.brokers.clone())
            .client_id("pulse")
            .backoff_config(BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_secs(1),
                base: 2.0,
                deadline: Some(Duration::from_secs(10)),
            });
        let client = tokio::time::timeout(self.timeout, builder.build())
            .await
            .map_err(|_| self.timeout_error())??;
        let client = Arc::new(client);
        *slot = Some(Arc::clone(&client));
        Ok(client)
    }

    /// Forgets the client so the next call reconnects (after a broker restart, say).
    pub async fn reset(&self) {
        *self.client.lock().await = None;
    }

    fn timeout_error(&self) -> KafkaError {
        KafkaError::Timeout {
            brokers: self.brokers.join(","),
            timeout: self.timeout,
        }
    }

    /// Metadata round trip, for readiness.
    pub async fn ping(&self) -> Result<(), KafkaError> {
        let client = self.client().await?;
        match tokio::time::timeout(self.timeout, client.list_topics()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => {
                self.reset().await;
                Err(err.into())
            }
            Err(_) => {
                self.reset().await;
                Err(self.timeout_error())
            }
        }
    }

    /// The partitions of `topic`, creating it with `partitions` partitions when it is missing.
    pub async fn ensure_topic(&self, topic: &str, partitions: i32) -> Result<Vec<i32>, KafkaError> {
        let client = self.client().await?;
        for attempt in 0..50 {
            let topics = client.list_topics().await?;
            if let Some(found) = topics.iter().find(|t| t.name == topic) {
                if !found.partitions.is_empty() {
                    return Ok(found.partitions.iter().copied().collect());
                }
            } else if attempt == 0 || attempt % 10 == 0 {
                let controller = client.controller_client()?;
                if let Err(err) = controller.create_topic(topic, partitions, 1, 5_000).await {
                    // Another replica may have created it first.
                    tracing::debug!(%topic, error = %err, "create_topic");
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(self.timeout_error())
    }
}

/// The partition a record key goes to (stable: the same key always lands in the same partition).
pub fn partition_for(key: &str, partitions: &[i32]) -> i32 {
    if partitions.is_empty() {
        return 0;
    }
    let hash = crate::db::advisory_key(key).unsigned_abs();
    let index = usize::try_from(hash % partitions.len() as u64).unwrap_or(0);
    partitions[index]
}
