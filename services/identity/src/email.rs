//! The e-mail port: how e-mail verification codes reach their address. Pulse has no mail
//! provider yet, so there is one adapter, the sandbox (development mode only), which appends
//! each message to a JSON-lines file (`{"to":…,"subject":…,"body":…,"at":…}`); elsewhere
//! [`EmailPort::Unavailable`] refuses, and changing an e-mail address answers 503.

use std::path::PathBuf;

use chrono::Utc;
use serde::Serialize;

use crate::settings::EmailSettings;
use pulse_kit::sms::sandbox::JsonLines;

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
    /// No mail provider on this deployment.
    Unavailable,
}

impl EmailPort {
    /// The port `settings` choose.
    pub fn from_settings(settings: &EmailSettings) -> Self {
        match settings {
            EmailSettings::Sandbox { file } => Self::sandbox(file.clone()),
            EmailSettings::Unavailable => Self::Unavailable,
        }
    }

    /// A sandbox appending to `file`.
    pub fn sandbox(file: PathBuf) -> Self {
        Self::Sandbox(JsonLines::new(file))
    }

    /// Whether e-mails can be sent at all.
    pub fn available(&self) -> bool {
        matches!(self, Self::Sandbox(_))
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
            Self::Unavailable => Err(EmailError(
                "this deployment has no mail provider, so e-mail addresses cannot be verified yet"
                    .into(),
            )),
        }
    }
}
