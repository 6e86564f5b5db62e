//! The job queue: work that a transaction makes necessary but must not do itself (a reminder at
//! its time, a webhook delivery), in the style of crates.io's `crates_io_worker`.
//!
//! - [`enqueue`] inserts a job in the caller's transaction, so the job exists exactly when that
//!   transaction commits (an event handler's effect and its webhook job commit together).
//! - A [`JobRunner`] claims one due job at a time with `FOR UPDATE SKIP LOCKED` and runs its
//!   [`JobHandler`] inside the claiming transaction, the handler's writes in a savepoint: a
//!   success deletes the job in the same commit as the handler's effect; a failure rolls the
//!   handler's writes back but still records the attempt. A runner that dies mid-job holds only
//!   a row lock, which PostgreSQL releases with its connection: another runner takes the job.
//!   (So an attempt that kills its runner is not counted: a job that crashes every runner is
//!   retried until someone removes it.)
//! - Retries wait `min(max_backoff, base_backoff * 2^(attempt - 1))` with equal jitter; after
//!   `max_attempts` attempts, or at once on [`JobError::Fail`], the job stays as `failed` with its
//!   last error and the handler's [`JobHandler::failed`] hook runs in that same transaction.
//!
//! All SQL is in `storage.rs`.

mod runner;
mod storage;

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel_async::AsyncPgConnection;
use futures::future::BoxFuture;

pub use runner::{JobRunner, RunnerError, RunnerSettings};
pub use storage::enqueue;

use crate::schema::jobs;

/// One attempt of a job, as its handler sees it.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
#[diesel(table_name = jobs, check_for_backend(Pg))]
pub struct JobRecord {
    pub id: i64,
    pub kind: String,
    pub payload: serde_json::Value,
    /// This attempt, from 1.
    pub attempts: i32,
    pub max_attempts: i32,
    /// When this attempt became due: the schedule, or the end of the last backoff.
    pub run_at: DateTime<Utc>,
}

/// Why an attempt did not succeed. Its writes are rolled back either way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Try again after a backoff, unless this was the last attempt.
    #[error("retry: {0}")]
    Retry(String),
    /// Give up now: the job becomes `failed`.
    #[error("failed: {0}")]
    Fail(String),
}

impl JobError {
    /// What is stored as the job's `last_error`.
    pub fn reason(&self) -> &str {
        match self {
            JobError::Retry(reason) | JobError::Fail(reason) => reason,
        }
    }
}

/// A database error is worth another attempt (a deadlock, a lost connection ...); a handler
/// that knows better returns [`JobError::Fail`] itself.
impl From<diesel::result::Error> for JobError {
    fn from(e: diesel::result::Error) -> Self {
        JobError::Retry(e.to_string())
    }
}

/// Runs the jobs of one kind.
pub trait JobHandler: Send + Sync {
    /// One attempt, on the claiming transaction's connection (inside a savepoint): the job is
    /// deleted in the same commit as whatever the handler writes.
    fn run<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        job: &'a JobRecord,
    ) -> BoxFuture<'a, Result<(), JobError>>;

    /// Called once when the job gives up, in the transaction that marks it failed (e.g. to write
    /// a dead-letter record). An error rolls that whole attempt back; the job runs again later.
    fn failed<'a>(
        &'a self,
        _conn: &'a mut AsyncPgConnection,
        _job: &'a JobRecord,
        _error: &'a str,
    ) -> BoxFuture<'a, QueryResult<()>> {
        Box::pin(async { Ok(()) })
    }
}
