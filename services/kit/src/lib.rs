//! `pulse-kit`: what every Pulse component shares, and nothing else.
//!
//! The kit carries no business rules. It gives each component the same runtime:
//! typed configuration ([`config`]), telemetry ([`telemetry`]), HTTP and gRPC scaffolding
//! ([`http`], [`health`], [`metrics`]), RFC 9457 errors ([`problem`]), JWT auth ([`auth`]),
//! `Idempotency-Key` handling ([`idempotency`]), the transactional outbox ([`outbox`]), the
//! Kafka consumer runtime ([`consumer`]), Redis helpers ([`redis`]) and the event envelope
//! ([`envelope`]). A component plugs into the `pulse` binary through [`component::Component`].

pub mod auth;
pub mod breaker;
pub mod component;
pub mod config;
pub mod consumer;
pub mod db;
pub mod email;
pub mod envelope;
pub mod grpc;
pub mod health;
pub mod http;
pub mod idempotency;
pub mod kafka;
pub mod metrics;
pub mod money;
pub mod openapi;
pub mod outbox;
pub mod problem;
pub mod ratelimit;
pub mod redis;
pub mod server;
pub mod settings;
pub mod singleflight;
pub mod sms;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod text;

pub use envelope::EventEnvelope;
pub use problem::Problem;

/// A new time-ordered identifier (UUIDv7), used for events, orders and other entities.
pub fn new_id() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}
