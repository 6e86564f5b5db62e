//! Reminders of tasks. Every writer of a task calls [`sync_for_task`] in the transaction of its
//! change (one that has just inserted the task, [`schedule_for_new_task`]), so a task with
//! `due_at` and `reminder_minutes_before` has exactly one pending reminder at
//! `due_at - reminder_minutes_before`, and scheduling one queues a [`FIRE_JOB`] at its time.
//! Firing ([`fire_due`]) claims due reminders with `FOR UPDATE SKIP LOCKED`, marks them fired and
//! writes their `reminder.due` events in one transaction: one event per firing, however many
//! replicas scan at once.

use chrono::{DateTime, TimeDelta, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::QueryFragment;
use diesel::sql_types::{BigInt, Bool, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use shared_events::ReminderDue;
use uuid::Uuid;

use crate::cte;
use crate::jobs::{self, JobError, JobHandler, JobRecord};
use crate::outbox;
use crate::prepared::Prepare;
use crate::schema::reminders;
use crate::tasks::TaskRow;

/// The job kind that fires due reminders; one is queued at the time of every (re)scheduled
/// reminder. A stale one (the reminder moved or was cancelled) finds nothing to fire.
pub const FIRE_JOB: &str = "reminder.fire";
/// Firing only touches the database; a failure is a database failure, worth a few retries.
const FIRE_JOB_ATTEMPTS: i32 = 10;
/// Reminders claimed per transaction.
const FIRE_BATCH: i64 = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReminderStatus {
    Pending,
    Fired,
    Cancelled,
}

impl ReminderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReminderStatus::Pending => "pending",
            ReminderStatus::Fired => "fired",
            ReminderStatus::Cancelled => "cancelled",
        }
    }
}

/// A row of `reminders`.
#[derive(Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = reminders, check_for_backend(Pg))]
pub struct ReminderRow {
    pub id: Uuid,
    pub task_id: Uuid,
    pub user_id: String,
    pub due_at: DateTime<Utc>,
    pub scheduled_for: DateTime<Utc>,
    pub remind_at: DateTime<Utc>,
    pub status: String,
    pub fired_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// When the task's reminder is due, if it should have one.
fn wanted(task: &TaskRow) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let due = task.due_at.filter(|_| !task.completed)?;
    let minutes = task.reminder_minutes_before?;
    Some((due, due - TimeDelta::minutes(i64::from(minutes))))
}

/// Whether the task should have a reminder.
pub fn wanted_for(task: &TaskRow) -> bool {
    wanted(task).is_some()
}

/// Bring the task's reminder in line with the task, in the caller's transaction: schedule it,
/// move it, or cancel it (completed, no due date or no offset). An edit that keeps the reminder's
/// time leaves a fired or snoozed reminder alone. Call it after every write of the task.
pub async fn sync_for_task(conn: &mut AsyncPgConnection, task: &TaskRow) -> QueryResult<()> {
    let Some((due_at, at)) = wanted(task) else {
        return cancel_for_task(conn, task.id).await;
    };
    let current: Option<ReminderRow> = reminders::table
        .filter(reminders::task_id.eq(task.id))
        .filter(reminders::status.ne(ReminderStatus::Cancelled.as_str()))
        .filter(reminders::scheduled_for.eq(at))
        .select(ReminderRow::as_select())
        .first(conn)
        .await
        .optional()?;
    if current.is_some() {
        return Ok(());
    }
    let moved: Option<Uuid> = diesel::update(pending(task.id))
        .set((
            reminders::due_at.eq(due_at),
            reminders::scheduled_for.eq(at),
            reminders::remind_at.eq(at),
            reminders::updated_at.eq(diesel::dsl::now),
        ))
        .returning(reminders::id)
        .prepared()
        .get_result(conn)
        .await
        .optional()?;
    let id = match moved {
        Some(id) => id,
        None => insert_pending(conn, task, due_at, at).await?,
    };
    queue_fire(conn, id, at).await
}

/// [`sync_for_task`] for a task inserted by this very transaction: it has no reminder to keep,
/// move or cancel, so a wanted one is inserted and nothing else is read or written (the create
/// and the next occurrence save up to three statements).
pub async fn schedule_for_new_task(
    conn: &mut AsyncPgConnection,
    task: &TaskRow,
) -> QueryResult<()> {
    let Some((due_at, at)) = wanted(task) else {
        return Ok(());
    };
    let id = insert_pending(conn, task, due_at, at).await?;
    queue_fire(conn, id, at).await
}

async fn insert_pending(
    conn: &mut AsyncPgConnection,
    task: &TaskRow,
    due_at: DateTime<Utc>,
    at: DateTime<Utc>,
) -> QueryResult<Uuid> {
    diesel::insert_into(reminders::table)
        .values((
            reminders::id.eq(Uuid::now_v7()),
            reminders::task_id.eq(task.id),
            reminders::user_id.eq(&task.user_id),
            reminders::due_at.eq(due_at),
            reminders::scheduled_for.eq(at),
            reminders::remind_at.eq(at),
        ))
        .returning(reminders::id)
        .prepared()
        .get_result(conn)
        .await
}

type OfTask = diesel::dsl::Filter<reminders::table, diesel::dsl::Eq<reminders::task_id, Uuid>>;
type PendingOfTask = diesel::dsl::Filter<OfTask, diesel::dsl::Eq<reminders::status, &'static str>>;

/// The task's pending reminder (at most one).
fn pending(task_id: Uuid) -> PendingOfTask {
    reminders::table
        .filter(reminders::task_id.eq(task_id))
        .filter(reminders::status.eq(ReminderStatus::Pending.as_str()))
}

/// Cancel the task's pending reminder, if any (the task is deleted, completed, or has no
/// reminder any more).
pub async fn cancel_for_task(conn: &mut AsyncPgConnection, task_id: Uuid) -> QueryResult<()> {
    diesel::update(pending(task_id))
        .set(cancelled())
        .prepared()
        .execute(conn)
        .await?;
    Ok(())
}

/// [`cancel_for_task`] as the `also` of [`crate::cte::with_write_if`]: only when `first` wrote.
pub fn cancel_for_task_if_written(task_id: Uuid) -> impl QueryFragment<Pg> + Send {
    diesel::update(pending(task_id).filter(diesel::dsl::sql::<Bool>(cte::FIRST_WROTE)))
        .set(cancelled())
}

fn cancelled() -> (
    diesel::dsl::Eq<reminders::status, &'static str>,
    diesel::dsl::Eq<reminders::updated_at, diesel::dsl::now>,
) {
    (
        reminders::status.eq(ReminderStatus::Cancelled.as_str()),
        reminders::updated_at.eq(diesel::dsl::now),
    )
}

async fn queue_fire(
    conn: &mut AsyncPgConnection,
    reminder_id: Uuid,
    at: DateTime<Utc>,
) -> QueryResult<()> {
    let payload = serde_json::json!({ "reminder_id": reminder_id });
    jobs::enqueue(conn, FIRE_JOB, &payload, at, FIRE_JOB_ATTEMPTS).await?;
    Ok(())
}

#[derive(Debug, QueryableByName)]
struct Claimed {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    task_id: Uuid,
    #[diesel(sql_type = Text)]
    user_id: String,
    #[diesel(sql_type = Text)]
    title: String,
    #[diesel(sql_type = Timestamptz)]
    due_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    remind_at: DateTime<Utc>,
}

/// Fire every reminder that is due by the database's clock and that no other transaction holds:
/// mark it fired and write its `reminder.due` event, in the caller's transaction. Returns how
/// many fired. Concurrent callers skip each other's rows, so each firing has one event.
pub async fn fire_due(conn: &mut AsyncPgConnection) -> QueryResult<usize> {
    let mut fired = 0;
    loop {
        // The database's clock, not this process's: the job that calls this became due by it.
        let claimed: Vec<Claimed> = diesel::sql_query(
            "WITH due AS ( \
                 SELECT id FROM reminders \
                 WHERE status = 'pending' AND remind_at <= clock_timestamp() \
                 ORDER BY remind_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
             UPDATE reminders r SET status = 'fired', fired_at = clock_timestamp(), \
                 updated_at = clock_timestamp() \
             FROM due, tasks t WHERE r.id = due.id AND t.id = r.task_id \
             RETURNING r.id, r.task_id, r.user_id, t.title, r.due_at, r.remind_at",
        )
        .bind::<BigInt, _>(FIRE_BATCH)
        .prepared()
        .load(conn)
        .await?;
        let now = Utc::now();
        for c in &claimed {
            let reminder = ReminderDue {
                reminder_id: c.id,
                task_id: c.task_id,
                user_id: c.user_id.clone(),
                title: c.title.clone(),
                due_at: c.due_at,
                remind_at: c.remind_at,
            };
            outbox::record_reminder_due(conn, &reminder, now).await?;
        }
        fired += claimed.len();
        if (claimed.len() as i64) < FIRE_BATCH {
            return Ok(fired);
        }
    }
}

/// The [`FIRE_JOB`] handler: fires whatever is due (its own reminder, unless it moved).
pub struct FireReminders;

impl JobHandler for FireReminders {
    fn run<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        job: &'a JobRecord,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let fired = fire_due(conn).await?;
            if fired > 0 {
                tracing::info!(fired, job = job.id, "reminders fired");
            }
            Ok(())
        })
    }
}

/// The user's reminders, optionally of one status, by time.
pub async fn list(
    conn: &mut AsyncPgConnection,
    user_id: &str,
    status: Option<ReminderStatus>,
    limit: i64,
) -> QueryResult<Vec<ReminderRow>> {
    let mut query = reminders::table
        .filter(reminders::user_id.eq(user_id))
        .select(ReminderRow::as_select())
        .order((reminders::remind_at, reminders::id))
        .limit(limit)
        .into_boxed();
    if let Some(status) = status {
        query = query.filter(reminders::status.eq(status.as_str()));
    }
    query.load(conn).await
}

/// Why a snooze did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SnoozeError {
    #[error("no such reminder")]
    NotFound,
    #[error("only a fired reminder of a pending task can be snoozed")]
    NotFired,
    #[error("the task already has a pending reminder")]
    AlreadyPending,
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
}

/// Re-arm a fired reminder of a pending task to fire again at `at`, in the caller's transaction.
pub async fn snooze(
    conn: &mut AsyncPgConnection,
    user_id: &str,
    id: Uuid,
    at: DateTime<Utc>,
) -> Result<ReminderRow, SnoozeError> {
    let reminder: ReminderRow = reminders::table
        .filter(reminders::id.eq(id))
        .filter(reminders::user_id.eq(user_id))
        .select(ReminderRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?
        .ok_or(SnoozeError::NotFound)?;
    let task_pending: bool = crate::schema::tasks::table
        .filter(crate::schema::tasks::id.eq(reminder.task_id))
        .filter(crate::schema::tasks::completed.eq(false))
        .count()
        .get_result::<i64>(conn)
        .await?
        > 0;
    if reminder.status != ReminderStatus::Fired.as_str() || !task_pending {
        return Err(SnoozeError::NotFired);
    }
    let has_pending: i64 = pending(reminder.task_id).count().get_result(conn).await?;
    if has_pending > 0 {
        return Err(SnoozeError::AlreadyPending);
    }
    let row = diesel::update(reminders::table.find(id))
        .set((
            reminders::status.eq(ReminderStatus::Pending.as_str()),
            reminders::remind_at.eq(at),
            reminders::updated_at.eq(diesel::dsl::now),
        ))
        .returning(ReminderRow::as_returning())
        .prepared()
        .get_result(conn)
        .await?;
    queue_fire(conn, id, at).await?;
    Ok(row)
}
