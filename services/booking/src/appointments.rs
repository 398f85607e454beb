//! The appointment flow: booking a slot, cancelling and rescheduling, and reading appointments
//! back. HTTP and gRPC call it; it owns the slot lock, the transaction and the order in which the
//! country's rules are checked.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use pulse_kit::config::CountryConfig;
use pulse_kit::db::in_transaction_span;
use pulse_kit::idempotency::{BeforeCommit, IdempotencyKey};
use pulse_kit::metrics::preset;
use pulse_kit::redis::{LockGuard, LuaScript, OwnedLock, RedisHandle, RedisLock};
use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, Postgres, Transaction};
use tracing::field::{Empty, display};
use uuid::Uuid;

use crate::domain::{self, Actor, SlotStatus};
use crate::events::AppointmentEvent;
use crate::flow::BookingError;
use crate::store::{AppointmentRow, NewAppointment, Store};

/// How long a slot's Redis lock lives if its holder never releases it, and how long a booked
/// slot's lock keeps turning the crowd away.
const SLOT_LOCK_TTL: Duration = Duration::from_secs(5);
/// Most appointments one list returns.
const LIST_LIMIT: i64 = 500;

/// Labels of `pulse_booking_appointments_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `booked`, `conflict` (the slot was taken or being taken), `cancelled` or `rescheduled`.
    pub outcome: &'static str,
}

/// Every outcome, so that each series exists (at 0) from the start.
const OUTCOMES: [&str; 4] = ["booked", "conflict", "cancelled", "rescheduled"];

/// Booking, cancelling and rescheduling appointments.
///
/// Each write is one function shaped `lock → begin → work → commit (event, hook, COMMIT) →
/// unlock`:
/// - a short Redis lock on the slot turns a crowd away at once (409 `slot-being-booked`); when
///   Redis is unreachable the flow goes on without it (counted in `booking_slot_lock_bypassed`)
///   and the database alone decides. The lock belongs to the request (its caller and
///   `Idempotency-Key`), not to the process: a retry of the same request takes back the lock
///   its first attempt left behind, even if that attempt's process died holding it
///   ([`RedisLock::try_acquire_as`]);
/// - one PostgreSQL transaction locks the slot (`SELECT … FOR UPDATE`), checks the country's
///   rules (minimum notice, horizon, appointments per patient per day), writes the appointment
///   and its outbox event; it runs in a `db.transaction` span
///   ([`in_transaction_span`]), which the event's `traceparent` names;
/// - the caller's [`BeforeCommit`] hook runs in that transaction right before `COMMIT`: that is
///   where the request's idempotency record goes, so it commits with the booking or not at all.
#[derive(Clone)]
pub struct Appointments {
    store: Store,
    country: Arc<CountryConfig>,
    slot_locks: Arc<SlotLocks>,
    outcomes: Family<OutcomeLabels, Counter>,
}

impl Appointments {
    /// The flow over booking's store; slot locks live in Redis under `keyspace`.
    pub fn new(
        store: Store,
        country: Arc<CountryConfig>,
        redis: RedisHandle,
        keyspace: &str,
    ) -> Self {
        Self {
            store,
            country,
            slot_locks: Arc::new(SlotLocks {
                redis,
                locks: RedisLock::new(),
                mark_taken: LuaScript::new(MARK_TAKEN),
                prefix: crate::redis_prefix(keyspace),
                bypassed: Counter::default(),
            }),
            outcomes: {
                let outcomes = Family::default();
                preset(&outcomes, OUTCOMES.map(|outcome| OutcomeLabels { outcome }));
                outcomes
            },
        }
    }

    /// Appointments booked, cancelled and rescheduled, and bookings refused because the slot
    /// was taken (`pulse_booking_appointments_total{outcome}`).
    pub fn outcomes(&self) -> &Family<OutcomeLabels, Counter> {
        &self.outcomes
    }

    /// Counts `result` as `done` when it succeeded, as `conflict` when the slot was taken.
    fn count<T>(
        &self,
        done: &'static str,
        result: Result<T, BookingError>,
    ) -> Result<T, BookingError> {
        let outcome = match &result {
            Ok(_) => done,
            Err(BookingError::SlotTaken | BookingError::SlotBeingBooked) => "conflict",
            Err(_) => return result,
        };
        self.outcomes
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        result
    }

    /// Bookings decided by the database guard alone because Redis was unreachable.
    pub fn lock_bypassed(&self) -> &Counter {
        &self.slot_locks.bypassed
    }

    /// Books `slot_id` for `patient`. `request` is the request's idempotency key, if any: every
    /// attempt of that request shares the slot's lock (see [`Appointments`]).
    #[tracing::instrument(name = "booking.book", skip_all, fields(%slot_id, appointment_id = Empty))]
    pub async fn book(
        &self,
        slot_id: Uuid,
        patient: &str,
        request: Option<&IdempotencyKey>,
        hook: impl BeforeCommit<AppointmentRow>,
    ) -> Result<AppointmentRow, BookingError> {
        let span = tracing::Span::current();
        let booking = in_transaction_span("booking.book", async {
            let mut tx = self.store.begin().await?;
            let appointment = self.take_slot(&mut tx, slot_id, patient, None).await?;
            span.record("appointment_id", display(appointment.id));
            let event = AppointmentEvent::booked(&appointment);
            self.commit(tx, &event, hook, appointment).await
        });
        let booked = self.slot_locks.around(slot_id, request, booking).await;
        self.count("booked", booked)
    }

    /// Cancels an appointment and frees its slot. Patients may cancel their own until the
    /// country's cut-off; its practitioner and admins until it starts.
    #[tracing::instrument(name = "booking.cancel", skip_all, fields(appointment_id = %id))]
    pub async fn cancel(
        &self,
        id: Uuid,
        actor: &Actor,
        hook: impl BeforeCommit<AppointmentRow>,
    ) -> Result<AppointmentRow, BookingError> {
        let cancelled = in_transaction_span("booking.cancel", async {
            let mut tx = self.store.begin().await?;
            let appointment = self.lock_active(&mut tx, id, actor).await?;
            domain::check_cancellation(
                &self.country.booking,
                Utc::now(),
                appointment.starts_at,
                actor.cancels_for_the_practice(),
            )?;
            let cancelled = self.release_slot(&mut tx, &appointment, actor).await?;
            let event = AppointmentEvent::cancelled(&cancelled, actor.subject());
            self.commit(tx, &event, hook, cancelled).await
        })
        .await;
        if let Ok(row) = &cancelled {
            self.slot_locks.forget(row.slot_id).await;
        }
        self.count("cancelled", cancelled)
    }

    /// Moves a patient's appointment to `new_slot`: the new slot is booked and the old one freed
    /// in one transaction. Moving counts as cancelling, so the cut-off applies. `request` is as
    /// for [`Appointments::book`].
    #[tracing::instrument(
        name = "booking.reschedule",
        skip_all,
        fields(appointment_id = %id, slot_id = %new_slot, new_appointment_id = Empty)
    )]
    pub async fn reschedule(
        &self,
        id: Uuid,
        new_slot: Uuid,
        patient: &str,
        request: Option<&IdempotencyKey>,
        hook: impl BeforeCommit<AppointmentRow>,
    ) -> Result<AppointmentRow, BookingError> {
        let actor = Actor::Patient(patient.to_owned());
        let span = tracing::Span::current();
        let moving = in_transaction_span("booking.reschedule", async {
            let mut tx = self.store.begin().await?;
            let old = self.lock_active(&mut tx, id, &actor).await?;
            domain::check_cancellation(
                &self.country.booking,
                Utc::now(),
                old.starts_at,
                actor.cancels_for_the_practice(),
            )?;
            let new = self
                .take_slot(&mut tx, new_slot, patient, Some(&old))
                .await?;
            span.record("new_appointment_id", display(new.id));
            self.release_slot(&mut tx, &old, &actor).await?;
            let event = AppointmentEvent::rescheduled(&new, &old);
            let moved = self.commit(tx, &event, hook, new).await?;
            Ok((moved, old.slot_id))
        });
        let moved = self.slot_locks.around(new_slot, request, moving).await;
        if let Ok((_, freed)) = &moved {
            self.slot_locks.forget(*freed).await;
        }
        self.count("rescheduled", moved.map(|(row, _)| row))
    }

    /// One appointment (internal callers).
    #[tracing::instrument(name = "booking.get_appointment", skip_all, fields(appointment_id = %id))]
    pub async fn get(&self, id: Uuid) -> Result<AppointmentRow, BookingError> {
        self.store
            .appointment(self.store.pool(), id)
            .await?
            .ok_or(BookingError::AppointmentNotFound(id))
    }

    /// One appointment, if `actor` may see it.
    #[tracing::instrument(name = "booking.get_appointment", skip_all, fields(appointment_id = %id))]
    pub async fn get_for(&self, id: Uuid, actor: &Actor) -> Result<AppointmentRow, BookingError> {
        let mut conn = self.store.pool().acquire().await?;
        let appointment = self
            .store
            .appointment(&mut *conn, id)
            .await?
            .ok_or(BookingError::AppointmentNotFound(id))?;
        if self.may_manage(&mut conn, &appointment, actor).await? {
            Ok(appointment)
        } else {
            Err(BookingError::AppointmentNotFound(id))
        }
    }

    /// A patient's appointments, newest first.
    #[tracing::instrument(name = "booking.patient_appointments", skip_all)]
    pub async fn of_patient(&self, patient: &str) -> Result<Vec<AppointmentRow>, BookingError> {
        Ok(self.store.patient_appointments(patient, LIST_LIMIT).await?)
    }

    /// A practitioner's agenda (by account subject) from yesterday on, earliest first.
    #[tracing::instrument(name = "booking.agenda", skip_all)]
    pub async fn agenda(&self, account_subject: &str) -> Result<Vec<AppointmentRow>, BookingError> {
        let from = Utc::now() - chrono::Duration::days(1);
        Ok(self.store.agenda(account_subject, from, LIST_LIMIT).await?)
    }

    /// Ends a write: appends its outbox event, runs the caller's hook (the idempotency record's
    /// place; a hook that only records an answer is written in the event's statement), then
    /// commits. Returns `outcome`, what the hook saw.
    async fn commit(
        &self,
        mut tx: Transaction<'static, Postgres>,
        event: &AppointmentEvent,
        hook: impl BeforeCommit<AppointmentRow>,
        outcome: AppointmentRow,
    ) -> Result<AppointmentRow, BookingError> {
        match hook.into_record(&outcome) {
            Ok(answer) => {
                self.store
                    .append_event(&mut tx, event, answer.as_ref())
                    .await?;
            }
            Err(hook) => {
                self.store.append_event(&mut tx, event, None).await?;
                hook.run(&mut tx, &outcome).await?;
            }
        }
        tx.commit().await?;
        Ok(outcome)
    }

    /// In the flow's transaction: locks the free slot, checks the rules for `patient` and books
    /// it (replacing `replacing`, which no longer counts towards the daily limit).
    async fn take_slot(
        &self,
        tx: &mut PgConnection,
        slot_id: Uuid,
        patient: &str,
        replacing: Option<&AppointmentRow>,
    ) -> Result<AppointmentRow, BookingError> {
        let slot = self
            .store
            .lock_slot_for(tx, slot_id, patient)
            .await?
            .ok_or(BookingError::SlotNotFound(slot_id))?;
        if slot.status != SlotStatus::Free {
            return Err(BookingError::SlotTaken);
        }
        let rules = &self.country.booking;
        let tz = self.country.tz();
        domain::check_booking(rules, tz, Utc::now(), slot.starts_at)?;
        let day = domain::local_day(slot.starts_at, tz);
        let new = NewAppointment {
            slot: &slot,
            patient,
            local_day: day,
            replacing: replacing.map(|a| a.id),
        };
        // Also marks the slot booked; written only below the daily limit.
        self.store
            .insert_appointment(tx, new, domain::daily_limit(rules))
            .await?
            .ok_or_else(|| domain::daily_limit_reached(rules, day).into())
    }

    /// In the flow's transaction: locks an active appointment `actor` may manage.
    async fn lock_active(
        &self,
        tx: &mut PgConnection,
        id: Uuid,
        actor: &Actor,
    ) -> Result<AppointmentRow, BookingError> {
        let appointment = self
            .store
            .lock_appointment(tx, id)
            .await?
            .ok_or(BookingError::AppointmentNotFound(id))?;
        if !self.may_manage(tx, &appointment, actor).await? {
            return Err(BookingError::AppointmentNotFound(id));
        }
        if appointment.status != domain::AppointmentStatus::Booked {
            return Err(BookingError::NotActive(id));
        }
        Ok(appointment)
    }

    async fn may_manage(
        &self,
        conn: &mut PgConnection,
        appointment: &AppointmentRow,
        actor: &Actor,
    ) -> Result<bool, sqlx::Error> {
        // Only a practitioner's claim needs the practice's account.
        let account = match actor {
            Actor::Practitioner(_) => {
                self.store
                    .practitioner_account(conn, appointment.practitioner_id)
                    .await?
            }
            Actor::Patient(_) | Actor::Admin(_) => None,
        };
        Ok(actor.may_manage(&appointment.patient_subject, account.as_deref()))
    }

    /// In the flow's transaction: cancels `appointment` and frees its slot.
    async fn release_slot(
        &self,
        tx: &mut PgConnection,
        appointment: &AppointmentRow,
        actor: &Actor,
    ) -> Result<AppointmentRow, BookingError> {
        let cancelled = self
            .store
            .cancel_appointment(tx, appointment.id, actor.subject())
            .await?;
        self.store
            .set_slot_status(tx, appointment.slot_id, SlotStatus::Free)
            .await?;
        Ok(cancelled)
    }
}

/// The short Redis locks that make a crowd on one slot fail fast instead of queueing on the
/// slot's row in PostgreSQL.
struct SlotLocks {
    redis: RedisHandle,
    /// Takes (re-entrant for one request) and releases (compare-and-delete).
    locks: RedisLock,
    /// [`MARK_TAKEN`].
    mark_taken: LuaScript,
    prefix: String,
    bypassed: Counter,
}

/// The value a kept lock holds once its request found the slot already taken: not a request's,
/// so nobody's retry is turned away by it before reaching its stored answer.
const TAKEN: &str = "taken";

/// Replaces the lock's value (`KEYS[1]`) with `ARGV[2]` if it is still `ARGV[1]`, keeping its
/// expiry.
const MARK_TAKEN: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  return 1
end
return 0
";

/// A slot lock taken, or passed over because Redis could not be reached.
enum SlotLock {
    Held(ConnectionManager, LockGuard),
    Bypassed,
}

impl SlotLocks {
    /// Runs `work` holding the slot's lock; fails fast with [`BookingError::SlotBeingBooked`]
    /// if someone else holds it, and runs it anyway when Redis cannot be reached. The lock is
    /// `request`'s (see [`lock_owner`]): its retries take it back.
    async fn around<T>(
        &self,
        slot: Uuid,
        request: Option<&IdempotencyKey>,
        work: impl Future<Output = Result<T, BookingError>>,
    ) -> Result<T, BookingError> {
        let lock = self.acquire(slot, request).await?;
        let result = work.await;
        match &result {
            // The slot is booked now (by this request or before it): the lock stays until it
            // expires, so the crowd still racing for the slot is turned away by Redis alone,
            // without a database transaction or an `Idempotency-Key` lookup each (see
            // `http::BOOK_ROUTE`). Freeing the slot lifts it (`forget`).
            Ok(_) => {}
            // Booked by an earlier request, whose retries must still reach their stored answer:
            // the kept lock names no request. Unless this request found the lock already its
            // own: then it is a duplicate of the request that booked, and the lock stays that
            // request's, so its other duplicates still get through to its answer.
            Err(BookingError::SlotTaken) => self.mark_taken(lock).await,
            Err(_) => self.release(lock).await,
        }
        result
    }

    /// Keeps a held lock until it expires, naming no request (see [`TAKEN`]), unless its
    /// request held it already when it took it (a duplicate of the request that booked).
    async fn mark_taken(&self, lock: SlotLock) {
        if let SlotLock::Held(mut conn, guard) = lock
            && !guard.reentered
        {
            let marked: redis::RedisResult<i64> = self
                .mark_taken
                .run(&mut conn, &[&guard.key], &[&guard.token, TAKEN])
                .await;
            if let Err(err) = marked {
                tracing::warn!(error = %err, "could not mark the taken slot's lock; it expires by itself");
            }
        }
    }

    /// Lifts whatever lock a slot has (its appointment was cancelled or moved: the slot is free
    /// again). The database decides anyway; this only stops Redis turning bookers away.
    async fn forget(&self, slot: Uuid) {
        let key = format!("{}:slot-lock:{slot}", self.prefix);
        let lifted: redis::RedisResult<()> = match self.redis.connection().await {
            Ok(mut conn) => redis::cmd("DEL").arg(&key).query_async(&mut conn).await,
            Err(err) => Err(err),
        };
        if let Err(err) = lifted {
            tracing::warn!(error = %err, "could not lift the freed slot's lock; it expires by itself");
        }
    }

    /// Takes the slot's lock for `request` (re-entrant for its retries; a request without a key
    /// gets a lock of its own); [`BookingError::SlotBeingBooked`] if someone else holds it.
    async fn acquire(
        &self,
        slot: Uuid,
        request: Option<&IdempotencyKey>,
    ) -> Result<SlotLock, BookingError> {
        let key = format!("{}:slot-lock:{slot}", self.prefix);
        let mut conn = match self.redis.connection().await {
            Ok(conn) => conn,
            Err(err) => {
                self.bypassed.inc();
                tracing::warn!(error = %err, "Redis unreachable; relying on the database guard");
                return Ok(SlotLock::Bypassed);
            }
        };
        let taken = match request {
            Some(request) => {
                let owner = lock_owner(request);
                self.locks
                    .try_acquire_as(&mut conn, &key, &owner, SLOT_LOCK_TTL)
                    .await
                    .map(|found| match found {
                        OwnedLock::Taken(guard) => Ok(guard),
                        OwnedLock::HeldBy(holder) => Err(holder),
                    })
            }
            None => self
                .locks
                .try_acquire(&mut conn, &key, SLOT_LOCK_TTL)
                .await
                .map(|guard| guard.ok_or_else(String::new)),
        };
        match taken {
            Ok(Ok(guard)) => Ok(SlotLock::Held(conn, guard)),
            // Kept by a request that found the slot taken: so it is, and the answer is kept
            // under the key (the request that booked it replays its own).
            Ok(Err(holder)) if holder == TAKEN => Err(BookingError::SlotTaken),
            Ok(Err(_)) => Err(BookingError::SlotBeingBooked),
            Err(err) => {
                self.bypassed.inc();
                tracing::warn!(error = %err, "Redis slot lock unavailable; relying on the database guard");
                Ok(SlotLock::Bypassed)
            }
        }
    }

    /// Releases a held lock (one that cannot be released expires by itself).
    async fn release(&self, lock: SlotLock) {
        if let SlotLock::Held(mut conn, guard) = lock
            && let Err(err) = self.locks.release(&mut conn, &guard).await
        {
            tracing::warn!(error = %err, "could not release the slot lock; it expires by itself");
        }
    }
}

/// The slot lock's owner for `request`: derived from its caller and `Idempotency-Key`, so every
/// attempt of one request (in any process) owns the same lock.
fn lock_owner(request: &IdempotencyKey) -> String {
    let mut hasher = Sha256::new();
    hasher.update(request.scope().as_bytes());
    hasher.update(b"\n");
    hasher.update(request.key().as_bytes());
    format!("req:{}", hex::encode(hasher.finalize()))
}
