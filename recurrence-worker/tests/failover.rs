//! A worker replica dies (SIGKILL: no LeaveGroup, no final commit) and the survivor takes over
//! its partitions: every event is handled exactly once. Tansu never expires a killed member, so
//! this runs on librdkafka's own mock cluster, which the worker binaries reach over TCP.

mod common;

use std::time::Duration;

use common::*;
use rdkafka::mocking::MockCluster;
use shared_events::topics::{dead_letter_topic, TASK_EVENTS};
use uuid::Uuid;

const PARTITIONS: i32 = 3;
/// Per phase: before the kill, and after it.
const EVENTS: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replicas_partitions_move_to_the_survivor_and_nothing_is_lost() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let prefix = format!("rw-failover-{}.", Uuid::now_v7().simple());
    let group = format!("{prefix}group");
    let topic = format!("{prefix}{TASK_EVENTS}");
    cluster.create_topic(&topic, PARTITIONS, 1).expect("topic");
    cluster
        .create_topic(&dead_letter_topic(&topic), 1, 1)
        .expect("dead-letter topic");
    let brokers = cluster.bootstrap_servers();
    let database_url = fresh_database().await;
    let pool = taskflow_db::pool(&database_url, 2).expect("pool");

    let mut doomed = start_worker(&database_url, &brokers, &prefix, &group, 1);
    let mut survivor = start_worker(&database_url, &brokers, &prefix, &group, 2);
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

    // Keyed like the relay keys task events: 30 tasks spread over the partitions.
    let producer = producer(&brokers);
    let tasks: Vec<Uuid> = (0..30).map(|_| Uuid::now_v7()).collect();
    let mut sent = Vec::new();
    let mut produce = async |phase: usize| {
        for i in 0..EVENTS {
            let task = tasks[i % tasks.len()];
            let id = Uuid::now_v7();
            let version = (phase * EVENTS + i) as i64 / tasks.len() as i64 + 1;
            send(
                &producer,
                &topic,
                &task.to_string(),
                None,
                &task_updated(id, task, version),
            )
            .await;
            sent.push(id);
        }
    };
    produce(0).await;
    eventually(
        "the first half to be handled",
        || survivor.log(),
        async || {
            let n = processed_count(&pool, &group).await;
            (n == EVENTS as i64)
                .then_some(())
                .ok_or(format!("{n} handled"))
        },
    )
    .await;

    // Dies without leaving the group or committing what it handled in the last second.
    doomed.kill();
    produce(1).await;

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
        "every event to be handled",
        || survivor.log(),
        async || {
            let n = processed_count(&pool, &group).await;
            (n == 2 * EVENTS as i64)
                .then_some(())
                .ok_or(format!("{n} handled"))
        },
    )
    .await;
    let handled = processed_ids(&pool, &group).await;
    assert_eq!(
        handled,
        sent.iter().copied().collect(),
        "exactly the events sent"
    );

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
