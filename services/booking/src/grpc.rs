//! `booking.v1.Availability` for internal callers. Deadlines: tonic's server enforces the
//! caller's `grpc-timeout`, and each database call is bounded by what is left of it.

use chrono::{DateTime, Utc};
use pulse_kit::config::CountryConfig;
use pulse_proto::booking::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::domain;
use crate::store::{BookingError, Store};

/// The gRPC service.
pub struct AvailabilityService {
    store: Store,
    country: Arc<CountryConfig>,
}

impl AvailabilityService {
    /// The service over booking's store.
    pub fn new(store: Store, country: Arc<CountryConfig>) -> Self {
        Self { store, country }
    }
}

fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn from_timestamp(
    field: &str,
    ts: Option<prost_types::Timestamp>,
) -> Result<DateTime<Utc>, Status> {
    let ts = ts.ok_or_else(|| Status::invalid_argument(format!("`{field}` is required")))?;
    DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).unwrap_or(0))
        .ok_or_else(|| Status::invalid_argument(format!("`{field}` is out of range")))
}

fn parse_id(field: &str, text: &str) -> Result<Uuid, Status> {
    text.parse()
        .map_err(|_| Status::invalid_argument(format!("`{field}` must be a UUID, got `{text}`")))
}

impl From<BookingError> for Status {
    fn from(err: BookingError) -> Self {
        match err {
            BookingError::AppointmentNotFound(_)
            | BookingError::PractitionerNotFound(_)
            | BookingError::SlotNotFound(_) => Status::not_found(err.to_string()),
            BookingError::Db(sqlx::Error::PoolTimedOut) => Status::unavailable("database busy"),
            other => {
                tracing::error!(error = %other, "booking gRPC call failed");
                Status::internal("internal error")
            }
        }
    }
}

#[tonic::async_trait]
impl pb::availability_server::Availability for AvailabilityService {
    async fn get_appointment(
        &self,
        request: Request<pb::GetAppointmentRequest>,
    ) -> Result<Response<pb::Appointment>, Status> {
        let id = parse_id("appointment_id", &request.get_ref().appointment_id)?;
        let row = self.store.appointment(id).await?;
        Ok(Response::new(pb::Appointment {
            id: row.id.to_string(),
            practitioner_id: row.practitioner_id.to_string(),
            patient_id: row.patient_subject,
            slot_id: row.slot_id.to_string(),
            starts_at: Some(timestamp(row.starts_at)),
            ends_at: Some(timestamp(row.ends_at)),
            status: row.status,
            local_start: domain::local_rfc3339(row.starts_at, self.country.tz()),
        }))
    }

    async fn list_free_slots(
        &self,
        request: Request<pb::ListFreeSlotsRequest>,
    ) -> Result<Response<pb::ListFreeSlotsResponse>, Status> {
        let request = request.into_inner();
        let practitioner = parse_id("practitioner_id", &request.practitioner_id)?;
        let from = from_timestamp("from", request.from)?;
        let to = from_timestamp("to", request.to)?;
        if to <= from {
            return Err(Status::invalid_argument("`to` must be after `from`"));
        }
        let limit = match request.limit {
            0 => 100,
            n if n <= 1000 => i64::from(n),
            _ => return Err(Status::invalid_argument("`limit` must be at most 1000")),
        };
        let slots = self.store.free_slots(practitioner, from, to, limit).await?;
        let tz = self.country.tz();
        Ok(Response::new(pb::ListFreeSlotsResponse {
            slots: slots
                .into_iter()
                .map(|s| pb::Slot {
                    id: s.id.to_string(),
                    starts_at: Some(timestamp(s.starts_at)),
                    ends_at: Some(timestamp(s.ends_at)),
                    local_start: domain::local_rfc3339(s.starts_at, tz),
                })
                .collect(),
        }))
    }
}
