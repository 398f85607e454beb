//! Notifier: notifications and reminders sent for every event.
//!
//! The component owns the PostgreSQL schema `notifier` and plugs into the `pulse` binary through
//! [`pulse_kit::component::Component`].

pub mod content;
pub mod domain;

use pulse_kit::component::{BuildError, Component, ComponentContext, Parts};
use sqlx::migrate::Migrator;

/// The component's migrations.
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

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

    fn build(&self, _ctx: &ComponentContext) -> Result<Parts, BuildError> {
        Ok(Parts::default())
    }
}
