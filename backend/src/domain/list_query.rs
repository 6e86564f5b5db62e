//! `GET /tasks` query parameters and the keyset cursor, parsed without I/O.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};
use shared_events::Priority;
use uuid::Uuid;

use super::task::{parse_datetime, tag_as_stored};
use crate::error::ApiError;

pub const LIMIT_DEFAULT: i64 = 50;
pub const LIMIT_MAX: i64 = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Completed,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortKey {
    DueAt,
    Priority,
    CreatedAt,
    Title,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    pub key: SortKey,
    pub descending: bool,
}

impl Sort {
    fn parse(raw: &str) -> Option<Sort> {
        let (descending, name) = match raw.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        let key = match name {
            "due_at" => SortKey::DueAt,
            "priority" => SortKey::Priority,
            "created_at" => SortKey::CreatedAt,
            "title" => SortKey::Title,
            _ => return None,
        };
        Some(Sort { key, descending })
    }
}

/// The sort value of the last row of a page; `None` stands for SQL NULL (only `due_at`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortValue {
    Time(DateTime<Utc>),
    Rank(i16),
    Text(String),
}

/// Where the next page starts: after (value, id) in the order the cursor was made for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    pub sort: SortKey,
    pub descending: bool,
    pub value: Option<SortValue>,
    pub id: Uuid,
}

impl Cursor {
    pub fn encode(&self) -> String {
        // Serialising this plain struct cannot fail.
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(raw: &str) -> Option<Cursor> {
        let bytes = URL_SAFE_NO_PAD.decode(raw.trim()).ok()?;
        let cursor: Cursor = serde_json::from_slice(&bytes).ok()?;
        // The value's type must fit the sort key, or the SQL bind would be wrong; a time must
        // be one PostgreSQL can hold (4713 BC to 294276 AD), a text one without NUL.
        let storable = |t: &DateTime<Utc>| (-4712..=294_275).contains(&t.year());
        let fits = match (&cursor.sort, &cursor.value) {
            (SortKey::DueAt, None) => true,
            (SortKey::DueAt | SortKey::CreatedAt, Some(SortValue::Time(t))) => storable(t),
            (SortKey::Priority, Some(SortValue::Rank(_))) => true,
            (SortKey::Title, Some(SortValue::Text(t))) => !t.contains('\0'),
            _ => false,
        };
        fits.then_some(cursor)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub status: Status,
    pub priorities: Vec<Priority>,
    pub tags: Vec<String>,
    pub q: Option<String>,
    pub due_before: Option<DateTime<Utc>>,
    pub due_after: Option<DateTime<Utc>>,
    pub overdue: bool,
    pub sort: Sort,
    pub limit: i64,
    pub cursor: Option<Cursor>,
}

fn invalid(name: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(
        "invalid_query",
        format!("query parameter {name}: {message}"),
    )
}

impl ListQuery {
    /// Parse a raw query string; repeated `priority` and `tag` accumulate.
    pub fn parse(query: &str) -> Result<ListQuery, ApiError> {
        let mut q = ListQuery {
            status: Status::Pending,
            priorities: Vec::new(),
            tags: Vec::new(),
            q: None,
            due_before: None,
            due_after: None,
            overdue: false,
            sort: Sort {
                key: SortKey::DueAt,
                descending: false,
            },
            limit: LIMIT_DEFAULT,
            cursor: None,
        };
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let value = value.trim();
            // PostgreSQL text cannot hold NUL: refuse it here rather than fail in the query.
            if value.contains('\0') {
                return Err(invalid(&name, "must not contain NUL characters"));
            }
            match name.as_ref() {
                "status" => {
                    q.status = match value {
                        "pending" => Status::Pending,
                        "completed" => Status::Completed,
                        "all" => Status::All,
                        _ => return Err(invalid("status", "expected pending, completed or all")),
                    }
                }
                "priority" => {
                    let p = Priority::parse(value).ok_or_else(|| {
                        invalid("priority", "expected none, low, medium, high or urgent")
                    })?;
                    if !q.priorities.contains(&p) {
                        q.priorities.push(p);
                    }
                }
                "tag" => {
                    let tag = tag_as_stored(value).map_err(|e| invalid("tag", e))?;
                    q.tags.push(tag.to_owned());
                }
                "q" => q.q = (!value.is_empty()).then(|| value.to_owned()),
                "due_before" => q.due_before = Some(parse_datetime(value).map_err(|e| invalid("due_before", e))?),
                "due_after" => q.due_after = Some(parse_datetime(value).map_err(|e| invalid("due_after", e))?),
                "overdue" => {
                    q.overdue = value
                        .parse()
                        .map_err(|_| invalid("overdue", "expected true or false"))?
                }
                "sort" => {
                    q.sort = Sort::parse(value).ok_or_else(|| {
                        invalid(
                            "sort",
                            "expected due_at, priority, created_at or title, optionally prefixed with -",
                        )
                    })?
                }
                "limit" => {
                    q.limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=LIMIT_MAX).contains(n))
                        .ok_or_else(|| invalid("limit", format!("expected 1 to {LIMIT_MAX}")))?
                }
                "cursor" => {
                    q.cursor = Some(
                        Cursor::decode(value).ok_or_else(|| invalid("cursor", "not a cursor from this API"))?,
                    )
                }
                other => return Err(invalid(other, "unknown parameter")),
            }
        }
        if let Some(c) = &q.cursor {
            if c.sort != q.sort.key || c.descending != q.sort.descending {
                return Err(invalid("cursor", "was made for another sort order"));
            }
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let q = ListQuery::parse("").unwrap();
        assert_eq!(q.status, Status::Pending);
        assert_eq!(q.limit, LIMIT_DEFAULT);
        assert_eq!(
            q.sort,
            Sort {
                key: SortKey::DueAt,
                descending: false
            }
        );
    }

    #[test]
    fn repeated_filters_accumulate() {
        let q = ListQuery::parse(
            "priority=high&priority=urgent&tag=a&tag=b%20c&sort=-priority&limit=200",
        )
        .unwrap();
        assert_eq!(q.priorities, vec![Priority::High, Priority::Urgent]);
        assert_eq!(q.tags, vec!["a", "b c"]);
        assert!(q.sort.descending);
        assert_eq!(q.limit, 200);
    }

    #[test]
    fn bad_values_are_rejected_with_their_name() {
        for bad in [
            "status=done",
            "priority=critical",
            "limit=0",
            "limit=201",
            "limit=x",
            "sort=colour",
            "due_before=yesterday",
            "overdue=maybe",
            "cursor=%%%",
            "cursor=bm9wZQ",
            "tag=",
            "tag=%20%09",
            "tag=abcdefghijklmnopqrstuvwxyz0123456",
            "tag=a%00",
            "q=%00",
            "page=2",
        ] {
            let err = ListQuery::parse(bad).unwrap_err().to_string();
            let name = bad.split('=').next().unwrap();
            assert!(err.contains(name), "{bad}: {err}");
        }
    }

    #[test]
    fn cursor_round_trips_and_is_bound_to_its_sort() {
        let c = Cursor {
            sort: SortKey::Title,
            descending: true,
            value: Some(SortValue::Text("b".into())),
            id: Uuid::now_v7(),
        };
        let q = ListQuery::parse(&format!("sort=-title&cursor={}", c.encode())).unwrap();
        assert_eq!(q.cursor, Some(c.clone()));
        assert!(ListQuery::parse(&format!("sort=title&cursor={}", c.encode())).is_err());
        let wrong_type = Cursor {
            sort: SortKey::Priority,
            ..c
        };
        assert!(
            ListQuery::parse(&format!("sort=-priority&cursor={}", wrong_type.encode())).is_err()
        );
        let nul = Cursor {
            sort: SortKey::Title,
            descending: false,
            value: Some(SortValue::Text("a\0b".into())),
            id: Uuid::now_v7(),
        };
        assert!(ListQuery::parse(&format!("sort=title&cursor={}", nul.encode())).is_err());
        let time = |raw: &str| Cursor {
            sort: SortKey::DueAt,
            descending: false,
            value: Some(SortValue::Time(raw.parse().unwrap())),
            id: Uuid::now_v7(),
        };
        // A due date of 0000-01-01T00:00:00+14:00 is -0001-12-31T10:00:00Z in UTC: still a cursor.
        assert!(ListQuery::parse(&format!(
            "cursor={}",
            time("-0001-12-31T10:00:00Z").encode()
        ))
        .is_ok());
        assert!(ListQuery::parse(&format!(
            "cursor={}",
            time("-5000-01-01T00:00:00Z").encode()
        ))
        .is_err());
    }
}
