//! Notifier: reacts to `reminders`. Each due reminder is recorded once (idempotent consumer)
//! and logged; delivery channels plug in here.

use diesel_async::AsyncPgConnection;
use futures::future::BoxFuture;
use taskflow_db::effects::{Delivery, Handler, HandlerError};

pub struct ReminderHandler;

impl Handler for ReminderHandler {
    fn handle<'a>(
        &'a self,
        _conn: &'a mut AsyncPgConnection,
        delivery: Delivery<'a>,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let reminder = delivery.reminder()?;
            tracing::info!(task = %reminder.task_id, user = %reminder.user_id, title = %reminder.title, due_at = %reminder.due_at, "reminder due");
            Ok(())
        })
    }
}
