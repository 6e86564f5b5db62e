//! The task as the API returns it: its own contract, apart from the event payload
//! (`shared_events::TaskSnapshot`), so either can change without the other.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};
use shared_events::recurrence::RecurrenceView;
use shared_events::Priority;
use taskflow_db::tasks::TaskRow;
use utoipa::ToSchema;
use uuid::Uuid;

/// A task, as every task endpoint returns it.
// Borrows its text from where the task was read (a `TaskRow`, or a list page's row in
// `crate::listing`): writing it copies no string. (Doc comments here become the OpenAPI text.)
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(as = Task)]
pub struct TaskView<'a> {
    pub id: Uuid,
    pub user_id: &'a str,
    pub title: &'a str,
    pub description: Option<&'a str>,
    pub completed: bool,
    #[serde(serialize_with = "rfc3339_opt")]
    pub completed_at: Option<DateTime<Utc>>,
    pub priority: Priority,
    pub tags: Vec<&'a str>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub due_at: Option<DateTime<Utc>>,
    /// IANA time zone used for recurrence and display.
    pub timezone: &'a str,
    pub reminder_minutes_before: Option<i32>,
    /// The series' schedule with a human summary; the same object on every occurrence.
    pub recurrence: Option<RecurrenceView>,
    /// Groups the occurrences of one recurring task (the first occurrence's id).
    pub series_id: Uuid,
    /// 1 for the first occurrence of a series.
    pub occurrence: i32,
    /// Incremented on every change; send it back in `If-Match`.
    pub version: i64,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
}

// The text chrono's own `Serialize` writes (it calls the same RFC 3339 writer with these options),
// formatted in one piece: through `collect_str` each of a timestamp's dozen fragments went
// through serde_json's string escaping on its own, about 8 % of the backend's CPU on a list page.
fn rfc3339<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

fn rfc3339_opt<S: Serializer>(
    at: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => rfc3339(at, serializer),
        None => serializer.serialize_none(),
    }
}

impl<'a> From<&'a TaskRow> for TaskView<'a> {
    fn from(row: &'a TaskRow) -> Self {
        TaskView {
            recurrence: row.recurrence().map(RecurrenceView::from),
            priority: Priority::from_rank(row.priority).unwrap_or(Priority::None),
            id: row.id,
            user_id: &row.user_id,
            title: &row.title,
            description: row.description.as_deref(),
            completed: row.completed,
            completed_at: row.completed_at,
            tags: row.tags.iter().map(String::as_str).collect(),
            due_at: row.due_at,
            timezone: &row.timezone,
            reminder_minutes_before: row.reminder_minutes_before,
            series_id: row.series_id,
            occurrence: row.occurrence,
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{rfc3339, rfc3339_opt};
    use chrono::{DateTime, Utc};

    /// Byte for byte what chrono's own `Serialize` writes, at each precision it picks.
    #[test]
    fn timestamps_are_written_as_chrono_writes_them() {
        for text in [
            "2026-12-05T11:51:14Z",
            "2026-12-05T11:51:14.831Z",
            "2026-12-05T11:51:14.831067Z",
            "2026-12-05T11:51:14.831067123Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999Z",
        ] {
            let at: DateTime<Utc> = text.parse().unwrap();
            let ours = rfc3339(&at, serde_json::value::Serializer).unwrap();
            assert_eq!(ours, serde_json::to_value(at).unwrap(), "{text}");
            assert_eq!(ours, text);
            let some = rfc3339_opt(&Some(at), serde_json::value::Serializer).unwrap();
            assert_eq!(some, ours);
        }
        let none = rfc3339_opt(&None, serde_json::value::Serializer).unwrap();
        assert_eq!(none, serde_json::Value::Null);
    }
}
