//! The statements of a task's life are prepared once per connection: the session's
//! `pg_prepared_statements` holds each of them after the first run and nothing new after the
//! next ones. diesel alone would parse and plan the UPDATEs, the task writes joined with their
//! outbox rows and the raw SQL again on every run (and close them, so they would not be listed
//! at all).

use chrono::{TimeDelta, Utc};
use diesel::pg::Pg;
use diesel::query_builder::QueryFragment;
use diesel::sql_types::Text;
use diesel::{QueryResult, QueryableByName};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use shared_events::TaskEventType;
use taskflow_db::tasks::{self, TaskRow};
use taskflow_db::{outbox, reminders};
use taskflow_test_support::db::{count, fresh_database};
use uuid::Uuid;

#[derive(QueryableByName)]
struct Prepared {
    #[diesel(sql_type = Text)]
    statement: String,
}

/// The statements this session keeps prepared.
async fn prepared(conn: &mut AsyncPgConnection) -> Vec<String> {
    let mut rows: Vec<String> = diesel::sql_query("SELECT statement FROM pg_prepared_statements")
        .load::<Prepared>(conn)
        .await
        .expect("pg_prepared_statements")
        .into_iter()
        .map(|p| p.statement)
        .collect();
    rows.sort();
    rows
}

fn new_task(user: &str) -> TaskRow {
    let now = Utc::now();
    let id = Uuid::now_v7();
    TaskRow {
        id,
        user_id: user.to_owned(),
        title: "Water the plants".into(),
        description: None,
        completed: false,
        completed_at: None,
        priority: 2,
        tags: vec!["home".into()],
        due_at: Some(now + TimeDelta::hours(3)),
        timezone: "UTC".into(),
        reminder_minutes_before: Some(15),
        recurrence: None,
        series_id: id,
        occurrence: 1,
        version: 1,
        created_at: now,
        updated_at: now,
    }
}

/// `write` with the change's events, as the API writes a change.
async fn with_events(
    conn: &mut AsyncPgConnection,
    write: impl QueryFragment<Pg> + Send,
    event: TaskEventType,
    row: &TaskRow,
) -> QueryResult<()> {
    let task = row.snapshot();
    let change = outbox::TaskChange {
        event_type: event,
        task: &task,
        traceparent: None,
        now: Utc::now(),
    };
    outbox::write_with_task_changes(conn, write, &[change], None).await
}

/// Create a task with a reminder, move its due date, complete it: each write with its events
/// and its reminder brought in line, as the API writes them (here in one transaction).
async fn life_of_a_task(conn: &mut AsyncPgConnection, user: &str) {
    let last = conn
        .transaction::<_, diesel::result::Error, _>(async |conn| {
            let mut row = new_task(user).as_stored();
            let insert = tasks::insert_statement(std::slice::from_ref(&row));
            with_events(conn, insert, TaskEventType::Created, &row).await?;
            reminders::schedule_for_new_task(conn, &row).await?;
            for (event, completed) in [
                (TaskEventType::Updated, false),
                (TaskEventType::Completed, true),
            ] {
                row.due_at = row.due_at.map(|d| d + TimeDelta::hours(1));
                row.completed = completed;
                row.version += 1;
                with_events(conn, tasks::save_statement(&row), event, &row).await?;
                reminders::sync_for_task(conn, &row).await?;
            }
            Ok(row)
        })
        .await
        .expect("a task's life");
    let stored = tasks::find(conn, user, last.id, false).await.expect("read");
    assert_eq!(stored, Some(last), "the UPDATEs wrote every column");
}

#[tokio::test]
async fn a_tasks_writes_are_prepared_once_per_connection() {
    let url = fresh_database().await;
    let mut conn = AsyncPgConnection::establish(&url).await.expect("connect");

    life_of_a_task(&mut conn, "alice").await;
    let first = prepared(&mut conn).await;
    for prefix in [
        r#"WITH first AS (INSERT INTO "tasks""#,
        r#"WITH first AS (UPDATE "tasks" SET"#,
        r#"UPDATE "reminders" SET "due_at""#,
        r#"UPDATE "reminders" SET "status""#,
        r#"INSERT INTO "reminders""#,
        r#"INSERT INTO "jobs""#,
    ] {
        assert_eq!(
            first.iter().filter(|s| s.starts_with(prefix)).count(),
            1,
            "{prefix} prepared once; prepared: {first:#?}"
        );
    }

    for user in ["bob", "carol"] {
        life_of_a_task(&mut conn, user).await;
        assert_eq!(
            prepared(&mut conn).await,
            first,
            "the same writes again prepare nothing new"
        );
    }

    let pool = taskflow_db::pool(&url, 1).expect("pool");
    let events = count(&pool, "SELECT count(*) AS n FROM outbox").await;
    let pending = count(
        &pool,
        "SELECT count(*) AS n FROM reminders WHERE status = 'pending'",
    )
    .await;
    assert_eq!(
        events,
        3 * 3 * 2,
        "three tasks, three changes, two rows each"
    );
    assert_eq!(pending, 0, "every completed task's reminder is cancelled");
}
