//! Creates that arrive together are written together.
//!
//! A create is one statement (the task and its two outbox rows), and most of its database time
//! is the statement's own cost (a round trip, executor start-up, a snapshot, a commit), not its
//! rows: pgbench wrote 9,300–11,000 creates/s as one statement each at 16 sessions, and 21,000/s
//! as statements of eight creates at two (README "Performance", section "batches"). So each
//! HTTP worker sends its one-statement creates through a queue: at most
//! [`Limits::statements`] statements at a time, each taking every create that queued while the
//! earlier ones ran (up to [`Limits::max_rows`]). A lone create is written at once: nothing
//! waits for a batch to fill, batches form only while the database is busy.
//!
//! Each create keeps its own outcome. The statement is atomic, so a failed one wrote nothing,
//! and its creates are then written one by one, each answered with its own result. The writes
//! run in tasks of their own, so a client that goes away does not take its batch with it.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use prometheus::Histogram;
use taskflow_db::outbox::Handoff;
use taskflow_db::tasks::TaskRow;
use taskflow_db::DbPool;
use tokio::sync::oneshot;

use crate::error::ApiError;
use crate::outbox::handoff::PayloadHandoff;
use crate::tasks::{self, Change, NewTask};

/// How much one HTTP worker writes at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Creates in one statement (`CREATE_BATCH_MAX_ROWS`); 1 writes each create on its own.
    pub max_rows: usize,
    /// Statements of queued creates running at once, per HTTP worker (`CREATE_BATCH_STATEMENTS`).
    pub statements: usize,
}

impl Default for Limits {
    /// The documented defaults (README configuration table).
    fn default() -> Self {
        Limits {
            max_rows: 16,
            statements: 2,
        }
    }
}

/// One HTTP worker's queue of creates (cloning shares it).
#[derive(Clone)]
pub struct CreateBatches(Arc<Shared>);

struct Shared {
    pool: DbPool,
    limits: Limits,
    /// Creates per statement.
    rows_per_statement: Histogram,
    /// This process's relay, when it runs here.
    handoff: Option<Arc<PayloadHandoff>>,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    /// The queued tasks, and beside each (same index) who waits for it.
    rows: Vec<TaskRow>,
    waiting: Vec<Waiting>,
    /// Writer tasks running; each takes batches until the queue is empty.
    writers: usize,
}

struct Waiting {
    traceparent: Option<String>,
    now: DateTime<Utc>,
    done: oneshot::Sender<Result<TaskRow, ApiError>>,
}

impl Waiting {
    /// The request's change, for the event of `row`, its task.
    fn change<'a>((row, waiting): (&'a TaskRow, &'a Waiting)) -> Change<'a> {
        Change {
            user_id: &row.user_id,
            traceparent: waiting.traceparent.as_deref(),
            now: waiting.now,
        }
    }
}

impl CreateBatches {
    pub fn new(
        pool: DbPool,
        limits: Limits,
        rows_per_statement: Histogram,
        handoff: Option<Arc<PayloadHandoff>>,
    ) -> CreateBatches {
        CreateBatches(Arc::new(Shared {
            pool,
            limits: Limits {
                max_rows: limits.max_rows.max(1),
                statements: limits.statements.max(1),
            },
            rows_per_statement,
            handoff,
            queue: Mutex::default(),
        }))
    }

    /// Write `task`, which must be a single statement ([`NewTask::is_one_statement`]), with the
    /// creates queued beside it; the row as stored.
    pub async fn create(&self, ctx: &Change<'_>, task: NewTask) -> Result<TaskRow, ApiError> {
        let (done, outcome) = oneshot::channel();
        let start_writer = {
            let mut queue = self.0.lock();
            queue.rows.push(task.into_row());
            queue.waiting.push(Waiting {
                traceparent: ctx.traceparent.map(str::to_owned),
                now: ctx.now,
                done,
            });
            let start = queue.writers < self.0.limits.statements;
            queue.writers += usize::from(start);
            start
        };
        if start_writer {
            // On this worker's thread, where its pool's connections live (crate::worker_pools).
            tokio::task::spawn_local(Arc::clone(&self.0).write_queued());
        }
        outcome
            .await
            .map_err(|_| anyhow::anyhow!("the create's batch was abandoned"))?
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing panics while holding it; a poisoned queue is still consistent.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One writer: batches until the queue is empty.
    async fn write_queued(self: Arc<Self>) {
        let mut writer = Writer(Some(&self));
        loop {
            let (rows, waiting) = {
                let mut queue = self.lock();
                if queue.rows.is_empty() {
                    // Under the lock: a create queued after this sees one writer fewer.
                    queue.writers -= 1;
                    writer.0 = None;
                    return;
                }
                let n = queue.rows.len().min(self.limits.max_rows);
                let rows: Vec<TaskRow> = queue.rows.drain(..n).collect();
                (rows, queue.waiting.drain(..n).collect::<Vec<_>>())
            };
            self.write(rows, waiting).await;
        }
    }

    async fn write(&self, rows: Vec<TaskRow>, waiting: Vec<Waiting>) {
        let mut conn = match self.pool.get().await {
            Ok(conn) => conn,
            Err(e) => {
                let reason = ApiError::from(e).to_string();
                for w in waiting {
                    let _ = w.done.send(Err(ApiError::Unavailable(reason.clone())));
                }
                return;
            }
        };
        let changes: Vec<Change<'_>> = rows.iter().zip(&waiting).map(Waiting::change).collect();
        self.rows_per_statement.observe(rows.len() as f64);
        let handoff = self.handoff.as_deref().map(|h| h as &dyn Handoff);
        let together = tasks::insert_created(&mut conn, &rows, &changes, handoff).await;
        drop(changes);
        match together {
            Ok(()) => {
                for (row, w) in rows.into_iter().zip(waiting) {
                    let _ = w.done.send(Ok(row));
                }
            }
            Err(e) if rows.len() > 1 => {
                tracing::warn!(error = %e, creates = rows.len(), "a batch of creates failed; writing them one by one");
                for (row, w) in rows.into_iter().zip(waiting) {
                    let ctx = Waiting::change((&row, &w));
                    self.rows_per_statement.observe(1.0);
                    let alone = tasks::insert_created(
                        &mut conn,
                        std::slice::from_ref(&row),
                        &[ctx],
                        handoff,
                    )
                    .await;
                    let _ = w.done.send(alone.map(|()| row));
                }
            }
            Err(e) => {
                if let Some(w) = waiting.into_iter().next() {
                    let _ = w.done.send(Err(e));
                }
            }
        }
    }
}

/// Counts a running writer out if it ends without doing so itself (a panic): later creates can
/// then start another. Creates queued at that moment wait for the next create to arrive.
struct Writer<'a>(Option<&'a Shared>);

impl Drop for Writer<'_> {
    fn drop(&mut self) {
        if let Some(shared) = self.0 {
            shared.lock().writers -= 1;
        }
    }
}
