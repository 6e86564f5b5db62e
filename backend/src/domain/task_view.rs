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

impl From<TaskRow> for TaskView {
    /// By value: a list page moves its rows' strings into the views instead of copying them.
    fn from(row: TaskRow) -> Self {
        TaskView {
            recurrence: row.recurrence().map(RecurrenceView::from),
            priority: Priority::from_rank(row.priority).unwrap_or(Priority::None),
            id: row.id,
            user_id: row.user_id,
            title: row.title,
            description: row.description,
            completed: row.completed,
            completed_at: row.completed_at,
            tags: row.tags,
            due_at: row.due_at,
            timezone: row.timezone,
            reminder_minutes_before: row.reminder_minutes_before,
            series_id: row.series_id,
            occurrence: row.occurrence,
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

impl From<&TaskRow> for TaskView {
    fn from(row: &TaskRow) -> Self {
        TaskView::from(row.clone())
    }
}
