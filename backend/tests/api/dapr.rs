//! The backend as a Dapr subscriber, against Dapr's documented delivery contract: `GET
//! /dapr/subscribe` equals `dapr-components/subscriptions.yaml`, and `POST
//! /api/events/task-events` answers SUCCESS / RETRY / DROP as Dapr interprets them.

use reqwest::Method;
use serde_json::{json, Value};
use taskflow_test_support::proxy::TcpProxy;

use crate::helpers::{error_code, fresh_database, settings, spawn_with, TestApp};

const ROUTE: &str = "/api/events/task-events";

/// Dapr's delivery of a task's `created` event: the outbox's CloudEvent plus the attributes the
/// sidecar adds.
async fn delivered_event(app: &TestApp, user: &str) -> (String, Value) {
    let task = app.create(user, json!({"title": "history"})).await;
    let id = task["id"].as_str().unwrap().to_owned();
    let (_, mut event) = app.outbox("task-events").await.pop().expect("outbox row");
    for (k, v) in [
        ("topic", "task-events"),
        ("pubsubname", "kafka-pubsub"),
        (
            "traceid",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        ("tracestate", ""),
    ] {
        event[k] = json!(v);
    }
    (id, event)
}

async fn deliver(app: &TestApp, body: Vec<u8>, token: Option<&str>) -> reqwest::Response {
    let mut req = app
        .anonymous(Method::POST, ROUTE)
        .header("content-type", "application/cloudevents+json")
        .body(body);
    if let Some(t) = token {
        req = req.header("dapr-api-token", t);
    }
    req.send().await.unwrap()
}

async fn status(res: reqwest::Response) -> String {
    assert_eq!(res.status(), 200, "Dapr reads the status field of a 2xx");
    let body: Value = res.json().await.unwrap();
    body["status"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn dapr_subscribe_equals_the_declarative_subscriptions() {
    let app = spawn_with(settings(&fresh_database().await)).await;
    let served: Value = app
        .anonymous(Method::GET, "/dapr/subscribe")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dapr-components/subscriptions.yaml"
    ))
    .unwrap();
    let declared: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            serde_yaml::from_value::<Value>(serde::Deserialize::deserialize(doc).unwrap()).unwrap()
        })
        .filter(|doc| {
            doc["scopes"]
                .as_array()
                .is_some_and(|s| s.contains(&json!("todo-backend")))
        })
        .map(|doc| {
            let spec = &doc["spec"];
            json!({
                "pubsubname": spec["pubsubname"],
                "topic": spec["topic"],
                "routes": spec["routes"],
                "deadLetterTopic": spec["deadLetterTopic"],
            })
        })
        .collect();
    assert_eq!(served, Value::Array(declared));
}

#[tokio::test]
async fn deliveries_are_recorded_once_and_garbage_is_dropped() {
    let app = spawn_with(settings(&fresh_database().await)).await;
    let (id, event) = delivered_event(&app, "erin").await;
    let bytes = serde_json::to_vec(&event).unwrap();
    for _ in 0..3 {
        assert_eq!(
            status(deliver(&app, bytes.clone(), None).await).await,
            "SUCCESS"
        );
    }
    let history: Value = app
        .as_user(
            "erin",
            Method::GET,
            &format!("/api/erin/tasks/{id}/history"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = history.as_array().unwrap();
    assert_eq!(
        entries.len(),
        1,
        "redeliveries record nothing new: {history}"
    );
    assert_eq!(entries[0]["event_type"], "created");
    assert_eq!(entries[0]["event_id"], event["id"]);
    assert_eq!(entries[0]["version"], 1);
    let res = app
        .as_user(
            "mallory",
            Method::GET,
            &format!("/api/mallory/tasks/{id}/history"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(res, 404).await, "not_found");

    let mut unknown = event.clone();
    unknown["type"] = json!("com.taskflow.task.exploded");
    for garbage in [
        b"\xff not json".to_vec(),
        b"{}".to_vec(),
        serde_json::to_vec(&unknown).unwrap(),
    ] {
        assert_eq!(status(deliver(&app, garbage, None).await).await, "DROP");
    }
    // A user's token does not open the internal route.
    let res = app
        .as_user("erin", Method::POST, ROUTE)
        .header("content-type", "application/cloudevents+json")
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(res, 403).await, "forbidden");
}

#[tokio::test]
async fn the_app_api_token_is_required_when_configured() {
    let mut s = settings(&fresh_database().await);
    s.app_api_token = Some(backend::configuration::Secret::new("dapr-secret"));
    let app = spawn_with(s).await;
    let (_, event) = delivered_event(&app, "frank").await;
    let bytes = serde_json::to_vec(&event).unwrap();
    for wrong in [None, Some("guess")] {
        let res = deliver(&app, bytes.clone(), wrong).await;
        assert_eq!(error_code(res, 401).await, "unauthorized");
    }
    assert_eq!(
        status(deliver(&app, bytes, Some("dapr-secret")).await).await,
        "SUCCESS"
    );
}

#[tokio::test]
async fn retry_while_the_database_is_away_then_success() {
    let direct = fresh_database().await;
    let proxy = TcpProxy::start(TcpProxy::target_of(&direct)).await;
    let mut s = settings(&proxy.url_through(&direct));
    s.common.db_pool_size = 2;
    let app = spawn_with(s).await;
    let (id, event) = delivered_event(&app, "gina").await;
    let bytes = serde_json::to_vec(&event).unwrap();
    proxy.cut();
    assert_eq!(
        status(deliver(&app, bytes.clone(), None).await).await,
        "RETRY"
    );
    proxy.restore();
    let mut answer = String::new();
    for _ in 0..50 {
        answer = status(deliver(&app, bytes.clone(), None).await).await;
        if answer == "SUCCESS" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(answer, "SUCCESS");
    let direct_pool = taskflow_db::pool(&direct, 1).unwrap();
    let n = taskflow_test_support::db::count(
        &direct_pool,
        &format!("SELECT count(*) AS n FROM task_history WHERE task_id = '{id}'"),
    )
    .await;
    assert_eq!(n, 1);
}
