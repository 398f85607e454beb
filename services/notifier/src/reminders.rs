//! Day-before reminders: scheduled, moved and cancelled by the appointment events (in the
//! consumer's transaction), and turned into deliveries by a job that works the due ones with
//! `FOR UPDATE SKIP LOCKED`, so any number of replicas send each reminder once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use pulse_kit::config::CountryConfig;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Clock;
use crate::deliveries::{self, Deliveries};
use crate::domain::{self, Notice};

/// Schedules the reminders of appointments booked (appointment, user, start), on `tx`, in one
/// statement. A reminder whose time has passed already is recorded as `too_late` (the booking
/// confirmation has just said it all); an appointment seen before (cancelled first, or booked
/// twice) is left as it is.
pub async fn schedule_all(
    tx: &mut PgConnection,
    country: &CountryConfig,
    reminders: &[(Uuid, &str, DateTime<Utc>)],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if reminders.is_empty() {
        return Ok(());
    }
    let reminder_time = country.notifications.reminder().unwrap_or_default();
    let dues: Vec<DateTime<Utc>> = reminders
        .iter()
        .map(|(_, _, starts_at)| domain::reminder_due(*starts_at, country.tz(), reminder_time))
        .collect();
    let statuses: Vec<&str> = dues
        .iter()
        .map(|due| if *due <= now { "too_late" } else { "scheduled" })
        .collect();
    sqlx::query(
        "INSERT INTO reminders (appointment_id, user_id, starts_at, due_at, status, updated_at)
         SELECT appointment_id, user_id, starts_at, due_at, status, $6
         FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::text[])
              AS r (appointment_id, user_id, starts_at, due_at, status)
         ON CONFLICT (appointment_id) DO NOTHING",
    )
    .bind(reminders.iter().map(|(id, _, _)| *id).collect::<Vec<_>>())
    .bind(
        reminders
            .iter()
            .map(|(_, user, _)| *user)
            .collect::<Vec<_>>(),
    )
    .bind(reminders.iter().map(|(_, _, at)| *at).collect::<Vec<_>>())
    .bind(&dues)
    .bind(&statuses)
    .bind(now)
    .execute(tx)
    .await?;
    Ok(())
}

/// Cancels the reminder of `appointment`, on `tx`; when the cancellation arrives first, a
/// `cancelled` row keeps a late booking event from scheduling it.
pub async fn cancel(
    tx: &mut PgConnection,
    appointment: Uuid,
    user: &str,
    starts_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO reminders (appointment_id, user_id, starts_at, due_at, status, updated_at)
         VALUES ($1, $2, $3, $3, 'cancelled', $4)
         ON CONFLICT (appointment_id) DO UPDATE SET status = 'cancelled', updated_at = $4
         WHERE reminders.status = 'scheduled'",
    )
    .bind(appointment)
    .bind(user)
    .bind(starts_at)
    .bind(now)
    .execute(tx)
    .await?;
    Ok(())
}

/// The reminder job.
#[derive(Clone)]
pub struct Reminders {
    db: PgPool,
    deliveries: Deliveries,
    clock: Clock,
    poll: Duration,
}

#[derive(Debug, sqlx::FromRow)]
struct DueReminder {
    appointment_id: Uuid,
    user_id: String,
    starts_at: DateTime<Utc>,
    due_at: DateTime<Utc>,
}

/// Reminders taken per transaction.
const BATCH: i64 = 100;

impl Reminders {
    /// The job over notifier's schema.
    pub fn new(db: PgPool, deliveries: Deliveries, clock: Clock, poll: Duration) -> Self {
        Self {
            db,
            deliveries,
            clock,
            poll,
        }
    }

    /// Turns the reminders due now into deliveries; how many it sent. An appointment that has
    /// begun already (the job was down past it) gets none.
    pub async fn send_due(&self) -> Result<u64, sqlx::Error> {
        let mut sent = 0;
        loop {
            let now = (self.clock)();
            let mut tx = self.db.begin().await?;
            let due: Vec<DueReminder> = sqlx::query_as(
                "SELECT appointment_id, user_id, starts_at, due_at FROM reminders
                 WHERE status = 'scheduled' AND due_at <= $1
                 ORDER BY due_at
                 LIMIT $2
                 FOR UPDATE SKIP LOCKED",
            )
            .bind(now)
            .bind(BATCH)
            .fetch_all(&mut *tx)
            .await?;
            if due.is_empty() {
                return Ok(sent);
            }
            for reminder in &due {
                let status = if reminder.starts_at <= now {
                    "too_late"
                } else {
                    let notice = Notice::AppointmentReminder {
                        appointment_id: reminder.appointment_id,
                        starts_at: reminder.starts_at,
                    };
                    deliveries::enqueue(
                        &mut tx,
                        reminder.appointment_id,
                        &reminder.user_id,
                        &notice,
                        reminder.due_at,
                        now,
                    )
                    .await?;
                    sent += 1;
                    "sent"
                };
                sqlx::query(
                    "UPDATE reminders SET status = $2, updated_at = $3 WHERE appointment_id = $1",
                )
                .bind(reminder.appointment_id)
                .bind(status)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            self.deliveries.wake();
            if (due.len() as i64) < BATCH {
                return Ok(sent);
            }
        }
    }

    /// Runs [`Reminders::send_due`] every poll interval until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            if let Err(err) = self.send_due().await {
                tracing::warn!(error = %err, "reminder job failed; retrying");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.poll) => {}
            }
        }
    }
}
