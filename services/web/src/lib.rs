//! Web: the patient and buyer web app of a country (find a practitioner, book, manage
//! appointments, live notifications, flash sales, the wallet), served by the `pulse` binary
//! itself as the `web` target.
//!
//! The app is plain JavaScript modules and CSS (no build step): `build.rs` compresses them once
//! and embeds both forms, so a replica serves them from memory and needs no database. The page
//! (`GET /`) carries the country's settings (locale, time zone, currency, booking rules) in a
//! JSON block, so the app makes no request before it can draw; it talks to the other
//! components' public APIs on the same origin, through the country's Ingress.

mod page;

use std::sync::Arc;

use axum::Router;
use axum::http::Method;
use axum::routing::get;
use pulse_kit::component::{BuildError, Component, ComponentContext, Parts};
use pulse_kit::server::ServerSettings;
use pulse_kit::settings::{Env, SettingError};
use sqlx::migrate::Migrator;

pub use page::{ASSETS_ROUTE, Asset, FILES, Page, VERSION};

/// The web app has no tables: no migrations.
pub static MIGRATIONS: Migrator = Migrator::DEFAULT;

/// The web component.
#[derive(Debug, Clone)]
pub struct Web {
    development_mode: bool,
}

impl Web {
    /// Reads the web component's settings: only the server's development switch, which lets
    /// the app show the sandbox sign-in code and payment hints.
    pub fn read(_env: &Env, server: &ServerSettings) -> Result<Self, SettingError> {
        Ok(Self {
            development_mode: server.development_mode,
        })
    }
}

impl Component for Web {
    fn name(&self) -> &'static str {
        "web"
    }

    fn description(&self) -> &'static str {
        "Web: the patient and buyer web app (embedded files, served at /)."
    }

    fn migrations(&self) -> &'static Migrator {
        &MIGRATIONS
    }

    fn uses_database(&self) -> bool {
        false
    }

    fn build(&self, ctx: &ComponentContext) -> Result<Parts, BuildError> {
        let page = Arc::new(
            Page::new(&ctx.country, self.development_mode).map_err(|err| BuildError::Part {
                component: "web",
                message: format!("the page's settings cannot be written: {err}"),
            })?,
        );
        let routes = Router::new()
            .route("/", get(page::index))
            .route(ASSETS_ROUTE, get(page::asset))
            .with_state(page);
        Ok(Parts {
            routes,
            not_rate_limited: vec![(Method::GET, "/"), (Method::GET, ASSETS_ROUTE)],
            ..Parts::default()
        })
    }
}
