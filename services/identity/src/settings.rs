//! Identity's process settings: each variable is one [`Setting`] below (the operator renders
//! them for identity only), read once at start-up through the kit's [`Env`] into
//! [`IdentitySettings`]. A variable that holds no usable value is an error that names it.
//!
//! The keyring secret is read from a file (a mounted Kubernetes Secret in a cluster, a file
//! `./dev up` generates locally); it seals the token-signing private keys stored in identity's
//! database and keys the hashes of one-time codes. The sandbox SMS and e-mail providers write
//! every message, code included, to a local file, so they run only in development mode
//! (`PULSE_DEVELOPMENT_MODE=true`).

use std::path::PathBuf;
use std::time::Duration;

use pulse_kit::server::ServerSettings;
use pulse_kit::settings::{Env, Secret, Setting, SettingError, server as server_vars};
/// The SMS provider settings, shared with notifier through the kit.
pub use pulse_kit::sms::{SmsSettings, SmsVars};

use pulse_kit::email::Mailbox;
/// The identity settings, defined in the kit so the operator renders the same names.
pub use pulse_kit::settings::identity::{
    ACCESS_TOKEN_SECONDS, ALL, EMAIL_FROM, KEY_ROTATION_DAYS, KEYRING_SECRET_FILE,
    OTP_SENDS_PER_ADDRESS_PER_HOUR, REFRESH_TOKEN_DAYS, SANDBOX_EMAIL_FILE, SANDBOX_SMS_FILE,
    SIGNING_ALGORITHM, SMS_ACCOUNT, SMS_AUTH_TOKEN, SMS_BASE_URL, SMS_FROM, SMS_PROVIDER, SMTP_URL,
};

/// Shortest keyring secret accepted, in bytes.
pub const MIN_KEYRING_SECRET_BYTES: usize = 32;

/// Algorithm of the keys that sign access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    /// Ed25519 signatures (`EdDSA`, JWK `OKP`).
    EdDsa,
    /// ECDSA on P-256 with SHA-256 (`ES256`, JWK `EC`).
    Es256,
}

impl SigningAlgorithm {
    /// The JOSE name (`EdDSA`, `ES256`), also stored with each key.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Es256 => "ES256",
        }
    }

    /// The algorithm named `name` (as stored or configured).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "EdDSA" => Some(Self::EdDsa),
            "ES256" => Some(Self::Es256),
            _ => None,
        }
    }

    /// The `jsonwebtoken` algorithm.
    pub fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::EdDsa => jsonwebtoken::Algorithm::EdDSA,
            Self::Es256 => jsonwebtoken::Algorithm::ES256,
        }
    }
}

/// The keyring secret's bytes (hex inside a [`Secret`], so it never prints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyringSecret(Secret);

impl KeyringSecret {
    /// A secret of `bytes`; `None` when shorter than [`MIN_KEYRING_SECRET_BYTES`].
    pub fn new(bytes: &[u8]) -> Option<Self> {
        (bytes.len() >= MIN_KEYRING_SECRET_BYTES).then(|| Self(Secret::new(hex::encode(bytes))))
    }

    /// The bytes, for deriving the subkeys.
    pub fn bytes(&self) -> Vec<u8> {
        hex::decode(self.0.expose()).unwrap_or_default()
    }
}

/// Where e-mail verification codes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmailSettings {
    /// Appended to a JSON-lines file (development mode only).
    Sandbox {
        /// The file.
        file: PathBuf,
    },
    /// An SMTP server.
    Smtp {
        /// Its URL, with credentials.
        url: Secret,
        /// The sender.
        from: Mailbox,
    },
    /// No mail provider: e-mail addresses cannot be verified (changing one answers 503).
    Unavailable,
}

/// Everything identity reads from the environment. `Debug` shows no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentitySettings {
    /// `iss` of the access tokens (the deployment's `PULSE_JWT_ISSUER`).
    pub issuer: String,
    /// Seals the signing keys and keys the code hashes.
    pub keyring_secret: KeyringSecret,
    /// Algorithm of new signing keys.
    pub signing_algorithm: SigningAlgorithm,
    /// Age at which the signing key is rotated by the scheduled job.
    pub key_rotation: Duration,
    /// How often the job looks at the key's age (not a variable; tests shorten it).
    pub key_check_interval: Duration,
    /// Access-token lifetime.
    pub access_token_ttl: Duration,
    /// Refresh-token lifetime.
    pub refresh_token_ttl: Duration,
    /// SMS provider.
    pub sms: SmsSettings,
    /// Deadline of one call to the SMS provider or the SMTP server (not a variable; tests
    /// shorten it).
    pub sms_timeout: Duration,
    /// E-mail verification codes.
    pub email: EmailSettings,
    /// Codes one client address may request per hour.
    pub otp_sends_per_address_per_hour: u32,
    /// Take the client address from the first `X-Forwarded-For` hop (the server's
    /// `PULSE_TRUST_FORWARDED_FOR`, as the kit's rate limiter does).
    pub trust_forwarded_for: bool,
}

fn keyring_secret(env: &Env) -> Result<KeyringSecret, SettingError> {
    let path = env.required(&KEYRING_SECRET_FILE)?;
    let bytes = std::fs::read(&path).map_err(|err| {
        SettingError::new(&KEYRING_SECRET_FILE, format!("cannot read {path}: {err}"))
    })?;
    // A trailing newline (files written by editors and shells) is not part of the secret.
    let trimmed = bytes.trim_ascii();
    KeyringSecret::new(trimmed).ok_or_else(|| {
        SettingError::new(
            &KEYRING_SECRET_FILE,
            format!(
                "{path} holds {} bytes; the secret must be at least {MIN_KEYRING_SECRET_BYTES} random bytes (for example `head -c 48 /dev/urandom | base64`)",
                trimmed.len()
            ),
        )
    })
}

fn signing_algorithm(env: &Env) -> Result<SigningAlgorithm, SettingError> {
    match env.text(&SIGNING_ALGORITHM) {
        None => Ok(SigningAlgorithm::EdDsa),
        Some(name) => SigningAlgorithm::parse(&name).ok_or_else(|| {
            SettingError::new(
                &SIGNING_ALGORITHM,
                format!("`{name}` is not supported: use EdDSA or ES256"),
            )
        }),
    }
}

fn sandbox_file(env: &Env, setting: &Setting, default: &str) -> PathBuf {
    PathBuf::from(env.text(setting).unwrap_or_else(|| default.to_owned()))
}

/// Identity's SMS variables.
pub const SMS_VARS: SmsVars = SmsVars {
    provider: &SMS_PROVIDER,
    base_url: &SMS_BASE_URL,
    account: &SMS_ACCOUNT,
    auth_token: &SMS_AUTH_TOKEN,
    from: &SMS_FROM,
    sandbox_file: &SANDBOX_SMS_FILE,
    default_sandbox_file: "sms-sandbox.jsonl",
};

fn sms(env: &Env, development_mode: bool) -> Result<SmsSettings, SettingError> {
    // Sign-in needs codes: unlike notifier, identity cannot run without a provider.
    SmsSettings::read(env, &SMS_VARS, development_mode)?.ok_or_else(|| {
        SettingError::new(
            &SMS_PROVIDER,
            format!(
                "required: `twilio` (or `sandbox` with {}=true, for local runs only)",
                server_vars::DEVELOPMENT_MODE.var
            ),
        )
    })
}

/// An SMTP server when one is set; else the sandbox file in development mode; else none.
fn email(env: &Env, development_mode: bool) -> Result<EmailSettings, SettingError> {
    if let Some(url) = pulse_kit::email::smtp_url(env, &SMTP_URL)? {
        let from =
            pulse_kit::email::email_from(env, &EMAIL_FROM, "Pulse <no-reply@pulse.invalid>")?;
        return Ok(EmailSettings::Smtp { url, from });
    }
    Ok(if development_mode {
        EmailSettings::Sandbox {
            file: sandbox_file(env, &SANDBOX_EMAIL_FILE, "email-sandbox.jsonl"),
        }
    } else {
        EmailSettings::Unavailable
    })
}

impl IdentitySettings {
    /// Reads identity's settings from `env`; the issuer, the development switch and the
    /// forwarded-address rule come from `server`.
    pub fn read(env: &Env, server: &ServerSettings) -> Result<Self, SettingError> {
        let days = |n: u64| Duration::from_secs(n * 86_400);
        Ok(Self {
            issuer: server.jwt.issuer.clone(),
            keyring_secret: keyring_secret(env)?,
            signing_algorithm: signing_algorithm(env)?,
            key_rotation: days(env.number(&KEY_ROTATION_DAYS, 30, 1, 365)?),
            key_check_interval: Duration::from_secs(300),
            access_token_ttl: Duration::from_secs(env.number(
                &ACCESS_TOKEN_SECONDS,
                900,
                60,
                86_400,
            )?),
            refresh_token_ttl: days(env.number(&REFRESH_TOKEN_DAYS, 30, 1, 365)?),
            sms: sms(env, server.development_mode)?,
            sms_timeout: Duration::from_secs(5),
            email: email(env, server.development_mode)?,
            otp_sends_per_address_per_hour: env.number(
                &OTP_SENDS_PER_ADDRESS_PER_HOUR,
                20,
                1,
                100_000,
            )?,
            trust_forwarded_for: server.trust_forwarded_for,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temporary directory for the settings' files.
    struct Files(pulse_kit::testing::TempDir);

    impl Files {
        fn new() -> Self {
            Self(pulse_kit::testing::TempDir::new("identity-settings"))
        }

        fn write(&self, name: &str, content: &[u8]) -> String {
            let path = self.0.path().join(name);
            std::fs::write(&path, content).expect("write");
            path.display().to_string()
        }
    }

    fn server(development_mode: bool) -> ServerSettings {
        ServerSettings {
            development_mode,
            ..pulse_kit::testing::server_settings("postgres://unused", "redis://unused")
        }
    }

    fn read_in(
        development_mode: bool,
        vars: &[(&str, &str)],
    ) -> Result<IdentitySettings, SettingError> {
        IdentitySettings::read(
            &Env::from_map(vars.iter().copied()),
            &server(development_mode),
        )
    }

    #[test]
    fn development_defaults_are_the_sandboxes_and_an_eddsa_key() {
        let files = Files::new();
        let secret = files.write("keyring", b"0123456789abcdef0123456789abcdef\n");
        let settings = read_in(true, &[(KEYRING_SECRET_FILE.var, &secret)]).expect("defaults");
        assert_eq!(settings.signing_algorithm, SigningAlgorithm::EdDsa);
        assert_eq!(settings.access_token_ttl, Duration::from_secs(900));
        assert_eq!(settings.refresh_token_ttl, Duration::from_secs(30 * 86_400));
        assert_eq!(settings.key_rotation, Duration::from_secs(30 * 86_400));
        assert_eq!(
            settings.sms,
            SmsSettings::Sandbox {
                file: "sms-sandbox.jsonl".into()
            }
        );
        assert!(matches!(settings.email, EmailSettings::Sandbox { .. }));
        // The trailing newline is not part of the secret.
        assert_eq!(settings.keyring_secret.bytes().len(), 32);
    }

    #[test]
    fn the_keyring_secret_is_required_and_long_enough() {
        let err = read_in(true, &[]).expect_err("missing");
        assert_eq!(err.var, KEYRING_SECRET_FILE.var);
        assert!(err.message.starts_with("required"), "{err}");
        let err = read_in(true, &[(KEYRING_SECRET_FILE.var, "/nonexistent/keyring")])
            .expect_err("unreadable");
        assert_eq!(err.var, KEYRING_SECRET_FILE.var);
        let files = Files::new();
        let short = files.write("short", b"too short\n");
        let err = read_in(true, &[(KEYRING_SECRET_FILE.var, &short)]).expect_err("short");
        assert_eq!(err.var, KEYRING_SECRET_FILE.var);
        assert!(err.message.contains("at least 32"), "{err}");
    }

    #[test]
    fn the_sandbox_runs_only_in_development_mode() {
        let files = Files::new();
        let secret = files.write("keyring", &[7u8; 40]);
        let err = read_in(
            false,
            &[
                (KEYRING_SECRET_FILE.var, &secret),
                (SMS_PROVIDER.var, "sandbox"),
            ],
        )
        .expect_err("sandbox in production");
        assert_eq!(err.var, SMS_PROVIDER.var);
        assert!(err.message.contains("PULSE_DEVELOPMENT_MODE=true"), "{err}");
        let err = read_in(false, &[(KEYRING_SECRET_FILE.var, &secret)])
            .expect_err("no provider in production");
        assert_eq!(err.var, SMS_PROVIDER.var);
        assert!(err.message.starts_with("required"), "{err}");
    }

    #[test]
    fn twilio_needs_its_account_token_and_sender() {
        let files = Files::new();
        let secret = files.write("keyring", &[7u8; 40]);
        let base = [
            (KEYRING_SECRET_FILE.var, secret.as_str()),
            (SMS_PROVIDER.var, "twilio"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut vars = base.to_vec();
            vars.extend_from_slice(extra);
            read_in(false, &vars)
        };
        assert_eq!(with(&[]).expect_err("account").var, SMS_ACCOUNT.var);
        assert_eq!(
            with(&[(SMS_ACCOUNT.var, "AC123")]).expect_err("token").var,
            SMS_AUTH_TOKEN.var
        );
        assert_eq!(
            with(&[
                (SMS_ACCOUNT.var, "AC123"),
                (SMS_AUTH_TOKEN.var, "token-never-shown")
            ])
            .expect_err("from")
            .var,
            SMS_FROM.var
        );
        for (var, value) in [
            (SMS_FROM.var, "0612345678"),
            (SMS_BASE_URL.var, "api.twilio.com"),
            (SMS_ACCOUNT.var, "AC/../x"),
        ] {
            let mut vars = vec![
                (SMS_ACCOUNT.var, "AC123"),
                (SMS_AUTH_TOKEN.var, "token-never-shown"),
                (SMS_FROM.var, "+33700000000"),
            ];
            vars.retain(|(v, _)| *v != var);
            vars.push((var, value));
            assert_eq!(with(&vars).expect_err(value).var, var);
        }
        let settings = with(&[
            (SMS_ACCOUNT.var, "AC123"),
            (SMS_AUTH_TOKEN.var, "token-never-shown"),
            (SMS_FROM.var, "+33700000000"),
            (SMS_BASE_URL.var, "http://127.0.0.1:9999/"),
        ])
        .expect("twilio");
        assert!(matches!(
            &settings.sms,
            SmsSettings::Twilio { base_url, .. } if base_url == "http://127.0.0.1:9999"
        ));
        assert_eq!(settings.email, EmailSettings::Unavailable);
        let shown = format!("{settings:?}");
        assert!(!shown.contains("token-never-shown"), "{shown}");
        assert!(!shown.contains(&hex::encode([7u8; 40])), "{shown}");
    }

    #[test]
    fn bad_values_name_their_variable() {
        let files = Files::new();
        let secret = files.write("keyring", &[7u8; 40]);
        for (var, value) in [
            (SIGNING_ALGORITHM.var, "HS256"),
            (SIGNING_ALGORITHM.var, "none"),
            (KEY_ROTATION_DAYS.var, "0"),
            (ACCESS_TOKEN_SECONDS.var, "5"),
            (REFRESH_TOKEN_DAYS.var, "forever"),
            (SMS_PROVIDER.var, "carrier-pigeon"),
            (OTP_SENDS_PER_ADDRESS_PER_HOUR.var, "0"),
        ] {
            let err = read_in(true, &[(KEYRING_SECRET_FILE.var, &secret), (var, value)])
                .expect_err(value);
            assert_eq!(err.var, var, "{err}");
        }
        let settings = read_in(
            true,
            &[
                (KEYRING_SECRET_FILE.var, &secret),
                (SIGNING_ALGORITHM.var, "ES256"),
            ],
        )
        .expect("ES256");
        assert_eq!(settings.signing_algorithm, SigningAlgorithm::Es256);
    }
}
