//! Local stand-ins of the notifier's providers for one test: an SMTP server and a
//! Twilio-compatible SMS API (`scripts/provider-stand-ins.py`), on free loopback ports, that keep
//! every e-mail and SMS for the test to read back.
//!
//! Two processes of the script run per fixture: the *store* (`--http`: the SMS API, the reading
//! API, and every message) and the *SMTP server* (`--smtp --deliver-to <store>`), which hands each
//! e-mail to the store as it arrives. So [`ProviderStandIns::stop_smtp`] kills the SMTP process
//! alone (SIGKILL: connections refused, as with a real outage) while SMS keeps working and no
//! e-mail received before is lost, and [`ProviderStandIns::start_smtp`] starts it again on the
//! same port.
//!
//! The interpreter is `PULSE_STAND_INS_PYTHON` (set by `./dev test` and `./dev deps` to a venv
//! with aiosmtpd), else `python3`; the script is `PULSE_STAND_INS_SCRIPT`, else the repository's.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::{TempDir, free_port};

/// How long a stand-in process may take to listen.
const START_WITHIN: Duration = Duration::from_secs(20);

/// The SMTP server and the Twilio-compatible SMS API of one test; dropping it kills both.
#[derive(Debug)]
pub struct ProviderStandIns {
    smtp_port: u16,
    http_port: u16,
    store: Option<Child>,
    smtp: Option<Child>,
    /// The processes' logs (`store.log`, `smtp.log`), quoted when one fails to start.
    dir: TempDir,
    client: reqwest::Client,
}

/// An e-mail the SMTP stand-in received.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedEmail {
    /// The `Message-ID` header, without its angle brackets (`""` when absent).
    pub message_id: String,
    /// The decoded `From` header (`Pulse <no-reply@pulse.localhost>`).
    pub from: String,
    /// The envelope recipients (`RCPT TO`), Bcc included.
    pub to: Vec<String>,
    /// The decoded `Subject` header.
    pub subject: String,
    /// The decoded text/plain part, lines ending in `\n` (`""` when absent).
    pub text: String,
    /// The decoded text/html part, lines ending in `\n` (`""` when absent).
    pub html: String,
    /// The user of the SMTP `AUTH` the sender gave (any credentials are accepted), if any.
    pub auth_user: Option<String>,
    /// Every header's first value, decoded, by lower-case name (`list-unsubscribe`, ...).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

/// An SMS the SMS stand-in accepted (201); a replayed `Idempotency-Key` adds none.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedSms {
    /// The message's sid (`SM...`), as answered to the sender.
    pub sid: String,
    /// The `To` field.
    pub to: String,
    /// The `From` field.
    pub from: String,
    /// The `Body` field.
    pub body: String,
    /// The request's `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
}

#[derive(Deserialize)]
struct Messages<T> {
    messages: Vec<T>,
}

impl ProviderStandIns {
    /// The SMS account (basic-auth user) the stand-in expects with [`Self::SMS_AUTH_TOKEN`].
    pub const SMS_ACCOUNT: &'static str = "ACtest";
    /// The SMS API's basic-auth password; any other answers 401 (Twilio's code 20003).
    pub const SMS_AUTH_TOKEN: &'static str = "test-token";

    /// Starts both processes on free loopback ports and waits until the HTTP API answers
    /// `/healthz` and the SMTP server greets. Panics, naming `PULSE_STAND_INS_PYTHON` and
    /// `./dev test`, when the interpreter or aiosmtpd is missing.
    pub async fn start() -> Self {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client");
        let mut stand_ins = Self {
            smtp_port: free_port(),
            http_port: free_port(),
            store: None,
            smtp: None,
            dir: TempDir::new("stand-ins"),
            client,
        };
        let http = format!("127.0.0.1:{}", stand_ins.http_port);
        let store = stand_ins.spawn(
            "store",
            &["--http", &http, "--sms-auth-token", Self::SMS_AUTH_TOKEN],
        );
        stand_ins.store = Some(store);
        stand_ins.wait_http().await;
        stand_ins.start_smtp().await;
        stand_ins
    }

    /// `smtp://127.0.0.1:<port>` (no TLS, no credentials needed; any are accepted).
    pub fn smtp_url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.smtp_port)
    }

    /// The SMTP server's port (the same after [`Self::start_smtp`]).
    pub fn smtp_port(&self) -> u16 {
        self.smtp_port
    }

    /// `http://127.0.0.1:<port>`: the Twilio-compatible API's base URL (messages are created at
    /// `/2010-04-01/Accounts/{AccountSid}/Messages.json`), also the reading API's.
    pub fn sms_base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Every e-mail received so far, in arrival order.
    pub async fn emails(&self) -> Vec<ReceivedEmail> {
        self.get::<Messages<ReceivedEmail>>("/api/v1/messages")
            .await
            .messages
    }

    /// Every SMS accepted so far, in arrival order.
    pub async fn sms(&self) -> Vec<ReceivedSms> {
        self.get::<Messages<ReceivedSms>>("/api/v1/sms")
            .await
            .messages
    }

    /// Waits until at least `count` e-mails arrived (fails the test after `within`); all of them.
    pub async fn wait_emails(&self, count: usize, within: Duration) -> Vec<ReceivedEmail> {
        let started = Instant::now();
        loop {
            let emails = self.emails().await;
            if emails.len() >= count {
                return emails;
            }
            assert!(
                started.elapsed() < within,
                "{} e-mail(s) arrived within {within:?}, expected {count}: {emails:#?}",
                emails.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until at least `count` SMS arrived (fails the test after `within`); all of them.
    pub async fn wait_sms(&self, count: usize, within: Duration) -> Vec<ReceivedSms> {
        let started = Instant::now();
        loop {
            let sms = self.sms().await;
            if sms.len() >= count {
                return sms;
            }
            assert!(
                started.elapsed() < within,
                "{} SMS arrived within {within:?}, expected {count}: {sms:#?}",
                sms.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Forgets every e-mail, SMS, idempotency key and armed failure.
    pub async fn clear(&self) {
        for path in ["/api/v1/messages", "/api/v1/sms"] {
            self.send(self.client.delete(self.url(path))).await;
        }
    }

    /// Takes SMTP down: SIGKILL to the SMTP process, so connections are refused; SMS and every
    /// e-mail received so far stay.
    pub async fn stop_smtp(&mut self) {
        if let Some(mut child) = self.smtp.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let refused = tokio::net::TcpStream::connect(("127.0.0.1", self.smtp_port))
            .await
            .is_err();
        assert!(
            refused,
            "SMTP port {} still accepts connections",
            self.smtp_port
        );
    }

    /// Starts SMTP (again) on the same port and waits for its greeting; nothing when it runs.
    pub async fn start_smtp(&mut self) {
        if let Some(child) = self.smtp.as_mut()
            && child.try_wait().ok().flatten().is_none()
        {
            return;
        }
        let smtp = format!("127.0.0.1:{}", self.smtp_port);
        let store = self.sms_base_url();
        self.smtp = Some(self.spawn("smtp", &["--smtp", &smtp, "--deliver-to", &store]));
        self.wait_smtp().await;
    }

    /// The next `count` SMS requests fail with HTTP `status` (Twilio's error shape, code
    /// 20000 + status) before any other check, and store nothing (retry tests).
    pub async fn fail_sms(&self, status: u16, count: u32) {
        let body = serde_json::json!({ "status": status, "count": count });
        self.send(self.client.post(self.url("/api/v1/sms/fail")).json(&body))
            .await;
    }

    /// The next `count` e-mails are refused at the end of DATA with SMTP reply `code` (4xx:
    /// temporary, 5xx: permanent), and not stored.
    pub async fn fail_smtp(&self, code: u16, count: u32) {
        let body = serde_json::json!({ "code": code, "count": count });
        self.send(
            self.client
                .post(self.url("/api/v1/messages/fail"))
                .json(&body),
        )
        .await;
    }

    /// How many SMS create requests arrived, whatever their outcome (401, 400, armed failures,
    /// replays included).
    pub async fn sms_requests(&self) -> u64 {
        let list: serde_json::Value = self.get("/api/v1/sms").await;
        list["requests"].as_u64().unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sms_base_url())
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let response = self.send(self.client.get(self.url(path))).await;
        response
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {path} of the provider stand-ins: bad JSON: {e}"))
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> reqwest::Response {
        let response = request.send().await.unwrap_or_else(|e| {
            panic!(
                "the provider stand-ins' HTTP API does not answer: {e}\n{}",
                self.logs()
            )
        });
        assert!(
            response.status().is_success(),
            "the provider stand-ins answered {} to {}",
            response.status(),
            response.url()
        );
        response
    }

    /// Starts one process of the script, its stderr appended to `<dir>/<name>.log`.
    fn spawn(&self, name: &str, args: &[&str]) -> Child {
        let python = std::env::var("PULSE_STAND_INS_PYTHON")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "python3".to_owned());
        let script = std::env::var_os("PULSE_STAND_INS_SCRIPT")
            .filter(|s| !s.is_empty())
            .map_or_else(
                || {
                    PathBuf::from(concat!(
                        env!("CARGO_MANIFEST_DIR"),
                        "/../../scripts/provider-stand-ins.py"
                    ))
                },
                PathBuf::from,
            );
        assert!(
            script.is_file(),
            "the provider stand-ins' script {} is missing (PULSE_STAND_INS_SCRIPT)",
            script.display()
        );
        let log_path = self.dir.path().join(format!("{name}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", log_path.display()));
        Command::new(&python)
            .arg(&script)
            .args(args)
            .arg("--exit-with-parent")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `{python}` for the provider stand-ins: {e}. Run the tests with \
                     `./dev test`, or set PULSE_STAND_INS_PYTHON to a Python >= 3.11 with \
                     aiosmtpd (`eval \"$(./dev deps)\"` sets it)"
                )
            })
    }

    /// Fails the test with the logs when a process exited.
    fn check_alive(&mut self, what: &str) {
        let child = if what == "smtp" {
            self.smtp.as_mut()
        } else {
            self.store.as_mut()
        };
        if let Some(status) = child.and_then(|c| c.try_wait().ok().flatten()) {
            panic!(
                "the provider stand-ins' {what} process exited ({status}) at start. It needs a \
                 Python >= 3.11 with aiosmtpd: run the tests with `./dev test`, or set \
                 PULSE_STAND_INS_PYTHON (`eval \"$(./dev deps)\"` sets it).\n{}",
                self.logs()
            );
        }
    }

    async fn wait_http(&mut self) {
        let started = Instant::now();
        let url = self.url("/healthz");
        loop {
            let ok = self
                .client
                .get(&url)
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return;
            }
            self.check_alive("store");
            assert!(
                started.elapsed() < START_WITHIN,
                "the provider stand-ins' HTTP API did not answer {url} within {START_WITHIN:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_smtp(&mut self) {
        let started = Instant::now();
        loop {
            if let Ok(Ok(greeting)) =
                tokio::time::timeout(Duration::from_secs(2), smtp_greeting(self.smtp_port)).await
                && !greeting.is_empty()
            {
                assert!(
                    greeting.starts_with("220"),
                    "the SMTP stand-in greeted with {greeting:?}"
                );
                return;
            }
            self.check_alive("smtp");
            assert!(
                started.elapsed() < START_WITHIN,
                "the SMTP stand-in did not greet on 127.0.0.1:{} within {START_WITHIN:?}\n{}",
                self.smtp_port,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The processes' logs, for failure messages.
    fn logs(&self) -> String {
        ["store", "smtp"]
            .iter()
            .map(|name| {
                let path = self.dir.path().join(format!("{name}.log"));
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                format!("--- {name} log:\n{}", text.trim_end())
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Connects, reads the greeting line and says QUIT.
async fn smtp_greeting(port: u16) -> std::io::Result<String> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let _ = reader.get_mut().write_all(b"QUIT\r\n").await;
    Ok(line.trim_end().to_owned())
}

impl Drop for ProviderStandIns {
    fn drop(&mut self) {
        for child in [self.smtp.take(), self.store.take()].into_iter().flatten() {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
