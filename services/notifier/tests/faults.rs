//! Providers that fail: with the SMTP server down, e-mails wait and are retried while SMS and
//! in-app notifications go on; after 5 failures in a row the e-mail breaker opens; when SMTP is
//! back, every queued e-mail is sent once.

mod common;

use std::time::{Duration, Instant};

use common::{Platform, User};
use pulse_kit::testing;

/// The sum of the series of `name` whose labels include every `label="value"` pair of `labels`.
fn metric(exposition: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    exposition
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn exposition(platform: &Platform) -> String {
    platform
        .app
        .client
        .get(format!("{}/metrics", platform.app.admin_base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// `(id, status, attempts)` of the users' deliveries on `channel`, of `kind` if given.
async fn statuses_of(
    platform: &Platform,
    users: &[User],
    channel: &str,
    kind: Option<&str>,
) -> Vec<(String, String, i32)> {
    let ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
    sqlx::query_as(
        "SELECT id::text, status, attempts FROM notifier.deliveries
         WHERE recipient = ANY($1) AND channel = $2 AND ($3::text IS NULL OR kind = $3)",
    )
    .bind(&ids)
    .bind(channel)
    .bind(kind)
    .fetch_all(&platform.app.pool)
    .await
    .expect("deliveries")
}

async fn statuses(
    platform: &Platform,
    users: &[User],
    channel: &str,
) -> Vec<(String, String, i32)> {
    statuses_of(platform, users, channel, None).await
}

#[tokio::test]
async fn with_smtp_down_emails_wait_and_retry_while_sms_and_in_app_go_on_then_all_are_sent_once() {
    let mut platform = Platform::start().await;
    platform.providers.stop_smtp().await;
    let mut users = Vec::new();
    for _ in 0..3 {
        users.push(platform.user("de-DE").await);
    }
    let slots = platform.slots(3).await;
    for (user, slot) in users.iter().zip(&slots) {
        platform.book(user, slot).await;
    }

    // SMS and in-app messages are not held by the e-mail outage.
    testing::eventually(
        "SMS and in-app sent during the outage",
        Duration::from_secs(20),
        || async {
            let sms = statuses(&platform, &users, "sms").await;
            let in_app = statuses(&platform, &users, "in_app").await;
            sms.len() == 3
                && in_app.len() == 6
                && sms
                    .iter()
                    .chain(&in_app)
                    .all(|(_, status, _)| status == "sent")
        },
    )
    .await;
    assert_eq!(platform.providers.sms().await.len(), 3);

    // E-mails (a welcome and a booking per user) are retried, then the breaker opens.
    let opened = Instant::now();
    testing::eventually(
        "the e-mail breaker opens",
        Duration::from_secs(20),
        || async {
            metric(
                &exposition(&platform).await,
                "pulse_notifier_breaker_open",
                &[("channel", "email")],
            ) == 1.0
        },
    )
    .await;
    let text = exposition(&platform).await;
    let retries = metric(
        &text,
        "pulse_notifier_sent_total",
        &[("channel", "email"), ("outcome", "retry")],
    );
    assert!(
        retries >= 5.0,
        "the breaker opened after {retries} failures, not 5"
    );
    assert_eq!(
        metric(&text, "pulse_notifier_breaker_open", &[("channel", "sms")]),
        0.0,
        "one provider down never opens another's breaker"
    );
    // The booking e-mails wait. (A welcome e-mail may have been skipped as `no_address`: it can
    // be handled before the user has verified an address.)
    let emails = statuses_of(&platform, &users, "email", Some("AppointmentBooked")).await;
    assert_eq!(emails.len(), 3, "{emails:?}");
    assert!(
        emails.iter().all(|(_, status, _)| status == "pending"),
        "{emails:?}"
    );
    assert!(platform.providers.emails().await.is_empty());
    println!(
        "breaker open {:?} after the bookings, after {retries} failed e-mail attempts",
        opened.elapsed()
    );

    // SMTP comes back: everything queued goes out, once.
    platform.providers.start_smtp().await;
    testing::eventually("queued e-mails sent", Duration::from_secs(30), || async {
        statuses(&platform, &users, "email")
            .await
            .iter()
            .all(|(_, status, _)| status != "pending")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let booked = statuses_of(&platform, &users, "email", Some("AppointmentBooked")).await;
    assert!(
        booked.iter().all(|(_, status, _)| status == "sent"),
        "{booked:?}"
    );
    let sent: Vec<_> = statuses(&platform, &users, "email")
        .await
        .into_iter()
        .filter(|(_, status, _)| status == "sent")
        .collect();
    let received = platform.providers.emails().await;
    for (id, _, attempts) in &sent {
        let copies = received
            .iter()
            .filter(|e| e.message_id == format!("{id}@notifier.pulse"))
            .count();
        assert_eq!(
            copies, 1,
            "delivery {id} (after {attempts} attempts) received {copies} times"
        );
    }
    assert_eq!(received.len(), sent.len());
    testing::eventually("the breaker closes", Duration::from_secs(5), || async {
        metric(
            &exposition(&platform).await,
            "pulse_notifier_breaker_open",
            &[("channel", "email")],
        ) == 0.0
    })
    .await;
}

#[tokio::test]
async fn a_delivery_that_fails_every_attempt_is_a_dead_letter_that_an_admin_can_retry() {
    let platform = Platform::start_with(pulse_notifier::system_clock(), |env| {
        env.push((pulse_notifier::settings::MAX_ATTEMPTS.var, "2".into()));
        env.push((pulse_notifier::settings::BREAKER_FAILURES.var, "50".into()));
    })
    .await;
    platform.providers.fail_sms(503, 2).await;
    let user = platform.user("en").await;
    let slots = platform.slots(3).await;
    platform.book(&user, &slots[0]).await;
    testing::eventually(
        "the SMS is a dead letter",
        Duration::from_secs(20),
        || async {
            statuses(&platform, std::slice::from_ref(&user), "sms")
                .await
                .iter()
                .any(|(_, status, _)| status == "dead")
        },
    )
    .await;
    let admin = platform.app.admin();
    let (status, body) = platform
        .app
        .get(Some(&admin), "/v1/admin/notifications/dead-letters")
        .await;
    assert_eq!(status, 200, "{body}");
    let dead = body["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|d| d["recipient"] == user.id.as_str())
        .cloned()
        .expect("the dead SMS is listed");
    assert_eq!(dead["channel"], "sms");
    assert_eq!(dead["attempts"], 2);
    testing::eventually(
        "the dead-letter gauge counts it",
        Duration::from_secs(20),
        || async {
            metric(
                &exposition(&platform).await,
                "pulse_notifier_dead_letters",
                &[("channel", "sms")],
            ) >= 1.0
        },
    )
    .await;
    // A patient may not see or retry dead letters.
    let (status, _) = platform
        .app
        .get(Some(&user.token), "/v1/admin/notifications/dead-letters")
        .await;
    assert_eq!(status, 403);
    let id = dead["id"].as_str().expect("id");
    let path = format!("/v1/admin/notifications/dead-letters/{id}/retry");
    let (status, body) = platform.app.post(Some(&admin), &path, None).await;
    assert_eq!(status, 202, "{body}");
    testing::eventually(
        "the retried SMS is sent",
        Duration::from_secs(20),
        || async { platform.sms_to(&user).await.len() == 1 },
    )
    .await;
    // Retrying it again: it is not dead any more.
    let (status, body) = platform.app.post(Some(&admin), &path, None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(testing::problem_kind(&body), "dead-letter-not-found");
}

#[tokio::test]
async fn with_identity_unreachable_in_app_messages_go_on_in_the_country_language_and_the_rest_waits()
 {
    // Notifier asks a Directory on a port where nothing listens; identity itself (in the same
    // server) still signs users in.
    let nowhere = testing::free_port();
    let platform = Platform::start_with(pulse_notifier::system_clock(), |env| {
        env.retain(|(k, _)| *k != pulse_notifier::settings::IDENTITY_GRPC_URL.var);
        env.push((
            pulse_notifier::settings::IDENTITY_GRPC_URL.var,
            format!("http://127.0.0.1:{nowhere}"),
        ));
    })
    .await;
    let user = platform.user("de-DE").await;
    let slots = platform.slots(3).await;
    platform.book(&user, &slots[0]).await;
    testing::eventually(
        "the in-app booking notice",
        Duration::from_secs(20),
        || async {
            platform.inbox(&user).await["items"]
                .as_array()
                .is_some_and(|items| items.iter().any(|i| i["kind"] == "AppointmentBooked"))
        },
    )
    .await;
    let inbox = platform.inbox(&user).await;
    let booked = inbox["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["kind"] == "AppointmentBooked")
        .cloned()
        .expect("booked");
    // France's language, not the user's German: identity could not say.
    assert!(
        booked["title"]
            .as_str()
            .is_some_and(|t| t.contains("Rendez-vous")),
        "{booked}"
    );
    let waiting = statuses_of(
        &platform,
        std::slice::from_ref(&user),
        "sms",
        Some("AppointmentBooked"),
    )
    .await;
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].1, "pending", "the SMS waits for identity");
    assert!(platform.providers.sms().await.is_empty());
}
