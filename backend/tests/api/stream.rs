//! `GET /api/{user_id}/stream`: a change made over HTTP arrives as a Server-Sent Event through
//! the outbox, Kafka's task-updates and the in-process fan-out; Last-Event-ID resumes.

use std::time::Duration;

use reqwest::{Method, Response};
use serde_json::{json, Value};
use taskflow_test_support::kafka::{prefixed_topics, topics};
use uuid::Uuid;

use crate::helpers::{error_code, fresh_database, settings, spawn_with, TestApp};

/// How long one event may take: outbox relay, broker, feed.
const ARRIVAL: Duration = Duration::from_secs(30);

async fn streaming_app() -> TestApp {
    let mut s = settings(&fresh_database().await);
    s.common.kafka_brokers = topics().await;
    s.events.relay_enabled = true;
    s.stream.enabled = true;
    spawn_with(s).await
}

/// A streaming app whose feed rests after `rest` without connections and keeps `replay`
/// notices, on topics of its own: their notices are only its own.
async fn resting_app(rest: Duration, replay: usize) -> TestApp {
    let mut s = settings(&fresh_database().await);
    let brokers = topics().await;
    let prefix = format!("rest-{}-", Uuid::now_v7().simple());
    prefixed_topics(&brokers, &prefix).await;
    s.common.kafka_brokers = brokers;
    s.common.topic_prefix = prefix;
    s.events.relay_enabled = true;
    s.stream.enabled = true;
    s.stream.feed_rest = rest;
    s.stream.replay = replay;
    // A closed connection is noticed when a write to it fails: keep-alives make that soon.
    s.stream.keepalive = Duration::from_millis(100);
    spawn_with(s).await
}

/// Waits until `taskflow_stream_feed_reading` is `value` (1 reading, 0 resting).
async fn until_feed_reading(app: &TestApp, value: &str) {
    let deadline = tokio::time::Instant::now() + ARRIVAL;
    loop {
        let now = app.metric("taskflow_stream_feed_reading").await;
        if now == value {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the feed's gauge stayed {now}, not {value}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the relay has published every change (their notices are on the broker).
async fn until_published(app: &TestApp) {
    let deadline = tokio::time::Instant::now() + ARRIVAL;
    while app.count("SELECT count(*) AS n FROM outbox").await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "outbox not drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One Server-Sent Event.
#[derive(Debug, Default)]
struct Event {
    event: String,
    id: Option<String>,
    data: String,
}

/// Reads a `text/event-stream` response event by event (comments skipped).
struct Sse {
    res: Response,
    buffer: String,
    /// The `ready` or `resync` event the stream opened with.
    opening: Option<Event>,
}

impl Sse {
    async fn open(app: &TestApp, user: &str, last_event_id: Option<&str>) -> Sse {
        let mut req = app.as_user(user, Method::GET, &format!("/api/{user}/stream"));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        let mut sse = Sse {
            res,
            buffer: String::new(),
            opening: None,
        };
        // The stream is subscribed once its opening event is out.
        let first = sse.next().await;
        assert!(
            ["ready", "resync"].contains(&first.event.as_str()),
            "{first:?}"
        );
        sse.opening = Some(first);
        sse
    }

    async fn next(&mut self) -> Event {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = Event::default();
                for line in block
                    .lines()
                    .filter(|l| !l.is_empty() && !l.starts_with(':'))
                {
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "event" => event.event = value.to_owned(),
                        "id" => event.id = Some(value.to_owned()),
                        "data" => event.data.push_str(value),
                        _ => {}
                    }
                }
                if !event.event.is_empty() || !event.data.is_empty() {
                    return event;
                }
                continue;
            }
            let chunk = tokio::time::timeout(ARRIVAL, self.res.chunk())
                .await
                .expect("an event within the arrival time")
                .unwrap()
                .expect("the stream stays open");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next `task` event about `task_id`, skipping others (earlier changes, other tasks).
    async fn task_event(&mut self, task_id: &str, event_type: &str) -> (Event, Value) {
        loop {
            let event = self.next().await;
            if event.event != "task" {
                continue;
            }
            let data: Value = serde_json::from_str(&event.data).unwrap();
            if data["task_id"] == task_id && data["event_type"] == event_type {
                return (event, data);
            }
        }
    }
}

#[tokio::test]
async fn a_change_made_over_http_arrives_on_the_stream_and_resumes_by_last_event_id() {
    let app = streaming_app().await;
    let user = "stream-alice";
    let mut live = Sse::open(&app, user, None).await;
    let task = app.create(user, json!({"title": "Live"})).await;
    let id = task["id"].as_str().unwrap();

    let (created, data) = live.task_event(id, "created").await;
    assert_eq!(data["user_id"], user);
    assert_eq!(data["version"], 1);
    let created_id = created.id.expect("task events carry an id");
    created_id.parse::<i64>().expect("the id is an offset");

    // A second connection stays open and sees the completion live ...
    let res = app
        .as_user(
            user,
            Method::PATCH,
            &format!("/api/{user}/tasks/{id}/complete"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (completed, _) = live.task_event(id, "completed").await;
    // ... so the hub has it: a client that only saw `created` gets it replayed, first thing.
    let mut resumed = Sse::open(&app, user, Some(&created_id)).await;
    let replayed = resumed.next().await;
    assert_eq!(replayed.event, "task");
    assert_eq!(replayed.id, completed.id);
    let data: Value = serde_json::from_str(&replayed.data).unwrap();
    assert_eq!(
        (data["task_id"].as_str(), data["event_type"].as_str()),
        (Some(id), Some("completed"))
    );
}

#[tokio::test]
async fn another_users_changes_never_reach_the_stream() {
    let app = streaming_app().await;
    let mut alice = Sse::open(&app, "stream-carol", None).await;
    let theirs = app
        .create("stream-dave", json!({"title": "Not yours"}))
        .await;
    let mine = app.create("stream-carol", json!({"title": "Yours"})).await;
    // Notices come in order: once carol's own arrived, dave's was not for her.
    let first = loop {
        let event = alice.next().await;
        if event.event == "task" {
            break event;
        }
    };
    let data: Value = serde_json::from_str(&first.data).unwrap();
    assert_eq!(data["task_id"], mine["id"], "not {}", theirs["id"]);
}

#[tokio::test]
async fn an_unknown_last_event_id_asks_for_a_resync() {
    let app = streaming_app().await;
    let sse = Sse::open(&app, "stream-erin", Some("not-an-offset")).await;
    assert_eq!(sse.opening.as_ref().unwrap().event, "resync");
}

#[tokio::test]
async fn the_stream_needs_the_users_own_token() {
    let app = streaming_app().await;
    let res = app
        .anonymous(Method::GET, "/api/stream-frank/stream")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(res, 401).await, "unauthorized");
    let res = app
        .as_user("stream-grace", Method::GET, "/api/stream-frank/stream")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(res, 403).await, "forbidden");
    let res = app
        .as_user("stream-frank", Method::POST, "/api/stream-frank/stream")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(res, 405).await, "method_not_allowed");
}

#[tokio::test]
async fn the_stream_is_503_where_it_is_off() {
    let app = spawn_with(settings(&fresh_database().await)).await;
    let res = app
        .as_user("stream-heidi", Method::GET, "/api/stream-heidi/stream")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(res, 503).await, "unavailable");
}

/// A stream of `user` sees one of their changes and goes away; then, with no connection, the
/// process stops reading task-updates. Returns the id of the event the stream saw last.
async fn seen_then_left(app: &TestApp, user: &str) -> String {
    let mut live = Sse::open(app, user, None).await;
    let before = app.create(user, json!({"title": "Before"})).await;
    let (created, _) = live
        .task_event(before["id"].as_str().unwrap(), "created")
        .await;
    drop(live);
    until_feed_reading(app, "0").await;
    created.id.unwrap()
}

#[tokio::test]
async fn a_stream_opened_after_the_feed_rested_gets_what_changed_meanwhile() {
    let app = resting_app(Duration::from_millis(300), 1024).await;
    let user = "rest-ivan";
    let created_id = seen_then_left(&app, user).await;
    let meanwhile = app.create(user, json!({"title": "Meanwhile"})).await;
    until_published(&app).await;

    // The next connection wakes it; it reads on from where it stopped, so resuming after the
    // last event seen replays what came while it rested.
    let mut resumed = Sse::open(&app, user, Some(&created_id)).await;
    assert_eq!(resumed.opening.as_ref().unwrap().event, "ready");
    let replayed = resumed.next().await;
    assert_eq!(replayed.event, "task");
    let data: Value = serde_json::from_str(&replayed.data).unwrap();
    assert_eq!(
        (data["task_id"].as_str(), data["event_type"].as_str()),
        (meanwhile["id"].as_str(), Some("created"))
    );
    until_feed_reading(&app, "1").await;
}

#[tokio::test]
async fn after_more_than_the_ring_came_while_resting_older_ids_resync_and_new_streams_stay() {
    let app = resting_app(Duration::from_millis(300), 2).await;
    let user = "rest-judy";
    let created_id = seen_then_left(&app, user).await;
    // One at a time, each notice in a record batch of its own: Tansu reports the partition's end
    // as the last batch's base offset + 1 (../shared/reference/kafka-outbox.md), so four notices
    // in one batch would look like one and the feed would read on from its last notice (and
    // deliver all four) instead of only the latest two.
    for i in 0..4 {
        app.create(user, json!({"title": format!("Meanwhile {i}")}))
            .await;
        until_published(&app).await;
    }

    // The feed reads only the latest two notices: an id from before them is not resumable, and
    // the connection is told so before it subscribes rather than dropped afterwards.
    let old = Sse::open(&app, user, Some(&created_id)).await;
    assert_eq!(old.opening.as_ref().unwrap().event, "resync");
    // A new stream stays open and gets the next change.
    let mut fresh = Sse::open(&app, user, None).await;
    assert_eq!(fresh.opening.as_ref().unwrap().event, "ready");
    let after = app.create(user, json!({"title": "After"})).await;
    fresh
        .task_event(after["id"].as_str().unwrap(), "created")
        .await;
}
