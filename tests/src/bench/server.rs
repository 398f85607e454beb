//! The server a bench measures: a separate `pulse serve --target all` process, the way a
//! country runs it, so its memory (peak RSS) and CPU are its own and not the load generator's.
//!
//! The binary is the release `pulse` next to `pulse-bench` (`./dev bench` builds both), or
//! `PULSE_BENCH_PULSE_BIN`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use pulse_kit::testing;

/// A running `pulse serve --target all`; stopped (SIGKILL) when dropped.
///
/// It accepts EdDSA tokens, the algorithm identity signs with, verified through a JWK set
/// served by the bench ([`ServerProcess::token`] mints them), so every request pays what a
/// real client's costs.
pub struct ServerProcess {
    child: std::process::Child,
    signing_key: testing::TestSigningKey,
    /// Serves the signing key's public half until the server is stopped.
    _jwks: testing::TestJwks,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Where it serves `/metrics`.
    pub admin_addr: SocketAddr,
    /// Its Redis keyspace (`fr-<instance>`).
    pub keyspace: String,
    dir: PathBuf,
}

/// Memory and CPU a process used, from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Peak resident set (`VmHWM`), MiB.
    pub peak_rss_mib: f64,
    /// User plus system CPU time, s.
    pub cpu_seconds: f64,
}

impl Usage {
    /// The usage of process `pid` so far (zero when `/proc` cannot tell).
    pub fn of(pid: u32) -> Self {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let peak_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        // Fields 14 and 15 of /proc/<pid>/stat, after the command in parentheses; clock ticks
        // are 100 per second on Linux.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ticks: f64 = stat
            .rsplit_once(") ")
            .map(|(_, rest)| {
                rest.split_whitespace()
                    .skip(11)
                    .take(2)
                    .filter_map(|v| v.parse::<f64>().ok())
                    .sum()
            })
            .unwrap_or(0.0);
        Self {
            peak_rss_mib: peak_kib / 1024.0,
            cpu_seconds: ticks / 100.0,
        }
    }
}

impl ServerProcess {
    /// Starts `pulse serve --target all` for France on `database` (migrated on start), real
    /// Redis and Kafka, sandbox providers, with `env` on top (country limits, pool size), and
    /// waits until it is ready.
    pub async fn start(database: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let binary = match std::env::var_os("PULSE_BENCH_PULSE_BIN") {
            Some(path) => PathBuf::from(path),
            None => std::env::current_exe()?
                .parent()
                .context("pulse-bench has no directory")?
                .join("pulse"),
        };
        if !binary.exists() {
            bail!(
                "{} is missing: build it with `cargo build --release -p pulse --bin pulse` (./dev bench does)",
                binary.display()
            );
        }
        let instance = format!("bench{}", &pulse_kit::new_id().simple().to_string()[24..]);
        let dir = std::env::temp_dir().join(format!("pulse-{instance}"));
        std::fs::create_dir_all(&dir)?;
        let (http, grpc) = (testing::free_port(), testing::free_port());
        let admin_addr = super::admin_addr()?;
        let admin_addr = if admin_addr.port() == 0 {
            SocketAddr::from(([127, 0, 0, 1], testing::free_port()))
        } else {
            admin_addr
        };
        let signing_key = testing::TestSigningKey::ed25519();
        let jwks = testing::TestJwks::start(&[&signing_key]).await;
        let log = std::fs::File::create(dir.join("pulse.log"))?;
        let child = std::process::Command::new(&binary)
            .args(["serve", "--target", "all"])
            .current_dir(&dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .env("PULSE_DATABASE_URL", database)
            .env("PULSE_REDIS_URL", testing::redis_url())
            .env("PULSE_KAFKA_BROKERS", testing::kafka_brokers().join(","))
            .env("PULSE_JWT_ALGORITHMS", "EdDSA")
            .env("PULSE_JWKS_URL", &jwks.url)
            .env("PULSE_JWT_ISSUER", testing::TEST_JWT_ISSUER)
            .env("PULSE_HTTP_ADDR", format!("127.0.0.1:{http}"))
            .env("PULSE_GRPC_ADDR", format!("127.0.0.1:{grpc}"))
            .env("PULSE_ADMIN_ADDR", admin_addr.to_string())
            .env("PULSE_DRAIN_SECONDS", "0")
            .env("PULSE_DEVELOPMENT_MODE", "true")
            .env("PULSE_MIGRATE_ON_START", "true")
            .env("PULSE_INSTANCE", &instance)
            .env("PULSE_KAFKA_PARTITIONS", "3")
            .env("PULSE_COUNTRY__CODE", "FR")
            .env("PULSE_COUNTRY__TIMEZONE", "Europe/Paris")
            .env("PULSE_COUNTRY__CURRENCY", "EUR")
            .env("PULSE_COUNTRY__LOCALE", "fr-FR")
            .envs(testing::sandbox_env(&dir, &testing::unique("whsec_bench")))
            .envs(env.iter().copied())
            // The allocator's own settings, when the bench is asked to try some.
            .envs(std::env::vars().filter(|(name, _)| name.starts_with("MIMALLOC_")))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut server = Self {
            child,
            signing_key,
            _jwks: jwks,
            base: format!("http://127.0.0.1:{http}"),
            admin_addr,
            keyspace: format!("fr-{instance}"),
            dir,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("pulse serve exited ({status}):\n{}", self.log_tail());
            }
            let probe = client
                .get(format!("{}/readyz", self.base))
                .timeout(Duration::from_millis(500))
                .send()
                .await;
            if probe.is_ok_and(|r| r.status() == 200) {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("pulse serve not ready within 60 s:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An EdDSA token for `subject` with `roles` in France, valid for an hour.
    pub fn token(&self, subject: &str, roles: &[&str]) -> String {
        self.signing_key.token(subject, roles, "FR")
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("pulse.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Its memory and CPU so far.
    pub fn usage(&self) -> Usage {
        Usage::of(self.child.id())
    }

    /// Stops it (SIGTERM, then SIGKILL after 10 s) and returns its usage just before.
    pub async fn stop(mut self) -> Usage {
        let usage = self.usage();
        crate::support::signal(self.child.id(), "TERM");
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        usage
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
