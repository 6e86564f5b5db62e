//! The job runner against a real PostgreSQL (`DATABASE_URL`, a server where tests may create
//! databases); each test has a database of its own.
//!
//! The test handler writes an `effects` row in the job's savepoint, so an effect that committed
//! twice shows up as two rows and a failed attempt's effect as none, and it remembers every call,
//! so an attempt that rolled back is seen too. Its `failed` hook writes `dead_letters`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use diesel::sql_types::{BigInt, Double, Integer, Nullable, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::future::BoxFuture;
use futures::StreamExt;
use prometheus::{Registry, TextEncoder};
use serde_json::json;
use taskflow_db::jobs::{self, JobError, JobHandler, JobRecord, JobRunner, RunnerSettings};
use taskflow_db::DbPool;
use taskflow_test_support::db::{count, execute, fresh_database};
use taskflow_test_support::eventually;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

const KIND: &str = "test";

// ---------------------------------------------------------------------------------------------
// Database

/// A fresh database with the handler's tables, and a pool on it for the test's own queries.
async fn database() -> (String, DbPool) {
    let url = fresh_database().await;
    let pool = taskflow_db::pool(&url, 2).expect("pool");
    execute(
        &pool,
        "CREATE TABLE effects (job_id bigint NOT NULL, attempt int NOT NULL, runner text NOT NULL, \
         at timestamptz NOT NULL DEFAULT clock_timestamp())",
    )
    .await;
    execute(
        &pool,
        "CREATE TABLE dead_letters (job_id bigint NOT NULL, error text NOT NULL)",
    )
    .await;
    (url, pool)
}

/// Queue `n` jobs of `kind` due at `run_at`, in one transaction.
async fn enqueue(
    pool: &DbPool,
    kind: &str,
    n: usize,
    run_at: chrono::DateTime<Utc>,
    max_attempts: i32,
) -> Vec<i64> {
    let mut conn = pool.get().await.expect("connection");
    conn.transaction::<_, diesel::result::Error, _>(async |conn| {
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            ids.push(jobs::enqueue(conn, kind, &json!({ "n": i }), run_at, max_attempts).await?);
        }
        Ok(ids)
    })
    .await
    .expect("enqueue")
}

#[derive(Debug, QueryableByName)]
struct JobRow {
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Integer)]
    attempts: i32,
    #[diesel(sql_type = Nullable<Text>)]
    last_error: Option<String>,
    /// The backoff the last retry chose.
    #[diesel(sql_type = Double)]
    delay: f64,
}

impl JobRow {
    fn outcome(&self) -> (&str, i32, Option<&str>) {
        (&self.state, self.attempts, self.last_error.as_deref())
    }
}

async fn job_row(pool: &DbPool, id: i64) -> JobRow {
    let mut conn = pool.get().await.expect("connection");
    diesel::sql_query(
        "SELECT state, attempts, last_error, \
                extract(epoch FROM run_at - updated_at)::float8 AS delay \
         FROM jobs WHERE id = $1",
    )
    .bind::<BigInt, _>(id)
    .get_result(&mut conn)
    .await
    .expect("the job row")
}

#[derive(Debug, PartialEq, QueryableByName)]
struct Effect {
    #[diesel(sql_type = BigInt)]
    job_id: i64,
    #[diesel(sql_type = Integer)]
    attempt: i32,
    #[diesel(sql_type = Text)]
    runner: String,
}

async fn effects(pool: &DbPool) -> Vec<Effect> {
    let mut conn = pool.get().await.expect("connection");
    diesel::sql_query("SELECT job_id, attempt, runner FROM effects ORDER BY job_id, attempt")
        .load(&mut conn)
        .await
        .expect("effects")
}

/// Pretend the backoff has passed.
async fn make_due(pool: &DbPool) {
    execute(pool, "UPDATE jobs SET run_at = now()").await;
}

// ---------------------------------------------------------------------------------------------
// The test handler

/// What attempt `job.attempts` of a job returns.
type Rule = Box<dyn Fn(&JobRecord) -> Result<(), JobError> + Send + Sync>;

fn succeed() -> Rule {
    Box::new(|_| Ok(()))
}

/// Holds the first call that reaches it until opened; later calls pass.
struct Gate {
    passed: AtomicBool,
    entered: Semaphore,
    open: Semaphore,
    /// The backend of the connection the held call runs on.
    backend_pid: Mutex<Option<i32>>,
}

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

impl Gate {
    fn new() -> Arc<Self> {
        Arc::new(Gate {
            passed: AtomicBool::new(false),
            entered: Semaphore::new(0),
            open: Semaphore::new(0),
            backend_pid: Mutex::new(None),
        })
    }

    async fn pass(&self, conn: &mut AsyncPgConnection) -> Result<(), JobError> {
        if self.passed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let Pid { pid } = diesel::sql_query("SELECT pg_backend_pid() AS pid")
            .get_result(conn)
            .await?;
        *self.backend_pid.lock().unwrap() = Some(pid);
        self.entered.add_permits(1);
        self.open.acquire().await.expect("gate").forget();
        Ok(())
    }

    async fn wait_entered(&self) {
        tokio::time::timeout(Duration::from_secs(30), self.entered.acquire())
            .await
            .expect("a job reached the gate")
            .expect("gate")
            .forget();
    }

    fn open(&self) {
        self.open.add_permits(Semaphore::MAX_PERMITS / 2);
    }
}

struct Recorder {
    /// Written into `effects.runner`.
    runner: &'static str,
    rule: Rule,
    gate: Option<Arc<Gate>>,
    /// (job id, attempt) of every call, committed or not.
    calls: Mutex<Vec<(i64, i32)>>,
}

impl Recorder {
    fn new(runner: &'static str, rule: Rule) -> Arc<Self> {
        Self::gated(runner, rule, None)
    }

    fn gated(runner: &'static str, rule: Rule, gate: Option<Arc<Gate>>) -> Arc<Self> {
        Arc::new(Recorder {
            runner,
            rule,
            gate,
            calls: Mutex::new(Vec::new()),
        })
    }

    fn calls(&self) -> Vec<(i64, i32)> {
        self.calls.lock().unwrap().clone()
    }
}

impl JobHandler for Recorder {
    fn run<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        job: &'a JobRecord,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            self.calls.lock().unwrap().push((job.id, job.attempts));
            diesel::sql_query("INSERT INTO effects (job_id, attempt, runner) VALUES ($1, $2, $3)")
                .bind::<BigInt, _>(job.id)
                .bind::<Integer, _>(job.attempts)
                .bind::<Text, _>(self.runner)
                .execute(conn)
                .await?;
            if let Some(gate) = &self.gate {
                gate.pass(conn).await?;
            }
            (self.rule)(job)
        })
    }

    fn failed<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        job: &'a JobRecord,
        error: &'a str,
    ) -> BoxFuture<'a, diesel::QueryResult<()>> {
        Box::pin(async move {
            diesel::sql_query("INSERT INTO dead_letters (job_id, error) VALUES ($1, $2)")
                .bind::<BigInt, _>(job.id)
                .bind::<Text, _>(error)
                .execute(conn)
                .await?;
            Ok(())
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Runners

/// Short waits everywhere, so a test does not wait for a backoff it does not look at.
fn quick() -> RunnerSettings {
    RunnerSettings {
        concurrency: 2,
        poll_interval: Duration::from_millis(50),
        base_backoff: Duration::ZERO,
        max_backoff: Duration::from_secs(60),
        shutdown_budget: Duration::from_secs(10),
    }
}

/// A runner with a pool of its own; returns the pool too, for tests that hold on to it.
fn new_runner(
    url: &str,
    settings: RunnerSettings,
    handler: Arc<Recorder>,
) -> (JobRunner, Registry, DbPool) {
    let pool = taskflow_db::pool(url, settings.concurrency + 1).expect("pool");
    let registry = Registry::new();
    let runner = JobRunner::new(pool.clone(), url, settings, &registry)
        .expect("runner")
        .register(KIND, handler);
    (runner, registry, pool)
}

/// The value of one series (`name{labels}`), 0 when absent.
fn metric(registry: &Registry, series: &str) -> f64 {
    let text = TextEncoder::new()
        .encode_to_string(&registry.gather())
        .expect("metrics");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// A runner's `run` in a task of its own.
struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

fn spawn(runner: JobRunner) -> Running {
    let (stop, stopped) = watch::channel(false);
    Running {
        stop,
        task: tokio::spawn(runner.run(stopped)),
    }
}

impl Running {
    /// Ask it to stop; returns how long `run` took to return.
    async fn stop(self) -> Duration {
        let asked = Instant::now();
        self.stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the runner stops")
            .expect("the runner task");
        asked.elapsed()
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_runners_run_each_job_exactly_once() {
    let (url, pool) = database().await;
    let ids = enqueue(&pool, KIND, 200, Utc::now(), 3).await;
    let names = ["a", "b", "c"];
    let handlers: Vec<_> = names.iter().map(|n| Recorder::new(n, succeed())).collect();
    let settings = RunnerSettings {
        concurrency: 3,
        ..quick()
    };
    let (runners, registries): (Vec<_>, Vec<_>) = handlers
        .iter()
        .map(|h| {
            let (runner, registry, _) = new_runner(&url, settings.clone(), h.clone());
            (spawn(runner), registry)
        })
        .unzip();

    eventually("every job to run", String::new, async || {
        match count(&pool, "SELECT count(*) AS n FROM jobs").await {
            0 => Ok(()),
            left => Err(format!("{left} jobs left")),
        }
    })
    .await;
    for running in runners {
        running.stop().await;
    }

    let effects = effects(&pool).await;
    let mut ran: Vec<i64> = effects.iter().map(|e| e.job_id).collect();
    ran.dedup();
    assert_eq!(ran, ids, "each job's effect exactly once");
    assert_eq!(effects.len(), 200);
    let calls: usize = handlers.iter().map(|h| h.calls().len()).sum();
    assert_eq!(calls, 200, "no job was even attempted twice");
    let working: Vec<_> = handlers.iter().filter(|h| !h.calls().is_empty()).collect();
    assert!(working.len() >= 2, "the runners shared the work");
    let completed: f64 = registries
        .iter()
        .map(|r| metric(r, "taskflow_jobs_completed_total{kind=\"test\"}"))
        .sum();
    assert_eq!(completed, 200.0);
    let latencies: f64 = registries
        .iter()
        .map(|r| metric(r, "taskflow_job_latency_seconds_count{kind=\"test\"}"))
        .sum();
    assert_eq!(latencies, 200.0);
}

/// One job of `kind` and a runner, not started (the test drives it with `run_pending`), whose
/// handler follows `rule`.
struct OneJob {
    pool: DbPool,
    id: i64,
    handler: Arc<Recorder>,
    runner: JobRunner,
    registry: Registry,
}

async fn one_job(kind: &str, max_attempts: i32, settings: RunnerSettings, rule: Rule) -> OneJob {
    let (url, pool) = database().await;
    let handler = Recorder::new("a", rule);
    let (runner, registry, _) = new_runner(&url, settings, handler.clone());
    let id = enqueue(&pool, kind, 1, Utc::now(), max_attempts).await[0];
    OneJob {
        pool,
        id,
        handler,
        runner,
        registry,
    }
}

impl OneJob {
    /// How many attempts one drain made.
    async fn run_pending(&self) -> usize {
        self.runner.run_pending().await.expect("run_pending")
    }

    async fn row(&self) -> JobRow {
        job_row(&self.pool, self.id).await
    }

    /// `taskflow_jobs_<name>{kind="<kind>"}`.
    fn counter(&self, name: &str, kind: &str) -> f64 {
        metric(
            &self.registry,
            &format!("taskflow_jobs_{name}{{kind=\"{kind}\"}}"),
        )
    }

    async fn dead_letters(&self) -> Vec<DeadLetter> {
        let mut conn = self.pool.get().await.expect("connection");
        diesel::sql_query("SELECT job_id, error FROM dead_letters ORDER BY job_id")
            .load(&mut conn)
            .await
            .expect("dead letters")
    }

    fn effect(&self, attempt: i32) -> Effect {
        Effect {
            job_id: self.id,
            attempt,
            runner: "a".into(),
        }
    }
}

#[derive(Debug, PartialEq, QueryableByName)]
struct DeadLetter {
    #[diesel(sql_type = BigInt)]
    job_id: i64,
    #[diesel(sql_type = Text)]
    error: String,
}

fn retry_with_attempt(job: &JobRecord) -> Result<(), JobError> {
    Err(JobError::Retry(format!("attempt {} failed", job.attempts)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_backs_off_then_succeeds() {
    let settings = RunnerSettings {
        base_backoff: Duration::from_secs(10),
        max_backoff: Duration::from_secs(3600),
        ..quick()
    };
    let rule: Rule = Box::new(|job| match job.attempts {
        1 | 2 => retry_with_attempt(job),
        _ => Ok(()),
    });
    let job = one_job(KIND, 5, settings, rule).await;

    assert_eq!(job.run_pending().await, 1);
    let row = job.row().await;
    assert_eq!(row.outcome(), ("queued", 1, Some("attempt 1 failed")));
    // 10 s * 2^0 with equal jitter.
    assert!(
        (5.0..=10.0).contains(&row.delay),
        "first backoff {} s",
        row.delay
    );
    assert_eq!(job.run_pending().await, 0, "not due before its backoff");
    assert!(
        effects(&job.pool).await.is_empty(),
        "a failed attempt's writes roll back"
    );

    make_due(&job.pool).await;
    assert_eq!(job.run_pending().await, 1);
    let row = job.row().await;
    assert_eq!(row.outcome(), ("queued", 2, Some("attempt 2 failed")));
    assert!(
        (10.0..=20.0).contains(&row.delay),
        "second backoff {} s",
        row.delay
    );

    make_due(&job.pool).await;
    assert_eq!(job.run_pending().await, 1);
    assert_eq!(count(&job.pool, "SELECT count(*) AS n FROM jobs").await, 0);
    assert_eq!(effects(&job.pool).await, vec![job.effect(3)]);
    assert_eq!(
        job.handler.calls(),
        vec![(job.id, 1), (job.id, 2), (job.id, 3)]
    );
    assert_eq!(job.dead_letters().await, vec![]);
    assert_eq!(job.counter("retries_total", KIND), 2.0);
    assert_eq!(job.counter("completed_total", KIND), 1.0);
    assert_eq!(job.counter("failed_total", KIND), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_gives_up_after_max_attempts() {
    let job = one_job(KIND, 3, quick(), Box::new(retry_with_attempt)).await;

    // No backoff in `quick`: all three attempts are due in one drain.
    assert_eq!(job.run_pending().await, 3);
    assert_eq!(
        job.row().await.outcome(),
        ("failed", 3, Some("attempt 3 failed"))
    );
    let dead = DeadLetter {
        job_id: job.id,
        error: "attempt 3 failed".into(),
    };
    assert_eq!(
        job.dead_letters().await,
        vec![dead],
        "the failed hook ran once"
    );
    assert_eq!(job.run_pending().await, 0, "a failed job is not run again");
    assert_eq!(
        job.handler.calls(),
        vec![(job.id, 1), (job.id, 2), (job.id, 3)]
    );
    assert!(effects(&job.pool).await.is_empty());
    assert_eq!(job.counter("retries_total", KIND), 2.0);
    assert_eq!(job.counter("failed_total", KIND), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_is_terminal_at_once() {
    let rule: Rule = Box::new(|_| Err(JobError::Fail("bad payload".into())));
    let job = one_job(KIND, 5, quick(), rule).await;

    assert_eq!(job.run_pending().await, 1);
    assert_eq!(
        job.row().await.outcome(),
        ("failed", 1, Some("bad payload"))
    );
    let dead = DeadLetter {
        job_id: job.id,
        error: "bad payload".into(),
    };
    assert_eq!(job.dead_letters().await, vec![dead]);
    assert_eq!(job.handler.calls().len(), 1);
    assert_eq!(job.counter("retries_total", KIND), 0.0);
    assert_eq!(job.counter("failed_total", KIND), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_of_a_kind_the_runner_does_not_run_is_left_to_another_service() {
    let kind = "another-service-runs-this";
    let job = one_job(kind, 5, quick(), succeed()).await;

    assert_eq!(job.run_pending().await, 0);
    assert_eq!(job.row().await.outcome(), ("queued", 0, None));
    assert!(job.handler.calls().is_empty());
    assert_eq!(job.counter("failed_total", kind), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_a_failed_attempt() {
    let rule: Rule = Box::new(|job| match job.attempts {
        1 => panic!("boom"),
        _ => Ok(()),
    });
    let job = one_job(KIND, 5, quick(), rule).await;

    // No backoff in `quick`: the retry succeeds in the same drain, on the same runner.
    assert_eq!(job.run_pending().await, 2);
    assert_eq!(job.handler.calls(), vec![(job.id, 1), (job.id, 2)]);
    assert_eq!(effects(&job.pool).await, vec![job.effect(2)]);
    assert_eq!(count(&job.pool, "SELECT count(*) AS n FROM jobs").await, 0);
    assert_eq!(job.counter("retries_total", KIND), 1.0);
}

/// How a test kills a runner in the middle of a job.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// Its database session dies (a crashed process, a failover).
    TerminateBackend,
    /// Its `run` future is dropped.
    AbortTask,
}

async fn a_runner_killed_mid_job_leaves_the_job_to_another(kill: Kill) {
    let (url, pool) = database().await;
    let [id] = enqueue(&pool, KIND, 1, Utc::now(), 3).await[..] else {
        unreachable!()
    };
    let gate = Gate::new();
    let first = Recorder::gated("first", succeed(), Some(gate.clone()));
    let second = Recorder::new("second", succeed());
    // One worker, held at the gate: only the second runner can take the job.
    let only_worker = RunnerSettings {
        concurrency: 1,
        ..quick()
    };
    let (runner_a, _, _) = new_runner(&url, only_worker, first.clone());
    let a = spawn(runner_a);
    gate.wait_entered().await;

    let (runner_b, _, _) = new_runner(&url, quick(), second.clone());
    let b = spawn(runner_b);
    // The job is locked, not gone: the second runner passes it over while the first holds it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(second.calls().is_empty(), "{:?}", second.calls());

    match kill {
        Kill::TerminateBackend => {
            let pid = gate
                .backend_pid
                .lock()
                .unwrap()
                .expect("the held job's backend");
            execute(&pool, &format!("SELECT pg_terminate_backend({pid})")).await;
        }
        Kill::AbortTask => a.task.abort(),
    }
    eventually(
        "the second runner to run the job",
        || format!("second runner's calls: {:?}", second.calls()),
        async || match count(&pool, "SELECT count(*) AS n FROM jobs").await {
            0 => Ok(()),
            _ => Err("the job is still there".into()),
        },
    )
    .await;
    // The first handler may now finish: its commit has nowhere to go.
    gate.open();
    if let Kill::TerminateBackend = kill {
        a.stop().await;
    }
    b.stop().await;

    assert_eq!(first.calls(), vec![(id, 1)]);
    assert_eq!(
        second.calls(),
        vec![(id, 1)],
        "the attempt of the killed runner never committed"
    );
    assert_eq!(
        effects(&pool).await,
        vec![Effect {
            job_id: id,
            attempt: 1,
            runner: "second".into()
        }],
        "the job's effect exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_whose_session_is_terminated_mid_job_leaves_the_job_to_another() {
    a_runner_killed_mid_job_leaves_the_job_to_another(Kill::TerminateBackend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_aborted_mid_job_leaves_the_job_to_another() {
    a_runner_killed_mid_job_leaves_the_job_to_another(Kill::AbortTask).await;
}

/// The backend of the one session that has run `LISTEN jobs` (idle: the LISTEN is done), once
/// there is one other than `not`.
async fn listening_session(pool: &DbPool, not: Option<i32>) -> i32 {
    let mut found = None;
    eventually("a runner to LISTEN", String::new, async || {
        let mut conn = pool.get().await.map_err(|e| e.to_string())?;
        let sessions: Vec<Pid> = diesel::sql_query(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
             AND query = 'LISTEN jobs' AND state = 'idle'",
        )
        .load(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
        match sessions[..] {
            [Pid { pid }] if Some(pid) != not => {
                found = Some(pid);
                Ok(())
            }
            _ => Err(format!("{} sessions listening", sessions.len())),
        }
    })
    .await;
    found.expect("a listening session")
}

/// Wait until job `id` has run (and is gone), failing after `deadline`.
async fn runs_within(pool: &DbPool, id: i64, deadline: Duration) {
    let start = Instant::now();
    let query = format!("SELECT count(*) AS n FROM jobs WHERE id = {id}");
    while count(pool, &query).await > 0 {
        assert!(
            start.elapsed() < deadline,
            "job {id} did not run within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Settings whose poll never comes in a test: anything quick was woken by a NOTIFY.
fn no_poll() -> RunnerSettings {
    RunnerSettings {
        concurrency: 1,
        poll_interval: Duration::from_secs(600),
        ..quick()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_wakes_an_idle_runner_long_before_its_poll() {
    let (url, pool) = database().await;
    let later = enqueue(
        &pool,
        "later",
        3,
        Utc::now() + chrono::TimeDelta::hours(1),
        1,
    )
    .await;
    let handler = Recorder::new("a", succeed());
    let (runner, registry, _) = new_runner(&url, no_poll(), handler.clone());
    let running = spawn(runner);
    listening_session(&pool, None).await;

    for _ in 0..2 {
        let due_now = enqueue(&pool, KIND, 1, Utc::now(), 1).await;
        runs_within(&pool, due_now[0], Duration::from_secs(5)).await;
    }
    // Woken by the NOTIFY, the runner sleeps until the job is due, not until its next poll.
    let due = Utc::now() + chrono::TimeDelta::seconds(2);
    let soon = enqueue(&pool, KIND, 1, due, 1).await;
    runs_within(&pool, soon[0], Duration::from_secs(8)).await;
    let on_time = format!(
        "SELECT count(*) AS n FROM effects WHERE job_id = {} AND at >= '{}'",
        soon[0],
        due.to_rfc3339()
    );
    assert_eq!(count(&pool, &on_time).await, 1, "ran before it was due");
    assert_eq!(handler.calls().len(), 3);

    assert_eq!(
        metric(&registry, "taskflow_jobs_queued{kind=\"later\"}"),
        later.len() as f64,
        "the queued gauge, refreshed when the runner started"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_comes_back_after_its_session_dies() {
    let (url, pool) = database().await;
    let (runner, _, _) = new_runner(&url, no_poll(), Recorder::new("a", succeed()));
    let running = spawn(runner);
    let first = listening_session(&pool, None).await;
    execute(&pool, &format!("SELECT pg_terminate_backend({first})")).await;
    listening_session(&pool, Some(first)).await;

    let due_now = enqueue(&pool, KIND, 1, Utc::now(), 1).await;
    runs_within(&pool, due_now[0], Duration::from_secs(5)).await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_notifies_on_commit_once_and_only_for_jobs_due_soon() {
    let (url, pool) = database().await;
    let mut listener = AsyncPgConnection::establish(&url).await.expect("connect");
    diesel::sql_query("LISTEN jobs")
        .execute(&mut listener)
        .await
        .expect("LISTEN");

    let mut conn = pool.get().await.expect("connection");
    let rolled_back = conn
        .transaction::<(), _, _>(async |conn| {
            jobs::enqueue(conn, KIND, &json!({}), Utc::now(), 1).await?;
            Err(diesel::result::Error::RollbackTransaction)
        })
        .await;
    assert!(rolled_back.is_err());
    enqueue(&pool, KIND, 1, Utc::now() + chrono::TimeDelta::hours(2), 1).await;
    // Notifications arrive in commit order: what came before this marker was sent above.
    execute(&pool, "NOTIFY jobs, 'marker'").await;
    enqueue(&pool, KIND, 3, Utc::now(), 1).await;
    execute(&pool, "NOTIFY jobs, 'end'").await;

    let mut payloads = Vec::new();
    let mut notifications = std::pin::pin!(listener.notifications_stream());
    while payloads.last().map(String::as_str) != Some("end") {
        let notification = tokio::time::timeout(Duration::from_secs(10), notifications.next())
            .await
            .unwrap_or_else(|_| panic!("no notification after {payloads:?}"))
            .expect("the listener is open")
            .expect("a notification");
        payloads.push(notification.payload);
    }
    assert_eq!(
        payloads,
        ["marker", "", "end"],
        "none for the rolled-back or the far-off job, one for three due jobs"
    );
    assert_eq!(count(&pool, "SELECT count(*) AS n FROM jobs").await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_running_job_finish_and_claims_nothing_more() {
    let (url, pool) = database().await;
    let gate = Gate::new();
    let handler = Recorder::gated("a", succeed(), Some(gate.clone()));
    let settings = RunnerSettings {
        concurrency: 1,
        ..quick()
    };
    let (runner, registry, _) = new_runner(&url, settings, handler.clone());
    let [held, waiting] = enqueue(&pool, KIND, 2, Utc::now(), 1).await[..] else {
        unreachable!()
    };
    let running = spawn(runner);
    gate.wait_entered().await;
    assert_eq!(metric(&registry, "taskflow_jobs_running"), 1.0);

    running.stop.send_replace(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !running.task.is_finished(),
        "returned before its job finished"
    );
    gate.open();
    let released = Instant::now();
    running.task.await.expect("the runner task");
    assert!(
        released.elapsed() < Duration::from_secs(2),
        "took {:?} after the job finished",
        released.elapsed()
    );

    assert_eq!(handler.calls(), vec![(held, 1)]);
    assert_eq!(
        count(
            &pool,
            &format!("SELECT count(*) AS n FROM jobs WHERE id = {held}"),
        )
        .await,
        0
    );
    assert_eq!(job_row(&pool, waiting).await.outcome(), ("queued", 0, None));
    assert_eq!(metric(&registry, "taskflow_jobs_running"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_abandons_a_job_past_its_budget_and_frees_it() {
    let (url, pool) = database().await;
    let gate = Gate::new();
    let settings = RunnerSettings {
        shutdown_budget: Duration::from_millis(500),
        ..quick()
    };
    // The test keeps the runner's pool alive: the abandoned connection must not wait in it.
    let (runner, _, _runner_pool) = new_runner(
        &url,
        settings,
        Recorder::gated("a", succeed(), Some(gate.clone())),
    );
    let [id] = enqueue(&pool, KIND, 1, Utc::now(), 1).await[..] else {
        unreachable!()
    };
    let running = spawn(runner);
    gate.wait_entered().await;

    let took = running.stop().await;
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(3),
        "stopped after {took:?} with a 500 ms budget"
    );
    let row = job_row(&pool, id).await;
    assert_eq!(row.outcome(), ("queued", 0, None), "rolled back");
    // Another runner gets it as soon as PostgreSQL has seen the connection close.
    let handler = Recorder::new("b", succeed());
    let (other, _, _) = new_runner(&url, quick(), handler.clone());
    eventually(
        "the abandoned job to be free",
        String::new,
        async || match other.run_pending().await.expect("run_pending") {
            0 => Err("still locked".into()),
            _ => Ok(()),
        },
    )
    .await;
    assert_eq!(handler.calls(), vec![(id, 1)]);
    gate.open();
}
