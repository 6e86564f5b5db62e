//! The task as the API returns it: its own contract, apart from the event payload
//! (`shared_events::TaskSnapshot`), so either can change without the other.

use chrono::{DateTime, Utc};
use serde::Serialize;
use shared_events::recurrence::RecurrenceView;
use shared_events::Priority;
use taskflow_db::tasks::TaskRow;
use utoipa::ToSchema;
use uuid::Uuid;

/// A task, as every task endpoint returns it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(as = Task)]
pub struct TaskView {
    pub id: Uuid,
    pub user_id: String,
    pub title: String,
    pub description: Option<String>,
    pub completed: bool,
    pub completed_at: Option<DateTime<Utc>>,
    pub priority: Priority,
    pub tags: Vec<String>,
    pub due_at: Option<DateTime<Utc>>,
    /// IANA time zone used for recurrence and display.
    pub timezone: String,
    pub reminder_minutes_before: Option<i32>,
    /// The series' schedule with a human summary; the same object on every occurrence.
    pub recurrence: Option<RecurrenceView>,
    /// Groups the occurrences of one recurring task (the first occurrence's id).
    pub series_id: Uuid,
    /// 1 for the first occurrence of a series.
    pub occurrence: i32,
    /// Incremented on every change; send it back in `If-Match`.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&TaskRow> for TaskView {
    fn from(row: &TaskRow) -> Self {
        let task = row.snapshot();
        TaskView {
            id: task.id,
            user_id: task.user_id,
            title: task.title,
            description: task.description,
            completed: task.completed,
            completed_at: task.completed_at,
            priority: task.priority,
            tags: task.tags,
            due_at: task.due_at,
            timezone: task.timezone,
            reminder_minutes_before: task.reminder_minutes_before,
            recurrence: task.recurrence.map(RecurrenceView::from),
            series_id: task.series_id,
            occurrence: task.occurrence,
            version: task.version,
            created_at: task.created_at,
            updated_at: task.updated_at,
        }
    }
}
