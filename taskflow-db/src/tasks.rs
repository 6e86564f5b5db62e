//! The task store: the queries on `tasks` that the API and the recurrence worker share. Every
//! function takes the connection (or transaction) to run on.

use chrono::{DateTime, TimeDelta, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::QueryFragment;
use diesel::sql_types::{Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Deserialize;
use shared_events::recurrence::Recurrence;
use shared_events::{Priority, TaskSnapshot};
use uuid::Uuid;

use crate::prepared::Prepare;
use crate::schema::tasks;

/// The columns of [`TaskRow`] for raw SQL (never `*`: the `search` tsvector stays in the database).
pub const COLUMNS: &str =
    "id, user_id, title, description, completed, completed_at, priority, tags, \
    due_at, timezone, reminder_minutes_before, recurrence, series_id, occurrence, version, \
    created_at, updated_at";

/// The SQL types of [`COLUMNS`], to read them by position
/// ([`crate::positional::Positional::positional`]).
pub type TaskRowSql = diesel::dsl::SqlTypeOf<diesel::dsl::AsSelect<TaskRow, Pg>>;

/// A row of `tasks`. `None` is inserted as NULL, never as `DEFAULT` (no nullable column has a
/// default), so every insert has the same text and diesel caches its prepared statement.
#[derive(
    Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable, Insertable, AsChangeset,
)]
#[diesel(
    table_name = tasks,
    check_for_backend(Pg),
    treat_none_as_null = true,
    treat_none_as_default_value = false
)]
pub struct TaskRow {
    pub id: Uuid,
    pub user_id: String,
    pub title: String,
    pub description: Option<String>,
    pub completed: bool,
    pub completed_at: Option<DateTime<Utc>>,
    pub priority: i16,
    pub tags: Vec<String>,
    pub due_at: Option<DateTime<Utc>>,
    pub timezone: String,
    pub reminder_minutes_before: Option<i32>,
    pub recurrence: Option<serde_json::Value>,
    pub series_id: Uuid,
    pub occurrence: i32,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A task's stored recurrence as read, or `None` with the error logged: a task whose rule cannot
/// be read is still shown and edited, as a task without one.
pub fn readable_recurrence(
    task: Uuid,
    read: Result<Recurrence, serde_json::Error>,
) -> Option<Recurrence> {
    read.map_err(|e| tracing::error!(%task, error = %e, "stored recurrence is unreadable"))
        .ok()
}

impl TaskRow {
    pub fn recurrence(&self) -> Option<Recurrence> {
        // From the borrowed value: no copy of the JSON tree per read.
        readable_recurrence(self.id, Recurrence::deserialize(self.recurrence.as_ref()?))
    }

    pub fn snapshot(&self) -> TaskSnapshot {
        TaskSnapshot {
            id: self.id,
            user_id: self.user_id.clone(),
            title: self.title.clone(),
            description: self.description.clone(),
            completed: self.completed,
            completed_at: self.completed_at,
            priority: Priority::from_rank(self.priority).unwrap_or(Priority::None),
            tags: self.tags.clone(),
            due_at: self.due_at,
            timezone: self.timezone.clone(),
            reminder_minutes_before: self.reminder_minutes_before,
            recurrence: self.recurrence(),
            series_id: self.series_id,
            occurrence: self.occurrence,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    /// The row as PostgreSQL will store and return it: its times in whole microseconds, cut toward
    /// 2000-01-01 as diesel binds them. A row built here and written without `RETURNING` then
    /// equals what a later read gives, to the microsecond.
    pub fn as_stored(mut self) -> TaskRow {
        for at in [&mut self.created_at, &mut self.updated_at] {
            *at = stored(*at);
        }
        for at in [&mut self.completed_at, &mut self.due_at]
            .into_iter()
            .flatten()
        {
            *at = stored(*at);
        }
        self
    }

    /// The occurrence that follows this one in its series, due at `due_at`: the same content,
    /// zone, reminder offset and series recurrence, a new id, the next number, pending.
    pub fn next_occurrence(&self, due_at: DateTime<Utc>, now: DateTime<Utc>) -> TaskRow {
        TaskRow {
            id: Uuid::now_v7(),
            completed: false,
            completed_at: None,
            due_at: Some(due_at),
            occurrence: self.occurrence + 1,
            version: 1,
            created_at: now,
            updated_at: now,
            ..self.clone()
        }
    }
}

/// `at` at PostgreSQL's precision (see [`TaskRow::as_stored`]).
fn stored(at: DateTime<Utc>) -> DateTime<Utc> {
    // diesel binds a timestamp as `(at - 2000-01-01).num_microseconds()`.
    let epoch = DateTime::<Utc>::from_timestamp(946_684_800, 0).unwrap_or_default();
    (at - epoch)
        .num_microseconds()
        .map_or(at, |micros| epoch + TimeDelta::microseconds(micros))
}

/// Insert an occurrence unless its series already has one with that number (the unique
/// `(series_id, occurrence)` guard): None when it did.
pub async fn insert_occurrence(
    conn: &mut AsyncPgConnection,
    row: &TaskRow,
) -> QueryResult<Option<TaskRow>> {
    diesel::insert_into(tasks::table)
        .values(row)
        .on_conflict((tasks::series_id, tasks::occurrence))
        .do_nothing()
        .returning(TaskRow::as_returning())
        .get_result(conn)
        .await
        .optional()
}

/// The INSERT of `rows`, to run with their events as one statement
/// ([`crate::outbox::write_with_task_changes`]); each must be [`TaskRow::as_stored`], since
/// nothing is read back.
pub fn insert_statement(rows: &[TaskRow]) -> impl QueryFragment<Pg> + Send + '_ {
    diesel::insert_into(tasks::table).values(rows)
}

/// The user's task, optionally locked for the rest of the transaction.
pub async fn find(
    conn: &mut AsyncPgConnection,
    user_id: &str,
    id: Uuid,
    for_update: bool,
) -> QueryResult<Option<TaskRow>> {
    let query = tasks::table
        .filter(tasks::id.eq(id))
        .filter(tasks::user_id.eq(user_id))
        .select(TaskRow::as_select());
    if for_update {
        query.for_update().first(conn).await.optional()
    } else {
        query.first(conn).await.optional()
    }
}

/// The UPDATE of every column of `row`, to run with its events as one statement
/// ([`crate::outbox::write_with_task_changes`]); `row` must be [`TaskRow::as_stored`].
pub fn save_statement(row: &TaskRow) -> impl QueryFragment<Pg> + Send + '_ {
    diesel::update(tasks::table.find(row.id)).set(row)
}

/// [`save_statement`] over the version the row was read at ([`crate::cte::with_write_if`]): it
/// writes nothing when the task has changed or gone since, and returns the id when it writes.
pub fn save_over_statement(row: &TaskRow, read_version: i64) -> impl QueryFragment<Pg> + Send + '_ {
    diesel::update(
        tasks::table
            .find(row.id)
            .filter(tasks::version.eq(read_version)),
    )
    .set(row)
    .returning(tasks::id)
}

pub async fn delete(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<usize> {
    diesel::delete(tasks::table.find(id)).execute(conn).await
}

/// Lock every occurrence of a series, in id order, for the rest of the transaction.
pub async fn lock_series(
    conn: &mut AsyncPgConnection,
    user_id: &str,
    series_id: Uuid,
) -> QueryResult<usize> {
    tasks::table
        .filter(tasks::user_id.eq(user_id))
        .filter(tasks::series_id.eq(series_id))
        .order(tasks::id)
        .select(tasks::id)
        .for_update()
        .load::<Uuid>(conn)
        .await
        .map(|ids| ids.len())
}

/// Set `recurrence.active = false` on every still-active occurrence of the series.
pub async fn deactivate_series(
    conn: &mut AsyncPgConnection,
    user_id: &str,
    series_id: Uuid,
    now: DateTime<Utc>,
) -> QueryResult<Vec<TaskRow>> {
    diesel::sql_query(format!(
        "UPDATE tasks SET recurrence = jsonb_set(recurrence, '{{active}}', 'false'), \
             version = version + 1, updated_at = $3 \
         WHERE user_id = $1 AND series_id = $2 AND recurrence IS NOT NULL \
           AND (recurrence->>'active')::boolean IS DISTINCT FROM false \
         RETURNING {COLUMNS}"
    ))
    .bind::<Text, _>(user_id)
    .bind::<SqlUuid, _>(series_id)
    .bind::<Timestamptz, _>(now)
    .prepared()
    .load(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::{stored, TaskRow, COLUMNS};
    use crate::schema::tasks;
    use chrono::{DateTime, Utc};
    use diesel::pg::Pg;
    use diesel::{QueryDsl, SelectableHelper};

    /// Raw SQL selecting [`COLUMNS`] is read by position as a [`TaskRow`].
    #[test]
    fn columns_are_the_rows_fields_in_order() {
        let select =
            diesel::debug_query::<Pg, _>(&tasks::table.select(TaskRow::as_select())).to_string();
        let list = select
            .strip_prefix("SELECT ")
            .and_then(|s| s.split(" FROM ").next())
            .unwrap_or_default();
        let fields: Vec<&str> = list
            .split(", ")
            .map(|c| c.trim_start_matches("\"tasks\".").trim_matches('"'))
            .collect();
        let columns: Vec<&str> = COLUMNS.split(',').map(str::trim).collect();
        assert_eq!(fields, columns, "{select}");
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// Whole microseconds, cut toward 2000-01-01 on both sides of it, as diesel binds them.
    #[test]
    fn stored_times_are_cut_to_microseconds_toward_2000() {
        for (given, kept) in [
            (
                "2031-05-05T05:05:05.1234567Z",
                "2031-05-05T05:05:05.123456Z",
            ),
            ("1999-12-31T23:59:59.9999995Z", "2000-01-01T00:00:00Z"),
            (
                "1970-01-01T00:00:00.0000019Z",
                "1970-01-01T00:00:00.000002Z",
            ),
            ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
            ("2026-12-05T10:00:00.5Z", "2026-12-05T10:00:00.5Z"),
        ] {
            assert_eq!(stored(at(given)), at(kept), "{given}");
        }
    }
}
