//! In-app notifications: a user's list (paged, with the unread count), marking one read, and
//! the live stream.
//!
//! Whichever replica writes a notification announces it with PostgreSQL `NOTIFY` in the same
//! transaction; every replica `LISTEN`s ([`Hub::run`]) and wakes its open streams of that user,
//! which read what is new from the table. A stream position is the notification's `seq`, the
//! SSE event id, so a client that reconnects with `Last-Event-ID` gets exactly what it missed.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::deliveries::{Deliveries, INBOX_CHANNEL, WORK_CHANNEL};

/// One in-app notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct InboxItem {
    /// Id.
    pub id: Uuid,
    /// Position in the user's stream (the SSE event id).
    pub seq: i64,
    /// Kind (`AppointmentBooked`, …).
    pub kind: String,
    /// Title.
    pub title: String,
    /// Text.
    pub body: String,
    /// Sent whatever the user's preferences.
    pub required: bool,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// When the user read it, if they did.
    pub read_at: Option<DateTime<Utc>>,
}

/// A page of notifications, newest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InboxPage {
    /// The notifications.
    pub items: Vec<InboxItem>,
    /// Unread notifications in total.
    pub unread_count: i64,
    /// Pass as `before` for the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

/// Who may be woken: one user, or everyone (after the listener reconnected and may have
/// missed announcements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// This user's streams.
    User(String),
    /// Every stream.
    All,
}

/// The fan-out of announcements to this replica's open streams.
#[derive(Debug, Clone)]
pub struct Hub {
    sender: broadcast::Sender<Wake>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(1024).0,
        }
    }
}

impl Hub {
    /// A receiver of announcements.
    pub fn subscribe(&self) -> broadcast::Receiver<Wake> {
        self.sender.subscribe()
    }

    /// Listens to notifier's channels until `shutdown`: new deliveries wake `deliveries`'
    /// workers, new in-app notifications wake the streams of their user.
    pub async fn run(self, db: PgPool, deliveries: Deliveries, shutdown: CancellationToken) {
        loop {
            let mut listener = match PgListener::connect_with(&db).await {
                Ok(listener) => listener,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot LISTEN for notifications; retrying");
                    if sleep_or_stop(&shutdown, Duration::from_secs(1)).await {
                        return;
                    }
                    continue;
                }
            };
            if let Err(err) = listener.listen_all([WORK_CHANNEL, INBOX_CHANNEL]).await {
                tracing::warn!(error = %err, "cannot LISTEN for notifications; retrying");
                if sleep_or_stop(&shutdown, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
            // Anything announced while not listening is picked up by a fresh look.
            let _ = self.sender.send(Wake::All);
            deliveries.wake();
            loop {
                let next = tokio::select! {
                    () = shutdown.cancelled() => return,
                    next = listener.try_recv() => next,
                };
                match next {
                    Ok(Some(note)) if note.channel() == INBOX_CHANNEL => {
                        let _ = self.sender.send(Wake::User(note.payload().to_owned()));
                    }
                    Ok(Some(_)) => deliveries.wake(),
                    Ok(None) => {
                        // The connection was lost; sqlx reconnects on the next call.
                        let _ = self.sender.send(Wake::All);
                        deliveries.wake();
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "LISTEN connection failed; reconnecting");
                        break;
                    }
                }
            }
        }
    }
}

async fn sleep_or_stop(shutdown: &CancellationToken, wait: Duration) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(wait) => false,
    }
}

/// Why a notification could not be marked read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The user has no notification with this id.
    #[error("no notification {0}")]
    NotFound(Uuid),
    /// The database failed.
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// The in-app flow.
#[derive(Debug, Clone)]
pub struct Inbox {
    db: PgPool,
    hub: Arc<Hub>,
}

impl Inbox {
    /// The inbox over notifier's schema, woken by `hub`.
    pub fn new(db: PgPool, hub: Arc<Hub>) -> Self {
        Self { db, hub }
    }

    /// The hub that wakes streams.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Up to `size` of `user`'s notifications older than `before` (newest first).
    pub async fn page(
        &self,
        user: &str,
        before: Option<i64>,
        size: i64,
    ) -> Result<InboxPage, sqlx::Error> {
        let mut items: Vec<InboxItem> = sqlx::query_as(
            "SELECT id, seq, kind, title, body, required, created_at, read_at
             FROM inbox WHERE user_id = $1 AND seq < $2
             ORDER BY seq DESC LIMIT $3",
        )
        .bind(user)
        .bind(before.unwrap_or(i64::MAX))
        .bind(size + 1)
        .fetch_all(&self.db)
        .await?;
        let more = items.len() as i64 > size;
        items.truncate(usize::try_from(size).unwrap_or(0));
        let unread_count: i64 =
            sqlx::query_scalar("SELECT count(*) FROM inbox WHERE user_id = $1 AND read_at IS NULL")
                .bind(user)
                .fetch_one(&self.db)
                .await?;
        Ok(InboxPage {
            next_before: if more {
                items.last().map(|i| i.seq)
            } else {
                None
            },
            items,
            unread_count,
        })
    }

    /// Marks `user`'s notification `id` read (again: no change).
    pub async fn mark_read(&self, user: &str, id: Uuid) -> Result<InboxItem, ReadError> {
        let item: Option<InboxItem> = sqlx::query_as(
            "UPDATE inbox SET read_at = COALESCE(read_at, now())
             WHERE id = $1 AND user_id = $2
             RETURNING id, seq, kind, title, body, required, created_at, read_at",
        )
        .bind(id)
        .bind(user)
        .fetch_optional(&self.db)
        .await?;
        item.ok_or(ReadError::NotFound(id))
    }

    /// `user`'s notifications after stream position `after`, oldest first, at most `limit`.
    pub async fn after(
        &self,
        user: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<InboxItem>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, seq, kind, title, body, required, created_at, read_at
             FROM inbox WHERE user_id = $1 AND seq > $2
             ORDER BY seq LIMIT $3",
        )
        .bind(user)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.db)
        .await
    }

    /// The latest stream position of `user` (0 when they have none): where a stream opened
    /// without `Last-Event-ID` starts.
    pub async fn head(&self, user: &str) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT COALESCE(max(seq), 0) FROM inbox WHERE user_id = $1")
            .bind(user)
            .fetch_one(&self.db)
            .await
    }
}
