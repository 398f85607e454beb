//! The event envelope every Pulse event travels in (outbox, Kafka, consumers).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One event: who, what, when, where, and the trace it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// Unique, time-ordered event id (UUIDv7). Consumers deduplicate on it.
    pub id: Uuid,
    /// Event type, e.g. `AppointmentBooked`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Country the event happened in (`FR`).
    pub country: String,
    /// When the event happened (UTC).
    pub occurred_at: DateTime<Utc>,
    /// W3C `traceparent` of the operation that produced the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The event's own data.
    pub payload: serde_json::Value,
}

impl EventEnvelope {
    /// Deserializes the payload into the event's own type.
    pub fn payload_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.payload)
    }
}
