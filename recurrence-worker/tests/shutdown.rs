//! The real `recurrence-worker` binary, stopped with SIGTERM while it is mid-stream, against a
//! real broker (`KAFKA_BROKERS`) and a fresh PostgreSQL database (`DATABASE_URL` names a server
//! where tests may create databases).
//!
//! The test holds one event's `processed_events` row in an open transaction, so the worker's
//! effect for that event blocks: its partition stops there while the other partitions run to
//! their end. The worker is stopped with that effect in flight. SIGTERM must let the in-flight
//! effect finish, start nothing after it, commit the offsets and exit 0 within 10 s; a second
//! run must handle exactly what the first did not.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use diesel::sql_types::{Text, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use shared_events::topics::{dead_letter_topic, TopicSpec, TASK_EVENTS};
use shared_events::TaskEventType;
use tokio::time::Instant;
use uuid::Uuid;

use common::*;

const EVENTS: usize = 300;
const PARTITIONS: i32 = 3;
/// The shutdown budget.
const SHUTDOWN: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_finishes_in_flight_and_the_next_run_loses_and_repeats_nothing() {
    let database_url = fresh_database().await;
    let pool = taskflow_db::pool(&database_url, 2).expect("pool");
    let brokers = brokers();
    let run_id = Uuid::now_v7().simple().to_string();
    let prefix = format!("rw-shutdown-{run_id}.");
    let group = format!("rw-shutdown-{run_id}");
    let topic = format!("{prefix}{TASK_EVENTS}");
    let specs = [
        TopicSpec {
            name: Box::leak(topic.clone().into_boxed_str()),
            partitions: PARTITIONS,
        },
        TopicSpec {
            name: Box::leak(dead_letter_topic(&topic).into_boxed_str()),
            partitions: 1,
        },
    ];
    taskflow_kafka::admin::ensure_topics(&brokers, &specs, 1, "")
        .await
        .expect("test topics (is KAFKA_BROKERS reachable?)");

    // 300 updates of 30 tasks, keyed by series id like the relay does.
    let producer = producer(&brokers);
    let tasks: Vec<Uuid> = (0..30).map(|_| Uuid::now_v7()).collect();
    let mut sent = Vec::with_capacity(EVENTS);
    for i in 0..EVENTS {
        let task = tasks[i % tasks.len()];
        let id = Uuid::now_v7();
        let payload = task_event(
            id,
            task,
            (i / tasks.len()) as i64 + 1,
            TaskEventType::Completed,
        );
        let partition = send(&producer, &topic, &task.to_string(), None, &payload).await;
        sent.push(Sent { id, partition });
    }
    // Hold the effect of an event a third of the way into one partition: that partition stops
    // there, the others run to their end.
    let blocked = sent[0].partition;
    let on_blocked = sent.iter().filter(|s| s.partition == blocked).count();
    let blocker = sent
        .iter()
        .filter(|s| s.partition == blocked)
        .nth(on_blocked / 3)
        .expect("events on the first event's partition");
    let done_while_blocked = EVENTS - on_blocked + on_blocked / 3;
    let elsewhere: Vec<Uuid> = sent
        .iter()
        .filter(|s| s.partition != blocked)
        .map(|s| s.id)
        .collect();
    let mut lock = AsyncPgConnection::establish(&database_url)
        .await
        .expect("connect");
    diesel::sql_query("BEGIN").execute(&mut lock).await.unwrap();
    diesel::sql_query("INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2)")
        .bind::<Text, _>(&group)
        .bind::<SqlUuid, _>(blocker.id)
        .execute(&mut lock)
        .await
        .unwrap();

    // First run, until its effect for the held event waits on the test's lock.
    let mut first = start_worker(&database_url, &brokers, &prefix, &group, 1);
    first.assert_healthy().await;
    eventually(
        "the first run to wait on the held event, the other partitions done",
        || first.log(),
        async || {
            let waiting = lock_waiters(&pool).await;
            let processed = processed_ids(&pool, &group).await;
            let done = elsewhere.iter().filter(|id| processed.contains(id)).count();
            (waiting == 1 && done == elsewhere.len())
                .then_some(())
                .ok_or(format!(
                    "{waiting} sessions wait on a lock, {done} of {} processed",
                    elsewhere.len()
                ))
        },
    )
    .await;
    first.assert_healthy().await;
    // The events before the held one in its batch commit with it; the ones in earlier batches
    // are counted already.
    eventually(
        "the handled count",
        || first.log(),
        async || {
            let n = handled(&first, "handled");
            let done = processed_count(&pool, &group).await as usize;
            (n == done)
                .then_some(())
                .ok_or(format!("{n} handled, {done} processed"))
        },
    )
    .await;
    let after_blocker = EVENTS - done_while_blocked - 1;

    // A scraper's idle keep-alive connection must not hold the shutdown up.
    let mut scraper = TcpStream::connect(&first.addr).unwrap();
    write!(
        scraper,
        "GET /metrics HTTP/1.1\r\nHost: {}\r\n\r\n",
        first.addr
    )
    .unwrap();
    let mut buf = [0u8; 512];
    let n = scraper.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let signalled = Instant::now();
    first.terminate();
    eventually(
        "the worker to take the signal",
        || first.log(),
        async || {
            first
                .log()
                .contains("shutdown requested")
                .then_some(())
                .ok_or_else(|| "no \"shutdown requested\" in the log".to_owned())
        },
    )
    .await;
    // Let the shutdown request reach the consumer loop before the in-flight effect completes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    diesel::sql_query("ROLLBACK")
        .execute(&mut lock)
        .await
        .unwrap();
    let status = first.exit_within(SHUTDOWN, signalled).await;
    assert!(
        status.success(),
        "the worker exits 0 on SIGTERM, got {status}; log:\n{}",
        first.log()
    );
    let elapsed = signalled.elapsed();
    drop(scraper);
    assert_eq!(
        processed_count(&pool, &group).await as usize,
        done_while_blocked + 1,
        "the in-flight effect finished and nothing after it started; log:\n{}",
        first.log()
    );

    assert_eq!(
        group_members(&brokers, &group).await,
        0,
        "the first run left its consumer group"
    );

    // Second run: exactly the blocked partition's tail, then one marker per partition, so that
    // a redelivery of anything already handled would have come before the markers.
    let mut second = start_worker(&database_url, &brokers, &prefix, &group, 2);
    second.assert_healthy().await;
    // A poison message goes to the prefixed topic's own dead-letter topic.
    let poison = b"not a CloudEvent".as_slice();
    send(&producer, &topic, "poison", Some(0), poison).await;
    let mut markers = Vec::new();
    for p in 0..PARTITIONS {
        let id = Uuid::now_v7();
        let payload = task_event(id, Uuid::now_v7(), 1, TaskEventType::Completed);
        send(&producer, &topic, "marker", Some(p), &payload).await;
        markers.push(id);
    }
    let total = EVENTS + markers.len();
    eventually(
        "the second run to catch up",
        || second.log(),
        async || {
            let n = processed_count(&pool, &group).await as usize;
            (n == total)
                .then_some(())
                .ok_or(format!("{n} of {total} processed"))
        },
    )
    .await;
    let want: BTreeSet<Uuid> = sent.iter().map(|s| s.id).chain(markers).collect();
    assert_eq!(processed_ids(&pool, &group).await, want);
    eventually(
        "the markers' handled count",
        || second.log(),
        async || {
            let n = handled(&second, "handled");
            (n >= after_blocker + PARTITIONS as usize)
                .then_some(())
                .ok_or(format!("{n} handled"))
        },
    )
    .await;
    assert_eq!(
        handled(&second, "handled"),
        after_blocker + PARTITIONS as usize,
        "the second run handles only what the first did not (its committed offsets hold)"
    );
    assert_eq!(handled(&second, "duplicate"), 0);
    assert_eq!(handled(&second, "dead_lettered"), 1);
    let dead = read(&brokers, &dead_letter_topic(&topic), 1, PATIENCE, |_| true).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].payload.as_deref(), Some(poison));
    assert_eq!(
        dead[0].headers.get("dlq_topic").map(String::as_str),
        Some(topic.as_str())
    );

    // Lag comes from librdkafka's statistics, every 5 s.
    let body = second.wait_for_metric("taskflow_consumer_lag").await;
    taskflow_test_support::process::save_metrics("recurrence-worker", &body);
    let signalled = Instant::now();
    second.terminate();
    let status = second.exit_within(SHUTDOWN, signalled).await;
    assert!(status.success(), "second run exit: {status}");
    eprintln!(
        "first run: {done_while_blocked} handled before SIGTERM, exited {elapsed:?} after it; \
         second run: {} handled, exited {:?} after SIGTERM",
        after_blocker + PARTITIONS as usize,
        signalled.elapsed()
    );
}
