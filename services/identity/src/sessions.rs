//! Sessions: signing in with a code (`POST /v1/auth/token`), refreshing (`POST
//! /v1/auth/refresh`) and signing out (`POST /v1/auth/logout`).
//!
//! Signing in locks the phone's newest code and counts the attempt before comparing (in
//! constant time), so a wrong guess is counted even when it fails and concurrent guesses queue;
//! after [`MAX_CODE_ATTEMPTS`] the code is dead, the right one included. The first success
//! creates the user (role `patient`) and its `UserRegistered` event in the same transaction.
//!
//! A session is a family of refresh tokens: opaque, 256 random bits, stored as SHA-256 only.
//! Each refresh marks the presented token rotated and issues the next one of the family;
//! presenting a rotated token again means it was copied, so the whole family is revoked, the
//! newest token included (OAuth 2.0 Security BCP, refresh token rotation). Concurrent refreshes
//! of one token queue on its row: the first rotates it, the next finds it rotated.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use pulse_kit::outbox::{Outbox, OutboxError};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::crypto::{Subkeys, random_token, token_hash};
use crate::domain::{Invalid, MAX_CODE_ATTEMPTS, Numbering, PATIENT, PhoneError, parse_code};
use crate::events::{SIGNED_IN, SignedIn, USER_REGISTERED, UserRegistered};
use crate::keys::{AccessToken, KeyError, Keyring};
use crate::store::{self, UserRow};

/// Why signing in failed.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// The phone number is not usable here.
    #[error(transparent)]
    Phone(#[from] PhoneError),
    /// The code is not six digits.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The phone has no code that can still be used (none sent, expired, used, or too many
    /// wrong attempts).
    #[error("no valid code for this phone: request a new one")]
    NoValidCode,
    /// The code is wrong; `attempts_left` more tries on this code.
    #[error("the code is wrong ({attempts_left} attempts left)")]
    WrongCode {
        /// Tries left before the code is dead.
        attempts_left: i32,
    },
    /// Signing the access token failed.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The event could not be written.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Why a refresh failed.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// Unknown, expired or revoked.
    #[error("the refresh token is not valid: sign in again")]
    Invalid,
    /// A rotated token was presented again: its family is revoked.
    #[error(
        "the refresh token was already used; every token of its session is revoked: sign in again"
    )]
    Reused,
    /// Signing the access token failed.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// A signed-in session: an access token and the refresh token that renews it.
#[derive(Debug, Clone)]
pub struct Session {
    /// The access token (JWT).
    pub access: AccessToken,
    /// The opaque refresh token (only its hash is stored).
    pub refresh_token: String,
    /// Seconds the refresh token stays valid.
    pub refresh_expires_in: u64,
    /// The user.
    pub user: UserRow,
    /// Whether this sign-in created the user.
    pub new_user: bool,
}

/// Counters of the flow.
#[derive(Debug, Clone, Default)]
pub struct SessionMetrics {
    /// Successful sign-ins.
    pub signed_in: Counter,
    /// Users created.
    pub registered: Counter,
    /// Wrong codes.
    pub wrong_codes: Counter,
    /// Refresh-token families revoked because a rotated token came back.
    pub reuse_detected: Counter,
}

/// The flow (see the module documentation).
#[derive(Clone)]
pub struct Sessions {
    pool: PgPool,
    subkeys: Arc<Subkeys>,
    numbering: Numbering,
    keyring: Arc<Keyring>,
    outbox: Outbox,
    refresh_ttl: Duration,
    language: String,
    metrics: SessionMetrics,
}

#[derive(sqlx::FromRow)]
struct CodeRow {
    id: i64,
    code_hash: Vec<u8>,
    attempts: i32,
    expires_at: DateTime<Utc>,
    consumed_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct RefreshRow {
    id: Uuid,
    family_id: Uuid,
    user_id: Uuid,
    expires_at: DateTime<Utc>,
    rotated_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

/// Settings of [`Sessions`] besides its collaborators.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Refresh-token lifetime.
    pub refresh_ttl: Duration,
    /// Language of new users (the country's locale).
    pub language: String,
}

impl Sessions {
    /// The flow over identity's pool.
    pub fn new(
        pool: PgPool,
        subkeys: Arc<Subkeys>,
        numbering: Numbering,
        keyring: Arc<Keyring>,
        outbox: Outbox,
        config: SessionConfig,
        metrics: SessionMetrics,
    ) -> Self {
        Self {
            pool,
            subkeys,
            numbering,
            keyring,
            outbox,
            refresh_ttl: config.refresh_ttl,
            language: config.language,
            metrics,
        }
    }

    /// Signs in with the code sent to `raw_phone`.
    pub async fn sign_in(&self, raw_phone: &str, raw_code: &str) -> Result<Session, SignInError> {
        let phone = self.numbering.parse(raw_phone)?;
        let code = parse_code("code", raw_code)?;
        let mut tx = self.pool.begin().await?;
        let row: Option<CodeRow> = sqlx::query_as(
            "SELECT id, code_hash, attempts, expires_at, consumed_at FROM otp_codes
             WHERE phone = $1 AND superseded_at IS NULL
             ORDER BY id DESC LIMIT 1
             FOR UPDATE",
        )
        .bind(phone.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let now = store::now(&mut tx).await?;
        let Some(row) = row.filter(|r| {
            r.consumed_at.is_none() && r.expires_at > now && r.attempts < MAX_CODE_ATTEMPTS
        }) else {
            return Err(SignInError::NoValidCode);
        };
        // Counted before the comparison, and committed whatever it says.
        sqlx::query("UPDATE otp_codes SET attempts = attempts + 1 WHERE id = $1")
            .bind(row.id)
            .execute(&mut *tx)
            .await?;
        if !self
            .subkeys
            .phone_code_matches(phone.as_str(), &code, &row.code_hash)
        {
            tx.commit().await?;
            self.metrics.wrong_codes.inc();
            return Err(SignInError::WrongCode {
                attempts_left: MAX_CODE_ATTEMPTS - row.attempts - 1,
            });
        }
        sqlx::query("UPDATE otp_codes SET consumed_at = $2 WHERE id = $1")
            .bind(row.id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let (user, new_user) = match store::user_by_phone(&mut tx, phone.as_str()).await? {
            Some(user) => (user, false),
            None => {
                let roles = vec![PATIENT.to_owned()];
                match store::insert_user(&mut tx, phone.as_str(), &self.language, &roles, now)
                    .await?
                {
                    Some(user) => {
                        let event = UserRegistered {
                            user_id: user.id,
                            roles: user.roles.clone(),
                            language: user.language.clone(),
                            registered_at: now,
                        };
                        self.outbox
                            .append(&mut tx, &user.id.to_string(), USER_REGISTERED, &event)
                            .await?;
                        (user, true)
                    }
                    // Created meanwhile by a concurrent sign-in (with another code).
                    None => (
                        store::user_by_phone(&mut tx, phone.as_str())
                            .await?
                            .ok_or(sqlx::Error::RowNotFound)?,
                        false,
                    ),
                }
            }
        };
        if !new_user {
            let event = SignedIn {
                user_id: user.id,
                signed_in_at: now,
            };
            self.outbox
                .append(&mut tx, &user.id.to_string(), SIGNED_IN, &event)
                .await?;
        }
        let session = self
            .open(&mut tx, user, pulse_kit::new_id(), now, new_user)
            .await?;
        tx.commit().await?;
        self.metrics.signed_in.inc();
        if new_user {
            self.metrics.registered.inc();
        }
        Ok(session)
    }

    /// Issues the next refresh token of `family` and an access token for `user`, on `tx`.
    async fn open(
        &self,
        tx: &mut PgConnection,
        user: UserRow,
        family: Uuid,
        now: DateTime<Utc>,
        new_user: bool,
    ) -> Result<Session, KeyError> {
        let refresh_token = random_token();
        let expires_at = now
            + chrono::Duration::from_std(self.refresh_ttl)
                .unwrap_or_else(|_| chrono::Duration::days(30));
        sqlx::query(
            "INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(pulse_kit::new_id())
        .bind(family)
        .bind(user.id)
        .bind(token_hash(&refresh_token))
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        let access = self.keyring.issue(user.id, &user.roles).await?;
        Ok(Session {
            access,
            refresh_token,
            refresh_expires_in: self.refresh_ttl.as_secs(),
            user,
            new_user,
        })
    }

    /// Exchanges a refresh token for a new session of the same family.
    pub async fn refresh(&self, raw_token: &str) -> Result<Session, RefreshError> {
        let hash = token_hash(raw_token.trim());
        let mut tx = self.pool.begin().await?;
        let row: Option<RefreshRow> = sqlx::query_as(
            "SELECT id, family_id, user_id, expires_at, rotated_at, revoked_at
             FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
        )
        .bind(&hash)
        .fetch_optional(&mut *tx)
        .await?;
        let now = store::now(&mut tx).await?;
        let row = match row {
            None => return Err(RefreshError::Invalid),
            Some(row) if row.revoked_at.is_some() => return Err(RefreshError::Invalid),
            Some(row) if row.rotated_at.is_some() => {
                let revoked = revoke_family(&mut tx, row.family_id, now).await?;
                tx.commit().await?;
                self.metrics.reuse_detected.inc();
                tracing::warn!(family = %row.family_id, user = %row.user_id, revoked,
                    "a rotated refresh token was presented again; its session is revoked");
                return Err(RefreshError::Reused);
            }
            Some(row) if row.expires_at <= now => return Err(RefreshError::Invalid),
            Some(row) => row,
        };
        let Some(user) = store::user(&mut tx, row.user_id).await? else {
            return Err(RefreshError::Invalid);
        };
        sqlx::query("UPDATE refresh_tokens SET rotated_at = $2 WHERE id = $1")
            .bind(row.id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let session = self.open(&mut tx, user, row.family_id, now, false).await?;
        tx.commit().await?;
        Ok(session)
    }

    /// Signs out: revokes every token of the refresh token's family. Unknown tokens are
    /// ignored (RFC 7009: the answer does not tell whether a token existed).
    pub async fn logout(&self, raw_token: &str) -> Result<(), sqlx::Error> {
        let hash = token_hash(raw_token.trim());
        let mut tx = self.pool.begin().await?;
        let family: Option<Uuid> =
            sqlx::query_scalar("SELECT family_id FROM refresh_tokens WHERE token_hash = $1")
                .bind(&hash)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(family) = family {
            let now = store::now(&mut tx).await?;
            revoke_family(&mut tx, family, now).await?;
        }
        tx.commit().await
    }

    /// Deletes refresh tokens a day past their expiry (a rotated one must be remembered until
    /// then, to recognise its reuse).
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        let done =
            sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < now() - interval '1 day'")
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }
}

async fn revoke_family(
    conn: &mut PgConnection,
    family: Uuid,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL",
    )
    .bind(family)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
