//! The OpenAPI contract: schemathesis runs every check (`--checks all`) and every phase (examples,
//! coverage, fuzzing, stateful through the document's links) against `pulse serve --target all`,
//! reading its own `GET /openapi.json`. Any finding fails the test with schemathesis' report:
//! a 5xx, an answer the document does not list (status, content type, headers, body schema), a
//! schema-valid request refused or an invalid one accepted, an auth that is not enforced…
//!
//! The server runs with what a client cannot influence lifted (rate limits) and local providers
//! (sandbox payments and SMS, files in the work directory). Schemathesis acts as a real client
//! where the contract says how one behaves (tests/schemathesis/hooks.py): a fresh
//! `Idempotency-Key` per operation, the payment provider's true `Stripe-Signature` on webhooks,
//! a bounded read of event streams. The generated test cases are counted from schemathesis'
//! JSON report: at least [`MIN_TEST_CASES`], so a document that stops yielding requests does
//! not pass unnoticed.
//!
//! Needs `PULSE_SCHEMATHESIS` (a schemathesis 4.32.5 executable; `./dev test` installs one and
//! sets it). The server's log, the report and schemathesis' own files are in
//! `$TMPDIR/pulse-openapi<id>/`, kept when the test fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Ports, Process};
use pulse_kit::testing::{self, TestDatabase};

/// The schemathesis `./dev` installs; hooks.py is written for it.
const SCHEMATHESIS_VERSION: &str = "4.32.5";
/// The seed of the generated data: a failure reproduces with the same document and seed.
const SEED: &str = "42";
/// Test cases per operation and phase (schemathesis' `--max-examples`).
const MAX_EXAMPLES: &str = "25";
/// Fewer generated test cases than this and the run checked too little.
const MIN_TEST_CASES: u64 = 2_000;
/// The longest a request may take (an event stream is read for a second: hooks.py).
const REQUEST_TIMEOUT_SECONDS: &str = "15";

/// Where hooks.py and schemathesis.toml are.
fn schemathesis_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis")
}

#[tokio::test]
async fn every_operation_keeps_the_openapi_contract() {
    let schemathesis = std::env::var_os("PULSE_SCHEMATHESIS").unwrap_or_else(|| {
        panic!(
            "PULSE_SCHEMATHESIS is not set: run this test with `./dev test -p pulse --test openapi_contract` \
             (./dev installs schemathesis), or set it to a schemathesis 4.32.5 executable"
        )
    });

    let version = std::process::Command::new(&schemathesis)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run PULSE_SCHEMATHESIS={}: {e}",
                Path::new(&schemathesis).display()
            )
        });
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.contains(SCHEMATHESIS_VERSION),
        "PULSE_SCHEMATHESIS={} is {}, not schemathesis {SCHEMATHESIS_VERSION} (./dev installs it)",
        Path::new(&schemathesis).display(),
        version.trim()
    );

    let db = TestDatabase::create().await;
    let instance = format!(
        "openapi{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let dir = common::work_dir(&instance);
    let webhook_secret = testing::unique("whsec_contract");
    let ports = Ports::free();
    let mut command = common::serve("all", &db.url, &instance, ports);
    command
        .current_dir(&dir)
        .env("PULSE_DB_MAX_CONNECTIONS", "4")
        // Schemathesis sends thousands of requests as one client.
        .env("PULSE_COUNTRY__RATE_LIMITS__REQUESTS_PER_SECOND", "1000000")
        .env("PULSE_COUNTRY__RATE_LIMITS__BURST", "1000000")
        .env(
            "PULSE_COUNTRY__RATE_LIMITS__SECKILL_ATTEMPTS_PER_SECOND",
            "1000000",
        )
        .envs(testing::sandbox_env(&dir, &webhook_secret));
    let server = Process::spawn(command, dir.join("pulse.log"));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client");
    common::wait_ready(&client, ports.http, &server, "pulse serve --target all").await;

    // Practitioners with schedules and free slots, for the operations the links chain from a
    // search (slots, booking, cancelling, rescheduling).
    common::seed_france(&db.url, &instance, ports);
    // A user signed in by phone code, so that the caller's profile exists; the token carries
    // every role, so that every operation is reachable.
    let user = sign_in(&client, ports.http, &dir.join("identity-sms.jsonl")).await;
    let token = testing::token(&user, &["admin", "patient", "customer"], "FR");
    // Schemathesis keeps its files (.schemathesis/) in its working directory: this one.
    let cwd = dir.join("schemathesis");
    std::fs::create_dir_all(&cwd).expect("schemathesis directory");
    let report = cwd.join("report.json");
    let _ = std::fs::remove_file(&report);
    let hooks = schemathesis_dir();
    let started = Instant::now();
    let run = tokio::process::Command::new(&schemathesis)
        .arg("--config-file")
        .arg(hooks.join("schemathesis.toml"))
        .arg("run")
        .arg(format!("http://127.0.0.1:{}/openapi.json", ports.http))
        .args(["--checks", "all"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--seed", SEED])
        .args(["--max-examples", MAX_EXAMPLES])
        // Every operation gets all its test cases, findings or not: the count stays comparable.
        .arg("--continue-on-failure")
        .args(["--request-timeout", REQUEST_TIMEOUT_SECONDS])
        .args(["--output-sanitize", "true"])
        .arg("--no-color")
        .args(["--report", "json", "--report-json-path"])
        .arg(&report)
        .current_dir(&cwd)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &cwd)
        .env("PYTHONIOENCODING", "utf-8")
        // hooks.py is imported from the repository: no __pycache__ there.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONPATH", &hooks)
        .env("SCHEMATHESIS_HOOKS", "hooks")
        // Read by schemathesis.toml and hooks.py.
        .env("PULSE_SCHEMATHESIS_TOKEN", &token)
        .env("PULSE_SCHEMATHESIS_WEBHOOK_SECRET", &webhook_secret)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", Path::new(&schemathesis).display()));
    let elapsed = started.elapsed();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );

    assert!(
        run.status.success(),
        "schemathesis found that the server breaks its OpenAPI contract ({}, after {} s; \
         files in {}):\n{output}\n--- last lines of the server's log ({}):\n{}",
        run.status,
        elapsed.as_secs(),
        cwd.display(),
        server.log.display(),
        server.log_tail()
    );
    let generated = generated_test_cases(&report)
        .unwrap_or_else(|e| panic!("schemathesis' report {}: {e}\n{output}", report.display()));
    assert!(
        generated >= MIN_TEST_CASES,
        "schemathesis generated {generated} test cases, fewer than {MIN_TEST_CASES}: the document \
         or the run's settings leave too much untested\n{output}"
    );
    // Its warnings (operations it could not reach with real data) are worth a look: shown
    // with `--no-capture`.
    println!(
        "{output}\nschemathesis: {generated} test cases, no finding, in {} s",
        elapsed.as_secs()
    );
    // Nothing to look into: the server's log and schemathesis' files go.
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Signs a user in by phone code (the code read from the sandbox SMS file); their id.
async fn sign_in(client: &reqwest::Client, port: u16, sms_file: &Path) -> String {
    const PHONE: &str = "+33612345678";
    let base = format!("http://127.0.0.1:{port}");
    let sent = client
        .post(format!("{base}/v1/auth/otp"))
        .json(&serde_json::json!({ "phone": PHONE }))
        .send()
        .await
        .expect("POST /v1/auth/otp");
    assert_eq!(sent.status(), 202, "{:?}", sent.text().await);
    let texts = std::fs::read_to_string(sms_file).expect("the sandbox SMS file");
    let code = texts
        .lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|text| text["to"] == PHONE)
        .find_map(|text| text["body"].as_str().map(str::to_owned))
        .and_then(|body| {
            body.as_bytes()
                .windows(6)
                .find(|w| w.iter().all(u8::is_ascii_digit))
                .map(|w| String::from_utf8_lossy(w).into_owned())
        })
        .unwrap_or_else(|| panic!("no sign-in code to {PHONE} in {texts}"));
    let session: serde_json::Value = client
        .post(format!("{base}/v1/auth/token"))
        .json(&serde_json::json!({ "phone": PHONE, "code": code }))
        .send()
        .await
        .expect("POST /v1/auth/token")
        .json()
        .await
        .expect("a session");
    session["userId"]
        .as_str()
        .unwrap_or_else(|| panic!("no userId in {session}"))
        .to_owned()
}

/// `test_cases.generated` of schemathesis' JSON report.
fn generated_test_cases(report: &Path) -> Result<u64, String> {
    let text = std::fs::read_to_string(report).map_err(|e| e.to_string())?;
    let report: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    if report.get("complete").and_then(serde_json::Value::as_bool) != Some(true) {
        return Err("the run did not complete".to_owned());
    }
    report
        .pointer("/test_cases/generated")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| "no test_cases.generated".to_owned())
}
