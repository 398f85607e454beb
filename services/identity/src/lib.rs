//! Identity: users, one-time passwords and the signing keys of access tokens.
//!
//! The component owns the PostgreSQL schema `identity` and plugs into the `pulse` binary through
//! [`pulse_kit::component::Component`]. It has its schema and no endpoints yet.

use pulse_kit::component::{BuildError, Component, ComponentContext, Parts};
use sqlx::migrate::Migrator;

/// The component's migrations.
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// The identity component.
#[derive(Debug, Default, Clone, Copy)]
pub struct Identity;

impl Component for Identity {
    fn name(&self) -> &'static str {
        "identity"
    }

    fn description(&self) -> &'static str {
        "Identity: users, one-time passwords and the signing keys of access tokens."
    }

    fn migrations(&self) -> &'static Migrator {
        &MIGRATIONS
    }

    fn build(&self, _ctx: &ComponentContext) -> Result<Parts, BuildError> {
        Ok(Parts::default())
    }
}
