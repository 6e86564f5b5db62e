//! Each task's history of events, recorded once per event id.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use shared_events::TaskEvent;
use uuid::Uuid;

use crate::schema::task_history;

/// One recorded event of a task.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = task_history)]
pub struct HistoryEntry {
    pub event_id: Uuid,
    pub event_type: String,
    pub version: i64,
    pub occurred_at: DateTime<Utc>,
}

/// Record `event` (its CloudEvent id `event_id`) unless it already is.
pub async fn record(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
    event: &TaskEvent,
) -> QueryResult<()> {
    diesel::insert_into(task_history::table)
        .values((
            task_history::event_id.eq(event_id),
            task_history::task_id.eq(event.task_id),
            task_history::user_id.eq(&event.user_id),
            task_history::event_type.eq(event.event_type.as_str()),
            task_history::version.eq(event.task.version),
            task_history::occurred_at.eq(event.occurred_at),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await
        .map(drop)
}

/// The user's task's history, oldest first.
pub async fn of_task(
    conn: &mut AsyncPgConnection,
    user_id: &str,
    task_id: Uuid,
) -> QueryResult<Vec<HistoryEntry>> {
    task_history::table
        .filter(task_history::user_id.eq(user_id))
        .filter(task_history::task_id.eq(task_id))
        .order((task_history::occurred_at, task_history::event_id))
        .select(HistoryEntry::as_select())
        .load(conn)
        .await
}
