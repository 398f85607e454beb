//! PostgreSQL adapter of booking: practitioners, schedules, slots, appointments.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use pulse_kit::config::CountryConfig;
use pulse_kit::outbox::{Outbox, OutboxError};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::domain::{self, RuleViolation, Schedule};

/// What can go wrong in a booking operation.
#[derive(Debug, thiserror::Error)]
pub enum BookingError {
    /// No such slot.
    #[error("slot {0} does not exist")]
    SlotNotFound(Uuid),
    /// No such practitioner.
    #[error("practitioner {0} does not exist")]
    PractitionerNotFound(Uuid),
    /// The slot is booked already.
    #[error("this slot has just been booked by someone else; pick another one")]
    SlotTaken,
    /// No such appointment (or not the caller's).
    #[error("appointment {0} does not exist")]
    AppointmentNotFound(Uuid),
    /// The appointment is not active any more.
    #[error("appointment {0} is already cancelled")]
    NotActive(Uuid),
    /// A country rule refuses it.
    #[error(transparent)]
    Rule(#[from] RuleViolation),
    /// Invalid input.
    #[error(transparent)]
    Invalid(#[from] domain::Invalid),
    /// Database failure.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Outbox failure.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}

/// A practitioner's public profile.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Practitioner {
    /// Id.
    pub id: Uuid,
    /// Full name.
    pub name: String,
    /// Specialty (lower case, e.g. `general-practice`).
    pub specialty: String,
    /// City.
    pub city: String,
    /// Street address.
    pub address: String,
    /// Latitude (WGS 84).
    pub latitude: f64,
    /// Longitude (WGS 84).
    pub longitude: f64,
    /// Spoken languages (ISO 639-1).
    pub languages: Vec<String>,
    /// Consultation price in minor units of `currency`.
    pub consultation_price_minor: i64,
    /// ISO 4217 currency.
    pub currency: String,
    /// JWT subject of the practitioner's own account, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_subject: Option<String>,
}

/// Fields an admin sets on a practitioner.
#[derive(Debug, Clone)]
pub struct PractitionerFields {
    /// Full name.
    pub name: String,
    /// Specialty.
    pub specialty: String,
    /// City.
    pub city: String,
    /// Street address.
    pub address: String,
    /// Latitude.
    pub latitude: f64,
    /// Longitude.
    pub longitude: f64,
    /// Languages.
    pub languages: Vec<String>,
    /// Price in minor units.
    pub consultation_price_minor: i64,
    /// Account subject.
    pub account_subject: Option<String>,
}

/// A free or booked slot.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SlotRow {
    /// Id.
    pub id: Uuid,
    /// Practitioner.
    pub practitioner_id: Uuid,
    /// Start.
    pub starts_at: DateTime<Utc>,
    /// End.
    pub ends_at: DateTime<Utc>,
    /// `free` or `booked`.
    pub status: String,
}

/// An appointment.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AppointmentRow {
    /// Id.
    pub id: Uuid,
    /// Slot.
    pub slot_id: Uuid,
    /// Practitioner.
    pub practitioner_id: Uuid,
    /// Patient (JWT subject).
    pub patient_subject: String,
    /// Start.
    pub starts_at: DateTime<Utc>,
    /// End.
    pub ends_at: DateTime<Utc>,
    /// `booked` or `cancelled`.
    pub status: String,
    /// The appointment this one replaced.
    pub rescheduled_from: Option<Uuid>,
    /// When it was booked.
    pub created_at: DateTime<Utc>,
}

/// Who is cancelling.
#[derive(Debug, Clone)]
pub enum Actor {
    /// A patient: only their own appointments, before the cut-off.
    Patient(String),
    /// A practitioner (by account subject): their own agenda, until the start.
    Practitioner(String),
    /// An admin: anything, until the start.
    Admin(String),
}

impl Actor {
    fn subject(&self) -> &str {
        match self {
            Actor::Patient(s) | Actor::Practitioner(s) | Actor::Admin(s) => s,
        }
    }
}

/// Event payload of `AppointmentBooked`, `AppointmentCancelled` and `AppointmentRescheduled`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppointmentEvent {
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

const APPOINTMENT_COLUMNS: &str = "id, slot_id, practitioner_id, patient_subject, starts_at, ends_at, status, rescheduled_from, created_at";

/// Booking's data access.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    outbox: Outbox,
    country: std::sync::Arc<CountryConfig>,
}

impl Store {
    /// A store over the component's pool.
    pub fn new(pool: PgPool, outbox: Outbox, country: std::sync::Arc<CountryConfig>) -> Self {
        Self {
            pool,
            outbox,
            country,
        }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn tz(&self) -> Tz {
        self.country.tz()
    }

    /// Creates a practitioner (with its schedule and slots when one is given).
    pub async fn create_practitioner(
        &self,
        id: Uuid,
        fields: &PractitionerFields,
        schedule: Option<&Schedule>,
    ) -> Result<Practitioner, BookingError> {
        let mut tx = self.pool.begin().await?;
        let practitioner = sqlx::query_as::<_, Practitioner>(
            "INSERT INTO practitioners (id, name, specialty, city, address, latitude, longitude, languages,
                                        consultation_price_minor, currency, account_subject)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             RETURNING id, name, specialty, city, address, latitude, longitude, languages,
                       consultation_price_minor, currency, account_subject",
        )
        .bind(id)
        .bind(&fields.name)
        .bind(&fields.specialty)
        .bind(&fields.city)
        .bind(&fields.address)
        .bind(fields.latitude)
        .bind(fields.longitude)
        .bind(&fields.languages)
        .bind(fields.consultation_price_minor)
        .bind(&self.country.currency)
        .bind(&fields.account_subject)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(schedule) = schedule {
            self.put_schedule_in(&mut tx, id, schedule).await?;
        }
        tx.commit().await?;
        Ok(practitioner)
    }

    /// Replaces a practitioner's profile.
    pub async fn update_practitioner(
        &self,
        id: Uuid,
        fields: &PractitionerFields,
    ) -> Result<Practitioner, BookingError> {
        sqlx::query_as::<_, Practitioner>(
            "UPDATE practitioners SET name = $2, specialty = $3, city = $4, address = $5, latitude = $6,
                    longitude = $7, languages = $8, consultation_price_minor = $9, account_subject = $10,
                    updated_at = now()
             WHERE id = $1
             RETURNING id, name, specialty, city, address, latitude, longitude, languages,
                       consultation_price_minor, currency, account_subject",
        )
        .bind(id)
        .bind(&fields.name)
        .bind(&fields.specialty)
        .bind(&fields.city)
        .bind(&fields.address)
        .bind(fields.latitude)
        .bind(fields.longitude)
        .bind(&fields.languages)
        .bind(fields.consultation_price_minor)
        .bind(&fields.account_subject)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(BookingError::PractitionerNotFound(id))
    }

    /// One practitioner.
    pub async fn practitioner(&self, id: Uuid) -> Result<Practitioner, BookingError> {
        sqlx::query_as::<_, Practitioner>(
            "SELECT id, name, specialty, city, address, latitude, longitude, languages,
                    consultation_price_minor, currency, account_subject
             FROM practitioners WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(BookingError::PractitionerNotFound(id))
    }

    /// Every practitioner's position, for the Redis GEO index.
    pub async fn positions(&self) -> Result<Vec<(Uuid, f64, f64)>, sqlx::Error> {
        sqlx::query_as("SELECT id, longitude, latitude FROM practitioners")
            .fetch_all(&self.pool)
            .await
    }

    /// Replaces a schedule and rebuilds future free slots at once.
    pub async fn put_schedule(
        &self,
        practitioner_id: Uuid,
        schedule: &Schedule,
    ) -> Result<(), BookingError> {
        schedule.validate()?;
        let mut tx = self.pool.begin().await?;
        let exists: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM practitioners WHERE id = $1 FOR UPDATE")
                .bind(practitioner_id)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            return Err(BookingError::PractitionerNotFound(practitioner_id));
        }
        self.put_schedule_in(&mut tx, practitioner_id, schedule)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn put_schedule_in(
        &self,
        tx: &mut PgConnection,
        practitioner_id: Uuid,
        schedule: &Schedule,
    ) -> Result<(), BookingError> {
        schedule.validate()?;
        let weekly =
            serde_json::to_value(&schedule.weekly).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let exceptions = serde_json::to_value(&schedule.exceptions)
            .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        sqlx::query(
            "INSERT INTO schedules (practitioner_id, slot_minutes, weekly, exceptions, needs_regeneration)
             VALUES ($1, $2, $3, $4, true)
             ON CONFLICT (practitioner_id) DO UPDATE
             SET slot_minutes = EXCLUDED.slot_minutes, weekly = EXCLUDED.weekly,
                 exceptions = EXCLUDED.exceptions, needs_regeneration = true, updated_at = now()",
        )
        .bind(practitioner_id)
        .bind(i32::from(schedule.slot_minutes))
        .bind(weekly)
        .bind(exceptions)
        .execute(&mut *tx)
        .await?;
        self.regenerate_in(tx, practitioner_id, schedule, Utc::now())
            .await?;
        Ok(())
    }

    /// The last local day slots are published for, counted from `now`.
    fn horizon_end(&self, now: DateTime<Utc>) -> NaiveDate {
        domain::local_day(now, self.tz())
            + Duration::days(i64::from(self.country.booking.horizon_days))
    }

    /// Rebuilds future free slots of one practitioner: slots that the schedule no longer has are
    /// deleted unless booked; new ones are added unless they overlap a booked slot. Idempotent.
    async fn regenerate_in(
        &self,
        tx: &mut PgConnection,
        practitioner_id: Uuid,
        schedule: &Schedule,
        now: DateTime<Utc>,
    ) -> Result<usize, BookingError> {
        let today = domain::local_day(now, self.tz());
        let until = self.horizon_end(now);
        let desired: Vec<_> = domain::generate_slots(schedule, self.tz(), today, until)
            .into_iter()
            .filter(|s| s.starts_at > now)
            .collect();
        let starts: Vec<DateTime<Utc>> = desired.iter().map(|s| s.starts_at).collect();
        let ends: Vec<DateTime<Utc>> = desired.iter().map(|s| s.ends_at).collect();
        let ids: Vec<Uuid> = desired.iter().map(|_| pulse_kit::new_id()).collect();
        sqlx::query(
            "DELETE FROM slots s
             WHERE s.practitioner_id = $1 AND s.status = 'free' AND s.starts_at > $2
               AND NOT EXISTS (SELECT 1 FROM unnest($3::timestamptz[], $4::timestamptz[]) AS d(starts_at, ends_at)
                               WHERE d.starts_at = s.starts_at AND d.ends_at = s.ends_at)",
        )
        .bind(practitioner_id)
        .bind(now)
        .bind(&starts)
        .bind(&ends)
        .execute(&mut *tx)
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO slots (id, practitioner_id, starts_at, ends_at)
             SELECT d.id, $1, d.starts_at, d.ends_at
             FROM unnest($2::uuid[], $3::timestamptz[], $4::timestamptz[]) AS d(id, starts_at, ends_at)
             WHERE NOT EXISTS (SELECT 1 FROM slots b
                               WHERE b.practitioner_id = $1 AND b.status = 'booked'
                                 AND b.starts_at < d.ends_at AND b.ends_at > d.starts_at)
             ON CONFLICT (practitioner_id, starts_at) DO NOTHING",
        )
        .bind(practitioner_id)
        .bind(&ids)
        .bind(&starts)
        .bind(&ends)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("UPDATE schedules SET generated_until = $2, needs_regeneration = false WHERE practitioner_id = $1")
            .bind(practitioner_id)
            .bind(until)
            .execute(&mut *tx)
            .await?;
        Ok(usize::try_from(inserted).unwrap_or(usize::MAX))
    }

    /// One round of the slot job: schedules whose slots are stale or do not reach the horizon
    /// yet are rebuilt, a batch at a time, safely alongside other replicas (SKIP LOCKED).
    pub async fn extend_slots(&self, batch: i64) -> Result<usize, BookingError> {
        let now = Utc::now();
        let until = self.horizon_end(now);
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "SELECT practitioner_id, slot_minutes, weekly, exceptions FROM schedules
             WHERE needs_regeneration OR generated_until IS NULL OR generated_until < $1
             ORDER BY practitioner_id LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(until)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        let mut done = 0;
        for row in rows {
            let practitioner_id: Uuid = row.try_get("practitioner_id")?;
            let slot_minutes: i32 = row.try_get("slot_minutes")?;
            let weekly: serde_json::Value = row.try_get("weekly")?;
            let exceptions: serde_json::Value = row.try_get("exceptions")?;
            let schedule = Schedule {
                slot_minutes: u16::try_from(slot_minutes).unwrap_or(30),
                weekly: serde_json::from_value(weekly)
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                exceptions: serde_json::from_value(exceptions)
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            };
            self.regenerate_in(&mut tx, practitioner_id, &schedule, now)
                .await?;
            done += 1;
        }
        // Past free slots are of no use to anyone.
        sqlx::query("DELETE FROM slots WHERE status = 'free' AND starts_at < $1")
            .bind(now - Duration::days(1))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done)
    }

    /// Free slots of a practitioner in `[from, to)`, bookable now (after the minimum notice).
    pub async fn free_slots(
        &self,
        practitioner_id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<SlotRow>, BookingError> {
        let earliest =
            Utc::now() + Duration::minutes(i64::from(self.country.booking.min_notice_minutes));
        let rows = sqlx::query_as::<_, SlotRow>(
            "SELECT id, practitioner_id, starts_at, ends_at, status FROM slots
             WHERE practitioner_id = $1 AND status = 'free' AND starts_at >= GREATEST($2, $3) AND starts_at < $4
             ORDER BY starts_at LIMIT $5",
        )
        .bind(practitioner_id)
        .bind(from)
        .bind(earliest)
        .bind(to)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Books `slot_id` for `patient` in one transaction (see ARCHITECTURE §3).
    pub async fn book(&self, slot_id: Uuid, patient: &str) -> Result<AppointmentRow, BookingError> {
        let mut tx = self.pool.begin().await?;
        let appointment = self.book_in(&mut tx, slot_id, patient, None).await?;
        self.outbox
            .append(
                &mut tx,
                &appointment.practitioner_id.to_string(),
                "AppointmentBooked",
                &event(&appointment, None, None),
            )
            .await?;
        tx.commit().await?;
        Ok(appointment)
    }

    async fn book_in(
        &self,
        tx: &mut PgConnection,
        slot_id: Uuid,
        patient: &str,
        replacing: Option<&AppointmentRow>,
    ) -> Result<AppointmentRow, BookingError> {
        let slot = sqlx::query_as::<_, SlotRow>(
            "SELECT id, practitioner_id, starts_at, ends_at, status FROM slots WHERE id = $1 FOR UPDATE",
        )
        .bind(slot_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(BookingError::SlotNotFound(slot_id))?;
        if slot.status != "free" {
            return Err(BookingError::SlotTaken);
        }
        let day = domain::local_day(slot.starts_at, self.tz());
        // One patient booking two slots of one day at once must not pass the daily limit twice.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(pulse_kit::db::advisory_key(&format!(
                "booking-patient-day:{patient}:{day}"
            )))
            .execute(&mut *tx)
            .await?;
        let active: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM appointments
             WHERE patient_subject = $1 AND local_day = $2 AND status = 'booked' AND id <> $3",
        )
        .bind(patient)
        .bind(day)
        .bind(replacing.map(|a| a.id).unwrap_or_else(Uuid::nil))
        .fetch_one(&mut *tx)
        .await?;
        domain::check_booking(
            &self.country.booking,
            self.tz(),
            Utc::now(),
            slot.starts_at,
            u32::try_from(active).unwrap_or(u32::MAX),
        )?;
        let inserted = sqlx::query_as::<_, AppointmentRow>(&format!(
            "INSERT INTO appointments (id, slot_id, practitioner_id, patient_subject, starts_at, ends_at, local_day,
                                       status, rescheduled_from)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'booked', $8)
             RETURNING {APPOINTMENT_COLUMNS}"
        ))
        .bind(pulse_kit::new_id())
        .bind(slot.id)
        .bind(slot.practitioner_id)
        .bind(patient)
        .bind(slot.starts_at)
        .bind(slot.ends_at)
        .bind(day)
        .bind(replacing.map(|a| a.id))
        .fetch_one(&mut *tx)
        .await;
        let appointment = match inserted {
            Ok(row) => row,
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                return Err(BookingError::SlotTaken);
            }
            Err(err) => return Err(err.into()),
        };
        sqlx::query("UPDATE slots SET status = 'booked' WHERE id = $1")
            .bind(slot.id)
            .execute(&mut *tx)
            .await?;
        Ok(appointment)
    }

    /// One appointment, if the actor may see it.
    pub async fn appointment_for(
        &self,
        id: Uuid,
        actor: &Actor,
    ) -> Result<AppointmentRow, BookingError> {
        let appointment = self.appointment(id).await?;
        if self
            .may_manage(&mut *self.pool.acquire().await?, &appointment, actor)
            .await?
        {
            Ok(appointment)
        } else {
            Err(BookingError::AppointmentNotFound(id))
        }
    }

    /// One appointment (internal callers).
    pub async fn appointment(&self, id: Uuid) -> Result<AppointmentRow, BookingError> {
        sqlx::query_as::<_, AppointmentRow>(&format!(
            "SELECT {APPOINTMENT_COLUMNS} FROM appointments WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(BookingError::AppointmentNotFound(id))
    }

    async fn may_manage(
        &self,
        conn: &mut PgConnection,
        appointment: &AppointmentRow,
        actor: &Actor,
    ) -> Result<bool, sqlx::Error> {
        Ok(match actor {
            Actor::Admin(_) => true,
            Actor::Patient(subject) => &appointment.patient_subject == subject,
            Actor::Practitioner(subject) => {
                let owner: Option<String> =
                    sqlx::query_scalar("SELECT account_subject FROM practitioners WHERE id = $1")
                        .bind(appointment.practitioner_id)
                        .fetch_one(&mut *conn)
                        .await?;
                owner.as_deref() == Some(subject.as_str())
            }
        })
    }

    /// A patient's appointments, newest first.
    pub async fn patient_appointments(
        &self,
        patient: &str,
        limit: i64,
    ) -> Result<Vec<AppointmentRow>, BookingError> {
        Ok(sqlx::query_as::<_, AppointmentRow>(&format!(
            "SELECT {APPOINTMENT_COLUMNS} FROM appointments WHERE patient_subject = $1 ORDER BY starts_at DESC LIMIT $2"
        ))
        .bind(patient)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// A practitioner's agenda (by account subject), earliest first from `from`.
    pub async fn agenda(
        &self,
        account_subject: &str,
        from: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<AppointmentRow>, BookingError> {
        Ok(sqlx::query_as::<_, AppointmentRow>(&format!(
            "SELECT {} FROM appointments a
             WHERE a.practitioner_id IN (SELECT id FROM practitioners WHERE account_subject = $1) AND a.starts_at >= $2
             ORDER BY a.starts_at LIMIT $3",
            APPOINTMENT_COLUMNS.split(", ").map(|c| format!("a.{c}")).collect::<Vec<_>>().join(", ")
        ))
        .bind(account_subject)
        .bind(from)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn lock_active(
        &self,
        tx: &mut PgConnection,
        id: Uuid,
        actor: &Actor,
    ) -> Result<AppointmentRow, BookingError> {
        let appointment = sqlx::query_as::<_, AppointmentRow>(&format!(
            "SELECT {APPOINTMENT_COLUMNS} FROM appointments WHERE id = $1 FOR UPDATE"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(BookingError::AppointmentNotFound(id))?;
        if !self.may_manage(tx, &appointment, actor).await? {
            return Err(BookingError::AppointmentNotFound(id));
        }
        if appointment.status != "booked" {
            return Err(BookingError::NotActive(id));
        }
        Ok(appointment)
    }

    async fn release(
        &self,
        tx: &mut PgConnection,
        appointment: &AppointmentRow,
        actor: &Actor,
    ) -> Result<AppointmentRow, BookingError> {
        let cancelled = sqlx::query_as::<_, AppointmentRow>(&format!(
            "UPDATE appointments SET status = 'cancelled', cancelled_at = now(), cancelled_by = $2
             WHERE id = $1 RETURNING {APPOINTMENT_COLUMNS}"
        ))
        .bind(appointment.id)
        .bind(actor.subject())
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("UPDATE slots SET status = 'free' WHERE id = $1")
            .bind(appointment.slot_id)
            .execute(&mut *tx)
            .await?;
        Ok(cancelled)
    }

    /// Cancels an appointment and frees its slot.
    pub async fn cancel(&self, id: Uuid, actor: &Actor) -> Result<AppointmentRow, BookingError> {
        let mut tx = self.pool.begin().await?;
        let appointment = self.lock_active(&mut tx, id, actor).await?;
        domain::check_cancellation(
            &self.country.booking,
            Utc::now(),
            appointment.starts_at,
            !matches!(actor, Actor::Patient(_)),
        )?;
        let cancelled = self.release(&mut tx, &appointment, actor).await?;
        self.outbox
            .append(
                &mut tx,
                &cancelled.practitioner_id.to_string(),
                "AppointmentCancelled",
                &event(&cancelled, None, Some(actor.subject().to_owned())),
            )
            .await?;
        tx.commit().await?;
        Ok(cancelled)
    }

    /// Moves an appointment to another slot: the new one is booked and the old one freed in one
    /// transaction.
    pub async fn reschedule(
        &self,
        id: Uuid,
        new_slot: Uuid,
        patient: &str,
    ) -> Result<AppointmentRow, BookingError> {
        let actor = Actor::Patient(patient.to_owned());
        let mut tx = self.pool.begin().await?;
        let old = self.lock_active(&mut tx, id, &actor).await?;
        domain::check_cancellation(&self.country.booking, Utc::now(), old.starts_at, false)?;
        let new = self.book_in(&mut tx, new_slot, patient, Some(&old)).await?;
        self.release(&mut tx, &old, &actor).await?;
        self.outbox
            .append(
                &mut tx,
                &new.practitioner_id.to_string(),
                "AppointmentRescheduled",
                &event(&new, Some(&old), None),
            )
            .await?;
        tx.commit().await?;
        Ok(new)
    }
}

fn event(
    appointment: &AppointmentRow,
    previous: Option<&AppointmentRow>,
    cancelled_by: Option<String>,
) -> AppointmentEvent {
    AppointmentEvent {
        appointment_id: appointment.id,
        slot_id: appointment.slot_id,
        practitioner_id: appointment.practitioner_id,
        patient_id: appointment.patient_subject.clone(),
        starts_at: appointment.starts_at,
        previous_appointment_id: previous.map(|p| p.id),
        previous_slot_id: previous.map(|p| p.slot_id),
        cancelled_by,
    }
}
