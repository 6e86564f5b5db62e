//! Throughput and latency of the task API and its event path, printed as a Markdown table.
//!
//! `cargo bench -p backend --bench throughput` with `DATABASE_URL` (a user that may CREATE
//! DATABASE) and `KAFKA_BROKERS`. It creates and migrates its own `bench_<uuid>` database,
//! starts the real application in-process on 127.0.0.1:0 with the outbox relay publishing to
//! Kafka, drives it with concurrent HTTP clients and drops the database at the end.
//!
//! Knobs: `BENCH_N` creates (and as many PATCHes, default 5000), `BENCH_GETS` requests per list
//! query (default 1000). Any failed request, missing event or stuck outbox makes it exit 1.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use backend::configuration::Settings;
use backend::startup::Application;
use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use shared_events::topics::{TASK_EVENTS, TOPICS};
use taskflow_db::migrations::create_database;
use taskflow_db::DbPool;
use tokio::sync::watch;
use url::Url;
use uuid::Uuid;

const CLIENTS: usize = 16;
const DB_POOL_SIZE: usize = 16;
const SECRET: &str = "taskflow-bench-secret";
/// Words put into titles, one per task in turn, so `q=<word>` matches an eighth of the tasks.
const WORDS: [&str; 8] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
];
const SEARCH_WORD: &str = "bravo";
const PRIORITIES: [&str; 5] = ["none", "low", "medium", "high", "urgent"];
const LIST_LIMIT: usize = 50;
/// How long the outbox may take to drain, and the events to arrive, before the run fails.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(60);
/// The bench consumer's fetch wait: short, so that it adds little to the measured event latency.
const FETCH_WAIT_MS: &str = "10";

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

/// Create the database, run the bench against it, and drop the database whatever happened.
async fn bench() -> anyhow::Result<()> {
    let admin = admin_url()?;
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let n = env_usize("BENCH_N", 5000)?;
    let gets = env_usize("BENCH_GETS", 1000)?;
    let name = format!("bench_{}", Uuid::now_v7().simple());

    let mut conn = AsyncPgConnection::establish(admin.as_str())
        .await
        .context("connecting to DATABASE_URL")?;
    let server = server_facts(&mut conn).await?;
    drop(conn);

    let started = Instant::now();
    let outcome = async {
        let url = create_database(admin.as_str(), &name, None).await?;
        run(&url, &brokers, n, gets, &server, started).await
    }
    .await;

    let dropped = async {
        let mut conn = AsyncPgConnection::establish(admin.as_str()).await?;
        // FORCE: the relay's LISTEN connection and the app's pool are still open.
        diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await?;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = &dropped {
        eprintln!("bench: could not drop database {name}: {e:#}");
    }
    outcome?;
    eprintln!(
        "bench: finished in {:.1} s; database {name} dropped",
        started.elapsed().as_secs_f64()
    );
    dropped
}

#[derive(QueryableByName)]
struct Setting {
    #[diesel(sql_type = Text)]
    v: String,
}

struct ServerFacts {
    version: String,
    fsync: String,
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
    })
}

fn settings(database_url: &str, brokers: &str) -> Settings {
    let mut s = Settings::local(database_url, SECRET);
    s.common.db_pool_size = DB_POOL_SIZE;
    s.common.kafka_brokers = brokers.to_owned();
    s.events.poll_interval = Duration::from_millis(200);
    s.events.max_backoff = Duration::from_secs(2);
    s.events.publish_timeout = Duration::from_secs(5);
    s
}

/// Everything between creating and dropping the database.
async fn run(
    database_url: &str,
    brokers: &str,
    n: usize,
    gets: usize,
    server: &ServerFacts,
    started: Instant,
) -> anyhow::Result<()> {
    let pool = taskflow_db::pool(database_url, 2)?;
    taskflow_kafka::admin::ensure_topics(brokers, &TOPICS, 1, "")
        .await
        .context("creating the topics (is KAFKA_BROKERS reachable?)")?;

    let app = Application::build(&settings(database_url, brokers))
        .await
        .context("building the application")?;
    let address = format!("http://127.0.0.1:{}", app.port());
    let app_task = tokio::spawn(app.run_until_stopped());
    let result = measure(&address, brokers, &pool, n, gets, server, started).await;
    // Dropping the runtime at exit stops the server; the relay's connections end with DROP ... FORCE.
    app_task.abort();
    pool.close();
    result
}

struct Api {
    client: reqwest::Client,
    address: String,
    user: String,
    token: String,
}

impl Api {
    /// Send, read the whole body, and fail unless the status is `expect`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        expect: StatusCode,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.address))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .with_context(|| format!("{method} {path}: reading the body"))?;
        if status != expect {
            let text = String::from_utf8_lossy(&bytes);
            bail!(
                "{method} {path}: expected {expect}, got {status}: {}",
                text.chars().take(500).collect::<String>()
            );
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).with_context(|| format!("{method} {path}: body is not JSON"))
    }

    fn tasks(&self) -> String {
        format!("/api/{}/tasks", self.user)
    }
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

/// One request's outcome.
struct Sample<T> {
    index: usize,
    latency: Duration,
    value: T,
}

struct Phase<T> {
    samples: Vec<Sample<T>>,
    start: Instant,
    elapsed: Duration,
}

impl<T> Phase<T> {
    fn latencies(&self) -> Vec<Duration> {
        self.samples.iter().map(|s| s.latency).collect()
    }

    fn per_second(&self) -> f64 {
        self.samples.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// Run `op(0..total)` on `clients` concurrent tasks; the first error stops every client.
async fn drive<T, F, Fut>(total: usize, clients: usize, op: F) -> anyhow::Result<Phase<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (op, next, failed) = (op.clone(), next.clone(), failed.clone());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                // UFCS: diesel-async's RunQueryDsl::load would shadow the method.
                while !AtomicBool::load(&failed, Ordering::Relaxed) {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= total {
                        break;
                    }
                    let t0 = Instant::now();
                    match op(index).await {
                        Ok(value) => samples.push(Sample {
                            index,
                            latency: t0.elapsed(),
                            value,
                        }),
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                    }
                }
                Ok(samples)
            })
        })
        .collect();
    let mut samples = Vec::with_capacity(total);
    let mut first_error = None;
    for worker in workers {
        match worker.await {
            Ok(Ok(s)) => samples.extend(s),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(anyhow!("a client task died: {e}"));
            }
        }
    }
    let elapsed = start.elapsed();
    if let Some(e) = first_error {
        return Err(e);
    }
    if samples.len() != total {
        bail!("{} of {total} requests completed", samples.len());
    }
    samples.sort_by_key(|s| s.index);
    Ok(Phase {
        samples,
        start,
        elapsed,
    })
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn count(pool: &DbPool, sql: &str) -> anyhow::Result<i64> {
    let mut conn = pool.get().await?;
    Ok(diesel::sql_query(sql)
        .get_result::<Count>(&mut conn)
        .await?
        .n)
}

/// Poll until no outbox row waits to be published; returns when that was seen.
async fn drained(pool: &DbPool) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let pending = count(
            pool,
            "SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL",
        )
        .await?;
        if pending == 0 {
            return Ok(Instant::now());
        }
        if Instant::now() >= deadline {
            let mut conn = pool.get().await?;
            let error = diesel::sql_query(
                "SELECT coalesce(max(last_error), 'none recorded') AS v FROM outbox WHERE sent_at IS NULL",
            )
            .get_result::<Setting>(&mut conn)
            .await?
            .v;
            bail!(
                "the outbox still holds {pending} unsent rows after {DRAIN_TIMEOUT:?} (last error: {error})"
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A consumer of `task-events` assigned at the current end of every partition, so it sees exactly
/// what is published from now on without waiting for a group rebalance.
async fn consumer_at_end(brokers: &str) -> anyhow::Result<StreamConsumer> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bench-{}", Uuid::now_v7()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", FETCH_WAIT_MS);
    let probe: BaseConsumer = config.create().context("creating the Kafka consumer")?;
    let assignment = tokio::task::spawn_blocking(move || {
        let timeout = Duration::from_secs(10);
        let metadata = probe.fetch_metadata(Some(TASK_EVENTS), timeout)?;
        let partitions = metadata
            .topics()
            .first()
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        if partitions == 0 {
            bail!("{TASK_EVENTS} has no partitions");
        }
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            let (_, high) = probe.fetch_watermarks(TASK_EVENTS, p, timeout)?;
            tpl.add_partition_offset(TASK_EVENTS, p, Offset::Offset(high))?;
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
        }
    }
    Ok(arrivals)
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

struct Row {
    what: String,
    count: String,
    rate: String,
    latencies: Option<Vec<Duration>>,
}

impl Row {
    fn new(what: impl Into<String>, count: impl Into<String>, rate: impl Into<String>) -> Row {
        Row {
            what: what.into(),
            count: count.into(),
            rate: rate.into(),
            latencies: None,
        }
    }

    fn with_latencies(mut self, mut latencies: Vec<Duration>) -> Row {
        latencies.sort_unstable();
        self.latencies = Some(latencies);
        self
    }

    fn print(&self) {
        let (p50, p95, p99, max) = match &self.latencies {
            Some(l) => (
                ms(percentile(l, 50.0)),
                ms(percentile(l, 95.0)),
                ms(percentile(l, 99.0)),
                ms(l.last().copied().unwrap_or_default()),
            ),
            None => Default::default(),
        };
        println!(
            "| {} | {} | {} | {p50} | {p95} | {p99} | {max} |",
            self.what, self.count, self.rate
        );
    }
}

/// A field of /proc/self/status such as `VmRSS`, in MiB.
fn proc_status_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
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

async fn measure(
    address: &str,
    brokers: &str,
    pool: &DbPool,
    n: usize,
    gets: usize,
    server: &ServerFacts,
    started: Instant,
) -> anyhow::Result<()> {
    let user = format!("bench-{}", Uuid::now_v7().simple());
    let api = Arc::new(Api {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()?,
        address: address.to_owned(),
        token: backend::auth::issue_token(SECRET, &user, Duration::from_secs(3600))?,
        user: user.clone(),
    });
    let load_before = load_average();

    // Open the client connections before anything is timed.
    {
        let api = api.clone();
        drive(CLIENTS * 4, CLIENTS, move |_| {
            let api = api.clone();
            async move {
                let response = api
                    .client
                    .get(format!("{}/health", api.address))
                    .send()
                    .await?;
                if !response.status().is_success() {
                    bail!("GET /health: {}", response.status());
                }
                response.bytes().await?;
                Ok(())
            }
        })
        .await
        .context("warming up")?;
    }

    // The relay's first publish after startup (a cold Kafka producer), then an idle relay's
    // single event; a separate user so that the measured user's lists hold exactly N tasks.
    let warm_user = format!("bench-warmup-{}", Uuid::now_v7().simple());
    let warm = Api {
        client: api.client.clone(),
        address: api.address.clone(),
        token: backend::auth::issue_token(SECRET, &warm_user, Duration::from_secs(3600))?,
        user: warm_user,
    };
    let mut single_event = Vec::new();
    for i in 0..2 {
        let t0 = Instant::now();
        warm.call(
            Method::POST,
            &warm.tasks(),
            Some(&json!({ "title": format!("Warm-up {i}") })),
            StatusCode::CREATED,
        )
        .await
        .context("warm-up create")?;
        single_event.push(drained(pool).await? - t0);
    }
    let baseline_rows = count(pool, "SELECT count(*) AS n FROM outbox").await?;

    // (a) + (d): creates, each one's event on task-events, and the relay draining the outbox.
    let consumer = consumer_at_end(brokers).await?;
    let (stop, stopped) = watch::channel(false);
    let arrivals = tokio::spawn(collect_created(consumer, user.clone(), n, stopped));
    let creates = {
        let api = api.clone();
        drive(n, CLIENTS, move |i| {
            let api = api.clone();
            async move {
                let body = api
                    .call(
                        Method::POST,
                        &api.tasks(),
                        Some(&create_body(i)),
                        StatusCode::CREATED,
                    )
                    .await?;
                let returned = Instant::now();
                let id = body["id"]
                    .as_str()
                    .and_then(|s| Uuid::parse_str(s).ok())
                    .ok_or_else(|| anyhow!("create {i}: the response has no id: {body}"))?;
                Ok((id, returned))
            }
        })
        .await
        .context("creating tasks")?
    };
    let creates_started = creates.start;
    let creates_done = Instant::now();
    let create_drained = drained(pool).await?;
    let outbox_rows = count(pool, "SELECT count(*) AS n FROM outbox").await? - baseline_rows;
    let arrivals = match tokio::time::timeout(ARRIVAL_TIMEOUT, arrivals).await {
        Ok(joined) => joined??,
        Err(_) => {
            let _ = stop.send(true);
            bail!(
                "not every created event reached {TASK_EVENTS} within {ARRIVAL_TIMEOUT:?} of the outbox draining"
            );
        }
    };
    let mut event_latencies = Vec::with_capacity(n);
    let mut early = 0;
    for sample in &creates.samples {
        let (id, returned) = sample.value;
        let at = arrivals
            .at
            .get(&id)
            .ok_or_else(|| anyhow!("the created event of task {id} never arrived"))?;
        if *at < returned {
            early += 1;
        }
        event_latencies.push(at.saturating_duration_since(returned));
    }
    let ids: Vec<Uuid> = creates.samples.iter().map(|s| s.value.0).collect();

    // (b) lists, over the N tasks now in the table.
    let matching = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| WORDS[i % WORDS.len()] == SEARCH_WORD)
        .count();
    let list_queries = [
        (
            format!("limit={LIST_LIMIT}&sort=-priority"),
            n.min(LIST_LIMIT),
        ),
        (
            format!("q={SEARCH_WORD}&limit={LIST_LIMIT}"),
            matching.min(LIST_LIMIT),
        ),
    ];
    let mut lists = Vec::new();
    for (query, expected) in list_queries {
        let api = api.clone();
        let path = format!("{}?{query}", api.tasks());
        let phase = drive(gets, CLIENTS, move |_| {
            let (api, path) = (api.clone(), path.clone());
            async move {
                let page = api.call(Method::GET, &path, None, StatusCode::OK).await?;
                let items = page["items"].as_array().map(Vec::len);
                if items != Some(expected) {
                    bail!("GET {path}: expected {expected} items, got {items:?}");
                }
                Ok(())
            }
        })
        .await
        .with_context(|| format!("listing with {query}"))?;
        lists.push((query, phase));
    }

    // (c) one PATCH per task, then the relay publishing those events.
    let patches = {
        let (api, ids) = (api.clone(), Arc::new(ids));
        drive(n, CLIENTS, move |i| {
            let (api, ids) = (api.clone(), ids.clone());
            async move {
                let body = json!({ "title": format!("{} edited", title(i)), "priority": PRIORITIES[(i + 1) % PRIORITIES.len()] });
                let path = format!("{}/{}", api.tasks(), ids[i]);
                let task = api
                    .call(Method::PATCH, &path, Some(&body), StatusCode::OK)
                    .await?;
                if task["version"] != 2 {
                    bail!("PATCH {path}: expected version 2, got {}", task["version"]);
                }
                Ok(())
            }
        })
        .await
        .context("updating tasks")?
    };
    let patches_started = patches.start;
    let patches_done = Instant::now();
    let patch_drained = drained(pool).await?;
    let outbox_after = count(pool, "SELECT count(*) AS n FROM outbox").await?;
    let rss = proc_status_mib("VmRSS").unwrap_or(f64::NAN);
    let hwm = proc_status_mib("VmHWM").unwrap_or(f64::NAN);

    // The report.
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!("## TaskFlow backend throughput");
    println!();
    println!(
        "- Machine: nproc = {cpus} ({}), load average at start {load_before}, at end {}",
        cpu_model(),
        load_average()
    );
    println!(
        "- N = {n} creates then {n} PATCHes, {gets} GETs per list query, {CLIENTS} concurrent HTTP/1.1 clients, DB pool {DB_POOL_SIZE}; client, server and relay share one process on 127.0.0.1"
    );
    let fsync_note = if server.fsync == "off" {
        " (**fsync=off**: numbers are optimistic for durable storage)"
    } else {
        ""
    };
    println!(
        "- PostgreSQL {} with fsync={}{fsync_note}; Kafka at {brokers}; relay batch 500, poll 200 ms; bench consumer fetch.wait.max.ms={FETCH_WAIT_MS}",
        server.version, server.fsync
    );
    println!();
    println!("| Measurement | Count | Throughput / value | p50 | p95 | p99 | max |");
    println!("|---|---|---|---|---|---|---|");
    Row::new(
        "POST /tasks (create)",
        format!("{n}"),
        format!("{:.0} req/s", creates.per_second()),
    )
    .with_latencies(creates.latencies())
    .print();
    for (query, phase) in &lists {
        Row::new(
            format!("GET /tasks?{query}"),
            format!("{gets}"),
            format!("{:.0} req/s", phase.per_second()),
        )
        .with_latencies(phase.latencies())
        .print();
    }
    Row::new(
        "PATCH /tasks/{id} (update)",
        format!("{n}"),
        format!("{:.0} req/s", patches.per_second()),
    )
    .with_latencies(patches.latencies())
    .print();
    Row::new(
        "Event latency: create returned → `created` on task-events",
        format!("{n} events"),
        "",
    )
    .with_latencies(event_latencies)
    .print();
    let relay = |rows: i64, from: Instant, to: Instant| {
        format!(
            "{:.0} outbox rows/s ({:.0} task-events/s)",
            rows as f64 / (to - from).as_secs_f64(),
            rows as f64 / 2.0 / (to - from).as_secs_f64()
        )
    };
    Row::new(
        format!(
            "Relay, creates: first create → outbox drained ({:.2} s; {} after the last create)",
            (create_drained - creates_started).as_secs_f64(),
            ms(create_drained - creates_done)
        ),
        format!("{outbox_rows} rows"),
        relay(outbox_rows, creates_started, create_drained),
    )
    .print();
    let patch_rows = outbox_after - baseline_rows - outbox_rows;
    Row::new(
        format!(
            "Relay, updates: first PATCH → outbox drained ({:.2} s; {} after the last PATCH)",
            (patch_drained - patches_started).as_secs_f64(),
            ms(patch_drained - patches_done)
        ),
        format!("{patch_rows} rows"),
        relay(patch_rows, patches_started, patch_drained),
    )
    .print();
    Row::new(
        "Relay cold start: first create after startup → outbox drained",
        "1 create",
        ms(single_event[0]),
    )
    .print();
    Row::new(
        "Idle relay: one create → outbox drained (producer warm)",
        "1 create",
        ms(single_event[1]),
    )
    .print();
    Row::new(
        "Memory of the whole bench process (server + relay + clients): VmRSS / VmHWM",
        "",
        format!("{rss:.1} MiB / {hwm:.1} MiB"),
    )
    .print();
    println!();
    println!(
        "Each change writes 2 outbox rows (task-events + task-updates); events/s counts task-events. \
         Event latency is measured from the create response being read to the event's arrival; \
         {early} of {n} events arrived before their response was read (counted as 0). \
         `created` events published twice (same task, another offset): {}. \
         Offsets the bench consumer was handed again by the broker fetch path (ignored): {}. \
         Run time: {:.1} s.",
        arrivals.duplicates,
        arrivals.redelivered,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
