//! The SMS port: how identity's sign-in codes reach a phone, and the adapter the settings
//! choose ([`twilio`] for a Twilio-compatible HTTP API, [`sandbox`] for local runs).
//!
//! A message body holds a code, so adapters never log bodies, and their errors never quote them.

pub mod sandbox;
pub mod twilio;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::Phone;
use crate::settings::{SMS_BASE_URL, SmsSettings};

/// Why a message was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmsError {
    /// The provider refused this message (a number it cannot reach); the message says why.
    #[error("the SMS provider refused the message: {0}")]
    Rejected(String),
    /// The provider could not be reached, failed, or did not answer in time; retry later.
    #[error("the SMS provider is unavailable: {0}")]
    Unavailable(String),
}

/// Sends text messages.
#[async_trait]
pub trait SmsSender: Send + Sync + 'static {
    /// Short name, for logs and metrics (`twilio`, `sandbox`).
    fn name(&self) -> &'static str;

    /// Sends `body` to `to`. `Ok` means the provider accepted it.
    async fn send(&self, to: &Phone, body: &str) -> Result<(), SmsError>;
}

/// The sender `settings` choose, with `timeout` for each call to a remote provider. An error
/// names the setting at fault.
pub fn from_settings(
    settings: &SmsSettings,
    timeout: Duration,
) -> Result<Arc<dyn SmsSender>, pulse_kit::settings::SettingError> {
    Ok(match settings {
        SmsSettings::Sandbox { file } => Arc::new(sandbox::SandboxSms::new(file.clone())),
        SmsSettings::Twilio {
            base_url,
            account,
            auth_token,
            from,
        } => Arc::new(
            twilio::TwilioSms::new(base_url, account, auth_token.clone(), from, timeout).map_err(
                |err| pulse_kit::settings::SettingError::new(&SMS_BASE_URL, err.to_string()),
            )?,
        ),
    })
}
