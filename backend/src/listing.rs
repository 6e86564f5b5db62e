//! The list query behind `GET /api/{user_id}/tasks`: filters, sort orders and keyset pagination.

use diesel::pg::Pg;
use diesel::sql_types::{Array, BigInt, Nullable, SmallInt, Text, Timestamptz, Uuid as SqlUuid};
use diesel::QueryResult;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use taskflow_db::positional::Positional;
use taskflow_db::prepared::Prepare;
use taskflow_db::tasks::{TaskRow, TaskRowSql, COLUMNS};

use crate::domain::list_query::{Cursor, ListQuery, SortKey, SortValue, Status};

/// One page of the user's tasks: `limit + 1` rows, so the caller can tell whether more follow.
pub async fn list(
    conn: &mut AsyncPgConnection,
    user_id: &str,
    q: &ListQuery,
) -> QueryResult<Vec<TaskRow>> {
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
    let query = query
        .bind::<BigInt, _>(q.limit + 1)
        .positional::<TaskRowSql>();
    if kept_prepared(q) {
        return query.prepared().load(conn).await;
    }
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

/// The page's SQL with numbered placeholders, which [`list`] binds in this order: the user, each
/// filter present, the cursor's value and id, and the row limit (the bench runs it in pgbench).
pub fn sql(q: &ListQuery) -> String {
    let mut sql = format!("SELECT {COLUMNS} FROM tasks WHERE user_id = $1");
    let mut n = 1;
    // Placeholders are numbered in the order of the binds below; keep both lists in step.
    match q.status {
        Status::Pending => sql.push_str(" AND NOT completed"),
        Status::Completed => sql.push_str(" AND completed"),
        Status::All => {}
    }
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
    sql
}

/// Append `fragment` with its `?` replaced by the next numbered placeholder.
fn placeholder(sql: &mut String, n: &mut usize, fragment: &str) {
    *n += 1;
    sql.push_str(&fragment.replace('?', &format!("${n}")));
}

/// The cursor that continues after `row` in the query's order.
pub fn cursor_after(q: &ListQuery, row: &TaskRow) -> Cursor {
    let value = match q.sort.key {
        SortKey::DueAt => row.due_at.map(SortValue::Time),
        SortKey::CreatedAt => Some(SortValue::Time(row.created_at)),
        SortKey::Priority => Some(SortValue::Rank(row.priority)),
        SortKey::Title => Some(SortValue::Text(row.title.clone())),
    };
    Cursor {
        sort: q.sort.key,
        descending: q.sort.descending,
        value,
        id: row.id,
    }
}
