//! The sandbox SMS provider: appends each message to a JSON-lines file
//! (`{"to":…,"body":…,"at":…}`), where a developer reads it. It runs only in
//! development mode (the settings refuse it otherwise).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use serde::Serialize;

use super::{SmsError, SmsSender};

/// A JSON-lines file that whole lines are appended to, one writer at a time.
#[derive(Debug, Clone)]
pub struct JsonLines {
    path: Arc<PathBuf>,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl JsonLines {
    /// The file at `path` (created on the first line).
    pub fn new(path: PathBuf) -> Self {
        Self {
            path: Arc::new(path),
            lock: Arc::default(),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` as one line.
    pub async fn append(&self, record: &impl Serialize) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        let _one_writer = self.lock.lock().await;
        let path = Arc::clone(&self.path);
        tokio::task::spawn_blocking(move || {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path.as_path())?;
            file.write_all(&line)
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

/// One recorded message.
#[derive(Debug, Serialize)]
struct Message<'a> {
    to: &'a str,
    body: &'a str,
    at: chrono::DateTime<Utc>,
}

/// Records messages instead of sending them.
#[derive(Debug, Clone)]
pub struct SandboxSms {
    file: JsonLines,
}

impl SandboxSms {
    /// A sandbox appending to `file`.
    pub fn new(file: PathBuf) -> Self {
        Self {
            file: JsonLines::new(file),
        }
    }
}

#[async_trait]
impl SmsSender for SandboxSms {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    async fn send(
        &self,
        to: &str,
        body: &str,
        _idempotency_key: Option<&str>,
    ) -> Result<(), SmsError> {
        let message = Message {
            to,
            body,
            at: Utc::now(),
        };
        self.file.append(&message).await.map_err(|err| {
            SmsError::Unavailable(format!(
                "the sandbox cannot write {}: {err}",
                self.file.path().display()
            ))
        })
    }
}
