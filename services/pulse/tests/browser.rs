//! The web app in a real browser: France and Germany each run `pulse serve --target all` on the
//! real servers (identity's EdDSA tokens, the sandbox SMS and payment providers), and
//! `tests/browser/journeys.mjs` drives Debian's Chromium headless through playwright-core: every
//! journey in French and in German, at a desktop and a phone viewport, one booking by keyboard
//! alone, axe-core on each page (see the script's header). `./dev test` installs Chromium and
//! the script's pinned npm packages, and says where they are (`PULSE_CHROMIUM`,
//! `PULSE_BROWSER_MODULES`).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Ports, Process};
use pulse_kit::testing::{self, TestDatabase};
use serde_json::json;

/// One country's `pulse serve --target all`.
struct Country {
    _db: TestDatabase,
    _process: Process,
    ports: Ports,
}

/// The country's settings over France's defaults of [`common::serve`].
struct Tenant {
    code: &'static str,
    timezone: &'static str,
    locale: &'static str,
}

impl Country {
    async fn start(tenant: &Tenant, client: &reqwest::Client) -> Self {
        let db = TestDatabase::create().await;
        let instance = format!(
            "web{}{}",
            tenant.code.to_ascii_lowercase(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let dir = common::work_dir(&instance);
        let ports = Ports::free();
        let mut command = common::serve("all", &db.url, &instance, ports);
        command
            .env("PULSE_COUNTRY__CODE", tenant.code)
            .env("PULSE_COUNTRY__TIMEZONE", tenant.timezone)
            .env("PULSE_COUNTRY__LOCALE", tenant.locale)
            // Identity's tokens for the app; HS256 for the test's administrator.
            .env("PULSE_JWT_ALGORITHMS", "EdDSA,HS256")
            .env(
                "PULSE_JWKS_URL",
                format!("http://127.0.0.1:{}/.well-known/jwks.json", ports.http),
            )
            .env(
                "PULSE_IDENTITY_KEYRING_SECRET_FILE",
                common::keyring_file(&dir),
            )
            .env("PULSE_IDENTITY_SMS_PROVIDER", "sandbox")
            .env("PULSE_IDENTITY_SANDBOX_SMS_FILE", dir.join("sms.jsonl"))
            .env(
                "PULSE_NOTIFIER_SANDBOX_SMS_FILE",
                dir.join("notifier-sms.jsonl"),
            )
            .env("PULSE_IDENTITY_OTP_SENDS_PER_ADDRESS_PER_HOUR", "1000")
            .env(
                "PULSE_MARKETING_GRPC_URL",
                format!("http://127.0.0.1:{}", ports.grpc),
            )
            .env("PULSE_PAYMENT_PROVIDER", "sandbox")
            .env("PULSE_DB_MAX_CONNECTIONS", "6");
        let process = Process::spawn(command, dir.join("pulse.log"));
        common::wait_ready(client, ports.http, &process, tenant.code).await;
        Self {
            _db: db,
            _process: process,
            ports,
        }
    }
}

fn chromium() -> PathBuf {
    let path = PathBuf::from(
        std::env::var("PULSE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned()),
    );
    assert!(
        path.exists(),
        "no Chromium at {}: `./dev test` installs Debian's chromium (or set PULSE_CHROMIUM)",
        path.display()
    );
    path
}

fn browser_modules() -> PathBuf {
    let path = std::env::var("PULSE_BROWSER_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/pulse/browser/node_modules")
        });
    assert!(
        path.join("playwright-core").exists() && path.join("axe-core").exists(),
        "no playwright-core and axe-core in {}: `./dev test` installs them from tests/browser/package-lock.json (or set PULSE_BROWSER_MODULES)",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_journey_in_french_and_german_on_desktop_and_phone() {
    let chromium = chromium();
    let modules = browser_modules();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client");
    let france = Tenant {
        code: "FR",
        timezone: "Europe/Paris",
        locale: "fr-FR",
    };
    let germany = Tenant {
        code: "DE",
        timezone: "Europe/Berlin",
        locale: "de-DE",
    };
    let (fr, de) = tokio::join!(
        Country::start(&france, &client),
        Country::start(&germany, &client)
    );
    let countries = json!([
        {
            "code": "FR", "lang": "fr", "timezone": france.timezone,
            "url": format!("http://127.0.0.1:{}", fr.ports.http),
            "adminToken": testing::token("web-admin-fr", &["admin"], "FR"),
            "phoneBase": "+33612", "lat": 48.8566, "lng": 2.3522,
        },
        {
            "code": "DE", "lang": "de", "timezone": germany.timezone,
            "url": format!("http://127.0.0.1:{}", de.ports.http),
            "adminToken": testing::token("web-admin-de", &["admin"], "DE"),
            "phoneBase": "+4915112", "lat": 52.52, "lng": 13.405,
        },
    ]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser/journeys.mjs");
    let artifacts = common::work_dir(&format!(
        "browser-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    let output = tokio::process::Command::new("node")
        .arg(&script)
        .env("PULSE_BROWSER_COUNTRIES", countries.to_string())
        .env("PULSE_BROWSER_MODULES", &modules)
        .env("PULSE_CHROMIUM", &chromium)
        .env("PULSE_BROWSER_ARTIFACTS", &artifacts)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(600), output)
        .await
        .expect("the journeys finish within 10 minutes")
        .expect("node runs (Node.js 20 is on the machine)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the browser journeys failed ({}):\n{stdout}\n{stderr}\nscreenshots in {}",
        output.status,
        artifacts.display()
    );
    let only = std::env::var("PULSE_BROWSER_ONLY").unwrap_or_default();
    for run in ["FR-desktop", "FR-phone", "DE-desktop", "DE-phone"]
        .into_iter()
        .filter(|run| run.starts_with(only.as_str()))
    {
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(run) && l.ends_with("passed")),
            "{run} did not run:\n{stdout}"
        );
    }
}
