//! Recurrence worker: reacts to `task-events`. Completed occurrences of recurring tasks are the
//! events that will create the next occurrence; for now the worker records each event once
//! (idempotent consumer) and logs the next due date the series asks for.

use chrono::Utc;
use chrono_tz::Tz;
use futures::future::BoxFuture;
use shared_events::consumer::{Delivery, Handler, HandlerError};
use shared_events::database::DbPool;
use shared_events::topics::RECURRENCE_WORKER_GROUP;
use shared_events::{processed, EventData, TaskEventType};

pub struct RecurrenceHandler {
    pool: DbPool,
}

impl RecurrenceHandler {
    pub fn new(pool: DbPool) -> Self {
        RecurrenceHandler { pool }
    }
}

impl Handler for RecurrenceHandler {
    fn handle<'a>(&'a self, delivery: Delivery<'a>) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let EventData::Task(event) = delivery.data else {
                return Err(HandlerError::Permanent(format!(
                    "{} does not belong on {}",
                    delivery.event.event_type, delivery.topic
                )));
            };
            let first =
                processed::record_once(&self.pool, RECURRENCE_WORKER_GROUP, delivery.event.id)
                    .await
                    .map_err(|e| HandlerError::Transient(e.to_string()))?;
            if !first {
                tracing::debug!(event = %delivery.event.id, "duplicate delivery skipped");
                return Ok(());
            }
            let task = &event.task;
            if event.event_type == TaskEventType::Completed {
                if let (Some(recurrence), Some(due)) = (&task.recurrence, task.due_at) {
                    let tz: Tz = task.timezone.parse().unwrap_or(Tz::UTC);
                    let next = recurrence.next_due(
                        due,
                        due,
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
