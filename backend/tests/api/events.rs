//! Events reach Kafka from the outbox: exactly one per change, in order per task, through either
//! publisher, across broker and sidecar outages, with several relays at once.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use backend::configuration::{PublisherKind, Settings};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use reqwest::Method;
use serde_json::{json, Value};
use taskflow_kafka::publisher::{DaprPublisher, KafkaPublisher, Outbound, PublishError, Publisher};
use taskflow_test_support::kafka::{read, topics, Received};

use crate::helpers::{fresh_database, settings, spawn_with, TestApp};
use taskflow_test_support::dapr::{sarama_partition, TestSidecar};

const USER: &str = "bob";
/// How long the expected messages may take to arrive.
const ARRIVAL: Duration = Duration::from_secs(60);

/// Test settings with the relay on, quick retries, and the given publisher.
fn relaying(
    database_url: &str,
    publisher: PublisherKind,
    brokers: &str,
    dapr: Option<&str>,
) -> Settings {
    let mut s = settings(database_url);
    s.events.relay_enabled = true;
    s.events.publisher = publisher;
    s.common.kafka_brokers = brokers.to_owned();
    s.events.poll_interval = Duration::from_millis(200);
    s.events.publish_timeout = Duration::from_secs(2);
    s.events.max_backoff = Duration::from_millis(500);
    if let Some(endpoint) = dapr {
        s.events.dapr_http_endpoint = endpoint.to_owned();
        // A request that times out may still have been delivered (a duplicate by id): give the
        // one-worker test sidecar the time a real one would get.
        s.events.publish_timeout = Duration::from_secs(10);
    }
    s
}

async fn relaying_app(
    database_url: &str,
    publisher: PublisherKind,
    brokers: &str,
    dapr: Option<&str>,
) -> TestApp {
    spawn_with(relaying(database_url, publisher, brokers, dapr)).await
}

/// Settings for a database of its own, the relay publishing to `brokers` with rdkafka.
async fn kafka_settings(brokers: &str) -> Settings {
    relaying(&fresh_database().await, PublisherKind::Kafka, brokers, None)
}

/// An app on a database of its own whose relay publishes to `brokers` with rdkafka.
async fn kafka_app(brokers: &str) -> TestApp {
    spawn_with(kafka_settings(brokers).await).await
}

fn task_id(r: &Received) -> String {
    r.body["data"]["task_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn patch(app: &TestApp, id: &str, path: &str, body: Value) -> reqwest::Response {
    app.as_user(
        USER,
        Method::PATCH,
        &format!("/api/{USER}/tasks/{id}{path}"),
    )
    .json(&body)
    .send()
    .await
    .unwrap()
}

/// Wait until the outbox has nothing left to publish.
async fn drained(app: &TestApp) {
    for _ in 0..300 {
        if app.count("SELECT count(*) AS n FROM outbox").await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the outbox never drained");
}

async fn ready_status(app: &TestApp) -> Value {
    app.client
        .get(format!("{}/ready", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Poll until `/ready` reports the event path degraded.
async fn degraded(app: &TestApp) -> Value {
    for _ in 0..150 {
        let body = ready_status(app).await;
        if body["status"] == "degraded" {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("/ready never reported the event path degraded");
}

/// `n` tasks titled "`label` i"; returns their ids.
async fn create_tasks(app: &TestApp, label: &str, n: usize) -> HashSet<String> {
    let mut ids = HashSet::new();
    for i in 0..n {
        let task = app
            .create(USER, json!({"title": format!("{label} {i}")}))
            .await;
        ids.insert(task["id"].as_str().unwrap().to_owned());
    }
    ids
}

/// Tasks written in a burst while the event path is down.
const BURST_TASKS: usize = 500;
/// Each is created, then changed twice: three events per key, so order per key is visible.
const EVENTS_PER_TASK: usize = 3;
const BURST_EVENTS: usize = BURST_TASKS * EVENTS_PER_TASK;

/// Create [`BURST_TASKS`] tasks (16 requests at a time) and change each twice.
async fn write_burst(app: &TestApp) -> HashSet<String> {
    let mut ids = Vec::new();
    for chunk in (0..BURST_TASKS).collect::<Vec<_>>().chunks(16) {
        let creates = chunk
            .iter()
            .map(|i| app.create(USER, json!({"title": format!("burst {i}")})));
        for task in futures::future::join_all(creates).await {
            ids.push(task["id"].as_str().unwrap().to_owned());
        }
    }
    for round in 1..EVENTS_PER_TASK {
        for chunk in ids.chunks(16) {
            let edits = chunk
                .iter()
                .map(|id| patch(app, id, "", json!({"title": format!("round {round}")})));
            for res in futures::future::join_all(edits).await {
                assert_eq!(res.status(), 200);
            }
        }
    }
    ids.into_iter().collect()
}

/// Every task of the burst arrived with all its events.
fn assert_whole_burst(events: &[Received], ids: &HashSet<String>) {
    let per_task = events
        .iter()
        .fold(HashMap::<String, usize>::new(), |mut m, e| {
            *m.entry(task_id(e)).or_default() += 1;
            m
        });
    assert_eq!(per_task.len(), ids.len());
    assert!(
        per_task.values().all(|&n| n == EVENTS_PER_TASK),
        "{per_task:?}"
    );
}

/// Every message's id is distinct and, per key, task versions only go up.
fn assert_once_and_in_order(messages: &[Received]) {
    let ids: HashSet<&str> = messages
        .iter()
        .map(|m| m.body["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), messages.len(), "an event arrived twice");
    let mut last: HashMap<(&str, i32), (i64, i64)> = HashMap::new();
    for m in messages {
        let version = m.body["data"]["task"]["version"].as_i64().unwrap();
        if let Some((offset, previous)) =
            last.insert((m.key.as_str(), m.partition), (m.offset, version))
        {
            assert!(m.offset > offset, "offsets go forward");
            assert!(
                version > previous,
                "key {} went from version {previous} to {version}",
                m.key
            );
        }
    }
}

#[tokio::test]
async fn each_change_yields_one_event_in_order_with_the_envelope() {
    let brokers = topics().await;
    let app = kafka_app(&brokers).await;
    let a = app.create(USER, json!({"title": "a"})).await;
    let b = app.create(USER, json!({"title": "b"})).await;
    let c = app
        .create(
            USER,
            json!({"title": "c", "due_at": "2026-12-01T09:00:00Z", "recurrence": "weekly"}),
        )
        .await;
    let (a_id, b_id, c_id) = (
        a["id"].as_str().unwrap(),
        b["id"].as_str().unwrap(),
        c["id"].as_str().unwrap(),
    );
    assert_eq!(
        patch(&app, a_id, "", json!({"title": "a2"})).await.status(),
        200
    );
    assert_eq!(
        patch(&app, a_id, "/complete", json!({})).await.status(),
        200
    );
    assert_eq!(
        patch(&app, a_id, "/complete", json!({})).await.status(),
        200
    ); // no change, no event
    assert_eq!(
        patch(&app, b_id, "", json!({"priority": "high"}))
            .await
            .status(),
        200
    );
    // A rejected change (stale If-Match) writes nothing.
    let stale = app
        .as_user(USER, Method::PATCH, &format!("/api/{USER}/tasks/{b_id}"))
        .header("If-Match", "1")
        .json(&json!({"title": "stale"}))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 412);
    let cancel = app
        .as_user(
            USER,
            Method::POST,
            &format!("/api/{USER}/tasks/{c_id}/recurrence/cancel"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
    let delete = app
        .as_user(USER, Method::DELETE, &format!("/api/{USER}/tasks/{a_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 204);

    let ours: HashSet<String> = [a_id, b_id, c_id].iter().map(|s| s.to_string()).collect();
    let events = read(&brokers, "task-events", 8, ARRIVAL, |r| {
        ours.contains(&task_id(r))
    })
    .await;
    assert_eq!(events.len(), 8, "exactly one event per change");
    let types = |id: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| task_id(e) == id)
            .map(|e| {
                e.body["type"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("com.taskflow.task.")
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(types(a_id), ["created", "updated", "completed", "deleted"]);
    assert_eq!(types(b_id), ["created", "updated"]);
    assert_eq!(types(c_id), ["created", "recurrence_cancelled"]);
    assert_once_and_in_order(&events);
    for e in &events {
        let body = &e.body;
        assert_eq!(body["specversion"], "1.0");
        assert_eq!(body["source"], "taskflow/backend");
        assert_eq!(body["subject"], body["data"]["task_id"]);
        assert_eq!(body["datacontenttype"], "application/json");
        assert!(body["time"].is_string());
        assert_eq!(e.key, body["data"]["series_id"].as_str().unwrap());
        assert_eq!(
            e.partition,
            sarama_partition(&e.key, 3),
            "Dapr's placement for {}",
            e.key
        );
        // Structured mode by the CloudEvents Kafka binding: this content type, no `ce_` headers.
        assert_eq!(e.headers["content-type"], "application/cloudevents+json");
        assert!(
            e.headers.keys().all(|k| !k.starts_with("ce_")),
            "{:?}",
            e.headers
        );
        assert_eq!(
            uuid::Uuid::parse_str(body["id"].as_str().unwrap())
                .unwrap()
                .get_version_num(),
            7
        );
    }
    let notices = read(&brokers, "task-updates", 8, ARRIVAL, |r| {
        ours.contains(&task_id(r))
    })
    .await;
    assert_eq!(notices.len(), 8);
    assert!(notices
        .iter()
        .all(|n| n.body["type"] == "com.taskflow.task.changed"));
    drained(&app).await;
    // Without a retention (the default) nothing sent is kept: Kafka has it.
    assert_eq!(app.count("SELECT count(*) AS n FROM outbox_sent").await, 0);
}

#[tokio::test]
async fn with_a_retention_what_was_sent_is_kept_under_the_id_the_broker_carries() {
    let brokers = topics().await;
    let mut s = kafka_settings(&brokers).await;
    s.events.retention = Duration::from_secs(3600);
    let app = spawn_with(s).await;
    let ours = create_tasks(&app, "kept", 3).await;
    let events = read(&brokers, "task-events", 3, ARRIVAL, |r| {
        ours.contains(&task_id(r))
    })
    .await;
    let notices = read(&brokers, "task-updates", 3, ARRIVAL, |r| {
        ours.contains(&task_id(r))
    })
    .await;
    assert_eq!((events.len(), notices.len()), (3, 3));
    drained(&app).await;
    for e in events.iter().chain(&notices) {
        let id = e.body["id"].as_str().unwrap();
        let sql = format!(
            "SELECT count(*) AS n FROM outbox_sent WHERE id = '{id}' AND sent_at >= created_at"
        );
        assert_eq!(app.count(&sql).await, 1, "{id}");
    }
    assert_eq!(app.count("SELECT count(*) AS n FROM outbox_sent").await, 6);
}

#[tokio::test]
async fn kafka_and_dapr_paths_put_the_same_event_on_the_same_partition() {
    let brokers = topics().await;
    let app = spawn_with(settings(&fresh_database().await)).await;
    let sidecar = TestSidecar::start(&brokers, "kafka-pubsub").await;
    let keys = create_tasks(&app, "same", 6).await;
    let rows = app.outbox("task-events").await;
    // Compressed, unlike Sarama's default: the consumer sees the same event either way.
    let kafka = KafkaPublisher::new(&brokers, Duration::from_secs(10), "lz4").unwrap();
    let dapr =
        DaprPublisher::new(&sidecar.endpoint, "kafka-pubsub", Duration::from_secs(10)).unwrap();
    dapr.wait_until_ready(Duration::from_secs(5)).await.unwrap();
    let bytes: Vec<Vec<u8>> = rows
        .iter()
        .map(|(_, payload)| serde_json::to_vec(payload).unwrap())
        .collect();
    let messages: Vec<Outbound> = rows
        .iter()
        .zip(&bytes)
        .map(|((_, payload), bytes)| Outbound {
            topic: "task-events",
            key: payload["data"]["series_id"].as_str().unwrap(),
            payload: bytes,
            traceparent: None,
        })
        .collect();
    // Each path publishes the six together.
    for publisher in [&kafka as &dyn Publisher, &dapr] {
        let results = publisher.publish(&messages).await;
        assert_eq!(results.len(), 6, "{}", publisher.name());
        assert!(results.iter().all(Result::is_ok), "{results:?}");
    }
    let got = read(&brokers, "task-events", 12, ARRIVAL, |r| {
        keys.contains(&task_id(r))
    })
    .await;
    assert_eq!(got.len(), 12);
    taskflow_test_support::kafka::save_messages("kafka-and-dapr", &got);
    for key in &keys {
        let pair: Vec<&Received> = got.iter().filter(|r| &r.key == key).collect();
        assert_eq!(pair.len(), 2, "one message per path for {key}");
        let (native, via_dapr) = if pair[0].body.get("pubsubname").is_none() {
            (pair[0], pair[1])
        } else {
            (pair[1], pair[0])
        };
        assert_eq!(
            native.partition, via_dapr.partition,
            "same partition for {key}"
        );
        assert_eq!(native.partition, sarama_partition(key, 3));
        assert_eq!(native.headers, via_dapr.headers, "the same headers");
        assert_eq!(
            native.headers.get("content-type").map(String::as_str),
            Some("application/cloudevents+json")
        );
        let mut stripped = via_dapr.body.as_object().unwrap().clone();
        assert_eq!(stripped["pubsubname"], "kafka-pubsub");
        assert_eq!(stripped["topic"], "task-events");
        for dapr_only in [
            "topic",
            "pubsubname",
            "traceid",
            "traceparent",
            "tracestate",
        ] {
            stripped.remove(dapr_only);
        }
        assert_eq!(
            Value::Object(stripped),
            native.body,
            "the same CloudEvent apart from Dapr's extensions"
        );
    }
    // A pub/sub the sidecar does not know is a configuration error, not something to retry.
    let unknown =
        DaprPublisher::new(&sidecar.endpoint, "no-such-pubsub", Duration::from_secs(10)).unwrap();
    let err = unknown
        .publish(&[Outbound {
            topic: "task-events",
            key: "k",
            payload: b"{}",
            traceparent: None,
        }])
        .await
        .pop()
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, PublishError::Misconfigured(_)), "{err}");
    sidecar.stop().await;
}

#[tokio::test]
async fn dapr_sidecar_failing_then_recovering_loses_nothing() {
    let brokers = topics().await;
    let sidecar = TestSidecar::start(&brokers, "kafka-pubsub").await;
    sidecar
        .failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let app = relaying_app(
        &fresh_database().await,
        PublisherKind::Dapr,
        &brokers,
        Some(&sidecar.endpoint),
    )
    .await;
    let ids = write_burst(&app).await;
    let status = degraded(&app).await;
    assert!(
        status["checks"]["event_path"]
            .as_str()
            .unwrap()
            .contains("500"),
        "{status}"
    );
    // The backlog gauge catches up on the relay's next pass.
    let mut metrics = String::new();
    // Refreshed by the relay's passes: allow a loaded machine some time.
    for _ in 0..200 {
        metrics = app.metrics().await;
        if metrics.contains(&format!("taskflow_outbox_pending {}", 2 * BURST_EVENTS)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metrics.contains(&format!("taskflow_outbox_pending {}", 2 * BURST_EVENTS)),
        "backlog gauge: {metrics}"
    );
    assert!(metrics.contains("outbox_oldest_pending_age_seconds"));
    assert_eq!(
        app.count("SELECT count(*) AS n FROM outbox").await,
        2 * BURST_EVENTS as i64
    );

    sidecar
        .failing
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let events = read(&brokers, "task-events", BURST_EVENTS, ARRIVAL, |r| {
        ids.contains(&task_id(r))
    })
    .await;
    assert_eq!(events.len(), BURST_EVENTS);
    assert_once_and_in_order(&events);
    assert_whole_burst(&events, &ids);
    assert!(events
        .iter()
        .all(|e| e.body["pubsubname"] == "kafka-pubsub"));
    drained(&app).await;
    assert_eq!(ready_status(&app).await["status"], "ok");
    sidecar.stop().await;
}

#[tokio::test]
async fn two_relays_publish_each_row_once() {
    let brokers = topics().await;
    let database = fresh_database().await;
    let first = relaying_app(&database, PublisherKind::Kafka, &brokers, None).await;
    let second = relaying_app(&database, PublisherKind::Kafka, &brokers, None).await;
    let mut ids = HashSet::new();
    for i in 0..100 {
        let app = if i % 2 == 0 { &first } else { &second };
        let task = app
            .create(USER, json!({"title": format!("twice {i}")}))
            .await;
        let id = task["id"].as_str().unwrap().to_owned();
        assert_eq!(
            patch(app, &id, "", json!({"priority": "low"}))
                .await
                .status(),
            200
        );
        ids.insert(id);
    }
    let events = read(&brokers, "task-events", 200, ARRIVAL, |r| {
        ids.contains(&task_id(r))
    })
    .await;
    assert_eq!(events.len(), 200);
    assert_once_and_in_order(&events);
    drained(&first).await;
}

/// While rows keep coming, a pass starts one pass interval after the one before, not at each
/// writer's wake-up, so it takes every create that came meanwhile: with a wake-up per commit the
/// bench's relay ran 1,035 passes of 7.6 ms during 8 s of creates, and the broker and PostgreSQL
/// paid for each (section "2026-12-06, afternoon").
#[tokio::test]
async fn while_rows_keep_coming_a_pass_takes_what_came_during_the_pass_interval() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("task-events", 3, 1).unwrap();
    cluster.create_topic("task-updates", 1, 1).unwrap();
    let mut s = kafka_settings(&cluster.bootstrap_servers()).await;
    s.events.pass_interval = Duration::from_secs(2);
    let app = spawn_with(s).await;
    let started = std::time::Instant::now();
    create_tasks(&app, "paced", 20).await;
    let writing = started.elapsed();
    drained(&app).await;
    let passes: u64 = app
        .metric("taskflow_outbox_relay_seconds_count{phase=\"pass\"}")
        .await
        .parse()
        .unwrap();
    // A pass for each interval the 20 creates spanned, and one more for the first if it found
    // the relay idle (when the relay started after them, one pass took them all).
    let intervals = writing.as_secs() / 2 + 1;
    assert!(
        (1..=intervals + 1).contains(&passes),
        "{passes} passes published 20 creates written in {writing:?}"
    );
}

/// An app relaying to a fresh librdkafka mock cluster with the system's event topics.
async fn on_mock_cluster() -> (
    MockCluster<'static, DefaultProducerContext>,
    String,
    TestApp,
) {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("task-events", 3, 1).unwrap();
    cluster.create_topic("task-updates", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let app = kafka_app(&brokers).await;
    (cluster, brokers, app)
}

/// librdkafka's mock cluster keeps its data across `broker_down`/`broker_up`, which Tansu's
/// memory engine cannot.
#[tokio::test]
async fn broker_outage_while_500_tasks_are_written_loses_nothing() {
    let (cluster, brokers, app) = on_mock_cluster().await;
    cluster.broker_down(1).unwrap();

    let ids = write_burst(&app).await;
    degraded(&app).await;
    assert_eq!(
        app.count("SELECT count(*) AS n FROM outbox WHERE topic = 'task-events'")
            .await,
        BURST_EVENTS as i64
    );

    cluster.broker_up(1).unwrap();
    let events = read(&brokers, "task-events", BURST_EVENTS, ARRIVAL, |_| true).await;
    assert_eq!(events.len(), BURST_EVENTS);
    assert_once_and_in_order(&events);
    assert_whole_burst(&events, &ids);
    drained(&app).await;
}

#[tokio::test]
async fn topics_with_fewer_partitions_than_configured_fail_loudly() {
    use shared_events::topics::TopicSpec;
    use taskflow_kafka::admin::{ensure_topics, TopicError};
    let brokers = topics().await;
    // Leaked: TopicSpec names are 'static, like the real topic list.
    let name: &'static str =
        Box::leak(format!("short-{}", uuid::Uuid::now_v7().simple()).into_boxed_str());
    let spec = |partitions| [TopicSpec { name, partitions }];
    ensure_topics(&brokers, &spec(1), 1, "").await.unwrap();
    // Re-running with the same count is fine (idempotent) ...
    ensure_topics(&brokers, &spec(1), 1, "").await.unwrap();
    // ... asking for more than exist is an error that names the topic.
    let err = ensure_topics(&brokers, &spec(3), 1, "").await.unwrap_err();
    assert!(
        matches!(
            err,
            TopicError::TooFewPartitions {
                actual: 1,
                wanted: 3,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(name));
}

#[tokio::test]
async fn an_idle_relay_reports_an_unreachable_broker() {
    // Nothing listens on this port: the relay has nothing to publish, but /ready must still tell.
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let app = kafka_app(&unused.to_string()).await;
    let status = degraded(&app).await;
    assert!(
        status["checks"]["event_path"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{status}"
    );
    assert_eq!(status["checks"]["database"], "ok");
    // The API keeps serving; the event waits in the outbox.
    app.create(USER, json!({"title": "queued"})).await;
    assert_eq!(app.count("SELECT count(*) AS n FROM outbox").await, 2);
}

/// Until the relay has gone idle listening: it arms other writers' NOTIFY only after LISTEN.
async fn relay_idle_and_armed(app: &TestApp) {
    taskflow_test_support::eventually(
        "the relay to arm the NOTIFY",
        String::new,
        async || match app
            .count("SELECT count(*) AS n FROM outbox_relay_wakeup WHERE armed")
            .await
        {
            1 => Ok(()),
            n => Err(format!("{n} armed")),
        },
    )
    .await;
}

#[tokio::test]
async fn a_commit_wakes_the_relay_without_waiting_for_the_poll() {
    let brokers = topics().await;
    let database = fresh_database().await;
    let mut s = relaying(&database, PublisherKind::Kafka, &brokers, None);
    // A poll this slow would miss the deadlines below: only the wake-ups can deliver in time.
    s.events.poll_interval = Duration::from_secs(600);
    let app = spawn_with(s).await;
    let published = async |task: Value| {
        let id = task["id"].as_str().unwrap().to_owned();
        let events = read(&brokers, "task-events", 1, Duration::from_secs(20), |r| {
            task_id(r) == id
        })
        .await;
        assert_eq!(events.len(), 1, "{}", task["title"]);
    };
    // This process's own commit wakes its relay in-process, without any NOTIFY.
    relay_idle_and_armed(&app).await;
    published(app.create(USER, json!({"title": "wake me"})).await).await;
    // Another process writing to the outbox (another replica, a worker) NOTIFYs the idle relay.
    relay_idle_and_armed(&app).await;
    let other = spawn_with(settings(&database)).await;
    published(other.create(USER, json!({"title": "notify me"})).await).await;
}

// A PostgreSQL restart ends the idle relay's LISTEN connection: it listens again and publishes.
#[tokio::test]
async fn the_relay_outlives_its_listen_connection() {
    let brokers = topics().await;
    let database = fresh_database().await;
    let app = spawn_with(relaying(&database, PublisherKind::Kafka, &brokers, None)).await;
    relay_idle_and_armed(&app).await;
    // What a restart does to it: the server ends the connection while the relay waits on it.
    app.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query = 'LISTEN outbox'",
    )
    .await;
    let task = app
        .create(USER, json!({"title": "after the listener"}))
        .await;
    let id = task["id"].as_str().unwrap().to_owned();
    let events = read(&brokers, "task-events", 1, Duration::from_secs(20), |r| {
        task_id(r) == id
    })
    .await;
    assert_eq!(events.len(), 1);
}

#[tokio::test]
async fn with_debezium_publishing_nothing_here_publishes_and_rows_go_by_age() {
    use backend::outbox::retention::{self, PublishedBy};

    let database = fresh_database().await;
    let mut s = settings(&database);
    s.events.relay_enabled = true;
    s.events.publisher = PublisherKind::Debezium;
    let app = spawn_with(s).await;
    create_tasks(&app, "cdc", 2).await;
    // The broker is up: a relay would have sent the rows within milliseconds of the commit.
    // Debezium reads the WAL instead, so they are never moved to the sent rows here.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        app.count("SELECT count(*) AS n FROM outbox WHERE attempts = 0")
            .await,
        4
    );
    assert_eq!(app.count("SELECT count(*) AS n FROM outbox_sent").await, 0);
    let ready = app.anonymous(Method::GET, "/ready").send().await.unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    // Unsent rows past the retention go too: the connector took them from the WAL at commit.
    app.execute("UPDATE outbox SET created_at = now() - interval '100 hours' WHERE seq <= 2")
        .await;
    // And what a relay sent before the switch, once past it.
    app.execute(
        "INSERT INTO outbox_sent (seq, id, topic, message_key, event_type, payload, sent_at) \
         SELECT seq, id, topic, message_key, event_type, payload, now() - interval '100 hours' \
         FROM outbox WHERE seq = 3",
    )
    .await;
    retention::prune(
        &app.pool,
        Duration::from_secs(72 * 3600),
        PublishedBy::ChangeCapture,
    )
    .await
    .unwrap();
    assert_eq!(app.count("SELECT count(*) AS n FROM outbox").await, 2);
    assert_eq!(
        app.count("SELECT count(*) AS n FROM outbox WHERE seq <= 2")
            .await,
        0
    );
    assert_eq!(app.count("SELECT count(*) AS n FROM outbox_sent").await, 0);
}

/// A relay that stopped while idle leaves the writers' NOTIFY armed; after a switch to Debezium
/// no relay would disarm it, and every statement writing outbox rows would NOTIFY, its commit
/// queueing on PostgreSQL's notification lock. The Debezium mode's pruning disarms it.
#[tokio::test]
async fn with_debezium_publishing_a_relay_wake_up_left_armed_is_disarmed() {
    let database = fresh_database().await;
    let before = spawn_with(settings(&database)).await;
    before
        .execute("UPDATE outbox_relay_wakeup SET armed = true")
        .await;
    let mut s = settings(&database);
    s.events.relay_enabled = true;
    s.events.publisher = PublisherKind::Debezium;
    let app = spawn_with(s).await;
    for _ in 0..100 {
        if app
            .count("SELECT count(*) AS n FROM outbox_relay_wakeup WHERE armed")
            .await
            == 0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the relay's wake-up stayed armed with Debezium publishing");
}

#[tokio::test]
async fn sent_rows_are_pruned_after_the_retention_and_unsent_rows_never() {
    use std::sync::Arc;

    use backend::metrics::Metrics;
    use backend::outbox::relay::Relay;
    use backend::outbox::EventPathHealth;

    let database = fresh_database().await;
    let app = spawn_with(settings(&database)).await;
    create_tasks(&app, "prune", 3).await;
    // Two sent long ago, two sent recently, two never sent (all old).
    app.execute("UPDATE outbox SET created_at = now() - interval '200 hours'")
        .await;
    app.execute(
        "WITH sent AS (DELETE FROM outbox WHERE seq <= 4 RETURNING *) \
         INSERT INTO outbox_sent (seq, id, topic, message_key, event_type, payload, created_at, \
                                  attempts, sent_at) \
         SELECT seq, id, topic, message_key, event_type, payload, created_at, attempts, \
                CASE WHEN seq <= 2 THEN now() - interval '100 hours' \
                     ELSE now() - interval '1 hour' END FROM sent",
    )
    .await;
    app.execute(
        "INSERT INTO idempotency_keys (user_id, idempotency_key, request_hash, response_status, \
         response_body, created_at) VALUES ('u', 'old', '\\x00', 201, '{}', now() - interval '25 hours'), \
         ('u', 'new', '\\x00', 201, '{}', now())",
    )
    .await;
    let mut s = settings(&database);
    s.events.retention = Duration::from_secs(72 * 3600);
    let relay = Relay::new(
        app.pool.clone(),
        database.clone(),
        String::new(),
        Arc::new(KafkaPublisher::new("127.0.0.1:1", Duration::from_secs(1), "none").unwrap()),
        s.events,
        Arc::new(Metrics::new().unwrap()),
        Arc::new(EventPathHealth::default()),
    );
    relay.prune().await.unwrap();
    assert_eq!(
        app.count("SELECT count(*) AS n FROM outbox_sent WHERE seq > 2")
            .await,
        2
    );
    assert_eq!(app.count("SELECT count(*) AS n FROM outbox_sent").await, 2);
    assert_eq!(app.count("SELECT count(*) AS n FROM outbox").await, 2);
    assert_eq!(
        app.count("SELECT count(*) AS n FROM idempotency_keys WHERE idempotency_key = 'old'")
            .await,
        0
    );
    assert_eq!(
        app.count("SELECT count(*) AS n FROM idempotency_keys")
            .await,
        1
    );
}

#[tokio::test]
async fn one_failing_key_holds_up_only_itself() {
    let brokers = topics().await;
    let sidecar = TestSidecar::start(&brokers, "kafka-pubsub").await;
    let mut s = relaying(
        &fresh_database().await,
        PublisherKind::Dapr,
        &brokers,
        Some(&sidecar.endpoint),
    );
    // Smaller than the stuck key's backlog: healthy keys must still get through.
    s.events.batch_size = 20;
    // Kept, so the sent rows show their failed attempts.
    s.events.retention = Duration::from_secs(3600);
    let app = spawn_with(s).await;

    let stuck = app.create(USER, json!({"title": "stuck"})).await;
    let stuck_id = stuck["id"].as_str().unwrap().to_owned();
    let first = read(&brokers, "task-events", 1, ARRIVAL, |r| {
        task_id(r) == stuck_id
    })
    .await;
    assert_eq!(first.len(), 1, "published before the failure");
    *sidecar.failing_key.lock().unwrap() = Some(stuck_id.clone());
    for round in 1..=30 {
        let res = patch(
            &app,
            &stuck_id,
            "",
            json!({"title": format!("stuck {round}")}),
        )
        .await;
        assert_eq!(res.status(), 200);
    }
    let others = create_tasks(&app, "healthy", 20).await;
    let healthy = read(&brokers, "task-events", 20, ARRIVAL, |r| {
        others.contains(&task_id(r))
    })
    .await;
    assert_eq!(healthy.len(), 20, "other keys flow while one key fails");
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM outbox WHERE message_key = '{stuck_id}'"
        ))
        .await,
        60,
        "the failing key's updates (both topics) wait"
    );
    let status = degraded(&app).await;
    assert!(
        status["checks"]["event_path"]
            .as_str()
            .unwrap()
            .contains("retried"),
        "{status}"
    );

    // The key's second waiting event (version 3) fails once more and its first goes through:
    // the pass that publishes them must stop the key there, or the later events overtake it.
    let second = app
        .outbox("task-events")
        .await
        .into_iter()
        .map(|(_, payload)| payload)
        .find(|p| p["data"]["task"]["id"] == stuck_id.as_str() && p["data"]["task"]["version"] == 3)
        .unwrap();
    *sidecar.failing_event.lock().unwrap() = second["id"].as_str().map(str::to_owned);
    *sidecar.failing_key.lock().unwrap() = None;
    let events = read(&brokers, "task-events", 31, ARRIVAL, |r| {
        task_id(r) == stuck_id
    })
    .await;
    assert_eq!(events.len(), 31);
    assert_once_and_in_order(&events);
    assert_eq!(
        *sidecar.failing_event.lock().unwrap(),
        None,
        "it did fail once"
    );
    drained(&app).await;
    // The sent rows keep their failed attempts on record.
    assert!(
        app.count(&format!(
            "SELECT max(attempts)::int8 AS n FROM outbox_sent WHERE message_key = '{stuck_id}'"
        ))
        .await
            > 0
    );
    sidecar.stop().await;
}

/// The claim over a backlog that the statistics have not seen (they are taken while the relay
/// keeps up), with a key waiting for its retry: it must read what it claims, not the backlog.
/// Both the waiting-keys lookup and the ordering once read every unsent row on each pass, so a
/// backlog made each pass slower and the relay fell further behind (passes of 100-350 ms under
/// load).
#[tokio::test]
async fn the_claim_reads_what_it_claims_however_large_the_backlog() {
    let app = crate::helpers::spawn_app().await;
    app.execute("ANALYZE outbox").await;
    app.execute(
        "INSERT INTO outbox (id, topic, message_key, event_type, payload) \
         SELECT gen_random_uuid(), 'task-events', 'key-' || i, 'test', '{}' \
         FROM generate_series(1, 5000) i",
    )
    .await;
    app.execute(
        "UPDATE outbox SET next_attempt_at = now() + interval '1 hour' WHERE message_key = 'key-3'",
    )
    .await;
    let plan = explain_claim(&app, &[]).await;
    assert_eq!(plan[0]["Plan"]["Actual Rows"], 10, "{plan}");
    let pages = pages_read(&plan);
    // Reading the 5,000 unsent rows takes about 70 pages and 5,000 heap visits; 10 rows, a few.
    assert!(
        pages < 40,
        "the claim read {pages} pages for 10 rows: {plan}"
    );
}

/// The relay's session keeps the claim's plan (a generic plan, after five runs) until the
/// outbox's statistics change. Planned on a new outbox that autovacuum had not analyzed yet, it
/// looked the waiting keys up by reading the whole table (a third of its rows expected to wait),
/// and went on doing so on every pass once the table had grown: claims of 13–26 ms instead of
/// 1.6 in 5 of 14 bench runs, and a backlog of 12 s after 8 s of creates on the dev server. The
/// lookup must come from `outbox_waiting` whatever the plan was made from.
#[tokio::test]
async fn a_claim_planned_on_a_new_outbox_reads_what_it_claims_once_the_outbox_grew() {
    use diesel_async::RunQueryDsl;
    let app = crate::helpers::spawn_app().await;
    let mut pooled = app.pool.get().await.unwrap();
    let conn: &mut diesel_async::AsyncPgConnection = &mut pooled;
    // The plan the relay's session keeps, made at once rather than after five runs.
    let prepare = format!("PREPARE claim(bigint) AS {}", backend::outbox::relay::CLAIM);
    for setup in ["SET plan_cache_mode = force_generic_plan", &prepare] {
        diesel::sql_query(setup).execute(conn).await.unwrap();
    }
    // Planned while the outbox is new and empty, never analyzed.
    let first = explain_in_a_pass(conn, &[], "EXECUTE claim(10)").await;
    assert_eq!(first[0]["Plan"]["Actual Rows"], 0, "{first}");
    for grow in [
        "INSERT INTO outbox (id, topic, message_key, event_type, payload) \
         SELECT gen_random_uuid(), 'task-events', 'key-' || i, 'test', '{}' \
         FROM generate_series(1, 5000) i",
        "UPDATE outbox SET next_attempt_at = now() + interval '1 hour' WHERE message_key = 'key-3'",
    ] {
        diesel::sql_query(grow).execute(conn).await.unwrap();
    }
    let plan = explain_in_a_pass(conn, &[], "EXECUTE claim(10)").await;
    assert_eq!(plan[0]["Plan"]["Actual Rows"], 10, "{plan}");
    let pages = pages_read(&plan);
    // The whole outbox is about 70 pages; 10 rows and the waiting key, a few.
    assert!(
        pages < 40,
        "the claim read {pages} pages for 10 rows: {plan}"
    );
}

/// PostgreSQL compiles a statement whose estimated cost passes `jit_above_cost`, on every run. On
/// a new database whose outbox was never analyzed, the relay's claim was estimated at 19 million,
/// and compiled for 144 ms to run for 2 ms. The services' sessions never compile, whatever a
/// statement is estimated to cost.
#[tokio::test]
async fn no_statement_is_compiled_whatever_its_estimated_cost() {
    let app = crate::helpers::spawn_app().await;
    // Every cost past the threshold; `jit` as the pool's session has it, or turned on for the
    // transaction to show that this server would compile.
    let allowed = explain_claim(
        &app,
        &["SET LOCAL jit_above_cost = 0", "SET LOCAL jit = on"],
    )
    .await;
    assert!(allowed[0].get("JIT").is_some(), "{allowed}");
    let as_the_session_has_it = explain_claim(&app, &["SET LOCAL jit_above_cost = 0"]).await;
    assert!(
        as_the_session_has_it[0].get("JIT").is_none(),
        "{as_the_session_has_it}"
    );
}

/// The pages a plan from [`explain_claim`] read, from the cache or not.
fn pages_read(plan: &Value) -> i64 {
    let top = &plan[0]["Plan"];
    top["Shared Hit Blocks"].as_i64().unwrap() + top["Shared Read Blocks"].as_i64().unwrap()
}

/// `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)` of a 10-row claim on a connection of the app's pool,
/// as the relay's pass runs it (after taking the publishing lock), after `settings`.
async fn explain_claim(app: &crate::helpers::TestApp, settings: &[&str]) -> Value {
    let claim = backend::outbox::relay::CLAIM.replace("$1", "10");
    explain_in_a_pass(&mut app.pool.get().await.unwrap(), settings, &claim).await
}

/// `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)` of `statement` on `conn`, in a transaction as the
/// relay's pass runs (after taking the publishing lock), after `settings`.
async fn explain_in_a_pass(
    conn: &mut diesel_async::AsyncPgConnection,
    settings: &[&str],
    statement: &str,
) -> Value {
    use diesel_async::{AsyncConnection, RunQueryDsl};
    #[derive(diesel::QueryableByName)]
    struct Plan {
        #[diesel(sql_type = diesel::sql_types::Text, column_name = "QUERY PLAN")]
        plan: String,
    }
    let explain = format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement}");
    let plan = conn
        .transaction::<_, diesel::result::Error, _>(async |conn| {
            diesel::sql_query(backend::outbox::relay::LOCK)
                .bind::<diesel::sql_types::BigInt, _>(1)
                .execute(conn)
                .await?;
            for setting in settings {
                diesel::sql_query(*setting).execute(conn).await?;
            }
            let Plan { plan } = diesel::sql_query(&explain).get_result(conn).await?;
            Ok(plan)
        })
        .await
        .unwrap();
    serde_json::from_str(&plan).unwrap()
}

/// A broker stalled past the publish timeout: librdkafka times the messages out and bumps its
/// producer epoch, which Tansu then answers with PRODUCER_FENCED on every produce, and
/// librdkafka bumps again, without end and without a fatal error (seen: a relay stuck for good,
/// 160,000 rows behind). The relay must start a new producer and publish everything.
#[tokio::test]
async fn a_producer_fenced_after_a_broker_stall_is_replaced() {
    let broker = taskflow_test_support::kafka::OwnBroker::start().await;
    let app = kafka_app(&broker.brokers).await;
    let mut ids = create_tasks(&app, "before", 1).await;
    drained(&app).await;

    broker.pause();
    ids.extend(create_tasks(&app, "during", 10).await);
    // Longer than the test relay's publish timeout (2 s), so messages in flight time out.
    tokio::time::sleep(Duration::from_secs(5)).await;
    broker.resume();
    ids.extend(create_tasks(&app, "after", 10).await);

    // Drained: the broker has acknowledged every event, so the reader finds them all at once.
    drained(&app).await;
    let events = read(&broker.brokers, "task-events", ids.len(), ARRIVAL, |r| {
        ids.contains(&task_id(r))
    })
    .await;
    let tasks: HashSet<String> = events.iter().map(task_id).collect();
    assert_eq!(tasks, ids, "every created event published");
    // A message that timed out may have been stored all the same and is published again: the
    // same CloudEvent, which consumers skip by its id. Nothing else is repeated.
    let event_ids: HashSet<&str> = events
        .iter()
        .map(|e| e.body["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        event_ids.len(),
        ids.len(),
        "one event per task, repeats keep its id"
    );
}

/// An idempotent producer that hits a fatal error refuses every later message; the relay must
/// replace it rather than fail forever. The mock cluster injects the error.
#[tokio::test]
async fn a_fatal_producer_error_is_survived() {
    use rdkafka::types::RDKafkaApiKey;
    use rdkafka::types::RDKafkaRespErr;

    let (cluster, brokers, app) = on_mock_cluster().await;
    app.create(USER, json!({"title": "before"})).await;
    drained(&app).await;
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER; 3],
    );
    let ids = create_tasks(&app, "after", 20).await;
    let events = read(&brokers, "task-events", 20, ARRIVAL, |r| {
        ids.contains(&task_id(r))
    })
    .await;
    assert_eq!(events.len(), 20);
    assert_once_and_in_order(&events);
    drained(&app).await;
    let failures = taskflow_test_support::process::metric_sum(
        &app.metrics().await,
        "taskflow_outbox_publish_failures_total",
    );
    assert!(failures > 0.0, "the injected error made a publish fail");
}

/// Each claim reads the primary key over the entries of the rows already sent, which stay until
/// a vacuum, and autovacuum visits a database at most once a minute. The relay vacuums the
/// outbox itself after 10,000 rows, also when no pass was ever full (autovacuum is off for the
/// table here, so a vacuum counted is the relay's).
#[tokio::test]
async fn the_relay_vacuums_the_outbox_after_ten_thousand_rows_sent() {
    let brokers = topics().await;
    let app = spawn_with(kafka_settings(&brokers).await).await;
    app.execute("ALTER TABLE outbox SET (autovacuum_enabled = false)")
        .await;
    let vacuums = "SELECT vacuum_count AS n FROM pg_stat_user_tables WHERE relname = 'outbox'";
    let before = app.count(vacuums).await;
    // 25 rounds of 400 rows, each sent before the next: passes of 400 against batches of 500.
    for round in 0..25 {
        assert_eq!(
            app.count(vacuums).await,
            before,
            "vacuumed after {round} rounds"
        );
        app.execute(
            "INSERT INTO outbox (id, topic, message_key, event_type, payload) \
             SELECT gen_random_uuid(), 'task-events', 'key-' || i, 'test', '{}' \
             FROM generate_series(1, 400) i",
        )
        .await;
        drained(&app).await;
    }
    // And the vacuum is timed, once.
    let timed = "taskflow_outbox_relay_seconds_count{phase=\"vacuum\"} 1";
    for _ in 0..100 {
        if app.count(vacuums).await > before && app.metrics().await.lines().any(|l| l == timed) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the relay sent 10,000 rows and never vacuumed the outbox (or did not time it)");
}
