//! Recurrence worker: reacts to `task-events`. Completed occurrences of recurring tasks are the
//! events that will create the next occurrence; for now the worker records each event once
//! (idempotent consumer) and logs the next due date the series asks for.

use chrono::Utc;
use chrono_tz::Tz;
use diesel_async::AsyncPgConnection;
use futures::future::BoxFuture;
use shared_events::{EventData, TaskEventType};
use taskflow_db::effects::{Delivery, Handler, HandlerError};

pub struct RecurrenceHandler;

impl Handler for RecurrenceHandler {
    fn handle<'a>(
        &'a self,
        _conn: &'a mut AsyncPgConnection,
        delivery: Delivery<'a>,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let EventData::Task(event) = delivery.data else {
                return Err(HandlerError::Permanent(format!(
                    "{} does not belong on {}",
                    delivery.event.event_type, delivery.topic
                )));
            };
            let task = &event.task;
            if event.event_type == TaskEventType::Completed {
                if let Some(recurrence) = &task.recurrence {
                    let tz: Tz = task.timezone.parse().unwrap_or(Tz::UTC);
                    let next = recurrence.next_occurrence(
                        task.due_at,
                        task.completed_at.unwrap_or_else(Utc::now),
                        task.occurrence.max(1) as u32,
                        tz,
                    );
                    tracing::info!(task = %task.id, series = %task.series_id, next_due = ?next, "recurring task completed");
                }
            }
            Ok(())
        })
    }
}
