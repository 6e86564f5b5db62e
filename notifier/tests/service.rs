//! The real `notifier` binary against the test broker and a fresh database: it serves health
//! and metrics on `METRICS_ADDR`, is not ready before the database is migrated, and stops
//! cleanly on SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use shared_events::topics::REMINDERS;
use taskflow_test_support::db::fresh_database;
use taskflow_test_support::kafka::{brokers, prefixed_topics};
use taskflow_test_support::process::{save_metrics, Service};
use tokio::time::Instant;

fn start(database_url: &str, brokers: &str, prefix: &str, name: &str) -> Service {
    Service::start(
        env!("CARGO_BIN_EXE_notifier"),
        name,
        &PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
        &[
            ("DATABASE_URL", database_url),
            ("KAFKA_BROKERS", brokers),
            ("KAFKA_TOPIC_PREFIX", prefix),
            ("KAFKA_GROUP_ID", &format!("{prefix}notifier")),
            ("KAFKA_SESSION_TIMEOUT_MS", "6000"),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_health_and_metrics_and_stops_on_sigterm() {
    let brokers = brokers();
    let prefix = format!("notifier-{}.", uuid::Uuid::now_v7().simple());
    prefixed_topics(&brokers, &prefix).await;
    let mut notifier = start(
        &fresh_database().await,
        &brokers,
        &prefix,
        "notifier-service",
    );
    notifier.assert_healthy().await;
    let body = notifier.wait_for_metric("taskflow_consumer_lag").await;
    assert!(
        body.contains(&format!(
            "taskflow_consumer_messages_total{{outcome=\"handled\",topic=\"{REMINDERS}\"}} 0"
        )),
        "{body}"
    );
    assert!(body.contains("process_resident_memory_bytes"), "{body}");
    save_metrics("notifier", &body);
    let signalled = Instant::now();
    notifier.terminate();
    let status = notifier
        .exit_within(Duration::from_secs(10), signalled)
        .await;
    assert!(status.success(), "{status}\n{}", notifier.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn is_not_ready_until_the_database_is_migrated() {
    let admin = taskflow_test_support::db::admin_url();
    let name = format!(
        "tf_unmigrated_{}_{}",
        uuid::Uuid::now_v7().simple(),
        std::process::id()
    );
    let url = {
        let mut conn =
            <diesel_async::AsyncPgConnection as diesel_async::AsyncConnection>::establish(&admin)
                .await
                .expect("admin connection");
        diesel_async::RunQueryDsl::execute(
            diesel::sql_query(format!("CREATE DATABASE \"{name}\"")),
            &mut conn,
        )
        .await
        .expect("create database");
        let mut url = url::Url::parse(&admin).unwrap();
        url.set_path(&name);
        url.to_string()
    };
    let brokers = brokers();
    let prefix = format!("notifier-{}.", uuid::Uuid::now_v7().simple());
    prefixed_topics(&brokers, &prefix).await;
    let notifier = start(&url, &brokers, &prefix, "notifier-unmigrated");
    notifier.wait_for("/health", 200).await;
    let body = notifier.wait_for("/ready", 503).await;
    assert!(body.contains("migrations pending"), "{body}");
    let pool = taskflow_db::pool(&url, 1).unwrap();
    taskflow_db::migrations::migrate(&pool).await.unwrap();
    notifier.wait_for("/ready", 200).await;
}
