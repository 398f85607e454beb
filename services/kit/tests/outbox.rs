//! The outbox against real PostgreSQL and Kafka: events reach Kafka in commit order, with a
//! `traceparent` header, and only once they are committed.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{env, eventually, read_all, read_for};
use pulse_kit::kafka::{events_topic, partition_for};
use pulse_kit::metrics::Metrics;
use pulse_kit::outbox::{Outbox, OutboxRelay, RelayConfig};
use pulse_kit::telemetry::{TRACEPARENT, is_valid_traceparent};
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn events_reach_kafka_in_commit_order_with_a_traceparent() {
    let env = env().await;
    let component = format!("outbox{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let outbox = Outbox::new("FR", "fr", &component);
    assert_eq!(outbox.topic(), events_topic("fr", &component));
    let key = "appointment-42";
    let committed: Arc<Mutex<Vec<i64>>> = Arc::default();

    // Ten transactions one after the other.
    for seq in 0..10 {
        let mut tx = env.pool.begin().await.expect("begin");
        outbox
            .append(
                &mut tx,
                key,
                "TestEvent",
                &serde_json::json!({ "seq": seq }),
            )
            .await
            .expect("append");
        tx.commit().await.expect("commit");
        committed.lock().expect("lock").push(seq);
    }

    // Two concurrent transactions on the same key: the first appends, then takes its time to
    // commit; the second appends meanwhile and commits at once. The outbox must publish them
    // in the order they committed.
    // The second starts once the first has appended (not after a fixed delay, which a busy
    // machine can outrun).
    let (appended, first_appended) = tokio::sync::oneshot::channel();
    let slow = {
        let pool = env.pool.clone();
        let outbox = outbox.clone();
        let committed = Arc::clone(&committed);
        tokio::spawn(async move {
            let mut tx = pool.begin().await.expect("begin");
            outbox
                .append(&mut tx, key, "TestEvent", &serde_json::json!({ "seq": 10 }))
                .await
                .expect("append");
            let _ = appended.send(());
            tokio::time::sleep(Duration::from_millis(400)).await;
            // Noted before the commit: once it commits, the second writer may commit and note
            // itself before this task runs again. A second writer that did not wait for this
            // commit has noted itself during the sleep, before this.
            committed.lock().expect("lock").push(10);
            tx.commit().await.expect("commit");
        })
    };
    first_appended
        .await
        .expect("the first transaction appended");
    let fast = {
        let pool = env.pool.clone();
        let outbox = outbox.clone();
        let committed = Arc::clone(&committed);
        tokio::spawn(async move {
            let mut tx = pool.begin().await.expect("begin");
            outbox
                .append(&mut tx, key, "TestEvent", &serde_json::json!({ "seq": 11 }))
                .await
                .expect("append");
            tx.commit().await.expect("commit");
            committed.lock().expect("lock").push(11);
        })
    };
    slow.await.expect("slow writer");
    fast.await.expect("fast writer");

    // A rolled-back transaction publishes nothing.
    let mut tx = env.pool.begin().await.expect("begin");
    outbox
        .append(&mut tx, key, "TestEvent", &serde_json::json!({ "seq": 99 }))
        .await
        .expect("append");
    tx.rollback().await.expect("rollback");

    let metrics = Arc::new(Metrics::new());
    let relay = OutboxRelay::new(
        &component,
        env.pool.clone(),
        env.options.clone(),
        env.kafka.clone(),
        Arc::clone(&metrics),
        RelayConfig {
            partitions: 3,
            ..RelayConfig::default()
        },
    );
    let stop = CancellationToken::new();
    let running = tokio::spawn(relay.run(stop.clone()));

    let partitions = env
        .kafka
        .ensure_topic(outbox.topic(), 3)
        .await
        .expect("topic");
    let partition = partition_for(key, &partitions);
    let records = read_all(&env.kafka, outbox.topic(), partition, 12).await;
    let published: Vec<i64> = records
        .iter()
        .map(|r| {
            let envelope: pulse_kit::EventEnvelope =
                serde_json::from_slice(r.record.value.as_deref().expect("value"))
                    .expect("envelope");
            let header = String::from_utf8(r.record.headers[TRACEPARENT].clone()).expect("utf8");
            assert!(is_valid_traceparent(&header), "bad traceparent {header}");
            assert_eq!(envelope.traceparent.as_deref(), Some(header.as_str()));
            assert_eq!(envelope.country, "FR");
            assert_eq!(r.record.key.as_deref(), Some(key.as_bytes()));
            envelope.payload["seq"].as_i64().expect("seq")
        })
        .collect();
    let expected = committed.lock().expect("lock").clone();
    assert_eq!(
        expected[10..],
        [10, 11],
        "the slow transaction commits first"
    );
    assert_eq!(published, expected, "Kafka order must be the commit order");

    eventually(Duration::from_secs(5), "every row marked published", || {
        let pool = env.pool.clone();
        async move {
            let left: i64 =
                sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                    .fetch_one(&pool)
                    .await
                    .expect("count");
            left == 0
        }
    })
    .await;
    // The relay updates its metrics right after marking the rows.
    eventually(Duration::from_secs(5), "publish metrics", || {
        let text = metrics.encode();
        let published =
            format!("pulse_outbox_published_events_total{{component=\"{component}\"}} 12");
        async move {
            text.contains(&published)
                && text.contains("pulse_outbox_publish_lag_seconds{component=")
        }
    })
    .await;
    stop.cancel();
    running.await.expect("relay stops");
}

#[tokio::test]
async fn only_one_relay_publishes_at_a_time() {
    let env = env().await;
    let component = format!("outbox{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let outbox = Outbox::new("FR", "fr", &component);
    // The topic exists before anyone reads it: a reader's metadata request can make the broker
    // create it with its own default partition count, and the relays then publish by that count.
    let partitions = env
        .kafka
        .ensure_topic(outbox.topic(), 1)
        .await
        .expect("topic");
    let partition = partition_for("k", &partitions);
    let stop = CancellationToken::new();
    let mut relays = Vec::new();
    for _ in 0..3 {
        let relay = OutboxRelay::new(
            &component,
            env.pool.clone(),
            env.options.clone(),
            env.kafka.clone(),
            Arc::new(Metrics::new()),
            RelayConfig {
                partitions: 1,
                idle_poll: Duration::from_millis(20),
                ..RelayConfig::default()
            },
        );
        relays.push(tokio::spawn(relay.run(stop.clone())));
    }
    let mut conn = sqlx::PgConnection::connect_with(&env.options)
        .await
        .expect("connect");
    for seq in 0..50 {
        let mut tx = conn.begin().await.expect("begin");
        outbox
            .append(
                &mut tx,
                "k",
                "TestEvent",
                &serde_json::json!({ "seq": seq }),
            )
            .await
            .expect("append");
        tx.commit().await.expect("commit");
    }
    let records = read_all(&env.kafka, outbox.topic(), partition, 50).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = read_for(
        &env.kafka,
        outbox.topic(),
        partition,
        51,
        Duration::from_secs(1),
    )
    .await;
    let seqs: Vec<i64> = again
        .iter()
        .map(|r| {
            let envelope: pulse_kit::EventEnvelope =
                serde_json::from_slice(r.record.value.as_deref().expect("value"))
                    .expect("envelope");
            envelope.payload["seq"].as_i64().expect("seq")
        })
        .collect();
    assert_eq!(records.len(), 50);
    assert_eq!(
        seqs,
        (0..50).collect::<Vec<_>>(),
        "each event once, in order, with three relays running"
    );
    stop.cancel();
    for relay in relays {
        relay.await.expect("relay stops");
    }
}

#[tokio::test]
async fn writers_of_one_partition_key_wait_only_for_their_own_order_key() {
    let env = env().await;
    let component = format!("outbox{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let outbox = Outbox::new("FR", "fr", &component);
    let (partition_key, slot_a, slot_b) = ("practitioner-7", "slot-a", "slot-b");

    // A transaction appends for slot A and stays open.
    let mut open = env.pool.begin().await.expect("begin");
    outbox
        .append_ordered(&mut open, partition_key, slot_a, "TestEvent", &1)
        .await
        .expect("append for slot A");

    // Another slot of the same partition key does not wait for it…
    let mut other = env.pool.begin().await.expect("begin");
    tokio::time::timeout(
        Duration::from_secs(5),
        outbox.append_ordered(&mut other, partition_key, slot_b, "TestEvent", &2),
    )
    .await
    .expect("slot B waited for slot A's transaction")
    .expect("append for slot B");
    other.commit().await.expect("commit slot B");

    // …while the same slot does, until the first commits.
    let same = {
        let (pool, outbox) = (env.pool.clone(), outbox.clone());
        tokio::spawn(async move {
            let mut tx = pool.begin().await.expect("begin");
            outbox
                .append_ordered(&mut tx, partition_key, slot_a, "TestEvent", &3)
                .await
                .expect("append for slot A again");
            tx.commit().await.expect("commit");
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!same.is_finished(), "slot A's second writer did not wait");
    open.commit().await.expect("commit slot A");
    tokio::time::timeout(Duration::from_secs(5), same)
        .await
        .expect("slot A's second writer went on after the commit")
        .expect("task");
}
