//! Sending a sign-in code: the flow behind `POST /v1/auth/otp`.
//!
//! The phone is parsed into E.164 for the deployment's country (a number of another country is
//! refused). Under the phone's advisory lock, so concurrent requests for one phone queue, the
//! send limits are checked — one code per phone per minute, ten per phone per rolling day, and
//! a number per client address per hour — then the code's keyed hash and the send are written,
//! earlier codes of the phone are superseded, and only then is the SMS sent, still inside the
//! transaction: if the provider fails, everything rolls back, so the failed attempt neither
//! counts against the limits nor leaves a code behind. The answer is the same whether the
//! phone belongs to a user or not. The code itself exists only in this function's memory and
//! in the SMS: never in logs, events or the database. With the sandbox SMS provider alone (which
//! writes every text to a local file and runs only in development mode), the answer also
//! carries the code, so that a local web app can show it ([`CodeDisclosure`]); with a real
//! provider it never does, and the answer stays the same for every phone.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use sqlx::{PgConnection, PgPool};

use crate::crypto::{Subkeys, random_code};
use crate::domain::{
    Numbering, OTP_RESEND_SECONDS, OTP_SENDS_PER_PHONE_PER_DAY, OTP_TTL_SECONDS, Phone, PhoneError,
};
use crate::store;
use pulse_kit::sms::{SmsError, SmsSender, SmsSettings};

/// Which send limit refused a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendLimit {
    /// One code per phone per minute.
    PhoneInterval,
    /// Ten codes per phone per rolling day.
    PhoneDaily,
    /// Codes per client address per hour.
    ClientAddress,
}

impl SendLimit {
    /// Its name in problem documents.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PhoneInterval => "phone-interval",
            Self::PhoneDaily => "phone-daily",
            Self::ClientAddress => "client-address",
        }
    }
}

/// Why no code was sent.
#[derive(Debug, thiserror::Error)]
pub enum OtpError {
    /// The phone number is not usable here.
    #[error(transparent)]
    Phone(#[from] PhoneError),
    /// A send limit is reached.
    #[error("too many codes requested ({}); retry in {retry_after} s", limit.as_str())]
    Limited {
        /// Which one.
        limit: SendLimit,
        /// Seconds until a code may be sent.
        retry_after: u64,
    },
    /// The SMS provider did not take the message (nothing was stored).
    #[error(transparent)]
    Sms(#[from] SmsError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Whether the answer to a send carries the code that was sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CodeDisclosure {
    /// Never: the code reaches only the phone (every real provider).
    #[default]
    Never,
    /// The code just sent is returned too: only with the sandbox provider, which writes it to
    /// a local file anyway and which the settings refuse outside development mode.
    Sandbox,
}

impl CodeDisclosure {
    /// [`CodeDisclosure::Sandbox`] for the sandbox provider, [`CodeDisclosure::Never`] for
    /// any other.
    pub fn for_provider(sms: &SmsSettings) -> Self {
        match sms {
            SmsSettings::Sandbox { .. } => Self::Sandbox,
            SmsSettings::Twilio { .. } => Self::Never,
        }
    }
}

/// A code is on its way.
#[derive(Clone, PartialEq, Eq)]
pub struct OtpSent {
    /// Seconds the code stays valid.
    pub expires_in: i64,
    /// Seconds before another code may be requested for the phone.
    pub resend_after: i64,
    /// The code sent, with the sandbox provider only ([`CodeDisclosure::Sandbox`]).
    pub sandbox_code: Option<String>,
}

impl std::fmt::Debug for OtpSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The code stays out of anything that might be logged.
        f.debug_struct("OtpSent")
            .field("expires_in", &self.expires_in)
            .field("resend_after", &self.resend_after)
            .field(
                "sandbox_code",
                &self.sandbox_code.as_ref().map(|_| "<hidden>"),
            )
            .finish()
    }
}

/// Counters of the flow.
#[derive(Debug, Clone, Default)]
pub struct OtpMetrics {
    /// Codes sent.
    pub sent: Counter,
    /// Requests refused by a send limit.
    pub limited: Counter,
    /// Codes the SMS provider did not take.
    pub sms_failed: Counter,
}

/// The flow (see the module documentation).
#[derive(Clone)]
pub struct Otp {
    pool: PgPool,
    subkeys: Arc<Subkeys>,
    numbering: Numbering,
    sms: Arc<dyn SmsSender>,
    sends_per_address_per_hour: i64,
    language: String,
    metrics: OtpMetrics,
    disclosure: CodeDisclosure,
}

/// The SMS text in `language` (the country's), with `code`.
fn message(language: &str, code: &str) -> String {
    let minutes = OTP_TTL_SECONDS / 60;
    match language.split('-').next().unwrap_or_default() {
        "fr" => format!(
            "Votre code Pulse : {code}. Il expire dans {minutes} minutes. Ne le communiquez à personne."
        ),
        "de" => format!(
            "Ihr Pulse-Code: {code}. Er läuft in {minutes} Minuten ab. Geben Sie ihn an niemanden weiter."
        ),
        "es" => format!(
            "Tu código Pulse: {code}. Caduca en {minutes} minutos. No lo compartas con nadie."
        ),
        "it" => format!(
            "Il tuo codice Pulse: {code}. Scade tra {minutes} minuti. Non condividerlo con nessuno."
        ),
        _ => format!(
            "Your Pulse code: {code}. It expires in {minutes} minutes. Do not share it with anyone."
        ),
    }
}

/// Seconds from `now` until `at`, rounded up, at least 1.
fn seconds_until(at: DateTime<Utc>, now: DateTime<Utc>) -> u64 {
    let millis = (at - now).num_milliseconds().max(0);
    u64::try_from(millis).unwrap_or(0).div_ceil(1000).max(1)
}

impl Otp {
    /// The flow over identity's pool; `language` is the country's (the SMS text).
    pub fn new(
        pool: PgPool,
        subkeys: Arc<Subkeys>,
        numbering: Numbering,
        sms: Arc<dyn SmsSender>,
        sends_per_address_per_hour: u32,
        language: &str,
        metrics: OtpMetrics,
    ) -> Self {
        Self {
            pool,
            subkeys,
            numbering,
            sms,
            sends_per_address_per_hour: i64::from(sends_per_address_per_hour),
            language: language.to_owned(),
            metrics,
            disclosure: CodeDisclosure::Never,
        }
    }

    /// The flow, returning the codes it sends when `disclosure` says so (see
    /// [`CodeDisclosure::for_provider`]); [`CodeDisclosure::Never`] unless set.
    #[must_use]
    pub fn with_disclosure(mut self, disclosure: CodeDisclosure) -> Self {
        self.disclosure = disclosure;
        self
    }

    /// Sends a new code to `raw_phone`, for a request from `client_address`.
    pub async fn send(&self, raw_phone: &str, client_address: &str) -> Result<OtpSent, OtpError> {
        let phone = self.numbering.parse(raw_phone)?;
        let code = random_code();
        let code_hash = self.subkeys.phone_code_hash(phone.as_str(), &code);
        let mut tx = self.pool.begin().await?;
        store::lock(&mut tx, &format!("identity-otp-phone:{phone}")).await?;
        let now = store::now(&mut tx).await?;
        if let Err(err) = self
            .check_limits(&mut tx, &phone, client_address, now)
            .await
        {
            if matches!(err, OtpError::Limited { .. }) {
                self.metrics.limited.inc();
            }
            return Err(err);
        }
        sqlx::query(
            "UPDATE otp_codes SET superseded_at = $2
             WHERE phone = $1 AND consumed_at IS NULL AND superseded_at IS NULL",
        )
        .bind(phone.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO otp_codes (phone, code_hash, created_at, expires_at)
             VALUES ($1, $2, $3, $3 + make_interval(secs => $4))",
        )
        .bind(phone.as_str())
        .bind(&code_hash)
        .bind(now)
        .bind(OTP_TTL_SECONDS as f64)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO otp_sends (phone, client_address, sent_at) VALUES ($1, $2, $3)")
            .bind(phone.as_str())
            .bind(client_address)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        // Last, so that a code is only sent once it is stored and counted; a failed send rolls
        // both back (dropping the transaction) and the user is not charged a send.
        if let Err(err) = self
            .sms
            .send(phone.as_str(), &message(&self.language, &code), None)
            .await
        {
            self.metrics.sms_failed.inc();
            // A refusal's text may quote the number: only its kind is logged.
            let why = match &err {
                SmsError::Rejected(_) => "the provider refused the number",
                SmsError::Unavailable(why) => why.as_str(),
            };
            tracing::warn!(
                provider = self.sms.name(),
                error = why,
                "sign-in code not sent"
            );
            return Err(err.into());
        }
        tx.commit().await?;
        self.metrics.sent.inc();
        Ok(OtpSent {
            expires_in: OTP_TTL_SECONDS,
            resend_after: OTP_RESEND_SECONDS,
            sandbox_code: match self.disclosure {
                CodeDisclosure::Sandbox => Some(code),
                CodeDisclosure::Never => None,
            },
        })
    }

    async fn check_limits(
        &self,
        conn: &mut PgConnection,
        phone: &Phone,
        client_address: &str,
        now: DateTime<Utc>,
    ) -> Result<(), OtpError> {
        let day = chrono::Duration::days(1);
        let recent: Vec<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT sent_at FROM otp_sends WHERE phone = $1 AND sent_at > $2
             ORDER BY sent_at DESC LIMIT $3",
        )
        .bind(phone.as_str())
        .bind(now - day)
        .bind(OTP_SENDS_PER_PHONE_PER_DAY)
        .fetch_all(&mut *conn)
        .await?;
        if let Some(&last) = recent.first() {
            let next = last + chrono::Duration::seconds(OTP_RESEND_SECONDS);
            if next > now {
                return Err(OtpError::Limited {
                    limit: SendLimit::PhoneInterval,
                    retry_after: seconds_until(next, now),
                });
            }
        }
        if recent.len() as i64 >= OTP_SENDS_PER_PHONE_PER_DAY
            && let Some(&oldest) = recent.last()
        {
            return Err(OtpError::Limited {
                limit: SendLimit::PhoneDaily,
                retry_after: seconds_until(oldest + day, now),
            });
        }
        let hour = chrono::Duration::hours(1);
        let from_address: Vec<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT sent_at FROM otp_sends WHERE client_address = $1 AND sent_at > $2
             ORDER BY sent_at DESC LIMIT $3",
        )
        .bind(client_address)
        .bind(now - hour)
        .bind(self.sends_per_address_per_hour)
        .fetch_all(&mut *conn)
        .await?;
        if from_address.len() as i64 >= self.sends_per_address_per_hour
            && let Some(&oldest) = from_address.last()
        {
            return Err(OtpError::Limited {
                limit: SendLimit::ClientAddress,
                retry_after: seconds_until(oldest + hour, now),
            });
        }
        Ok(())
    }

    /// Deletes sends and codes older than a day (the limits look back a day at most).
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        let sends =
            sqlx::query("DELETE FROM otp_sends WHERE sent_at < now() - interval '25 hours'")
                .execute(&self.pool)
                .await?;
        let codes =
            sqlx::query("DELETE FROM otp_codes WHERE created_at < now() - interval '25 hours'")
                .execute(&self.pool)
                .await?;
        Ok(sends.rows_affected() + codes.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_the_code_in_the_country_language() {
        assert!(message("fr-FR", "012345").starts_with("Votre code Pulse : 012345."));
        assert!(message("de-DE", "012345").contains("012345"));
        assert!(message("xx", "012345").starts_with("Your Pulse code: 012345."));
    }

    #[test]
    fn retry_after_rounds_up() {
        let now = Utc::now();
        assert_eq!(
            seconds_until(now + chrono::Duration::milliseconds(100), now),
            1
        );
        assert_eq!(
            seconds_until(now + chrono::Duration::milliseconds(59_001), now),
            60
        );
        assert_eq!(seconds_until(now - chrono::Duration::seconds(5), now), 1);
    }
}
