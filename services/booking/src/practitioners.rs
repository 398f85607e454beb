//! The practitioner flow: profiles, schedules and the slots they publish, kept bookable up to the
//! country's horizon, and findable near a place through the Redis GEO index.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use pulse_kit::config::CountryConfig;
use pulse_kit::idempotency::{BeforeCommit, NoHook};
use sqlx::PgConnection;
use tracing::field::{Empty, display};
use uuid::Uuid;

use crate::domain::{
    self, Practitioner, PractitionerDraft, PractitionerProfile, Schedule, SlotRange, ValidSchedule,
};
use crate::flow::BookingError;
use crate::search::Search;
use crate::store::{SlotRow, Store};

/// Slot length of the country's usual week, given to a practitioner created without a schedule.
const DEFAULT_SLOT_MINUTES: u16 = 30;
/// Most slots one `GET …/slots` returns.
const SLOT_LIST_LIMIT: i64 = 2000;

/// Why the GEO index could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum GeoIndexError {
    /// Positions could not be read.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Redis could not be written.
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Creating and changing practitioners and their schedules.
///
/// Each write is one function shaped `begin → work → hook → commit`: the caller's
/// [`BeforeCommit`] hook runs in the flow's transaction right before `COMMIT` (where the request's
/// idempotency record goes). The GEO index and the search cache are updated after the commit,
/// best effort: the geo-index job and the cache's TTL repair what they miss.
#[derive(Clone)]
pub struct Practitioners {
    store: Store,
    search: Arc<Search>,
    country: Arc<CountryConfig>,
}

impl Practitioners {
    /// The flow over booking's store and search.
    pub fn new(store: Store, search: Arc<Search>, country: Arc<CountryConfig>) -> Self {
        Self {
            store,
            search,
            country,
        }
    }

    /// Creates a practitioner with its schedule (the country's usual week when it has none) and
    /// its slots.
    #[tracing::instrument(name = "booking.create_practitioner", skip_all, fields(practitioner_id = Empty))]
    pub async fn create(
        &self,
        draft: PractitionerDraft,
        hook: impl BeforeCommit<Practitioner>,
    ) -> Result<Practitioner, BookingError> {
        let id = pulse_kit::new_id();
        tracing::Span::current().record("practitioner_id", display(id));
        let practitioner = self.insert(id, draft, hook).await?;
        self.index(&practitioner).await;
        Ok(practitioner)
    }

    /// Creates a practitioner under a chosen id without touching the GEO index: bulk loaders
    /// call [`Practitioners::sync_geo_index`] once at the end.
    #[tracing::instrument(name = "booking.import_practitioner", skip_all, fields(practitioner_id = %id))]
    pub async fn import(
        &self,
        id: Uuid,
        draft: PractitionerDraft,
    ) -> Result<Practitioner, BookingError> {
        self.insert(id, draft, NoHook).await
    }

    async fn insert(
        &self,
        id: Uuid,
        draft: PractitionerDraft,
        hook: impl BeforeCommit<Practitioner>,
    ) -> Result<Practitioner, BookingError> {
        let schedule = match draft.schedule {
            Some(schedule) => schedule,
            None => ValidSchedule::parse(Schedule::country_default(
                &self.country,
                DEFAULT_SLOT_MINUTES,
            ))?,
        };
        let mut tx = self.store.begin().await?;
        let practitioner = self
            .store
            .insert_practitioner(&mut tx, id, &draft.profile, &self.country.currency)
            .await
            .map_err(account_taken(&draft.profile))?;
        self.apply_schedule(&mut tx, id, &schedule).await?;
        hook.run(&mut tx, &practitioner).await?;
        tx.commit().await?;
        Ok(practitioner)
    }

    /// Replaces a practitioner's profile, and its schedule when the draft has one.
    #[tracing::instrument(name = "booking.update_practitioner", skip_all, fields(practitioner_id = %id))]
    pub async fn update(
        &self,
        id: Uuid,
        draft: PractitionerDraft,
        hook: impl BeforeCommit<Practitioner>,
    ) -> Result<Practitioner, BookingError> {
        let mut tx = self.store.begin().await?;
        let practitioner = self
            .store
            .update_practitioner(&mut tx, id, &draft.profile)
            .await
            .map_err(account_taken(&draft.profile))?
            .ok_or(BookingError::PractitionerNotFound(id))?;
        if let Some(schedule) = &draft.schedule {
            self.apply_schedule(&mut tx, id, schedule).await?;
        }
        hook.run(&mut tx, &practitioner).await?;
        tx.commit().await?;
        self.index(&practitioner).await;
        Ok(practitioner)
    }

    /// Replaces a weekly schedule: future free slots are rebuilt at once, booked ones kept.
    #[tracing::instrument(name = "booking.put_schedule", skip_all, fields(practitioner_id = %id))]
    pub async fn put_schedule(
        &self,
        id: Uuid,
        schedule: ValidSchedule,
        hook: impl BeforeCommit<()>,
    ) -> Result<(), BookingError> {
        let mut tx = self.store.begin().await?;
        if !self.store.lock_practitioner(&mut tx, id).await? {
            return Err(BookingError::PractitionerNotFound(id));
        }
        self.apply_schedule(&mut tx, id, &schedule).await?;
        hook.run(&mut tx, &()).await?;
        tx.commit().await?;
        if let Err(err) = self.search.invalidate().await {
            tracing::debug!(error = %err, "search cache not retired; its TTL will");
        }
        Ok(())
    }

    /// One practitioner.
    #[tracing::instrument(name = "booking.get_practitioner", skip_all, fields(practitioner_id = %id))]
    pub async fn get(&self, id: Uuid) -> Result<Practitioner, BookingError> {
        self.store
            .practitioner(self.store.pool(), id)
            .await?
            .ok_or(BookingError::PractitionerNotFound(id))
    }

    /// Free slots of a practitioner starting in `[from, to)` that can be booked now (after the
    /// minimum notice), earliest first. An unknown practitioner has none.
    #[tracing::instrument(name = "booking.free_slots", skip_all, fields(practitioner_id = %id))]
    pub async fn free_slots(
        &self,
        id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<SlotRow>, BookingError> {
        let earliest = domain::earliest_start(&self.country.booking, Utc::now());
        Ok(self.store.free_slots(id, from, earliest, to, limit).await?)
    }

    /// Free slots of an existing practitioner on the local days of `range`.
    pub async fn free_slots_on(
        &self,
        id: Uuid,
        range: SlotRange,
    ) -> Result<Vec<SlotRow>, BookingError> {
        self.get(id).await?;
        let (from, to) = range.bounds(self.country.tz());
        self.free_slots(id, from, to, SLOT_LIST_LIMIT).await
    }

    /// One round of the slot job: schedules whose slots are stale or do not reach the horizon
    /// yet are rebuilt, up to `batch` of them, safely alongside other replicas (each locks the
    /// schedules it rebuilds and skips those locked). Returns how many were rebuilt.
    #[tracing::instrument(name = "booking.extend_slots", skip(self))]
    pub async fn extend_slots(&self, batch: usize) -> Result<usize, BookingError> {
        let now = Utc::now();
        let until = domain::last_bookable_day(&self.country.booking, self.country.tz(), now);
        let mut tx = self.store.begin().await?;
        let stale = self
            .store
            .lock_stale_schedules(&mut tx, until, i64::try_from(batch).unwrap_or(i64::MAX))
            .await?;
        for (practitioner_id, schedule) in &stale {
            let schedule = ValidSchedule::parse(schedule.clone())?;
            self.regenerate(&mut tx, *practitioner_id, &schedule, now)
                .await?;
        }
        // Past free slots are of no use to anyone.
        self.store
            .delete_free_slots_before(&mut tx, now - chrono::Duration::days(1))
            .await?;
        tx.commit().await?;
        Ok(stale.len())
    }

    /// Loads every practitioner's position into the GEO index (Redis keeps nothing on disk).
    #[tracing::instrument(name = "booking.sync_geo_index", skip_all)]
    pub async fn sync_geo_index(&self) -> Result<usize, GeoIndexError> {
        let positions = self.store.positions().await?;
        self.search.index_positions(&positions).await?;
        Ok(positions.len())
    }

    /// Puts a practitioner into the GEO index, best effort.
    async fn index(&self, practitioner: &Practitioner) {
        let position = (
            practitioner.id,
            practitioner.longitude,
            practitioner.latitude,
        );
        if let Err(err) = self.search.index_positions(&[position]).await {
            tracing::warn!(error = %err, "GEO index not updated; the periodic sync will catch up");
        }
    }

    /// In the flow's transaction: stores `schedule` and rebuilds the future free slots.
    async fn apply_schedule(
        &self,
        tx: &mut PgConnection,
        id: Uuid,
        schedule: &ValidSchedule,
    ) -> Result<(), BookingError> {
        self.store.save_schedule(tx, id, schedule).await?;
        self.regenerate(tx, id, schedule, Utc::now()).await
    }

    /// In the flow's transaction: makes the future free slots those `schedule` publishes up to
    /// the horizon.
    async fn regenerate(
        &self,
        tx: &mut PgConnection,
        id: Uuid,
        schedule: &ValidSchedule,
        now: DateTime<Utc>,
    ) -> Result<(), BookingError> {
        let tz = self.country.tz();
        let until = domain::last_bookable_day(&self.country.booking, tz, now);
        let desired = domain::future_slots(schedule, tz, now, until);
        self.store
            .replace_future_slots(tx, id, &desired, now, until)
            .await?;
        Ok(())
    }
}

/// The error of a write of `profile`: [`BookingError::AccountTaken`] when its account subject
/// is another practitioner's already (the unique constraint), else the database error.
fn account_taken(profile: &PractitionerProfile) -> impl FnOnce(sqlx::Error) -> BookingError + '_ {
    move |err| match &err {
        sqlx::Error::Database(db)
            if db.is_unique_violation()
                && db.constraint() == Some("practitioners_account_subject_key") =>
        {
            BookingError::AccountTaken(profile.account_subject().unwrap_or_default().to_owned())
        }
        _ => BookingError::Db(err),
    }
}
