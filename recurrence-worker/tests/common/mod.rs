//! What the worker tests share beyond `taskflow-test-support`: the worker binary, events to
//! produce, and the worker's processed-event records.
#![allow(dead_code, unused_imports)] // each test binary uses its own subset

use std::collections::BTreeSet;
use std::path::PathBuf;

use chrono::Utc;
use diesel::sql_types::{Text, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use shared_events::recurrence::{Recurrence, RecurrenceInput};
use shared_events::{CloudEvent, TaskEventType, TaskSnapshot};
use taskflow_db::prepared::Prepare;
use taskflow_db::tasks::{self, TaskRow};
use taskflow_db::DbPool;
use taskflow_test_support::db::EVERY_OUTBOX_ROW;
pub use taskflow_test_support::db::{count, fresh_database};
pub use taskflow_test_support::kafka::{brokers, group_members, producer, read, send};
pub use taskflow_test_support::process::{metric, Service};
pub use taskflow_test_support::{eventually, PATIENCE};
use uuid::Uuid;

/// The recurrence worker as a child process, in `group` on topics under `prefix`.
pub fn start_worker(
    database_url: &str,
    brokers: &str,
    prefix: &str,
    group: &str,
    run: u32,
) -> Service {
    Service::start(
        env!("CARGO_BIN_EXE_recurrence-worker"),
        &format!("recurrence-worker-{group}-run{run}"),
        &PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
        &[
            ("DATABASE_URL", database_url),
            ("KAFKA_BROKERS", brokers),
            ("KAFKA_TOPIC_PREFIX", prefix),
            ("KAFKA_GROUP_ID", group),
            ("KAFKA_SESSION_TIMEOUT_MS", "6000"),
        ],
    )
}

/// How many events `group` has recorded as handled.
pub async fn processed_count(pool: &DbPool, group: &str) -> i64 {
    count(
        pool,
        &format!("SELECT count(*) AS n FROM processed_events WHERE consumer = '{group}'"),
    )
    .await
}

/// Sessions of the test database waiting on a lock: the worker's effect behind the held row.
pub async fn lock_waiters(pool: &DbPool) -> i64 {
    count(
        pool,
        "SELECT count(*) AS n FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .await
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = SqlUuid)]
    event_id: Uuid,
}

pub async fn processed_ids(pool: &DbPool, group: &str) -> BTreeSet<Uuid> {
    let mut conn = pool.get().await.expect("connection");
    diesel::sql_query("SELECT event_id FROM processed_events WHERE consumer = $1")
        .bind::<Text, _>(group)
        .load::<Id>(&mut conn)
        .await
        .expect("ids")
        .into_iter()
        .map(|r| r.event_id)
        .collect()
}

/// A valid `com.taskflow.task.updated` CloudEvent for a task.
pub fn task_event(id: Uuid, task_id: Uuid, version: i64, kind: TaskEventType) -> Vec<u8> {
    let now = Utc::now();
    let mut task = TaskSnapshot::new(task_id, "alice", &format!("task {task_id}"), now);
    task.version = version;
    task.completed = kind == TaskEventType::Completed;
    let event = CloudEvent::for_task(id, kind, task, now, None);
    serde_json::to_vec(&event).unwrap()
}

/// One produced event and the partition it landed on.
pub struct Sent {
    pub id: Uuid,
    pub partition: i32,
}

/// `taskflow_consumer_messages_total` of `outcome` on `task-events`.
pub fn handled(worker: &Service, outcome: &str) -> usize {
    metric(
        &worker.addr,
        "taskflow_consumer_messages_total",
        &[("outcome", outcome), ("topic", "task-events")],
    ) as usize
}

/// A recurring task stored as the API stores one: `recurrence` (a shorthand or an RRULE) from
/// `due` in its zone, the first occurrence of its own series.
pub async fn recurring_task(
    pool: &DbPool,
    user: &str,
    recurrence: &str,
    due: chrono::DateTime<chrono_tz::Tz>,
) -> TaskRow {
    let input: RecurrenceInput = if recurrence.contains('=') {
        serde_json::from_value(serde_json::json!({ "rule": recurrence })).unwrap()
    } else {
        serde_json::from_value(serde_json::json!(recurrence)).unwrap()
    };
    let recurrence = Recurrence::parse(&input, Some(due)).expect("valid recurrence");
    let now = Utc::now();
    let id = Uuid::now_v7();
    let row = TaskRow {
        id,
        user_id: user.to_owned(),
        title: format!("recurring {id}"),
        description: Some("every time".into()),
        completed: false,
        completed_at: None,
        priority: 3,
        tags: vec!["home".into()],
        due_at: Some(due.with_timezone(&Utc)),
        timezone: due.timezone().name().to_owned(),
        reminder_minutes_before: Some(15),
        recurrence: Some(serde_json::to_value(&recurrence).unwrap()),
        series_id: id,
        occurrence: 1,
        version: 1,
        created_at: now,
        updated_at: now,
    };
    let row = row.as_stored();
    let mut conn = pool.get().await.expect("connection");
    tasks::insert_statement(std::slice::from_ref(&row))
        .prepared()
        .execute(&mut conn)
        .await
        .expect("insert task");
    row
}

/// Complete `row` as the API does (the stored row and its `completed` event); returns the event
/// (id, bytes) for the test to deliver.
pub async fn complete(pool: &DbPool, row: &TaskRow) -> (Uuid, Vec<u8>) {
    let now = Utc::now();
    let mut done = row.clone();
    done.completed = true;
    done.completed_at = Some(now);
    done.version += 1;
    done.updated_at = now;
    let done = done.as_stored();
    let mut conn = pool.get().await.expect("connection");
    tasks::save_statement(&done)
        .prepared()
        .execute(&mut conn)
        .await
        .expect("save");
    let id = Uuid::now_v7();
    let event = CloudEvent::for_task(id, TaskEventType::Completed, done.snapshot(), now, None);
    (id, serde_json::to_vec(&event).unwrap())
}

/// The occurrences of a series, by number.
pub async fn occurrences(pool: &DbPool, series: Uuid) -> Vec<TaskRow> {
    let mut conn = pool.get().await.expect("connection");
    let mut rows: Vec<TaskRow> = diesel::sql_query(format!(
        "SELECT {} FROM tasks WHERE series_id = $1 ORDER BY occurrence",
        tasks::COLUMNS
    ))
    .bind::<SqlUuid, _>(series)
    .load(&mut conn)
    .await
    .expect("occurrences");
    rows.sort_by_key(|r| r.occurrence);
    rows
}

/// Outbox rows, sent or not, of `event_type` (e.g. `com.taskflow.task.created`) about `task`.
pub async fn outbox_events(pool: &DbPool, event_type: &str, task: Uuid) -> i64 {
    count(
        pool,
        &format!(
            "SELECT count(*) AS n FROM {EVERY_OUTBOX_ROW} WHERE topic = 'task-events' \
             AND event_type = '{event_type}' AND payload->'data'->>'task_id' = '{task}'"
        ),
    )
    .await
}
