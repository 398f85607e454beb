//! `./dev bench booking`: booking throughput and latency through Pulse's HTTP API, beside
//! `pgbench` running the same database transaction (lock the slot, check the patient's day,
//! insert the appointment, mark the slot, write the outbox event) on the same server.
//!
//! - `hot-slot`: many clients race for one slot at a time (the crowd that Redis turns away).
//! - `distinct-slots`: clients book different slots (throughput of real bookings).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use pulse_kit::testing::TestDatabase;
use serde_json::{Value, json};

use super::crowd::{PreparedPost, round_duration, run_rounds};
use super::server::ServerProcess;
use super::{Measurement, print_table, read_pgbench_logs};

/// Database connections, for Pulse's pool and for pgbench alike.
const DB_CONNECTIONS: u32 = 32;
const HOT_CLIENTS: usize = 200;
const HOT_ROUNDS: usize = 20;
const DISTINCT_CLIENTS: usize = 64;
const DISTINCT_BOOKINGS: usize = 3000;
const PGBENCH_SECONDS: u32 = 10;
/// Free slots made for pgbench's distinct-slots run, one per transaction: more than it books
/// in [`PGBENCH_SECONDS`] on a fast machine.
const PGBENCH_SLOTS: i64 = 80_000;

/// Runs both scenarios and prints one table.
pub async fn run() -> anyhow::Result<()> {
    let db = TestDatabase::create().await;
    let connections = DB_CONNECTIONS.to_string();
    let server = ServerProcess::start(
        &db.url,
        &[("PULSE_DB_MAX_CONNECTIONS", connections.as_str())],
    )
    .await?;
    eprintln!("bench: metrics at http://{}/metrics", server.admin_addr);
    let base = server.base.clone();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()?;

    eprintln!("bench: creating a practitioner with a year of 15-minute slots");
    let all_day = json!([{ "start": "00:00", "end": "23:45" }]);
    let created: Value = client
        .post(format!("{base}/v1/practitioners"))
        .bearer_auth(server.token("bench-admin", &["admin"]))
        .json(&json!({
            "name": "Dr Bench", "specialty": "general-practice", "city": "Paris", "address": "1 rue du Banc",
            "latitude": 48.85, "longitude": 2.35, "consultationPriceMinor": 2500,
            "schedule": { "slotMinutes": 15, "weekly": { "Mon": all_day, "Tue": all_day, "Wed": all_day,
                "Thu": all_day, "Fri": all_day, "Sat": all_day, "Sun": all_day } }
        }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let practitioner = created["id"]
        .as_str()
        .context("practitioner id")?
        .to_owned();
    let pool = sqlx::PgPool::connect(&db.url).await?;
    let mut slots: Vec<String> = sqlx::query_scalar(
        "SELECT id::text FROM booking.slots WHERE practitioner_id = $1::uuid AND status = 'free'
         AND starts_at > now() + interval '3 hours' ORDER BY starts_at",
    )
    .bind(&practitioner)
    .fetch_all(&pool)
    .await?;
    if slots.len() < HOT_ROUNDS + DISTINCT_BOOKINGS + 100 {
        bail!("only {} slots were generated", slots.len());
    }
    // One more slot for the warm-up round.
    let hot_slots: Vec<String> = slots.drain(..=HOT_ROUNDS).collect();

    let mut rows = Vec::new();
    eprintln!("bench: hot-slot, {HOT_CLIENTS} clients x {HOT_ROUNDS} slots through Pulse");
    let mut hot = hot_slot(&client, &server, &hot_slots).await?;
    eprintln!(
        "bench: distinct-slots, {DISTINCT_CLIENTS} clients, {DISTINCT_BOOKINGS} bookings through Pulse"
    );
    let distinct: Vec<String> = slots.drain(..DISTINCT_BOOKINGS).collect();
    let mut distinct = distinct_slots(&client, &server, distinct).await?;
    let usage = server.stop().await;
    hot.peak_rss_mib = Some(usage.peak_rss_mib);
    distinct.peak_rss_mib = Some(usage.peak_rss_mib);
    rows.push(hot);
    rows.push(distinct);

    eprintln!(
        "bench: pgbench with the same transaction, {DB_CONNECTIONS} connections, {PGBENCH_SECONDS} s each"
    );
    // pgbench books as Pulse's clients do: every transaction a free slot of its own (numbered
    // by a sequence), so each one does the whole booking, not the cheap path of a slot taken
    // already. The slots are the practitioner's, far beyond the generated horizon.
    sqlx::query(
        "INSERT INTO booking.slots (id, practitioner_id, starts_at, ends_at)
         SELECT gen_random_uuid(), $1::uuid, t, t + interval '15 minutes'
         FROM generate_series(1, $2) AS i,
              LATERAL (SELECT date_trunc('day', now()) + interval '3 years' + i * interval '15 minutes' AS t) AS at",
    )
    .bind(&practitioner)
    .bind(PGBENCH_SLOTS)
    .execute(&pool)
    .await?;
    sqlx::query("CREATE TABLE public.bench_slots (n BIGINT PRIMARY KEY, id UUID NOT NULL)")
        .execute(&pool)
        .await?;
    sqlx::query(
        "INSERT INTO public.bench_slots
         SELECT row_number() OVER (ORDER BY starts_at), id FROM booking.slots
         WHERE practitioner_id = $1::uuid AND starts_at > now() + interval '3 years'",
    )
    .bind(&practitioner)
    .execute(&pool)
    .await?;
    sqlx::query("CREATE SEQUENCE public.bench_next_slot START 2")
        .execute(&pool)
        .await?;
    let dir = std::env::temp_dir().join(format!("pulse-bench-{}", pulse_kit::new_id()));
    std::fs::create_dir_all(&dir)?;
    rows.push(pgbench(&db.url, &dir, "hot-slot", "1").await?);
    rows.push(
        pgbench(
            &db.url,
            &dir,
            "distinct-slots",
            "(SELECT nextval('public.bench_next_slot'))",
        )
        .await?,
    );
    std::fs::remove_dir_all(&dir).ok();
    pool.close().await;

    println!();
    print_table(&rows);
    println!();
    println!(
        "Pulse: a separate `pulse serve --target all`; HTTP clients → Redis slot lock → one PostgreSQL transaction ({DB_CONNECTIONS} pooled connections)."
    );
    println!(
        "pgbench: the same transaction sent straight to PostgreSQL over {DB_CONNECTIONS} connections; in distinct-slots each transaction books a free slot of its own."
    );
    println!(
        "hot-slot: one slot per round for Pulse (1 success per round); pgbench keeps locking the same row."
    );
    Ok(())
}

async fn hot_slot(
    client: &reqwest::Client,
    server: &ServerProcess,
    slots: &[String],
) -> anyhow::Result<Measurement> {
    let base = &server.base;
    let addr: std::net::SocketAddr = base
        .trim_start_matches("http://")
        .parse()
        .context("the server's address")?;
    // New patients every round: the per-day limit is not what is measured here.
    let rounds: Vec<Vec<String>> = (0..slots.len())
        .map(|round| {
            (0..HOT_CLIENTS)
                .map(|i| server.token(&format!("hot-{round}-{i}"), &["patient"]))
                .collect()
        })
        .collect();
    // Signed in, each patient's app has loaded their unread count (which checks their token).
    let patients: Vec<String> = rounds.iter().flatten().cloned().collect();
    let unread = format!("{base}/v1/notifications?page_size=1");
    super::each_user_gets(client, &unread, &patients, HOT_CLIENTS).await?;
    // The crowd reaches the pods through the Ingress, whose connections to them are kept
    // alive: the crowd's connections are open before the first round.
    let host = addr.to_string();
    let requests: Vec<Vec<PreparedPost>> = rounds
        .iter()
        .zip(slots)
        .enumerate()
        .map(|(round, (tokens, slot))| {
            let body = json!({ "slotId": slot }).to_string();
            tokens
                .iter()
                .enumerate()
                .map(|(i, token)| {
                    let authorization = format!("Bearer {token}");
                    let key = format!("hot-{round}-{i}");
                    PreparedPost::new(
                        &host,
                        "/v1/appointments",
                        &[("authorization", &authorization), ("idempotency-key", &key)],
                        &body,
                    )
                })
                .collect()
        })
        .collect();
    let mut answers = run_rounds(addr, requests).await?.into_iter();
    // The first round meets a process that has not booked yet (its first statements are
    // prepared, its first scripts loaded): it warms up and is shown apart.
    let warm_up = answers.next().context("no rounds")?;
    let mut latencies = Vec::new();
    let mut succeeded = 0;
    let mut requests = 0;
    let mut elapsed = Duration::ZERO;
    for (round, answers) in answers.enumerate() {
        elapsed += round_duration(&answers);
        let mut booked = 0;
        for answer in answers {
            requests += 1;
            latencies.push(answer.latency);
            match answer.status {
                201 => booked += 1,
                409 => {}
                other => bail!("unexpected status {other} in the hot-slot scenario"),
            }
        }
        if booked != 1 {
            bail!("hot-slot: {booked} bookings of the slot of round {round}");
        }
        succeeded += booked;
    }
    let warm_up_booked = warm_up.iter().filter(|a| a.status == 201).count();
    if warm_up_booked != 1 {
        bail!("hot-slot: {warm_up_booked} bookings of the warm-up round's slot");
    }
    let slowest = warm_up.iter().map(|a| a.latency).max().unwrap_or_default();
    eprintln!(
        "bench: hot-slot warm-up round (not measured): slowest answer {:.1} ms",
        slowest.as_secs_f64() * 1000.0
    );
    Ok(Measurement {
        scenario: "hot-slot".into(),
        system: "pulse".into(),
        concurrency: HOT_CLIENTS,
        requests,
        succeeded,
        elapsed,
        latencies,
        peak_rss_mib: None,
    })
}

async fn distinct_slots(
    client: &reqwest::Client,
    server: &ServerProcess,
    slots: Vec<String>,
) -> anyhow::Result<Measurement> {
    let base = &server.base;
    // A patient per booking: the per-day limit is not what is measured here.
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..slots.len())
            .map(|index| server.token(&format!("distinct-{index}"), &["patient"]))
            .collect(),
    );
    let unread = format!("{base}/v1/notifications?page_size=1");
    super::each_user_gets(client, &unread, &tokens, DISTINCT_CLIENTS).await?;
    // Sent by wrk, as the seckill and search loads are: on a small machine a Rust client's
    // own CPU would be taken from the server it measures.
    let requests: Vec<Vec<(String, String)>> = slots
        .iter()
        .zip(tokens.iter())
        .enumerate()
        .map(|(index, (slot, token))| {
            vec![
                ("Authorization".to_owned(), format!("Bearer {token}")),
                ("Idempotency-Key".to_owned(), format!("distinct-{index}")),
                ("Content-Type".to_owned(), "application/json".to_owned()),
                (
                    super::wrk::BODY.to_owned(),
                    json!({ "slotId": slot }).to_string(),
                ),
            ]
        })
        .collect();
    let run = super::wrk::run(
        &format!("{base}/v1/appointments"),
        DISTINCT_CLIENTS,
        super::wrk::Load::EachOnce {
            method: "POST",
            requests: &requests,
        },
    )
    .await?;
    let succeeded = run.with_status(201);
    if succeeded != slots.len() || run.requests != slots.len() {
        bail!(
            "distinct-slots: {} bookings sent, answers by status {:?}: each must be 201",
            slots.len(),
            run.statuses
        );
    }
    Ok(Measurement {
        scenario: "distinct-slots".into(),
        system: "pulse".into(),
        concurrency: DISTINCT_CLIENTS,
        requests: run.requests,
        succeeded,
        elapsed: run.elapsed(),
        latencies: run.latencies(),
        peak_rss_mib: None,
    })
}

/// The booking transaction, as a pgbench script. `:n` picks the slot.
fn pgbench_script(pick: &str) -> String {
    format!(
        r"BEGIN;
SELECT s.id AS sid, s.practitioner_id AS pid, b.n AS n FROM booking.slots s JOIN public.bench_slots b ON b.id = s.id WHERE b.n = {pick} FOR UPDATE OF s \gset
SELECT pg_advisory_xact_lock(hashtext('pgbench-' || :client_id::text || '-' || :n::text));
SELECT count(*) FROM booking.appointments WHERE patient_subject = 'pgbench-' || :client_id::text || '-' || :n::text AND status = 'booked';
INSERT INTO booking.appointments (id, slot_id, practitioner_id, patient_subject, starts_at, ends_at, local_day, status)
  SELECT gen_random_uuid(), s.id, s.practitioner_id, 'pgbench-' || :client_id::text || '-' || :n::text, s.starts_at, s.ends_at, (s.starts_at AT TIME ZONE 'Europe/Paris')::date, 'booked'
  FROM booking.slots s WHERE s.id = :sid AND s.status = 'free'
  ON CONFLICT (slot_id) WHERE status = 'booked' DO NOTHING;
UPDATE booking.slots SET status = 'booked' WHERE id = :sid;
INSERT INTO booking.outbox (event_id, topic, partition_key, event_type, envelope) VALUES (gen_random_uuid(), 'pgbench', :pid, 'AppointmentBooked', '{{}}');
COMMIT;
"
    )
}

async fn pgbench(
    url: &str,
    dir: &std::path::Path,
    scenario: &str,
    pick: &str,
) -> anyhow::Result<Measurement> {
    let script = dir.join(format!("{scenario}.sql"));
    std::fs::write(&script, pgbench_script(pick))?;
    let prefix = format!("{scenario}-log");
    let output = tokio::process::Command::new("pgbench")
        .current_dir(dir)
        .args([
            "-n",
            "-M",
            "prepared",
            "-c",
            &DB_CONNECTIONS.to_string(),
            "-j",
            "2",
            "-T",
            &PGBENCH_SECONDS.to_string(),
        ])
        .arg("-f")
        .arg(&script)
        .args(["-l", "--log-prefix", &prefix])
        .arg(url)
        .output()
        .await
        .context("pgbench is not installed (it ships with PostgreSQL's client packages)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench failed: {}{}",
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let processed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .context("pgbench output without a transaction count")?;
    let latencies = read_pgbench_logs(dir, &prefix)?;
    let booked: i64 = {
        let pool = sqlx::PgPool::connect(url).await?;
        let n = sqlx::query_scalar(
            "SELECT count(*) FROM booking.appointments WHERE patient_subject LIKE 'pgbench-%'",
        )
        .fetch_one(&pool)
        .await?;
        sqlx::query("DELETE FROM booking.appointments WHERE patient_subject LIKE 'pgbench-%'")
            .execute(&pool)
            .await?;
        pool.close().await;
        n
    };
    Ok(Measurement {
        scenario: scenario.into(),
        system: "pgbench".into(),
        concurrency: DB_CONNECTIONS as usize,
        requests: processed,
        succeeded: usize::try_from(booked).unwrap_or(0),
        elapsed: Duration::from_secs(u64::from(PGBENCH_SECONDS)),
        latencies,
        peak_rss_mib: None,
    })
}
