//! What the tests that run the real `pulse` binary share: a child process with its log file,
//! and the environment every test process starts from.
#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use pulse_kit::testing;

/// One `pulse` process; killed (SIGKILL) when dropped.
pub struct Process {
    pub child: Child,
    pub log: PathBuf,
}

impl Process {
    /// Starts `command` with its stdout and stderr in `log`.
    pub fn spawn(mut command: Command, log: PathBuf) -> Self {
        let out = File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("pulse starts");
        Self { child, log }
    }

    /// `kill -9` and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last 30 lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The listeners of one process.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub http: u16,
    pub grpc: u16,
    pub admin: u16,
}

impl Ports {
    /// Three free loopback ports.
    pub fn free() -> Self {
        Self {
            http: testing::free_port(),
            grpc: testing::free_port(),
            admin: testing::free_port(),
        }
    }
}

/// `pulse serve --target <target>` with a clean environment: the servers `./dev test`
/// provides, `database`, the keyspace `instance`, `ports`, HS256 test tokens, France, and
/// development mode; callers add their own settings.
pub fn serve(target: &str, database: &str, instance: &str, ports: Ports) -> Command {
    pulse(&["serve", "--target", target], database, instance, ports)
}

/// `pulse <args>` with the environment of [`serve`] (`pulse seed --country FR` against the
/// database of a running server, for example).
pub fn pulse(args: &[&str], database: &str, instance: &str, ports: Ports) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pulse"));
    command
        .args(args)
        .env_clear()
        .env("RUST_LOG", "warn")
        .env("PULSE_DATABASE_URL", database)
        .env("PULSE_REDIS_URL", testing::redis_url())
        .env("PULSE_KAFKA_BROKERS", testing::kafka_brokers().join(","))
        .env("PULSE_JWT_SECRET", testing::TEST_JWT_SECRET)
        .env("PULSE_JWT_ISSUER", testing::TEST_JWT_ISSUER)
        .env("PULSE_HTTP_ADDR", format!("127.0.0.1:{}", ports.http))
        .env("PULSE_GRPC_ADDR", format!("127.0.0.1:{}", ports.grpc))
        .env("PULSE_ADMIN_ADDR", format!("127.0.0.1:{}", ports.admin))
        .env("PULSE_DRAIN_SECONDS", "0")
        .env("PULSE_DEVELOPMENT_MODE", "true")
        .env("PULSE_MIGRATE_ON_START", "true")
        .env("PULSE_INSTANCE", instance)
        .env("PULSE_COUNTRY__CODE", "FR")
        .env("PULSE_COUNTRY__TIMEZONE", "Europe/Paris")
        .env("PULSE_COUNTRY__CURRENCY", "EUR")
        .env("PULSE_COUNTRY__LOCALE", "fr-FR");
    command
}

/// `pulse seed --country FR` against the database of a running server: the demo practitioners,
/// with schedules and free slots.
pub fn seed_france(database: &str, instance: &str, ports: Ports) {
    let seeded = pulse(&["seed", "--country", "FR"], database, instance, ports)
        .output()
        .expect("pulse seed");
    assert!(
        seeded.status.success(),
        "pulse seed --country FR: {}",
        String::from_utf8_lossy(&seeded.stderr)
    );
}

/// Waits until `process` (`what`, for the message) answers `/readyz` with 200 on `port`; 60 s
/// at most, then the panic shows the end of its log.
pub async fn wait_ready(client: &reqwest::Client, port: u16, process: &Process, what: &str) {
    let started = std::time::Instant::now();
    loop {
        let probe = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .timeout(std::time::Duration::from_millis(500))
            .send()
            .await;
        if probe.is_ok_and(|r| r.status() == 200) {
            return;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{what} not ready within 60 s:\n{}",
            process.log_tail()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A directory for a test's logs and files: `$TMPDIR/pulse-<instance>`.
pub fn work_dir(instance: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pulse-{instance}"));
    std::fs::create_dir_all(&dir).expect("work directory");
    dir
}

/// Writes a keyring secret for identity into `dir`; returns its path.
pub fn keyring_file(dir: &Path) -> PathBuf {
    let path = dir.join("keyring");
    std::fs::write(
        &path,
        testing::unique("keyring-secret-of-a-test-run-0123456789"),
    )
    .expect("keyring file");
    path
}
