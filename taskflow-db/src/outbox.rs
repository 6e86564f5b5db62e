//! The outbox writer: events are inserted in the transaction of the change they describe; the
//! backend's relay publishes them afterwards.

use std::io::Write;

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::QueryFragment;
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::Jsonb;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use shared_events::envelope::{REMINDER_DUE_TYPE, TASK_CHANGED_TYPE};
use shared_events::topics::{REMINDERS, TASK_EVENTS, TASK_UPDATES};
use shared_events::{CloudEvent, ReminderDue, TaskChanged, TaskEventType, TaskSnapshot};
use uuid::Uuid;

use crate::cte;
use crate::prepared::Prepare;
use crate::schema::outbox;

#[derive(Debug, Insertable)]
#[diesel(table_name = outbox)]
struct NewMessage {
    id: Uuid,
    topic: &'static str,
    message_key: String,
    event_type: String,
    payload: JsonText,
}

/// A CloudEvent's JSON text bound as `jsonb`. Serialised straight to text: going through
/// `serde_json::Value` (what diesel's `Jsonb` binds) built a map and a string per field of every
/// event only to write them out again.
#[derive(Debug, diesel::expression::AsExpression)]
#[diesel(sql_type = Jsonb)]
struct JsonText(String);

impl ToSql<Jsonb, Pg> for JsonText {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        // jsonb's binary input: format version 1, then the text.
        out.write_all(&[1])?;
        out.write_all(self.0.as_bytes())?;
        Ok(IsNull::No)
    }
}

impl NewMessage {
    fn new<D: serde::Serialize>(
        topic: &'static str,
        key: String,
        event: &CloudEvent<D>,
    ) -> QueryResult<Self> {
        Ok(NewMessage {
            id: event.id,
            topic,
            message_key: key,
            event_type: event.event_type.clone(),
            payload: JsonText(
                serde_json::to_string(event)
                    .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?,
            ),
        })
    }
}

/// The messages of a task change: the full event on `task-events` and a small notice on
/// `task-updates`, both keyed by the series id so one task's events keep their order. Returns the
/// event's id with them.
fn task_change(
    event_type: TaskEventType,
    task: &TaskSnapshot,
    traceparent: Option<&str>,
    now: DateTime<Utc>,
) -> QueryResult<(Uuid, Vec<NewMessage>)> {
    let key = task.series_id.to_string();
    let event = CloudEvent::for_task(
        Uuid::now_v7(),
        event_type,
        task.clone(),
        now,
        traceparent.map(str::to_owned),
    );
    let notice = CloudEvent::new(
        Uuid::now_v7(),
        TASK_CHANGED_TYPE,
        task.id.to_string(),
        now,
        traceparent.map(str::to_owned),
        TaskChanged {
            event_type,
            task_id: task.id,
            user_id: task.user_id.clone(),
            version: task.version,
            occurred_at: now,
        },
    );
    let messages = vec![
        NewMessage::new(TASK_EVENTS, key.clone(), &event)?,
        NewMessage::new(TASK_UPDATES, key, &notice)?,
    ];
    Ok((event.id, messages))
}

/// Record a task change (see [`task_change`]) in the caller's transaction.
pub async fn record_task_change(
    conn: &mut AsyncPgConnection,
    event_type: TaskEventType,
    task: &TaskSnapshot,
    traceparent: Option<&str>,
    now: DateTime<Utc>,
) -> QueryResult<Uuid> {
    let (id, messages) = task_change(event_type, task, traceparent, now)?;
    diesel::insert_into(outbox::table)
        .values(messages)
        .prepared()
        .execute(conn)
        .await?;
    Ok(id)
}

/// One task change to record beside the write that makes it.
#[derive(Debug, Clone, Copy)]
pub struct TaskChange<'a> {
    pub event_type: TaskEventType,
    pub task: &'a TaskSnapshot,
    pub traceparent: Option<&'a str>,
    pub now: DateTime<Utc>,
}

/// Run `write`, the statement that makes the task changes, and record the changes (see
/// [`task_change`]), as one statement ([`crate::cte`]): atomic on its own, so outside a
/// transaction it is the whole change in one round trip. `write` must have a bounded number of
/// shapes (it stays prepared), and so must `changes`: the text varies with their number.
pub async fn write_with_task_changes<W>(
    conn: &mut AsyncPgConnection,
    write: W,
    changes: &[TaskChange<'_>],
) -> QueryResult<()>
where
    W: QueryFragment<Pg> + Send,
{
    let mut messages = Vec::with_capacity(2 * changes.len());
    for change in changes {
        let (_, both) = task_change(
            change.event_type,
            change.task,
            change.traceparent,
            change.now,
        )?;
        messages.extend(both);
    }
    cte::with_write(write, diesel::insert_into(outbox::table).values(messages))
        .prepared()
        .execute(conn)
        .await?;
    Ok(())
}

/// Record that a reminder fired: `com.taskflow.reminder.due` on `reminders`, keyed by the task id.
pub async fn record_reminder_due(
    conn: &mut AsyncPgConnection,
    reminder: &ReminderDue,
    now: DateTime<Utc>,
) -> QueryResult<Uuid> {
    let event = CloudEvent::new(
        Uuid::now_v7(),
        REMINDER_DUE_TYPE,
        reminder.task_id.to_string(),
        now,
        None,
        reminder,
    );
    diesel::insert_into(outbox::table)
        .values(NewMessage::new(
            REMINDERS,
            reminder.task_id.to_string(),
            &event,
        )?)
        .prepared()
        .execute(conn)
        .await?;
    Ok(event.id)
}
