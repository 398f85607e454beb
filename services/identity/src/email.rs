//! The e-mail port: how e-mail verification codes reach their address. An SMTP server (the
//! kit's [`Mailer`], the one notifier sends with) when one is configured; else, in development
//! mode, the sandbox, which appends each message to a JSON-lines file
//! (`{"to":…,"subject":…,"body":…,"at":…}`); else [`EmailPort::Unavailable`] refuses, and
//! changing an e-mail address answers 503.

use std::path::PathBuf;

use std::time::Duration;

use chrono::Utc;
use pulse_kit::email::{Mail, Mailer};
use serde::Serialize;

use crate::settings::EmailSettings;
use pulse_kit::sms::sandbox::JsonLines;

/// Why nothing can be sent on a deployment without a mail server.
pub const NO_MAIL_SERVER: &str = "this deployment has no mail server (PULSE_IDENTITY_SMTP_URL, or spec.email of its CountryTenant), so e-mail addresses cannot be verified";

/// Why a message was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("e-mail cannot be sent: {0}")]
pub struct EmailError(pub String);

/// One e-mail.
#[derive(Debug, Serialize)]
struct Message<'a> {
    to: &'a str,
    subject: &'a str,
    body: &'a str,
    at: chrono::DateTime<Utc>,
}

/// Where e-mails go.
#[derive(Debug, Clone)]
pub enum EmailPort {
    /// Appended to a JSON-lines file.
    Sandbox(JsonLines),
    /// Sent through an SMTP server.
    Smtp(Mailer),
    /// No mail provider on this deployment.
    Unavailable,
}

impl EmailPort {
    /// The port `settings` choose; each SMTP call must end within `timeout`. An error names
    /// the SMTP setting.
    pub fn from_settings(
        settings: &EmailSettings,
        timeout: Duration,
    ) -> Result<Self, pulse_kit::settings::SettingError> {
        Ok(match settings {
            EmailSettings::Sandbox { file } => Self::sandbox(file.clone()),
            EmailSettings::Smtp { url, from } => {
                Self::Smtp(Mailer::new(url, from.clone(), timeout).map_err(|why| {
                    pulse_kit::settings::SettingError::new(&crate::settings::SMTP_URL, why)
                })?)
            }
            EmailSettings::Unavailable => Self::Unavailable,
        })
    }

    /// A sandbox appending to `file`.
    pub fn sandbox(file: PathBuf) -> Self {
        Self::Sandbox(JsonLines::new(file))
    }

    /// Whether e-mails can be sent at all.
    pub fn available(&self) -> bool {
        !matches!(self, Self::Unavailable)
    }

    /// Sends `subject` and `body` to `to`.
    pub async fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), EmailError> {
        match self {
            Self::Sandbox(file) => file
                .append(&Message {
                    to,
                    subject,
                    body,
                    at: Utc::now(),
                })
                .await
                .map_err(|err| {
                    EmailError(format!(
                        "the sandbox cannot write {}: {err}",
                        file.path().display()
                    ))
                }),
            Self::Smtp(mailer) => mailer
                .send(Mail {
                    to,
                    name: None,
                    subject,
                    text: body,
                    html: None,
                    message_id: None,
                })
                .await
                // The server's answer, never the message (it holds a code).
                .map_err(|err| EmailError(format!("the SMTP server did not take it: {err}"))),
            Self::Unavailable => Err(EmailError(NO_MAIL_SERVER.into())),
        }
    }
}
