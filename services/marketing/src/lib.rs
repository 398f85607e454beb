//! Marketing: seckill campaigns, vouchers and wallets.
//!
//! The component owns the PostgreSQL schema `marketing` and plugs into the `pulse` binary through
//! [`pulse_kit::component::Component`].

use pulse_kit::component::Component;
use sqlx::migrate::Migrator;

static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// The marketing component.
#[derive(Debug, Default, Clone, Copy)]
pub struct Marketing;

impl Component for Marketing {
    fn name(&self) -> &'static str {
        "marketing"
    }

    fn description(&self) -> &'static str {
        "Marketing: seckill campaigns, vouchers and wallets."
    }

    fn migrations(&self) -> &'static Migrator {
        &MIGRATIONS
    }
}
