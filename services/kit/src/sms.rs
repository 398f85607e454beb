//! The SMS port: how identity's sign-in codes and notifier's messages reach a phone, the
//! adapter the settings choose ([`twilio`] for a Twilio-compatible HTTP API, [`sandbox`] for
//! local runs), and the reading of those settings, shared so both components accept the same
//! providers with the same rules.
//!
//! A message body may hold a code, so adapters never log bodies, and their errors never quote
//! them.

pub mod sandbox;
pub mod twilio;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::settings::{Env, Secret, Setting, SettingError, server as server_vars};

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

    /// Sends `body` to `to` (E.164). A retry of the same message carries the same
    /// `idempotency_key`, so a provider that honours it sends it once. `Ok` means the provider
    /// accepted it.
    async fn send(
        &self,
        to: &str,
        body: &str,
        idempotency_key: Option<&str>,
    ) -> Result<(), SmsError>;
}

/// Which SMS provider sends messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmsSettings {
    /// Appends every message to a JSON-lines file (development mode only).
    Sandbox {
        /// The file.
        file: PathBuf,
    },
    /// A Twilio-compatible HTTP API.
    Twilio {
        /// API base URL (`https://api.twilio.com`).
        base_url: String,
        /// Account SID.
        account: String,
        /// Auth token.
        auth_token: Secret,
        /// Sender number (E.164).
        from: String,
    },
}

/// The variables one component reads its SMS provider from.
#[derive(Debug, Clone, Copy)]
pub struct SmsVars {
    /// `twilio`, `sandbox` or `none`.
    pub provider: &'static Setting,
    /// API base URL.
    pub base_url: &'static Setting,
    /// Account SID.
    pub account: &'static Setting,
    /// Auth token.
    pub auth_token: &'static Setting,
    /// Sender number.
    pub from: &'static Setting,
    /// The sandbox's file.
    pub sandbox_file: &'static Setting,
    /// The sandbox's file when unset.
    pub default_sandbox_file: &'static str,
}

impl SmsSettings {
    /// Reads the provider from `vars`. Unset means the sandbox in development mode and no
    /// provider (`None`) elsewhere; `none` is no provider. The sandbox is refused outside
    /// development mode. An error names the variable at fault.
    pub fn read(
        env: &Env,
        vars: &SmsVars,
        development_mode: bool,
    ) -> Result<Option<Self>, SettingError> {
        let provider = env.text(vars.provider).map(|p| p.to_ascii_lowercase());
        match provider.as_deref() {
            Some("sandbox") | None if development_mode => Ok(Some(Self::Sandbox {
                file: PathBuf::from(
                    env.text(vars.sandbox_file)
                        .unwrap_or_else(|| vars.default_sandbox_file.to_owned()),
                ),
            })),
            Some("sandbox") => Err(SettingError::new(
                vars.provider,
                format!(
                    "`sandbox` writes every message to a local file, so it runs only in development mode: set {}=true for local runs only, or use `twilio`",
                    server_vars::DEVELOPMENT_MODE.var
                ),
            )),
            None | Some("none") => Ok(None),
            Some("twilio") => Self::read_twilio(env, vars).map(Some),
            Some(other) => Err(SettingError::new(
                vars.provider,
                format!(
                    "unknown provider `{other}`: use `twilio`, `none`, or `sandbox` in development mode"
                ),
            )),
        }
    }

    fn read_twilio(env: &Env, vars: &SmsVars) -> Result<Self, SettingError> {
        let required = |setting: &Setting| {
            env.text(setting).ok_or_else(|| {
                SettingError::new(
                    setting,
                    format!(
                        "required when {}=twilio ({})",
                        vars.provider.var, setting.help
                    ),
                )
            })
        };
        let account = required(vars.account)?;
        if !account.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(SettingError::new(
                vars.account,
                format!("`{account}` is not an account SID (letters and digits only)"),
            ));
        }
        let auth_token = env.secret(vars.auth_token).ok_or_else(|| {
            SettingError::new(
                vars.auth_token,
                format!("required when {}=twilio", vars.provider.var),
            )
        })?;
        let from = required(vars.from)?;
        let e164 = from.len() >= 8
            && from.len() <= 16
            && from.starts_with('+')
            && from[1..].bytes().all(|b| b.is_ascii_digit());
        if !e164 {
            return Err(SettingError::new(
                vars.from,
                format!("`{from}` is not an E.164 number like +33700000000"),
            ));
        }
        Ok(Self::Twilio {
            base_url: env
                .url(vars.base_url, "https://api.twilio.com")?
                .trim_end_matches('/')
                .to_owned(),
            account,
            auth_token,
            from,
        })
    }

    /// The sender these settings choose, with `timeout` for each call to a remote provider.
    /// An error names `base_url_setting` (the only value that can still be wrong).
    pub fn sender(
        &self,
        timeout: Duration,
        base_url_setting: &Setting,
    ) -> Result<Arc<dyn SmsSender>, SettingError> {
        Ok(match self {
            Self::Sandbox { file } => Arc::new(sandbox::SandboxSms::new(file.clone())),
            Self::Twilio {
                base_url,
                account,
                auth_token,
                from,
            } => Arc::new(
                twilio::TwilioSms::new(base_url, account, auth_token.clone(), from, timeout)
                    .map_err(|err| SettingError::new(base_url_setting, err.to_string()))?,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::notifier as vars;

    const VARS: SmsVars = SmsVars {
        provider: &vars::SMS_PROVIDER,
        base_url: &vars::SMS_BASE_URL,
        account: &vars::SMS_ACCOUNT,
        auth_token: &vars::SMS_AUTH_TOKEN,
        from: &vars::SMS_FROM,
        sandbox_file: &vars::SANDBOX_SMS_FILE,
        default_sandbox_file: "sms.jsonl",
    };

    #[test]
    fn unset_is_the_sandbox_in_development_and_nothing_elsewhere() {
        let env = Env::from_map::<&str, &str>([]);
        assert_eq!(
            SmsSettings::read(&env, &VARS, true).expect("reads"),
            Some(SmsSettings::Sandbox {
                file: "sms.jsonl".into()
            })
        );
        assert_eq!(SmsSettings::read(&env, &VARS, false).expect("reads"), None);
        let env = Env::from_map([(vars::SMS_PROVIDER.var, "sandbox")]);
        let err = SmsSettings::read(&env, &VARS, false).expect_err("refused");
        assert_eq!(err.var, vars::SMS_PROVIDER.var);
    }

    #[test]
    fn twilio_needs_an_account_a_token_and_an_e164_sender() {
        let env = Env::from_map([
            (vars::SMS_PROVIDER.var, "twilio"),
            (vars::SMS_ACCOUNT.var, "AC1"),
            (vars::SMS_AUTH_TOKEN.var, "token"),
            (vars::SMS_FROM.var, "0700"),
        ]);
        let err = SmsSettings::read(&env, &VARS, false).expect_err("bad sender");
        assert_eq!(err.var, vars::SMS_FROM.var);
        let env = Env::from_map([
            (vars::SMS_PROVIDER.var, "twilio"),
            (vars::SMS_ACCOUNT.var, "AC1"),
            (vars::SMS_AUTH_TOKEN.var, "token"),
            (vars::SMS_FROM.var, "+33700000000"),
            (vars::SMS_BASE_URL.var, "http://127.0.0.1:8025/"),
        ]);
        match SmsSettings::read(&env, &VARS, false).expect("reads") {
            Some(SmsSettings::Twilio { base_url, .. }) => {
                assert_eq!(base_url, "http://127.0.0.1:8025");
            }
            other => panic!("expected twilio, got {other:?}"),
        }
    }
}
