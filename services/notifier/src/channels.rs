//! The providers behind the channels: e-mail over SMTP ([`Mailer`], lettre) and SMS through
//! the kit's SMS port. In-app messages need no provider: they are rows in notifier's inbox.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use pulse_kit::settings::Secret;
use uuid::Uuid;

use crate::content::Rendered;

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

/// Sends e-mails with a text and an HTML part through one SMTP server.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// A mailer for the server at `url` (checked by the settings), sending as `from`; each
    /// message must be taken within `timeout`.
    pub fn new(url: &Secret, from: Mailbox, timeout: Duration) -> Result<Self, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
            .map_err(|err| format!("not a usable SMTP URL: {err}"))?
            .timeout(Some(timeout))
            .build();
        Ok(Self { transport, from })
    }

    /// Sends `content` to `to` (called `name`). The `Message-ID` is derived from the delivery,
    /// so a message sent again after a crash carries the same id and a receiving system that
    /// deduplicates on it shows it once.
    pub async fn send(
        &self,
        delivery: Uuid,
        to: &str,
        name: Option<&str>,
        content: &Rendered,
    ) -> Result<(), SendError> {
        let address = to
            .parse()
            .map_err(|err| SendError::Rejected(format!("not an e-mail address: {err}")))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(name.map(str::to_owned), address))
            .subject(&content.subject)
            .message_id(Some(format!("<{delivery}@notifier.pulse>")))
            .multipart(MultiPart::alternative_plain_html(
                content.text.clone(),
                content.html.clone(),
            ))
            .map_err(|err| SendError::Rejected(format!("cannot build the message: {err}")))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(err) if err.is_permanent() => Err(SendError::Rejected(err.to_string())),
            Err(err) => Err(SendError::Unavailable(err.to_string())),
        }
    }
}
