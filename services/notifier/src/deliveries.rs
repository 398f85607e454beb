//! The delivery flow: deliveries are created in the consumer's (or reminder job's) transaction
//! by [`enqueue`]; one worker per channel sends them.
//!
//! A worker takes a few due deliveries with `FOR UPDATE SKIP LOCKED` (so replicas share the work
//! without sending one twice), with their users' preferences; for each it asks identity how to
//! reach the user, renders the message, hands it to the provider and records the outcome, all
//! in the one transaction that holds the rows, which hands at most one message to a provider.
//! A process that dies before the commit rolls the rows back to pending: they are settled again
//! later, and that one message sent again — the one window where a provider can see a message
//! twice, closed by the provider's idempotency key where it has one (the SMS
//! `Idempotency-Key`, the e-mail `Message-ID`, both the delivery's id).
//!
//! Each provider has its own circuit breaker and its own worker, so SMTP being down holds
//! e-mails only: SMS and in-app messages go on. A failure waits an exponential, jittered delay;
//! after `max_attempts` the delivery is a dead letter, listed and retried through the admin API.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use pulse_kit::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
use pulse_kit::config::CountryConfig;
use pulse_kit::sms::SmsSender;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Clock;
use crate::channels::SendError;
use crate::content::Templates;
use crate::directory::{Directory, DirectoryError};
use crate::domain::{self, Channel, Gate, Language, Notice, Preferences};
use pulse_kit::email::{Mail, Mailer};

/// PostgreSQL channel that wakes the workers when deliveries are enqueued.
pub const WORK_CHANNEL: &str = "notifier_work";
/// PostgreSQL channel on which a new in-app notification is announced (payload: the user).
pub const INBOX_CHANNEL: &str = "notifier_inbox";

/// Enqueues `notice` for `recipient` on each of its channels, on `tx`; a source already
/// enqueued (an event handled twice) adds nothing. Wakes the workers when `tx` commits.
pub async fn enqueue(
    tx: &mut PgConnection,
    source_id: Uuid,
    recipient: &str,
    notice: &Notice,
    occurred_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let notices = [Enqueued {
        source_id,
        recipient,
        notice,
        occurred_at,
    }];
    enqueue_all(tx, &notices, now).await
}

/// A notice to enqueue with [`enqueue_all`].
#[derive(Debug, Clone, Copy)]
pub struct Enqueued<'a> {
    /// What caused it: the event's id, or for a reminder the appointment's.
    pub source_id: Uuid,
    /// The user.
    pub recipient: &'a str,
    /// What it says.
    pub notice: &'a Notice,
    /// When its event happened.
    pub occurred_at: DateTime<Utc>,
}

/// [`enqueue`] of many notices (a batch of events) in one statement, and one wake-up of the
/// workers; returns the deliveries added.
pub async fn enqueue_all(
    tx: &mut PgConnection,
    notices: &[Enqueued<'_>],
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    // One row per notice and channel.
    let mut ids = Vec::new();
    let mut sources = Vec::new();
    let mut channels: Vec<&str> = Vec::new();
    let mut recipients: Vec<&str> = Vec::new();
    let mut kinds: Vec<&str> = Vec::new();
    let mut required = Vec::new();
    let mut bodies = Vec::new();
    let mut occurred = Vec::new();
    for enqueued in notices {
        let body =
            serde_json::to_value(enqueued.notice).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        for channel in enqueued.notice.channels() {
            ids.push(pulse_kit::new_id());
            sources.push(enqueued.source_id);
            channels.push(channel.as_str());
            recipients.push(enqueued.recipient);
            kinds.push(enqueued.notice.kind());
            required.push(enqueued.notice.required());
            bodies.push(body.clone());
            occurred.push(enqueued.occurred_at);
        }
    }
    if ids.is_empty() {
        return Ok(0);
    }
    let inserted = sqlx::query(
        "INSERT INTO deliveries
             (id, source_id, channel, recipient, kind, required, notice, occurred_at, next_attempt_at)
         SELECT id, source_id, channel, recipient, kind, required, notice, occurred_at, $9
         FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::bool[],
                     $7::jsonb[], $8::timestamptz[])
              AS fan (id, source_id, channel, recipient, kind, required, notice, occurred_at)
         ON CONFLICT (source_id, channel, recipient) DO NOTHING",
    )
    .bind(&ids)
    .bind(&sources)
    .bind(&channels)
    .bind(&recipients)
    .bind(&kinds)
    .bind(&required)
    .bind(&bodies)
    .bind(&occurred)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted > 0 {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(WORK_CHANNEL)
            .execute(&mut *tx)
            .await?;
    }
    Ok(inserted)
}

/// Retry policy of failed deliveries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Failed attempts after which a delivery is dead.
    pub max_attempts: u32,
    /// First delay.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
}

/// Labels of [`DeliveryMetrics::sent`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SentLabels {
    /// `email`, `sms`, `in_app`.
    pub channel: String,
    /// The notice's kind.
    pub kind: String,
    /// `sent`, `retry`, `dead`, `rejected`, `opted_out`, `no_address`, `no_provider`, `held`.
    pub outcome: String,
}

/// Labels naming a channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ChannelLabels {
    /// `email`, `sms`, `in_app`.
    pub channel: String,
}

/// Notifier's delivery metrics.
#[derive(Debug, Clone)]
pub struct DeliveryMetrics {
    /// Delivery attempts and decisions, by channel, kind and outcome.
    pub sent: Family<SentLabels, Counter>,
    /// Seconds from the event to the message reaching its provider, by channel.
    pub delay: Family<ChannelLabels, Histogram, fn() -> Histogram>,
    /// Dead letters waiting for an administrator, by channel.
    pub dead_letters: Family<ChannelLabels, Gauge>,
    /// 1 while a provider's breaker is open, by channel.
    pub breaker_open: Family<ChannelLabels, Gauge>,
}

fn delay_histogram() -> Histogram {
    Histogram::new([
        0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0,
    ])
}

impl Default for DeliveryMetrics {
    fn default() -> Self {
        Self {
            sent: Family::default(),
            delay: Family::new_with_constructor(delay_histogram),
            dead_letters: Family::default(),
            breaker_open: Family::default(),
        }
    }
}

impl DeliveryMetrics {
    /// Registers the metrics (`pulse_notifier_sent_total`, …).
    pub fn register(&self, metrics: &pulse_kit::metrics::Metrics) {
        // The per-channel series exist (at 0) from the start, for dashboards and alerts.
        let channels = || {
            Channel::ALL.map(|channel| ChannelLabels {
                channel: channel.as_str().to_owned(),
            })
        };
        pulse_kit::metrics::preset(&self.dead_letters, channels());
        pulse_kit::metrics::preset(&self.breaker_open, channels());
        metrics.register(
            "notifier_sent",
            "Notification deliveries by channel, kind and outcome",
            self.sent.clone(),
        );
        metrics.register(
            "notifier_delivery_delay_seconds",
            "Seconds from the event to its message reaching the provider",
            self.delay.clone(),
        );
        metrics.register(
            "notifier_dead_letters",
            "Deliveries that failed every attempt and wait for an administrator",
            self.dead_letters.clone(),
        );
        metrics.register(
            "notifier_breaker_open",
            "1 while the provider of a channel is paused by its circuit breaker",
            self.breaker_open.clone(),
        );
    }

    fn count(&self, channel: Channel, kind: &str, outcome: &str) {
        self.sent
            .get_or_create(&SentLabels {
                channel: channel.as_str().to_owned(),
                kind: kind.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }
}

/// A due delivery, locked by the worker's transaction, with its recipient's preferences (none
/// when they never set any).
#[derive(Debug, sqlx::FromRow)]
struct DueRow {
    id: Uuid,
    recipient: String,
    kind: String,
    required: bool,
    notice: serde_json::Value,
    occurred_at: DateTime<Utc>,
    attempts: i32,
    email_enabled: Option<bool>,
    sms_enabled: Option<bool>,
    in_app_enabled: Option<bool>,
    quiet_start: Option<NaiveTime>,
    quiet_end: Option<NaiveTime>,
}

impl DueRow {
    /// The recipient's preferences: every channel on and no quiet hours without a row.
    fn preferences(&self) -> Preferences {
        let defaults = Preferences::default();
        Preferences {
            email: self.email_enabled.unwrap_or(defaults.email),
            sms: self.sms_enabled.unwrap_or(defaults.sms),
            in_app: self.in_app_enabled.unwrap_or(defaults.in_app),
            quiet_hours: self.quiet_start.zip(self.quiet_end),
        }
    }
}

/// Deliveries of one channel a worker takes and settles in one transaction: a crowd of
/// notices (a sale's winners) costs a commit per batch, not per message.
const DELIVERY_BATCH: i64 = 16;

/// What became of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Sent,
    /// Not sent, for good (`opted_out`, `no_address`, `no_provider`, `rejected`).
    Skipped(&'static str, Option<String>),
    /// Held (quiet hours, identity unreachable) without counting an attempt.
    Later(DateTime<Utc>, &'static str),
    /// The provider failed.
    Failed(String),
    /// Not even tried: the provider's breaker is open.
    BreakerOpen,
    /// Not tried in this transaction: it has handed a message to a provider already.
    Deferred,
}

/// A dead letter, for the admin API.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// The delivery.
    pub id: Uuid,
    /// `email`, `sms` or `in_app`.
    pub channel: String,
    /// The user.
    pub recipient: String,
    /// The notice's kind.
    pub kind: String,
    /// Attempts made.
    pub attempts: i32,
    /// The last error.
    pub last_error: Option<String>,
    /// When it died.
    pub finished_at: Option<DateTime<Utc>>,
}

/// Why a dead letter could not be retried.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    /// No dead letter has this id (never existed, or already retried).
    #[error("no dead letter {0}")]
    NotFound(Uuid),
    /// The database failed.
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// The delivery flow: the workers and the dead-letter administration.
#[derive(Clone)]
pub struct Deliveries {
    inner: Arc<Inner>,
}

struct Inner {
    db: PgPool,
    country: Arc<CountryConfig>,
    templates: Templates,
    directory: Directory,
    mailer: Option<Mailer>,
    sms: Option<Arc<dyn SmsSender>>,
    email_breaker: CircuitBreaker,
    sms_breaker: CircuitBreaker,
    retry: RetryPolicy,
    poll: Duration,
    clock: Clock,
    metrics: DeliveryMetrics,
    wake: [Notify; 3],
}

/// What [`Deliveries`] is made of.
pub struct DeliveryParts {
    /// Notifier's schema.
    pub db: PgPool,
    /// The country (time zone, locale, currency).
    pub country: Arc<CountryConfig>,
    /// Message templates.
    pub templates: Templates,
    /// Identity's directory.
    pub directory: Directory,
    /// The SMTP server, if any.
    pub mailer: Option<Mailer>,
    /// The SMS provider, if any.
    pub sms: Option<Arc<dyn SmsSender>>,
    /// Breaker of each provider.
    pub breaker: BreakerConfig,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Idle poll interval.
    pub poll: Duration,
    /// The clock.
    pub clock: Clock,
    /// Metrics.
    pub metrics: DeliveryMetrics,
}

fn slot(channel: Channel) -> usize {
    match channel {
        Channel::Email => 0,
        Channel::Sms => 1,
        Channel::InApp => 2,
    }
}

impl Deliveries {
    /// The flow over `parts`.
    pub fn new(parts: DeliveryParts) -> Self {
        Self {
            inner: Arc::new(Inner {
                db: parts.db,
                country: parts.country,
                templates: parts.templates,
                directory: parts.directory,
                mailer: parts.mailer,
                sms: parts.sms,
                email_breaker: CircuitBreaker::new(parts.breaker),
                sms_breaker: CircuitBreaker::new(parts.breaker),
                retry: parts.retry,
                poll: parts.poll,
                clock: parts.clock,
                metrics: parts.metrics,
                wake: [Notify::new(), Notify::new(), Notify::new()],
            }),
        }
    }

    /// Wakes every worker (new deliveries were enqueued).
    pub fn wake(&self) {
        for notify in &self.inner.wake {
            notify.notify_one();
        }
    }

    /// The state of `channel`'s provider breaker (in-app has none: always closed).
    pub fn breaker_state(&self, channel: Channel) -> BreakerState {
        match self.breaker(channel) {
            Some(b) => b.state(),
            None => BreakerState::Closed,
        }
    }

    fn breaker(&self, channel: Channel) -> Option<&CircuitBreaker> {
        match channel {
            Channel::Email => Some(&self.inner.email_breaker),
            Channel::Sms => Some(&self.inner.sms_breaker),
            Channel::InApp => None,
        }
    }

    /// Sends `channel`'s due deliveries until `shutdown`.
    pub async fn run_worker(self, channel: Channel, shutdown: CancellationToken) {
        let inner = Arc::clone(&self.inner);
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let worked = match self.work_batch(channel).await {
                Ok(worked) => worked,
                Err(err) => {
                    tracing::warn!(channel = channel.as_str(), error = %err, "delivery worker failed; retrying");
                    false
                }
            };
            self.refresh_gauges(channel);
            if worked {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = inner.wake[slot(channel)].notified() => {}
                () = tokio::time::sleep(inner.poll) => {}
            }
        }
    }

    fn refresh_gauges(&self, channel: Channel) {
        let open = matches!(self.breaker_state(channel), BreakerState::Open);
        self.inner
            .metrics
            .breaker_open
            .get_or_create(&ChannelLabels {
                channel: channel.as_str().to_owned(),
            })
            .set(i64::from(open));
    }

    /// Takes up to [`DELIVERY_BATCH`] due deliveries of `channel` and settles them in one
    /// transaction; `false` when none is due (or its provider's breaker is open, so nothing can
    /// be sent now). A transaction hands at most one message to a provider: the batch stops
    /// before a second one (and when the breaker opens), and the rest stays due, untouched, for
    /// the next round. What it batches is what stays inside PostgreSQL: in-app messages,
    /// skipped and held deliveries.
    pub async fn work_batch(&self, channel: Channel) -> Result<bool, sqlx::Error> {
        let inner = &self.inner;
        // While the breaker is open, do not even take a row: the deliveries wait untouched.
        if let Some(breaker) = self.breaker(channel)
            && breaker.state() == BreakerState::Open
        {
            return Ok(false);
        }
        // A channel whose messages go to a provider settles one a transaction (see above):
        // taking more rows would only lock them for nothing.
        let limit = match channel {
            Channel::Email if inner.mailer.is_some() => 1,
            Channel::Sms if inner.sms.is_some() => 1,
            _ => DELIVERY_BATCH,
        };
        let mut tx = inner.db.begin().await?;
        let now = (inner.clock)();
        let rows: Vec<DueRow> = sqlx::query_as(
            "SELECT d.id, d.recipient, d.kind, d.required, d.notice, d.occurred_at, d.attempts,
                    p.email_enabled, p.sms_enabled, p.in_app_enabled, p.quiet_start, p.quiet_end
             FROM deliveries d LEFT JOIN preferences p ON p.user_id = d.recipient
             WHERE d.status = 'pending' AND d.channel = $1 AND d.next_attempt_at <= $2
             ORDER BY d.next_attempt_at
             LIMIT $3
             FOR UPDATE OF d SKIP LOCKED",
        )
        .bind(channel.as_str())
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut inbox = Vec::new();
        let mut settlements = Vec::with_capacity(rows.len());
        let mut may_contact_provider = true;
        for row in &rows {
            let outcome = self
                .deliver(&mut inbox, &mut may_contact_provider, channel, row, now)
                .await;
            match self.settlement(channel, row, outcome, now) {
                Some(settlement) => settlements.push(settlement),
                None => break,
            }
        }
        if settlements.is_empty() {
            tx.rollback().await?;
            return Ok(false);
        }
        write_inbox(&mut tx, &inbox).await?;
        settle_all(&mut tx, &settlements).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Delivers `row` on `channel` (an in-app message goes into `inbox`, written with the
    /// batch); what became of it. A message is handed to a provider only while
    /// `may_contact_provider`, which that clears: one per transaction, so a process dying
    /// before the commit leaves at most that one message to be sent again.
    async fn deliver(
        &self,
        inbox: &mut Vec<InboxMessage>,
        may_contact_provider: &mut bool,
        channel: Channel,
        row: &DueRow,
        now: DateTime<Utc>,
    ) -> Outcome {
        let inner = &self.inner;
        let notice: Notice = match serde_json::from_value(row.notice.clone()) {
            Ok(notice) => notice,
            Err(err) => {
                return Outcome::Skipped("unreadable", Some(format!("stored notice: {err}")));
            }
        };
        let prefs = row.preferences();
        match domain::gate(&prefs, channel, row.required, now, inner.country.tz()) {
            Gate::Send => {}
            Gate::OptedOut => return Outcome::Skipped("opted_out", None),
            Gate::HoldUntil(until) => return Outcome::Later(until, "held"),
        }
        if (channel == Channel::Email && inner.mailer.is_none())
            || (channel == Channel::Sms && inner.sms.is_none())
        {
            return Outcome::Skipped("no_provider", None);
        }
        // A cached contact without this channel's address is asked for afresh (it may have
        // been added a moment ago). A user identity does not know stays unknown: asking again
        // for each channel of one event would only repeat the answer.
        let usable = |contact: Option<&crate::directory::Contact>| {
            contact.is_none_or(|c| match channel {
                Channel::Email => c.email.is_some(),
                Channel::Sms => c.phone.is_some(),
                Channel::InApp => true,
            })
        };
        let contact = match inner.directory.contact_with(&row.recipient, usable).await {
            Ok(contact) => contact,
            // An in-app message needs no address: without identity it is written in the
            // country's language, with a neutral greeting, rather than held.
            Err(err) if channel == Channel::InApp => {
                tracing::debug!(error = %err, "identity's directory unavailable; in-app message in the country's language");
                None
            }
            Err(err) => {
                let wait = match err {
                    DirectoryError::CircuitOpen(retry_in) => retry_in,
                    DirectoryError::Unavailable(_) => inner.retry.base,
                };
                tracing::debug!(error = %err, "identity's directory unavailable; delivery waits");
                return Outcome::Later(
                    now + chrono::Duration::from_std(wait).unwrap_or_default(),
                    "directory_unavailable",
                );
            }
        };
        let contact = contact.unwrap_or_default();
        let language = Language::pick(contact.language.as_deref(), &inner.country.locale);
        let name = contact.name.as_deref();
        let content = match inner
            .templates
            .render(&notice, language, &inner.country, name)
        {
            Ok(content) => content,
            Err(err) => return Outcome::Skipped("unreadable", Some(err.to_string())),
        };
        let sent = match channel {
            Channel::InApp => {
                inbox.push(InboxMessage {
                    id: row.id,
                    user: row.recipient.clone(),
                    kind: row.kind.clone(),
                    title: content.subject,
                    body: content.sms,
                    required: row.required,
                    // When it is written (after the directory call and the rendering), not
                    // when the delivery was taken.
                    created_at: (inner.clock)(),
                });
                Ok(())
            }
            Channel::Email => {
                let (Some(mailer), Some(to)) = (&inner.mailer, contact.email.as_deref()) else {
                    return Outcome::Skipped("no_address", None);
                };
                if !*may_contact_provider {
                    return Outcome::Deferred;
                }
                let Ok(attempt) = inner.email_breaker.try_acquire() else {
                    return Outcome::BreakerOpen;
                };
                *may_contact_provider = false;
                let message_id = format!("{}@notifier.pulse", row.id);
                let result = mailer
                    .send(Mail {
                        to,
                        name,
                        subject: &content.subject,
                        text: &content.text,
                        html: Some(&content.html),
                        message_id: Some(&message_id),
                    })
                    .await
                    .map_err(SendError::from);
                settle(attempt, &result);
                result
            }
            Channel::Sms => {
                let (Some(sms), Some(to)) = (&inner.sms, contact.phone.as_deref()) else {
                    return Outcome::Skipped("no_address", None);
                };
                if !*may_contact_provider {
                    return Outcome::Deferred;
                }
                let Ok(attempt) = inner.sms_breaker.try_acquire() else {
                    return Outcome::BreakerOpen;
                };
                *may_contact_provider = false;
                let key = row.id.to_string();
                let result = sms
                    .send(to, &content.sms, Some(&key))
                    .await
                    .map_err(SendError::from);
                settle(attempt, &result);
                result
            }
        };
        match sent {
            Ok(()) => Outcome::Sent,
            Err(SendError::Rejected(why)) => Outcome::Skipped("rejected", Some(why)),
            Err(SendError::Unavailable(why)) => Outcome::Failed(why),
        }
    }

    /// What `outcome` changes in `row` (none for an open breaker: the row stays as it was);
    /// counts it and logs what an operator must see.
    fn settlement(
        &self,
        channel: Channel,
        row: &DueRow,
        outcome: Outcome,
        now: DateTime<Utc>,
    ) -> Option<Settlement> {
        let inner = &self.inner;
        let unchanged = Settlement {
            id: row.id,
            status: None,
            outcome: None,
            last_error: None,
            finished_at: None,
            attempts_added: 0,
            next_attempt_at: None,
        };
        let (settlement, metric_outcome) = match outcome {
            Outcome::Sent => {
                let delay = (now - row.occurred_at).num_milliseconds().max(0) as f64 / 1000.0;
                inner
                    .metrics
                    .delay
                    .get_or_create(&ChannelLabels {
                        channel: channel.as_str().to_owned(),
                    })
                    .observe(delay);
                let sent = Settlement {
                    status: Some("sent"),
                    outcome: Some("sent"),
                    finished_at: Some(now),
                    attempts_added: 1,
                    ..unchanged
                };
                (sent, "sent")
            }
            Outcome::Skipped(why, detail) => {
                let status = if why == "rejected" || why == "unreadable" {
                    "dead"
                } else {
                    "skipped"
                };
                if status == "dead" {
                    tracing::warn!(delivery = %row.id, channel = channel.as_str(), reason = why, detail = detail.as_deref().unwrap_or(""), "delivery is a dead letter");
                }
                let skipped = Settlement {
                    status: Some(status),
                    outcome: Some(why),
                    last_error: Some(detail),
                    finished_at: Some(now),
                    ..unchanged
                };
                (skipped, why)
            }
            Outcome::Later(until, why) => {
                let later = Settlement {
                    next_attempt_at: Some(until),
                    ..unchanged
                };
                (later, why)
            }
            Outcome::Failed(why) => {
                let attempts = u32::try_from(row.attempts).unwrap_or(0) + 1;
                if attempts >= inner.retry.max_attempts {
                    tracing::warn!(delivery = %row.id, channel = channel.as_str(), attempts, error = %why, "delivery failed every attempt: dead letter");
                    let dead = Settlement {
                        status: Some("dead"),
                        outcome: Some("failed"),
                        last_error: Some(Some(why)),
                        finished_at: Some(now),
                        attempts_added: 1,
                        ..unchanged
                    };
                    (dead, "dead")
                } else {
                    let delay = domain::retry_delay(
                        attempts,
                        inner.retry.base,
                        inner.retry.max,
                        rand::random::<f64>(),
                    );
                    tracing::info!(delivery = %row.id, channel = channel.as_str(), attempts, error = %why, retry_in = ?delay, "delivery failed; will retry");
                    let retry = Settlement {
                        last_error: Some(Some(why)),
                        attempts_added: 1,
                        next_attempt_at: Some(
                            now + chrono::Duration::from_std(delay).unwrap_or_default(),
                        ),
                        ..unchanged
                    };
                    (retry, "retry")
                }
            }
            Outcome::BreakerOpen | Outcome::Deferred => return None,
        };
        inner.metrics.count(channel, &row.kind, metric_outcome);
        Some(settlement)
    }

    /// The latest dead letters, newest first.
    pub async fn dead_letters(&self, limit: i64) -> Result<Vec<DeadLetter>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, channel, recipient, kind, attempts, last_error, finished_at
             FROM deliveries WHERE status = 'dead'
             ORDER BY finished_at DESC, id
             LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.inner.db)
        .await
    }

    /// Puts dead letter `id` back in the queue with fresh attempts.
    pub async fn retry_dead_letter(&self, id: Uuid) -> Result<(), RetryError> {
        let now = (self.inner.clock)();
        let updated = sqlx::query(
            "UPDATE deliveries SET status = 'pending', attempts = 0, outcome = NULL,
                 next_attempt_at = $2, finished_at = NULL
             WHERE id = $1 AND status = 'dead'",
        )
        .bind(id)
        .bind(now)
        .execute(&self.inner.db)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(RetryError::NotFound(id));
        }
        self.wake();
        Ok(())
    }

    /// Counts dead letters per channel into the gauge.
    pub async fn refresh_dead_letter_gauge(&self) -> Result<(), sqlx::Error> {
        let counts: Vec<(String, i64)> = sqlx::query_as(
            "SELECT channel, count(*) FROM deliveries WHERE status = 'dead' GROUP BY channel",
        )
        .fetch_all(&self.inner.db)
        .await?;
        for channel in Channel::ALL {
            let n = counts
                .iter()
                .find(|(c, _)| c == channel.as_str())
                .map_or(0, |(_, n)| *n);
            self.inner
                .metrics
                .dead_letters
                .get_or_create(&ChannelLabels {
                    channel: channel.as_str().to_owned(),
                })
                .set(n);
        }
        Ok(())
    }
}

/// Tells the breaker how the provider did: a refusal of one message is an answer, not a
/// failure of the provider.
/// The changes to one delivery row; `None` leaves a column as it is.
#[derive(Debug)]
struct Settlement {
    id: Uuid,
    status: Option<&'static str>,
    outcome: Option<&'static str>,
    /// `Some(None)` clears it.
    last_error: Option<Option<String>>,
    finished_at: Option<DateTime<Utc>>,
    attempts_added: i32,
    next_attempt_at: Option<DateTime<Utc>>,
}

/// Writes a batch's settlements in one statement.
async fn settle_all(tx: &mut PgConnection, settlements: &[Settlement]) -> Result<(), sqlx::Error> {
    if settlements.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = settlements.iter().map(|s| s.id).collect();
    let statuses: Vec<Option<&str>> = settlements.iter().map(|s| s.status).collect();
    let outcomes: Vec<Option<&str>> = settlements.iter().map(|s| s.outcome).collect();
    let set_errors: Vec<bool> = settlements.iter().map(|s| s.last_error.is_some()).collect();
    let errors: Vec<Option<&str>> = settlements
        .iter()
        .map(|s| s.last_error.as_ref().and_then(|e| e.as_deref()))
        .collect();
    let finished: Vec<Option<DateTime<Utc>>> = settlements.iter().map(|s| s.finished_at).collect();
    let added: Vec<i32> = settlements.iter().map(|s| s.attempts_added).collect();
    let next: Vec<Option<DateTime<Utc>>> = settlements.iter().map(|s| s.next_attempt_at).collect();
    sqlx::query(
        "UPDATE deliveries AS d SET
             status = coalesce(u.status, d.status),
             outcome = coalesce(u.outcome, d.outcome),
             last_error = CASE WHEN u.set_error THEN u.last_error ELSE d.last_error END,
             finished_at = coalesce(u.finished_at, d.finished_at),
             attempts = d.attempts + u.added,
             next_attempt_at = coalesce(u.next_attempt_at, d.next_attempt_at)
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bool[], $5::text[],
                     $6::timestamptz[], $7::int[], $8::timestamptz[])
              AS u (id, status, outcome, set_error, last_error, finished_at, added, next_attempt_at)
         WHERE d.id = u.id",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&outcomes)
    .bind(&set_errors)
    .bind(&errors)
    .bind(&finished)
    .bind(&added)
    .bind(&next)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// An in-app message to write into its user's inbox.
#[derive(Debug)]
struct InboxMessage {
    id: Uuid,
    user: String,
    kind: String,
    title: String,
    body: String,
    required: bool,
    created_at: DateTime<Utc>,
}

/// Writes a batch's in-app messages and announces them on [`INBOX_CHANNEL`], one wake-up per
/// user. Each user's inbox has one writer at a time (its advisory lock, taken for the batch's
/// users in one order), so a user's `seq` order is their commit order and a stream resumed after
/// `seq` n misses nothing.
async fn write_inbox(tx: &mut PgConnection, messages: &[InboxMessage]) -> Result<(), sqlx::Error> {
    if messages.is_empty() {
        return Ok(());
    }
    let mut users: Vec<&str> = messages.iter().map(|m| m.user.as_str()).collect();
    users.sort_unstable();
    users.dedup();
    sqlx::query(
        "SELECT count(*) FROM (
             SELECT pg_advisory_xact_lock(hashtext('notifier-inbox:' || u))
             FROM (SELECT u FROM unnest($1::text[]) AS u ORDER BY u) AS ordered
         ) AS taken",
    )
    .bind(&users)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO inbox (id, user_id, kind, title, body, required, created_at)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                              $6::bool[], $7::timestamptz[])
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(messages.iter().map(|m| m.id).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.user.as_str()).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.kind.as_str()).collect::<Vec<_>>())
    .bind(
        messages
            .iter()
            .map(|m| m.title.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(messages.iter().map(|m| m.body.as_str()).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.required).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.created_at).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT pg_notify($1, u) FROM unnest($2::text[]) AS u")
        .bind(INBOX_CHANNEL)
        .bind(&users)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

fn settle(attempt: pulse_kit::breaker::Attempt<'_>, result: &Result<(), SendError>) {
    match result {
        Err(SendError::Unavailable(_)) => attempt.failure(),
        _ => attempt.success(),
    }
}
