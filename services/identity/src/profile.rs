//! A user's own profile: reading it, changing it (`PATCH /v1/me/profile`) and verifying the
//! e-mail address (`POST /v1/me/profile/email/verify`).
//!
//! Every field of a change is parsed before anything is written, so a change is applied whole
//! or not at all. A new e-mail address is stored unverified and a 6-digit code is sent to it
//! (its keyed hash stored, valid 30 minutes, 5 attempts), inside the change's transaction: if
//! the message cannot be sent, nothing changes. Sending the unverified address again sends a
//! new code, at most one a minute.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use pulse_kit::idempotency::BeforeCommit;
use sqlx::PgPool;
use uuid::Uuid;

use crate::crypto::{Subkeys, random_code};
use crate::domain::{
    self, EMAIL_CODE_TTL_SECONDS, EMAIL_RESEND_SECONDS, Invalid, MAX_CODE_ATTEMPTS,
};
use crate::email::{EmailError, EmailPort};
use crate::store::{self, UserRow};

/// Why a profile operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// No user has this id.
    #[error("no user has the id of this token")]
    NotFound,
    /// A field is not usable.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The verification message could not be sent (nothing changed).
    #[error(transparent)]
    Email(#[from] EmailError),
    /// A verification code was sent less than a minute ago.
    #[error("a verification code was sent moments ago; retry in {retry_after} s")]
    EmailLimited {
        /// Seconds until another code may be sent.
        retry_after: u64,
    },
    /// No code awaits verification (none sent, expired, used up, or for another address).
    #[error(
        "no verification code is pending for this e-mail address: send the address again to get a new code"
    )]
    NoPendingCode,
    /// The code is wrong.
    #[error("the code is wrong ({attempts_left} attempts left)")]
    WrongCode {
        /// Tries left before the code is dead.
        attempts_left: i32,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// A change: each field absent (keep), `null` (remove) or a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileChange {
    /// Name.
    pub name: Option<Option<String>>,
    /// Preferred language (cannot be removed).
    pub language: Option<Option<String>>,
    /// Date of birth, `YYYY-MM-DD`.
    pub date_of_birth: Option<Option<String>>,
    /// E-mail address.
    pub email: Option<Option<String>>,
}

/// A change, parsed.
struct Parsed {
    name: Option<Option<String>>,
    language: Option<String>,
    date_of_birth: Option<Option<chrono::NaiveDate>>,
    email: Option<Option<String>>,
}

fn parse_field<T>(
    value: &Option<Option<String>>,
    parse: impl Fn(&str) -> Result<T, Invalid>,
) -> Result<Option<Option<T>>, Invalid> {
    match value {
        None => Ok(None),
        Some(None) => Ok(Some(None)),
        Some(Some(raw)) => parse(raw).map(|v| Some(Some(v))),
    }
}

/// The flow (see the module documentation).
#[derive(Clone)]
pub struct Profiles {
    pool: PgPool,
    subkeys: Arc<Subkeys>,
    email: EmailPort,
    tz: chrono_tz::Tz,
}

#[derive(sqlx::FromRow)]
struct EmailCodeRow {
    id: i64,
    email: String,
    code_hash: Vec<u8>,
    attempts: i32,
    expires_at: DateTime<Utc>,
    consumed_at: Option<DateTime<Utc>>,
}

fn email_message(code: &str) -> (&'static str, String) {
    (
        "Your Pulse verification code",
        format!(
            "Your Pulse verification code is {code}. It expires in {} minutes. If you did not add this address to your Pulse profile, ignore this message.",
            EMAIL_CODE_TTL_SECONDS / 60
        ),
    )
}

impl Profiles {
    /// The flow over identity's pool; `tz` is the country's (for "today").
    pub fn new(pool: PgPool, subkeys: Arc<Subkeys>, email: EmailPort, tz: chrono_tz::Tz) -> Self {
        Self {
            pool,
            subkeys,
            email,
            tz,
        }
    }

    /// The profile of user `id`.
    pub async fn get(&self, id: Uuid) -> Result<UserRow, ProfileError> {
        let mut conn = self.pool.acquire().await?;
        store::user(&mut conn, id)
            .await?
            .ok_or(ProfileError::NotFound)
    }

    fn parse(&self, change: &ProfileChange) -> Result<Parsed, Invalid> {
        let today = Utc::now().with_timezone(&self.tz).date_naive();
        let language = match &change.language {
            None => None,
            Some(None) => {
                return Err(Invalid::new(
                    "language",
                    "the preferred language cannot be removed: send another one, like `fr` or `en-GB`",
                ));
            }
            Some(Some(raw)) => Some(domain::parse_language(raw)?),
        };
        Ok(Parsed {
            name: parse_field(&change.name, domain::parse_name)?,
            language,
            date_of_birth: parse_field(&change.date_of_birth, |raw| {
                domain::parse_date_of_birth(raw, today)
            })?,
            email: parse_field(&change.email, domain::parse_email)?,
        })
    }

    /// Applies `change` to user `id`; `hook` runs in the transaction before it commits (the
    /// request's idempotency record).
    pub async fn update(
        &self,
        id: Uuid,
        change: &ProfileChange,
        hook: impl BeforeCommit<UserRow>,
    ) -> Result<UserRow, ProfileError> {
        let parsed = self.parse(change)?;
        let mut tx = self.pool.begin().await?;
        let user = store::user_for_update(&mut tx, id)
            .await?
            .ok_or(ProfileError::NotFound)?;
        let mut next = user.clone();
        if let Some(name) = parsed.name {
            next.name = name;
        }
        if let Some(language) = parsed.language {
            next.language = language;
        }
        if let Some(date) = parsed.date_of_birth {
            next.date_of_birth = date;
        }
        let mut verify = None;
        match parsed.email {
            None => {}
            Some(None) => {
                next.email = None;
                next.email_verified_at = None;
            }
            Some(Some(email)) => {
                if user.email.as_deref() != Some(email.as_str()) {
                    next.email = Some(email.clone());
                    next.email_verified_at = None;
                    verify = Some(email);
                } else if user.email_verified_at.is_none() {
                    // The same unverified address again: a new code.
                    verify = Some(email);
                }
            }
        }
        if verify.is_some() && !self.email.available() {
            return Err(ProfileError::Email(EmailError(
                crate::email::NO_MAIL_SERVER.into(),
            )));
        }
        let now = store::now(&mut tx).await?;
        let stored = if next == user {
            user
        } else {
            store::update_profile(&mut tx, &next, now).await?
        };
        if let Some(email) = verify {
            self.send_code(&mut tx, id, &email, now).await?;
        }
        hook.run(&mut tx, &stored).await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// Stores a new code for `email` (superseding earlier ones) and sends it; the caller's
    /// transaction rolls both back if sending fails.
    async fn send_code(
        &self,
        tx: &mut sqlx::PgConnection,
        user: Uuid,
        email: &str,
        now: DateTime<Utc>,
    ) -> Result<(), ProfileError> {
        let last: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT created_at FROM email_verification_codes WHERE user_id = $1
             ORDER BY id DESC LIMIT 1",
        )
        .bind(user)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(last) = last {
            let next = last + chrono::Duration::seconds(EMAIL_RESEND_SECONDS);
            if next > now {
                let millis = (next - now).num_milliseconds().max(0);
                return Err(ProfileError::EmailLimited {
                    retry_after: u64::try_from(millis).unwrap_or(0).div_ceil(1000).max(1),
                });
            }
        }
        let code = random_code();
        sqlx::query(
            "UPDATE email_verification_codes SET superseded_at = $2
             WHERE user_id = $1 AND consumed_at IS NULL AND superseded_at IS NULL",
        )
        .bind(user)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO email_verification_codes (user_id, email, code_hash, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $4 + make_interval(secs => $5))",
        )
        .bind(user)
        .bind(email)
        .bind(self.subkeys.email_code_hash(user, email, &code))
        .bind(now)
        .bind(EMAIL_CODE_TTL_SECONDS as f64)
        .execute(&mut *tx)
        .await?;
        let (subject, body) = email_message(&code);
        self.email.send(email, subject, &body).await?;
        Ok(())
    }

    /// Verifies the pending e-mail address of user `id` with `raw_code`; `hook` runs before
    /// the commit. An address already verified answers the profile as it is.
    pub async fn verify_email(
        &self,
        id: Uuid,
        raw_code: &str,
        hook: impl BeforeCommit<UserRow>,
    ) -> Result<UserRow, ProfileError> {
        let code = domain::parse_code("code", raw_code)?;
        let mut tx = self.pool.begin().await?;
        let user = store::user_for_update(&mut tx, id)
            .await?
            .ok_or(ProfileError::NotFound)?;
        let Some(email) = user.email.clone() else {
            return Err(ProfileError::NoPendingCode);
        };
        if user.email_verified_at.is_some() {
            hook.run(&mut tx, &user).await?;
            tx.commit().await?;
            return Ok(user);
        }
        let row: Option<EmailCodeRow> = sqlx::query_as(
            "SELECT id, email, code_hash, attempts, expires_at, consumed_at
             FROM email_verification_codes
             WHERE user_id = $1 AND superseded_at IS NULL
             ORDER BY id DESC LIMIT 1
             FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let now = store::now(&mut tx).await?;
        let Some(row) = row.filter(|r| {
            r.email == email
                && r.consumed_at.is_none()
                && r.expires_at > now
                && r.attempts < MAX_CODE_ATTEMPTS
        }) else {
            return Err(ProfileError::NoPendingCode);
        };
        sqlx::query("UPDATE email_verification_codes SET attempts = attempts + 1 WHERE id = $1")
            .bind(row.id)
            .execute(&mut *tx)
            .await?;
        if !self
            .subkeys
            .email_code_matches(id, &email, &code, &row.code_hash)
        {
            tx.commit().await?;
            return Err(ProfileError::WrongCode {
                attempts_left: MAX_CODE_ATTEMPTS - row.attempts - 1,
            });
        }
        sqlx::query("UPDATE email_verification_codes SET consumed_at = $2 WHERE id = $1")
            .bind(row.id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let verified = UserRow {
            email_verified_at: Some(now),
            ..user
        };
        let stored = store::update_profile(&mut tx, &verified, now).await?;
        hook.run(&mut tx, &stored).await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// Deletes e-mail codes older than two days.
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "DELETE FROM email_verification_codes WHERE created_at < now() - interval '2 days'",
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
