//! Notifier: reacts to `reminders`. Each due reminder is recorded once (idempotent consumer)
//! and logged; delivery channels (email, push, webhooks) plug in here.

use futures::future::BoxFuture;
use shared_events::consumer::{Delivery, Handler, HandlerError};
use shared_events::database::DbPool;
use shared_events::topics::NOTIFIER_GROUP;
use shared_events::{processed, EventData};

pub struct ReminderHandler {
    pool: DbPool,
}

impl ReminderHandler {
    pub fn new(pool: DbPool) -> Self {
        ReminderHandler { pool }
    }
}

impl Handler for ReminderHandler {
    fn handle<'a>(&'a self, delivery: Delivery<'a>) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let EventData::Reminder(reminder) = delivery.data else {
                return Err(HandlerError::Permanent(format!(
                    "{} does not belong on {}",
                    delivery.event.event_type, delivery.topic
                )));
            };
            let first = processed::record_once(&self.pool, NOTIFIER_GROUP, delivery.event.id)
                .await
                .map_err(|e| HandlerError::Transient(e.to_string()))?;
            if first {
                tracing::info!(task = %reminder.task_id, user = %reminder.user_id, title = %reminder.title, due_at = %reminder.due_at, "reminder due");
            }
            Ok(())
        })
    }
}
