//! The providers behind the channels: e-mail through the kit's SMTP port
//! ([`pulse_kit::email::Mailer`]) and SMS through the kit's SMS port, with the one error both
//! come down to. In-app messages need no provider: they are rows in notifier's inbox.

/// Why a provider did not take a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The provider refused this message for good (an address it cannot deliver to): no retry.
    #[error("refused: {0}")]
    Rejected(String),
    /// The provider could not be reached, failed, or did not answer in time: retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl From<pulse_kit::sms::SmsError> for SendError {
    fn from(err: pulse_kit::sms::SmsError) -> Self {
        match err {
            pulse_kit::sms::SmsError::Rejected(why) => Self::Rejected(why),
            pulse_kit::sms::SmsError::Unavailable(why) => Self::Unavailable(why),
        }
    }
}

impl From<pulse_kit::email::MailError> for SendError {
    fn from(err: pulse_kit::email::MailError) -> Self {
        match err {
            pulse_kit::email::MailError::Rejected(why) => Self::Rejected(why),
            pulse_kit::email::MailError::Unavailable(why) => Self::Unavailable(why),
        }
    }
}
