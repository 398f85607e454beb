//! A booking is one trace, checked against a real Jaeger: `pulse serve --target all` sends its
//! spans over OTLP to a Jaeger (v2, in-memory storage, `tests/jaeger/config.yaml`) started on
//! free loopback ports; the test books an appointment through HTTP, waits until both consumers of
//! booking's events (booking's search cache and the notifier) have applied the event, reads the
//! request's trace id from pulse's own log line of that request, and asks Jaeger's query API for
//! that trace until it holds, in one trace and linked parent to child:
//!
//! `http.request` (server) → … → `db.transaction` (the booking's transaction) → `outbox.publish`
//! (producer; its parent is the `traceparent` stored with the outbox row) → `kafka.consume`
//! (consumer, one per group; its parent is the `traceparent` of the Kafka record).
//!
//! Needs `PULSE_JAEGER` (a Jaeger v2 binary; `./dev test` builds one and sets it). Alone:
//! `./dev test -p pulse --test traces`. Pulse's and Jaeger's logs are in `$TMPDIR/pulse-traces<id>/`,
//! kept when the test fails.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Ports, Process};
use pulse_kit::testing::{self, TestDatabase};
use serde_json::{Value, json};
use sqlx::PgPool;

/// The consumer groups of booking's events under `--target all`, with the schema each keeps its
/// processed events in.
const CONSUMERS: [(&str, &str); 2] = [
    ("booking", "booking-search-cache"),
    ("notifier", "notifier-booking"),
];
/// Longest wait for Jaeger to answer after it started.
const JAEGER_START: Duration = Duration::from_secs(30);
/// Longest wait for the event to be published and applied by every consumer group.
const CONSUMED: Duration = Duration::from_secs(60);
/// Longest wait for the trace to be complete in Jaeger once the consumers are done (spans are
/// exported every 200 ms, `OTEL_BSP_SCHEDULE_DELAY`, and stored 200 ms after they arrive).
const TRACE_COMPLETE: Duration = Duration::from_secs(30);

/// Jaeger (`PULSE_JAEGER`) on free loopback ports; killed when dropped.
struct Jaeger {
    process: Process,
    otlp_grpc: u16,
    query: u16,
}

impl Jaeger {
    /// Starts it with `tests/jaeger/config.yaml`; its log goes to `dir/jaeger.log`.
    async fn start(client: &reqwest::Client, dir: &Path) -> Self {
        let binary = std::env::var_os("PULSE_JAEGER").map(PathBuf::from).unwrap_or_else(|| {
            panic!(
                "PULSE_JAEGER is not set: run this test with `./dev test -p pulse --test traces` \
                 (./dev builds Jaeger once and sets it), or set it to a Jaeger v2 binary \
                 (github.com/jaegertracing/jaeger/cmd/jaeger)"
            )
        });
        assert!(
            binary.is_file(),
            "PULSE_JAEGER={} is not a file (./dev test builds Jaeger and sets it)",
            binary.display()
        );
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/jaeger/config.yaml");
        let [otlp_grpc, otlp_http, query, query_grpc, health] =
            std::array::from_fn(|_| testing::free_port());
        let address = |port: u16| format!("127.0.0.1:{port}");
        let mut command = Command::new(&binary);
        command
            .arg("--config")
            .arg(&config)
            .env_clear()
            .env("PULSE_JAEGER_OTLP_GRPC", address(otlp_grpc))
            .env("PULSE_JAEGER_OTLP_HTTP", address(otlp_http))
            .env("PULSE_JAEGER_QUERY_HTTP", address(query))
            .env("PULSE_JAEGER_QUERY_GRPC", address(query_grpc))
            .env("PULSE_JAEGER_HEALTH", address(health));
        let mut process = Process::spawn(command, dir.join("jaeger.log"));
        let started = Instant::now();
        loop {
            let healthy = client
                .get(format!("http://127.0.0.1:{health}/status"))
                .timeout(Duration::from_millis(500))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            let serving = healthy
                && client
                    .get(format!("http://127.0.0.1:{query}/api/services"))
                    .timeout(Duration::from_millis(500))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
            if serving {
                break;
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!(
                    "Jaeger ({}) exited ({status}) during start:\n{}",
                    binary.display(),
                    process.log_tail()
                );
            }
            assert!(
                started.elapsed() < JAEGER_START,
                "Jaeger ({}) did not answer on 127.0.0.1:{health}/status and 127.0.0.1:{query}/api/services within {JAEGER_START:?}:\n{}",
                binary.display(),
                process.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self {
            process,
            otlp_grpc,
            query,
        }
    }

    /// `GET /api/traces/<trace_id>` of the query API: its status and body.
    async fn trace(&self, client: &reqwest::Client, trace_id: &str) -> (u16, String) {
        match client
            .get(format!(
                "http://127.0.0.1:{}/api/traces/{trace_id}",
                self.query
            ))
            .send()
            .await
        {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.text().await.unwrap_or_default())
            }
            Err(err) => (0, format!("no answer: {err}")),
        }
    }
}

/// One span of a trace as Jaeger's query API returns it.
#[derive(Debug)]
struct Span {
    id: String,
    trace_id: String,
    /// The span its `CHILD_OF` reference names.
    parent: Option<String>,
    name: String,
    service: String,
    tags: HashMap<String, Value>,
}

impl Span {
    /// The tag `key` as a string (numbers and booleans too), or "".
    fn tag(&self, key: &str) -> String {
        match self.tags.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        }
    }
}

/// The spans of the trace in a `/api/traces/<id>` body (none when it has no trace).
fn spans_of(body: &str) -> Vec<Span> {
    let Ok(document) = serde_json::from_str::<Value>(body) else {
        return Vec::new();
    };
    let Some(trace) = document.pointer("/data/0") else {
        return Vec::new();
    };
    let services: HashMap<&str, &str> = trace["processes"]
        .as_object()
        .map(|processes| {
            processes
                .iter()
                .map(|(id, p)| (id.as_str(), p["serviceName"].as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    trace["spans"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|span| Span {
            id: span["spanID"].as_str().unwrap_or_default().to_owned(),
            trace_id: span["traceID"].as_str().unwrap_or_default().to_owned(),
            parent: span["references"].as_array().and_then(|refs| {
                refs.iter()
                    .find(|r| r["refType"] == "CHILD_OF")
                    .and_then(|r| r["spanID"].as_str())
                    .map(str::to_owned)
            }),
            name: span["operationName"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            service: services
                .get(span["processID"].as_str().unwrap_or_default())
                .copied()
                .unwrap_or_default()
                .to_owned(),
            tags: span["tags"]
                .as_array()
                .map(|tags| {
                    tags.iter()
                        .filter_map(|t| Some((t["key"].as_str()?.to_owned(), t["value"].clone())))
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

/// One line a span, for failure messages: name, id, parent and the tags that tell spans apart.
fn describe(spans: &[Span]) -> String {
    spans
        .iter()
        .map(|s| {
            let tags: BTreeMap<&str, String> = [
                "span.kind",
                "http.route",
                "pulse.flow",
                "messaging.destination.name",
                "messaging.consumer.group.name",
                "messaging.message.id",
            ]
            .into_iter()
            .filter(|k| s.tags.contains_key(*k))
            .map(|k| (k, s.tag(k)))
            .collect();
            format!(
                "  {} span {} parent {} service {} {tags:?}",
                s.name,
                s.id,
                s.parent.as_deref().unwrap_or("-"),
                s.service
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The spans a complete booking trace needs, found in `spans`; `Err` says what is missing.
struct BookingTrace<'a> {
    request: &'a Span,
    transaction: &'a Span,
    publish: &'a Span,
    consumers: Vec<&'a Span>,
}

fn booking_trace<'a>(spans: &'a [Span], event_id: &str) -> Result<BookingTrace<'a>, String> {
    let request = spans
        .iter()
        .find(|s| {
            s.name == "http.request"
                && s.tag("http.route") == "/v1/appointments"
                && s.tag("http.request.method") == "POST"
        })
        .ok_or("no http.request span of POST /v1/appointments")?;
    let transaction = spans
        .iter()
        .find(|s| s.name == "db.transaction" && s.tag("pulse.flow") == "booking.book")
        .ok_or("no db.transaction span of booking.book")?;
    let publish = spans
        .iter()
        .find(|s| s.name == "outbox.publish" && s.tag("messaging.message.id") == event_id)
        .ok_or_else(|| format!("no outbox.publish span of event {event_id}"))?;
    let consumers = CONSUMERS
        .iter()
        .map(|(_, group)| {
            spans
                .iter()
                .find(|s| {
                    s.name == "kafka.consume"
                        && s.tag("messaging.consumer.group.name") == *group
                        && s.tag("messaging.message.id") == event_id
                })
                .ok_or_else(|| format!("no kafka.consume span of group {group}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(BookingTrace {
        request,
        transaction,
        publish,
        consumers,
    })
}

/// True when `ancestor` is `span`'s parent, or its parent's, and so on.
fn descends_from(spans: &[Span], span: &Span, ancestor: &Span) -> bool {
    let by_id: HashMap<&str, &Span> = spans.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut current = span.parent.as_deref();
    for _ in 0..spans.len() {
        match current {
            Some(id) if id == ancestor.id => return true,
            Some(id) => current = by_id.get(id).and_then(|s| s.parent.as_deref()),
            None => return false,
        }
    }
    false
}

/// The JSON log lines of pulse's log file (other lines, if any, are skipped).
fn log_lines(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The first of `lines` of trace `trace_id` whose `span_id` is none of `spans`.
fn unknown_span_of_a_line<'a>(
    lines: &'a [Value],
    trace_id: &str,
    spans: &[Span],
) -> Option<&'a Value> {
    lines.iter().find(|line| {
        line["trace_id"] == trace_id
            && !spans
                .iter()
                .any(|s| line["span_id"].as_str() == Some(s.id.as_str()))
    })
}

/// Polls `query` (a count) until it is at least 1; panics after `timeout` with `what`.
async fn wait_for_row(pool: &PgPool, query: &str, bind: &str, what: &str, server: &Process) {
    let started = Instant::now();
    loop {
        let count: i64 = sqlx::query_scalar(query)
            .bind(bind)
            .fetch_one(pool)
            .await
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        if count > 0 {
            return;
        }
        assert!(
            started.elapsed() < CONSUMED,
            "{what} did not happen within {CONSUMED:?}; last lines of pulse's log:\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_booking_is_one_trace_from_the_request_to_its_consumers() {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client");
    let instance = format!("traces{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let dir = common::work_dir(&instance);
    let jaeger = Jaeger::start(&client, &dir).await;
    let db = TestDatabase::create().await;

    let ports = Ports::free();
    let mut command = common::serve("all", &db.url, &instance, ports);
    command
        .current_dir(&dir)
        // Spans are made at `info`; the request's own line (`request handled`) at `debug`.
        .env("RUST_LOG", "info,pulse_kit::http=debug")
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{}", jaeger.otlp_grpc),
        )
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env("PULSE_DB_MAX_CONNECTIONS", "4")
        .envs(testing::sandbox_env(&dir, &testing::unique("whsec_traces")));
    let server = Process::spawn(command, dir.join("pulse.log"));
    common::wait_ready(&client, ports.http, &server, "pulse serve --target all").await;

    // Practitioners with free slots.
    common::seed_france(&db.url, &instance, ports);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&db.url)
        .await
        .expect("test pool");
    let slot: String = sqlx::query_scalar(
        "SELECT id::text FROM booking.slots
         WHERE status = 'free' AND starts_at > now() + interval '1 day'
         ORDER BY starts_at, practitioner_id LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .expect("a free slot after seeding");

    // The booking.
    let booked = client
        .post(format!("http://127.0.0.1:{}/v1/appointments", ports.http))
        .bearer_auth(testing::token("trace-patient", &["patient"], "FR"))
        .header("Idempotency-Key", testing::unique("trace"))
        .json(&json!({ "slotId": slot }))
        .send()
        .await
        .expect("POST /v1/appointments");
    let status = booked.status();
    let appointment: Value = booked.json().await.expect("a JSON answer");
    assert_eq!(status, 201, "POST /v1/appointments: {appointment}");
    let appointment_id = appointment["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {appointment}"))
        .to_owned();

    // Its event, published, then applied by every consumer group.
    wait_for_row(
        &pool,
        "SELECT count(*) FROM booking.outbox
         WHERE envelope->'payload'->>'appointmentId' = $1 AND published_at IS NOT NULL",
        &appointment_id,
        "publishing the AppointmentBooked event",
        &server,
    )
    .await;
    let (event_id, stored_traceparent): (String, Option<String>) = sqlx::query_as(
        "SELECT event_id::text, traceparent FROM booking.outbox
         WHERE envelope->'payload'->>'appointmentId' = $1",
    )
    .bind(&appointment_id)
    .fetch_one(&pool)
    .await
    .expect("the outbox row of the booking");
    for (schema, group) in CONSUMERS {
        wait_for_row(
            &pool,
            &format!(
                "SELECT count(*) FROM {schema}.consumer_processed_events
                 WHERE group_name = '{group}' AND event_id = $1::uuid"
            ),
            &event_id,
            &format!("consumer group {group} applying event {event_id}"),
            &server,
        )
        .await;
    }

    // The request's log line names its trace and span.
    let lines = log_lines(&server.log);
    let request_lines: Vec<&Value> = lines
        .iter()
        .filter(|line| {
            line["span"]["name"] == "http.request"
                && line["span"]["http.route"] == "/v1/appointments"
                && line["span"]["http.request.method"] == "POST"
                && line["fields"]["message"] == "request handled"
        })
        .collect();
    assert_eq!(
        request_lines.len(),
        1,
        "one `request handled` line of POST /v1/appointments in {}:\n{}",
        server.log.display(),
        server.log_tail()
    );
    let trace_id = request_lines[0]["trace_id"]
        .as_str()
        .unwrap_or_else(|| {
            panic!(
                "the request's log line has no trace_id: {}",
                request_lines[0]
            )
        })
        .to_owned();
    let request_span_id = request_lines[0]["span_id"]
        .as_str()
        .unwrap_or_else(|| {
            panic!(
                "the request's log line has no span_id: {}",
                request_lines[0]
            )
        })
        .to_owned();
    assert!(
        trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "trace_id is 32 hex digits: {}",
        request_lines[0]
    );
    assert!(
        request_span_id.len() == 16 && request_span_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "span_id is 16 hex digits: {}",
        request_lines[0]
    );
    // The outbox row keeps the trace of the request that produced it.
    let stored_traceparent = stored_traceparent.expect("the outbox row has a traceparent");
    assert_eq!(
        stored_traceparent.split('-').nth(1),
        Some(trace_id.as_str()),
        "the outbox row's traceparent {stored_traceparent} continues the request's trace"
    );

    // Jaeger holds the whole trace, and every span a log line of the trace names (a line may be
    // written before its span ends and is exported).
    let started = Instant::now();
    let (spans, body) = loop {
        let (status, body) = jaeger.trace(&client, &trace_id).await;
        let spans = spans_of(&body);
        let complete =
            booking_trace(&spans, &event_id).and_then(|_| {
                match unknown_span_of_a_line(&log_lines(&server.log), &trace_id, &spans) {
                    Some(line) => Err(format!(
                        "a log line names a span Jaeger does not have: {line}"
                    )),
                    None => Ok(()),
                }
            });
        if status == 200 && complete.is_ok() {
            break (spans, body);
        }
        if started.elapsed() >= TRACE_COMPLETE {
            let missing = complete.err().unwrap_or_default();
            panic!(
                "Jaeger did not hold the booking's whole trace {trace_id} within {TRACE_COMPLETE:?} \
                 ({missing}); GET /api/traces/{trace_id} answered {status} with {} spans:\n{}\n\
                 body (first 4,000 bytes): {}\n--- Jaeger's log:\n{}\n--- pulse's log:\n{}",
                spans.len(),
                describe(&spans),
                body.chars().take(4_000).collect::<String>(),
                jaeger.process.log_tail(),
                server.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let found = booking_trace(&spans, &event_id).expect("checked above");
    let context = format!("the trace's spans:\n{}", describe(&spans));
    for span in &spans {
        assert_eq!(span.trace_id, trace_id, "{context}");
        assert_eq!(span.service, "pulse", "{context}");
    }

    // The request: the span its log line names, the trace's root, a server span.
    assert_eq!(
        found.request.id, request_span_id,
        "the request's log line names its span; {context}"
    );
    assert_eq!(
        found.request.parent, None,
        "the request starts the trace; {context}"
    );
    assert_eq!(found.request.tag("span.kind"), "server", "{context}");
    assert_eq!(
        found.request.tag("http.response.status_code"),
        "201",
        "{context}"
    );
    // The transaction runs inside the request (through the booking flow's span).
    assert!(
        descends_from(&spans, found.transaction, found.request),
        "db.transaction descends from http.request; {context}"
    );
    assert_eq!(
        found.transaction.tag("db.system.name"),
        "postgresql",
        "{context}"
    );
    // The outbox row's traceparent names the transaction: the publish span is its child.
    assert_eq!(
        stored_traceparent.split('-').nth(2),
        Some(found.transaction.id.as_str()),
        "the outbox row's traceparent names the db.transaction span; {context}"
    );
    assert_eq!(
        found.publish.parent.as_deref(),
        Some(found.transaction.id.as_str()),
        "outbox.publish is a child of db.transaction; {context}"
    );
    assert_eq!(found.publish.tag("span.kind"), "producer", "{context}");
    assert_eq!(found.publish.tag("messaging.system"), "kafka", "{context}");
    let topic = found.publish.tag("messaging.destination.name");
    assert!(
        topic.ends_with(".booking.events"),
        "booking's topic: {topic}; {context}"
    );
    // Each consumer continues from the Kafka record's traceparent: the publish span.
    for consumer in &found.consumers {
        assert_eq!(
            consumer.parent.as_deref(),
            Some(found.publish.id.as_str()),
            "kafka.consume of {} is a child of outbox.publish; {context}",
            consumer.tag("messaging.consumer.group.name")
        );
        assert_eq!(consumer.tag("span.kind"), "consumer", "{context}");
        assert_eq!(
            consumer.tag("messaging.destination.name"),
            topic,
            "{context}"
        );
        assert!(
            !consumer
                .tag("messaging.destination.partition.id")
                .is_empty(),
            "{context}"
        );
    }
    // Every log line of this trace names one of its spans (checked while polling).
    let of_the_trace = log_lines(&server.log)
        .into_iter()
        .filter(|l| l["trace_id"] == trace_id.as_str())
        .count();
    assert!(of_the_trace >= 1, "{context}");
    println!(
        "trace {trace_id}: {} spans in Jaeger after {} ms\n{}\n({} bytes of JSON)",
        spans.len(),
        started.elapsed().as_millis(),
        describe(&spans),
        body.len()
    );

    // Nothing to look into: the logs go.
    pool.close().await;
    drop(server);
    drop(jaeger);
    let _ = std::fs::remove_dir_all(&dir);
}
