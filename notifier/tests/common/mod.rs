//! What the notifier's test files share.

use chrono::Utc;
use shared_events::envelope::REMINDER_DUE_TYPE;
use shared_events::{CloudEvent, ReminderDue};
use uuid::Uuid;

/// One reminder firing for `user`, due now, as the backend's scheduler publishes it: its event
/// id, its message key (the task) and the message.
pub fn reminder_firing(user: &str) -> (Uuid, String, Vec<u8>) {
    let now = Utc::now();
    let reminder = ReminderDue {
        reminder_id: Uuid::now_v7(),
        task_id: Uuid::now_v7(),
        user_id: user.to_owned(),
        title: format!("reminder for {user}"),
        due_at: now,
        remind_at: now,
    };
    let id = Uuid::now_v7();
    let event = CloudEvent::new(
        id,
        REMINDER_DUE_TYPE,
        reminder.task_id.to_string(),
        now,
        None,
        &reminder,
    );
    let payload = serde_json::to_vec(&event).expect("a CloudEvent serialises");
    (id, reminder.task_id.to_string(), payload)
}
