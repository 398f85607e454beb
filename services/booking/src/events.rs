//! Booking's events: what the appointment flows publish through the outbox, and the consumer
//! that keeps search results fresh when they change.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pulse_kit::component::ConsumerSpec;
use pulse_kit::consumer::{BatchEvent, BatchFailure, ConsumerConfig, EventHandler, HandlerError};
use pulse_kit::envelope::EventEnvelope;
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::search::Search;
use crate::store::AppointmentRow;

/// Consumer group that keeps search results fresh.
pub const SEARCH_CACHE_GROUP: &str = "booking-search-cache";

/// What happened to an appointment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppointmentEventKind {
    /// A slot was booked.
    Booked,
    /// An appointment was cancelled and its slot freed.
    Cancelled,
    /// An appointment moved to another slot.
    Rescheduled,
}

impl AppointmentEventKind {
    /// The envelope's event type.
    pub fn event_type(self) -> &'static str {
        match self {
            Self::Booked => "AppointmentBooked",
            Self::Cancelled => "AppointmentCancelled",
            Self::Rescheduled => "AppointmentRescheduled",
        }
    }
}

/// Event payload of `AppointmentBooked`, `AppointmentCancelled` and `AppointmentRescheduled`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppointmentEvent {
    /// What happened (the envelope's event type, not part of the payload).
    #[serde(skip)]
    pub kind: AppointmentEventKind,
    /// The appointment.
    pub appointment_id: Uuid,
    /// Its slot.
    pub slot_id: Uuid,
    /// The practitioner.
    pub practitioner_id: Uuid,
    /// The patient.
    pub patient_id: String,
    /// Start (UTC).
    pub starts_at: DateTime<Utc>,
    /// For a reschedule: the appointment it replaces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_appointment_id: Option<Uuid>,
    /// For a reschedule: the slot it frees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_slot_id: Option<Uuid>,
    /// For a cancellation: who cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<String>,
}

impl AppointmentEvent {
    fn new(kind: AppointmentEventKind, appointment: &AppointmentRow) -> Self {
        Self {
            kind,
            appointment_id: appointment.id,
            slot_id: appointment.slot_id,
            practitioner_id: appointment.practitioner_id,
            patient_id: appointment.patient_subject.clone(),
            starts_at: appointment.starts_at,
            previous_appointment_id: None,
            previous_slot_id: None,
            cancelled_by: None,
        }
    }

    /// `appointment` was booked.
    pub fn booked(appointment: &AppointmentRow) -> Self {
        Self::new(AppointmentEventKind::Booked, appointment)
    }

    /// `appointment` was cancelled by `by` (a JWT subject).
    pub fn cancelled(appointment: &AppointmentRow, by: &str) -> Self {
        Self {
            cancelled_by: Some(by.to_owned()),
            ..Self::new(AppointmentEventKind::Cancelled, appointment)
        }
    }

    /// `previous` moved to `appointment`.
    pub fn rescheduled(appointment: &AppointmentRow, previous: &AppointmentRow) -> Self {
        Self {
            previous_appointment_id: Some(previous.id),
            previous_slot_id: Some(previous.slot_id),
            ..Self::new(AppointmentEventKind::Rescheduled, appointment)
        }
    }
}

/// Drops cached search results when an appointment changes.
struct SearchInvalidator {
    search: Arc<Search>,
}

#[async_trait]
impl EventHandler for SearchInvalidator {
    async fn handle(
        &self,
        _tx: &mut PgConnection,
        event: &EventEnvelope,
    ) -> Result<(), HandlerError> {
        if event.event_type.starts_with("Appointment") {
            self.search.invalidate().await?;
        }
        Ok(())
    }

    /// A crowd of bookings: the cache is invalidated once for the batch, not once per event.
    async fn handle_batch(
        &self,
        _tx: &mut PgConnection,
        events: &[BatchEvent<'_>],
    ) -> Result<(), BatchFailure> {
        if events
            .iter()
            .any(|batched| batched.event.event_type.starts_with("Appointment"))
        {
            self.search
                .invalidate()
                .await
                .map_err(BatchFailure::of_batch)?;
        }
        Ok(())
    }
}

/// The consumer of booking's own events (on `topic`) that retires cached search results.
pub fn search_invalidation(topic: &str, search: Arc<Search>) -> ConsumerSpec {
    let mut config = ConsumerConfig::new(SEARCH_CACHE_GROUP, topic);
    config.fetch_max_wait = Duration::from_millis(200);
    ConsumerSpec {
        config,
        handler: Arc::new(SearchInvalidator { search }),
    }
}
