//! Booking: practitioners, schedules, slots and appointments (the Doctolib flow).
//!
//! The component owns the PostgreSQL schema `booking` and plugs into the `pulse` binary through
//! [`pulse_kit::component::Component`].

use pulse_kit::component::Component;
use sqlx::migrate::Migrator;

static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// The booking component.
#[derive(Debug, Default, Clone, Copy)]
pub struct Booking;

impl Component for Booking {
    fn name(&self) -> &'static str {
        "booking"
    }

    fn description(&self) -> &'static str {
        "Booking: practitioners, schedules, slots and appointments (the Doctolib flow)."
    }

    fn migrations(&self) -> &'static Migrator {
        &MIGRATIONS
    }
}
