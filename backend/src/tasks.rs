//! Task use cases. Each bumps the version, keeps the task's reminder in line and records the
//! event in the outbox, so a change, its reminder and its event commit together: in the caller's
//! transaction with what it changes locked, or as one statement ([`create`] without a reminder,
//! [`edit_in_one_statement`]).

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use diesel::pg::Pg;
use diesel::query_builder::QueryFragment;
use diesel_async::AsyncPgConnection;
use shared_events::{Priority, TaskEventType, TaskSnapshot};
use uuid::Uuid;

use crate::domain::task::{TaskFields, TaskPatch};
use crate::error::ApiError;
use taskflow_db::tasks::{self as store, TaskRow};
use taskflow_db::{outbox, reminders};

/// What `If-Match` demands of the stored version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    Any,
    Version(i64),
}

impl Precondition {
    /// Parse an `If-Match` header: `3`, `"3"`, `W/"3"` or `*`, up to 18 digits (as the OpenAPI document says).
    pub fn parse(header: Option<&str>) -> Result<Precondition, ApiError> {
        let Some(raw) = header.map(str::trim) else {
            return Ok(Precondition::Any);
        };
        if raw == "*" {
            return Ok(Precondition::Any);
        }
        let tag = raw.strip_prefix("W/").unwrap_or(raw);
        let bare = tag
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(if tag.len() == raw.len() { raw } else { "" });
        if (1..=18).contains(&bare.len()) && bare.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(version) = bare.parse() {
                return Ok(Precondition::Version(version));
            }
        }
        Err(ApiError::bad_request(
            "invalid_header",
            format!("If-Match {raw:?} is not *, a task version or its ETag"),
        ))
    }

    fn check(self, current: i64) -> Result<(), ApiError> {
        match self {
            Precondition::Version(v) if v != current => Err(ApiError::PreconditionFailed {
                expected: v.to_string(),
                current,
            }),
            _ => Ok(()),
        }
    }
}

/// Per-request context every change carries into its event.
pub struct Change<'a> {
    pub user_id: &'a str,
    pub traceparent: Option<&'a str>,
    pub now: DateTime<Utc>,
}

impl<'c> Change<'c> {
    /// What the outbox records of this change of `task`.
    fn recorded<'a>(
        &self,
        event_type: TaskEventType,
        task: &'a TaskSnapshot,
    ) -> outbox::TaskChange<'a>
    where
        'c: 'a,
    {
        outbox::TaskChange {
            event_type,
            task,
            traceparent: self.traceparent,
            now: self.now,
        }
    }
}

const NOT_FOUND: ApiError = ApiError::NotFound("no such task");

fn fields_of(row: &TaskRow) -> TaskFields {
    TaskFields {
        title: row.title.clone(),
        description: row.description.clone(),
        completed: row.completed,
        priority: Priority::from_rank(row.priority).unwrap_or(Priority::None),
        tags: row.tags.clone(),
        due_at: row.due_at,
        timezone: row.timezone.parse().unwrap_or(Tz::UTC),
        reminder_minutes_before: row.reminder_minutes_before,
        recurrence: row.recurrence(),
    }
}

/// Copy `fields` onto `row`, keeping `completed_at` consistent with `completed`.
fn write_fields(row: &mut TaskRow, fields: TaskFields, now: DateTime<Utc>) {
    row.completed_at = match (row.completed, fields.completed) {
        (false, true) => Some(now),
        (_, false) => None,
        (true, true) => row.completed_at,
    };
    row.title = fields.title;
    row.description = fields.description;
    row.completed = fields.completed;
    row.priority = fields.priority.rank();
    row.tags = fields.tags;
    row.due_at = fields.due_at;
    row.timezone = fields.timezone.name().to_owned();
    row.reminder_minutes_before = fields.reminder_minutes_before;
    row.recurrence = fields.recurrence.and_then(|r| serde_json::to_value(r).ok());
}

async fn record(
    conn: &mut AsyncPgConnection,
    ctx: &Change<'_>,
    event: TaskEventType,
    row: &TaskRow,
) -> Result<(), ApiError> {
    outbox::record_task_change(conn, event, &row.snapshot(), ctx.traceparent, ctx.now).await?;
    Ok(())
}

/// [`record`] joined with `write`, the statement that makes the change: one statement.
async fn write_and_record(
    conn: &mut AsyncPgConnection,
    ctx: &Change<'_>,
    write: impl QueryFragment<Pg> + Send,
    event: TaskEventType,
    row: &TaskRow,
) -> Result<(), ApiError> {
    let (rows, contexts) = (std::slice::from_ref(row), std::slice::from_ref(ctx));
    write_and_record_all(conn, write, event, rows, contexts, None).await
}

/// [`write_and_record`] for several tasks, `contexts[i]` the change of `rows[i]`; the events
/// are offered to `handoff` first.
async fn write_and_record_all(
    conn: &mut AsyncPgConnection,
    write: impl QueryFragment<Pg> + Send,
    event: TaskEventType,
    rows: &[TaskRow],
    contexts: &[Change<'_>],
    handoff: Option<&dyn outbox::Handoff>,
) -> Result<(), ApiError> {
    let snapshots: Vec<_> = rows.iter().map(TaskRow::snapshot).collect();
    let changes: Vec<_> = snapshots
        .iter()
        .zip(contexts)
        .map(|(task, ctx)| ctx.recorded(event, task))
        .collect();
    outbox::write_with_task_changes(conn, write, &changes, handoff).await?;
    Ok(())
}

/// A task about to be created, built and checked before any I/O.
pub struct NewTask(TaskRow);

impl NewTask {
    pub fn new(ctx: &Change<'_>, fields: TaskFields) -> NewTask {
        let id = Uuid::now_v7();
        let mut row = TaskRow {
            id,
            user_id: ctx.user_id.to_owned(),
            title: String::new(),
            description: None,
            completed: false,
            completed_at: None,
            priority: 0,
            tags: Vec::new(),
            due_at: None,
            timezone: String::new(),
            reminder_minutes_before: None,
            recurrence: None,
            series_id: id,
            occurrence: 1,
            version: 1,
            created_at: ctx.now,
            updated_at: ctx.now,
        };
        write_fields(&mut row, fields, ctx.now);
        // Nothing is read back after the insert: the response and the event are this row.
        NewTask(row.as_stored())
    }

    /// Whether [`create`] is a single statement (no reminder to schedule), which is atomic
    /// without a transaction of its own and can be written with others ([`insert_created`]).
    pub fn is_one_statement(&self) -> bool {
        !reminders::wanted_for(&self.0)
    }

    /// The row to write, for a caller that writes it with others ([`insert_created`]).
    pub fn into_row(self) -> TaskRow {
        self.0
    }
}

/// Insert the task with its `created` event (one statement), then its reminder if it wants one.
pub async fn create(
    conn: &mut AsyncPgConnection,
    ctx: &Change<'_>,
    NewTask(row): NewTask,
) -> Result<TaskRow, ApiError> {
    let (rows, contexts) = (std::slice::from_ref(&row), std::slice::from_ref(ctx));
    insert_created(conn, rows, contexts, None).await?;
    reminders::schedule_for_new_task(conn, &row).await?;
    Ok(row)
}

/// New tasks (each from [`NewTask::into_row`]) and their `created` events, one statement however
/// many; `contexts[i]` is the request of `rows[i]`. Reminders are not scheduled here. The events
/// are offered to `handoff` first.
pub async fn insert_created(
    conn: &mut AsyncPgConnection,
    rows: &[TaskRow],
    contexts: &[Change<'_>],
    handoff: Option<&dyn outbox::Handoff>,
) -> Result<(), ApiError> {
    let insert = store::insert_statement(rows);
    write_and_record_all(
        conn,
        insert,
        TaskEventType::Created,
        rows,
        contexts,
        handoff,
    )
    .await
}

/// How a change request describes the new state.
#[derive(Clone)]
pub enum Edit {
    Replace(TaskFields),
    Patch(TaskPatch),
    Complete,
}

/// What an edit makes of the task as read.
enum Edited {
    Unchanged(TaskRow),
    Changed {
        row: TaskRow,
        event: TaskEventType,
        /// The version the edit was applied to.
        read_version: i64,
    },
}

/// Apply `edit` to `row` as read; no I/O.
fn apply(
    mut row: TaskRow,
    ctx: &Change<'_>,
    precondition: Precondition,
    edit: Edit,
) -> Result<Edited, ApiError> {
    precondition.check(row.version)?;
    let current = fields_of(&row);
    let next = match edit {
        Edit::Replace(fields) => fields,
        Edit::Patch(patch) => current.apply(patch)?,
        Edit::Complete => TaskFields {
            completed: true,
            ..current.clone()
        },
    };
    if next == current {
        return Ok(Edited::Unchanged(row));
    }
    let event = if !current.completed && next.completed {
        TaskEventType::Completed
    } else {
        TaskEventType::Updated
    };
    let read_version = row.version;
    write_fields(&mut row, next, ctx.now);
    row.version += 1;
    row.updated_at = ctx.now;
    // Nothing is read back: the response and the event are this row.
    Ok(Edited::Changed {
        row: row.as_stored(),
        event,
        read_version,
    })
}

/// Apply an edit in the caller's transaction, the task locked. An edit that changes nothing
/// writes nothing and emits nothing.
pub async fn edit(
    conn: &mut AsyncPgConnection,
    ctx: &Change<'_>,
    id: Uuid,
    precondition: Precondition,
    edit: Edit,
) -> Result<TaskRow, ApiError> {
    let row = store::find(conn, ctx.user_id, id, true)
        .await?
        .ok_or(NOT_FOUND)?;
    match apply(row, ctx, precondition, edit)? {
        Edited::Unchanged(row) => Ok(row),
        Edited::Changed { row, event, .. } => {
            write_and_record(conn, ctx, store::save_statement(&row), event, &row).await?;
            reminders::sync_for_task(conn, &row).await?;
            Ok(row)
        }
    }
}

/// [`edit`] with no transaction, when it is one statement: the task is read without a lock and
/// written over the version read, with its events and the cancellation of a pending reminder,
/// all or nothing. So no transaction stays open while this process computes the change (under
/// load the locking path's sessions waited idle in transaction for it most of their time).
/// None when it cannot be: the task wants a reminder after the edit (scheduling or moving one
/// takes several statements), or it changed between the read and the write. Then run [`edit`].
pub async fn edit_in_one_statement(
    conn: &mut AsyncPgConnection,
    ctx: &Change<'_>,
    id: Uuid,
    precondition: Precondition,
    edit: Edit,
) -> Result<Option<TaskRow>, ApiError> {
    let row = store::find(conn, ctx.user_id, id, false)
        .await?
        .ok_or(NOT_FOUND)?;
    let (row, event, read_version) = match apply(row, ctx, precondition, edit)? {
        Edited::Unchanged(row) => return Ok(Some(row)),
        Edited::Changed { row, .. } if reminders::wanted_for(&row) => return Ok(None),
        Edited::Changed {
            row,
            event,
            read_version,
        } => (row, event, read_version),
    };
    let snapshot = row.snapshot();
    let change = ctx.recorded(event, &snapshot);
    let wrote = outbox::write_if_with_task_changes(
        conn,
        store::save_over_statement(&row, read_version),
        reminders::cancel_for_task_if_written(row.id),
        std::slice::from_ref(&change),
    )
    .await?;
    Ok(wrote.then_some(row))
}

pub async fn delete(
    conn: &mut AsyncPgConnection,
    ctx: &Change<'_>,
    id: Uuid,
    precondition: Precondition,
) -> Result<(), ApiError> {
    let series_id = store::find(conn, ctx.user_id, id, false)
        .await?
        .ok_or(NOT_FOUND)?
        .series_id;
    // In id order, like every writer of a whole series (see cancel_recurrence).
    store::lock_series(conn, ctx.user_id, series_id).await?;
    let mut row = store::find(conn, ctx.user_id, id, false)
        .await?
        .ok_or(NOT_FOUND)?;
    precondition.check(row.version)?;
    // Deleting the pending occurrence of an active series ends the series: no completion can
    // come any more, and a replayed old one must not bring the occurrence back.
    if !row.completed && row.recurrence().is_some_and(|r| r.active) {
        for task in store::deactivate_series(conn, ctx.user_id, series_id, ctx.now).await? {
            if task.id != id {
                record(conn, ctx, TaskEventType::RecurrenceCancelled, &task).await?;
            }
        }
    }
    store::delete(conn, id).await?;
    reminders::cancel_for_task(conn, id).await?;
    // The last snapshot, as of its deletion.
    row.version += 1;
    row.updated_at = ctx.now;
    record(conn, ctx, TaskEventType::Deleted, &row).await
}

/// Stop the whole series from recurring; returns the task as it is now.
pub async fn cancel_recurrence(
    conn: &mut AsyncPgConnection,
    ctx: &Change<'_>,
    id: Uuid,
) -> Result<TaskRow, ApiError> {
    let series_id = store::find(conn, ctx.user_id, id, false)
        .await?
        .ok_or(NOT_FOUND)?
        .series_id;
    // Lock the whole series in id order before changing any of it: two cancels (or a cancel and
    // an edit) on different occurrences then queue instead of deadlocking.
    store::lock_series(conn, ctx.user_id, series_id).await?;
    let row = store::find(conn, ctx.user_id, id, false)
        .await?
        .ok_or(NOT_FOUND)?;
    if row.recurrence.is_none() {
        // The task exists but is in no state to cancel: a conflict, not a bad request.
        return Err(ApiError::Conflict {
            code: "not_recurring",
            message: "the task does not recur".into(),
        });
    }
    let changed = store::deactivate_series(conn, ctx.user_id, row.series_id, ctx.now).await?;
    let mut result = row;
    for task in changed {
        record(conn, ctx, TaskEventType::RecurrenceCancelled, &task).await?;
        if task.id == id {
            result = task;
        }
    }
    Ok(result)
}

#[cfg(test)]
mod precondition_tests {
    use super::Precondition;

    /// Exactly what the document's If-Match pattern admits, nothing more.
    #[test]
    fn if_match_is_star_a_version_or_its_etag() {
        for (raw, expected) in [
            ("*", Precondition::Any),
            ("3", Precondition::Version(3)),
            ("\"3\"", Precondition::Version(3)),
            ("W/\"12\"", Precondition::Version(12)),
            (" 7 ", Precondition::Version(7)),
            (
                "999999999999999999",
                Precondition::Version(999_999_999_999_999_999),
            ),
        ] {
            assert_eq!(Precondition::parse(Some(raw)).unwrap(), expected, "{raw}");
        }
        for bad in [
            "null",
            "./F",
            "",
            "-1",
            "+1",
            "W/3",
            "\"3",
            "3\"",
            "\"\"3\"\"",
            "W/W/\"3\"",
            "1234567890123456789",
        ] {
            assert!(Precondition::parse(Some(bad)).is_err(), "{bad:?}");
        }
        assert_eq!(Precondition::parse(None).unwrap(), Precondition::Any);
    }
}
