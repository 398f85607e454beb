//! Booking's background jobs: each one calls the practitioner flow now and then, until shutdown.

use std::time::Duration;

use pulse_kit::component::Job;
use pulse_kit::outbox::sleep_or_cancel;

use crate::practitioners::{GeoIndexError, Practitioners};

/// Schedules rebuilt per round of the slot job.
const SLOT_BATCH: usize = 50;

/// Keeps every schedule's slots reaching the horizon, and rebuilds changed ones; a full batch
/// is followed by another round at once.
pub fn slot_horizon(practitioners: Practitioners) -> Job {
    Job::new("booking-slot-horizon", move |shutdown| async move {
        loop {
            match practitioners.extend_slots(SLOT_BATCH).await {
                // A full batch: there may be more.
                Ok(done) if done == SLOT_BATCH => continue,
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "slot job round failed"),
            }
            sleep_or_cancel(Duration::from_secs(60), &shutdown).await;
            if shutdown.is_cancelled() {
                return;
            }
        }
    })
}

/// Redis keeps nothing on disk: reloads the GEO index at start and now and then.
pub fn geo_index(practitioners: Practitioners) -> Job {
    Job::new("booking-geo-index", move |shutdown| async move {
        loop {
            match practitioners.sync_geo_index().await {
                Ok(_) => {}
                Err(GeoIndexError::Redis(err)) => {
                    tracing::debug!(error = %err, "GEO index sync skipped");
                }
                Err(GeoIndexError::Db(err)) => {
                    tracing::warn!(error = %err, "GEO index sync failed")
                }
            }
            sleep_or_cancel(Duration::from_secs(300), &shutdown).await;
            if shutdown.is_cancelled() {
                return;
            }
        }
    })
}
