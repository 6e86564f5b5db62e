//! A worker replica dies (SIGKILL: no LeaveGroup, no final commit) in the middle of a stream of
//! completions and the survivor takes over its partitions: every completion is handled exactly
//! once, counted by its effect (one next occurrence and one `created` event per series), not by
//! the deduplicating processed-events table. Runs on the test broker (the prebuilt Tansu expires
//! a killed member) and on librdkafka's mock cluster.

mod common;

use std::time::Duration;

use chrono::TimeZone;
use chrono_tz::Tz;
use common::*;
use rdkafka::mocking::MockCluster;
use shared_events::topics::{dead_letter_topic, TASK_EVENTS};
use taskflow_test_support::kafka::prefixed_topics;
use uuid::Uuid;

const PARTITIONS: i32 = 3;
/// Completions per phase: before the kill, and after it.
const PER_PHASE: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_test_broker_a_killed_replicas_partitions_move_to_the_survivor() {
    let brokers = brokers();
    let prefix = format!("rw-failover-{}.", Uuid::now_v7().simple());
    prefixed_topics(&brokers, &prefix).await;
    failover(&brokers, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_mock_cluster_a_killed_replicas_partitions_move_to_the_survivor() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let prefix = format!("rw-failover-{}.", Uuid::now_v7().simple());
    let topic = format!("{prefix}{TASK_EVENTS}");
    cluster.create_topic(&topic, PARTITIONS, 1).expect("topic");
    cluster
        .create_topic(&dead_letter_topic(&topic), 1, 1)
        .expect("dead-letter topic");
    failover(&cluster.bootstrap_servers(), &prefix).await;
}

async fn failover(brokers: &str, prefix: &str) {
    let group = format!("{prefix}group");
    let topic = format!("{prefix}{TASK_EVENTS}");
    let database_url = fresh_database().await;
    let pool = taskflow_db::pool(&database_url, 4).expect("pool");

    let mut doomed = start_worker(&database_url, brokers, prefix, &group, 1);
    let mut survivor = start_worker(&database_url, brokers, prefix, &group, 2);
    doomed.assert_healthy().await;
    survivor.assert_healthy().await;
    let assigned = |w: &Service| metric(&w.addr, "taskflow_consumer_assigned_partitions", &[]);
    eventually(
        "both replicas to own partitions",
        || survivor.log(),
        async || {
            let (a, b) = (assigned(&doomed), assigned(&survivor));
            (a > 0.0 && b > 0.0 && a + b == PARTITIONS as f64)
                .then_some(())
                .ok_or(format!("assigned: {a} + {b}"))
        },
    )
    .await;

    // Completions of distinct daily series, keyed by series like the relay keys them.
    let due = Tz::Europe__Berlin
        .with_ymd_and_hms(2027, 6, 1, 8, 0, 0)
        .unwrap();
    let mut series = Vec::new();
    let mut completions = Vec::new();
    for _ in 0..2 * PER_PHASE {
        let task = recurring_task(&pool, "dana", "daily", due).await;
        completions.push(complete(&pool, &task).await.1);
        series.push(task.series_id);
    }
    let producer = producer(brokers);
    for (s, payload) in series.iter().zip(&completions).take(PER_PHASE) {
        send(&producer, &topic, &s.to_string(), None, payload).await;
    }
    eventually(
        "the first half to be handled",
        || survivor.log(),
        async || {
            let n = processed_count(&pool, &group).await;
            (n == PER_PHASE as i64)
                .then_some(())
                .ok_or(format!("{n} handled"))
        },
    )
    .await;

    // Dies without leaving the group or committing what it handled in the last second.
    doomed.kill();
    for (s, payload) in series.iter().zip(&completions).skip(PER_PHASE) {
        send(&producer, &topic, &s.to_string(), None, payload).await;
    }
    eventually(
        "the survivor to own every partition",
        || survivor.log(),
        async || {
            let n = assigned(&survivor);
            (n == PARTITIONS as f64)
                .then_some(())
                .ok_or(format!("{n} assigned"))
        },
    )
    .await;
    eventually(
        "every completion to be handled",
        || survivor.log(),
        async || {
            let n = processed_count(&pool, &group).await;
            (n == 2 * PER_PHASE as i64)
                .then_some(())
                .ok_or(format!("{n} handled"))
        },
    )
    .await;
    // The effects: exactly one next occurrence per completed series, one `created` event each.
    let effects = count(
        &pool,
        "SELECT count(*) AS n FROM tasks WHERE occurrence = 2",
    )
    .await;
    assert_eq!(
        effects,
        2 * PER_PHASE as i64,
        "one next occurrence per completion"
    );
    for s in &series {
        let rows = occurrences(&pool, *s).await;
        assert_eq!(rows.len(), 2, "series {s}");
        assert_eq!(
            outbox_events(&pool, "com.taskflow.task.created", rows[1].id).await,
            1,
            "series {s}: one created event"
        );
    }

    survivor.terminate();
    let status = survivor
        .exit_within(Duration::from_secs(10), tokio::time::Instant::now())
        .await;
    assert!(
        status.success(),
        "survivor exit: {status:?}\n{}",
        survivor.log()
    );
}
