//! What the worker tests share: a fresh database, events to produce, the worker binary as a
//! child process, and polling helpers.
#![allow(dead_code)] // each test binary uses its own subset

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use chrono::Utc;
use diesel::sql_types::{BigInt, Text, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};
use shared_events::database::DbPool;
use shared_events::topics::RECURRENCE_WORKER_GROUP;
use shared_events::{CloudEvent, TaskEventType, TaskSnapshot};
use tokio::time::Instant;
use uuid::Uuid;

/// For anything to happen (group join, consuming a few hundred events).
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The broker tests use unless they bring their own: `KAFKA_BROKERS`.
pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub async fn fresh_database() -> String {
    let admin = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL must name a PostgreSQL server where tests may create databases");
    // Ends in the pid, like the backend's test databases, so their clean-up knows it.
    let name = format!(
        "tf_worker_{}_{}",
        Uuid::new_v4().simple(),
        std::process::id()
    );
    backend::db::create_database(&admin, &name, None)
        .await
        .expect("create test database")
}

#[derive(QueryableByName)]
pub struct Id {
    #[diesel(sql_type = SqlUuid)]
    pub event_id: Uuid,
}

#[derive(QueryableByName)]
pub struct Count {
    #[diesel(sql_type = BigInt)]
    pub n: i64,
}

pub async fn processed_count(pool: &DbPool) -> i64 {
    let mut conn = pool.get().await.expect("connection");
    diesel::sql_query("SELECT count(*) AS n FROM processed_events WHERE consumer = $1")
        .bind::<Text, _>(RECURRENCE_WORKER_GROUP)
        .get_result::<Count>(&mut conn)
        .await
        .expect("count")
        .n
}

/// Sessions of the test database waiting on a lock: the worker's effect behind the held row.
pub async fn lock_waiters(pool: &DbPool) -> i64 {
    let mut conn = pool.get().await.expect("connection");
    diesel::sql_query(
        "SELECT count(*) AS n FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .get_result::<Count>(&mut conn)
    .await
    .expect("pg_stat_activity")
    .n
}

pub async fn processed_ids(pool: &DbPool) -> BTreeSet<Uuid> {
    let mut conn = pool.get().await.expect("connection");
    diesel::sql_query("SELECT event_id FROM processed_events WHERE consumer = $1")
        .bind::<Text, _>(RECURRENCE_WORKER_GROUP)
        .load::<Id>(&mut conn)
        .await
        .expect("ids")
        .into_iter()
        .map(|r| r.event_id)
        .collect()
}

/// A valid `com.taskflow.task.updated` CloudEvent for a task.
pub fn task_updated(id: Uuid, task_id: Uuid, version: i64) -> Vec<u8> {
    let now = Utc::now();
    let mut task = TaskSnapshot::new(task_id, "alice", &format!("task {task_id}"), now);
    task.version = version;
    let event = CloudEvent::for_task(id, TaskEventType::Updated, task, now, None);
    serde_json::to_vec(&event).unwrap()
}

/// One produced event and the partition it landed on.
pub struct Sent {
    pub id: Uuid,
    pub partition: i32,
}

pub async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    partition: Option<i32>,
    payload: &[u8],
) -> i32 {
    let mut record = FutureRecord::<str, [u8]>::to(topic)
        .key(key)
        .payload(payload);
    if let Some(p) = partition {
        record = record.partition(p);
    }
    let delivered = producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .expect("produce");
    delivered.partition
}

/// Members of a consumer group as the broker sees them.
pub async fn group_members(brokers: &str, group: &str) -> usize {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let group = group.to_owned();
    tokio::task::spawn_blocking(move || {
        let list = client
            .fetch_group_list(Some(&group), Duration::from_secs(10))
            .expect("describe group");
        list.groups().iter().map(|g| g.members().len()).sum()
    })
    .await
    .unwrap()
}

/// Everything on `topic`: reads until a message arrived (or the deadline passed), then a
/// moment longer so that extras show up.
pub async fn dead_letters(brokers: &str, topic: &str) -> Vec<OwnedMessage> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("dlq-reader-{}", Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("partition.assignment.strategy", "range")
        .create()
        .expect("dlq reader");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut found = Vec::new();
    let mut deadline = Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Err(_) => break,
            Ok(Err(e)) => panic!("reading {topic}: {e}"),
            Ok(Ok(m)) => {
                found.push(m.detach());
                deadline = deadline.min(Instant::now() + Duration::from_millis(1500));
            }
        }
    }
    found
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` over a fresh connection: (status, body).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A counter from the worker's `/metrics`.
pub fn metric(addr: &str, name: &str) -> u64 {
    let (status, body) = http_get(addr, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{body}"))
}

/// The worker as a child process; killed if the test fails before it exits.
pub struct Worker {
    pub child: Child,
    pub addr: String,
    pub log: PathBuf,
}

impl Worker {
    pub fn start(database_url: &str, brokers: &str, prefix: &str, group: &str, run: u32) -> Worker {
        let addr = format!("127.0.0.1:{}", free_port());
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("recurrence-worker-{group}-run{run}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_recurrence-worker"))
            .env("DATABASE_URL", database_url)
            .env("KAFKA_BROKERS", brokers)
            .env("KAFKA_TOPIC_PREFIX", prefix)
            .env("KAFKA_GROUP_ID", group)
            .env("KAFKA_ASSIGNMENT_STRATEGY", "range")
            .env("HTTP_ADDR", &addr)
            .env("LOG_FORMAT", "pretty")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start recurrence-worker");
        Worker { child, addr, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Poll until the process exits, at most `budget`.
    pub async fn exit_within(&mut self, budget: Duration, since: Instant) -> ExitStatus {
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if since.elapsed() > budget {
                panic!(
                    "the worker did not exit within {budget:?} of SIGTERM; log {}:\n{}",
                    self.log.display(),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `/health` and `/ready` answer 200 while it runs (polled: the server starts with the worker).
    pub async fn assert_healthy(&self) {
        for path in ["/health", "/ready"] {
            let deadline = Instant::now() + PATIENCE;
            loop {
                match http_get(&self.addr, path) {
                    Ok((200, _)) => break,
                    other if Instant::now() > deadline => {
                        panic!("{path} on the running worker: {other:?}\n{}", self.log())
                    }
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Poll `check` until it passes; on timeout, fail with its last complaint.
pub async fn eventually(
    what: &str,
    worker: &Worker,
    mut check: impl AsyncFnMut() -> Result<(), String>,
) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match check().await {
            Ok(()) => return,
            Err(last) if Instant::now() >= deadline => panic!(
                "timed out after {PATIENCE:?} waiting for {what}; last: {last}; worker log:\n{}",
                worker.log()
            ),
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}
