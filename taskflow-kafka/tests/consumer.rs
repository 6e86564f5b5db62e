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

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use diesel::sql_types::{BigInt, Text, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures::future::BoxFuture;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use shared_events::topics::{dead_letter_topic, TopicSpec};
use shared_events::{CloudEvent, TaskEventType, TaskSnapshot};
use taskflow_db::effects::{AfterCommit, Delivery, Handler, HandlerError};
use taskflow_db::DbPool;
use taskflow_kafka::consumer::{ConsumerMetrics, ConsumerSettings, EventConsumer};
use taskflow_test_support::kafka::{brokers, group_members, read, Received};
use taskflow_test_support::proxy::TcpProxy;
use tokio::sync::{watch, OnceCell};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

/// How long a consumer may take to join its group and get through a handful of messages.
const PATIENCE: Duration = Duration::from_secs(40);
/// The shutdown budget the toolkit promises.
const SHUTDOWN: Duration = Duration::from_secs(10);

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
                Uuid::now_v7().simple(),
                std::process::id()
            );
            let url = taskflow_db::migrations::create_database(&admin, &name, None)
                .await
                .expect("create test database");
            let pool = taskflow_db::pool(&url, 1).expect("pool");
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

#[derive(QueryableByName)]
struct Transaction {
    #[diesel(sql_type = BigInt)]
    events: i64,
}

/// How many of `consumer`'s effects each transaction committed, in commit order.
async fn effects_per_transaction(pool: &DbPool, consumer: &str) -> Vec<i64> {
    let mut conn = pool.get().await.expect("connection");
    // Rows written by one transaction share its id in `xmin`.
    diesel::sql_query(
        "SELECT count(*) AS events FROM effects WHERE consumer = $1 \
         GROUP BY xmin::text ORDER BY min(seq)",
    )
    .bind::<Text, _>(consumer)
    .load::<Transaction>(&mut conn)
    .await
    .expect("transactions")
    .into_iter()
    .map(|t| t.events)
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
    /// Consumer name in `effects`.
    name: String,
    /// Every call, in order.
    calls: Mutex<Vec<Uuid>>,
    /// Every after-commit action that ran, in order.
    counted: Arc<Mutex<Vec<Uuid>>>,
    rule: Rule,
    /// Fail this event's first attempt after its effect was written, before the commit.
    fail_after_effect: Option<Uuid>,
    /// The very first call takes this long: what arrives meanwhile waits in the partition.
    first_call_takes: Duration,
}

impl Recorder {
    fn new(name: &str, rule: Rule) -> Arc<Self> {
        Arc::new(Recorder {
            name: name.to_owned(),
            calls: Mutex::new(Vec::new()),
            counted: Arc::default(),
            rule,
            fail_after_effect: None,
            first_call_takes: Duration::ZERO,
        })
    }

    fn succeeding(name: &str) -> Arc<Self> {
        Self::new(name, Box::new(|_, _| None))
    }

    fn calls(&self) -> Vec<Uuid> {
        self.calls.lock().unwrap().clone()
    }

    fn counted(&self) -> Vec<Uuid> {
        self.counted.lock().unwrap().clone()
    }
}

impl Handler for Recorder {
    fn handle<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        delivery: Delivery<'a>,
    ) -> BoxFuture<'a, Result<Option<AfterCommit>, HandlerError>> {
        Box::pin(async move {
            let id = delivery.event.id;
            let attempt = {
                let mut calls = self.calls.lock().unwrap();
                calls.push(id);
                calls.iter().filter(|c| **c == id).count()
            };
            if attempt == 1 && self.calls.lock().unwrap().len() == 1 {
                tokio::time::sleep(self.first_call_takes).await;
            }
            if let Some(error) = (self.rule)(id, attempt) {
                return Err(error);
            }
            diesel::sql_query("INSERT INTO effects (consumer, event_id) VALUES ($1, $2)")
                .bind::<Text, _>(&self.name)
                .bind::<SqlUuid, _>(id)
                .execute(conn)
                .await?;
            if self.fail_after_effect == Some(id) && attempt == 1 {
                return Err(HandlerError::Transient("crash before commit".into()));
            }
            let counted = self.counted.clone();
            Ok(Some(
                Box::new(move || counted.lock().unwrap().push(id)) as AfterCommit
            ))
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
    let id = Uuid::now_v7().simple().to_string();
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
    taskflow_kafka::admin::ensure_topics(&brokers, &specs, 1, "")
        .await
        .expect("test topics (is KAFKA_BROKERS reachable?)");
    let producer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    Fixture {
        pool: taskflow_db::pool(&database_url().await, 4).expect("pool"),
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
        start(&self.brokers, &self.group, &self.topic, &self.pool, handler)
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
        group_members(&self.brokers, &self.group).await
    }

    /// Everything on the dead-letter topic: reads until `want` messages arrived (or the
    /// deadline passed), then a moment longer so that extras show up.
    async fn dead_letters(&self, want: usize) -> Vec<Received> {
        let mut found = read(&self.brokers, &self.dlq, want, PATIENCE, |_| true).await;
        found.sort_by_key(|m| m.offset);
        found
    }
}

fn settings(brokers: &str, group: &str, topic: &str) -> ConsumerSettings {
    let mut settings = ConsumerSettings::new(brokers, group, &[topic]);
    settings.max_backoff = Duration::from_millis(200);
    settings.session_timeout = Duration::from_secs(6);
    settings
}

/// A consumer of `topic` in `group`, running in the background.
fn start(
    brokers: &str,
    group: &str,
    topic: &str,
    pool: &DbPool,
    handler: Arc<Recorder>,
) -> Running {
    start_with(settings(brokers, group, topic), pool, handler)
}

fn start_with(settings: ConsumerSettings, pool: &DbPool, handler: Arc<Recorder>) -> Running {
    let topic = settings.topics[0].clone();
    let metrics = ConsumerMetrics::new(&prometheus::Registry::new()).unwrap();
    let consumer =
        EventConsumer::new(settings, pool.clone(), handler, metrics.clone()).expect("consumer");
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(consumer.run(shutdown));
    Running {
        stop,
        task,
        metrics,
        topic,
    }
}

struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    metrics: ConsumerMetrics,
    topic: String,
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

    fn count(&self, outcome: &str) -> u64 {
        self.metrics.count(&self.topic, outcome)
    }

    fn handled(&self) -> u64 {
        self.count("handled")
    }

    fn dead_lettered(&self) -> u64 {
        self.count("dead_lettered")
    }

    fn retries(&self) -> u64 {
        self.count("retried")
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

/// Wait until `running`'s counters say `handled` and `dead_lettered`. They move once an outcome
/// is durable (after its transaction commits, or the broker acknowledged a dead letter), so a
/// moment after the effects can be read.
async fn await_counts(running: &Running, handled: u64, dead_lettered: u64) {
    eventually("the outcome counters", async || {
        match (running.handled(), running.dead_lettered()) {
            counts if counts == (handled, dead_lettered) => Ok(()),
            (h, d) => Err(format!("{h} handled, {d} dead-lettered")),
        }
    })
    .await;
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

fn header(m: &Received, key: &str) -> Option<String> {
    m.headers.get(key).cloned()
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

    let handler = Recorder::succeeding(&fx.group);
    let running = fx.start(handler.clone());
    await_effects(&fx.pool, &fx.group, &[x, y]).await;

    assert_eq!(
        handler.calls(),
        [x, y],
        "the duplicate is recognised before the handler runs"
    );
    await_counts(&running, 2, 0).await;
    assert_eq!(running.count("duplicate"), 1);
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

    let handler = Recorder::succeeding(&fx.group);
    let running = fx.start(handler.clone());
    await_effects(&fx.pool, &fx.group, &[good]).await;
    assert_eq!(handler.calls(), [good], "poison reached the handler");
    await_counts(&running, 1, poison.len() as u64).await;
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
            m.payload.as_deref(),
            payload.as_deref(),
            "dead letter {i} keeps the original bytes (null stays null)"
        );
        assert_eq!(m.key, format!("k{i}"), "dead letter {i}");
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
    await_counts(&running, 2, 0).await;
    assert_eq!(running.retries(), 3);
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

    let healthy = Recorder::succeeding(&fx.group);
    let second = fx.start(healthy.clone());
    await_effects(&fx.pool, &fx.group, &[w, x, y]).await;
    assert_eq!(
        healthy.calls(),
        [x, y],
        "the next consumer starts at x, not before"
    );
    await_counts(&second, 2, 0).await;
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
        &fx.group,
        Box::new(move |id, _| (id == x).then(|| HandlerError::Permanent(format!("refused {id}")))),
    );
    let running = fx.start(handler.clone());
    await_effects(&fx.pool, &fx.group, &[y]).await;
    // y's effect commits with the batch; x is dead-lettered (and counted) once the broker has
    // acknowledged its copy, which can come after.
    await_counts(&running, 1, 1).await;
    assert_eq!(handler.calls(), [x, y], "a permanent error is not retried");
    assert_eq!(running.retries(), 0);
    running.stop().await;
    assert_eq!(fx.committed().await, [2]);
    assert_eq!(processed_count(&fx.pool, &fx.group).await, 1);

    let dead = fx.dead_letters(1).await;
    assert_eq!(dead.len(), 1);
    let m = &dead[0];
    assert_eq!(m.payload.as_deref(), Some(x_bytes.as_slice()));
    assert_eq!(m.key, "x-key");
    assert_eq!(header(m, "dlq_error"), Some(format!("refused {x}")));
    assert_eq!(header(m, "dlq_topic").as_deref(), Some(fx.topic.as_str()));
    assert_eq!(header(m, "dlq_partition").as_deref(), Some("0"));
    assert_eq!(header(m, "dlq_offset").as_deref(), Some("0"));
    assert_eq!(header(m, "ce_id"), Some(x.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_messages_share_a_transaction_and_a_refused_one_is_not_run_twice() {
    let fx = fixture(1).await;
    let ids: Vec<Uuid> = (0..50).map(|_| Uuid::now_v7()).collect();
    for id in &ids {
        fx.send(&task_event(*id)).await;
    }
    let refused = ids[30];
    let mut handler = Recorder::new(
        &fx.group,
        Box::new(move |id, _| (id == refused).then(|| HandlerError::Permanent("no".into()))),
    );
    Arc::get_mut(&mut handler).unwrap().first_call_takes = Duration::from_millis(1500);
    let mut settings = settings(&fx.brokers, &fx.group, &fx.topic);
    settings.batch_size = 20;
    let running = start_with(settings, &fx.pool, handler.clone());
    let want: Vec<Uuid> = ids.iter().copied().filter(|id| *id != refused).collect();
    await_effects(&fx.pool, &fx.group, &want).await;

    // The first batch is what had arrived when the partition started (its first event takes
    // 1.5 s); by then the rest waits, so they go 20 at a time, and the refused one (offset 30)
    // splits its batch in two.
    let per_transaction = effects_per_transaction(&fx.pool, &fx.group).await;
    let first = per_transaction[0] as usize;
    assert!((1..=20).contains(&first), "{per_transaction:?}");
    let mut want = vec![first as i64];
    // The events before the refused one in its batch run twice: rolled back, then on their own.
    let mut run_twice = 0;
    for start in (first..50).step_by(20) {
        let end = (start + 20).min(50);
        if (start..end).contains(&30) {
            run_twice = 30 - start;
            want.extend(
                [30 - start, end - 31]
                    .iter()
                    .filter(|n| **n > 0)
                    .map(|n| *n as i64),
            );
        } else {
            want.push((end - start) as i64);
        }
    }
    assert_eq!(per_transaction, want);
    let calls = handler.calls();
    assert_eq!(calls.iter().filter(|c| **c == refused).count(), 1);
    assert_eq!(calls.len(), 50 + run_twice, "{per_transaction:?}");
    // What a handler counts after the commit counts each effect once, re-run or not.
    let mut counted = handler.counted();
    counted.sort();
    let mut handled = ids.clone();
    handled.retain(|id| *id != refused);
    handled.sort();
    assert_eq!(counted, handled);
    await_counts(&running, 49, 1).await;
    running.stop().await;
    assert_eq!(fx.committed().await, [50]);
    assert_eq!(processed_count(&fx.pool, &fx.group).await, 49);
    let dead = fx.dead_letters(1).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(header(&dead[0], "dlq_offset").as_deref(), Some("30"));
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

    let first_handler = Recorder::succeeding(&fx.group);
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
    let second_handler = Recorder::succeeding(&fx.group);
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
    await_counts(&second, 6, 0).await;
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
    let pool = taskflow_db::pool(&database_url().await, 2).expect("pool");
    let name = format!("mock-{}", Uuid::now_v7().simple());
    let running = start(
        &brokers,
        &name,
        "events",
        &pool,
        Recorder::succeeding(&name),
    );
    await_effects(&pool, &name, &ids).await;

    // The last commit and the LeaveGroup cannot be delivered now; stopping must not wait for them.
    cluster.broker_down(1).unwrap();
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_effect_and_its_processed_record_commit_or_roll_back_together() {
    let fx = fixture(1).await;
    let (x, y) = (Uuid::now_v7(), Uuid::now_v7());
    fx.send(&task_event(x)).await;
    fx.send(&task_event(y)).await;
    let handler = Arc::new(Recorder {
        fail_after_effect: Some(x),
        ..Arc::into_inner(Recorder::succeeding(&fx.group)).unwrap()
    });
    let running = fx.start(handler.clone());
    await_effects(&fx.pool, &fx.group, &[x, y]).await;
    assert_eq!(
        handler.calls(),
        [x, x, y],
        "x's first effect rolled back with its record, so x ran again"
    );
    assert_eq!(running.retries(), 1);
    running.stop().await;
    assert_eq!(processed_count(&fx.pool, &fx.group).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_partition_holds_up_only_itself_and_the_member_stays_in_the_group() {
    let fx = fixture(3).await;
    let stuck = Uuid::now_v7();
    fx.send_to(0, "stuck", Some(&task_event(stuck)), &[]).await;
    let mut others = Vec::new();
    for i in 0..6 {
        let id = Uuid::now_v7();
        fx.send_to(1 + i % 2, "other", Some(&task_event(id)), &[])
            .await;
        others.push(id);
    }
    // About 10 s of failures (backoff capped at 200 ms): longer than max.poll.interval.ms.
    let handler = Recorder::new(
        &fx.group,
        Box::new(move |id, attempt| {
            (id == stuck && attempt <= 50).then(|| HandlerError::Transient("stuck".into()))
        }),
    );
    let mut s = settings(&fx.brokers, &fx.group, &fx.topic);
    s.max_poll_interval = Duration::from_secs(7);
    let running = start_with(s, &fx.pool, handler.clone());
    eventually("the other partitions' effects", async || {
        let got = effects(&fx.pool, &fx.group).await;
        let done = others.iter().filter(|id| got.contains(id)).count();
        (done == others.len())
            .then_some(())
            .ok_or(format!("{done} of {}", others.len()))
    })
    .await;
    assert!(
        !effects(&fx.pool, &fx.group).await.contains(&stuck),
        "the other partitions moved while partition 0 was still failing"
    );
    eventually("the stuck event's effect", async || {
        let got = effects(&fx.pool, &fx.group).await;
        got.contains(&stuck)
            .then_some(())
            .ok_or(format!("{} effects", got.len()))
    })
    .await;
    assert!(running.retries() >= 50, "{} retries", running.retries());
    assert_eq!(
        running.metrics.revoked.get(),
        0,
        "no rebalance: the member was never evicted"
    );
    assert_eq!(fx.members().await, 1);
    running.stop().await;
    assert_eq!(
        effects(&fx.pool, &fx.group).await.len(),
        7,
        "each effect once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_longer_than_the_poll_interval_loses_nothing_and_evicts_nobody() {
    let fx = fixture(2).await;
    let direct = database_url().await;
    let proxy = TcpProxy::start(TcpProxy::target_of(&direct)).await;
    let through_proxy = taskflow_db::pool(&proxy.url_through(&direct), 4).expect("pool");
    let handler = Recorder::succeeding(&fx.group);
    let mut s = settings(&fx.brokers, &fx.group, &fx.topic);
    s.max_poll_interval = Duration::from_secs(7);
    let running = start_with(s, &through_proxy, handler.clone());
    let mut ids = Vec::new();
    for i in 0..4 {
        let id = Uuid::now_v7();
        fx.send_to(i % 2, "k", Some(&task_event(id)), &[]).await;
        ids.push(id);
    }
    await_effects_unordered(&fx.pool, &fx.group, &ids).await;

    proxy.cut();
    for i in 0..6 {
        let id = Uuid::now_v7();
        fx.send_to(i % 2, "k", Some(&task_event(id)), &[]).await;
        ids.push(id);
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        effects(&fx.pool, &fx.group).await.len(),
        4,
        "nothing can commit while the database is away"
    );
    assert!(running.retries() > 0, "the effects were retried meanwhile");
    proxy.restore();
    let back = Instant::now();
    await_effects_unordered(&fx.pool, &fx.group, &ids).await;
    let recovery = back.elapsed();
    assert!(
        recovery < Duration::from_secs(10),
        "resumed {recovery:?} after the database returned"
    );
    assert_eq!(
        running.metrics.revoked.get(),
        0,
        "no rebalance during the outage"
    );
    assert_eq!(fx.members().await, 1);
    running.stop().await;
    assert_eq!(processed_count(&fx.pool, &fx.group).await, 10);
}

/// Wait until `consumer`'s effects are exactly the events `want`, in any order, each once.
async fn await_effects_unordered(pool: &DbPool, consumer: &str, want: &[Uuid]) {
    let mut want = want.to_vec();
    want.sort();
    eventually("the effects", async || {
        let mut got = effects(pool, consumer).await;
        got.sort();
        let mut unique = got.clone();
        unique.dedup();
        assert_eq!(unique.len(), got.len(), "an effect ran twice: {got:?}");
        if got == want {
            Ok(())
        } else {
            Err(format!("{} of {} effects", got.len(), want.len()))
        }
    })
    .await;
}
