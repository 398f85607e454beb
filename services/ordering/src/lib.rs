//! Ordering: products, stock, orders and payments.
//!
//! The component owns the PostgreSQL schema `ordering` and plugs into the `pulse` binary through
//! [`pulse_kit::component::Component`].

use pulse_kit::component::Component;
use sqlx::migrate::Migrator;

static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// The ordering component.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ordering;

impl Component for Ordering {
    fn name(&self) -> &'static str {
        "ordering"
    }

    fn description(&self) -> &'static str {
        "Ordering: products, stock, orders and payments."
    }

    fn migrations(&self) -> &'static Migrator {
        &MIGRATIONS
    }
}
