//! The test broker (`KAFKA_BROKERS`, Tansu in `./dev test`), librdkafka's mock cluster for
//! outages and injected errors, and reading back what was published.
//!
//! Readers assign themselves every partition instead of joining a consumer group: a group join
//! on Tansu completes only after about half the session timeout (23 s with librdkafka's default
//! 45 s), which is slower than most assertions want to wait and says nothing about the code
//! under test.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;
use shared_events::topics::{TopicSpec, TOPICS};
use tokio::sync::OnceCell;
use tokio::time::Instant;

/// The broker `./dev test` started, from `KAFKA_BROKERS`.
pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

static TOPICS_READY: OnceCell<()> = OnceCell::const_new();

/// Create the system's topics on the test broker once per test process; returns the brokers.
pub async fn topics() -> String {
    let brokers = brokers();
    TOPICS_READY
        .get_or_init(|| async {
            taskflow_kafka::admin::ensure_topics(&brokers, &TOPICS, 1, "")
                .await
                .expect("topics on the test broker (is KAFKA_BROKERS reachable?)");
        })
        .await;
    brokers
}

/// The system's topics under `prefix` on `brokers` (a test of its own on a shared broker).
pub async fn prefixed_topics(brokers: &str, prefix: &str) {
    taskflow_kafka::admin::ensure_topics(brokers, &TOPICS, 1, prefix)
        .await
        .expect("prefixed topics on the test broker");
}

/// A librdkafka mock cluster (one broker, listening on a loopback port) with `topics` under
/// `prefix`.
pub fn mock_cluster(
    topics: &[TopicSpec],
    prefix: &str,
) -> MockCluster<'static, DefaultProducerContext> {
    let cluster = MockCluster::new(1).expect("mock cluster");
    for t in topics {
        cluster
            .create_topic(&format!("{prefix}{}", t.name), t.partitions, 1)
            .expect("mock topic");
    }
    cluster
}

/// A message read back from a topic.
#[derive(Debug, Clone)]
pub struct Received {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    /// The bytes as published (None for a null payload).
    pub payload: Option<Vec<u8>>,
    /// The payload as JSON (Null when it is not).
    pub body: Value,
    pub headers: HashMap<String, String>,
}

/// How long to keep reading after the expected messages arrived, to catch extras.
const QUIET: Duration = Duration::from_millis(1500);

/// A consumer positioned at the beginning of every partition of `topic`.
pub async fn reader(brokers: &str, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "taskflow-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let partitions = partition_count(brokers, topic).await;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    consumer
}

/// How many partitions `topic` has (waiting for it to exist).
pub async fn partition_count(brokers: &str, topic: &str) -> i32 {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("metadata client");
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let count = client
                .fetch_metadata(Some(&topic), Duration::from_secs(5))
                .ok()
                .and_then(|m| m.topics().first().map(|t| t.partitions().len()))
                .unwrap_or(0);
            if count > 0 {
                return count as i32;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "topic {topic} has no partitions"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .expect("metadata")
}

/// Read `topic` from the beginning until `want` messages pass `keep` (or `timeout` passes),
/// then a little longer, so that duplicates show up in the result.
pub async fn read(
    brokers: &str,
    topic: &str,
    want: usize,
    timeout: Duration,
    keep: impl Fn(&Received) -> bool,
) -> Vec<Received> {
    let consumer = reader(brokers, topic).await;
    let mut found = Vec::new();
    // Tansu sometimes hands a reader offsets it already returned; one offset is one publish, so
    // a repeat is the broker's, not a duplicate publish, and is not counted again.
    let mut seen = std::collections::HashSet::new();
    let mut deadline = Instant::now() + timeout;
    let mut settling = false;
    loop {
        if !settling && found.len() >= want {
            settling = true;
            deadline = Instant::now() + QUIET;
        }
        let message = match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Err(_) => break,
            Ok(Err(e)) => panic!("reading {topic}: {e}"),
            Ok(Ok(m)) => m,
        };
        if !seen.insert((message.partition(), message.offset())) {
            eprintln!(
                "{topic}[{}] offset {} delivered again by the broker",
                message.partition(),
                message.offset()
            );
            continue;
        }
        let payload = message.payload().map(<[u8]>::to_vec);
        let received = Received {
            partition: message.partition(),
            offset: message.offset(),
            key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
            body: serde_json::from_slice(payload.as_deref().unwrap_or_default())
                .unwrap_or(Value::Null),
            payload,
            headers: message
                .headers()
                .map(|h| {
                    use rdkafka::message::Headers;
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_owned(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        };
        if keep(&received) {
            found.push(received);
        }
    }
    found
}

/// An idempotent producer for test events.
pub fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("partitioner", "fnv1a_random")
        .create()
        .expect("producer")
}

/// Produce one message (to `partition`, else by key); returns the partition it landed on.
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
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .expect("produce")
        .partition
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

/// Save messages (headers, key, value as published) as `target/cloudevents/<name>.json` in the
/// workspace (or `TASKFLOW_CLOUDEVENTS_DIR`), for a CloudEvents SDK to read back outside Rust.
pub fn save_messages(name: &str, messages: &[Received]) {
    let dir = std::env::var_os("TASKFLOW_CLOUDEVENTS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target/cloudevents"));
    std::fs::create_dir_all(&dir).expect("cloudevents folder");
    let saved: Vec<Value> = messages
        .iter()
        .map(|m| {
            serde_json::json!({
                "headers": m.headers,
                "key": m.key,
                "value": String::from_utf8_lossy(m.payload.as_deref().unwrap_or_default()),
            })
        })
        .collect();
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_vec_pretty(&saved).unwrap(),
    )
    .expect("save messages");
}

/// A Tansu of a test's own (memory engine, a free port), for what cannot be done to the shared
/// broker: stalling it. The binary is `TANSU_BIN`, which `./dev test` sets. Killed on drop.
pub struct OwnBroker {
    child: std::process::Child,
    pub brokers: String,
}

impl OwnBroker {
    pub async fn start() -> OwnBroker {
        let bin = std::env::var("TANSU_BIN")
            .expect("TANSU_BIN: the tansu binary (./dev test sets it; see scripts/dev/kafka.sh)");
        let port = crate::process::free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = std::process::Command::new(&bin)
            .args(["broker", "--cluster-id", "taskflow-own"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .env_remove("SCHEMA_REGISTRY")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        let broker = OwnBroker {
            child,
            brokers: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + crate::PATIENCE;
        while tokio::net::TcpStream::connect(&broker.brokers)
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "{bin} did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        taskflow_kafka::admin::ensure_topics(&broker.brokers, &TOPICS, 1, "")
            .await
            .expect("topics on the test's own broker");
        broker
    }

    /// SIGSTOP: the broker holds every connection and answers nothing, as a stalled host would.
    pub fn pause(&self) {
        assert!(self.signal("-STOP"), "SIGSTOP to the test's broker");
    }

    pub fn resume(&self) {
        assert!(self.signal("-CONT"), "SIGCONT to the test's broker");
    }

    fn signal(&self, signal: &str) -> bool {
        crate::process::send_signal(&self.child, signal)
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
