//! The outbox writer: events are inserted in the transaction of the change they describe; the
//! backend's relay publishes them afterwards.

use std::io::Write;

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment};
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::{Jsonb, Text, Uuid as SqlUuid};
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

/// A relay in the writer's process, which takes the payloads of the rows about to be written so
/// that it need not read them back from the outbox.
pub trait Handoff: Sync {
    /// Offered before the statement runs, so the entry is there by the time the row can be
    /// claimed; the row may also never commit, so an entry is only for a row found in `outbox`.
    fn offer(&self, id: Uuid, payload: &str, traceparent: Option<&str>);
}

/// Run `write`, the statement that makes the task changes, and record the changes (see
/// [`task_change`]), as one statement ([`crate::cte`]): atomic on its own, so outside a
/// transaction it is the whole change in one round trip. `write` must have a bounded number of
/// shapes (it stays prepared), and so must `changes`: the text varies with their number. Each
/// row is offered to `handoff` first.
pub async fn write_with_task_changes<W>(
    conn: &mut AsyncPgConnection,
    write: W,
    changes: &[TaskChange<'_>],
    handoff: Option<&dyn Handoff>,
) -> QueryResult<()>
where
    W: QueryFragment<Pg> + Send,
{
    let messages = task_change_messages(changes, handoff)?;
    cte::with_write(write, diesel::insert_into(outbox::table).values(messages))
        .prepared()
        .execute(conn)
        .await?;
    Ok(())
}

fn task_change_messages(
    changes: &[TaskChange<'_>],
    handoff: Option<&dyn Handoff>,
) -> QueryResult<Vec<NewMessage>> {
    let mut messages = Vec::with_capacity(2 * changes.len());
    for change in changes {
        let (_, both) = task_change(
            change.event_type,
            change.task,
            change.traceparent,
            change.now,
        )?;
        if let Some(handoff) = handoff {
            for row in &both {
                handoff.offer(row.id, &row.payload.0, change.traceparent);
            }
        }
        messages.extend(both);
    }
    Ok(messages)
}

/// [`write_with_task_changes`] for a `write` that may write nothing (see
/// [`crate::cte::with_write_if`]), with `also` beside it: when it writes nothing, neither the
/// events nor `also` are written. One statement. Returns whether it wrote.
pub async fn write_if_with_task_changes<W, A>(
    conn: &mut AsyncPgConnection,
    write: W,
    also: A,
    changes: &[TaskChange<'_>],
) -> QueryResult<bool>
where
    W: QueryFragment<Pg> + Send,
    A: QueryFragment<Pg> + Send,
{
    let messages = task_change_messages(changes, None)?;
    let inserted = cte::with_write_if(write, also, InsertIfWritten(&messages))
        .prepared()
        .execute(conn)
        .await?;
    Ok(inserted > 0)
}

/// `INSERT INTO outbox … SELECT … FROM (VALUES …) WHERE <first wrote>`: an INSERT with VALUES
/// cannot be conditional, so the rows are selected from a VALUES list instead.
struct InsertIfWritten<'a>(&'a [NewMessage]);

impl QueryFragment<Pg> for InsertIfWritten<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "INSERT INTO outbox (id, topic, message_key, event_type, payload) SELECT * FROM (VALUES ",
        );
        for (i, m) in self.0.iter().enumerate() {
            out.push_sql(if i == 0 { "(" } else { ", (" });
            out.push_bind_param::<SqlUuid, _>(&m.id)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, _>(&m.topic)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, _>(&m.message_key)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, _>(&m.event_type)?;
            out.push_sql(", ");
            out.push_bind_param::<Jsonb, _>(&m.payload)?;
            out.push_sql(")");
        }
        out.push_sql(") AS message WHERE ");
        out.push_sql(cte::FIRST_WROTE);
        Ok(())
    }
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
