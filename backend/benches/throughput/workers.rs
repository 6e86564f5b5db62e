//! The workers' rows: the release `recurrence-worker` and `notifier` run as their own processes
//! (their peak RSS is then theirs alone), fed through the in-process API and its relay, and timed
//! with the timestamps the services themselves write. Runs first, while `task-events` is short:
//! the workers' groups start from the earliest offset.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use chrono::{DurationRound, TimeDelta, Utc};
use diesel::sql_types::Double;
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use futures::{StreamExt, TryStreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use super::{ms, percentile, proc_status_mib, Bench, Load, Row, Tools, SECRET};

/// Requests in flight while the bench seeds tasks and completes a backlog.
const SEED_CONCURRENCY: usize = 32;
const USERS: usize = 50;
/// Bounds for a worker's backlog or a batch of reminders to be handled.
const WORKER_TIMEOUT: Duration = Duration::from_secs(120);
/// How far ahead the reminders are due: room to create all of them first.
const REMINDER_LEAD: TimeDelta = TimeDelta::seconds(10);

/// A release service binary, running; killed when dropped.
struct Service {
    name: &'static str,
    child: Child,
    address: String,
    log: PathBuf,
}

impl Service {
    /// In a session of its own, as the load tools ([`Tools::command`]). `setsid` runs the binary
    /// in its own place (this child leads no process group), so the child is the service: its
    /// RSS is read and it is killed by that pid.
    fn start(
        tools: &Tools,
        bins: &Path,
        name: &'static str,
        database_url: &str,
        brokers: &str,
        topic_prefix: &str,
    ) -> anyhow::Result<Service> {
        let bin = bins.join(name);
        if !bin.is_file() {
            bail!(
                "{} is missing: cargo build --release -p {name} (./dev bench does)",
                bin.display()
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let address = format!("127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!("taskflow-bench-{name}-{port}.log"));
        let out = std::fs::File::create(&log)?;
        let child = tools
            .command(&bin)
            .env("DATABASE_URL", database_url)
            .env("KAFKA_BROKERS", brokers)
            .env("KAFKA_TOPIC_PREFIX", topic_prefix)
            .env("KAFKA_GROUP_ID", format!("bench-{name}-{}", Uuid::now_v7()))
            // Tansu answers JoinGroup after about half the session timeout.
            .env("KAFKA_SESSION_TIMEOUT_MS", "6000")
            .env("METRICS_ADDR", &address)
            .env("RUST_LOG", "warn")
            .env("LOG_FORMAT", "json")
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Service {
            name,
            child,
            address,
            log,
        })
    }

    /// Until `/ready` reports an assigned partition.
    async fn ready(&mut self, client: &reqwest::Client) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = format!("http://{}/ready", self.address);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited ({status}); log: {}", self.name, self.log_tail());
            }
            if let Ok(r) = client.get(&url).send().await {
                let body: Value = r.json().await.unwrap_or(Value::Null);
                if body["assigned_partitions"].as_f64().unwrap_or(0.0) >= 1.0 {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} was not ready within 60 s; log: {}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn peak_rss_mib(&self) -> f64 {
        proc_status_mib(&self.child.id().to_string(), "VmHWM").unwrap_or(f64::NAN)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Where the release service binaries are: `BENCH_BIN_DIR`, else beside this bench's own
/// (`<target>/release/deps/throughput-*` → `<target>/release`).
fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("BENCH_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("cannot tell the target directory from {}", exe.display()))
}

#[derive(QueryableByName)]
struct Seconds {
    #[diesel(sql_type = Double)]
    s: f64,
}

impl Bench<'_> {
    pub(super) async fn workers(&mut self) -> anyhow::Result<()> {
        let bins = bin_dir()?;
        let sizes = ["backend", "recurrence-worker", "notifier"]
            .iter()
            .map(|name| {
                let bytes = std::fs::metadata(bins.join(name))
                    .with_context(|| format!("{name} in {}", bins.display()))?
                    .len();
                anyhow::Ok(format!("{name} {:.1} MiB", bytes as f64 / 1_048_576.0))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.rows
            .push(Row::value("release binary sizes", sizes.join(", ")));
        let (db, brokers, prefix) = (
            self.database_url.clone(),
            self.brokers.clone(),
            self.topic_prefix.clone(),
        );

        let series = self.knobs.series;
        let backlog = self.seed_series("bench-r", series).await?;
        self.complete_all(&backlog).await?;
        self.drained().await?;
        let mut worker = Service::start(
            self.tools,
            &bins,
            "recurrence-worker",
            &db,
            &brokers,
            &prefix,
        )?;
        worker.ready(&self.client).await?;
        self.occurrences_created("bench-r", series).await?;
        let span = self
            .seconds(
                "SELECT extract(epoch FROM max(created_at) - min(created_at))::float8 AS s \
                 FROM tasks WHERE user_id LIKE 'bench-r%' AND occurrence = 2",
            )
            .await?;
        self.rows.push(Row::value(
            format!("recurrence worker draining {series} completions (1 process, 3 partitions)"),
            format!(
                "{:.0} completions/s ({span:.2} s)",
                series as f64 / span.max(1e-3)
            ),
        ));

        let rate = self.knobs.completion_rate;
        let count = rate * self.knobs.event_time.as_secs() as usize;
        let tasks = self.seed_series("bench-q", count).await?;
        self.settled().await?;
        let started = Instant::now();
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        let mut calls = Vec::with_capacity(count);
        for (user, id) in &tasks {
            ticks.tick().await;
            let path = format!("/api/{user}/tasks/{id}/complete");
            let call = self.call_timed(Method::PATCH, path, user);
            calls.push(tokio::spawn(call));
        }
        let mut api = Vec::with_capacity(count);
        for call in calls {
            api.push(call.await??);
        }
        let elapsed = started.elapsed();
        self.occurrences_created("bench-q", count).await?;
        let latencies = self
            .durations(
                "SELECT extract(epoch FROM n.created_at - p.completed_at)::float8 AS s \
                     FROM tasks p JOIN tasks n ON n.series_id = p.series_id AND n.occurrence = 2 \
                     WHERE p.user_id LIKE 'bench-q%' AND p.occurrence = 1",
            )
            .await?;
        self.rows.push(Row::load(
            format!("PATCH /tasks/{{id}}/complete at a fixed {rate}/s"),
            0,
            Load::from_latencies(count, elapsed, api, 0),
            None,
        ));
        self.rows.push(Row::load(
            format!("completion → next occurrence committed, at {rate}/s"),
            0,
            Load::from_latencies(count, elapsed, latencies, 0),
            None,
        ));
        let worker_rss = worker.peak_rss_mib();
        drop(worker);

        let mut notifier = Service::start(self.tools, &bins, "notifier", &db, &brokers, &prefix)?;
        notifier.ready(&self.client).await?;
        self.reminders_at_once().await?;
        self.rows.push(Row::value(
            "peak RSS (VmHWM) of the worker processes",
            format!(
                "recurrence-worker {worker_rss:.1} MiB, notifier {:.1} MiB",
                notifier.peak_rss_mib()
            ),
        ));
        Ok(())
    }

    /// `reminders` tasks due in the same second, each with a reminder at its due time.
    async fn reminders_at_once(&mut self) -> anyhow::Result<()> {
        let count = self.knobs.reminders;
        let due = (Utc::now() + REMINDER_LEAD).duration_trunc(TimeDelta::seconds(1))?;
        let bodies = (0..count).map(|i| {
            json!({
                "title": format!("Reminder {i}"), "due_at": due.to_rfc3339(),
                "reminder_minutes_before": 0,
            })
        });
        self.create_all("bench-n", bodies).await?;
        if Utc::now() >= due {
            bail!("creating {count} reminders took longer than {REMINDER_LEAD}: they were due before the last was created");
        }
        self.wait_for(
            "SELECT count(*) AS n FROM notifications WHERE user_id LIKE 'bench-n%' AND delivered_at IS NOT NULL",
            count,
            "in-app notifications delivered",
        )
        .await?;
        let delivered = self
            .durations(
                "SELECT extract(epoch FROM delivered_at - remind_at)::float8 AS s \
                     FROM notifications WHERE user_id LIKE 'bench-n%'",
            )
            .await?;
        let fired = self
            .durations(
                "SELECT extract(epoch FROM fired_at - remind_at)::float8 AS s \
                     FROM reminders WHERE user_id LIKE 'bench-n%'",
            )
            .await?;
        let mut sorted = fired.clone();
        sorted.sort_unstable();
        self.notes.push(format!(
            "{count} reminders due at {due}: fired by the scheduler p50 {} p99 {} after their time",
            ms(percentile(&sorted, 50.0)),
            ms(percentile(&sorted, 99.0))
        ));
        let last = delivered.iter().max().copied().unwrap_or_default();
        self.rows.push(Row::load(
            format!(
                "{count} reminders due in the same second → in-app notification, after their time"
            ),
            0,
            Load::from_latencies(count, last.max(Duration::from_millis(1)), delivered, 0),
            None,
        ));
        Ok(())
    }

    /// `count` daily series spread over `USERS` users named `prefix<k>`: (user, task id).
    async fn seed_series(
        &self,
        prefix: &str,
        count: usize,
    ) -> anyhow::Result<Vec<(String, String)>> {
        let bodies = (0..count).map(|i| {
            json!({"title": format!("Series {i}"), "due_at": "2030-01-01T09:00:00Z", "recurrence": "daily"})
        });
        self.create_all(prefix, bodies).await
    }

    async fn create_all(
        &self,
        prefix: &str,
        bodies: impl Iterator<Item = Value>,
    ) -> anyhow::Result<Vec<(String, String)>> {
        futures::stream::iter(bodies.enumerate())
            .map(|(i, body)| async move {
                let user = format!("{prefix}{}", i % USERS);
                let token = token(&user)?;
                let (status, created) = self
                    .call(
                        Method::POST,
                        &format!("/api/{user}/tasks"),
                        &token,
                        Some(&body),
                    )
                    .await?;
                if status != StatusCode::CREATED {
                    bail!("create for {user}: {status}: {created}");
                }
                let id = created["id"]
                    .as_str()
                    .ok_or_else(|| anyhow!("no id in {created}"))?;
                anyhow::Ok((user, id.to_owned()))
            })
            .buffer_unordered(SEED_CONCURRENCY)
            .try_collect()
            .await
    }

    async fn complete_all(&self, tasks: &[(String, String)]) -> anyhow::Result<()> {
        futures::stream::iter(tasks)
            .map(|(user, id)| {
                let path = format!("/api/{user}/tasks/{id}/complete");
                self.call_timed(Method::PATCH, path, user)
            })
            .buffer_unordered(SEED_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }

    /// One request that must answer 200; how long it took.
    fn call_timed(
        &self,
        method: Method,
        path: String,
        user: &str,
    ) -> impl std::future::Future<Output = anyhow::Result<Duration>> + Send + 'static {
        let (client, url, user) = (
            self.client.clone(),
            format!("{}{path}", self.address),
            user.to_owned(),
        );
        async move {
            let token = token(&user)?;
            let t0 = Instant::now();
            let response = client
                .request(method.clone(), &url)
                .bearer_auth(token)
                .send()
                .await
                .with_context(|| format!("{method} {url}"))?;
            let took = t0.elapsed();
            let status = response.status();
            if status != StatusCode::OK {
                bail!("{method} {url}: {status}: {}", response.text().await?);
            }
            Ok(took)
        }
    }

    async fn occurrences_created(&self, prefix: &str, count: usize) -> anyhow::Result<()> {
        self.wait_for(
            &format!(
                "SELECT count(*) AS n FROM tasks WHERE user_id LIKE '{prefix}%' AND occurrence = 2"
            ),
            count,
            "next occurrences",
        )
        .await
    }

    /// Until `sql`'s count reaches `want`, within [`WORKER_TIMEOUT`].
    async fn wait_for(&self, sql: &str, want: usize, what: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + WORKER_TIMEOUT;
        loop {
            let n = self.count(sql).await? as usize;
            if n >= want {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{what}: {n} of {want} after {WORKER_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The outbox is published and the worker has handled all of it: its count of handled
    /// events has not moved for a second.
    async fn settled(&self) -> anyhow::Result<()> {
        self.drained().await?;
        let deadline = Instant::now() + WORKER_TIMEOUT;
        let mut last = -1;
        loop {
            let n = self
                .count("SELECT count(*) AS n FROM processed_events")
                .await?;
            if n == last {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("the worker was still handling events after {WORKER_TIMEOUT:?}");
            }
            last = n;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn query<T: QueryableByName<diesel::pg::Pg> + Send + 'static>(
        &self,
        sql: &str,
    ) -> anyhow::Result<Vec<T>> {
        let mut conn = self.pool.get().await?;
        diesel::sql_query(sql)
            .load::<T>(&mut conn)
            .await
            .with_context(|| format!("running {sql}"))
    }

    /// `sql`'s column `s` (seconds) as durations.
    async fn durations(&self, sql: &str) -> anyhow::Result<Vec<Duration>> {
        Ok(self
            .query::<Seconds>(sql)
            .await?
            .iter()
            .map(|r| Duration::from_secs_f64(r.s.max(0.0)))
            .collect())
    }

    async fn seconds(&self, sql: &str) -> anyhow::Result<f64> {
        Ok(self
            .query::<Seconds>(sql)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("no row from {sql}"))?
            .s)
    }
}

fn token(user: &str) -> anyhow::Result<String> {
    backend::auth::issue_token(SECRET, user, Duration::from_secs(3600))
}
