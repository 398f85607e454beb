//! The e-mail port: messages sent through one SMTP server (lettre, TLS by rustls), shared by
//! identity (verification codes) and notifier (notifications), with the reading of the two
//! settings every sender has: the server's URL with its credentials, and the sender address.

use std::str::FromStr;
use std::time::Duration;

pub use lettre::message::Mailbox;
use lettre::message::{MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::settings::{Env, Secret, Setting, SettingError};

/// Why the SMTP server did not take a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// Refused for good (an address it cannot deliver to, a malformed message): no retry.
    #[error("refused: {0}")]
    Rejected(String),
    /// The server could not be reached, failed, or did not answer in time: retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// One message.
#[derive(Debug, Clone, Copy)]
pub struct Mail<'a> {
    /// Recipient address.
    pub to: &'a str,
    /// Recipient name, if known.
    pub name: Option<&'a str>,
    /// Subject.
    pub subject: &'a str,
    /// Text part.
    pub text: &'a str,
    /// HTML part, if any (then the message is `multipart/alternative`).
    pub html: Option<&'a str>,
    /// `Message-ID` (without angle brackets): the same id on a resend lets receiving systems
    /// that deduplicate show the message once.
    pub message_id: Option<&'a str>,
}

/// Sends e-mails through one SMTP server.
#[derive(Clone)]
pub struct Mailer {
    // Shared: the transport holds its connection pool.
    transport: std::sync::Arc<AsyncSmtpTransport<Tokio1Executor>>,
    from: Box<Mailbox>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// A mailer for the server at `url` (checked by [`smtp_url`]), sending as `from`; each
    /// message must be taken within `timeout`.
    pub fn new(url: &Secret, from: Mailbox, timeout: Duration) -> Result<Self, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
            .map_err(|err| format!("not a usable SMTP URL: {err}"))?
            .timeout(Some(timeout))
            .build();
        Ok(Self {
            transport: std::sync::Arc::new(transport),
            from: Box::new(from),
        })
    }

    /// Sends `mail`. A permanent refusal (5xx) is [`MailError::Rejected`], anything else
    /// [`MailError::Unavailable`].
    pub async fn send(&self, mail: Mail<'_>) -> Result<(), MailError> {
        let address = mail
            .to
            .parse()
            .map_err(|err| MailError::Rejected(format!("not an e-mail address: {err}")))?;
        let builder = Message::builder()
            .from(Mailbox::clone(&self.from))
            .to(Mailbox::new(mail.name.map(str::to_owned), address))
            .subject(mail.subject)
            .message_id(mail.message_id.map(|id| format!("<{id}>")));
        let built = match mail.html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                mail.text.to_owned(),
                html.to_owned(),
            )),
            None => builder.singlepart(SinglePart::plain(mail.text.to_owned())),
        };
        let message =
            built.map_err(|err| MailError::Rejected(format!("cannot build the message: {err}")))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(err) if err.is_permanent() => Err(MailError::Rejected(err.to_string())),
            Err(err) => Err(MailError::Unavailable(err.to_string())),
        }
    }
}

/// The sender address of `setting`, `default` when unset.
pub fn email_from(env: &Env, setting: &Setting, default: &str) -> Result<Mailbox, SettingError> {
    let raw = env.text(setting).unwrap_or_else(|| default.to_owned());
    Mailbox::from_str(&raw).map_err(|err| {
        SettingError::new(
            setting,
            format!("`{raw}` is not a sender like `Pulse <no-reply@example.com>` ({err})"),
        )
    })
}

/// The SMTP URL of `setting` (`None` when unset), checked without ever quoting it (it holds
/// credentials): `smtps://`, `smtp://…?tls=required`, or plain `smtp://` to a loopback address
/// only, so credentials never cross a network in clear.
pub fn smtp_url(env: &Env, setting: &Setting) -> Result<Option<Secret>, SettingError> {
    let Some(url) = env.secret(setting) else {
        return Ok(None);
    };
    let value = url.expose();
    let bad = |why: &str| {
        Err(SettingError::new(
            setting,
            format!("{why} (the value is not shown: it holds credentials)"),
        ))
    };
    let Some((scheme, rest)) = value.split_once("://") else {
        return bad("not a URL like smtps://user:password@host:465");
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = host_port
        .rsplit_once(':')
        .map_or(host_port, |(h, _)| h)
        .trim_matches(['[', ']']);
    if host.is_empty() {
        return bad("the URL has no host");
    }
    let tls_required = value.contains("tls=required");
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match scheme {
        "smtps" => {}
        "smtp" if tls_required || loopback => {}
        "smtp" => {
            return bad(
                "plain `smtp://` would send credentials and messages in clear to a remote host: use `smtps://host:465` or `smtp://host:587?tls=required`",
            );
        }
        _ => return bad("the scheme must be `smtps` or `smtp`"),
    }
    AsyncSmtpTransport::<Tokio1Executor>::from_url(value)
        .map_err(|err| SettingError::new(setting, format!("not a usable SMTP URL: {err}")))?;
    Ok(Some(url))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::notifier::{EMAIL_FROM, SMTP_URL};

    #[test]
    fn smtp_urls_are_checked_without_being_quoted() {
        for (url, ok) in [
            ("smtp://127.0.0.1:1025", true),
            ("smtps://user:pw@mail.example.com:465", true),
            ("smtp://user:pw@mail.example.com:587?tls=required", true),
            ("smtp://user:hunter2@mail.example.com:25", false),
            ("http://mail.example.com", false),
            ("mail.example.com", false),
        ] {
            let env = Env::from_map([(SMTP_URL.var, url)]);
            match smtp_url(&env, &SMTP_URL) {
                Ok(found) => {
                    assert!(ok, "{url} accepted");
                    assert!(found.is_some());
                }
                Err(err) => {
                    assert!(!ok, "{url} refused: {err}");
                    assert_eq!(err.var, SMTP_URL.var);
                    assert!(!err.to_string().contains("hunter2"), "{err}");
                }
            }
        }
        let unset = Env::from_map::<&str, &str>([]);
        assert_eq!(smtp_url(&unset, &SMTP_URL).expect("unset"), None);
    }

    #[test]
    fn a_bad_sender_names_its_variable() {
        let env = Env::from_map([(EMAIL_FROM.var, "not an address")]);
        let err = email_from(&env, &EMAIL_FROM, "x@example.org").expect_err("refused");
        assert_eq!(err.var, EMAIL_FROM.var);
        let ok = email_from(
            &Env::from_map::<&str, &str>([]),
            &EMAIL_FROM,
            "Pulse <a@b.org>",
        )
        .expect("default");
        assert_eq!(ok.email.to_string(), "a@b.org");
    }
}
