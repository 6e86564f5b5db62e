//! The real `recurrence-worker` binary, stopped with SIGTERM while it is mid-stream, against a
//! real broker (`KAFKA_BROKERS`) and a fresh PostgreSQL database (`DATABASE_URL` names a server
//! where tests may create databases).
//!
//! The test holds one event's `processed_events` row in an open transaction, so the worker's
//! effect for that event blocks: the worker is stopped with that effect in flight and part of the
//! stream handled. SIGTERM must let the in-flight effect finish, start nothing after it, commit
//! the offsets and exit 0 within 10 s; a second run must handle exactly what the first did not.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use chrono::Utc;
use diesel::sql_types::{BigInt, Text, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use shared_events::database::{self, DbPool};
use shared_events::topics::{dead_letter_topic, TopicSpec, RECURRENCE_WORKER_GROUP, TASK_EVENTS};
use shared_events::{CloudEvent, TaskEventType, TaskSnapshot};
use tokio::time::Instant;
use uuid::Uuid;

const EVENTS: usize = 300;
const PARTITIONS: i32 = 3;
/// The shutdown budget.
const SHUTDOWN: Duration = Duration::from_secs(10);
/// For anything else to happen (group join, consuming 300 events).
const PATIENCE: Duration = Duration::from_secs(30);

async fn fresh_database() -> String {
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
struct Id {
    #[diesel(sql_type = SqlUuid)]
    event_id: Uuid,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn processed_count(pool: &DbPool) -> i64 {
    let mut conn = pool.get().await.expect("connection");
    diesel::sql_query("SELECT count(*) AS n FROM processed_events WHERE consumer = $1")
        .bind::<Text, _>(RECURRENCE_WORKER_GROUP)
        .get_result::<Count>(&mut conn)
        .await
        .expect("count")
        .n
}

/// Sessions of the test database waiting on a lock: the worker's effect behind the held row.
async fn lock_waiters(pool: &DbPool) -> i64 {
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

async fn processed_ids(pool: &DbPool) -> BTreeSet<Uuid> {
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
fn task_updated(id: Uuid, task_id: Uuid, version: i64) -> Vec<u8> {
    let now = Utc::now();
    let mut task = TaskSnapshot::new(task_id, "alice", &format!("task {task_id}"), now);
    task.version = version;
    let event = CloudEvent::for_task(id, TaskEventType::Updated, task, now, None);
    serde_json::to_vec(&event).unwrap()
}

/// One produced event and the partition it landed on.
struct Sent {
    id: Uuid,
    partition: i32,
}

async fn send(
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
async fn group_members(brokers: &str, group: &str) -> usize {
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
async fn dead_letters(brokers: &str, topic: &str) -> Vec<OwnedMessage> {
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
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` over a fresh connection: (status, body).
fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
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
fn metric(addr: &str, name: &str) -> u64 {
    let (status, body) = http_get(addr, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{body}"))
}

/// The worker as a child process; killed if the test fails before it exits.
struct Worker {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Worker {
    fn start(database_url: &str, prefix: &str, group: &str, run: u32) -> Worker {
        let addr = format!("127.0.0.1:{}", free_port());
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("recurrence-worker-{group}-run{run}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_recurrence-worker"))
            .env("DATABASE_URL", database_url)
            .env(
                "KAFKA_BROKERS",
                std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into()),
            )
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

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Poll until the process exits, at most `budget`.
    async fn exit_within(&mut self, budget: Duration, since: Instant) -> ExitStatus {
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
    async fn assert_healthy(&self) {
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
async fn eventually(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_finishes_in_flight_and_the_next_run_loses_and_repeats_nothing() {
    let database_url = fresh_database().await;
    let pool = database::pool(&database_url, 2).expect("pool");
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let run_id = Uuid::new_v4().simple().to_string();
    let prefix = format!("rw-shutdown-{run_id}.");
    let group = format!("rw-shutdown-{run_id}");
    let topic = format!("{prefix}{TASK_EVENTS}");
    let specs = [
        TopicSpec {
            name: Box::leak(topic.clone().into_boxed_str()),
            partitions: PARTITIONS,
        },
        TopicSpec {
            name: Box::leak(dead_letter_topic(&topic).into_boxed_str()),
            partitions: 1,
        },
    ];
    shared_events::admin::ensure_topics(&brokers, &specs, 1)
        .await
        .expect("test topics (is KAFKA_BROKERS reachable?)");

    // 300 updates of 30 tasks, keyed by series id like the relay does.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let tasks: Vec<Uuid> = (0..30).map(|_| Uuid::now_v7()).collect();
    let mut sent = Vec::with_capacity(EVENTS);
    for i in 0..EVENTS {
        let task = tasks[i % tasks.len()];
        let id = Uuid::now_v7();
        let payload = task_updated(id, task, (i / tasks.len()) as i64 + 1);
        let partition = send(&producer, &topic, &task.to_string(), None, &payload).await;
        sent.push(Sent { id, partition });
    }
    // Hold the effect of an event a third of the way into one partition. The worker handles one
    // message at a time, so it stops there with an unknown number of others done.
    let blocker = sent
        .iter()
        .filter(|s| s.partition == sent[0].partition)
        .nth(EVENTS / PARTITIONS as usize / 3)
        .expect("events on the first event's partition");
    let mut lock = AsyncPgConnection::establish(&database_url)
        .await
        .expect("connect");
    diesel::sql_query("BEGIN").execute(&mut lock).await.unwrap();
    diesel::sql_query("INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2)")
        .bind::<Text, _>(RECURRENCE_WORKER_GROUP)
        .bind::<SqlUuid, _>(blocker.id)
        .execute(&mut lock)
        .await
        .unwrap();

    // First run, until its effect for the held event waits on the test's lock.
    let mut first = Worker::start(&database_url, &prefix, &group, 1);
    first.assert_healthy().await;
    eventually(
        "the first run to wait on the held event",
        &first,
        async || {
            let waiting = lock_waiters(&pool).await;
            (waiting == 1)
                .then_some(())
                .ok_or(format!("{waiting} sessions wait on a lock"))
        },
    )
    .await;
    let done_while_blocked = processed_count(&pool).await as usize;
    assert!(
        done_while_blocked > 0 && done_while_blocked < EVENTS - 1,
        "{done_while_blocked} processed: SIGTERM must come mid-stream"
    );
    first.assert_healthy().await;
    assert_eq!(
        metric(&first.addr, "consumer_messages_handled_total") as usize,
        done_while_blocked
    );
    let after_blocker = EVENTS - done_while_blocked - 1;

    // A scraper's idle keep-alive connection must not hold the shutdown up.
    let mut scraper = TcpStream::connect(&first.addr).unwrap();
    write!(
        scraper,
        "GET /metrics HTTP/1.1\r\nHost: {}\r\n\r\n",
        first.addr
    )
    .unwrap();
    let mut buf = [0u8; 512];
    let n = scraper.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let signalled = Instant::now();
    first.terminate();
    eventually("the worker to take the signal", &first, async || {
        first
            .log()
            .contains("shutdown requested")
            .then_some(())
            .ok_or_else(|| "no \"shutdown requested\" in the log".to_owned())
    })
    .await;
    // Let the shutdown request reach the consumer loop before the in-flight effect completes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    diesel::sql_query("ROLLBACK")
        .execute(&mut lock)
        .await
        .unwrap();
    let status = first.exit_within(SHUTDOWN, signalled).await;
    assert!(
        status.success(),
        "the worker exits 0 on SIGTERM, got {status}; log:\n{}",
        first.log()
    );
    let elapsed = signalled.elapsed();
    drop(scraper);
    assert_eq!(
        processed_count(&pool).await as usize,
        done_while_blocked + 1,
        "the in-flight effect finished and nothing after it started; log:\n{}",
        first.log()
    );

    assert_eq!(
        group_members(&brokers, &group).await,
        0,
        "the first run left its consumer group"
    );

    // Second run: exactly the blocked partition's tail, then one marker per partition, so that
    // a redelivery of anything already handled would have come before the markers.
    let mut second = Worker::start(&database_url, &prefix, &group, 2);
    second.assert_healthy().await;
    // A poison message goes to the prefixed topic's own dead-letter topic.
    let poison = b"not a CloudEvent".as_slice();
    send(&producer, &topic, "poison", Some(0), poison).await;
    let mut markers = Vec::new();
    for p in 0..PARTITIONS {
        let id = Uuid::now_v7();
        let payload = task_updated(id, Uuid::now_v7(), 1);
        send(&producer, &topic, "marker", Some(p), &payload).await;
        markers.push(id);
    }
    let total = EVENTS + markers.len();
    eventually("the second run to catch up", &second, async || {
        let n = processed_count(&pool).await as usize;
        (n == total)
            .then_some(())
            .ok_or(format!("{n} of {total} processed"))
    })
    .await;
    let want: BTreeSet<Uuid> = sent.iter().map(|s| s.id).chain(markers).collect();
    assert_eq!(processed_ids(&pool).await, want);
    eventually("the markers' handled count", &second, async || {
        let handled = metric(&second.addr, "consumer_messages_handled_total") as usize;
        (handled >= after_blocker + PARTITIONS as usize)
            .then_some(())
            .ok_or(format!("{handled} handled"))
    })
    .await;
    assert_eq!(
        metric(&second.addr, "consumer_messages_handled_total") as usize,
        after_blocker + PARTITIONS as usize,
        "the second run handles only what the first did not (its committed offsets hold)"
    );
    assert_eq!(
        metric(&second.addr, "consumer_messages_dead_lettered_total"),
        1
    );
    let dead = dead_letters(&brokers, &dead_letter_topic(&topic)).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].payload(), Some(poison));
    let origin = dead[0]
        .headers()
        .and_then(|h| h.iter().find(|h| h.key == "dlq_topic"))
        .and_then(|h| h.value);
    assert_eq!(origin, Some(topic.as_bytes()));

    let signalled = Instant::now();
    second.terminate();
    let status = second.exit_within(SHUTDOWN, signalled).await;
    assert!(status.success(), "second run exit: {status}");
    eprintln!(
        "first run: {done_while_blocked} handled before SIGTERM, exited {elapsed:?} after it; \
         second run: {} handled, exited {:?} after SIGTERM",
        after_blocker + PARTITIONS as usize,
        signalled.elapsed()
    );
}
