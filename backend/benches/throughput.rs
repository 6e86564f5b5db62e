//! Throughput and latency of the task API and its event path beside PostgreSQL doing the same
//! work, printed as one Markdown table and written as JSON.
//!
//! `cargo bench -p backend --bench throughput` with `DATABASE_URL` (a user that may CREATE
//! DATABASE) and `KAFKA_BROKERS`; needs `wrk` and `pgbench` (`./dev bench` installs wrk). It
//! creates and migrates a `bench_<uuid>` database for the application and a second one for
//! pgbench, starts the real application in-process on 127.0.0.1:0 with the outbox relay
//! publishing to Kafka, and drops both databases at the end.
//!
//! The load generator is wrk, a separate process: fixed connections for a fixed time, its own
//! latency histogram, and little CPU per request, so the client neither shares the server's
//! runtime nor hides server stalls behind its own. Only the event-latency phase uses the bench's
//! own client, because it must see each create's response to time its event.
//!
//! The create runs whose ratio has a target (c=16 and c=64) run in two rounds, the API first in
//! one and pgbench first in the other; their row gives the mean of the rounds' rates.
//!
//! Knobs: `BENCH_SECONDS` per create/update run (default 8), `BENCH_LIST_SECONDS` per list
//! query (default 3), `BENCH_RATE` creates/s for the event latency (default 500) over
//! `BENCH_EVENT_SECONDS` (default 5), `BENCH_BACKLOG` outbox rows for the relay (default
//! 100000), `BENCH_OUT` the JSON file (default `<cargo target dir>/bench/throughput.json`),
//! `PGBENCH` the pgbench binary, `BENCH_SERIES` recurring tasks completed as a backlog for the
//! recurrence worker (default 3000), `BENCH_COMPLETION_RATE` completions/s for the
//! next-occurrence latency (default 200, over `BENCH_EVENT_SECONDS`), `BENCH_REMINDERS` due in
//! the same second (default 1000), `BENCH_BIN_DIR` the release service binaries (default: beside
//! this bench's), `BENCH_BROKER_PID` the broker's process, for its CPU per request (`./dev bench`
//! sets it to the Tansu it started). Any failed request, missing event or stuck outbox makes it
//! exit 1.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use backend::configuration::Settings;
use backend::domain::list_query::ListQuery;
use backend::startup::Application;
use diesel::sql_types::{BigInt, Bool, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use shared_events::envelope::TaskEventType;
use shared_events::topics::{TASK_EVENTS, TOPICS};
use taskflow_db::migrations::create_database;
use taskflow_db::DbPool;
use tokio::sync::watch;
use url::Url;
use uuid::Uuid;

#[path = "throughput/cpu.rs"]
mod cpu;
#[path = "throughput/workers.rs"]
mod workers;

/// Client connections for create and update, and for the lists.
const WRITE_CONCURRENCY: [usize; 3] = [1, 16, 64];
/// The create runs whose ratio has a target (issue 8), and how many rounds each runs: one pair
/// of 8 s runs moved the c=16 ratio by ±0.04 from run to run.
const RATIO_TARGETS: [usize; 2] = [16, 64];
const RATIO_ROUNDS: usize = 2;
const LIST_CONCURRENCY: usize = 16;
/// The application's pool, as the backend's default `DB_POOL_SIZE`.
const DB_POOL_SIZE: usize = 16;
/// Writers spread over this many users, each with its own token.
const USERS: usize = 100;
/// Tasks of the one user whose lists are measured.
const LIST_TASKS: usize = 10_000;
const LIST_USER: &str = "bench-list";
const SECRET: &str = "taskflow-bench-secret";
/// Words put into titles, one per task in turn, so `q=<word>` matches an eighth of the tasks.
const WORDS: [&str; 8] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
];
const SEARCH_WORD: &str = "bravo";
const PRIORITIES: [&str; 5] = ["none", "low", "medium", "high", "urgent"];
const LIST_LIMIT: usize = 50;
/// Every order the API offers, then a full-text search.
const LIST_QUERIES: [&str; 9] = [
    "sort=due_at",
    "sort=-due_at",
    "sort=priority",
    "sort=-priority",
    "sort=created_at",
    "sort=-created_at",
    "sort=title",
    "sort=-title",
    "q=bravo",
];
/// Distinct request bodies handed to wrk per run.
const BODIES: usize = 1000;
/// How long the outbox may take to drain, and the events to arrive, before the run fails.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(60);
/// The bench consumer's fetch wait: short, so that it adds little to the measured event latency.
const FETCH_WAIT_MS: &str = "10";
/// How often pg_stat_activity is sampled while the API is loaded.
const WAIT_SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// pgbench: one create as the API writes it (the task and its two outbox rows, one statement).
const PGBENCH_CREATE: &str = "\\set u random(1, 100)
WITH first AS (INSERT INTO tasks (id, user_id, title, description, priority, tags, series_id, created_at, updated_at) VALUES (gen_random_uuid(), 'pgbench-' || :u, :title, :description, 2, '{t1,bench}', gen_random_uuid(), now(), now())) \
INSERT INTO outbox (id, topic, message_key, event_type, payload) VALUES (gen_random_uuid(), 'task-events', 'pgbench-' || :u, 'com.taskflow.task.created', :event), (gen_random_uuid(), 'task-updates', 'pgbench-' || :u, 'com.taskflow.task.changed', :notice);
";
/// pgbench: one update as the API does it for a task without a reminder (read the task, then
/// write it over the version read, with its two outbox rows and the cancellation of a pending
/// reminder, in one statement that writes nothing if the version moved). Each writes a title of
/// its own and a random priority, as the API's requests do: a title already stored would leave
/// every index as it was, an update PostgreSQL makes in place (HOT), which the API's never are.
const PGBENCH_UPDATE: &str = "\\set i random(1, 10000)
\\set n random(1, 2000000000)
\\set p random(0, 4)
SELECT version FROM tasks WHERE id = md5(CAST(:i AS text))::uuid \\gset
WITH first AS (UPDATE tasks SET title = 'Task ' || :i || ' benchmark edited ' || :n, priority = :p, version = version + 1, updated_at = now() WHERE id = md5(CAST(:i AS text))::uuid AND version = :version RETURNING id), \
also AS (UPDATE reminders SET status = 'cancelled', updated_at = now() WHERE task_id = md5(CAST(:i AS text))::uuid AND status = 'pending' AND EXISTS (SELECT FROM first)) \
INSERT INTO outbox (id, topic, message_key, event_type, payload) SELECT * FROM (VALUES (gen_random_uuid(), 'task-events', md5(CAST(:i AS text)), 'com.taskflow.task.updated', CAST(:event AS jsonb)), (gen_random_uuid(), 'task-updates', md5(CAST(:i AS text)), 'com.taskflow.task.changed', CAST(:notice AS jsonb))) AS message WHERE EXISTS (SELECT FROM first);
";
/// The tasks pgbench's updates pick from (ids md5(1..10000), as PGBENCH_UPDATE expects), with
/// what the API's creates give theirs ([`create_body`]): a description, two tags, a priority and
/// a due date on every other one, so an update rewrites index entries of the same size.
const PGBENCH_SEED: &str = "INSERT INTO tasks (id, user_id, title, description, priority, tags, due_at, series_id, created_at, updated_at) \
     SELECT md5(i::text)::uuid, 'pgbench-' || (i % 100), 'Task ' || i || ' benchmark', \
            'Generated by the throughput benchmark, number ' || i || ', to give full-text search some text.', \
            i % 5, ARRAY['t' || (i % 10), 'bench'], \
            CASE WHEN i % 2 = 0 THEN timestamptz '2030-01-01T09:00:00Z' + (i % 28) * interval '1 day' END, \
            gen_random_uuid(), now(), now() \
     FROM generate_series(1, 10000) i";

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn env_usize(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            let n: usize = v
                .trim()
                .parse()
                .with_context(|| format!("{name}={v:?} is not a count"))?;
            if n == 0 {
                bail!("{name} must be at least 1");
            }
            Ok(n)
        }
        _ => Ok(default),
    }
}

fn admin_url() -> anyhow::Result<Url> {
    let raw = std::env::var("DATABASE_URL").context(
        "DATABASE_URL must name a PostgreSQL server where the bench may create a database",
    )?;
    Url::parse(&raw).context("DATABASE_URL is not a URL")
}

fn env_secs(name: &str, default: usize) -> anyhow::Result<Duration> {
    Ok(Duration::from_secs(env_usize(name, default)? as u64))
}

/// What a run does; see the module documentation for the knobs.
struct Knobs {
    write_time: Duration,
    list_time: Duration,
    rate: usize,
    event_time: Duration,
    backlog: usize,
    series: usize,
    completion_rate: usize,
    reminders: usize,
}

impl Knobs {
    fn from_env() -> anyhow::Result<Knobs> {
        Ok(Knobs {
            write_time: env_secs("BENCH_SECONDS", 8)?,
            list_time: env_secs("BENCH_LIST_SECONDS", 3)?,
            rate: env_usize("BENCH_RATE", 500)?,
            event_time: env_secs("BENCH_EVENT_SECONDS", 5)?,
            backlog: env_usize("BENCH_BACKLOG", 100_000)?,
            series: env_usize("BENCH_SERIES", 3_000)?,
            completion_rate: env_usize("BENCH_COMPLETION_RATE", 200)?,
            reminders: env_usize("BENCH_REMINDERS", 1_000)?,
        })
    }
}

/// The external programs: the load generator and PostgreSQL's own benchmark, each started (as
/// the workers are) in a session of its own by `setsid`.
struct Tools {
    wrk: PathBuf,
    pgbench: PathBuf,
    setsid: PathBuf,
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

impl Tools {
    fn find(server: &ServerFacts) -> anyhow::Result<Tools> {
        let wrk = on_path("wrk").context("wrk is not on PATH (apt-get install wrk)")?;
        let major = server.version.split('.').next().unwrap_or_default();
        let pgbench = std::env::var_os("PGBENCH")
            .map(PathBuf::from)
            .or_else(|| on_path("pgbench"))
            .or_else(|| {
                let p = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin/pgbench"));
                p.is_file().then_some(p)
            })
            .context("pgbench not found (set PGBENCH, or install postgresql-{major})")?;
        let setsid =
            on_path("setsid").context("setsid is not on PATH (apt-get install util-linux)")?;
        Ok(Tools {
            wrk,
            pgbench,
            setsid,
        })
    }

    /// `program` in a new session. With the kernel's autogroup scheduling (on by default) every
    /// session is a group that gets its fair share of the cores: a load generator in this
    /// process's session shared one with the API under test while PostgreSQL had its own. wrk
    /// run so against the release backend: 7,507-8,450 pages/s at 125-141 µs of the backend's
    /// CPU a page, against 9,404-9,484 at 106-107 µs from a session of its own.
    fn command(&self, program: &Path) -> std::process::Command {
        let mut command = std::process::Command::new(&self.setsid);
        command.arg("--wait").arg(program);
        command
    }
}

/// Create the databases, run the bench against them, and drop them whatever happened.
async fn bench() -> anyhow::Result<()> {
    let admin = admin_url()?;
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let knobs = Knobs::from_env()?;
    let name = format!("bench_{}", Uuid::now_v7().simple());
    let pg_name = format!("{name}_pgbench");

    let mut conn = AsyncPgConnection::establish(admin.as_str())
        .await
        .context("connecting to DATABASE_URL")?;
    let server = server_facts(&mut conn).await?;
    drop(conn);
    let tools = Tools::find(&server)?;

    let started = Instant::now();
    let outcome = async {
        let url = create_database(admin.as_str(), &name, None).await?;
        let pg_url = create_database(admin.as_str(), &pg_name, None).await?;
        // Topics of this run alone, named after its database: the workers' groups read them from
        // the start, and a broker left running keeps earlier runs' events (their reminders would
        // count as this run's).
        let topic_prefix = format!("{name}.");
        let run_on = RunOn {
            database_url: &url,
            pg_url: &pg_url,
            brokers: &brokers,
            topic_prefix: &topic_prefix,
        };
        run(&run_on, &knobs, &tools, &server, started).await
    }
    .await;

    let dropped = async {
        let mut conn = AsyncPgConnection::establish(admin.as_str()).await?;
        for db in [&name, &pg_name] {
            // The relay's LISTEN connection and the app's pool are still open: end them (this
            // role's). Not WITH (FORCE): PostgreSQL 15 refuses that while an autovacuum worker is
            // in the database ("must be a member of the role whose process is being terminated"),
            // where a plain DROP stops the worker itself and waits for the ended sessions.
            diesel::sql_query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = $1 AND usename = current_user AND pid <> pg_backend_pid()",
            )
            .bind::<Text, _>(db.as_str())
            .execute(&mut conn)
            .await?;
            diesel::sql_query(format!("DROP DATABASE IF EXISTS {db}"))
                .execute(&mut conn)
                .await?;
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = &dropped {
        eprintln!("bench: could not drop database {name} or {pg_name}: {e:#}");
    }
    outcome?;
    dropped?;
    eprintln!(
        "bench: finished in {:.1} s; databases {name} and {pg_name} dropped",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[derive(QueryableByName)]
struct Setting {
    #[diesel(sql_type = Text)]
    v: String,
}

struct ServerFacts {
    version: String,
    fsync: String,
    /// Whether pg_stat_activity shows this role the autovacuum workers (other roles' sessions
    /// are rows without a type or state).
    sees_autovacuum: bool,
}

async fn setting(conn: &mut AsyncPgConnection, name: &str) -> anyhow::Result<String> {
    Ok(diesel::sql_query("SELECT current_setting($1) AS v")
        .bind::<Text, _>(name)
        .get_result::<Setting>(conn)
        .await?
        .v)
}

async fn server_facts(conn: &mut AsyncPgConnection) -> anyhow::Result<ServerFacts> {
    Ok(ServerFacts {
        version: setting(conn, "server_version").await?,
        fsync: setting(conn, "fsync").await?,
        sees_autovacuum: diesel::sql_query("SELECT pg_has_role('pg_read_all_stats', 'USAGE') AS b")
            .get_result::<Flag>(conn)
            .await?
            .b,
    })
}

fn settings(database_url: &str, brokers: &str, topic_prefix: &str) -> Settings {
    let mut s = Settings::local(database_url, SECRET);
    s.common.db_pool_size = DB_POOL_SIZE;
    s.common.kafka_brokers = brokers.to_owned();
    s.common.topic_prefix = topic_prefix.to_owned();
    s.events.max_backoff = Duration::from_secs(2);
    s.events.publish_timeout = Duration::from_secs(5);
    s
}

/// Where a run writes: the application's database, pgbench's, the broker and the run's topics.
struct RunOn<'a> {
    database_url: &'a str,
    pg_url: &'a str,
    brokers: &'a str,
    topic_prefix: &'a str,
}

/// Everything between creating and dropping the databases.
async fn run(
    on: &RunOn<'_>,
    knobs: &Knobs,
    tools: &Tools,
    server: &ServerFacts,
    started: Instant,
) -> anyhow::Result<()> {
    let RunOn {
        database_url,
        pg_url,
        brokers,
        topic_prefix,
    } = *on;
    let pool = taskflow_db::pool(database_url, 2)?;
    taskflow_kafka::admin::ensure_topics(brokers, &TOPICS, 1, topic_prefix)
        .await
        .context("creating the topics (is KAFKA_BROKERS reachable?)")?;

    let app = Application::build(&settings(database_url, brokers, topic_prefix))
        .await
        .context("building the application")?;
    let bench = Bench {
        address: format!("http://127.0.0.1:{}", app.port()),
        database_url: database_url.to_owned(),
        pg_url: pg_url.to_owned(),
        brokers: brokers.to_owned(),
        topic_prefix: topic_prefix.to_owned(),
        pool: pool.clone(),
        tools,
        knobs,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            // Under actix's 5 s keep-alive: a connection idle between phases is not reused as
            // the server closes it (a run failed with "connection closed before message
            // completed" while seeding the recurrence tasks).
            .pool_idle_timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .build()?,
        rows: Vec::new(),
        notes: Vec::new(),
        cpu: cpu::Cpu::new(database_url).await?,
    };
    let app_task = tokio::spawn(app.run_until_stopped());
    let result = bench.measure(server, started).await;
    // Dropping the runtime at exit stops the server; the relay's connections end with DROP ... FORCE.
    app_task.abort();
    pool.close();
    result
}

/// One load run: throughput, latency percentiles and failed requests.
#[derive(Debug, Clone)]
struct Load {
    per_second: f64,
    p50: Duration,
    p95: Duration,
    p99: Duration,
    max: Duration,
    errors: u64,
}

impl Load {
    fn from_latencies(
        count: usize,
        elapsed: Duration,
        mut latencies: Vec<Duration>,
        errors: u64,
    ) -> Load {
        latencies.sort_unstable();
        Load {
            per_second: count as f64 / elapsed.as_secs_f64(),
            p50: percentile(&latencies, 50.0),
            p95: percentile(&latencies, 95.0),
            p99: percentile(&latencies, 99.0),
            max: latencies.last().copied().unwrap_or_default(),
            errors,
        }
    }

    /// Runs of equal length as one: the mean rate, the highest of each percentile, all errors.
    fn pooled(runs: &[Load]) -> Load {
        let highest = |f: fn(&Load) -> Duration| runs.iter().map(f).max().unwrap_or_default();
        Load {
            per_second: runs.iter().map(|l| l.per_second).sum::<f64>() / runs.len().max(1) as f64,
            p50: highest(|l| l.p50),
            p95: highest(|l| l.p95),
            p99: highest(|l| l.p99),
            max: highest(|l| l.max),
            errors: runs.iter().map(|l| l.errors).sum(),
        }
    }

    fn json(&self) -> Value {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        json!({
            "per_second": self.per_second, "p50_ms": ms(self.p50), "p95_ms": ms(self.p95),
            "p99_ms": ms(self.p99), "max_ms": ms(self.max), "errors": self.errors,
        })
    }
}

/// A line of the report: the API's figures, optionally beside PostgreSQL doing the same work.
struct Row {
    what: String,
    concurrency: Option<usize>,
    /// A measured load, or a single figure (`value`).
    load: Option<Load>,
    value: String,
    postgres: Option<Load>,
}

impl Row {
    fn load(
        what: impl Into<String>,
        concurrency: usize,
        load: Load,
        postgres: Option<Load>,
    ) -> Row {
        Row {
            what: what.into(),
            concurrency: Some(concurrency),
            load: Some(load),
            value: String::new(),
            postgres,
        }
    }

    fn value(what: impl Into<String>, value: impl Into<String>) -> Row {
        Row {
            what: what.into(),
            concurrency: None,
            load: None,
            value: value.into(),
            postgres: None,
        }
    }

    fn ratio(&self) -> Option<f64> {
        Some(self.load.as_ref()?.per_second / self.postgres.as_ref()?.per_second)
    }

    fn print(&self) {
        let c = self.concurrency.map(|c| c.to_string()).unwrap_or_default();
        let (rate, p50, p95, p99, errors) = match &self.load {
            Some(l) => (
                format!("{:.0}/s", l.per_second),
                ms(l.p50),
                ms(l.p95),
                ms(l.p99),
                l.errors.to_string(),
            ),
            None => (
                self.value.clone(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ),
        };
        let (pg, pg50, pg99) = match &self.postgres {
            Some(p) => (format!("{:.0} tps", p.per_second), ms(p.p50), ms(p.p99)),
            None => Default::default(),
        };
        let ratio = self.ratio().map(|r| format!("{r:.2}")).unwrap_or_default();
        println!(
            "| {} | {c} | {rate} | {p50} | {p95} | {p99} | {errors} | {pg} | {pg50} | {pg99} | {ratio} |",
            self.what
        );
    }

    fn json(&self) -> Value {
        json!({
            "what": self.what, "concurrency": self.concurrency,
            "taskflow": self.load.as_ref().map(Load::json),
            "value": (!self.value.is_empty()).then_some(&self.value),
            "postgres": self.postgres.as_ref().map(Load::json),
            "ratio": self.ratio(),
        })
    }
}

/// One request wrk sends; a run cycles through a list of them.
struct WrkRequest {
    method: &'static str,
    path: String,
    token: String,
    body: Option<String>,
}

/// In a request's body, replaced by a value no other request of any run has: an edit sent
/// twice with the same body would change nothing the second time, and write nothing.
const UNIQUE: &str = "{{n}}";

/// wrk's Lua: cycle through the requests (each thread from its own offset, each body's
/// [`UNIQUE`] made unique), then print the totals and the latency percentiles (microseconds) on
/// lines the bench parses.
fn wrk_script(requests: &[WrkRequest]) -> String {
    let mut lua = String::from("local reqs = {\n");
    for r in requests {
        let body = r
            .body
            .as_deref()
            .map_or_else(|| "nil".to_owned(), |b| format!("[==[{b}]==]"));
        let _ = writeln!(
            lua,
            "  {{\"{}\", \"{}\", \"Bearer {}\", {body}}},",
            r.method, r.path, r.token
        );
    }
    lua.push_str(
        &r#"}
local threads = 0
function setup(thread)
  thread:set("first", threads * 7919)
  thread:set("tid", threads)
  threads = threads + 1
end
local function format(r, body)
  local headers = { ["Authorization"] = r[3] }
  if body then
    headers["Content-Type"] = "application/json"
  end
  return wrk.format(r[1], r[2], headers, body)
end
-- Requests whose body needs no unique value, formatted once: wrk shares the cores with the API,
-- so what it spends a request is taken from the API's side of the ratio.
local formatted = {}
function init(args)
  i = first or 0
  run = os.time()
  for k, r in ipairs(reqs) do
    if not (r[4] and string.find(r[4], "UNIQUE", 1, true)) then
      formatted[k] = format(r, r[4])
    end
  end
end
function request()
  i = i + 1
  local k = (i % #reqs) + 1
  if formatted[k] then
    return formatted[k]
  end
  local r = reqs[k]
  return format(r, (string.gsub(r[4], "UNIQUE", run .. "." .. (tid or 0) .. "." .. i)))
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK_RESULT %d %d %d %d %d %d %d\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout + e.status,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"#
        .replace("UNIQUE", UNIQUE),
    );
    lua
}

fn micros(field: Option<&str>) -> anyhow::Result<u64> {
    field
        .context("a field is missing")?
        .parse::<f64>()
        .map(|v| v as u64)
        .context("not a number")
}

/// pg_stat_activity sampled while a load runs: what the application's sessions were waiting on.
/// Samples per (API or relay, state); with them, how many samples were taken.
type StateCounts = HashMap<(String, String), usize>;

struct WaitSampler {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<(StateCounts, usize)>>,
}

#[derive(QueryableByName)]
struct Wait {
    #[diesel(sql_type = Text)]
    who: String,
    #[diesel(sql_type = Text)]
    v: String,
}

impl WaitSampler {
    fn start(database_url: &str) -> WaitSampler {
        let (stop, mut stopped) = watch::channel(false);
        let url = database_url.to_owned();
        let task = tokio::spawn(async move {
            let mut conn = AsyncPgConnection::establish(&url).await?;
            let mut counts = HashMap::new();
            let mut samples = 0usize;
            while !*stopped.borrow() {
                samples += 1;
                // By application_name: the API's sessions (its pools and its list pages' shared
                // connections) and the relay's apart, and anything else (the bench's own pool)
                // not counted as the API's. Autovacuum
                // apart too, in any database (pgbench's writes leave it work as well), by what it
                // works on: it shares the two cores.
                let waits: Vec<Wait> = diesel::sql_query(
                    "SELECT CASE WHEN backend_type = 'autovacuum worker' THEN 'autovacuum' \
                                WHEN application_name = 'taskflow-outbox-relay' THEN 'relay' \
                                WHEN application_name LIKE 'taskflow-backend%' THEN 'API' \
                                ELSE 'other' END AS who, \
                            CASE WHEN backend_type = 'autovacuum worker' \
                                 THEN regexp_replace(query, '^autovacuum: ', '') || \
                                      CASE WHEN datname = current_database() THEN '' \
                                           WHEN datname = current_database() || '_pgbench' \
                                           THEN ' in pgbench''s database' \
                                           ELSE ' in ' || datname END \
                                 WHEN state = 'idle in transaction' \
                                 THEN 'idle in transaction after ' || \
                                      left(regexp_replace(query, '\\s+', ' ', 'g'), 24) \
                            ELSE coalesce(wait_event_type || ':' || wait_event, 'CPU') END AS v \
                     FROM pg_stat_activity \
                     WHERE (datname = current_database() AND backend_type = 'client backend' \
                            OR backend_type = 'autovacuum worker') \
                       AND pid <> pg_backend_pid() AND state <> 'idle'",
                )
                .load(&mut conn)
                .await?;
                for w in waits {
                    *counts.entry((w.who, w.v)).or_insert(0) += 1;
                }
                tokio::select! {
                    _ = stopped.changed() => {}
                    _ = tokio::time::sleep(WAIT_SAMPLE_EVERY) => {}
                }
            }
            Ok((counts, samples))
        });
        WaitSampler { stop, task }
    }

    /// For the API's sessions and the relay's, the most frequent states as shares of their
    /// busy samples, and how many of them were busy on average.
    async fn finish(self) -> anyhow::Result<String> {
        let _ = self.stop.send(true);
        let (counts, samples) = self.task.await??;
        let mut out = Vec::new();
        for who in ["API", "relay", "autovacuum", "other"] {
            let mut mine: Vec<_> = counts
                .iter()
                .filter(|((w, _), _)| w == who)
                .map(|((_, what), n)| (what.as_str(), *n))
                .collect();
            let total: usize = mine.iter().map(|m| m.1).sum();
            if who != "API" && who != "relay" && total == 0 {
                continue;
            }
            mine.sort_by_key(|m| std::cmp::Reverse(m.1));
            let states = mine
                .iter()
                .take(4)
                .map(|(what, n)| format!("{what} {:.0} %", 100.0 * *n as f64 / total.max(1) as f64))
                .collect::<Vec<_>>()
                .join(", ");
            out.push(format!(
                "{who} {:.1} busy on average ({})",
                total as f64 / samples.max(1) as f64,
                if states.is_empty() {
                    "never busy".to_owned()
                } else {
                    states
                }
            ));
        }
        Ok(out.join("; "))
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = Bool)]
    b: bool,
}

#[derive(QueryableByName)]
struct TaskRef {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    user_id: String,
}

/// After a write run, the vacuum and analyze its inserts have made due, before the next run:
/// left to autovacuum, pgbench's went on in the API's next run (0.1–0.5 of a core through every
/// second round at c=16, section "2026-12-06, night").
async fn settle(url: &str) -> anyhow::Result<()> {
    execute(url, "VACUUM (ANALYZE) tasks, outbox").await?;
    Ok(())
}

async fn execute(url: &str, sql: &str) -> anyhow::Result<usize> {
    let mut conn = AsyncPgConnection::establish(url).await?;
    Ok(diesel::sql_query(sql).execute(&mut conn).await?)
}

fn user(k: usize) -> String {
    format!("bench-w{k}")
}

fn title(i: usize) -> String {
    format!("Task {i} {} benchmark", WORDS[i % WORDS.len()])
}

fn create_body(i: usize) -> Value {
    let mut body = json!({
        "title": title(i),
        "description": format!("Generated by the throughput benchmark, number {i}, to give full-text search some text."),
        "priority": PRIORITIES[i % PRIORITIES.len()],
        "tags": [format!("t{}", i % 10), "bench"],
    });
    if i.is_multiple_of(2) {
        body["due_at"] = json!(format!("2030-01-{:02}T09:00:00Z", 1 + i % 28));
    }
    body
}

/// One outbox row as the API writes it.
#[derive(QueryableByName)]
struct Written {
    #[diesel(sql_type = Text)]
    topic: String,
    #[diesel(sql_type = Text)]
    message_key: String,
    #[diesel(sql_type = Text)]
    event_type: String,
    #[diesel(sql_type = Text)]
    payload: String,
}

/// The outbox rows of a `created` change of one of `user`'s tasks (the event, then its notice),
/// as the API writes them: recorded in a transaction that is rolled back, because the relay
/// keeps no sent rows to copy.
async fn written_rows(pool: &DbPool, user: &str) -> anyhow::Result<[Written; 2]> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        id: Uuid,
    }
    let mut conn = pool.get().await?;
    let Id { id } = diesel::sql_query("SELECT id FROM tasks WHERE user_id = $1 LIMIT 1")
        .bind::<Text, _>(user)
        .get_result(&mut conn)
        .await?;
    let task = taskflow_db::tasks::find(&mut conn, user, id, false)
        .await?
        .ok_or_else(|| anyhow!("task {id} vanished"))?;
    let mut written = Vec::new();
    let rolled_back = conn
        .transaction::<(), diesel::result::Error, _>(async |conn| {
            let snapshot = task.snapshot();
            taskflow_db::outbox::record_task_change(
                conn,
                TaskEventType::Created,
                &snapshot,
                None,
                chrono::Utc::now(),
            )
            .await?;
            written = diesel::sql_query(
                "SELECT topic, message_key, event_type, payload::text AS payload FROM outbox \
                 WHERE message_key = $1 ORDER BY seq DESC LIMIT 2",
            )
            .bind::<Text, _>(snapshot.series_id.to_string())
            .load(conn)
            .await?;
            Err(diesel::result::Error::RollbackTransaction)
        })
        .await;
    if !matches!(rolled_back, Err(diesel::result::Error::RollbackTransaction)) {
        bail!("writing the template rows: {rolled_back:?}");
    }
    written.reverse();
    written
        .try_into()
        .map_err(|w: Vec<Written>| anyhow!("{} template rows written, not 2", w.len()))
}

/// The pgbench variables that stand for what the API writes: a title, a description and the two
/// outbox payloads.
async fn pgbench_vars(pool: &DbPool) -> anyhow::Result<Vec<(&'static str, String)>> {
    let [event, notice] = written_rows(pool, &user(0)).await?;
    let body = create_body(1);
    Ok(vec![
        (
            "title",
            body["title"].as_str().unwrap_or_default().to_owned(),
        ),
        (
            "description",
            body["description"].as_str().unwrap_or_default().to_owned(),
        ),
        ("event", event.payload),
        ("notice", notice.payload),
    ])
}

struct Bench<'a> {
    address: String,
    database_url: String,
    pg_url: String,
    brokers: String,
    /// Put before every topic name, as `KAFKA_TOPIC_PREFIX` does.
    topic_prefix: String,
    pool: DbPool,
    tools: &'a Tools,
    knobs: &'a Knobs,
    client: reqwest::Client,
    rows: Vec<Row>,
    /// Findings printed under the table (wait events, catch-up times).
    notes: Vec<String>,
    cpu: cpu::Cpu,
}

/// A scratch directory for wrk's scripts and pgbench's logs.
fn scratch(what: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "taskflow-bench-{}-{what}-{}",
        std::process::id(),
        Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Run a program to completion off the runtime; its stdout, or its stderr as the error.
async fn run_tool(mut command: std::process::Command) -> anyhow::Result<String> {
    let shown = format!("{command:?}");
    let out = tokio::task::spawn_blocking(move || command.output())
        .await?
        .with_context(|| format!("running {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Bench<'_> {
    /// Drive the API with wrk at `concurrency` connections for `time`.
    async fn wrk(
        &self,
        requests: &[WrkRequest],
        concurrency: usize,
        time: Duration,
    ) -> anyhow::Result<Load> {
        let dir = scratch("wrk")?;
        let script = dir.join("requests.lua");
        std::fs::write(&script, wrk_script(requests))?;
        let mut command = self.tools.command(&self.tools.wrk);
        command
            .arg(format!("--threads={}", concurrency.min(2)))
            .arg(format!("--connections={concurrency}"))
            .arg(format!("--duration={}s", time.as_secs()))
            .arg("--timeout=10s")
            .arg(format!("--script={}", script.display()))
            .arg(&self.address);
        let out = run_tool(command).await;
        let _ = std::fs::remove_dir_all(&dir);
        let out = out?;
        let line = out
            .lines()
            .find_map(|l| l.strip_prefix("WRK_RESULT "))
            .ok_or_else(|| anyhow!("wrk printed no result: {out}"))?;
        let mut f = line.split_whitespace();
        let (requests, duration, errors) =
            (micros(f.next())?, micros(f.next())?, micros(f.next())?);
        let mut next = || micros(f.next()).map(Duration::from_micros);
        Ok(Load {
            per_second: requests as f64 / (duration as f64 / 1e6),
            p50: next()?,
            p95: next()?,
            p99: next()?,
            max: next()?,
            errors,
        })
    }

    /// Run `script` in pgbench against `url` with `protocol` as the API's driver speaks it for
    /// that work: `prepared` for statements the connection keeps prepared, `extended` (planned
    /// for their parameters each time) for the others.
    async fn pgbench(
        &self,
        url: &str,
        protocol: &str,
        script: &str,
        vars: &[(&str, String)],
        concurrency: usize,
        time: Duration,
    ) -> anyhow::Result<Load> {
        let dir = scratch("pgbench")?;
        let file = dir.join("script.sql");
        std::fs::write(&file, script)?;
        let mut command = self.tools.command(&self.tools.pgbench);
        command
            .args(["--no-vacuum", "--log"])
            .arg(format!("--protocol={protocol}"))
            .arg(format!("--log-prefix={}", dir.join("log").display()))
            .arg(format!("--client={concurrency}"))
            .arg(format!("--jobs={}", concurrency.min(2)))
            .arg(format!("--time={}", time.as_secs()))
            .arg(format!("--file={}", file.display()));
        for (name, value) in vars {
            command.arg(format!("--define={name}={value}"));
        }
        // In the session settings of the API's pools.
        command.arg(taskflow_db::pool::without_jit(url));
        let outcome = async {
            let out = run_tool(command).await?;
            let tps: f64 = out
                .lines()
                .find_map(|l| l.strip_prefix("tps = "))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| anyhow!("pgbench printed no tps: {out}"))?;
            let failed: u64 = out
                .lines()
                .find_map(|l| l.strip_prefix("number of failed transactions: "))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            // Per-transaction log lines: client, transaction, latency in µs, ...
            let mut latencies = Vec::new();
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                if path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("log"))
                {
                    for line in std::fs::read_to_string(&path)?.lines() {
                        if let Some(us) =
                            line.split_whitespace().nth(2).and_then(|v| v.parse().ok())
                        {
                            latencies.push(Duration::from_micros(us));
                        }
                    }
                }
            }
            let mut load = Load::from_latencies(latencies.len(), time, latencies, failed);
            load.per_second = tps;
            anyhow::Ok(load)
        }
        .await;
        let _ = std::fs::remove_dir_all(&dir);
        outcome
    }

    /// Publishes the relay saw fail so far (`taskflow_outbox_publish_failures_total`, every
    /// topic): each was tried again.
    async fn publish_failures(&self) -> anyhow::Result<f64> {
        Ok(taskflow_test_support::process::metric_sum(
            &self.metrics_text().await?,
            "taskflow_outbox_publish_failures_total",
        ))
    }

    async fn count(&self, sql: &str) -> anyhow::Result<i64> {
        let mut conn = self.pool.get().await?;
        Ok(diesel::sql_query(sql)
            .get_result::<Count>(&mut conn)
            .await?
            .n)
    }

    /// Poll until no outbox row waits to be published; returns when that was seen.
    async fn drained(&self) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        loop {
            let mut conn = self.pool.get().await?;
            let pending = diesel::sql_query("SELECT EXISTS (SELECT 1 FROM outbox) AS b")
                .get_result::<Flag>(&mut conn)
                .await?
                .b;
            if !pending {
                return Ok(Instant::now());
            }
            if Instant::now() >= deadline {
                let error = diesel::sql_query(
                    "SELECT coalesce(max(last_error), 'none recorded') AS v FROM outbox",
                )
                .get_result::<Setting>(&mut conn)
                .await?
                .v;
                bail!("the outbox still holds unsent rows after {DRAIN_TIMEOUT:?} (last error: {error})");
            }
            drop(conn);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.address))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let bytes = response.bytes().await?;
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }

    /// The application's `/metrics`.
    async fn metrics_text(&self) -> anyhow::Result<String> {
        Ok(self
            .client
            .get(format!("{}/metrics", self.address))
            .send()
            .await?
            .text()
            .await?)
    }

    /// The relay's phase histograms (`taskflow_outbox_relay_seconds`) from `/metrics`: per
    /// phase, (sum of seconds, passes).
    async fn relay_phases(&self) -> anyhow::Result<HashMap<String, (f64, f64)>> {
        let text = self.metrics_text().await?;
        let mut phases: HashMap<String, (f64, f64)> = HashMap::new();
        for line in text.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Some((name, labels)) = series.split_once("{phase=\"") else {
                continue;
            };
            let phase = labels.trim_end_matches("\"}").to_owned();
            let value: f64 = value.parse()?;
            match name {
                "taskflow_outbox_relay_seconds_sum" => phases.entry(phase).or_default().0 = value,
                "taskflow_outbox_relay_seconds_count" => phases.entry(phase).or_default().1 = value,
                _ => {}
            }
        }
        Ok(phases)
    }

    /// A note with the relay's mean phase times between two [`Bench::relay_phases`] readings.
    fn relay_note(
        what: &str,
        before: &HashMap<String, (f64, f64)>,
        after: &HashMap<String, (f64, f64)>,
    ) -> String {
        let mean = |phase: &str| {
            let (s0, n0) = before.get(phase).copied().unwrap_or_default();
            let (s1, n1) = after.get(phase).copied().unwrap_or_default();
            ((s1 - s0) * 1000.0 / (n1 - n0).max(1.0), n1 - n0)
        };
        let (claim, _) = mean("claim");
        let (publish, _) = mean("publish");
        let (pass, passes) = mean("pass");
        let (vacuum, vacuums) = mean("vacuum");
        format!(
            "relay during {what}: {passes} passes, mean {claim:.1} ms to claim, {publish:.1} ms to publish (until acknowledged), {pass:.1} ms in all (checkout to commit); {vacuums} vacuums of the outbox, {vacuum:.1} ms each"
        )
    }

    /// Create and update at each concurrency, each beside pgbench doing the same writes.
    async fn writes(&mut self, tokens: &[String]) -> anyhow::Result<()> {
        let vars = pgbench_vars(&self.pool).await?;
        execute(&self.pg_url, PGBENCH_SEED).await?;
        let creates: Vec<WrkRequest> = (0..BODIES)
            .map(|i| WrkRequest {
                method: "POST",
                path: format!("/api/{}/tasks", user(i % USERS)),
                token: tokens[i % USERS].clone(),
                body: Some(create_body(i).to_string()),
            })
            .collect();
        for c in WRITE_CONCURRENCY {
            let rounds = if RATIO_TARGETS.contains(&c) {
                RATIO_ROUNDS
            } else {
                1
            };
            self.write_run(
                "POST /tasks (create)",
                &creates,
                c,
                (PGBENCH_CREATE, &vars),
                rounds,
            )
            .await?;
        }
        let mut conn = self.pool.get().await?;
        let tasks: Vec<TaskRef> = diesel::sql_query(
            "SELECT id::text AS id, user_id FROM tasks WHERE user_id LIKE 'bench-w%' ORDER BY random() LIMIT 10000",
        )
        .load(&mut conn)
        .await?;
        drop(conn);
        let index: HashMap<String, usize> = (0..USERS).map(|k| (user(k), k)).collect();
        let updates: Vec<WrkRequest> = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| WrkRequest {
                method: "PATCH",
                path: format!("/api/{}/tasks/{}", t.user_id, t.id),
                token: tokens[index[&t.user_id]].clone(),
                body: Some(
                    json!({"title": format!("{} edited {UNIQUE}", title(i)), "priority": PRIORITIES[(i + 1) % PRIORITIES.len()]})
                        .to_string(),
                ),
            })
            .collect();
        for c in WRITE_CONCURRENCY {
            self.write_run(
                "PATCH /tasks/{id} (update)",
                &updates,
                c,
                (PGBENCH_UPDATE, &vars),
                1,
            )
            .await?;
        }
        Ok(())
    }

    /// One write run: the API under wrk with pg_stat_activity sampled, the relay catching up,
    /// and pgbench at the same concurrency, in `rounds` rounds that alternate which goes first
    /// (the API, pgbench, pgbench, the API, …): the two cores' speed drifts within a run, and
    /// a drift then weighs on both sides alike. The row gives the mean rates of the rounds and
    /// the highest of their percentiles.
    async fn write_run(
        &mut self,
        what: &str,
        requests: &[WrkRequest],
        c: usize,
        (script, vars): (&str, &[(&str, String)]),
        rounds: usize,
    ) -> anyhow::Result<()> {
        let (mut api, mut pg) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let label = if rounds > 1 {
                format!("{what} c={c}, round {} of {rounds}", round + 1)
            } else {
                format!("{what} c={c}")
            };
            if round % 2 == 1 {
                pg.push(self.pgbench_round(&label, script, vars, c).await?);
            }
            api.push(self.api_round(&label, requests, c).await?);
            if round % 2 == 0 {
                pg.push(self.pgbench_round(&label, script, vars, c).await?);
            }
        }
        if rounds > 1 {
            let ratios: Vec<String> = api
                .iter()
                .zip(&pg)
                .map(|(a, p)| format!("{:.2}", a.per_second / p.per_second))
                .collect();
            self.notes.push(format!(
                "{what} c={c}: ratio by round {} (the row: their mean rates)",
                ratios.join(", ")
            ));
        }
        self.rows.push(Row::load(
            what,
            c,
            Load::pooled(&api),
            Some(Load::pooled(&pg)),
        ));
        Ok(())
    }

    /// The API's part of a write run: wrk for the write time, then the relay's catch-up.
    async fn api_round(
        &mut self,
        label: &str,
        requests: &[WrkRequest],
        c: usize,
    ) -> anyhow::Result<Load> {
        let time = self.knobs.write_time;
        let failures_before = self.publish_failures().await?;
        let phases_before = self.relay_phases().await?;
        let sampler = WaitSampler::start(&self.database_url);
        let cpu_before = self.cpu.now();
        let load = self
            .wrk(requests, c, time)
            .await
            .with_context(|| label.to_owned())?;
        let done = Instant::now();
        let waits = sampler.finish().await?;
        let caught_up = self.drained().await? - done;
        // The relay's catch-up is part of what the requests cost.
        let api_cpu = self.cpu.now().per(
            &cpu_before,
            (&load, time),
            "request",
            Some("this process (API, relay)"),
            "wrk",
        );
        // A publish that failed waits out its backoff, and its key's later rows with it: the
        // catch-up can then take seconds.
        let retried = self.publish_failures().await? - failures_before;
        let phases_after = self.relay_phases().await?;
        settle(&self.database_url).await?;
        self.notes.push(format!(
            "{label}: sessions not idle: {waits}; the relay caught up {} after the load; {retried} publishes failed and were tried again",
            ms(caught_up)
        ));
        self.notes.push(format!("{label}: {api_cpu}"));
        self.notes.push(Self::relay_note(
            &format!("{label} and its catch-up"),
            &phases_before,
            &phases_after,
        ));
        if load.errors > 0 {
            bail!("{label}: {} requests failed", load.errors);
        }
        Ok(load)
    }

    /// pgbench's part of a write run.
    async fn pgbench_round(
        &mut self,
        label: &str,
        script: &str,
        vars: &[(&str, String)],
        c: usize,
    ) -> anyhow::Result<Load> {
        let time = self.knobs.write_time;
        let cpu_before = self.cpu.now();
        let pg = self
            .pgbench(&self.pg_url, "prepared", script, vars, c, time)
            .await
            .with_context(|| format!("pgbench for {label}"))?;
        let pg_cpu = self
            .cpu
            .now()
            .per(&cpu_before, (&pg, time), "transaction", None, "pgbench");
        settle(&self.pg_url).await?;
        self.notes.push(format!("{label}: pgbench's run: {pg_cpu}"));
        Ok(pg)
    }

    /// 10,000 tasks of one user, then each list order and a search, beside pgbench running the
    /// very SQL the API sends for that page.
    async fn lists(&mut self) -> anyhow::Result<()> {
        execute(
            &self.database_url,
            &format!(
                "INSERT INTO tasks (id, user_id, title, description, priority, tags, due_at, series_id, created_at, updated_at) \
                 SELECT gen_random_uuid(), '{LIST_USER}', \
                        'Task ' || i || ' ' || (ARRAY['{}'])[1 + i % {}] || ' benchmark', \
                        'Generated by the throughput benchmark, number ' || i || ', to give full-text search some text.', \
                        i % 5, ARRAY['t' || (i % 10), 'bench'], \
                        CASE WHEN i % 2 = 0 THEN timestamptz '2030-01-01T09:00:00Z' + (i % 28) * interval '1 day' END, \
                        gen_random_uuid(), now() - i * interval '1 second', now() \
                 FROM generate_series(0, {}) i",
                WORDS.join("','"),
                WORDS.len(),
                LIST_TASKS - 1
            ),
        )
        .await?;
        // The writes before leave both databases dead rows and unvacuumed inserts, which
        // autovacuum took up during the first list runs (a quarter of a core in some), charged
        // to whichever side ran then. Reads are measured on settled tables.
        for url in [&self.database_url, &self.pg_url] {
            execute(url, "VACUUM (ANALYZE)").await?;
        }
        let token = backend::auth::issue_token(SECRET, LIST_USER, Duration::from_secs(3600))?;
        let path = format!("/api/{LIST_USER}/tasks");
        for query in LIST_QUERIES {
            let query = format!("{query}&limit={LIST_LIMIT}");
            let (status, page) = self
                .call(Method::GET, &format!("{path}?{query}"), &token, None)
                .await?;
            let items = page["items"].as_array().map_or(0, Vec::len);
            if status != StatusCode::OK || items != LIST_LIMIT {
                bail!("GET {path}?{query}: {status}, {items} items");
            }
            let requests = [WrkRequest {
                method: "GET",
                path: format!("{path}?{query}"),
                token: token.clone(),
                body: None,
            }];
            let sampler = WaitSampler::start(&self.database_url);
            let cpu_before = self.cpu.now();
            let load = self
                .wrk(&requests, LIST_CONCURRENCY, self.knobs.list_time)
                .await?;
            let api_cpu = self.cpu.now().per(
                &cpu_before,
                (&load, self.knobs.list_time),
                "page",
                Some("this process"),
                "wrk",
            );
            let waits = sampler.finish().await?;
            // As the API speaks it: a page without value filters is a statement kept prepared.
            let kept = backend::listing::kept_prepared(
                &ListQuery::parse(&query).map_err(|e| anyhow!("{query}: {e:?}"))?,
            );
            // In the API's sessions, which plan a kept statement once for all users.
            let url = if kept {
                taskflow_db::pool::generic_plans(&self.database_url)
            } else {
                self.database_url.clone()
            };
            let cpu_before = self.cpu.now();
            let pg = self
                .pgbench(
                    &url,
                    if kept { "prepared" } else { "extended" },
                    &list_script(&query)?,
                    &[
                        ("user", LIST_USER.to_owned()),
                        ("q", SEARCH_WORD.to_owned()),
                        ("limit", (LIST_LIMIT + 1).to_string()),
                    ],
                    LIST_CONCURRENCY,
                    self.knobs.list_time,
                )
                .await?;
            let pg_cpu = self.cpu.now().per(
                &cpu_before,
                (&pg, self.knobs.list_time),
                "page",
                None,
                "pgbench",
            );
            self.notes.push(format!(
                "GET /tasks?{query}: sessions not idle: {waits}; {api_cpu}; pgbench's run: {pg_cpu}"
            ));
            if load.errors > 0 {
                bail!("GET {path}?{query}: {} requests failed", load.errors);
            }
            self.rows.push(Row::load(
                format!("GET /tasks?{query} ({LIST_TASKS} tasks)"),
                LIST_CONCURRENCY,
                load,
                Some(pg),
            ));
        }
        Ok(())
    }

    /// Creates at a fixed rate from the bench's own client, and when each one's event arrives.
    async fn event_latency(&mut self) -> anyhow::Result<()> {
        let user = "bench-events";
        let token = Arc::new(backend::auth::issue_token(
            SECRET,
            user,
            Duration::from_secs(3600),
        )?);
        let total = self.knobs.rate * self.knobs.event_time.as_secs() as usize;
        let topic = format!("{}{TASK_EVENTS}", self.topic_prefix);
        let consumer = consumer_at_end(&self.brokers, &topic).await?;
        let phases_before = self.relay_phases().await?;
        let (stop, stopped) = watch::channel(false);
        let arrivals = tokio::spawn(collect_created(consumer, user.to_owned(), total, stopped));
        let mut ticks =
            tokio::time::interval(Duration::from_secs_f64(1.0 / self.knobs.rate as f64));
        let start = Instant::now();
        let mut requests = Vec::with_capacity(total);
        for i in 0..total {
            ticks.tick().await;
            let (client, address, token) =
                (self.client.clone(), self.address.clone(), token.clone());
            requests.push(tokio::spawn(async move {
                let t0 = Instant::now();
                let response = client
                    .post(format!("{address}/api/{user}/tasks"))
                    .bearer_auth(token.as_str())
                    .json(&create_body(i))
                    .send()
                    .await?;
                let status = response.status();
                let body: Value = response.json().await?;
                let returned = Instant::now();
                if status != StatusCode::CREATED {
                    bail!("create: {status}: {body}");
                }
                let id = body["id"]
                    .as_str()
                    .and_then(|s| Uuid::parse_str(s).ok())
                    .ok_or_else(|| anyhow!("no id in {body}"))?;
                anyhow::Ok((id, returned, returned - t0))
            }));
        }
        let mut created = Vec::with_capacity(total);
        for r in requests {
            created.push(r.await??);
        }
        let elapsed = start.elapsed();
        let arrivals = match tokio::time::timeout(ARRIVAL_TIMEOUT, arrivals).await {
            Ok(joined) => joined??,
            Err(_) => {
                let _ = stop.send(true);
                bail!("not every created event reached {TASK_EVENTS} within {ARRIVAL_TIMEOUT:?}");
            }
        };
        let mut latencies = Vec::with_capacity(total);
        for (id, returned, ..) in &created {
            let at = arrivals
                .at
                .get(id)
                .ok_or_else(|| anyhow!("the created event of task {id} never arrived"))?;
            latencies.push(at.saturating_duration_since(*returned));
        }
        let rate = self.knobs.rate;
        self.rows.push(Row::load(
            format!("POST /tasks at a fixed {rate}/s"),
            0,
            Load::from_latencies(total, elapsed, created.iter().map(|c| c.2).collect(), 0),
            None,
        ));
        let mut event = Load::from_latencies(total, elapsed, latencies, 0);
        event.errors = arrivals.duplicates as u64;
        self.notes.push(format!(
            "events at {rate}/s: {} offsets handed to the bench consumer again by the broker's fetch path (ignored)",
            arrivals.redelivered
        ));
        let mut after_send = arrivals.after_send.clone();
        after_send.sort_unstable();
        self.notes.push(format!(
            "events at {rate}/s, from the producer's message timestamp to the bench consumer (broker and fetch, 1 ms resolution): p50 {}, p99 {}",
            ms(percentile(&after_send, 50.0)),
            ms(percentile(&after_send, 99.0))
        ));
        let phases_after = self.relay_phases().await?;
        self.notes.push(Self::relay_note(
            &format!("events at {rate}/s"),
            &phases_before,
            &phases_after,
        ));
        self.rows.push(Row::load(
            format!("create response → `created` read by a consumer at {rate}/s"),
            0,
            event,
            None,
        ));
        Ok(())
    }

    /// The relay draining a backlog inserted in one transaction (copies of the rows of a created
    /// task, 500 keys).
    async fn relay_backlog(&mut self) -> anyhow::Result<()> {
        let backlog = self.knobs.backlog;
        self.drained().await?;
        let [event, notice] = written_rows(&self.pool, &user(0)).await?;
        let mut conn = AsyncPgConnection::establish(&self.database_url).await?;
        let mut insert = diesel::sql_query(format!(
            "INSERT INTO outbox (id, topic, message_key, event_type, payload) \
             SELECT gen_random_uuid(), r.topic, r.message_key || '-' || (i % 500), r.event_type, \
                    r.payload::jsonb \
             FROM (VALUES ($1, $2, $3, $4), ($5, $6, $7, $8)) r(topic, message_key, event_type, payload), \
                  generate_series(1, {}) i",
            backlog / 2
        ))
        .into_boxed();
        for row in [event, notice] {
            insert = insert
                .bind::<Text, _>(row.topic)
                .bind::<Text, _>(row.message_key)
                .bind::<Text, _>(row.event_type)
                .bind::<Text, _>(row.payload);
        }
        insert.execute(&mut conn).await?;
        let t0 = Instant::now();
        let done = self.drained().await?;
        let rows = backlog / 2 * 2;
        self.rows.push(Row::value(
            format!("relay draining a backlog of {rows} outbox rows"),
            format!(
                "{:.0} rows/s ({:.2} s)",
                rows as f64 / (done - t0).as_secs_f64(),
                (done - t0).as_secs_f64()
            ),
        ));
        Ok(())
    }
}

/// The API's own SQL for the first page of `query`, with pgbench variables for its parameters.
fn list_script(query: &str) -> anyhow::Result<String> {
    let parsed = ListQuery::parse(query).map_err(|e| anyhow!("{query}: {e:?}"))?;
    let mut sql = backend::listing::sql(&parsed);
    // Parameters in listing's bind order: the user, the search text if any, the limit.
    let mut names = vec!["user"];
    if parsed.q.is_some() {
        names.push("q");
    }
    names.push("limit");
    for (n, name) in names.iter().enumerate().rev() {
        sql = sql.replace(&format!("${}", n + 1), &format!(":{name}"));
    }
    Ok(format!("{sql};\n"))
}

/// A consumer of `topic` assigned at the current end of every partition, so it sees exactly what
/// is published from now on without waiting for a group rebalance.
async fn consumer_at_end(brokers: &str, topic: &str) -> anyhow::Result<StreamConsumer> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bench-{}", Uuid::now_v7()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", FETCH_WAIT_MS);
    let probe: BaseConsumer = config.create().context("creating the Kafka consumer")?;
    let topic = topic.to_owned();
    let assignment = tokio::task::spawn_blocking(move || {
        let timeout = Duration::from_secs(10);
        let metadata = probe.fetch_metadata(Some(&topic), timeout)?;
        let partitions = metadata
            .topics()
            .first()
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        if partitions == 0 {
            bail!("{topic} has no partitions");
        }
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            let (_, high) = probe.fetch_watermarks(&topic, p, timeout)?;
            tpl.add_partition_offset(&topic, p, Offset::Offset(high))?;
        }
        anyhow::Ok(tpl)
    })
    .await??;
    let consumer: StreamConsumer = config.create().context("creating the Kafka consumer")?;
    consumer.assign(&assignment)?;
    Ok(consumer)
}

struct Arrivals {
    /// When each task's `created` event first arrived.
    at: HashMap<Uuid, Instant>,
    /// For each, from the message's timestamp (set by the relay's producer when it handed the
    /// message over) to its arrival: the broker's and the consumer's share of the latency.
    after_send: Vec<Duration>,
    /// The same task's `created` event at another offset: published twice.
    duplicates: usize,
    /// A (partition, offset) the consumer had already been given: redelivered by the fetch
    /// path, not published twice.
    redelivered: usize,
}

/// Note when each of `user`'s `created` events arrives, until `want` did or `stop` turns true.
async fn collect_created(
    consumer: StreamConsumer,
    user: String,
    want: usize,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Arrivals> {
    let mut arrivals = Arrivals {
        at: HashMap::with_capacity(want),
        after_send: Vec::with_capacity(want),
        duplicates: 0,
        redelivered: 0,
    };
    let mut offsets = HashSet::with_capacity(want);
    while arrivals.at.len() < want {
        let message = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            m = consumer.recv() => m.context("reading task-events")?,
        };
        let at = Instant::now();
        if !offsets.insert((message.partition(), message.offset())) {
            arrivals.redelivered += 1;
            continue;
        }
        let Ok(body) = serde_json::from_slice::<Value>(message.payload().unwrap_or_default())
        else {
            continue;
        };
        if body["type"] != "com.taskflow.task.created" || body["data"]["user_id"] != *user {
            continue;
        }
        let id = body["data"]["task_id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| anyhow!("a created event without data.task_id: {body}"))?;
        if arrivals.at.insert(id, at).is_some() {
            arrivals.duplicates += 1;
        } else if let Some(sent) = message.timestamp().to_millis() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as i64;
            arrivals
                .after_send
                .push(Duration::from_millis((now - sent).max(0) as u64));
        }
    }
    Ok(arrivals)
}

impl Bench<'_> {
    async fn measure(mut self, server: &ServerFacts, started: Instant) -> anyhow::Result<()> {
        let load_before = load_average();
        let tokens = (0..USERS)
            .map(|k| backend::auth::issue_token(SECRET, &user(k), Duration::from_secs(3600)))
            .collect::<anyhow::Result<Vec<_>>>()?;

        // The relay's first publish after startup (a cold Kafka producer), then an idle relay's
        // single event.
        let mut single_event = Vec::new();
        for i in 0..2 {
            let t0 = Instant::now();
            let (status, body) = self
                .call(
                    Method::POST,
                    &format!("/api/{}/tasks", user(0)),
                    &tokens[0],
                    Some(&json!({ "title": format!("Warm-up {i}") })),
                )
                .await?;
            if status != StatusCode::CREATED {
                bail!("warm-up create: {status}: {body}");
            }
            single_event.push(self.drained().await? - t0);
        }

        // First, while task-events is short: the workers' groups read it from the start. Then
        // the event path, while the broker holds few record batches: Tansu's memory engine lists
        // every batch of a partition on each fetch, so after the write runs (a relay that keeps
        // up writes many small batches) it would measure the dev broker's history, not TaskFlow
        // (README "Performance", section "last").
        self.workers().await?;
        self.event_latency().await?;
        self.writes(&tokens).await?;
        self.lists().await?;
        self.relay_backlog().await?;
        self.rows.push(Row::value(
            "relay cold start: first create → outbox drained",
            ms(single_event[0]),
        ));
        self.rows.push(Row::value(
            "idle relay: one create → outbox drained",
            ms(single_event[1]),
        ));
        let rss = proc_status_mib("self", "VmRSS").unwrap_or(f64::NAN);
        let hwm = proc_status_mib("self", "VmHWM").unwrap_or(f64::NAN);
        self.rows.push(Row::value(
            "memory of the bench process (server + relay + event client; wrk and pgbench run apart): VmRSS / peak VmHWM",
            format!("{rss:.1} MiB / {hwm:.1} MiB"),
        ));
        let tasks = self.count("SELECT count(*) AS n FROM tasks").await?;

        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let machine = format!(
            "nproc = {cpus} ({}), load average at start {load_before}, at end {}",
            cpu_model(),
            load_average()
        );
        let fsync_note = if server.fsync == "off" {
            " (**fsync=off**: numbers are optimistic for durable storage)"
        } else {
            ""
        };
        let autovacuum_note = if server.sees_autovacuum {
            ""
        } else {
            " (autovacuum not sampled: this role lacks pg_read_all_stats)"
        };
        let setup = format!(
            "PostgreSQL {} with fsync={}{fsync_note}; Kafka at {}; wrk {} s per write run and {} s per list, {USERS} users, DB pool {DB_POOL_SIZE}; \
             pgbench on the same server; everything on 127.0.0.1{autovacuum_note}",
            server.version, server.fsync, self.brokers, self.knobs.write_time.as_secs(), self.knobs.list_time.as_secs()
        );
        println!();
        println!("## TaskFlow beside PostgreSQL");
        println!();
        println!("- Machine: {machine}");
        println!("- {setup}");
        println!();
        println!("| Measurement | c | TaskFlow | p50 | p95 | p99 | errors | PostgreSQL, same work | p50 | p99 | ratio |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        for row in &self.rows {
            row.print();
        }
        println!();
        println!(
            "c = 0: a fixed rate (open loop) instead of fixed connections. Each change writes 2 outbox rows (deleted once Kafka acknowledged them); {tasks} tasks at the end. \
             For the event latency, errors counts `created` events published twice. Run time: {:.1} s.",
            started.elapsed().as_secs_f64()
        );
        for note in &self.notes {
            println!("- {note}");
        }
        let report = json!({
            "machine": machine, "setup": setup,
            "rows": self.rows.iter().map(Row::json).collect::<Vec<_>>(),
            "notes": self.notes,
            "seconds": started.elapsed().as_secs_f64(),
        });
        let out = match std::env::var_os("BENCH_OUT") {
            Some(p) => PathBuf::from(p),
            // The bench runs from its package directory; put the report in cargo's target dir.
            None => PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../bench/throughput.json"),
        };
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&out, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", out.display()))?;
        eprintln!("bench: report written to {}", out.display());
        Ok(())
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// A field of /proc/<pid>/status such as `VmRSS`, in MiB (`pid` may be `self`).
fn proc_status_mib(pid: &str, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
