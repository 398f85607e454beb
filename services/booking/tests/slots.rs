//! Slot generation: schedule changes keep booked slots; the job extends the horizon.

mod common;

use common::{TestApp, paris_day};
use pulse_kit::component::ComponentContext;
use pulse_kit::testing::{kafka_brokers, redis_url};
use serde_json::{Value, json};

#[tokio::test]
async fn a_schedule_change_rebuilds_free_slots_and_keeps_booked_ones() {
    let app = TestApp::start().await;
    let practitioner = app.practitioner("Paris", "dentistry", 30).await;
    let id = practitioner["id"].as_str().expect("id");
    let day = paris_day(7);
    let before = app.slots(id, &day, &day).await;
    let patient = app.token("patient-keep", &["patient"]);
    let kept = before
        .iter()
        .find(|s| s["start"].as_str().is_some_and(|t| t.contains("T10:00")))
        .expect("10:00 slot");
    let (status, appointment, _) = app
        .book(&patient, kept["id"].as_str().expect("slot"), "keep")
        .await;
    assert_eq!(status, 201, "{appointment}");

    // Now 20-minute slots, 09:00-12:00 only.
    let morning = json!([{ "start": "09:00", "end": "12:00" }]);
    let response = app
        .client
        .put(format!("{}/v1/practitioners/{id}/schedule", app.base))
        .bearer_auth(app.admin())
        .json(&json!({ "slotMinutes": 20, "weekly": { "Mon": morning, "Tue": morning, "Wed": morning, "Thu": morning,
                       "Fri": morning, "Sat": morning, "Sun": morning } }))
        .send()
        .await
        .expect("schedule");
    assert_eq!(response.status(), 204);
    let after: Vec<String> = app
        .slots(id, &day, &day)
        .await
        .iter()
        .map(|s: &Value| s["start"].as_str().expect("start")[11..16].to_owned())
        .collect();
    // 09:00 … 11:40 every 20 minutes, minus those overlapping the booked 10:00–10:30.
    assert_eq!(
        after,
        vec![
            "09:00", "09:20", "09:40", "10:40", "11:00", "11:20", "11:40"
        ]
    );
    let mine: Value = app
        .client
        .get(format!(
            "{}/v1/appointments/{}",
            app.base,
            appointment["id"].as_str().expect("id")
        ))
        .bearer_auth(&patient)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(
        mine["status"], "booked",
        "the booked slot survived the change"
    );
}

#[tokio::test]
async fn the_slot_job_extends_every_schedule_to_the_horizon_and_is_idempotent() {
    let app = TestApp::start().await;
    let practitioner = app.practitioner("Lille", "cardiology", 60).await;
    let id = practitioner["id"].as_str().expect("id");
    let pool = sqlx::PgPool::connect(&app.db.url).await.expect("connect");
    // As if the job last ran long ago: slots only for the next 3 days.
    sqlx::query("DELETE FROM booking.slots WHERE practitioner_id = $1::uuid AND starts_at > now() + interval '3 days'")
        .bind(id)
        .execute(&pool)
        .await
        .expect("trim");
    sqlx::query("UPDATE booking.schedules SET generated_until = current_date + 3 WHERE practitioner_id = $1::uuid")
        .bind(id)
        .execute(&pool)
        .await
        .expect("age");
    let ctx = ComponentContext::standalone(
        "booking",
        app.country.clone(),
        &app.db.url,
        &redis_url(),
        kafka_brokers(),
    )
    .expect("context");
    let practitioners = pulse_booking::Services::new(&ctx).practitioners;
    assert_eq!(practitioners.extend_slots(50).await.expect("job"), 1);
    let count = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM booking.slots WHERE practitioner_id = $1::uuid",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .expect("count")
    };
    let extended = count().await;
    let last: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "SELECT max(starts_at) FROM booking.slots WHERE practitioner_id = $1::uuid",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .expect("max");
    assert!(
        last > chrono::Utc::now() + chrono::Duration::days(360),
        "slots reach the 366-day horizon: {last}"
    );
    // Nothing left to do, and running again changes nothing.
    assert_eq!(practitioners.extend_slots(50).await.expect("job"), 0);
    assert_eq!(count().await, extended);
    pool.close().await;
}
