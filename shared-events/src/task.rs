//! The task as events carry it (`data.task` of every task event): part of the versioned event
//! contract, apart from the API's response type.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::recurrence::Recurrence;

/// Task priority, ordered from `None` to `Urgent`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    None,
    Low,
    Medium,
    High,
    Urgent,
}

impl Priority {
    pub const ALL: [Priority; 5] = [
        Priority::None,
        Priority::Low,
        Priority::Medium,
        Priority::High,
        Priority::Urgent,
    ];

    /// The rank stored in the database; sorting by it sorts by urgency.
    pub fn rank(self) -> i16 {
        self as i16
    }

    pub fn from_rank(rank: i16) -> Option<Self> {
        usize::try_from(rank)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::None => "none",
            Priority::Low => "low",
            Priority::Medium => "medium",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// A task as its events carry it. The recurrence is the stored form, with the series start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSnapshot {
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
    pub recurrence: Option<Recurrence>,
    /// Groups the occurrences of one recurring task (the first occurrence's id).
    pub series_id: Uuid,
    /// 1 for the first occurrence of a series.
    pub occurrence: i32,
    /// Incremented on every change; send it back in `If-Match`.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TaskSnapshot {
    /// A new pending task with every optional field empty: the first occurrence of its own series.
    pub fn new(id: Uuid, user_id: &str, title: &str, now: DateTime<Utc>) -> Self {
        TaskSnapshot {
            id,
            user_id: user_id.to_owned(),
            title: title.to_owned(),
            description: None,
            completed: false,
            completed_at: None,
            priority: Priority::None,
            tags: Vec::new(),
            due_at: None,
            timezone: "UTC".to_owned(),
            reminder_minutes_before: None,
            recurrence: None,
            series_id: id,
            occurrence: 1,
            version: 1,
            created_at: now,
            updated_at: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_ranks_round_trip_in_order() {
        for (i, p) in Priority::ALL.into_iter().enumerate() {
            assert_eq!(p.rank() as usize, i);
            assert_eq!(Priority::from_rank(p.rank()), Some(p));
            assert_eq!(Priority::parse(p.as_str()), Some(p));
        }
        assert_eq!(Priority::from_rank(5), None);
        assert_eq!(Priority::from_rank(-1), None);
        assert_eq!(Priority::parse("URGENT"), None);
        assert!(Priority::Urgent > Priority::High);
    }
}
