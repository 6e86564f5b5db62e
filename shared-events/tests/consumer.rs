//! The consumer toolkit against a real broker (`KAFKA_BROKERS`, Tansu in `./dev test`) and a real
//! PostgreSQL (`DATABASE_URL`, a server where tests may create databases).
//!
//! Every test has its own topic (and `<topic>.dlq`), consumer group and consumer name. The test
//! handler records its effect in the `effects` table in one transaction with
//! `processed::first_time`, so a duplicate effect shows up as an extra row, and it remembers
//! every call, so a redelivery shows up even when the processed-events table hides it.
//!
//! One test takes the broker away, which Tansu cannot do from here: it runs on librdkafka's
//! in-process mock cluster instead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use diesel::sql_types::{BigInt, Text, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, RunQueryDsl};
use futures::future::BoxFuture;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use shared_events::consumer::{
    ConsumerSettings, ConsumerStats, Delivery, EventConsumer, Handler, HandlerError,
};
use shared_events::database::{self, DbPool};
use shared_events::topics::{dead_letter_topic, TopicSpec};
use shared_events::{processed, CloudEvent, TaskEventType, TaskSnapshot};
use tokio::sync::{watch, OnceCell};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

/// How long a consumer may take to join its group and get through a handful of messages.
const PATIENCE: Duration = Duration::from_secs(30);
/// The shutdown budget the toolkit promises.
const SHUTDOWN: Duration = Duration::from_secs(10);

fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

// ---------------------------------------------------------------------------------------------
// Database

static DATABASE: OnceCell<String> = OnceCell::const_new();

/// One migrated database per test process, with the test handler's `effects` table.
async fn database_url() -> String {
    DATABASE
        .get_or_init(|| async {
            let admin = std::env::var("DATABASE_URL").expect(
                "DATABASE_URL must name a PostgreSQL server where tests may create databases",
            );
            // Ends in the pid, like the backend's test databases, so their clean-up knows it.
            let name = format!(
                "tf_consumer_{}_{}",
                Uuid::new_v4().simple(),
                std::process::id()
            );
            let url = backend::db::create_database(&admin, &name, None)
                .await
                .expect("create test database");
            let pool = database::pool(&url, 1).expect("pool");
            let mut conn = pool.get().await.expect("connection");
            diesel::sql_query(
                "CREATE TABLE effects (seq bigserial PRIMARY KEY, consumer text NOT NULL, \
                 event_id uuid NOT NULL)",
            )
            .execute(&mut conn)
            .await
            .expect("effects table");
            drop(conn);
            pool.close();
            url
        })
        .await
        .clone()
}

#[derive(QueryableByName)]
struct EffectRow {
    #[diesel(sql_type = SqlUuid)]
    event_id: Uuid,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// The events whose effect `consumer` made, in the order it made them (duplicates included).
async fn effects(pool: &DbPool, consumer: &str) -> Vec<Uuid> {
    let mut conn = pool.get().await.expect("connection");
    diesel::sql_query("SELECT event_id FROM effects WHERE consumer = $1 ORDER BY seq")
        .bind::<Text, _>(consumer)
        .load::<EffectRow>(&mut conn)
        .await
        .expect("effects")
        .into_iter()
        .map(|r| r.event_id)
        .collect()
}

async fn processed_count(pool: &DbPool, consumer: &str) -> i64 {
    let mut conn = pool.get().await.expect("connection");
    diesel::sql_query("SELECT count(*) AS n FROM processed_events WHERE consumer = $1")
        .bind::<Text, _>(consumer)
        .get_result::<Count>(&mut conn)
        .await
        .expect("count")
        .n
}

// ---------------------------------------------------------------------------------------------
// The test handler

/// What the handler does on `attempt` (1-based) of an event: `None` makes the effect.
type Rule = Box<dyn Fn(Uuid, usize) -> Option<HandlerError> + Send + Sync>;

struct Recorder {
    pool: DbPool,
    /// Consumer name in `processed_events` and `effects`.
    name: String,
    /// Every call, in order.
    calls: Mutex<Vec<Uuid>>,
    rule: Rule,
}

impl Recorder {
    fn new(pool: &DbPool, name: &str, rule: Rule) -> Arc<Self> {
        Arc::new(Recorder {
            pool: pool.clone(),
            name: name.to_owned(),
            calls: Mutex::new(Vec::new()),
            rule,
        })
    }

    fn succeeding(pool: &DbPool, name: &str) -> Arc<Self> {
        Self::new(pool, name, Box::new(|_, _| None))
    }

    fn calls(&self) -> Vec<Uuid> {
        self.calls.lock().unwrap().clone()
    }
}

impl Handler for Recorder {
    fn handle<'a>(&'a self, delivery: Delivery<'a>) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let id = delivery.event.id;
            let attempt = {
                let mut calls = self.calls.lock().unwrap();
                calls.push(id);
                calls.iter().filter(|c| **c == id).count()
            };
            if let Some(error) = (self.rule)(id, attempt) {
                return Err(error);
            }
            let mut conn = self
                .pool
                .get()
                .await
                .map_err(|e| HandlerError::Transient(e.to_string()))?;
            let name = self.name.as_str();
            conn.transaction::<_, diesel::result::Error, _>(async |conn| {
                if processed::first_time(conn, name, id).await? {
                    diesel::sql_query("INSERT INTO effects (consumer, event_id) VALUES ($1, $2)")
                        .bind::<Text, _>(name)
                        .bind::<SqlUuid, _>(id)
                        .execute(conn)
                        .await?;
                }
                Ok(())
            })
            .await
            .map_err(|e| HandlerError::Transient(e.to_string()))
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Kafka

/// A test's own topic, dead-letter topic, group and database pool.
struct Fixture {
    brokers: String,
    topic: String,
    dlq: String,
    group: String,
    partitions: i32,
    pool: DbPool,
    producer: FutureProducer,
}

async fn fixture(partitions: i32) -> Fixture {
    let brokers = brokers();
    let id = Uuid::new_v4().simple().to_string();
    let topic = format!("consumer-test-{id}");
    let dlq = dead_letter_topic(&topic);
    let specs = [
        TopicSpec {
            name: Box::leak(topic.clone().into_boxed_str()),
            partitions,
        },
        TopicSpec {
            name: Box::leak(dlq.clone().into_boxed_str()),
            partitions: 1,
        },
    ];
    shared_events::admin::ensure_topics(&brokers, &specs, 1)
        .await
        .expect("test topics (is KAFKA_BROKERS reachable?)");
    let producer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    Fixture {
        pool: database::pool(&database_url().await, 4).expect("pool"),
        brokers,
        topic,
        dlq,
        group: format!("consumer-test-{id}"),
        partitions,
        producer,
    }
}

/// A valid `com.taskflow.task.updated` CloudEvent with this id.
fn task_event(id: Uuid) -> Vec<u8> {
    let now = Utc::now();
    let task = TaskSnapshot::new(Uuid::now_v7(), "alice", &format!("task {id}"), now);
    let event = CloudEvent::for_task(id, TaskEventType::Updated, task, now, None);
    serde_json::to_vec(&event).unwrap()
}

impl Fixture {
    /// Produce one message (to `partition`, or partition 0) and return its offset.
    async fn send_to(
        &self,
        partition: i32,
        key: &str,
        payload: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> i64 {
        let mut owned = OwnedHeaders::new();
        for &(key, value) in headers {
            owned = owned.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut record = FutureRecord::<str, [u8]>::to(&self.topic)
            .partition(partition)
            .key(key)
            .headers(owned);
        if let Some(p) = payload {
            record = record.payload(p);
        }
        let delivered = self
            .producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
        assert_eq!(delivered.partition, partition);
        delivered.offset
    }

    async fn send(&self, payload: &[u8]) -> i64 {
        self.send_to(0, "key", Some(payload), &[]).await
    }

    fn start(&self, handler: Arc<Recorder>) -> Running {
        start(&self.brokers, &self.group, &self.topic, handler)
    }

    /// The group's committed offset per partition (-1 when none).
    async fn committed(&self) -> Vec<i64> {
        let brokers = self.brokers.clone();
        let group = self.group.clone();
        let topic = self.topic.clone();
        let partitions = self.partitions;
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", &group)
                .create()
                .expect("offsets client");
            let mut tpl = TopicPartitionList::new();
            for p in 0..partitions {
                tpl.add_partition(&topic, p);
            }
            let committed = consumer
                .committed_offsets(tpl, Duration::from_secs(10))
                .expect("committed offsets");
            (0..partitions)
                .map(
                    |p| match committed.find_partition(&topic, p).unwrap().offset() {
                        Offset::Offset(n) => n,
                        _ => -1,
                    },
                )
                .collect()
        })
        .await
        .unwrap()
    }

    /// Members of the group as the broker sees them.
    async fn members(&self) -> usize {
        let brokers = self.brokers.clone();
        let group = self.group.clone();
        tokio::task::spawn_blocking(move || {
            let client: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .create()
                .expect("admin client");
            let list = client
                .fetch_group_list(Some(&group), Duration::from_secs(10))
                .expect("describe group");
            list.groups().iter().map(|g| g.members().len()).sum()
        })
        .await
        .unwrap()
    }

    /// Everything on the dead-letter topic: reads until `want` messages arrived (or the
    /// deadline passed), then a moment longer so that extras show up.
    async fn dead_letters(&self, want: usize) -> Vec<OwnedMessage> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", format!("dlq-reader-{}", Uuid::new_v4()))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("partition.assignment.strategy", "range")
            .create()
            .expect("dlq reader");
        consumer.subscribe(&[&self.dlq]).expect("subscribe");
        let mut found = Vec::new();
        let mut deadline = Instant::now() + PATIENCE;
        let mut settling = false;
        loop {
            if !settling && found.len() >= want {
                settling = true;
                deadline = Instant::now() + Duration::from_millis(1500);
            }
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Err(_) => break,
                Ok(Err(e)) => panic!("reading {}: {e}", self.dlq),
                Ok(Ok(m)) => found.push(m.detach()),
            }
        }
        found.sort_by_key(|m| m.offset());
        found
    }
}

/// A consumer of `topic` in `group`, running in the background.
fn start(brokers: &str, group: &str, topic: &str, handler: Arc<Recorder>) -> Running {
    let consumer = EventConsumer::new(ConsumerSettings {
        brokers: brokers.to_owned(),
        group_id: group.to_owned(),
        topics: vec![topic.to_owned()],
        assignment_strategy: "range".into(),
        max_backoff: Duration::from_millis(200),
    })
    .expect("consumer");
    let stats = consumer.stats.clone();
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(async move { consumer.run(handler.as_ref(), shutdown).await });
    Running { stop, task, stats }
}

struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    stats: Arc<ConsumerStats>,
}

impl Running {
    /// Ask for shutdown and require `run` to be done (offsets committed, group left) within
    /// the budget.
    async fn stop(self) {
        let asked = std::time::Instant::now();
        self.stop.send(true).unwrap();
        tokio::time::timeout(SHUTDOWN, self.task)
            .await
            .expect("the consumer stops within 10 s of the shutdown request")
            .expect("consumer task");
        // Also by the wall clock: a consumer that blocks the runtime's threads holds its timers up.
        let took = asked.elapsed();
        assert!(
            took < SHUTDOWN,
            "the consumer took {took:?} to stop; the budget is {SHUTDOWN:?}"
        );
    }

    fn handled(&self) -> u64 {
        AtomicU64::load(&self.stats.handled, Ordering::Relaxed)
    }

    fn dead_lettered(&self) -> u64 {
        AtomicU64::load(&self.stats.dead_lettered, Ordering::Relaxed)
    }

    fn retries(&self) -> u64 {
        AtomicU64::load(&self.stats.retries, Ordering::Relaxed)
    }
}

/// Poll `check` until it passes; on timeout, fail with its last complaint.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> Result<(), String>) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let outcome = check().await;
        match outcome {
            Ok(()) => return,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {PATIENCE:?} waiting for {what}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Wait until `consumer`'s effects are exactly `want` (fails at once on anything else than a
/// prefix of it, e.g. a duplicate).
async fn await_effects(pool: &DbPool, consumer: &str, want: &[Uuid]) {
    eventually("the effects", async || {
        let got = effects(pool, consumer).await;
        assert!(
            want.starts_with(&got),
            "effects {got:?} are not a prefix of {want:?}"
        );
        if got == want {
            Ok(())
        } else {
            Err(format!("{} of {} effects", got.len(), want.len()))
        }
    })
    .await;
}

fn header(m: &OwnedMessage, key: &str) -> Option<String> {
    m.headers()?
        .iter()
        .find(|h| h.key == key)
        .map(|h| String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_delivery_is_skipped_and_both_offsets_advance() {
    let fx = fixture(1).await;
    let (x, y) = (Uuid::now_v7(), Uuid::now_v7());
    let x_bytes = task_event(x);
    fx.send(&x_bytes).await;
    fx.send(&x_bytes).await;
    fx.send(&task_event(y)).await;

    let handler = Recorder::succeeding(&fx.pool, &fx.group);
    let running = fx.start(handler.clone());
    await_effects(&fx.pool, &fx.group, &[x, y]).await;

    assert_eq!(
        handler.calls(),
        [x, x, y],
        "the duplicate reached the handler"
    );
    assert_eq!(running.handled(), 3);
    assert_eq!(running.dead_lettered(), 0);
    running.stop().await;
    assert_eq!(processed_count(&fx.pool, &fx.group).await, 2);
    assert_eq!(effects(&fx.pool, &fx.group).await, [x, y]);
    assert_eq!(fx.committed().await, [3], "all three offsets are committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_go_to_the_dead_letter_topic_and_the_partition_moves_on() {
    let fx = fixture(1).await;
    let id = Uuid::now_v7();
    let not_an_event = br#"{"hello":"world"}"#.to_vec();
    let unknown_type = String::from_utf8(task_event(id))
        .unwrap()
        .replace("com.taskflow.task.updated", "com.taskflow.task.exploded")
        .into_bytes();
    let old_spec = String::from_utf8(task_event(Uuid::now_v7()))
        .unwrap()
        .replace(r#""specversion":"1.0""#, r#""specversion":"0.3""#)
        .into_bytes();
    let mut wrong_data: serde_json::Value = serde_json::from_slice(&task_event(id)).unwrap();
    wrong_data["data"] = serde_json::json!({"task_id": "not a uuid", "colour": "blue"});
    let wrong_data = serde_json::to_vec(&wrong_data).unwrap();
    // (payload, what `dlq_error` must say)
    let poison: Vec<(Option<Vec<u8>>, &str)> = vec![
        (
            Some(b"\xff\xfe\x00 not json".to_vec()),
            "payload is not a CloudEvent",
        ),
        (Some(Vec::new()), "message has no payload"),
        (None, "message has no payload"),
        (Some(not_an_event), "payload is not a CloudEvent"),
        (
            Some(unknown_type),
            "unknown event type \"com.taskflow.task.exploded\"",
        ),
        (
            Some(wrong_data),
            "data does not match com.taskflow.task.updated",
        ),
        (Some(old_spec), "unsupported specversion \"0.3\""),
    ];
    for (i, (payload, _)) in poison.iter().enumerate() {
        let offset = fx
            .send_to(
                0,
                &format!("k{i}"),
                payload.as_deref(),
                &[("ce_id", &format!("poison-{i}"))],
            )
            .await;
        assert_eq!(offset, i as i64);
    }
    let good = Uuid::now_v7();
    fx.send(&task_event(good)).await;

    let handler = Recorder::succeeding(&fx.pool, &fx.group);
    let running = fx.start(handler.clone());
    await_effects(&fx.pool, &fx.group, &[good]).await;
    assert_eq!(handler.calls(), [good], "poison reached the handler");
    assert_eq!(running.dead_lettered(), poison.len() as u64);
    assert_eq!(running.handled(), 1);
    running.stop().await;
    assert_eq!(fx.committed().await, [poison.len() as i64 + 1]);

    let dead = fx.dead_letters(poison.len()).await;
    assert_eq!(
        dead.len(),
        poison.len(),
        "one dead letter per poison message"
    );
    for (i, (m, (payload, error))) in dead.iter().zip(&poison).enumerate() {
        assert_eq!(
            m.payload(),
            payload.as_deref(),
            "dead letter {i} keeps the original bytes (null stays null)"
        );
        assert_eq!(m.key(), Some(format!("k{i}").as_bytes()), "dead letter {i}");
        let reason = header(m, "dlq_error").unwrap_or_default();
        assert!(
            reason.contains(error),
            "dead letter {i}: dlq_error {reason:?} should say {error:?}"
        );
        assert_eq!(header(m, "dlq_topic").as_deref(), Some(fx.topic.as_str()));
        assert_eq!(header(m, "dlq_partition").as_deref(), Some("0"));
        assert_eq!(header(m, "dlq_offset"), Some(i.to_string()));
        assert_eq!(header(m, "ce_id"), Some(format!("poison-{i}")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_in_place_until_the_effect_happens() {
    let fx = fixture(1).await;
    let (x, y) = (Uuid::now_v7(), Uuid::now_v7());
    fx.send(&task_event(x)).await;
    fx.send(&task_event(y)).await;

    let handler = Recorder::new(
        &fx.pool,
        &fx.group,
        Box::new(move |id, attempt| {
            (id == x && attempt <= 3).then(|| HandlerError::Transient("database away".into()))
        }),
    );
    let running = fx.start(handler.clone());
    await_effects(&fx.pool, &fx.group, &[x, y]).await;
    assert_eq!(
        handler.calls(),
        [x, x, x, x, y],
        "the partition waits for x"
    );
    assert_eq!(running.retries(), 3);
    assert_eq!(running.handled(), 2);
    assert_eq!(running.dead_lettered(), 0);
    running.stop().await;
    assert_eq!(fx.committed().await, [2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_message_is_redelivered_to_the_next_consumer_after_shutdown() {
    let fx = fixture(1).await;
    let (w, x, y) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    for id in [w, x, y] {
        fx.send(&task_event(id)).await;
    }

    let failing = Recorder::new(
        &fx.pool,
        &fx.group,
        Box::new(move |id, _| (id == x).then(|| HandlerError::Transient("still failing".into()))),
    );
    let first = fx.start(failing.clone());
    eventually("x to fail twice", async || {
        let n = failing.calls().iter().filter(|c| **c == x).count();
        (n >= 2).then_some(()).ok_or(format!("x tried {n} times"))
    })
    .await;
    first.stop().await;
    assert_eq!(fx.members().await, 0, "the stopped consumer left the group");
    assert_eq!(effects(&fx.pool, &fx.group).await, [w]);
    assert_eq!(
        fx.committed().await,
        [1],
        "only w's offset may be committed"
    );

    let healthy = Recorder::succeeding(&fx.pool, &fx.group);
    let second = fx.start(healthy.clone());
    await_effects(&fx.pool, &fx.group, &[w, x, y]).await;
    assert_eq!(
        healthy.calls(),
        [x, y],
        "the next consumer starts at x, not before"
    );
    assert_eq!(second.handled(), 2);
    second.stop().await;
    assert_eq!(fx.committed().await, [3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_error_is_dead_lettered_and_the_next_message_handled() {
    let fx = fixture(1).await;
    let (x, y) = (Uuid::now_v7(), Uuid::now_v7());
    let x_bytes = task_event(x);
    fx.send_to(0, "x-key", Some(&x_bytes), &[("ce_id", &x.to_string())])
        .await;
    fx.send(&task_event(y)).await;

    let handler = Recorder::new(
        &fx.pool,
        &fx.group,
        Box::new(move |id, _| (id == x).then(|| HandlerError::Permanent(format!("refused {id}")))),
    );
    let running = fx.start(handler.clone());
    await_effects(&fx.pool, &fx.group, &[y]).await;
    assert_eq!(handler.calls(), [x, y], "a permanent error is not retried");
    assert_eq!(running.dead_lettered(), 1);
    assert_eq!(running.handled(), 1);
    assert_eq!(running.retries(), 0);
    running.stop().await;
    assert_eq!(fx.committed().await, [2]);
    assert_eq!(processed_count(&fx.pool, &fx.group).await, 1);

    let dead = fx.dead_letters(1).await;
    assert_eq!(dead.len(), 1);
    let m = &dead[0];
    assert_eq!(m.payload(), Some(x_bytes.as_slice()));
    assert_eq!(m.key(), Some(b"x-key".as_slice()));
    assert_eq!(header(m, "dlq_error"), Some(format!("refused {x}")));
    assert_eq!(header(m, "dlq_topic").as_deref(), Some(fx.topic.as_str()));
    assert_eq!(header(m, "dlq_partition").as_deref(), Some("0"));
    assert_eq!(header(m, "dlq_offset").as_deref(), Some("0"));
    assert_eq!(header(m, "ce_id"), Some(x.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_clean_shutdown_the_group_resumes_where_it_stopped() {
    let fx = fixture(3).await;
    let mut before = Vec::new();
    for i in 0..12 {
        let id = Uuid::now_v7();
        fx.send_to(i % 3, "key", Some(&task_event(id)), &[]).await;
        before.push(id);
    }

    let first_handler = Recorder::succeeding(&fx.pool, &fx.group);
    let first = fx.start(first_handler.clone());
    eventually("the first 12 effects", async || {
        let n = effects(&fx.pool, &fx.group).await.len();
        (n == 12).then_some(()).ok_or(format!("{n} effects"))
    })
    .await;
    assert_eq!(first.handled(), 12);
    first.stop().await;
    assert_eq!(fx.members().await, 0, "the stopped consumer left the group");
    assert_eq!(fx.committed().await, [4, 4, 4]);

    let mut after = Vec::new();
    for i in 0..6 {
        let id = Uuid::now_v7();
        fx.send_to(i % 3, "key", Some(&task_event(id)), &[]).await;
        after.push(id);
    }
    let second_handler = Recorder::succeeding(&fx.pool, &fx.group);
    let second = fx.start(second_handler.clone());
    eventually("the 6 new effects", async || {
        let n = effects(&fx.pool, &fx.group).await.len();
        assert!(n <= 18, "{n} effects: duplicates");
        (n == 18).then_some(()).ok_or(format!("{n} effects"))
    })
    .await;
    // Each partition is read in order and got new messages, so an old one would have come first.
    let mut calls = second_handler.calls();
    calls.sort();
    after.sort();
    assert_eq!(
        calls, after,
        "the second consumer saw only the new messages"
    );
    assert_eq!(second.handled(), 6);
    second.stop().await;
    assert_eq!(fx.committed().await, [6, 6, 6]);

    let mut all = effects(&fx.pool, &fx.group).await;
    all.sort();
    let mut want: Vec<Uuid> = before.into_iter().chain(after).collect();
    want.sort();
    assert_eq!(all, want, "every event's effect exactly once");
    assert_eq!(processed_count(&fx.pool, &fx.group).await, 18);
}

#[test]
fn shutdown_stays_within_budget_when_the_broker_is_gone() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(broker_gone_at_shutdown())
    }));
    // A consumer stuck in librdkafka (the failure this test is about) must not keep the test
    // process waiting for the runtime: leave it behind.
    runtime.shutdown_timeout(Duration::from_secs(1));
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn broker_gone_at_shutdown() {
    // librdkafka's mock cluster: Tansu cannot be taken down from a test.
    let cluster = MockCluster::new(1).expect("mock cluster");
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("events", 1, 1).unwrap();
    cluster.create_topic("events.dlq", 1, 1).unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("producer");
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    for id in &ids {
        let payload = task_event(*id);
        producer
            .send(
                FutureRecord::<str, [u8]>::to("events")
                    .key("key")
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }
    let pool = database::pool(&database_url().await, 2).expect("pool");
    let name = format!("mock-{}", Uuid::new_v4().simple());
    let running = start(
        &brokers,
        &name,
        "events",
        Recorder::succeeding(&pool, &name),
    );
    await_effects(&pool, &name, &ids).await;

    // The last commit and the LeaveGroup cannot be delivered now; stopping must not wait for them.
    cluster.broker_down(1).unwrap();
    running.stop().await;
}
