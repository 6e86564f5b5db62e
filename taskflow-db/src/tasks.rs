//! The task store: the queries on `tasks` that the API and the recurrence worker share. Every
//! function takes the connection (or transaction) to run on.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
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

impl TaskRow {
    pub fn recurrence(&self) -> Option<Recurrence> {
        let value = self.recurrence.clone()?;
        serde_json::from_value(value)
            .map_err(
                |e| tracing::error!(task = %self.id, error = %e, "stored recurrence is unreadable"),
            )
            .ok()
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

pub async fn insert(conn: &mut AsyncPgConnection, row: &TaskRow) -> QueryResult<TaskRow> {
    diesel::insert_into(tasks::table)
        .values(row)
        .returning(TaskRow::as_returning())
        .get_result(conn)
        .await
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

/// Write every column of `row`.
pub async fn save(conn: &mut AsyncPgConnection, row: &TaskRow) -> QueryResult<TaskRow> {
    diesel::update(tasks::table.find(row.id))
        .set(row)
        .returning(TaskRow::as_returning())
        .prepared()
        .get_result(conn)
        .await
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
