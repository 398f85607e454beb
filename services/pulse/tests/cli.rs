//! The `pulse` binary as an operator starts it: bad settings stop it with a message that names
//! the variable, and its start-up log shows the settings without their secrets.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `pulse serve` with a clean environment plus `vars`.
fn pulse_serve(target: &str, vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pulse"));
    command
        .args(["serve", "--target", target])
        .env_clear()
        .env("PULSE_DATABASE_URL", database_url())
        .env(
            "PULSE_JWT_SECRET",
            "jwt-secret-that-must-never-be-logged-42",
        )
        .env("PULSE_COUNTRY__CODE", "FR")
        .env("PULSE_COUNTRY__TIMEZONE", "Europe/Paris")
        .env("PULSE_COUNTRY__CURRENCY", "EUR")
        .env("PULSE_COUNTRY__LOCALE", "fr-FR")
        .env(
            "PULSE_HTTP_ADDR",
            format!("127.0.0.1:{}", pulse_kit::testing::free_port()),
        )
        .env(
            "PULSE_GRPC_ADDR",
            format!("127.0.0.1:{}", pulse_kit::testing::free_port()),
        )
        .env("PULSE_ADMIN_ADDR", "127.0.0.1:0")
        .env("PULSE_DRAIN_SECONDS", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in ["PULSE_REDIS_URL", "PULSE_KAFKA_BROKERS"]
        .iter()
        .filter_map(|name| std::env::var(name).ok().map(|v| (*name, v)))
    {
        command.env(name, value);
    }
    for (name, value) in vars {
        command.env(name, value);
    }
    command
}

fn database_url() -> String {
    let server = std::env::var("PULSE_PG_URL")
        .unwrap_or_else(|_| "postgres://pulse:pulse@127.0.0.1:5432".to_owned());
    format!("{server}/postgres")
}

/// Runs a `pulse serve` that must refuse to start; returns its stderr.
fn refused(target: &str, vars: &[(&str, &str)]) -> String {
    let output = pulse_serve(target, vars).output().expect("pulse runs");
    assert!(
        !output.status.success(),
        "pulse started with {vars:?}; it must refuse"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_malformed_marketing_url_stops_ordering_naming_the_variable() {
    for url in [
        "http://",
        "marketing.pulse-fr.svc:50051",
        "http://marketing:port",
    ] {
        let stderr = refused(
            "ordering",
            &[
                ("PULSE_DEVELOPMENT_MODE", "true"),
                ("PULSE_MARKETING_GRPC_URL", url),
            ],
        );
        assert!(
            stderr.contains("PULSE_MARKETING_GRPC_URL"),
            "{url}: {stderr}"
        );
    }
}

#[test]
fn an_unknown_payment_provider_stops_ordering_naming_the_variable() {
    let stderr = refused(
        "ordering",
        &[
            ("PULSE_DEVELOPMENT_MODE", "true"),
            ("PULSE_PAYMENT_PROVIDER", "nonsense"),
        ],
    );
    assert!(stderr.contains("PULSE_PAYMENT_PROVIDER"), "{stderr}");
    assert!(stderr.contains("nonsense"), "{stderr}");
}

#[test]
fn the_sandbox_refuses_to_start_without_the_development_switch() {
    let stderr = refused("ordering", &[("PULSE_PAYMENT_PROVIDER", "sandbox")]);
    assert!(
        stderr.contains("PULSE_PAYMENT_PROVIDER") && stderr.contains("PULSE_DEVELOPMENT_MODE"),
        "{stderr}"
    );
    // Identity's SMS sandbox (it writes codes to a file) likewise.
    let keyring = Keyring::new();
    let stderr = refused(
        "identity",
        &[
            ("PULSE_IDENTITY_KEYRING_SECRET_FILE", keyring.path()),
            ("PULSE_IDENTITY_SMS_PROVIDER", "sandbox"),
        ],
    );
    assert!(
        stderr.contains("PULSE_IDENTITY_SMS_PROVIDER") && stderr.contains("PULSE_DEVELOPMENT_MODE"),
        "{stderr}"
    );
}

#[test]
fn identity_without_its_keyring_secret_stops_naming_the_variable() {
    let stderr = refused("identity", &[("PULSE_DEVELOPMENT_MODE", "true")]);
    assert!(
        stderr.contains("PULSE_IDENTITY_KEYRING_SECRET_FILE"),
        "{stderr}"
    );
    let short = Keyring::with("too short");
    let stderr = refused(
        "identity",
        &[
            ("PULSE_DEVELOPMENT_MODE", "true"),
            ("PULSE_IDENTITY_KEYRING_SECRET_FILE", short.path()),
        ],
    );
    assert!(
        stderr.contains("PULSE_IDENTITY_KEYRING_SECRET_FILE") && stderr.contains("32"),
        "{stderr}"
    );
}

/// A keyring secret file in a directory of its own, removed when dropped.
struct Keyring {
    _dir: pulse_kit::testing::TempDir,
    path: String,
}

impl Keyring {
    /// The secret every test keyring holds.
    const SECRET: &str = "keyring-secret-that-must-never-be-logged-0123456789";

    fn new() -> Self {
        Self::with(Self::SECRET)
    }

    fn with(content: &str) -> Self {
        let dir = pulse_kit::testing::TempDir::new("cli-keyring");
        let path = dir.path().join("keyring");
        std::fs::write(&path, content).expect("keyring file");
        Self {
            path: path.display().to_string(),
            _dir: dir,
        }
    }

    fn path(&self) -> &str {
        &self.path
    }
}

#[test]
fn the_start_up_log_shows_the_settings_without_secrets() {
    let secrets = [
        "jwt-secret-that-must-never-be-logged-42",
        "sk_test_api-key-that-must-never-be-logged",
        "whsec_webhook-secret-never-logged",
        "sms-auth-token-that-must-never-be-logged",
        Keyring::SECRET,
    ];
    let keyring = Keyring::new();
    let mut child = pulse_serve(
        "all",
        &[
            ("PULSE_PAYMENT_PROVIDER", "stripe"),
            ("PULSE_STRIPE_API_KEY", secrets[1]),
            ("PULSE_PAYMENT_WEBHOOK_SECRET", secrets[2]),
            ("PULSE_IDENTITY_KEYRING_SECRET_FILE", keyring.path()),
            ("PULSE_IDENTITY_SMS_PROVIDER", "twilio"),
            ("PULSE_IDENTITY_SMS_ACCOUNT", "AC0123456789abcdef"),
            ("PULSE_IDENTITY_SMS_AUTH_TOKEN", secrets[3]),
            ("PULSE_IDENTITY_SMS_FROM", "+33700000000"),
            ("RUST_LOG", "info"),
        ],
    )
    .spawn()
    .expect("pulse starts");
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut log = Vec::new();
    while !log.iter().any(|l: &String| l.contains("\"serving\"")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(left) {
            Ok(line) => log.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = log.join("\n");
    assert!(log.contains("\"serving\""), "pulse did not start: {log}");
    let settings_line = log
        .lines()
        .find(|l| l.contains("settings read"))
        .unwrap_or_else(|| panic!("no settings line in {log}"));
    assert!(
        settings_line.contains("admin_addr: 127.0.0.1:0"),
        "{settings_line}"
    );
    assert!(settings_line.contains("redacted"), "{settings_line}");
    for secret in secrets.iter().copied().chain([database_url().as_str()]) {
        assert!(
            !log.contains(secret),
            "`{secret}` appears in the log:\n{log}"
        );
    }
}
