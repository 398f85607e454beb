//! Booking against real PostgreSQL, Redis and Kafka.

mod common;

use std::time::Duration;

use common::{TestApp, france, paris_day};
use serde_json::{Value, json};

/// Races `clients` patients for one slot; returns the statuses and the 409 bodies.
async fn race(app: &TestApp, slot: &str, clients: usize) -> (Vec<u16>, Vec<Value>) {
    let mut tasks = Vec::new();
    for i in 0..clients {
        let token = app.token(&format!("patient-{}", pulse_kit::new_id()), &["patient"]);
        let key = format!("race-{i}-{}", pulse_kit::new_id());
        let request = app.book_request(&token, slot, &key);
        tasks.push(tokio::spawn(async move {
            let response = request.send().await.expect("book");
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap_or("").to_owned());
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, content_type, body)
        }));
    }
    let mut statuses = Vec::new();
    let mut conflicts = Vec::new();
    for task in tasks {
        let (status, content_type, body) = task.await.expect("task");
        statuses.push(status);
        if status == 409 {
            assert_eq!(content_type.as_deref(), Some("application/problem+json"));
            conflicts.push(body);
        }
    }
    (statuses, conflicts)
}

async fn active_appointments(app: &TestApp, slot: &str) -> i64 {
    let pool = sqlx::PgPool::connect(&app.db.url).await.expect("connect");
    let n = sqlx::query_scalar(
        "SELECT count(*) FROM booking.appointments WHERE slot_id = $1::uuid AND status = 'booked'",
    )
    .bind(slot)
    .fetch_one(&pool)
    .await
    .expect("count");
    pool.close().await;
    n
}

async fn assert_one_winner(app: &TestApp, rounds: usize) {
    let practitioner = app.practitioner("Paris", "general-practice", 15).await;
    let id = practitioner["id"].as_str().expect("id");
    let slots = app.slots(id, &paris_day(2), &paris_day(3)).await;
    assert!(slots.len() >= rounds, "enough slots");
    for (round, slot) in slots.iter().take(rounds).enumerate() {
        let slot = slot["id"].as_str().expect("slot id");
        let (statuses, conflicts) = race(app, slot, 200).await;
        let created = statuses.iter().filter(|&&s| s == 201).count();
        assert_eq!(
            created, 1,
            "round {round}: exactly one 201, got {statuses:?}"
        );
        assert_eq!(
            conflicts.len(),
            199,
            "round {round}: every other answer is 409: {statuses:?}"
        );
        for problem in &conflicts {
            let kind = problem["type"].as_str().unwrap_or_default();
            assert!(
                kind.ends_with("/slot-taken") || kind.ends_with("/slot-being-booked"),
                "{problem}"
            );
        }
        assert_eq!(
            active_appointments(app, slot).await,
            1,
            "round {round}: one appointment in the database"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_clients_one_slot_one_appointment() {
    let app = TestApp::start().await;
    assert_one_winner(&app, 10).await;
    // What the dashboards show: ten bookings, and every loser counted as a conflict.
    let outcome = |name: &str| format!("pulse_booking_appointments_total{{outcome=\"{name}\"}}");
    assert_eq!(app.metric(&outcome("booked")).await, 10.0);
    assert_eq!(app.metric(&outcome("conflict")).await, 1990.0);
    assert_eq!(app.metric(&outcome("cancelled")).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_redis_the_database_still_allows_one_appointment() {
    // Nothing listens on port 1: every Redis call fails, as when Redis is stopped.
    let app = TestApp::start_with(france(), "redis://127.0.0.1:1").await;
    assert_one_winner(&app, 10).await;
    assert!(app.metric("pulse_booking_slot_lock_bypassed_total").await >= 2000.0);
    assert!(app.metric("pulse_redis_errors_total").await >= 1.0);
}

/// One patient booking a day's slots all at once (the daily limit is one appointment): exactly
/// one booking is written, every other is refused by the rule, with or without Redis (the slot
/// locks are per slot and never meet here: the patient's lock in the database decides).
async fn assert_one_booking_a_day_for_a_racing_patient(app: &TestApp) {
    let practitioner = app.practitioner("Paris", "general-practice", 15).await;
    let id = practitioner["id"].as_str().expect("id");
    let slots = app.slots(id, &paris_day(4), &paris_day(4)).await;
    assert!(slots.len() >= 30, "enough slots on one day");
    let patient = app.token(&format!("patient-{}", pulse_kit::new_id()), &["patient"]);
    let tasks: Vec<_> = slots
        .iter()
        .take(30)
        .enumerate()
        .map(|(i, slot)| {
            let request = app.book_request(
                &patient,
                slot["id"].as_str().expect("slot id"),
                &format!("day-{i}"),
            );
            tokio::spawn(async move {
                let response = request.send().await.expect("book");
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                (status, body)
            })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        let (status, body) = task.await.expect("task");
        match status {
            201 => created += 1,
            422 => assert_eq!(
                body["type"], "https://pulse.dev/problems/daily-limit-reached",
                "{body}"
            ),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(created, 1, "one booking that day");
    let pool = sqlx::PgPool::connect(&app.db.url).await.expect("connect");
    let active: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM booking.appointments a JOIN booking.slots s ON s.id = a.slot_id
         WHERE a.practitioner_id = $1::uuid AND a.status = 'booked' AND s.status = 'booked'",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .expect("count");
    let booked_slots: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM booking.slots WHERE practitioner_id = $1::uuid AND status = 'booked'",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .expect("count");
    pool.close().await;
    assert_eq!(active, 1, "one appointment in the database");
    assert_eq!(booked_slots, 1, "a refused booking leaves its slot free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_patient_racing_for_a_days_slots_books_exactly_the_daily_limit() {
    let app = TestApp::start().await;
    assert_one_booking_a_day_for_a_racing_patient(&app).await;
    let app = TestApp::start_with(france(), "redis://127.0.0.1:1").await;
    assert_one_booking_a_day_for_a_racing_patient(&app).await;
}

#[tokio::test]
async fn a_retry_with_the_same_key_returns_the_first_response_and_books_nothing_more() {
    let app = TestApp::start().await;
    let (_, slots) = app
        .practitioner_with_slots("Lyon", "dermatology", 30, 3)
        .await;
    let patient = app.token("patient-retry", &["patient"]);
    let slot = slots[0]["id"].as_str().expect("slot");
    let (status, first, _) = app.book(&patient, slot, "retry-key").await;
    assert_eq!(status, 201, "{first}");
    let (status, again, headers) = app.book(&patient, slot, "retry-key").await;
    assert_eq!(status, 201);
    assert_eq!(again, first);
    assert_eq!(headers["idempotent-replayed"], "true");
    let mine: Value = app
        .client
        .get(format!("{}/v1/appointments", app.base))
        .bearer_auth(&patient)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(mine["items"].as_array().map(Vec::len), Some(1));
    // Without the header the booking is refused with a clear problem.
    let response = app
        .client
        .post(format!("{}/v1/appointments", app.base))
        .bearer_auth(&patient)
        .json(&json!({ "slotId": slots[1]["id"] }))
        .send()
        .await
        .expect("book");
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.expect("json");
    assert_eq!(
        problem["type"],
        "https://pulse.dev/problems/idempotency-key-required"
    );
}

/// The key of a booking is looked up only after a booking that made no effect; these are the
/// retries that then reach the flow's transaction before their first outcome.
#[tokio::test]
async fn a_key_reused_for_another_slot_or_retried_after_a_cancellation_books_nothing() {
    let app = TestApp::start().await;
    let (_, slots) = app
        .practitioner_with_slots("Lille", "dermatology", 30, 3)
        .await;
    let patient = app.token("patient-reuse", &["patient"]);
    let first_slot = slots[0]["id"].as_str().expect("slot");
    let other_slot = slots[1]["id"].as_str().expect("slot");
    let (status, first, _) = app.book(&patient, first_slot, "reuse-key").await;
    assert_eq!(status, 201, "{first}");
    // Another slot under the same key: refused, and the slot stays free.
    let (status, problem, _) = app.book(&patient, other_slot, "reuse-key").await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(
        problem["type"],
        "https://pulse.dev/problems/idempotency-key-reused"
    );
    assert_eq!(active_appointments(&app, other_slot).await, 0);
    // The patient cancels; the slot is free again. A late retry of the first booking replays
    // its answer and does not book the slot a second time.
    let response = app
        .client
        .post(format!(
            "{}/v1/appointments/{}/cancel",
            app.base,
            first["id"].as_str().expect("id")
        ))
        .bearer_auth(&patient)
        .send()
        .await
        .expect("cancel");
    assert_eq!(response.status(), 200);
    let (status, again, headers) = app.book(&patient, first_slot, "reuse-key").await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again, first);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(active_appointments(&app, first_slot).await, 0);
    // Another patient can still book it.
    let other = app.token("patient-after-reuse", &["patient"]);
    let (status, body, _) = app.book(&other, first_slot, "reuse-key").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(active_appointments(&app, first_slot).await, 1);
}

#[tokio::test]
async fn slots_on_dst_days_are_right_in_local_time() {
    let app = TestApp::start().await;
    let practitioner = app.practitioner("Paris", "cardiology", 60).await;
    let id = practitioner["id"].as_str().expect("id");
    let schedule = json!({
        "slotMinutes": 60,
        "weekly": { "Sun": [{ "start": "01:00", "end": "04:00" }, { "start": "09:00", "end": "10:00" }],
                    "Sat": [{ "start": "09:00", "end": "10:00" }] }
    });
    let response = app
        .client
        .put(format!("{}/v1/practitioners/{id}/schedule", app.base))
        .bearer_auth(app.admin())
        .json(&schedule)
        .send()
        .await
        .expect("schedule");
    assert_eq!(response.status(), 204);
    // Next spring-forward (last Sunday of March) and fall-back (last Sunday of October) days
    // within the horizon.
    let (spring, fall) = next_dst_sundays();
    let starts = |slots: Vec<Value>| -> Vec<String> {
        slots
            .iter()
            .map(|s| s["start"].as_str().expect("start").to_owned())
            .collect()
    };
    let before = spring.pred_opt().expect("day").to_string();
    let spring_slots = starts(app.slots(id, &before, &spring.to_string()).await);
    assert_eq!(
        spring_slots,
        vec![
            format!("{before}T09:00:00+01:00"),
            format!("{spring}T01:00:00+01:00"),
            format!("{spring}T03:00:00+02:00"),
            format!("{spring}T09:00:00+02:00"),
        ]
    );
    let fall_slots = starts(app.slots(id, &fall.to_string(), &fall.to_string()).await);
    assert_eq!(
        fall_slots,
        vec![
            format!("{fall}T01:00:00+02:00"),
            format!("{fall}T02:00:00+02:00"),
            format!("{fall}T02:00:00+01:00"),
            format!("{fall}T03:00:00+01:00"),
            format!("{fall}T09:00:00+01:00"),
        ]
    );
}

fn next_dst_sundays() -> (chrono::NaiveDate, chrono::NaiveDate) {
    use chrono::Datelike;
    let last_sunday = |year: i32, month: u32| {
        let mut day = chrono::NaiveDate::from_ymd_opt(year, month, 31).expect("date");
        while day.weekday() != chrono::Weekday::Sun {
            day = day.pred_opt().expect("day");
        }
        day
    };
    let today = chrono::Utc::now().date_naive() + chrono::Duration::days(2);
    let spring = [today.year(), today.year() + 1]
        .into_iter()
        .map(|y| last_sunday(y, 3))
        .find(|d| *d > today)
        .expect("spring");
    let fall = [today.year(), today.year() + 1]
        .into_iter()
        .map(|y| last_sunday(y, 10))
        .find(|d| *d > today)
        .expect("fall");
    (spring, fall)
}

#[tokio::test]
async fn rules_are_enforced_with_clear_messages() {
    let app = TestApp::start().await;
    let practitioner = app.practitioner("Paris", "pediatrics", 30).await;
    let id = practitioner["id"].as_str().expect("id");
    let patient = app.token("patient-rules", &["patient"]);
    let now = chrono::Utc::now();

    // Minimum notice: slots in the next two hours are not even offered; booking one is refused.
    let pool = sqlx::PgPool::connect(&app.db.url).await.expect("connect");
    let soon: Option<String> = sqlx::query_scalar(
        "SELECT id::text FROM booking.slots WHERE practitioner_id = $1::uuid AND status = 'free'
         AND starts_at > now() + interval '10 minutes' AND starts_at < now() + interval '110 minutes' LIMIT 1",
    )
    .bind(id)
    .fetch_optional(&pool)
    .await
    .expect("slot");
    if let Some(soon) = soon {
        let (status, problem, _) = app.book(&patient, &soon, "soon").await;
        assert_eq!(status, 422, "{problem}");
        assert_eq!(
            problem["type"],
            "https://pulse.dev/problems/booking-too-soon"
        );
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("120 minutes"),
            "{problem}"
        );
    }

    // One appointment per patient per day.
    let day = app.slots(id, &paris_day(5), &paris_day(5)).await;
    let (status, first, _) = app
        .book(&patient, day[0]["id"].as_str().expect("slot"), "d1")
        .await;
    assert_eq!(status, 201, "{first}");
    let (status, problem, _) = app
        .book(&patient, day[1]["id"].as_str().expect("slot"), "d2")
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(
        problem["type"],
        "https://pulse.dev/problems/daily-limit-reached"
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("per day"),
        "{problem}"
    );

    // Cancel cut-off (24 h): an appointment starting in about 3 hours cannot be cancelled by
    // the patient, but can by the practitioner.
    let near: String = sqlx::query_scalar(
        "SELECT id::text FROM booking.slots WHERE practitioner_id = $1::uuid AND status = 'free'
         AND starts_at > now() + interval '150 minutes' ORDER BY starts_at LIMIT 1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .expect("slot");
    let other = app.token("patient-cutoff", &["patient"]);
    let (status, appointment, _) = app.book(&other, &near, "near").await;
    assert_eq!(status, 201, "{appointment}");
    let starts =
        chrono::DateTime::parse_from_rfc3339(appointment["start"].as_str().expect("start"))
            .expect("time");
    assert!(starts.signed_duration_since(now) < chrono::Duration::hours(24));
    let appointment_id = appointment["id"].as_str().expect("id");
    let cancel = |token: String| {
        let client = app.client.clone();
        let url = format!("{}/v1/appointments/{appointment_id}/cancel", app.base);
        async move {
            client
                .post(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("cancel")
        }
    };
    let refused = cancel(other.clone()).await;
    assert_eq!(refused.status(), 422);
    let problem: Value = refused.json().await.expect("json");
    assert_eq!(
        problem["type"],
        "https://pulse.dev/problems/cancellation-too-late"
    );
    // Someone else's appointment is not found.
    assert_eq!(cancel(patient.clone()).await.status(), 404);
    let doctor = app.token(
        practitioner["accountSubject"].as_str().expect("subject"),
        &["practitioner"],
    );
    let agenda: Value = app
        .client
        .get(format!("{}/v1/appointments", app.base))
        .bearer_auth(&doctor)
        .send()
        .await
        .expect("agenda")
        .json()
        .await
        .expect("json");
    assert!(
        agenda["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|a| a["id"] == appointment["id"])
    );
    let done = cancel(doctor).await;
    assert_eq!(done.status(), 200);
    pool.close().await;
}

#[tokio::test]
async fn cancel_frees_the_slot_and_search_shows_it_within_a_second() {
    let app = TestApp::start().await;
    let practitioner = app.practitioner("Bordeaux", "ophthalmology", 30).await;
    let id = practitioner["id"].as_str().expect("id");
    let day = paris_day(4);
    let search_url = format!(
        "{}/v1/practitioners?city=bordeaux&specialty=ophthalmology&available_on={day}",
        app.base
    );
    let first_slot = |page: Value| -> Option<String> {
        page["items"][0]["availableSlots"][0]["id"]
            .as_str()
            .map(str::to_owned)
    };
    let page: Value = app
        .client
        .get(&search_url)
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("json");
    assert_eq!(page["total"], 1, "{page}");
    let slot = first_slot(page).expect("a free slot is shown");
    // The search is cached now; booking the slot must still make it disappear.
    let patient = app.token("patient-cancel", &["patient"]);
    let (status, appointment, _) = app.book(&patient, &slot, "c1").await;
    assert_eq!(status, 201, "{appointment}");
    let gone = wait_for(&app, &search_url, |page| {
        first_slot(page).as_deref() != Some(slot.as_str())
    })
    .await;
    assert!(
        gone < Duration::from_secs(1),
        "booked slot left search after {gone:?}"
    );
    let response = app
        .client
        .post(format!(
            "{}/v1/appointments/{}/cancel",
            app.base,
            appointment["id"].as_str().expect("id")
        ))
        .bearer_auth(&patient)
        .send()
        .await
        .expect("cancel");
    assert_eq!(response.status(), 200);
    let back = wait_for(&app, &search_url, |page| {
        first_slot(page).as_deref() == Some(slot.as_str())
    })
    .await;
    assert!(
        back < Duration::from_secs(1),
        "freed slot came back after {back:?}"
    );
    // And it can be booked again.
    let again = app.token("patient-again", &["patient"]);
    let (status, _, _) = app.book(&again, &slot, "c2").await;
    assert_eq!(status, 201);
    let slots = app.slots(id, &day, &day).await;
    assert!(slots.iter().all(|s| s["id"] != slot.as_str()));
}

#[tokio::test]
async fn a_booking_leaves_the_search_of_every_replica_within_a_second() {
    let app = TestApp::start().await;
    // A second replica of the same country: same database, Redis keyspace and Kafka topics,
    // so one consumer group (only one replica consumes each event).
    let mut settings =
        pulse_kit::testing::server_settings(&app.db.url, &pulse_kit::testing::redis_url());
    settings.instance = app.keyspace.strip_prefix("fr-").map(str::to_owned);
    let other = pulse_kit::server::start(
        &settings,
        france(),
        vec![std::sync::Arc::new(pulse_booking::Booking)],
    )
    .await
    .expect("second replica");
    app.practitioner("Rennes", "cardiology", 30).await;
    let day = paris_day(5);
    let query = format!("/v1/practitioners?city=rennes&specialty=cardiology&available_on={day}");
    let replicas = [app.base.clone(), format!("http://{}", other.http_addr)];
    let first_slot = |page: Value| -> Option<String> {
        page["items"][0]["availableSlots"][0]["id"]
            .as_str()
            .map(str::to_owned)
    };
    let mut shown = Vec::new();
    for base in &replicas {
        // The second ask of each replica is answered from its own near-cache.
        for _ in 0..2 {
            let page: Value = app
                .client
                .get(format!("{base}{query}"))
                .send()
                .await
                .expect("search")
                .json()
                .await
                .expect("json");
            shown.push(first_slot(page).expect("a free slot is shown"));
        }
    }
    assert!(shown.windows(2).all(|w| w[0] == w[1]), "{shown:?}");
    let near_hits = |admin: String| {
        let client = app.client.clone();
        async move {
            let text = client
                .get(format!("{admin}/metrics"))
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text");
            pulse_kit::testing::metric_value(&text, "pulse_booking_search_near_cache_hits_total")
        }
    };
    for admin in [
        app.admin_base.clone(),
        format!("http://{}", other.admin_addr),
    ] {
        assert!(
            near_hits(admin.clone()).await >= 1.0,
            "{admin} served from its near-cache"
        );
    }

    let slot = shown[0].clone();
    let patient = app.token("patient-replicas", &["patient"]);
    let (status, appointment, _) = app.book(&patient, &slot, "replicas-1").await;
    assert_eq!(status, 201, "{appointment}");
    for base in &replicas {
        let gone = wait_for(&app, &format!("{base}{query}"), |page| {
            first_slot(page).as_deref() != Some(slot.as_str())
        })
        .await;
        assert!(
            gone < Duration::from_secs(1),
            "the booked slot left the search of {base} after {gone:?}"
        );
    }
    other.shutdown().await;
}

async fn wait_for(app: &TestApp, url: &str, done: impl Fn(Value) -> bool) -> Duration {
    let started = tokio::time::Instant::now();
    loop {
        let page: Value = app
            .client
            .get(url)
            .send()
            .await
            .expect("search")
            .json()
            .await
            .expect("json");
        if done(page) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "search never changed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_searches_on_a_cold_key_cost_one_query() {
    let app = TestApp::start().await;
    for city in ["Nantes", "Nantes", "Lille"] {
        app.practitioner(city, "dentistry", 30).await;
    }
    let before = app.metric("pulse_booking_search_db_queries_total").await;
    let url = format!(
        "{}/v1/practitioners?city=Nantes&specialty=dentistry&page_size=10",
        app.base
    );
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let client = app.client.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let response = client.get(url).send().await.expect("search");
            assert_eq!(response.status(), 200);
            let page: Value = response.json().await.expect("json");
            page["total"].as_i64()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("task"), Some(2));
    }
    let after = app.metric("pulse_booking_search_db_queries_total").await;
    assert_eq!(
        after - before,
        1.0,
        "1000 concurrent searches, one database query"
    );
}

#[tokio::test]
async fn near_search_uses_distance() {
    let app = TestApp::start().await;
    app.practitioner("Paris", "dermatology", 30).await;
    let page: Value = app
        .client
        .get(format!(
            "{}/v1/practitioners?near=48.86,2.35&radius_km=5",
            app.base
        ))
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("json");
    assert_eq!(page["total"], 1, "{page}");
    assert!(page["items"][0]["distanceKm"].as_f64().expect("distance") < 1.0);
    let far: Value = app
        .client
        .get(format!(
            "{}/v1/practitioners?near=45.76,4.83&radius_km=5",
            app.base
        ))
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("json");
    assert_eq!(far["total"], 0, "{far}");
}

#[tokio::test]
async fn malformed_input_is_a_4xx_never_a_5xx() {
    let app = TestApp::start().await;
    let practitioner = app.practitioner("Paris", "dentistry", 30).await;
    let id = practitioner["id"].as_str().expect("id");
    let patient = app.token("patient-bad", &["patient"]);
    let get = |path: String| {
        let client = app.client.clone();
        let url = format!("{}{path}", app.base);
        async move { client.get(url).send().await.expect("get") }
    };
    for path in [
        "/v1/practitioners?page_size=100000".to_owned(),
        "/v1/practitioners?page=0".to_owned(),
        "/v1/practitioners?page=abc".to_owned(),
        "/v1/practitioners?near=91,2".to_owned(),
        "/v1/practitioners?near=paris".to_owned(),
        "/v1/practitioners?radius_km=3".to_owned(),
        "/v1/practitioners?near=48.8,2.3&radius_km=-1".to_owned(),
        "/v1/practitioners?available_on=2026-13-01".to_owned(),
        "/v1/practitioners?available_on=1999-01-01".to_owned(),
        format!("/v1/practitioners?city={}", "x".repeat(500)),
        "/v1/practitioners/not-a-uuid".to_owned(),
        format!("/v1/practitioners/{id}/slots?from=tomorrow"),
        format!("/v1/practitioners/{id}/slots?from=2026-01-10&to=2026-01-01"),
        format!("/v1/practitioners/{id}/slots?from=2026-01-01&to=2026-12-31"),
    ] {
        let response = get(path.clone()).await;
        assert_eq!(response.status(), 400, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    let unknown = get(format!("/v1/practitioners/{}/slots", pulse_kit::new_id())).await;
    assert_eq!(unknown.status(), 404);

    let post = |body: String, key: &str| {
        let client = app.client.clone();
        let url = format!("{}/v1/appointments", app.base);
        let token = patient.clone();
        let key = key.to_owned();
        async move {
            client
                .post(url)
                .bearer_auth(token)
                .header("Idempotency-Key", key)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("post")
        }
    };
    for (body, want) in [
        ("{not json".to_owned(), 400),
        (r#"{"slotId": 42}"#.to_owned(), 422),
        (r#"{"slotId": "not-a-uuid"}"#.to_owned(), 422),
        (r#"{}"#.to_owned(), 422),
        (format!(r#"{{"slotId": "{}"}}"#, pulse_kit::new_id()), 404),
        (
            format!(r#"{{"slotId": "{}", "extra": true}}"#, pulse_kit::new_id()),
            422,
        ),
    ] {
        let response = post(body.clone(), &pulse_kit::new_id().to_string()).await;
        assert_eq!(response.status(), want, "{body}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{body}"
        );
    }
    // Admin input.
    let response = app
        .client
        .post(format!("{}/v1/practitioners", app.base))
        .bearer_auth(app.admin())
        .json(
            &json!({ "name": "", "specialty": "x", "city": "y", "address": "z", "latitude": 100.0,
                       "longitude": 0.0, "consultationPriceMinor": 1 }),
        )
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 422);
    let response = app
        .client
        .post(format!("{}/v1/practitioners", app.base))
        .bearer_auth(&patient)
        .json(&json!({}))
        .send()
        .await
        .expect("post");
    assert_eq!(
        response.status(),
        403,
        "authorization comes before validation"
    );
}

/// One account is one practitioner: a second practitioner (created or edited) for an account
/// already linked is refused 409 `account-already-linked`, not a server error.
#[tokio::test]
async fn an_account_already_linked_to_a_practitioner_is_409() {
    let app = TestApp::start().await;
    let first = app.practitioner("Lyon", "dermatology", 30).await;
    let second = app.practitioner("Lyon", "dermatology", 30).await;
    let mut body = first.clone();
    for field in ["id", "currency"] {
        body.as_object_mut().expect("object").remove(field);
    }
    let send = |request: reqwest::RequestBuilder| async {
        let response = request
            .bearer_auth(app.admin())
            .json(&body)
            .send()
            .await
            .expect("send");
        let status = response.status();
        let problem: Value = response.json().await.expect("json");
        (status, problem)
    };
    for (what, request) in [
        (
            "create",
            app.client.post(format!("{}/v1/practitioners", app.base)),
        ),
        (
            "update",
            app.client.put(format!(
                "{}/v1/practitioners/{}",
                app.base,
                second["id"].as_str().expect("id")
            )),
        ),
    ] {
        let (status, problem) = send(request).await;
        assert_eq!(status, 409, "{what}: {problem}");
        assert_eq!(
            problem["type"], "https://pulse.dev/problems/account-already-linked",
            "{what}"
        );
    }
}

#[tokio::test]
async fn reschedule_moves_the_appointment_in_one_transaction() {
    let app = TestApp::start().await;
    let (practitioner, slots) = app
        .practitioner_with_slots("Paris", "physiotherapy", 30, 6)
        .await;
    let id = practitioner["id"].as_str().expect("id");
    let patient = app.token("patient-move", &["patient"]);
    let (status, booked, _) = app
        .book(&patient, slots[0]["id"].as_str().expect("slot"), "m1")
        .await;
    assert_eq!(status, 201);
    let response = app
        .client
        .post(format!(
            "{}/v1/appointments/{}/reschedule",
            app.base,
            booked["id"].as_str().expect("id")
        ))
        .bearer_auth(&patient)
        .json(&json!({ "slotId": slots[3]["id"] }))
        .send()
        .await
        .expect("reschedule");
    assert_eq!(response.status(), 201);
    let moved: Value = response.json().await.expect("json");
    assert_eq!(moved["slotId"], slots[3]["id"]);
    assert_eq!(moved["rescheduledFrom"], booked["id"]);
    let free: Vec<Value> = app.slots(id, &paris_day(6), &paris_day(6)).await;
    assert!(
        free.iter().any(|s| s["id"] == slots[0]["id"]),
        "old slot is free again"
    );
    assert!(
        free.iter().all(|s| s["id"] != slots[3]["id"]),
        "new slot is taken"
    );
}

#[tokio::test]
async fn openapi_describes_the_endpoints() {
    let app = TestApp::start().await;
    let doc: Value = app
        .client
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    for path in [
        "/v1/practitioners",
        "/v1/practitioners/{id}",
        "/v1/practitioners/{id}/slots",
        "/v1/practitioners/{id}/schedule",
        "/v1/appointments",
        "/v1/appointments/{id}/cancel",
        "/v1/appointments/{id}/reschedule",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    assert!(
        doc["paths"]["/v1/appointments"]["post"]["responses"]["409"]["content"]["application/problem+json"]
            .is_object(),
        "409 is documented as problem+json"
    );
    // What the kit's layers answer is in the served document too (pulse_kit::openapi).
    let book = &doc["paths"]["/v1/appointments"]["post"];
    for status in ["400", "401", "413", "415", "422", "429", "503"] {
        assert!(book["responses"][status].is_object(), "{status} missing");
    }
    let key = book["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "Idempotency-Key"))
        .expect("Idempotency-Key documented");
    assert_eq!(
        key["schema"]["pattern"],
        pulse_kit::openapi::IDEMPOTENCY_KEY_PATTERN
    );
}

#[tokio::test]
async fn idempotency_keys_belong_to_the_caller() {
    let app = TestApp::start().await;
    let (_, slots) = app
        .practitioner_with_slots("Lyon", "gynecology", 30, 3)
        .await;
    // Two patients happen to pick the same key: each gets their own booking.
    let alice = app.token("patient-alice", &["patient"]);
    let bob = app.token("patient-bob", &["patient"]);
    let (status, first, _) = app
        .book(&alice, slots[0]["id"].as_str().expect("slot"), "same-key")
        .await;
    assert_eq!(status, 201, "{first}");
    let (status, second, headers) = app
        .book(&bob, slots[1]["id"].as_str().expect("slot"), "same-key")
        .await;
    assert_eq!(status, 201, "{second}");
    assert!(headers.get("idempotent-replayed").is_none());
    assert_eq!(second["patientId"], "patient-bob");
    assert_ne!(first["id"], second["id"]);
}

/// `method path` with an optional token, key and raw JSON body: the status.
async fn status_of(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    key: Option<&str>,
    body: &str,
) -> u16 {
    let mut request = app
        .client
        .request(method, format!("{}{path}", app.base))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.expect("request").status().as_u16()
}

#[tokio::test]
async fn authorization_comes_before_validation_on_every_write() {
    let app = TestApp::start().await;
    let (practitioner, slots) = app
        .practitioner_with_slots("Paris", "neurology", 30, 4)
        .await;
    let id = practitioner["id"].as_str().expect("id");
    let slot = slots[0]["id"].as_str().expect("slot").to_owned();
    let patient = app.token("patient-authz", &["patient"]);
    let doctor = app.token("doctor-authz", &["practitioner"]);
    let appointment = pulse_kit::new_id();
    let writes = [
        (reqwest::Method::POST, "/v1/practitioners".to_owned()),
        (reqwest::Method::PUT, format!("/v1/practitioners/{id}")),
        (
            reqwest::Method::PUT,
            format!("/v1/practitioners/{id}/schedule"),
        ),
        (reqwest::Method::POST, "/v1/appointments".to_owned()),
        (
            reqwest::Method::POST,
            format!("/v1/appointments/{appointment}/cancel"),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/appointments/{appointment}/reschedule"),
        ),
    ];
    // No token (or a forged one): 401, whatever the body and the key (even an invalid key).
    for (method, path) in &writes {
        for body in ["{}", "{not json", r#"{"slotId": 42}"#, "[]"] {
            for key in [None, Some("k-401"), Some("")] {
                for token in [None, Some("not-a-token")] {
                    let status = status_of(&app, method.clone(), path, token, key, body).await;
                    assert_eq!(status, 401, "{method} {path} {body} {key:?} {token:?}");
                }
            }
        }
    }
    // Without the role: 403 before the body is read (`{}` would be 422, `{not json` 400).
    let admin_writes = &writes[..3];
    for (method, path) in admin_writes {
        for token in [&patient, &doctor] {
            for body in ["{}", "{not json", "[]"] {
                // Keys belong to the caller: each request gets its own.
                for key in [None, Some(pulse_kit::new_id().to_string())] {
                    let key = key.as_deref();
                    let status =
                        status_of(&app, method.clone(), path, Some(token), key, body).await;
                    assert_eq!(status, 403, "{method} {path} {body} {key:?}");
                }
            }
        }
    }
    for (method, path) in [&writes[3], &writes[5]] {
        for body in ["{}", "{not json"] {
            for token in [app.admin(), doctor.clone()] {
                let key = pulse_kit::new_id().to_string();
                let status =
                    status_of(&app, method.clone(), path, Some(&token), Some(&key), body).await;
                assert_eq!(status, 403, "{method} {path} {body}");
            }
        }
    }
    // With the role, validation speaks.
    let admin = app.admin();
    for (method, path) in admin_writes {
        let status = status_of(&app, method.clone(), path, Some(&admin), None, "{}").await;
        assert_eq!(status, 422, "{method} {path}");
    }
    let status = status_of(
        &app,
        reqwest::Method::POST,
        "/v1/appointments",
        Some(&patient),
        Some("k-p"),
        "{}",
    )
    .await;
    assert_eq!(status, 422);
    // A patient without a key: 400 (the key is required), never an appointment.
    let body = json!({ "slotId": slot }).to_string();
    let status = status_of(
        &app,
        reqwest::Method::POST,
        "/v1/appointments",
        Some(&patient),
        None,
        &body,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(active_appointments(&app, &slot).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicates_of_one_booking_get_the_same_answer() {
    let app = TestApp::start().await;
    let (_, slots) = app
        .practitioner_with_slots("Lille", "cardiology", 30, 3)
        .await;
    for (round, slot) in slots.iter().take(5).enumerate() {
        let slot = slot["id"].as_str().expect("slot").to_owned();
        let patient = app.token(&format!("patient-dup-{round}"), &["patient"]);
        let key = format!("dup-{round}");
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let request = app.book_request(&patient, &slot, &key);
            tasks.push(tokio::spawn(async move {
                let response = request.send().await.expect("book");
                let status = response.status().as_u16();
                let replayed = response.headers().contains_key("idempotent-replayed");
                let location = response
                    .headers()
                    .get("location")
                    .map(|l| l.to_str().unwrap_or_default().to_owned());
                let body = response.bytes().await.expect("body");
                (status, replayed, location, body)
            }));
        }
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.expect("task"));
        }
        let (status, _, location, body) = &answers[0];
        assert_eq!(*status, 201, "round {round}: {answers:?}");
        for (other_status, _, other_location, other_body) in &answers {
            assert_eq!(
                (other_status, other_location, other_body),
                (status, location, body),
                "round {round}: every duplicate gets the first answer byte for byte"
            );
        }
        let fresh = answers
            .iter()
            .filter(|(_, replayed, _, _)| !replayed)
            .count();
        assert_eq!(
            fresh, 1,
            "round {round}: one answer is fresh, the others replayed"
        );
        assert_eq!(active_appointments(&app, &slot).await, 1, "round {round}");
        let appointment: Value = serde_json::from_slice(body).expect("json");
        assert_eq!(
            location.as_deref(),
            Some(
                format!(
                    "/v1/appointments/{}",
                    appointment["id"].as_str().expect("id")
                )
                .as_str()
            )
        );
    }
}

#[tokio::test]
async fn a_retry_takes_back_the_slot_lock_its_dead_first_attempt_left() {
    use redis::AsyncCommands;
    use sha2::{Digest, Sha256};

    let app = TestApp::start().await;
    let (_, slots) = app
        .practitioner_with_slots("Nice", "dermatology", 30, 3)
        .await;
    let slot = slots[0]["id"].as_str().expect("slot");
    // A process died holding the slot's lock for this patient's request "crash-key".
    let token = {
        let mut hasher = Sha256::new();
        hasher.update(b"sub:patient-crash\ncrash-key");
        format!("req:{}", hex::encode(hasher.finalize()))
    };
    let lock = format!("{{booking:{}}}:slot-lock:{slot}", app.keyspace);
    let mut redis = app.redis().await;
    let _: () = redis
        .set_ex(&lock, &token, 30)
        .await
        .expect("a lock left behind");
    // Someone else is turned away while it lives...
    let other = app.token("patient-other", &["patient"]);
    let (status, problem, _) = app.book(&other, slot, "other-key").await;
    assert_eq!(
        (status, pulse_kit::testing::problem_kind(&problem).as_str()),
        (409, "slot-being-booked")
    );
    // ... but the retry of the request that holds it goes through at once.
    let patient = app.token("patient-crash", &["patient"]);
    let (status, appointment, _) = app.book(&patient, slot, "crash-key").await;
    assert_eq!(status, 201, "{appointment}");
    assert_eq!(appointment["patientId"], "patient-crash");
    // The slot is booked now: the lock stays a few seconds to turn the crowd away in Redis.
    let left: Option<String> = redis.get(&lock).await.expect("get");
    assert_eq!(left.as_deref(), Some(token.as_str()));
    let ttl: i64 = redis.pttl(&lock).await.expect("ttl");
    assert!(ttl > 0 && ttl <= 5_000, "it expires by itself ({ttl} ms)");
    let late = app.token("patient-late", &["patient"]);
    let (status, problem, _) = app.book(&late, slot, "late-key").await;
    assert_eq!(
        (status, pulse_kit::testing::problem_kind(&problem).as_str()),
        (409, "slot-being-booked")
    );
    // A refusal of a losing booker is not kept under its key: no record is written.
    let kept: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM booking.idempotency_keys WHERE idempotency_key IN ('other-key', 'late-key')",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(kept, 0, "losers cost no database write");
    // Cancelling frees the slot and lifts the lock: it can be booked again at once.
    let cancelled = app
        .client
        .post(format!(
            "{}/v1/appointments/{}/cancel",
            app.base,
            appointment["id"].as_str().expect("id")
        ))
        .bearer_auth(&patient)
        .send()
        .await
        .expect("cancel");
    assert_eq!(cancelled.status(), 200);
    let left: Option<String> = redis.get(&lock).await.expect("get");
    assert_eq!(left, None, "cancelling lifted the lock");
    let (status, again, _) = app.book(&late, slot, "late-key").await;
    assert_eq!(status, 201, "the refused key is decided again: {again}");
}

/// The crowd racing for a booked slot is turned away by Redis before the idempotency lookup:
/// with booking's key table locked (every lookup would wait), losers still get their 409 at
/// once. The winner's retry still replays its 201, also after a late loser found the slot taken.
#[tokio::test]
async fn losers_of_a_hot_slot_are_refused_without_the_database_and_the_winner_replays() {
    use redis::AsyncCommands;

    let app = TestApp::start().await;
    let (_, slots) = app
        .practitioner_with_slots("Lille", "dermatology", 30, 3)
        .await;
    let slot = slots[0]["id"].as_str().expect("slot");
    let winner = app.token("patient-winner", &["patient"]);
    let (status, first, _) = app.book(&winner, slot, "win-key").await;
    assert_eq!(status, 201, "{first}");

    // Every idempotency lookup now waits for this transaction.
    let mut blocker = app.pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE booking.idempotency_keys IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .expect("lock the key table");
    for n in 0..20 {
        let loser = app.token(&format!("patient-loser-{n}"), &["patient"]);
        let (status, problem, _) = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            app.book(&loser, slot, &format!("lose-key-{n}")),
        )
        .await
        .expect("a loser is answered without waiting for the database");
        assert_eq!(
            (status, pulse_kit::testing::problem_kind(&problem).as_str()),
            (409, "slot-being-booked")
        );
    }
    blocker.rollback().await.expect("rollback");

    // The winner's lock lapses; a late loser takes it and finds the slot taken. The lock it
    // keeps names no request, so the winner's retry still gets its stored answer.
    let lock = format!("{{booking:{}}}:slot-lock:{slot}", app.keyspace);
    let mut redis = app.redis().await;
    let _: i64 = redis.del(&lock).await.expect("del");
    let late = app.token("patient-late", &["patient"]);
    let (status, problem, _) = app.book(&late, slot, "late-key").await;
    assert_eq!(
        (status, pulse_kit::testing::problem_kind(&problem).as_str()),
        (409, "slot-taken")
    );
    let marked: Option<String> = redis.get(&lock).await.expect("get");
    assert_eq!(marked.as_deref(), Some("taken"));
    let (status, replay, headers) = app.book(&winner, slot, "win-key").await;
    assert_eq!(status, 201, "{replay}");
    assert_eq!(replay, first);
    assert_eq!(
        headers
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
}
