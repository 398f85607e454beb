//! Notifier: notifications and reminders sent for every event.
//!
//! The component owns the PostgreSQL schema `notifier` and plugs into the `pulse` binary through
//! [`pulse_kit::component::Component`].

use pulse_kit::component::Component;
use sqlx::migrate::Migrator;

static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// The notifier component.
#[derive(Debug, Default, Clone, Copy)]
pub struct Notifier;

impl Component for Notifier {
    fn name(&self) -> &'static str {
        "notifier"
    }

    fn description(&self) -> &'static str {
        "Notifier: notifications and reminders sent for every event."
    }

    fn migrations(&self) -> &'static Migrator {
        &MIGRATIONS
    }
}
