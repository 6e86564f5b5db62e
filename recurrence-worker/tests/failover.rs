//! A worker replica dies (SIGKILL: no LeaveGroup, no final commit) and the survivor takes over
//! its partitions: every event is handled exactly once. Tansu never expires a killed member, so
//! this runs on librdkafka's own mock cluster, which the worker binaries reach over TCP.

mod common;

use std::time::Duration;

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::FutureProducer;
use shared_events::database;
use shared_events::topics::{dead_letter_topic, TASK_EVENTS};
use uuid::Uuid;

const PARTITIONS: i32 = 3;
/// Per phase: before the kill, and after it.
const EVENTS: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replicas_partitions_move_to_the_survivor_and_nothing_is_lost() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let prefix = format!("rw-failover-{}.", Uuid::new_v4().simple());
    let group = format!("{prefix}group");
    let topic = format!("{prefix}{TASK_EVENTS}");
    cluster.create_topic(&topic, PARTITIONS, 1).expect("topic");
    cluster
        .create_topic(&dead_letter_topic(&topic), 1, 1)
        .expect("dead-letter topic");
    let brokers = cluster.bootstrap_servers();
    let database_url = fresh_database().await;
    let pool = database::pool(&database_url, 2).expect("pool");

    let mut doomed = Worker::start(&database_url, &brokers, &prefix, &group, 1);
    let mut survivor = Worker::start(&database_url, &brokers, &prefix, &group, 2);
    doomed.assert_healthy().await;
    survivor.assert_healthy().await;
    eventually("both replicas to own partitions", &survivor, async || {
        let (a, b) = (
            metric(&doomed.addr, "consumer_assigned_partitions"),
            metric(&survivor.addr, "consumer_assigned_partitions"),
        );
        (a > 0 && b > 0 && a + b == PARTITIONS as u64)
            .then_some(())
            .ok_or(format!("assigned: {a} + {b}"))
    })
    .await;

    // Keyed like the relay keys task events: 30 tasks spread over the partitions.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
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
    eventually("the first half to be handled", &survivor, async || {
        let n = processed_count(&pool).await;
        (n == EVENTS as i64)
            .then_some(())
            .ok_or(format!("{n} handled"))
    })
    .await;

    // Dies without leaving the group or committing what it handled in the last second.
    doomed.child.kill().expect("SIGKILL");
    doomed.child.wait().expect("reaped");
    produce(1).await;

    eventually(
        "the survivor to own every partition",
        &survivor,
        async || {
            let n = metric(&survivor.addr, "consumer_assigned_partitions");
            (n == PARTITIONS as u64)
                .then_some(())
                .ok_or(format!("{n} assigned"))
        },
    )
    .await;
    eventually("every event to be handled", &survivor, async || {
        let n = processed_count(&pool).await;
        (n == 2 * EVENTS as i64)
            .then_some(())
            .ok_or(format!("{n} handled"))
    })
    .await;
    let handled = processed_ids(&pool).await;
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
