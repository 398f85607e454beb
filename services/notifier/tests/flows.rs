//! What a patient hears about, end to end: bookings, reschedules and cancellations made through
//! booking's API reach the SMTP server, the SMS provider and the in-app list exactly once each,
//! and an SSE stream open on another notifier replica gets the in-app one within a second.
//! Preferences (opt-out, quiet hours) are honoured; required messages are not held.

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, Timelike, Utc};
use common::{Platform, User};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// One Server-Sent Event as a client sees it.
#[derive(Debug, Clone)]
struct SseEvent {
    event: String,
    id: Option<String>,
    data: String,
    received_at: DateTime<Utc>,
}

/// Opens `GET /v1/notifications/stream` on `base` as `token` and forwards its events.
async fn open_stream(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    last_event_id: Option<&str>,
) -> mpsc::UnboundedReceiver<SseEvent> {
    let mut request = client
        .get(format!("{base}/v1/notifications/stream"))
        .bearer_auth(token);
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    let mut response = request.send().await.expect("stream opens");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buffer = String::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let mut event = SseEvent {
                    event: "message".into(),
                    id: None,
                    data: String::new(),
                    received_at: Utc::now(),
                };
                let mut any = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event.event = v.trim().to_owned();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        event.data.push_str(v.trim_start());
                        any = true;
                    }
                }
                if any && tx.send(event).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// The next `notification` event of `kind`, within `within`.
async fn next_of_kind(
    events: &mut mpsc::UnboundedReceiver<SseEvent>,
    kind: &str,
    within: Duration,
) -> (SseEvent, Value) {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no {kind} notification on the stream within {within:?}"))
            .expect("stream open");
        if event.event != "notification" {
            continue;
        }
        let item: Value = serde_json::from_str(&event.data).expect("JSON notification");
        if item["kind"] == kind {
            return (event, item);
        }
    }
}

/// The delivery ids of `user`'s `kind` notices on `channel`, with their status.
async fn deliveries_of(
    platform: &Platform,
    user: &User,
    kind: &str,
    channel: &str,
) -> Vec<(uuid::Uuid, String)> {
    sqlx::query_as(
        "SELECT id, status FROM notifier.deliveries
         WHERE recipient = $1 AND kind = $2 AND channel = $3",
    )
    .bind(&user.id)
    .bind(kind)
    .bind(channel)
    .fetch_all(&platform.app.pool)
    .await
    .expect("deliveries")
}

/// Exactly one e-mail, one SMS and one in-app notification of `kind` reached `user`.
async fn exactly_one_of_each(platform: &Platform, user: &User, kind: &str) {
    let emails = platform.emails_to(user).await;
    let sms = platform.sms_to(user).await;
    let inbox = platform.inbox(user).await;
    for channel in ["email", "sms", "in_app"] {
        let rows = deliveries_of(platform, user, kind, channel).await;
        assert_eq!(rows.len(), 1, "{kind} on {channel}: {rows:?}");
        let (id, status) = &rows[0];
        assert_eq!(status, "sent", "{kind} on {channel}");
        let received = match channel {
            "email" => emails
                .iter()
                .filter(|e| e.message_id == format!("{id}@notifier.pulse"))
                .count(),
            "sms" => sms
                .iter()
                .filter(|s| s.idempotency_key.as_deref() == Some(id.to_string().as_str()))
                .count(),
            _ => inbox["items"]
                .as_array()
                .expect("items")
                .iter()
                .filter(|i| i["id"] == id.to_string())
                .count(),
        };
        assert_eq!(received, 1, "{kind} received on {channel}");
    }
}

#[tokio::test]
async fn booking_rescheduling_and_cancelling_each_reach_every_channel_once_and_any_replicas_stream()
{
    let platform = Platform::start().await;
    // A second notifier replica whose clock stands still in the past: its workers never find a
    // delivery due, so every message is handled by the first one, and what the stream on this
    // replica receives came through the database's fan-out.
    let past: DateTime<Utc> = "2000-01-01T00:00:00Z".parse().expect("time");
    let replica = platform
        .notifier_replica(std::sync::Arc::new(move || past))
        .await;
    let replica_base = format!("http://{}", replica.http_addr);
    let user = platform.user("fr-FR").await;
    let mut stream = open_stream(&platform.app.client, &replica_base, &user.token, None).await;
    let slots = platform.slots(3).await;
    assert!(slots.len() >= 2, "free slots");

    let booked = platform.book(&user, &slots[0]).await;
    let (event, item) =
        next_of_kind(&mut stream, "AppointmentBooked", Duration::from_secs(20)).await;
    let written: DateTime<Utc> = item["createdAt"]
        .as_str()
        .expect("createdAt")
        .parse()
        .expect("time");
    let lag = event.received_at - written;
    assert!(
        lag < chrono::Duration::seconds(1),
        "the stream on the other replica got the notification {lag:?} after it was written"
    );
    assert_eq!(event.id.as_deref(), Some(item["seq"].to_string().as_str()));
    platform
        .settled(&user, "AppointmentBooked", 3, Duration::from_secs(20))
        .await;

    let moved = platform.reschedule(&user, &booked, &slots[1]).await;
    next_of_kind(
        &mut stream,
        "AppointmentRescheduled",
        Duration::from_secs(20),
    )
    .await;
    platform
        .settled(&user, "AppointmentRescheduled", 3, Duration::from_secs(20))
        .await;

    platform.cancel(&user.token, &moved).await;
    next_of_kind(&mut stream, "AppointmentCancelled", Duration::from_secs(20)).await;
    platform
        .settled(&user, "AppointmentCancelled", 3, Duration::from_secs(20))
        .await;

    // Let any duplicate that would come arrive before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for kind in [
        "AppointmentBooked",
        "AppointmentRescheduled",
        "AppointmentCancelled",
    ] {
        exactly_one_of_each(&platform, &user, kind).await;
    }
    // The e-mails are real multipart messages in the user's language, from the configured sender.
    let emails = platform.emails_to(&user).await;
    let booked_mail = emails
        .iter()
        .find(|e| e.text.contains("rendez-vous") && !e.html.is_empty())
        .unwrap_or_else(|| panic!("a French booking e-mail with an HTML part: {emails:?}"));
    assert!(
        booked_mail.from.contains("no-reply@pulse.test"),
        "{}",
        booked_mail.from
    );
    assert!(
        booked_mail.html.contains("<"),
        "HTML part: {}",
        booked_mail.html
    );
    let sms = platform.sms_to(&user).await;
    assert!(sms.iter().all(|s| s.from == "+33700000000"), "{sms:?}");
    // The reminder moved with the appointment, then went with the cancellation.
    let reminders: Vec<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT appointment_id, status FROM notifier.reminders WHERE user_id = $1")
            .bind(&user.id)
            .fetch_all(&platform.app.pool)
            .await
            .expect("reminders");
    assert_eq!(reminders.len(), 2, "{reminders:?}");
    assert!(
        reminders.iter().all(|(_, s)| s == "cancelled"),
        "{reminders:?}"
    );

    // A stream resumed with Last-Event-ID gets what came after that position, and only that.
    let inbox = platform.inbox(&user).await;
    let items = inbox["items"].as_array().expect("items");
    let oldest_appointment = items
        .iter()
        .filter(|i| {
            i["kind"]
                .as_str()
                .is_some_and(|k| k.starts_with("Appointment"))
        })
        .map(|i| i["seq"].as_i64().expect("seq"))
        .min()
        .expect("appointment notifications");
    let mut resumed = open_stream(
        &platform.app.client,
        &platform.app.base,
        &user.token,
        Some(&oldest_appointment.to_string()),
    )
    .await;
    let (first, _) = next_of_kind(
        &mut resumed,
        "AppointmentRescheduled",
        Duration::from_secs(5),
    )
    .await;
    assert!(first.id.as_deref().and_then(|i| i.parse::<i64>().ok()) > Some(oldest_appointment));
    next_of_kind(&mut resumed, "AppointmentCancelled", Duration::from_secs(5)).await;

    // The replica drains: its stream ends with a retry hint instead of holding the shutdown.
    replica.shutdown().await;
    let hint = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.recv().await {
                Some(e) if e.event == "reconnect" => return Some(e),
                Some(_) => {}
                None => return None,
            }
        }
    })
    .await
    .expect("the stream ends when the replica drains");
    assert!(hint.is_some(), "a reconnect event before the end");
}

#[tokio::test]
async fn opt_outs_and_quiet_hours_are_honoured_and_required_messages_are_not_held() {
    let platform = Platform::start().await;
    let user = platform.user("en").await;
    // Quiet from two hours before this hour to two hours after it, local time (at least an
    // hour either side of now); SMS off.
    let local = Utc::now().with_timezone(&chrono_tz::Europe::Paris);
    let hh = |h: i64| format!("{:02}:00", (i64::from(local.hour()) + h).rem_euclid(24));
    let prefs = json!({
        "email": true, "sms": false, "inApp": true,
        "quietHours": { "start": hh(-2), "end": hh(2) }
    });
    let response = platform
        .app
        .client
        .put(format!(
            "{}/v1/me/notification-preferences",
            platform.app.base
        ))
        .bearer_auth(&user.token)
        .json(&prefs)
        .send()
        .await
        .expect("put preferences");
    assert_eq!(response.status(), 200);
    let (status, read) = platform
        .app
        .get(Some(&user.token), "/v1/me/notification-preferences")
        .await;
    assert_eq!(status, 200);
    assert_eq!(read, prefs);

    let slots = platform.slots(3).await;
    let appointment = platform.book(&user, &slots[0]).await;
    // In-app goes through; SMS is dropped; the e-mail waits for the end of the quiet hours.
    pulse_kit::testing::eventually(
        "booking notices decided",
        Duration::from_secs(20),
        || async {
            let rows = platform.deliveries(&user).await;
            let decided = |channel: &str, status: &str| {
                rows.iter()
                    .any(|r| r.0 == channel && r.1 == "AppointmentBooked" && r.2 == status)
            };
            decided("in_app", "sent") && decided("sms", "skipped")
        },
    )
    .await;
    let held: Vec<(String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT channel, status, next_attempt_at FROM notifier.deliveries
         WHERE recipient = $1 AND kind = 'AppointmentBooked' ORDER BY channel",
    )
    .bind(&user.id)
    .fetch_all(&platform.app.pool)
    .await
    .expect("deliveries");
    let by_channel = |c: &str| held.iter().find(|r| r.0 == c).cloned().expect(c);
    assert_eq!(by_channel("in_app").1, "sent");
    assert_eq!(by_channel("sms").1, "skipped");
    let email = by_channel("email");
    assert_eq!(email.1, "pending", "held by the quiet hours");
    let end_local = local.date_naive().and_hms_opt(0, 0, 0).expect("midnight")
        + chrono::Duration::hours(i64::from(local.hour()) + 2);
    assert_eq!(
        email.2,
        pulse_notifier::domain::local_instant(chrono_tz::Europe::Paris, end_local),
        "held until the quiet hours end"
    );
    assert!(
        platform.sms_to(&user).await.is_empty(),
        "no SMS after the opt-out"
    );

    // The practice cancels: the patient must hear of it, on every channel, now.
    platform.cancel(&platform.app.admin(), &appointment).await;
    platform
        .settled(&user, "AppointmentCancelled", 3, Duration::from_secs(20))
        .await;
    let rows = platform.deliveries(&user).await;
    let cancelled: Vec<_> = rows
        .iter()
        .filter(|r| r.1 == "AppointmentCancelled")
        .collect();
    assert!(cancelled.iter().all(|r| r.2 == "sent"), "{cancelled:?}");
    let sms = platform.sms_to(&user).await;
    assert_eq!(sms.len(), 1, "{sms:?}");
    let mail = platform
        .emails_to(&user)
        .await
        .into_iter()
        .find(|e| e.subject.to_lowercase().contains("cancel"))
        .expect("the cancellation e-mail");
    assert!(
        mail.text.contains("whatever your notification settings"),
        "a required message says so: {}",
        mail.text
    );
}

#[tokio::test]
async fn an_address_verified_after_a_message_was_sent_is_used_at_once_despite_the_contact_cache() {
    // A long cache: the welcome message caches the contact without an e-mail address.
    let platform = Platform::start_with(pulse_notifier::system_clock(), |env| {
        env.retain(|(k, _)| *k != pulse_notifier::settings::DIRECTORY_CACHE_SECONDS.var);
        env.push((
            pulse_notifier::settings::DIRECTORY_CACHE_SECONDS.var,
            "600".into(),
        ));
    })
    .await;
    let (phone, id, token) = platform.sign_up().await;
    pulse_kit::testing::eventually(
        "the welcome in-app message",
        Duration::from_secs(20),
        || async {
            let (status, body) = platform.app.get(Some(&token), "/v1/notifications").await;
            status == 200 && body["items"].as_array().is_some_and(|i| !i.is_empty())
        },
    )
    .await;
    let user = platform.verify_email(phone, id, token, "fr").await;
    let slots = platform.slots(3).await;
    platform.book(&user, &slots[0]).await;
    platform
        .settled(&user, "AppointmentBooked", 3, Duration::from_secs(20))
        .await;
    exactly_one_of_each(&platform, &user, "AppointmentBooked").await;
}
