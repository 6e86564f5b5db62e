//! The runner: `concurrency` workers each claiming and running one job at a time, a listener
//! that wakes them on `NOTIFY jobs`, and the refresher of the queued gauge.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use diesel::QueryResult;
use diesel_async::pooled_connection::deadpool::{Object, PoolError};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use futures::{FutureExt, StreamExt};
use prometheus::core::Collector;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{storage, JobError, JobHandler, JobRecord};
use crate::pool::DbPool;

/// How often the queued gauge is refreshed (one grouped count over the partial index).
const QUEUED_REFRESH: Duration = Duration::from_secs(5);
/// First wait after a failure of the runner itself (database away), doubling up to the poll
/// interval.
const ERROR_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct RunnerSettings {
    /// Jobs run at once. The pool needs as many connections, plus one for the queued gauge.
    pub concurrency: usize,
    /// The longest an idle worker sleeps without a NOTIFY (it also wakes for the next scheduled
    /// job, and never sleeps past the NOTIFY horizon of one minute).
    pub poll_interval: Duration,
    /// The wait before the second attempt; it doubles with every further attempt.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// On shutdown, running jobs get this long to finish; past it they are abandoned (rolled
    /// back, so they run again later).
    pub shutdown_budget: Duration,
}

impl Default for RunnerSettings {
    fn default() -> Self {
        RunnerSettings {
            concurrency: 4,
            poll_interval: Duration::from_secs(5),
            base_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(3600),
            shutdown_budget: Duration::from_secs(10),
        }
    }
}

/// A failure of the runner itself, not of a job.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("database pool: {0}")]
    Pool(#[from] PoolError),
    #[error("connecting to the database: {0}")]
    Connect(#[from] diesel::ConnectionError),
    #[error("database: {0}")]
    Database(#[from] diesel::result::Error),
}

struct Metrics {
    queued: IntGaugeVec,
    running: IntGauge,
    completed: IntCounterVec,
    retries: IntCounterVec,
    failed: IntCounterVec,
    latency: HistogramVec,
}

impl Metrics {
    fn register(registry: &Registry) -> prometheus::Result<Self> {
        fn add<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> prometheus::Result<C> {
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        }
        let counter = |name: &str, help: &str| {
            add(
                registry,
                IntCounterVec::new(Opts::new(name, help), &["kind"])?,
            )
        };
        Ok(Metrics {
            queued: add(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "taskflow_jobs_queued",
                        "Queued jobs (due or scheduled) by kind",
                    ),
                    &["kind"],
                )?,
            )?,
            running: add(
                registry,
                IntGauge::new("taskflow_jobs_running", "Jobs whose handler is running")?,
            )?,
            completed: counter("taskflow_jobs_completed_total", "Jobs that succeeded")?,
            retries: counter(
                "taskflow_jobs_retries_total",
                "Failed attempts that will be retried",
            )?,
            failed: counter("taskflow_jobs_failed_total", "Jobs that gave up")?,
            latency: add(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "taskflow_job_latency_seconds",
                        "From a job's run_at to its successful completion",
                    )
                    .buckets(vec![
                        0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
                        3600.0,
                    ]),
                    &["kind"],
                )?,
            )?,
        })
    }
}

/// What one claim found.
#[derive(Debug)]
enum Attempt {
    /// A job ran and its outcome committed.
    Ran(JobRecord, Outcome),
    /// Nothing is due; the first queued job is due after this long (None: the queue is empty).
    Idle(Option<Duration>),
}

#[derive(Debug)]
enum Outcome {
    Completed,
    Retried { error: String, delay: Duration },
    Failed { error: String },
}

pub struct JobRunner {
    pool: DbPool,
    database_url: String,
    settings: RunnerSettings,
    handlers: HashMap<String, Arc<dyn JobHandler>>,
    /// The registered kinds: the only ones this runner claims.
    kinds: Vec<String>,
    metrics: Metrics,
}

impl JobRunner {
    /// `database_url` is for the LISTEN connection, which stays out of the pool.
    pub fn new(
        pool: DbPool,
        database_url: impl Into<String>,
        settings: RunnerSettings,
        registry: &Registry,
    ) -> prometheus::Result<Self> {
        Ok(JobRunner {
            pool,
            database_url: database_url.into(),
            settings,
            handlers: HashMap::new(),
            kinds: Vec::new(),
            metrics: Metrics::register(registry)?,
        })
    }

    /// Run jobs of `kind` with `handler`. The runner claims only jobs of registered kinds, so
    /// services sharing the table (the backend's reminders, the notifier's webhooks) each run
    /// their own.
    pub fn register(mut self, kind: impl Into<String>, handler: Arc<dyn JobHandler>) -> Self {
        let kind = kind.into();
        self.kinds.push(kind.clone());
        self.handlers.insert(kind, handler);
        self
    }

    /// Run due jobs one after another until none is due; returns how many attempts were made.
    /// For tests, like crates.io's `run_pending_background_jobs`.
    pub async fn run_pending(&self) -> Result<usize, RunnerError> {
        let mut attempts = 0;
        while let Attempt::Ran(..) = self.run_one().await? {
            attempts += 1;
        }
        Ok(attempts)
    }

    /// Run jobs until `shutdown` turns true (or its sender goes away); then claim nothing more
    /// and give running jobs the shutdown budget to finish.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let runner = Arc::new(self);
        let settings = runner.settings.clone();
        let (wake, woken) = watch::channel(());
        // Dropping the set aborts every task: a cancelled `run` leaves nothing running.
        let mut tasks = JoinSet::new();
        tasks.spawn(runner.clone().listen(wake, shutdown.clone()));
        tasks.spawn(runner.clone().refresh_queued(shutdown.clone()));
        for _ in 0..settings.concurrency.max(1) {
            tasks.spawn(runner.clone().work(woken.clone(), shutdown.clone()));
        }
        tracing::info!(
            concurrency = settings.concurrency,
            kinds = ?runner.handlers.keys().collect::<Vec<_>>(),
            "job runner started"
        );
        let _ = shutdown.wait_for(|stop| *stop).await;
        let drained = tokio::time::timeout(settings.shutdown_budget, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                budget = ?settings.shutdown_budget,
                running = runner.metrics.running.get(),
                "shutdown budget exhausted: abandoning running jobs, which will run again"
            );
            tasks.shutdown().await;
        }
        tracing::info!("job runner stopped");
    }

    /// One of `concurrency` workers: run due jobs one after another, then sleep until the next
    /// scheduled job, a NOTIFY, the poll interval or shutdown, whichever comes first.
    async fn work(
        self: Arc<Self>,
        mut woken: watch::Receiver<()>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let longest_sleep = self.settings.poll_interval.min(storage::NOTIFY_HORIZON);
        let mut failures = 0;
        while !stopping(&shutdown) {
            // A NOTIFY from here on ends the sleep below, even one that arrives mid-pass.
            woken.borrow_and_update();
            let sleep = match self.run_one().await {
                Ok(Attempt::Ran(..)) => {
                    failures = 0;
                    continue;
                }
                Ok(Attempt::Idle(next)) => {
                    failures = 0;
                    next.map_or(longest_sleep, |due_in| due_in.min(longest_sleep))
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, failures, "job runner pass failed");
                    exponential(ERROR_BACKOFF, self.settings.poll_interval, failures - 1)
                }
            };
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => {}
                Ok(()) = woken.changed() => {}
                () = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// Wake the workers on every `NOTIFY jobs`, and once after each (re)connect for what was
    /// sent while not listening; reconnect with backoff (the workers poll meanwhile).
    async fn listen(self: Arc<Self>, wake: watch::Sender<()>, mut shutdown: watch::Receiver<bool>) {
        let mut failures = 0;
        loop {
            match storage::listener(&self.database_url).await {
                Ok(mut conn) => {
                    failures = 0;
                    wake.send_replace(());
                    let mut notifications = std::pin::pin!(conn.notifications_stream());
                    loop {
                        tokio::select! {
                            _ = shutdown.wait_for(|stop| *stop) => return,
                            notification = notifications.next() => match notification {
                                Some(Ok(_)) => { wake.send_replace(()); }
                                Some(Err(e)) => {
                                    tracing::warn!(error = %e, "LISTEN jobs connection failed; polling");
                                    break;
                                }
                                None => {
                                    tracing::warn!("LISTEN jobs connection closed; polling");
                                    break;
                                }
                            },
                        }
                    }
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, failures, "LISTEN jobs failed; polling");
                }
            }
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                () = tokio::time::sleep(exponential(ERROR_BACKOFF, self.settings.poll_interval, failures)) => {}
            }
        }
    }

    async fn refresh_queued(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        // A kind whose queue empties must read 0, not keep its last count.
        let mut seen = HashSet::new();
        loop {
            if let Err(e) = self.refresh_queued_once(&mut seen).await {
                tracing::debug!(error = %e, "refreshing taskflow_jobs_queued failed");
            }
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                () = tokio::time::sleep(QUEUED_REFRESH) => {}
            }
        }
    }

    async fn refresh_queued_once(&self, seen: &mut HashSet<String>) -> Result<(), RunnerError> {
        let mut conn = self.pool.get().await?;
        let counts: HashMap<String, i64> = storage::queued_by_kind(&mut conn)
            .await?
            .into_iter()
            .collect();
        for kind in seen.iter().filter(|kind| !counts.contains_key(*kind)) {
            self.metrics.queued.with_label_values(&[kind]).set(0);
        }
        for (kind, n) in counts {
            self.metrics.queued.with_label_values(&[&kind]).set(n);
            seen.insert(kind);
        }
        Ok(())
    }

    /// Claim the first due job and run it, all in one transaction.
    async fn run_one(&self) -> Result<Attempt, RunnerError> {
        let mut conn = Checkout(Some(self.pool.get().await?));
        let attempt = conn
            .get()
            .transaction::<_, RunnerError, _>(async |conn| {
                let job = match storage::claim(conn, &self.kinds).await? {
                    None => return Ok(Attempt::Idle(None)),
                    Some(head) if head.due_in > 0.0 => {
                        let due_in =
                            Duration::try_from_secs_f64(head.due_in).unwrap_or(Duration::MAX);
                        return Ok(Attempt::Idle(Some(due_in)));
                    }
                    Some(head) => head.job,
                };
                let outcome = self.attempt(conn, &job).await?;
                Ok(Attempt::Ran(job, outcome))
            })
            .await;
        conn.release();
        let attempt = attempt?;
        if let Attempt::Ran(job, outcome) = &attempt {
            self.record(job, outcome);
        }
        Ok(attempt)
    }

    /// Run `job`'s handler in a savepoint and record the outcome in the claiming transaction.
    async fn attempt(&self, conn: &mut AsyncPgConnection, job: &JobRecord) -> QueryResult<Outcome> {
        // `claim` returns only registered kinds; failing the job is the guard should that break.
        let handler = self.handlers.get(&job.kind);
        let result = match handler {
            None => Err(JobError::Fail(format!(
                "no handler is registered for job kind {:?}",
                job.kind
            ))),
            Some(handler) => {
                let _running = Running::start(&self.metrics.running);
                conn.transaction::<_, JobError, _>(async |conn| {
                    // A panicking handler is a failed attempt, not a dead worker.
                    AssertUnwindSafe(handler.run(conn, job))
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|panic| Err(JobError::Retry(panic_message(panic))))
                })
                .await
            }
        };
        match result {
            Ok(()) => {
                storage::complete(conn, job.id).await?;
                Ok(Outcome::Completed)
            }
            Err(JobError::Retry(error)) if job.attempts < job.max_attempts => {
                let delay = retry_delay(&self.settings, job);
                storage::retry(conn, job, &error, delay).await?;
                Ok(Outcome::Retried { error, delay })
            }
            Err(e) => {
                let error = e.reason().to_owned();
                storage::fail(conn, job, &error).await?;
                if let Some(handler) = handler {
                    handler.failed(conn, job, &error).await?;
                }
                Ok(Outcome::Failed { error })
            }
        }
    }

    /// Metrics and logs, once the outcome has committed.
    fn record(&self, job: &JobRecord, outcome: &Outcome) {
        let kind = [job.kind.as_str()];
        match outcome {
            Outcome::Completed => {
                self.metrics.completed.with_label_values(&kind).inc();
                let latency = (Utc::now() - job.run_at).to_std().unwrap_or_default();
                self.metrics
                    .latency
                    .with_label_values(&kind)
                    .observe(latency.as_secs_f64());
            }
            Outcome::Retried { error, delay } => {
                self.metrics.retries.with_label_values(&kind).inc();
                tracing::warn!(job = job.id, kind = %job.kind, attempt = job.attempts, %error, ?delay, "job attempt failed; retrying");
            }
            Outcome::Failed { error } => {
                self.metrics.failed.with_label_values(&kind).inc();
                tracing::error!(job = job.id, kind = %job.kind, attempt = job.attempts, %error, "job failed");
            }
        }
    }
}

/// A pooled connection that leaves the pool when dropped before [`Checkout::release`]. A job
/// abandoned mid-transaction (shutdown past its budget, a cancelled `run`) must close its
/// connection, so PostgreSQL rolls back and another runner can take the job at once; back in
/// the pool it would keep the row locked until its next checkout.
struct Checkout(Option<Object<AsyncPgConnection>>);

impl Checkout {
    fn get(&mut self) -> &mut AsyncPgConnection {
        self.0
            .as_mut()
            .expect("a checkout holds its connection until released")
    }

    fn release(mut self) {
        self.0.take();
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Some(object) = self.0.take() {
            drop(Object::take(object));
        }
    }
}

/// Counts a running handler until dropped, also when its worker is cancelled.
struct Running(IntGauge);

impl Running {
    fn start(gauge: &IntGauge) -> Self {
        gauge.inc();
        Running(gauge.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// True once shutdown was asked for, or nobody can ask any more.
fn stopping(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

fn panic_message(panic: Box<dyn Any + Send>) -> String {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    format!("the handler panicked: {detail}")
}

/// `base * 2^n`, at most `max`.
fn exponential(base: Duration, max: Duration, n: u32) -> Duration {
    base.saturating_mul(2u32.saturating_pow(n)).min(max)
}

/// The wait after the failed attempt `job.attempts`: `base_backoff * 2^(attempts - 1)` capped at
/// `max_backoff`, with equal jitter (half of it fixed, half spread) so that jobs that failed
/// together do not all retry together. The spread is derived from the job id and attempt: no
/// random source needed, and a test can bound it.
fn retry_delay(settings: &RunnerSettings, job: &JobRecord) -> Duration {
    let previous = u32::try_from(job.attempts - 1).unwrap_or(0);
    let full = exponential(settings.base_backoff, settings.max_backoff, previous);
    let half = full / 2;
    half + (full - half).mul_f64(spread(job.id, job.attempts))
}

/// A fraction in [0, 1) that looks random across jobs and attempts (splitmix64's finaliser).
fn spread(id: i64, attempt: i32) -> f64 {
    let mut z = (id as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(attempt as u64);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: i64, attempts: i32) -> JobRecord {
        JobRecord {
            id,
            kind: "k".into(),
            payload: serde_json::Value::Null,
            attempts,
            max_attempts: 100,
            run_at: Utc::now(),
        }
    }

    #[test]
    fn retry_delay_doubles_within_equal_jitter_up_to_the_cap() {
        let settings = RunnerSettings {
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            ..RunnerSettings::default()
        };
        for id in 1..200 {
            for (attempt, full) in [(1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (40, 60)] {
                let delay = retry_delay(&settings, &job(id, attempt));
                let full = Duration::from_secs(full);
                assert!(
                    delay >= full / 2 && delay <= full,
                    "job {id} attempt {attempt}: {delay:?} outside [{:?}, {full:?}]",
                    full / 2
                );
            }
        }
    }

    #[test]
    fn jitter_spreads_jobs_that_failed_together() {
        let settings = RunnerSettings {
            base_backoff: Duration::from_secs(10),
            ..RunnerSettings::default()
        };
        let delays: HashSet<Duration> = (1..=100)
            .map(|id| retry_delay(&settings, &job(id, 1)))
            .collect();
        assert!(delays.len() > 90, "only {} distinct delays", delays.len());
        let mean = delays.iter().map(Duration::as_secs_f64).sum::<f64>() / delays.len() as f64;
        assert!(
            (6.5..8.5).contains(&mean),
            "mean {mean} s, expected about 7.5 s"
        );
    }
}
