//! `booking.v1.Availability` for internal callers. Deadlines: tonic's server enforces the
//! caller's `grpc-timeout`, and each database call is bounded by what is left of it.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use pulse_kit::config::CountryConfig;
use pulse_kit::grpc::status_from_error;
use pulse_proto::booking::v1 as pb;
use pulse_proto::time::{from_timestamp, to_timestamp};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::appointments::Appointments;
use crate::domain;
use crate::flow::BookingError;
use crate::practitioners::Practitioners;

/// Default and largest page of `ListFreeSlots`.
const DEFAULT_SLOT_LIMIT: i64 = 100;
const MAX_SLOT_LIMIT: u32 = 1000;

/// The gRPC service.
pub struct AvailabilityService {
    appointments: Appointments,
    practitioners: Practitioners,
    country: Arc<CountryConfig>,
}

impl AvailabilityService {
    /// The service over booking's flows.
    pub fn new(
        appointments: Appointments,
        practitioners: Practitioners,
        country: Arc<CountryConfig>,
    ) -> Self {
        Self {
            appointments,
            practitioners,
            country,
        }
    }
}

fn required_time(
    field: &str,
    ts: Option<&prost_types::Timestamp>,
) -> Result<DateTime<Utc>, Status> {
    let ts = ts.ok_or_else(|| Status::invalid_argument(format!("`{field}` is required")))?;
    from_timestamp(ts).map_err(|_| Status::invalid_argument(format!("`{field}` is out of range")))
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
            BookingError::Db(err) => status_from_error(&err),
            BookingError::Outbox(err) => status_from_error(&err),
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
        let row = self.appointments.get(id).await?;
        Ok(Response::new(pb::Appointment {
            id: row.id.to_string(),
            practitioner_id: row.practitioner_id.to_string(),
            patient_id: row.patient_subject,
            slot_id: row.slot_id.to_string(),
            starts_at: Some(to_timestamp(row.starts_at)),
            ends_at: Some(to_timestamp(row.ends_at)),
            status: row.status.as_str().to_owned(),
            local_start: domain::local_rfc3339(row.starts_at, self.country.tz()),
        }))
    }

    async fn list_free_slots(
        &self,
        request: Request<pb::ListFreeSlotsRequest>,
    ) -> Result<Response<pb::ListFreeSlotsResponse>, Status> {
        let request = request.into_inner();
        let practitioner = parse_id("practitioner_id", &request.practitioner_id)?;
        let from = required_time("from", request.from.as_ref())?;
        let to = required_time("to", request.to.as_ref())?;
        if to <= from {
            return Err(Status::invalid_argument("`to` must be after `from`"));
        }
        let limit = match request.limit {
            0 => DEFAULT_SLOT_LIMIT,
            n if n <= MAX_SLOT_LIMIT => i64::from(n),
            _ => {
                return Err(Status::invalid_argument(format!(
                    "`limit` must be at most {MAX_SLOT_LIMIT}"
                )));
            }
        };
        let slots = self
            .practitioners
            .free_slots(practitioner, from, to, limit)
            .await?;
        let tz = self.country.tz();
        Ok(Response::new(pb::ListFreeSlotsResponse {
            slots: slots
                .into_iter()
                .map(|s| pb::Slot {
                    id: s.id.to_string(),
                    starts_at: Some(to_timestamp(s.starts_at)),
                    ends_at: Some(to_timestamp(s.ends_at)),
                    local_start: domain::local_rfc3339(s.starts_at, tz),
                })
                .collect(),
        }))
    }
}
