//! The list query behind `GET /api/{user_id}/tasks`: filters, sort orders and keyset pagination.

use chrono::{DateTime, Utc};
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::QueryMetadata;
use diesel::pg::{Pg, PgValue};
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::row::{Field, Row};
use diesel::sql_types::{
    Array, BigInt, Bool, Integer, Nullable, SmallInt, SqlType, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel::QueryResult;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use fallible_iterator::FallibleIterator;
use serde::Deserialize;
use shared_events::recurrence::RecurrenceView;
use shared_events::Priority;
use taskflow_db::positional::{Positional, Typed};
use taskflow_db::prepared::Prepare;
use taskflow_db::tasks::{readable_recurrence, TaskRowSql, COLUMNS};
use uuid::Uuid;

use crate::domain::list_query::{Cursor, ListQuery, SortKey, SortValue, Status};
use crate::domain::task_view::TaskView;

/// About what one task takes in a page's JSON (544 bytes for the bench's tasks, with a one-line
/// description), so that writing it rarely grows the buffer.
const JSON_BYTES_PER_TASK: usize = 640;

/// A task of a page, already written as its [`TaskView`] JSON straight from the row's bytes:
/// decoded into a `TaskRow` first, every row cost about eight allocations (its strings and tags)
/// that the page only copied out again. Keeps what a cursor after it needs.
#[derive(Debug)]
pub struct Listed {
    pub json: Vec<u8>,
    pub id: Uuid,
    pub priority: i16,
    pub due_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// The result type of a page's statement: the SQL types of [`COLUMNS`] ([`TaskRowSql`]'s row
/// metadata), read only as [`Listed`]. A type of its own because diesel reads its tuple types
/// with blanket impls that a [`FromSqlRow`] of ours would overlap.
#[derive(Debug, SqlType)]
pub struct ListedSql;

impl QueryMetadata<ListedSql> for Pg {
    fn row_metadata(lookup: &mut Self::MetadataLookup, out: &mut Vec<Option<Self::TypeMetadata>>) {
        <Pg as QueryMetadata<TaskRowSql>>::row_metadata(lookup, out)
    }
}

impl FromSqlRow<ListedSql, Pg> for Listed {
    fn build_from_row<'a>(row: &impl Row<'a, Pg>) -> deserialize::Result<Self> {
        // Positions as in COLUMNS: id, user_id, title, description, completed, completed_at,
        // priority, tags, due_at, timezone, reminder_minutes_before, recurrence, series_id,
        // occurrence, version, created_at, updated_at.
        let fields: [_; 17] = std::array::from_fn(|i| row.get(i));
        if row.field_count() != fields.len() {
            return Err(format!("a task row has {} columns", row.field_count()).into());
        }
        let value = |i: usize| fields[i].as_ref().and_then(|f| f.value());
        let required = |i: usize| value(i).ok_or_else(|| format!("column {i} of a task is NULL"));
        let id = read::<SqlUuid, Uuid>(value(0))?;
        let priority = read::<SmallInt, i16>(value(6))?;
        let view = TaskView {
            id,
            user_id: text(required(1)?)?,
            title: text(required(2)?)?,
            description: value(3).map(text).transpose()?,
            completed: read::<Bool, _>(value(4))?,
            completed_at: read::<Nullable<Timestamptz>, _>(value(5))?,
            priority: Priority::from_rank(priority).unwrap_or(Priority::None),
            tags: tags(required(7)?)?,
            due_at: read::<Nullable<Timestamptz>, _>(value(8))?,
            timezone: text(required(9)?)?,
            reminder_minutes_before: read::<Nullable<Integer>, _>(value(10))?,
            recurrence: match value(11) {
                Some(v) => readable_recurrence(id, serde_json::from_slice(jsonb(v)?))
                    .map(RecurrenceView::from),
                None => None,
            },
            series_id: read::<SqlUuid, _>(value(12))?,
            occurrence: read::<Integer, _>(value(13))?,
            version: read::<BigInt, _>(value(14))?,
            created_at: read::<Timestamptz, _>(value(15))?,
            updated_at: read::<Timestamptz, _>(value(16))?,
        };
        Ok(Listed {
            json: task_json(&view)?,
            id,
            priority,
            due_at: view.due_at,
            created_at: view.created_at,
        })
    }
}

/// The task's JSON, through its `Serialize` as every response writes it, by sonic-rs, whose
/// string escaping handles 16 or 32 bytes at a time where serde_json's goes byte by byte (8 % of
/// the backend's CPU on a list page, about 8 µs a page). The same bytes as serde_json
/// (`tests::a_task_is_written_byte_for_byte_as_serde_json_writes_it`).
fn task_json(view: &TaskView) -> Result<Vec<u8>, sonic_rs::Error> {
    let mut json = Vec::with_capacity(JSON_BYTES_PER_TASK);
    sonic_rs::to_writer(&mut json, view)?;
    Ok(json)
}

/// A column as diesel reads it, NULL included.
fn read<ST, T: FromSql<ST, Pg>>(value: Option<PgValue<'_>>) -> deserialize::Result<T> {
    T::from_nullable_sql(value)
}

/// A text value, borrowed from the row.
fn text(value: PgValue<'_>) -> deserialize::Result<&str> {
    Ok(std::str::from_utf8(value.as_bytes())?)
}

/// A `text[]` value in PostgreSQL's binary array format, its elements borrowed from the row.
fn tags(value: PgValue<'_>) -> deserialize::Result<Vec<&str>> {
    let array = postgres_protocol::types::array_from_sql(value.as_bytes())?;
    array
        .values()
        .map(|tag| Ok(std::str::from_utf8(tag.ok_or("a NULL tag")?)?))
        .collect()
}

/// A `jsonb` value's JSON text (binary format 1: a version byte, then the text).
fn jsonb(value: PgValue<'_>) -> deserialize::Result<&[u8]> {
    match value.as_bytes().split_first() {
        Some((1, json)) => Ok(json),
        _ => Err("unsupported jsonb format version".into()),
    }
}

/// One page of the user's tasks: `limit + 1` rows, so the caller can tell whether more follow.
pub async fn list(
    conn: &mut AsyncPgConnection,
    user_id: &str,
    q: &ListQuery,
) -> QueryResult<Vec<Listed>> {
    if kept_prepared(q) {
        return plain_page(conn, user_id, q).await;
    }
    let query = statement(user_id, q);
    // The API's sessions plan generically (taskflow_db::pool::generic_plans); this page's best
    // plan depends on its values (how many of the user's tasks have that tag or word).
    conn.transaction(async |conn| {
        diesel::sql_query("SET LOCAL plan_cache_mode = force_custom_plan")
            .prepared()
            .execute(conn)
            .await?;
        query.load(conn).await
    })
    .await
}

/// [`list`] for a page that is [`kept_prepared`]: one statement, in no transaction and with no
/// setting of its own, so it can run on a connection that other pages share
/// ([`crate::read_pipeline`]).
pub async fn plain_page(
    conn: &AsyncPgConnection,
    user_id: &str,
    q: &ListQuery,
) -> QueryResult<Vec<Listed>> {
    debug_assert!(kept_prepared(q), "a filtered page as a plain one");
    statement(user_id, q).prepared().load(&mut &*conn).await
}

/// Whether the page's statement reads its rows straight from indexes, `limit + 1` for each
/// status it lists and no more, so that it may share a connection: [`kept_prepared`] and not
/// `overdue` (a filter that the index of another order cannot apply).
pub fn reads_only_the_page(q: &ListQuery) -> bool {
    kept_prepared(q) && !q.overdue
}

/// The page's statement with its values bound.
fn statement(
    user_id: &str,
    q: &ListQuery,
) -> Typed<BoxedSqlQuery<'static, Pg, SqlQuery>, ListedSql> {
    let mut query = diesel::sql_query(sql(q))
        .into_boxed::<Pg>()
        .bind::<Text, _>(user_id.to_owned());
    if !q.priorities.is_empty() {
        let ranks: Vec<i16> = q.priorities.iter().map(|p| p.rank()).collect();
        query = query.bind::<Array<SmallInt>, _>(ranks);
    }
    if !q.tags.is_empty() {
        query = query.bind::<Array<Text>, _>(q.tags.clone());
    }
    if let Some(text) = &q.q {
        query = query.bind::<Text, _>(text.clone());
    }
    if let Some(t) = q.due_before {
        query = query.bind::<Timestamptz, _>(t);
    }
    if let Some(t) = q.due_after {
        query = query.bind::<Timestamptz, _>(t);
    }
    if let Some(Cursor { value, id, .. }) = &q.cursor {
        query = match value {
            Some(SortValue::Time(t)) => query.bind::<Timestamptz, _>(*t),
            Some(SortValue::Rank(r)) => query.bind::<SmallInt, _>(*r),
            Some(SortValue::Text(s)) => query.bind::<Text, _>(s.clone()),
            // Only due_at has NULLs; the key expression maps this one past the end too.
            None => query.bind::<Nullable<Timestamptz>, _>(None::<chrono::DateTime<chrono::Utc>>),
        };
        query = query.bind::<SqlUuid, _>(*id);
    }
    query
        .bind::<BigInt, _>(q.limit + 1)
        .positional::<ListedSql>()
}

/// Whether the page's statement stays prepared on the connection: only without the filters that
/// take values, so a connection keeps at most 96 list statements (3 statuses, overdue or not, 8
/// orders, first page or later) however the filters are combined; a filtered page is parsed and
/// planned each time, as is the search, which the planner should see with its words.
pub fn kept_prepared(q: &ListQuery) -> bool {
    q.priorities.is_empty()
        && q.tags.is_empty()
        && q.q.is_none()
        && q.due_before.is_none()
        && q.due_after.is_none()
}

/// The page's SQL with numbered placeholders, which its statement binds in this order: the
/// user, each filter present, the cursor's value and id, and the row limit (the bench runs it in
/// pgbench).
pub fn sql(q: &ListQuery) -> String {
    // What follows `user_id = $1` and the status, up to the LIMIT.
    let mut sql = String::new();
    let mut n = 1;
    // Placeholders are numbered in the order of the binds in `statement`; keep both in step.
    if !q.priorities.is_empty() {
        placeholder(&mut sql, &mut n, " AND priority = ANY(?)");
    }
    if !q.tags.is_empty() {
        placeholder(&mut sql, &mut n, " AND tags @> ?");
    }
    if q.q.is_some() {
        placeholder(
            &mut sql,
            &mut n,
            " AND search @@ websearch_to_tsquery('english', ?)",
        );
    }
    if q.due_before.is_some() {
        placeholder(&mut sql, &mut n, " AND due_at < ?");
    }
    if q.due_after.is_some() {
        placeholder(&mut sql, &mut n, " AND due_at > ?");
    }
    if q.overdue {
        sql.push_str(" AND due_at < now() AND NOT completed");
    }
    // The sort key exactly as the indexes of migration 2026-12-01 spell it, so that every order
    // is an index scan (descending ones backwards) that reads only the page. due_at maps NULL past
    // the end in the sort's direction: undated tasks come last both ways.
    let key = |operand: &str| match (q.sort.key, q.sort.descending) {
        (SortKey::DueAt, false) => format!("coalesce({operand}, 'infinity'::timestamptz)"),
        (SortKey::DueAt, true) => format!("coalesce({operand}, '-infinity'::timestamptz)"),
        _ => operand.to_owned(),
    };
    let column = key(match q.sort.key {
        SortKey::DueAt => "due_at",
        SortKey::Priority => "priority",
        SortKey::CreatedAt => "created_at",
        SortKey::Title => "title",
    });
    let (dir, cmp) = if q.sort.descending {
        ("DESC", "<")
    } else {
        ("ASC", ">")
    };
    // Keyset: rows after (value, id) in ORDER BY key dir, id dir; a row comparison is an index
    // condition, so a deep page starts at its place in the index instead of filtering up to it.
    if q.cursor.is_some() {
        let v = format!("${}", n + 1);
        let id = n + 2;
        n += 2;
        sql.push_str(&format!(" AND ({column}, id) {cmp} ({}, ${id})", key(&v)));
    }
    sql.push_str(&format!(" ORDER BY {column} {dir}, id {dir}"));
    placeholder(&mut sql, &mut n, " LIMIT ?");
    let half = |columns: &str, status: &str| {
        format!("SELECT {columns} FROM tasks WHERE user_id = $1{status}{sql}")
    };
    match q.status {
        Status::Pending => half(COLUMNS, " AND NOT completed"),
        Status::Completed => half(COLUMNS, " AND completed"),
        // The indexes lead with `completed`: one scan over both would sort all the user's tasks,
        // while a scan of each half, merged in order, reads at most two pages. The halves hand
        // up their sort key, which the merge can only match as a column of theirs.
        Status::All => {
            let columns = format!("{COLUMNS}, {column} AS sort_key");
            format!(
                "SELECT {COLUMNS} FROM (({}) UNION ALL ({})) page \
                 ORDER BY sort_key {dir}, id {dir} LIMIT ${n}",
                half(&columns, " AND NOT completed"),
                half(&columns, " AND completed")
            )
        }
    }
}

/// Append `fragment` with its `?` replaced by the next numbered placeholder.
fn placeholder(sql: &mut String, n: &mut usize, fragment: &str) {
    *n += 1;
    sql.push_str(&fragment.replace('?', &format!("${n}")));
}

/// The cursor that continues after `task` in the query's order.
pub fn cursor_after(q: &ListQuery, task: &Listed) -> Result<Cursor, serde_json::Error> {
    /// The one field a title cursor needs, read back from the task's JSON (once a page).
    #[derive(Deserialize)]
    struct Title {
        title: String,
    }
    let value = match q.sort.key {
        SortKey::DueAt => task.due_at.map(SortValue::Time),
        SortKey::CreatedAt => Some(SortValue::Time(task.created_at)),
        SortKey::Priority => Some(SortValue::Rank(task.priority)),
        SortKey::Title => Some(SortValue::Text(
            serde_json::from_slice::<Title>(&task.json)?.title,
        )),
    };
    Ok(Cursor {
        sort: q.sort.key,
        descending: q.sort.descending,
        value,
        id: task.id,
    })
}

/// The page's JSON, as [`crate::routes::tasks::TaskPage`] describes it.
pub fn page_json(tasks: &[Listed], next_cursor: Option<&str>) -> serde_json::Result<Vec<u8>> {
    let mut body = Vec::with_capacity(JSON_BYTES_PER_TASK * (tasks.len() + 1));
    body.extend_from_slice(b"{\"items\":[");
    for (i, task) in tasks.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&task.json);
    }
    body.extend_from_slice(b"],\"next_cursor\":");
    serde_json::to_writer(&mut body, &next_cursor)?;
    body.push(b'}');
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_events::recurrence::{Recurrence, RecurrenceInput};

    #[test]
    fn a_task_is_written_byte_for_byte_as_serde_json_writes_it() {
        let tricky = "quote \" backslash \\ tab \t newline \n\r \u{1} \u{1f} \u{7f} \u{8} \u{c} é 漢字 😀 \u{2028} </script> / end";
        let recurrence = Recurrence::parse(
            &RecurrenceInput::Shorthand("weekdays".into()),
            Some(
                "2026-12-07T09:00:00Z"
                    .parse::<DateTime<Utc>>()
                    .unwrap()
                    .with_timezone(&chrono_tz::Europe::Berlin),
            ),
        )
        .unwrap();
        let at: DateTime<Utc> = "2026-12-07T09:00:00.123456Z".parse().unwrap();
        for (description, recurrence) in [(Some(tricky), Some(recurrence)), (None, None)] {
            let view = TaskView {
                id: Uuid::now_v7(),
                user_id: "user \"x\"",
                title: tricky,
                description,
                completed: true,
                completed_at: Some(at),
                priority: Priority::Urgent,
                tags: vec![tricky, "", "plain"],
                due_at: None,
                timezone: "Europe/Berlin",
                reminder_minutes_before: Some(-1),
                recurrence: recurrence.map(RecurrenceView::from),
                series_id: Uuid::nil(),
                occurrence: i32::MAX,
                version: i64::MIN,
                created_at: at,
                updated_at: at,
            };
            let ours = task_json(&view).unwrap();
            let serde = serde_json::to_vec(&view).unwrap();
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                String::from_utf8(serde).unwrap()
            );
        }
    }
}
