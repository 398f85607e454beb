//! A Twilio-compatible SMS provider: `POST {base}/2010-04-01/Accounts/{account}/Messages.json`
//! with the form fields `To`, `From` and `Body`, authenticated with HTTP basic auth
//! (account SID, auth token). The base URL is a setting, so a compatible service or a local
//! fake can stand in for `https://api.twilio.com`. A message may carry an `Idempotency-Key`
//! header, which compatible providers (and the local stand-in) use to send a retry once.

use std::time::Duration;

use crate::settings::Secret;
use async_trait::async_trait;
use serde::Deserialize;

use super::{SmsError, SmsSender};

/// The Twilio-compatible adapter.
#[derive(Debug, Clone)]
pub struct TwilioSms {
    http: reqwest::Client,
    messages_url: String,
    account: String,
    auth_token: Secret,
    from: String,
}

/// The provider's error document (`{"code": 21211, "message": "…"}`).
#[derive(Debug, Deserialize)]
struct ErrorReply {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    message: Option<String>,
}

impl TwilioSms {
    /// An adapter calling `base_url` for `account`, sending from `from`; each call ends after
    /// `timeout`.
    pub fn new(
        base_url: &str,
        account: &str,
        auth_token: Secret,
        from: &str,
        timeout: Duration,
    ) -> Result<Self, SmsError> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .timeout(timeout)
            .build()
            .map_err(|e| SmsError::Unavailable(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            messages_url: format!(
                "{}/2010-04-01/Accounts/{account}/Messages.json",
                base_url.trim_end_matches('/')
            ),
            account: account.to_owned(),
            auth_token,
            from: from.to_owned(),
        })
    }
}

#[async_trait]
impl SmsSender for TwilioSms {
    fn name(&self) -> &'static str {
        "twilio"
    }

    async fn send(
        &self,
        to: &str,
        body: &str,
        idempotency_key: Option<&str>,
    ) -> Result<(), SmsError> {
        let mut request = self
            .http
            .post(&self.messages_url)
            .basic_auth(&self.account, Some(self.auth_token.expose()))
            .form(&[("To", to), ("From", &self.from), ("Body", body)]);
        if let Some(key) = idempotency_key {
            // Providers that honour it answer a retried request with the first result instead
            // of sending the message again.
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.map_err(|e| {
            // Without the URL's query or the body: only what failed.
            let what = if e.is_timeout() {
                "no answer in time"
            } else if e.is_connect() {
                "cannot connect"
            } else {
                "request failed"
            };
            SmsError::Unavailable(what.to_owned())
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let reply: Option<ErrorReply> = response.json().await.ok();
        let reason = reply
            .as_ref()
            .and_then(|r| r.message.clone())
            .unwrap_or_else(|| format!("HTTP {status}"));
        let code = reply.and_then(|r| r.code);
        // The provider's message may quote the number: it goes back to the caller, not to logs.
        tracing::warn!(status = status.as_u16(), provider_code = ?code, "SMS provider refused a message");
        if status == reqwest::StatusCode::BAD_REQUEST {
            Err(SmsError::Rejected(reason))
        } else {
            // 401/403 (our credentials), 404, 429 and 5xx: nothing the user can fix.
            Err(SmsError::Unavailable(format!("HTTP {status}")))
        }
    }
}
