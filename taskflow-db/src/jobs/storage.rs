//! Every query of the job queue.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Double, Integer, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::{JobRecord, RunnerError};
use crate::prepared::Prepare;
use crate::schema::jobs;

const QUEUED: &str = "queued";

/// Jobs due within this horizon wake idle runners with `NOTIFY jobs`; later ones do not. A
/// NOTIFY is not free: PostgreSQL serialises the commits of all notifying transactions of the
/// server on one lock, which the event handlers that enqueue share with the outbox trigger. Reminders are mostly scheduled hours ahead, so they skip it; an idle runner never
/// sleeps longer than this horizon, so it still finds them before they are due.
pub(super) const NOTIFY_HORIZON: Duration = Duration::from_secs(60);

/// Queue a job in the caller's transaction: it exists, and idle runners are woken, exactly when
/// that transaction commits. `max_attempts` must be at least 1.
pub async fn enqueue(
    conn: &mut AsyncPgConnection,
    kind: &str,
    payload: &serde_json::Value,
    run_at: DateTime<Utc>,
    max_attempts: i32,
) -> QueryResult<i64> {
    let id = diesel::insert_into(jobs::table)
        .values((
            jobs::kind.eq(kind),
            jobs::payload.eq(payload),
            jobs::run_at.eq(run_at),
            jobs::max_attempts.eq(max_attempts),
        ))
        .returning(jobs::id)
        .prepared()
        .get_result(conn)
        .await?;
    let horizon = TimeDelta::from_std(NOTIFY_HORIZON).unwrap_or(TimeDelta::MAX);
    if run_at <= Utc::now() + horizon {
        // Without a payload PostgreSQL sends one notification per transaction however many
        // jobs it queued.
        diesel::sql_query("NOTIFY jobs")
            .prepared()
            .execute(conn)
            .await?;
    }
    Ok(id)
}

/// The first queued job that no other runner holds.
#[derive(Debug, QueryableByName)]
pub(super) struct Head {
    #[diesel(embed)]
    pub job: JobRecord,
    /// Seconds until it is due by the database's clock; zero or less: due now.
    #[diesel(sql_type = Double)]
    pub due_in: f64,
}

/// Lock the first queued job that no other runner holds, for the rest of the transaction; when
/// it is due the caller runs it, otherwise its `due_in` says how long to wait. Its `attempts`
/// counts the attempt about to be made.
/// Only jobs of `kinds` (those the runner has handlers for): services share the table, and each
/// runs its own kinds.
pub(super) async fn claim(
    conn: &mut AsyncPgConnection,
    kinds: &[String],
) -> QueryResult<Option<Head>> {
    let head: Option<Head> = diesel::sql_query(
        "SELECT id, kind, payload, attempts + 1 AS attempts, max_attempts, run_at, \
                extract(epoch FROM run_at - clock_timestamp())::float8 AS due_in \
         FROM jobs WHERE state = 'queued' AND kind = ANY($1) \
         ORDER BY run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED",
    )
    .bind::<Array<Text>, _>(kinds)
    .prepared()
    .get_result(conn)
    .await
    .optional()?;
    Ok(head)
}

/// The job succeeded: its effect is the record.
pub(super) async fn complete(conn: &mut AsyncPgConnection, id: i64) -> QueryResult<()> {
    diesel::delete(jobs::table.find(id)).execute(conn).await?;
    Ok(())
}

/// Record a failed attempt and make the job due again after `delay`.
pub(super) async fn retry(
    conn: &mut AsyncPgConnection,
    job: &JobRecord,
    error: &str,
    delay: Duration,
) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE jobs SET attempts = $2, last_error = $3, updated_at = clock_timestamp(), \
             run_at = clock_timestamp() + make_interval(secs => $4) \
         WHERE id = $1",
    )
    .bind::<BigInt, _>(job.id)
    .bind::<Integer, _>(job.attempts)
    .bind::<Text, _>(error)
    .bind::<Double, _>(delay.as_secs_f64())
    .prepared()
    .execute(conn)
    .await?;
    Ok(())
}

/// Record the last attempt and stop: the job stays as `failed` with its error.
pub(super) async fn fail(
    conn: &mut AsyncPgConnection,
    job: &JobRecord,
    error: &str,
) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE jobs SET state = 'failed', attempts = $2, last_error = $3, \
             updated_at = clock_timestamp() \
         WHERE id = $1",
    )
    .bind::<BigInt, _>(job.id)
    .bind::<Integer, _>(job.attempts)
    .bind::<Text, _>(error)
    .prepared()
    .execute(conn)
    .await?;
    Ok(())
}

/// Queued jobs (due or not) by kind, read from the `jobs_queued` partial index.
pub(super) async fn queued_by_kind(
    conn: &mut AsyncPgConnection,
) -> QueryResult<Vec<(String, i64)>> {
    jobs::table
        .filter(jobs::state.eq(QUEUED))
        .group_by(jobs::kind)
        .select((jobs::kind, diesel::dsl::count_star()))
        .load(conn)
        .await
}

/// A connection of its own that hears `NOTIFY jobs`.
pub(super) async fn listener(database_url: &str) -> Result<AsyncPgConnection, RunnerError> {
    let mut conn = AsyncPgConnection::establish(database_url).await?;
    diesel::sql_query("LISTEN jobs").execute(&mut conn).await?;
    Ok(conn)
}
