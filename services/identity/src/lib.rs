//! Identity: users, one-time passwords and the signing keys of access tokens.
//!
//! The component owns the PostgreSQL schema `identity` and plugs into the `pulse` binary through
//! [`pulse_kit::component::Component`]. A patient signs in with a phone number and a code sent
//! by SMS; identity issues the access tokens (JWTs signed with its own keys, published as a
//! JWKS) every component verifies, and refresh tokens that rotate on each use.
//!
//! Rules live in [`domain`] (no I/O). Each flow is one service owning its transaction:
//! [`otp`] sends codes, [`sessions`] signs in, refreshes and signs out, [`profile`] reads and
//! changes the caller's profile, [`roles`] grants roles, [`keys`] keeps the signing keys. The
//! ports are the kit's SMS port ([`pulse_kit::sms`]: Twilio-compatible HTTP, or a sandbox file) and [`email`]; [`crypto`] holds
//! the keyed hashes and sealing; [`store`] the shared queries; [`http`] and [`grpc`] are the
//! APIs. Settings are read once, before the component exists ([`settings`], [`Identity::read`]).

pub mod crypto;
pub mod domain;
pub mod email;
pub mod events;
pub mod grpc;
pub mod http;
pub mod keys;
pub mod otp;
pub mod profile;
pub mod roles;
pub mod sessions;
pub mod settings;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use pulse_kit::component::{BuildError, Component, ComponentContext, GrpcServices, Job, Parts};
use pulse_kit::config::CountryConfig;
use pulse_kit::server::ServerSettings;
use pulse_kit::settings::{Env, SettingError};
use pulse_proto::identity::v1::directory_server::DirectoryServer;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;

use crate::crypto::Subkeys;
use crate::domain::Numbering;
use crate::email::EmailPort;
use crate::keys::{Keyring, KeyringConfig};
use crate::otp::{CodeDisclosure, Otp, OtpMetrics};
use crate::profile::Profiles;
use crate::roles::Roles;
use crate::sessions::{SessionConfig, SessionMetrics, Sessions};
use crate::settings::IdentitySettings;

/// The component's migrations (`pulse migrate` needs them without identity's settings).
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// How often expired codes, sends and refresh tokens are deleted.
const CLEANUP_INTERVAL: Duration = Duration::from_secs(3600);

/// The identity component.
#[derive(Debug, Clone)]
pub struct Identity {
    settings: Arc<IdentitySettings>,
}

impl Identity {
    /// Identity with these settings.
    pub fn new(settings: IdentitySettings) -> Self {
        Self {
            settings: Arc::new(settings),
        }
    }

    /// Identity configured from `env` for the server `server` (see
    /// [`IdentitySettings::read`]); the error names the variable at fault.
    pub fn read(env: &Env, server: &ServerSettings) -> Result<Self, SettingError> {
        Ok(Self::new(IdentitySettings::read(env, server)?))
    }

    /// The settings.
    pub fn settings(&self) -> &IdentitySettings {
        &self.settings
    }
}

/// The keyring of `settings` over `pool` (identity's schema), for `country`: what the server
/// builds, and what `pulse keys rotate` uses.
pub fn keyring(pool: PgPool, settings: &IdentitySettings, country: &str) -> Keyring {
    Keyring::new(
        pool,
        Arc::new(Subkeys::derive(&settings.keyring_secret)),
        KeyringConfig {
            algorithm: settings.signing_algorithm,
            rotation: settings.key_rotation,
            access_ttl: settings.access_token_ttl,
            issuer: settings.issuer.clone(),
            country: country.to_owned(),
        },
    )
}

fn register_metrics(ctx: &ComponentContext) -> (OtpMetrics, SessionMetrics) {
    let otp = OtpMetrics::default();
    let sessions = SessionMetrics::default();
    for (name, help, counter) in [
        ("identity_otp_sent", "Sign-in codes sent", &otp.sent),
        (
            "identity_otp_limited",
            "Sign-in code requests refused by a send limit",
            &otp.limited,
        ),
        (
            "identity_otp_sms_failed",
            "Sign-in codes the SMS provider did not take",
            &otp.sms_failed,
        ),
        (
            "identity_sign_ins",
            "Successful sign-ins",
            &sessions.signed_in,
        ),
        (
            "identity_users_registered",
            "Users created by their first sign-in",
            &sessions.registered,
        ),
        (
            "identity_wrong_codes",
            "Sign-in attempts with a wrong code",
            &sessions.wrong_codes,
        ),
        (
            "identity_refresh_reuse_detected",
            "Sessions revoked because a rotated refresh token was presented again",
            &sessions.reuse_detected,
        ),
    ] {
        ctx.metrics.register(name, help, counter.clone());
    }
    (otp, sessions)
}

/// Deletes what no rule looks at any more: old sends and codes, expired refresh tokens.
async fn cleanup(otp: Otp, sessions: Sessions, profiles: Profiles, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(CLEANUP_INTERVAL) => {}
            () = shutdown.cancelled() => return,
        }
        let pruned = async {
            Ok::<u64, sqlx::Error>(
                otp.prune().await? + sessions.prune().await? + profiles.prune().await?,
            )
        };
        match pruned.await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(rows, "deleted expired codes, sends and refresh tokens"),
            Err(err) => tracing::warn!(error = %err, "identity cleanup failed; retrying later"),
        }
    }
}

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

    /// The document, with the phone numbers of `country` stated by its numbering plan.
    fn openapi(&self, country: &CountryConfig) -> Option<utoipa::openapi::OpenApi> {
        use utoipa::OpenApi;
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::Schema;
        let mut doc = http::IdentityApi::openapi();
        // Without a plan the build fails; the document keeps the plan-free schema.
        if let (Some(numbering), Some(components)) =
            (Numbering::of(&country.code), doc.components.as_mut())
        {
            for body in ["OtpRequest", "TokenRequest"] {
                if let Some(RefOr::T(Schema::Object(body))) = components.schemas.get_mut(body) {
                    body.properties.insert(
                        "phone".to_owned(),
                        RefOr::T(Schema::Object(http::phone_schema(&numbering))),
                    );
                }
            }
        }
        Some(doc)
    }

    /// Builds the keyring, the SMS and e-mail ports and the flows over them: the HTTP routes,
    /// the `Directory` gRPC service, the key rotation job and the cleanup job.
    fn build(&self, ctx: &ComponentContext) -> Result<Parts, BuildError> {
        let s = &self.settings;
        let numbering = Numbering::of(&ctx.country.code).ok_or_else(|| BuildError::Part {
            component: "identity",
            message: format!(
                "country {} (PULSE_COUNTRY__CODE) has no phone numbering plan in identity, so its numbers cannot be checked; add it to identity's domain::PLANS",
                ctx.country.code
            ),
        })?;
        let (otp_metrics, session_metrics) = register_metrics(ctx);
        let subkeys = Arc::new(Subkeys::derive(&s.keyring_secret));
        let keyring = Arc::new(keyring(ctx.db.clone(), s, &ctx.country.code));
        let sms = s.sms.sender(s.sms_timeout, &settings::SMS_BASE_URL)?;
        let otp = Otp::new(
            ctx.db.clone(),
            Arc::clone(&subkeys),
            numbering,
            sms,
            s.otp_sends_per_address_per_hour,
            &ctx.country.locale,
            otp_metrics,
        )
        // The sandbox (development mode only) hands the code back for a local web app to show.
        .with_disclosure(CodeDisclosure::for_provider(&s.sms));
        let sessions = Sessions::new(
            ctx.db.clone(),
            Arc::clone(&subkeys),
            numbering,
            Arc::clone(&keyring),
            ctx.outbox.clone(),
            SessionConfig {
                refresh_ttl: s.refresh_token_ttl,
                language: ctx.country.locale.clone(),
            },
            session_metrics,
        );
        let profiles = Profiles::new(
            ctx.db.clone(),
            subkeys,
            EmailPort::from_settings(&s.email, s.sms_timeout)?,
            ctx.country.tz(),
        );
        let roles = Roles::new(ctx.db.clone(), ctx.outbox.clone());
        let mut grpc = GrpcServices::default();
        grpc.add(DirectoryServer::new(grpc::DirectoryService::new(
            ctx.db.clone(),
        )));
        let routes = http::routes(http::AppState {
            otp: otp.clone(),
            sessions: sessions.clone(),
            profiles: profiles.clone(),
            roles,
            keyring: Arc::clone(&keyring),
            trust_forwarded_for: s.trust_forwarded_for,
        });
        let interval = s.key_check_interval;
        Ok(Parts {
            routes,
            grpc,
            jobs: vec![
                Job::new("identity-key-rotation", move |shutdown| {
                    keys::run_rotation(keyring, interval, shutdown)
                }),
                Job::new("identity-cleanup", move |shutdown| {
                    cleanup(otp, sessions, profiles, shutdown)
                }),
            ],
            ..Parts::default()
        })
    }
}
