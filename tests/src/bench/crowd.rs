//! A crowd of clients that send prepared HTTP/1.1 requests in rounds: every client sends its
//! request of a round at once, and the next round starts when all of them have their answer.
//!
//! Each client is one kept-alive connection, opened before the first round, and a request is
//! bytes made before measuring. Sending and reading them costs the load generator a few system
//! calls, as with wrk (which cannot hold its connections to rounds): on a two-core machine
//! shared with the server, a heavier client (reqwest and a task per request) would make the
//! server's answers wait for the generator's CPU.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Barrier;

/// One prepared `POST` with a JSON body.
pub struct PreparedPost {
    bytes: Vec<u8>,
}

impl PreparedPost {
    /// `POST path` to `host` with `headers` (name, value) and the JSON `body`.
    pub fn new(host: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Self {
        let mut text = format!(
            "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("\r\n");
        text.push_str(body);
        Self {
            bytes: text.into_bytes(),
        }
    }
}

/// What one request of a round got.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    /// When its first byte was sent.
    pub sent: Instant,
    /// The response's status code.
    pub status: u16,
    /// From the first byte sent to the last byte of the response read.
    pub latency: Duration,
}

/// Sends `rounds[r][c]` on client `c`'s connection to `addr` in round `r`; answers come back
/// in the same shape. The connections are opened before the first round.
pub async fn run_rounds(
    addr: std::net::SocketAddr,
    rounds: Vec<Vec<PreparedPost>>,
) -> anyhow::Result<Vec<Vec<Answer>>> {
    let clients = rounds.first().map_or(0, Vec::len);
    if rounds.iter().any(|round| round.len() != clients) {
        bail!("every round needs one request per client");
    }
    // Requests by client: client `c` sends `by_client[c][r]` in round `r`.
    let mut by_client: Vec<Vec<PreparedPost>> = (0..clients).map(|_| Vec::new()).collect();
    for round in rounds {
        for (client, request) in round.into_iter().enumerate() {
            by_client[client].push(request);
        }
    }
    let mut connections = Vec::with_capacity(clients);
    for _ in 0..clients {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        connections.push(stream);
    }
    let start = Arc::new(Barrier::new(clients));
    let tasks: Vec<_> = connections
        .into_iter()
        .zip(by_client)
        .map(|(mut stream, requests)| {
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                let mut buffer = Vec::with_capacity(4096);
                let mut answers = Vec::with_capacity(requests.len());
                for request in requests {
                    start.wait().await;
                    let sent = Instant::now();
                    stream.write_all(&request.bytes).await?;
                    let status = read_response(&mut stream, &mut buffer).await?;
                    answers.push(Answer {
                        sent,
                        status,
                        latency: sent.elapsed(),
                    });
                }
                anyhow::Ok(answers)
            })
        })
        .collect();
    let mut by_client_answers = Vec::with_capacity(clients);
    for task in tasks {
        by_client_answers.push(task.await??);
    }
    let rounds = by_client_answers.first().map_or(0, Vec::len);
    Ok((0..rounds)
        .map(|round| {
            by_client_answers
                .iter()
                .map(|answers| answers[round])
                .collect()
        })
        .collect())
}

/// Reads one response with a `content-length` body; returns its status.
async fn read_response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> anyhow::Result<u16> {
    buffer.clear();
    let head_end = loop {
        if let Some(at) = find(buffer, b"\r\n\r\n") {
            break at + 4;
        }
        if stream.read_buf(buffer).await? == 0 {
            bail!("the server closed the connection");
        }
    };
    let head = std::str::from_utf8(&buffer[..head_end]).context("response head")?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context("response status")?;
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())
                .flatten()
        })
        .context("a response without content-length")?;
    while buffer.len() < head_end + length {
        if stream.read_buf(buffer).await? == 0 {
            bail!("the server closed the connection mid-body");
        }
    }
    if buffer.len() > head_end + length {
        bail!("more bytes than one response");
    }
    Ok(status)
}

/// From the first request sent to the last answer read, of one round's `answers`.
pub fn round_duration(answers: &[Answer]) -> Duration {
    let first = answers.iter().map(|a| a.sent).min();
    let last = answers.iter().map(|a| a.sent + a.latency).max();
    match (first, last) {
        (Some(first), Some(last)) => last.duration_since(first),
        _ => Duration::ZERO,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
