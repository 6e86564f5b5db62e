//! The outbox writer: events are inserted in the transaction of the change they describe; the
//! backend's relay publishes them afterwards.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use shared_events::envelope::{REMINDER_DUE_TYPE, TASK_CHANGED_TYPE};
use shared_events::topics::{REMINDERS, TASK_EVENTS, TASK_UPDATES};
use shared_events::{CloudEvent, ReminderDue, TaskChanged, TaskEventType, TaskSnapshot};
use uuid::Uuid;

use crate::prepared::Prepare;
use crate::schema::outbox;

#[derive(Debug, Insertable)]
#[diesel(table_name = outbox)]
struct NewMessage {
    id: Uuid,
    topic: &'static str,
    message_key: String,
    event_type: String,
    payload: serde_json::Value,
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
            payload: serde_json::to_value(event)
                .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?,
        })
    }
}

/// Record a task change: the full event on `task-events` and a small notice on `task-updates`,
/// both keyed by the series id so one task's events keep their order.
pub async fn record_task_change(
    conn: &mut AsyncPgConnection,
    event_type: TaskEventType,
    task: &TaskSnapshot,
    traceparent: Option<&str>,
    now: DateTime<Utc>,
) -> QueryResult<Uuid> {
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
    diesel::insert_into(outbox::table)
        .values(vec![
            NewMessage::new(TASK_EVENTS, key.clone(), &event)?,
            NewMessage::new(TASK_UPDATES, key, &notice)?,
        ])
        .prepared()
        .execute(conn)
        .await?;
    Ok(event.id)
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
