//! Day-before reminders with notifier's clock in the test's hands: appointments booked through
//! booking's API around the spring daylight-saving change get their reminder once, at 18:00
//! local time the day before, whichever offset that day has; a cancelled appointment gets none;
//! a rescheduled one gets it for its new day only.

mod common;

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use common::{Platform, TestClock, User};
use pulse_kit::testing;

/// Days from today (Paris) to `date`.
fn days_until(date: NaiveDate) -> i64 {
    let today = Utc::now()
        .with_timezone(&chrono_tz::Europe::Paris)
        .date_naive();
    (date - today).num_days()
}

/// The next last Sunday of March (the spring-forward day in Europe) at least 3 days ahead.
fn next_spring_forward() -> NaiveDate {
    let today = Utc::now()
        .with_timezone(&chrono_tz::Europe::Paris)
        .date_naive();
    let mut year = chrono::Datelike::year(&today);
    loop {
        let mut day = NaiveDate::from_ymd_opt(year, 3, 31).expect("31 March");
        while chrono::Datelike::weekday(&day) != chrono::Weekday::Sun {
            day = day.pred_opt().expect("a day");
        }
        if (day - today).num_days() >= 3 {
            return day;
        }
        year += 1;
    }
}

/// Books the 10:00 (local) slot of a new practitioner on `date` for `user`.
async fn book_at_ten(platform: &Platform, user: &User, date: NaiveDate) -> (String, DateTime<Utc>) {
    let slot = ten_oclock_slot(platform, date).await;
    let appointment = platform.book(user, &slot).await;
    let starts_at = paris(date, 10);
    (appointment, starts_at)
}

async fn ten_oclock_slot(platform: &Platform, date: NaiveDate) -> String {
    platform.slot_at(days_until(date), "10:00").await
}

fn paris(date: NaiveDate, hour: u32) -> DateTime<Utc> {
    pulse_notifier::domain::local_instant(
        chrono_tz::Europe::Paris,
        date.and_hms_opt(hour, 0, 0).expect("time"),
    )
}

async fn reminders_sent(platform: &Platform, user: &User) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT source_id::text, channel FROM notifier.deliveries
         WHERE recipient = $1 AND kind = 'AppointmentReminder' ORDER BY source_id, channel",
    )
    .bind(&user.id)
    .fetch_all(&platform.app.pool)
    .await
    .expect("reminder deliveries")
}

/// Moves the clock to `at` and gives the reminder job a few rounds (it polls every 100 ms), so
/// that what must not happen yet would have happened.
async fn at(clock: &TestClock, when: DateTime<Utc>) {
    clock.set(when);
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// Waits until `user` has `count` reminder deliveries.
async fn reminders_reach(platform: &Platform, user: &User, count: usize) -> Vec<(String, String)> {
    testing::eventually(
        &format!("{count} reminder deliveries"),
        Duration::from_secs(20),
        || async { reminders_sent(platform, user).await.len() >= count },
    )
    .await;
    reminders_sent(platform, user).await
}

#[tokio::test]
async fn reminders_go_once_at_the_local_reminder_hour_the_day_before_on_both_sides_of_dst() {
    let clock = TestClock::at(Utc::now());
    let platform = Platform::start_with(clock.clock(), |_| {}).await;
    let user = platform.user("fr-FR").await;
    let change = next_spring_forward();
    let saturday = change.pred_opt().expect("Saturday");
    let monday = change.succ_opt().expect("Monday");
    let tuesday = monday.succ_opt().expect("Tuesday");
    let wednesday = tuesday.succ_opt().expect("Wednesday");
    let thursday = wednesday.succ_opt().expect("Thursday");

    // Sunday's appointment (the change day): its reminder is Saturday 18:00, still UTC+1.
    let (sunday_appt, _) = book_at_ten(&platform, &user, change).await;
    // Monday's: Sunday 18:00, already UTC+2.
    let (monday_appt, _) = book_at_ten(&platform, &user, monday).await;
    // Tuesday's is cancelled; Wednesday's moves to Thursday.
    let (tuesday_appt, _) = book_at_ten(&platform, &user, tuesday).await;
    let (wednesday_appt, _) = book_at_ten(&platform, &user, wednesday).await;
    platform.cancel(&user.token, &tuesday_appt).await;
    let thursday_slot = ten_oclock_slot(&platform, thursday).await;
    let thursday_appt = platform
        .reschedule(&user, &wednesday_appt, &thursday_slot)
        .await;

    testing::eventually("reminders recorded", Duration::from_secs(20), || async {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM notifier.reminders WHERE user_id = $1")
                .bind(&user.id)
                .fetch_one(&platform.app.pool)
                .await
                .expect("count");
        n == 5
    })
    .await;
    let due: Vec<(String, DateTime<Utc>, String)> = sqlx::query_as(
        "SELECT appointment_id::text, due_at, status FROM notifier.reminders
         WHERE user_id = $1 ORDER BY starts_at",
    )
    .bind(&user.id)
    .fetch_all(&platform.app.pool)
    .await
    .expect("reminders");
    let due_of = |id: &str| due.iter().find(|r| r.0 == id).cloned().expect(id);
    assert_eq!(due_of(&sunday_appt).1, paris(saturday, 18));
    assert_eq!(
        due_of(&sunday_appt).1.to_rfc3339(),
        format!("{saturday}T17:00:00+00:00")
    );
    assert_eq!(due_of(&monday_appt).1, paris(change, 18));
    assert_eq!(
        due_of(&monday_appt).1.to_rfc3339(),
        format!("{change}T16:00:00+00:00")
    );
    assert_eq!(due_of(&tuesday_appt).2, "cancelled");
    assert_eq!(due_of(&wednesday_appt).2, "cancelled");
    assert_eq!(due_of(&thursday_appt).1, paris(wednesday, 18));

    // A minute before Saturday 18:00 local: nothing yet.
    at(&clock, paris(saturday, 18) - chrono::Duration::minutes(1)).await;
    assert!(reminders_sent(&platform, &user).await.is_empty());
    // At 18:00 local: Sunday's reminder, on each channel, once.
    at(&clock, paris(saturday, 18) + chrono::Duration::seconds(1)).await;
    let sent = reminders_reach(&platform, &user, 3).await;
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(
        sent.iter().all(|(source, _)| *source == sunday_appt),
        "{sent:?}"
    );
    // Still Saturday evening: Monday's waits for Sunday 18:00 (summer time now).
    at(&clock, paris(change, 18) - chrono::Duration::minutes(1)).await;
    assert_eq!(reminders_sent(&platform, &user).await.len(), 3);
    at(&clock, paris(change, 18) + chrono::Duration::seconds(1)).await;
    let sent = reminders_reach(&platform, &user, 6).await;
    assert_eq!(sent.len(), 6, "{sent:?}");
    // Days later: the cancelled and the moved-away appointments never get one; the moved-to
    // appointment gets its own on Wednesday evening; nothing is sent twice.
    at(&clock, paris(thursday, 9)).await;
    reminders_reach(&platform, &user, 9).await;
    // A few more rounds: nothing else comes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = reminders_sent(&platform, &user).await;
    assert_eq!(sent.len(), 9, "{sent:?}");
    for appointment in [&tuesday_appt, &wednesday_appt] {
        assert!(
            sent.iter().all(|(source, _)| source != appointment),
            "no reminder for {appointment}: {sent:?}"
        );
    }
    assert_eq!(
        sent.iter()
            .filter(|(source, _)| *source == thursday_appt)
            .count(),
        3
    );
    platform
        .settled(&user, "AppointmentReminder", 9, Duration::from_secs(20))
        .await;
    let reminder_sms: Vec<_> = platform
        .sms_to(&user)
        .await
        .into_iter()
        .filter(|s| s.body.contains("10:00"))
        .collect();
    assert!(
        reminder_sms.len() >= 3,
        "reminders name the local time: {reminder_sms:?}"
    );
}
