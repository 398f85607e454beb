//! `wrk` as the HTTP load generator of the server benches: the HTTP counterpart of
//! `redis-benchmark` (one C event loop, a few µs of CPU per request), so on a small machine the
//! load generator does not take the CPU the measured server needs, and Pulse's row and the
//! reference row are driven alike.
//!
//! Each run is a Lua script (below) that counts answers by status and prints one JSON line
//! with wrk's own request count, duration and latency percentiles. A run either repeats one
//! request for a while ([`Load::Repeat`]) or sends each prepared request exactly once
//! ([`Load::EachOnce`]: one distinct buyer per request).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// What wrk sends.
pub enum Load<'a> {
    /// `GET` of the URL's path, over and over, for this long.
    Repeat(Duration),
    /// One `method` of the URL's path per header set, each exactly once, spread over the
    /// connections; the run ends when every one is answered.
    EachOnce {
        /// `POST`, `GET`, ...
        method: &'a str,
        /// Each request's headers, as `name: value` lines; a header named [`BODY`] is the
        /// request's body instead (one line, as compact JSON is).
        requests: &'a [Vec<(String, String)>],
    },
}

/// The pseudo-header of an [`Load::EachOnce`] request that holds its body.
pub const BODY: &str = "@body";

/// What one wrk run measured.
#[derive(Debug, Clone, Deserialize)]
pub struct WrkRun {
    /// Requests answered.
    pub requests: usize,
    /// Wall time of the run, µs.
    pub duration_us: f64,
    /// wrk's own CPU time over the run (user + system), µs: with [`Load::Repeat`] its whole
    /// life, with [`Load::EachOnce`] from the first request to the last answer.
    pub cpu_us: f64,
    /// Socket errors (connect, read, write, timeout); must be 0.
    pub socket_errors: usize,
    /// Answers by status code.
    pub statuses: BTreeMap<String, usize>,
    /// Latency percentiles, µs.
    pub p50_us: f64,
    /// 95th percentile, µs.
    pub p95_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
}

impl WrkRun {
    /// Answers with `status`.
    pub fn with_status(&self, status: u16) -> usize {
        self.statuses.get(&status.to_string()).copied().unwrap_or(0)
    }

    /// Wall time.
    pub fn elapsed(&self) -> Duration {
        Duration::from_secs_f64(self.duration_us / 1e6)
    }

    /// Throughput, requests per second.
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed().as_secs_f64().max(f64::EPSILON)
    }

    /// The percentiles as samples for a [`super::Measurement`].
    pub fn latencies(&self) -> Vec<Duration> {
        super::percentiles_as_samples(self.p50_us / 1e3, self.p95_us / 1e3, self.p99_us / 1e3)
    }
}

/// The part of the script every run has: `setup` keeps the thread (wrk runs one here),
/// `response` counts statuses, `done` prints the JSON line. `finished`/`started` (µs, set by the
/// each-once part) give the run's own wall time, without wrk's start-up and its closing sleep.
const COMMON: &str = r#"
local ffi = require("ffi")
ffi.cdef[[
  typedef struct { long tv_sec; long tv_nsec; } pulse_timespec;
  int clock_gettime(int clock, pulse_timespec *ts);
  typedef struct { long user_s; long user_us; long system_s; long system_us; long rest[14]; } pulse_rusage;
  int getrusage(int who, pulse_rusage *usage);
  int getpid(void);
  int kill(int pid, int signal);
]]
local clock = ffi.new("pulse_timespec")
function now_us()
  ffi.C.clock_gettime(1, clock)
  return tonumber(clock.tv_sec) * 1e6 + tonumber(clock.tv_nsec) / 1e3
end

local usage = ffi.new("pulse_rusage")
-- CPU time of this wrk process so far, µs.
function cpu_us()
  ffi.C.getrusage(0, usage)
  return (tonumber(usage.user_s) + tonumber(usage.system_s)) * 1e6 + tonumber(usage.user_us) + tonumber(usage.system_us)
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

statuses = {}
answered = 0
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  answered = answered + 1
  if finish_after ~= nil and answered >= finish_after then
    finished, cpu_finished = now_us(), cpu_us()
    wrk.thread:stop()
    -- wrk's main thread sleeps for -d; SIGINT ends the sleep, as Ctrl-C would.
    ffi.C.kill(ffi.C.getpid(), 2)
  end
end

function done(summary, latency, requests)
  local thread = threads[1]
  local counts, parts = thread:get("statuses"), {}
  for status, n in pairs(counts) do
    table.insert(parts, string.format('"%d":%d', status, n))
  end
  local duration, cpu = summary.duration, cpu_us()
  local started, finished = thread:get("started"), thread:get("finished")
  if started ~= nil and finished ~= nil then
    duration = finished - started
    cpu = thread:get("cpu_finished") - thread:get("cpu_started")
  end
  local e = summary.errors
  io.write(string.format(
    '\nWRK-RESULT {"requests":%d,"duration_us":%f,"cpu_us":%f,"socket_errors":%d,"statuses":{%s},"p50_us":%f,"p95_us":%f,"p99_us":%f}\n',
    summary.requests, duration, cpu, e.connect + e.read + e.write + e.timeout,
    table.concat(parts, ","), latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"#;

/// The each-once part: `init` formats every request of the file, `request` sends the next,
/// `delay` (which wrk asks before every request of a connection, its first too) holds a
/// connection back once every request is granted to one, and the run finishes when all are
/// answered.
const EACH_ONCE: &str = r#"
function init(args)
  local path, file, method = args[1], args[2], args[3]
  prepared = {}
  local headers, body = {}, nil
  for line in io.lines(file) do
    if line == "" then
      table.insert(prepared, wrk.format(method, path, headers, body))
      headers, body = {}, nil
    else
      local name, value = line:match("^([^:]+): (.*)$")
      if name == "@body" then
        body = value
      else
        headers[name] = value
      end
    end
  end
  finish_after = #prepared
  granted = 0
  sent = 0
  checked = false
end

function request()
  if not checked then
    -- wrk asks once before the run to check the request's syntax; nothing is sent.
    checked = true
    return prepared[1]
  end
  if sent == 0 then
    started, cpu_started = now_us(), cpu_us()
  end
  sent = sent + 1
  return prepared[sent]
end

function delay()
  if granted < #prepared then
    granted = granted + 1
    return 0
  end
  return 3600000
end
"#;

/// Runs wrk against `url` with `connections` connections on one thread (as redis-benchmark
/// runs on one), sending `load`. Fails when wrk is missing or reports socket errors.
pub async fn run(url: &str, connections: usize, load: Load<'_>) -> anyhow::Result<WrkRun> {
    let dir = pulse_kit::testing::TempDir::new("wrk");
    let script = dir.path().join("bench.lua");
    let path = path_of(url)?;
    let mut command = tokio::process::Command::new("wrk");
    command
        .args(["-t", "1", "-c", &connections.to_string()])
        .args(["--timeout", "30s"])
        .arg("-s")
        .arg(&script);
    match load {
        Load::Repeat(duration) => {
            std::fs::write(&script, COMMON)?;
            command
                .args(["-d", &format!("{}s", duration.as_secs().max(1))])
                .arg(url);
        }
        Load::EachOnce { method, requests } => {
            if requests.len() < connections {
                bail!(
                    "{} requests for {connections} connections: each connection needs one",
                    requests.len()
                );
            }
            std::fs::write(&script, format!("{COMMON}{EACH_ONCE}"))?;
            let file = dir.path().join("requests.txt");
            std::fs::write(&file, request_file(requests))?;
            // The run ends itself once every request is answered; -d is only a bound.
            command
                .args(["-d", "600s", url, "--", &path])
                .arg(&file)
                .arg(method);
        }
    }
    let output = command
        .output()
        .await
        .context("wrk is not installed (`./dev bench` installs it: apt install wrk)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let json = stdout
        .lines()
        .find_map(|l| l.strip_prefix("WRK-RESULT "))
        .with_context(|| format!("no result from wrk: {stdout}"))?;
    let run: WrkRun = serde_json::from_str(json).with_context(|| format!("wrk said {json}"))?;
    if run.socket_errors > 0 {
        bail!("wrk saw {} socket errors: {stdout}", run.socket_errors);
    }
    Ok(run)
}

/// Requests as the script reads them: `name: value` lines, a blank line after each request.
fn request_file(requests: &[Vec<(String, String)>]) -> String {
    let mut text = String::new();
    for headers in requests {
        for (name, value) in headers {
            text.push_str(name);
            text.push_str(": ");
            text.push_str(value);
            text.push('\n');
        }
        text.push('\n');
    }
    text
}

/// The path and query of `url` (`http://host:port/path?query`).
fn path_of(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url} is not an http:// URL"))?;
    Ok(rest
        .find('/')
        .map_or_else(|| "/".to_owned(), |at| rest[at..].to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_gives_its_path_and_query() {
        assert_eq!(
            path_of("http://127.0.0.1:8080/v1/a?b=c").expect("an http URL"),
            "/v1/a?b=c"
        );
        assert_eq!(path_of("http://127.0.0.1:8080").expect("an http URL"), "/");
        assert!(path_of("https://x/").is_err());
    }

    #[test]
    fn requests_are_written_as_header_blocks() {
        let requests = vec![
            vec![("A".to_owned(), "1".to_owned())],
            vec![
                ("A".to_owned(), "2".to_owned()),
                ("B".to_owned(), "x y".to_owned()),
            ],
        ];
        assert_eq!(request_file(&requests), "A: 1\n\nA: 2\nB: x y\n\n");
    }
}
