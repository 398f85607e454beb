//! PostgreSQL adapter of booking, one method per statement. The flows own the transactions:
//! writes take the flow's transaction (`&mut PgConnection`), reads any executor (the pool, or
//! that transaction when the read must see its writes).

use chrono::{DateTime, NaiveDate, Utc};
use pulse_kit::idempotency::AnswerRecord;
use pulse_kit::outbox::{Outbox, OutboxError};
use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;
use sqlx::{PgConnection, PgExecutor, PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use crate::domain::{
    AppointmentStatus, Practitioner, PractitionerProfile, Schedule, SlotStatus, SlotTime,
    ValidSchedule,
};
use crate::events::AppointmentEvent;
use crate::flow::BookingError;

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
    /// Free or booked.
    pub status: SlotStatus,
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
    /// Booked or cancelled.
    pub status: AppointmentStatus,
    /// The appointment this one replaced.
    pub rescheduled_from: Option<Uuid>,
    /// When it was booked.
    pub created_at: DateTime<Utc>,
}

/// An appointment about to be inserted on a locked slot.
#[derive(Debug, Clone, Copy)]
pub struct NewAppointment<'a> {
    /// The slot, locked by the transaction.
    pub slot: &'a SlotRow,
    /// Patient (JWT subject).
    pub patient: &'a str,
    /// The slot's local day.
    pub local_day: NaiveDate,
    /// The appointment it replaces (reschedule).
    pub replacing: Option<Uuid>,
}

const PRACTITIONER_COLUMNS: &str = "id, name, specialty, city, address, latitude, longitude, languages, consultation_price_minor, currency, account_subject";
const SLOT_COLUMNS: &str = "id, practitioner_id, starts_at, ends_at, status";
const APPOINTMENT_COLUMNS: &str = "id, slot_id, practitioner_id, patient_subject, starts_at, ends_at, status, rescheduled_from, created_at";

/// Booking's data access.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    outbox: Outbox,
}

impl Store {
    /// A store over the component's pool, writing events into its outbox.
    pub fn new(pool: PgPool, outbox: Outbox) -> Self {
        Self { pool, outbox }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Starts a flow's transaction.
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.pool.begin().await
    }

    // ------------------------------------------------------------------------- practitioners

    /// Inserts a practitioner priced in `currency`.
    pub async fn insert_practitioner(
        &self,
        tx: &mut PgConnection,
        id: Uuid,
        profile: &PractitionerProfile,
        currency: &str,
    ) -> Result<Practitioner, sqlx::Error> {
        let sql = format!(
            "INSERT INTO practitioners (id, name, specialty, city, address, latitude, longitude, languages,
                                        consultation_price_minor, account_subject, currency)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             RETURNING {PRACTITIONER_COLUMNS}"
        );
        with_profile(&sql, id, profile)
            .bind(currency)
            .fetch_one(tx)
            .await
    }

    /// Replaces a practitioner's profile; `None` if there is no such practitioner.
    pub async fn update_practitioner(
        &self,
        tx: &mut PgConnection,
        id: Uuid,
        profile: &PractitionerProfile,
    ) -> Result<Option<Practitioner>, sqlx::Error> {
        let sql = format!(
            "UPDATE practitioners SET name = $2, specialty = $3, city = $4, address = $5, latitude = $6,
                    longitude = $7, languages = $8, consultation_price_minor = $9, account_subject = $10,
                    updated_at = now()
             WHERE id = $1
             RETURNING {PRACTITIONER_COLUMNS}"
        );
        with_profile(&sql, id, profile).fetch_optional(tx).await
    }

    /// One practitioner.
    pub async fn practitioner<'c>(
        &self,
        db: impl PgExecutor<'c>,
        id: Uuid,
    ) -> Result<Option<Practitioner>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {PRACTITIONER_COLUMNS} FROM practitioners WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(db)
        .await
    }

    /// Locks a practitioner's row until the transaction ends; `false` if there is none.
    pub async fn lock_practitioner(
        &self,
        tx: &mut PgConnection,
        id: Uuid,
    ) -> Result<bool, sqlx::Error> {
        let found: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM practitioners WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(tx)
                .await?;
        Ok(found.is_some())
    }

    /// The account subject of an existing practitioner (`None` when it has no account).
    pub async fn practitioner_account<'c>(
        &self,
        db: impl PgExecutor<'c>,
        id: Uuid,
    ) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT account_subject FROM practitioners WHERE id = $1")
            .bind(id)
            .fetch_one(db)
            .await
    }

    /// Every practitioner's position as (id, longitude, latitude), for the Redis GEO index.
    pub async fn positions(&self) -> Result<Vec<(Uuid, f64, f64)>, sqlx::Error> {
        sqlx::query_as("SELECT id, longitude, latitude FROM practitioners")
            .fetch_all(&self.pool)
            .await
    }

    // ----------------------------------------------------------------------- schedules, slots

    /// Stores a practitioner's schedule and marks its slots as needing a rebuild.
    pub async fn save_schedule(
        &self,
        tx: &mut PgConnection,
        practitioner_id: Uuid,
        schedule: &ValidSchedule,
    ) -> Result<(), sqlx::Error> {
        let schedule = schedule.schedule();
        let json = |value: serde_json::Result<serde_json::Value>| {
            value.map_err(|e| sqlx::Error::Encode(Box::new(e)))
        };
        sqlx::query(
            "INSERT INTO schedules (practitioner_id, slot_minutes, weekly, exceptions, needs_regeneration)
             VALUES ($1, $2, $3, $4, true)
             ON CONFLICT (practitioner_id) DO UPDATE
             SET slot_minutes = EXCLUDED.slot_minutes, weekly = EXCLUDED.weekly,
                 exceptions = EXCLUDED.exceptions, needs_regeneration = true, updated_at = now()",
        )
        .bind(practitioner_id)
        .bind(i32::from(schedule.slot_minutes))
        .bind(json(serde_json::to_value(&schedule.weekly))?)
        .bind(json(serde_json::to_value(&schedule.exceptions))?)
        .execute(tx)
        .await?;
        Ok(())
    }

    /// Makes a practitioner's future free slots (after `now`) exactly `desired`, and records that
    /// slots exist up to `until`. Booked slots are kept, and a desired slot overlapping one is
    /// left out. Idempotent; returns how many slots were added.
    pub async fn replace_future_slots(
        &self,
        tx: &mut PgConnection,
        practitioner_id: Uuid,
        desired: &[SlotTime],
        now: DateTime<Utc>,
        until: NaiveDate,
    ) -> Result<u64, sqlx::Error> {
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
        Ok(inserted)
    }

    /// Locks up to `batch` schedules whose slots are stale or end before `until`, skipping those
    /// another replica holds.
    pub async fn lock_stale_schedules(
        &self,
        tx: &mut PgConnection,
        until: NaiveDate,
        batch: i64,
    ) -> Result<Vec<(Uuid, Schedule)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT practitioner_id, slot_minutes, weekly, exceptions FROM schedules
             WHERE needs_regeneration OR generated_until IS NULL OR generated_until < $1
             ORDER BY practitioner_id LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(until)
        .bind(batch)
        .fetch_all(tx)
        .await?;
        let json = |e: serde_json::Error| sqlx::Error::Decode(Box::new(e));
        rows.into_iter()
            .map(|row| {
                let slot_minutes: i32 = row.try_get("slot_minutes")?;
                let schedule = Schedule {
                    slot_minutes: u16::try_from(slot_minutes).unwrap_or(30),
                    weekly: serde_json::from_value(row.try_get("weekly")?).map_err(json)?,
                    exceptions: serde_json::from_value(row.try_get("exceptions")?).map_err(json)?,
                };
                Ok((row.try_get("practitioner_id")?, schedule))
            })
            .collect()
    }

    /// Deletes free slots that started before `before`.
    pub async fn delete_free_slots_before(
        &self,
        tx: &mut PgConnection,
        before: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM slots WHERE status = 'free' AND starts_at < $1")
            .bind(before)
            .execute(tx)
            .await?;
        Ok(())
    }

    /// Free slots of a practitioner starting in `[max(from, earliest), to)`, earliest first.
    pub async fn free_slots(
        &self,
        practitioner_id: Uuid,
        from: DateTime<Utc>,
        earliest: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<SlotRow>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {SLOT_COLUMNS} FROM slots
             WHERE practitioner_id = $1 AND status = 'free' AND starts_at >= GREATEST($2, $3) AND starts_at < $4
             ORDER BY starts_at LIMIT $5"
        ))
        .bind(practitioner_id)
        .bind(from)
        .bind(earliest)
        .bind(to)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// Locks a slot for `patient`'s booking until the transaction ends: first the patient's
    /// bookings (so two bookings of one patient at once cannot both pass the daily limit), then
    /// the slot's row, in one round trip. Every booking takes them in this order.
    pub async fn lock_slot_for(
        &self,
        tx: &mut PgConnection,
        id: Uuid,
        patient: &str,
    ) -> Result<Option<SlotRow>, sqlx::Error> {
        // The lock's row is produced (the lock taken) before the slot's row is locked above it.
        sqlx::query_as(&format!(
            "WITH patient AS MATERIALIZED (SELECT pg_advisory_xact_lock($2))
             SELECT {SLOT_COLUMNS} FROM slots, patient WHERE id = $1 FOR UPDATE OF slots"
        ))
        .bind(id)
        .bind(pulse_kit::db::advisory_key(&format!(
            "booking-patient:{patient}"
        )))
        .fetch_optional(tx)
        .await
    }

    /// Sets a slot's status.
    pub async fn set_slot_status(
        &self,
        tx: &mut PgConnection,
        id: Uuid,
        status: SlotStatus,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE slots SET status = $2 WHERE id = $1")
            .bind(id)
            .bind(status)
            .execute(tx)
            .await?;
        Ok(())
    }

    // --------------------------------------------------------------------------- appointments

    /// Inserts an active appointment and marks its slot booked, if the patient has fewer than
    /// `daily_limit` other active appointments on its local day (counted in the same statement,
    /// under the patient's lock from [`Store::lock_slot_for`]); `None` when they have that
    /// many. [`BookingError::SlotTaken`] when the slot already has one: the unique index
    /// decides even when the Redis lock was bypassed.
    pub async fn insert_appointment(
        &self,
        tx: &mut PgConnection,
        new: NewAppointment<'_>,
        daily_limit: u32,
    ) -> Result<Option<AppointmentRow>, BookingError> {
        // One round trip: the count, the slot marked booked and the insert (a unique violation
        // undoes all). The appointment it replaces does not count. `'booked'` is written out so
        // that a generic plan still uses the partial index of active appointments.
        let inserted = sqlx::query_as(&format!(
            "WITH allowed AS (
                 SELECT FROM appointments
                 WHERE patient_subject = $4 AND local_day = $7 AND status = 'booked' AND id IS DISTINCT FROM $9
                 HAVING count(*) < $11
             ),
             taken AS (UPDATE slots SET status = $10 WHERE id = $2 AND EXISTS (SELECT FROM allowed))
             INSERT INTO appointments (id, slot_id, practitioner_id, patient_subject, starts_at, ends_at, local_day,
                                       status, rescheduled_from)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 FROM allowed
             RETURNING {APPOINTMENT_COLUMNS}"
        ))
        .bind(pulse_kit::new_id())
        .bind(new.slot.id)
        .bind(new.slot.practitioner_id)
        .bind(new.patient)
        .bind(new.slot.starts_at)
        .bind(new.slot.ends_at)
        .bind(new.local_day)
        .bind(AppointmentStatus::Booked)
        .bind(new.replacing)
        .bind(SlotStatus::Booked)
        .bind(i64::from(daily_limit))
        .fetch_optional(tx)
        .await;
        match inserted {
            Ok(row) => Ok(row),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                Err(BookingError::SlotTaken)
            }
            Err(err) => Err(err.into()),
        }
    }

    /// One appointment.
    pub async fn appointment<'c>(
        &self,
        db: impl PgExecutor<'c>,
        id: Uuid,
    ) -> Result<Option<AppointmentRow>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {APPOINTMENT_COLUMNS} FROM appointments WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(db)
        .await
    }

    /// Locks an appointment until the transaction ends.
    pub async fn lock_appointment(
        &self,
        tx: &mut PgConnection,
        id: Uuid,
    ) -> Result<Option<AppointmentRow>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {APPOINTMENT_COLUMNS} FROM appointments WHERE id = $1 FOR UPDATE"
        ))
        .bind(id)
        .fetch_optional(tx)
        .await
    }

    /// Marks an appointment cancelled by `by` (a JWT subject).
    pub async fn cancel_appointment(
        &self,
        tx: &mut PgConnection,
        id: Uuid,
        by: &str,
    ) -> Result<AppointmentRow, sqlx::Error> {
        sqlx::query_as(&format!(
            "UPDATE appointments SET status = $3, cancelled_at = now(), cancelled_by = $2
             WHERE id = $1 RETURNING {APPOINTMENT_COLUMNS}"
        ))
        .bind(id)
        .bind(by)
        .bind(AppointmentStatus::Cancelled)
        .fetch_one(tx)
        .await
    }

    /// A patient's appointments, newest first.
    pub async fn patient_appointments(
        &self,
        patient: &str,
        limit: i64,
    ) -> Result<Vec<AppointmentRow>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {APPOINTMENT_COLUMNS} FROM appointments WHERE patient_subject = $1 ORDER BY starts_at DESC LIMIT $2"
        ))
        .bind(patient)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// A practitioner's agenda (by account subject), earliest first from `from`.
    pub async fn agenda(
        &self,
        account_subject: &str,
        from: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<AppointmentRow>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {APPOINTMENT_COLUMNS} FROM appointments
             WHERE practitioner_id IN (SELECT p.id FROM practitioners p WHERE p.account_subject = $1)
               AND starts_at >= $2
             ORDER BY starts_at LIMIT $3"
        ))
        .bind(account_subject)
        .bind(from)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// Appends an appointment event to the outbox, keyed by practitioner so one practitioner's
    /// events keep their order, with the request's `answer` (its idempotency record), if any,
    /// in the same statement.
    pub async fn append_event(
        &self,
        tx: &mut PgConnection,
        event: &AppointmentEvent,
        answer: Option<&AnswerRecord>,
    ) -> Result<(), OutboxError> {
        // One partition per practitioner; commit order per slot. The slot's row lock (and an
        // appointment's, for a cancellation) already serialises the writers of one slot, and
        // the consumers need no order between different slots (search invalidation is
        // order-free, notices are per appointment), so bookings of one practitioner's different
        // slots do not queue behind each other's commits.
        self.outbox
            .append_ordered_with(
                tx,
                &event.practitioner_id.to_string(),
                &event.slot_id.to_string(),
                event.kind.event_type(),
                event,
                answer,
            )
            .await?;
        Ok(())
    }
}

/// `sql` with `$1` the id and `$2`…`$10` the profile's fields, in the tables' column order.
fn with_profile<'q>(
    sql: &'q str,
    id: Uuid,
    profile: &'q PractitionerProfile,
) -> QueryAs<'q, Postgres, Practitioner, PgArguments> {
    sqlx::query_as(sql)
        .bind(id)
        .bind(profile.name())
        .bind(profile.specialty())
        .bind(profile.city())
        .bind(profile.address())
        .bind(profile.position().latitude())
        .bind(profile.position().longitude())
        .bind(profile.languages())
        .bind(profile.consultation_price_minor())
        .bind(profile.account_subject())
}
