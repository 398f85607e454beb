//! Notifier: notifications and reminders sent for every event.
//!
//! The component owns the PostgreSQL schema `notifier` and plugs into the `pulse` binary through
//! [`pulse_kit::component::Component`]. Its consumers ([`events`]) turn booking's, ordering's,
//! marketing's and identity's events into deliveries — one per recipient and channel — and
//! day-before [`reminders`]; [`deliveries`] sends them by e-mail (SMTP), SMS (the kit's SMS
//! port) and in-app ([`inbox`], with a live stream fanned out through PostgreSQL `NOTIFY`),
//! honouring [`preferences`]. Recipients' addresses and languages come from identity's
//! `Directory` ([`directory`]), never from events. What messages say is in [`content`]
//! (template files); the rules are in [`domain`].

pub mod channels;
pub mod content;
pub mod deliveries;
pub mod directory;
pub mod domain;
pub mod events;
pub mod http;
pub mod inbox;
pub mod preferences;
pub mod reminders;
pub mod settings;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pulse_kit::component::{BuildError, Component, ComponentContext, Job, Parts};
use pulse_kit::config::CountryConfig;
use pulse_kit::server::ServerSettings;
use pulse_kit::settings::{Env, SettingError};
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;

use crate::content::Templates;
use crate::deliveries::{Deliveries, DeliveryMetrics, DeliveryParts, RetryPolicy};
use crate::directory::Directory;
use crate::domain::Channel;
use crate::inbox::{Hub, Inbox};
use crate::preferences::PreferenceStore;
use crate::reminders::Reminders;
use crate::settings::NotifierSettings;
use pulse_kit::email::Mailer;

/// The component's migrations.
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// The time, injected so tests can move it (reminders across a daylight-saving change).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

/// How often the dead-letter gauge is recounted.
const GAUGE_INTERVAL: Duration = Duration::from_secs(15);

/// The notifier component.
#[derive(Clone)]
pub struct Notifier {
    settings: Arc<NotifierSettings>,
    clock: Clock,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// Notifier with these settings, on the wall clock.
    pub fn new(settings: NotifierSettings) -> Self {
        Self {
            settings: Arc::new(settings),
            clock: system_clock(),
        }
    }

    /// The same notifier on another clock (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Notifier configured from `env` for the server `server`; the error names the variable.
    pub fn read(env: &Env, server: &ServerSettings) -> Result<Self, SettingError> {
        Ok(Self::new(NotifierSettings::read(env, server)?))
    }

    /// The settings.
    pub fn settings(&self) -> &NotifierSettings {
        &self.settings
    }
}

fn part_error(message: String) -> BuildError {
    BuildError::Part {
        component: "notifier",
        message,
    }
}

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

    fn openapi(&self, _country: &CountryConfig) -> Option<utoipa::openapi::OpenApi> {
        use utoipa::OpenApi;
        Some(http::NotifierApi::openapi())
    }

    /// Builds the templates, the providers and the directory client, and over them the
    /// consumers, one delivery worker per channel, the reminder job, the `LISTEN` hub and the
    /// HTTP routes.
    fn build(&self, ctx: &ComponentContext) -> Result<Parts, BuildError> {
        let s = &self.settings;
        let templates = Templates::load().map_err(|err| part_error(err.to_string()))?;
        let directory = Directory::new(
            &s.identity_grpc_url,
            s.directory_timeout,
            s.directory_cache_ttl,
            s.breaker,
        )
        .map_err(|err| {
            BuildError::Setting(SettingError::new(
                &settings::IDENTITY_GRPC_URL,
                format!("not a usable gRPC endpoint: {err}"),
            ))
        })?;
        let mailer = match &s.smtp_url {
            Some(url) => Some(
                Mailer::new(url, s.email_from.clone(), s.provider_timeout)
                    .map_err(|why| SettingError::new(&settings::SMTP_URL, why))?,
            ),
            None => {
                tracing::warn!(
                    "{} is not set: e-mail notifications are not sent",
                    settings::SMTP_URL.var
                );
                None
            }
        };
        let sms = match &s.sms {
            Some(sms) => Some(sms.sender(s.provider_timeout, &settings::SMS_BASE_URL)?),
            None => None,
        };
        let metrics = DeliveryMetrics::default();
        metrics.register(&ctx.metrics);
        let deliveries = Deliveries::new(DeliveryParts {
            db: ctx.db.clone(),
            country: Arc::clone(&ctx.country),
            templates,
            directory,
            mailer,
            sms,
            breaker: s.breaker,
            retry: RetryPolicy {
                max_attempts: s.max_attempts,
                base: s.retry_base,
                max: s.retry_max,
            },
            poll: s.poll_interval,
            clock: Arc::clone(&self.clock),
            metrics,
        });
        let hub = Arc::new(Hub::default());
        let inbox = Inbox::new(ctx.db.clone(), Arc::clone(&hub));
        let draining = CancellationToken::new();
        let routes = http::routes(http::AppState {
            inbox,
            preferences: PreferenceStore::new(ctx.db.clone()),
            deliveries: deliveries.clone(),
            draining: draining.clone(),
        });
        let reminders = Reminders::new(
            ctx.db.clone(),
            deliveries.clone(),
            Arc::clone(&self.clock),
            s.poll_interval,
        );
        let mut jobs = Vec::new();
        for channel in Channel::ALL {
            let worker = deliveries.clone();
            jobs.push(Job::new(
                &format!("notifier-{}", channel.as_str()),
                move |shutdown| worker.run_worker(channel, shutdown),
            ));
        }
        jobs.push(Job::new("notifier-reminders", move |shutdown| {
            reminders.run(shutdown)
        }));
        let db = ctx.db.clone();
        let listening = deliveries.clone();
        jobs.push(Job::new("notifier-listen", move |shutdown| {
            let hub = Hub::clone(&hub);
            async move {
                // Streams end (with a retry hint) as the replica stops, so the HTTP server's
                // graceful shutdown does not wait on them.
                let stop_streams = async {
                    shutdown.cancelled().await;
                    draining.cancel();
                };
                tokio::join!(stop_streams, hub.run(db, listening, shutdown.clone()));
            }
        }));
        let gauges = deliveries;
        jobs.push(Job::new(
            "notifier-dead-letter-gauge",
            move |shutdown| async move {
                loop {
                    if let Err(err) = gauges.refresh_dead_letter_gauge().await {
                        tracing::debug!(error = %err, "cannot count dead letters");
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(GAUGE_INTERVAL) => {}
                    }
                }
            },
        ));
        Ok(Parts {
            routes,
            consumers: events::consumers(
                &ctx.keyspace,
                Arc::clone(&ctx.country),
                Arc::clone(&self.clock),
            ),
            jobs,
            ..Parts::default()
        })
    }
}
