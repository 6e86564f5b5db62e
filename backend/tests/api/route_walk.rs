//! Every operation of the OpenAPI document the code generates, walked with the wrong user: A's
//! token on B's path (403), A's token on A's path with B's ids (404), no token (401); then B's
//! data must be as it was. The walk reads the document, so a new route is walked too, and one
//! it cannot exercise (an unknown path parameter or collection) fails the test.

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::{json, Value};
use shared_events::ReminderDue;
use taskflow_db::notifications;
use taskflow_db::preferences::Channel;

use crate::helpers::{error_body, fresh_database, settings, spawn_app, spawn_with, TestApp};

const A: &str = "walk-alice";
const B: &str = "walk-bob";

/// Operations outside `/api/{user_id}`: each with its own rule, listed so that a new one is a
/// decision, not an accident. Each answers without a token (operations, or network-internal).
const UNSECURED: [&str; 4] = [
    "GET /health",
    "GET /ready",
    "GET /metrics",
    "POST /internal/reminders/scan",
];

struct Operation {
    method: Method,
    path: String,
    /// A well-formed body of the operation's request schema, so that only the caller can be
    /// the reason for a refusal.
    body: Option<Value>,
}

/// A valid body of each request schema of the document.
fn valid_body(schema: &str) -> Value {
    match schema {
        "TaskBody" | "TaskPatch" => json!({"title": "mallory"}),
        "SnoozeBody" => json!({"minutes": 5}),
        "PreferencesBody" => json!({"channels": ["in_app"]}),
        "PreviewBody" => json!({"recurrence": "daily", "due_at": "2027-01-04T09:00:00Z"}),
        other => panic!("no valid body for request schema {other}: add one to valid_body"),
    }
}

fn operations(doc: &Value) -> Vec<Operation> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let Ok(method) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            if !op.is_object() || op.get("responses").is_none() {
                continue;
            }
            ops.push(Operation {
                method,
                path: path.clone(),
                body: op.get("requestBody").map(|body| {
                    let schema = body["content"]["application/json"]["schema"]["$ref"]
                        .as_str()
                        .unwrap_or_else(|| panic!("{path}: request body without a schema $ref"));
                    valid_body(schema.rsplit('/').next().unwrap())
                }),
            });
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            let label = format!("{} {path}", ops.last().unwrap().method);
            if path.starts_with("/api/{user_id}") {
                assert!(secured, "{label} is under a user but declares no security");
            } else {
                assert!(
                    UNSECURED.contains(&label.as_str()),
                    "{label} is outside /api/{{user_id}}: add it to UNSECURED with its rule, or move it"
                );
            }
        }
    }
    ops
}

/// B's resources, by the collection segment before `{id}` (`/api/{user_id}/tasks/{id}/...`).
async fn bobs_resources(app: &TestApp) -> BTreeMap<&'static str, String> {
    let due = (chrono::Utc::now() + chrono::TimeDelta::hours(6)).to_rfc3339();
    let task = app
        .create(
            B,
            json!({"title": "bob's", "due_at": due, "reminder_minutes_before": 30, "recurrence": "daily", "tags": ["b"]}),
        )
        .await;
    let reminders: Value = app.get_json(B, &format!("/api/{B}/reminders")).await;
    let reminder = reminders["items"][0]["id"].as_str().expect("B's reminder");
    let mut conn = app.pool.get().await.unwrap();
    let now = chrono::Utc::now();
    let notification = notifications::insert(
        &mut conn,
        uuid::Uuid::now_v7(),
        &json!({}),
        &ReminderDue {
            reminder_id: uuid::Uuid::now_v7(),
            task_id: uuid::Uuid::now_v7(),
            user_id: B.into(),
            title: "bob's".into(),
            due_at: now,
            remind_at: now,
        },
        &[Channel::InApp],
    )
    .await
    .unwrap()
    .expect("B's notification");
    let res = app
        .as_user(B, Method::PUT, &format!("/api/{B}/preferences"))
        .json(&json!({"channels": ["in_app", "webhook"], "webhook_url": "https://example.com/hook", "webhook_secret": "s3cret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "B's preferences");
    BTreeMap::from([
        ("tasks", task["id"].as_str().unwrap().to_owned()),
        ("reminders", reminder.to_owned()),
        ("notifications", notification.id.to_string()),
    ])
}

/// The concrete path of `template` for `user`, with B's id of its collection.
fn concrete(template: &str, user: &str, ids: &BTreeMap<&str, String>) -> String {
    let mut path = template.replace("{user_id}", user);
    if let Some((before, _)) = template.split_once("/{id}") {
        let collection = before.rsplit('/').next().unwrap();
        let id = ids.get(collection).unwrap_or_else(|| {
            panic!("{template}: no resource of B's for {{id}} in {collection:?}: create one in bobs_resources")
        });
        path = path.replace("{id}", id);
    }
    assert!(
        !path.contains('{'),
        "{template}: a path parameter the walk cannot fill"
    );
    path
}

/// What B sees through every GET under their user, and the rows behind it.
async fn bobs_view(app: &TestApp, ops: &[Operation], ids: &BTreeMap<&str, String>) -> Vec<Value> {
    let mut view = Vec::new();
    for op in ops
        .iter()
        .filter(|op| op.method == Method::GET && op.path.starts_with("/api/{user_id}"))
    {
        let res = app
            .as_user(B, Method::GET, &concrete(&op.path, B, ids))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "B's own GET {}", op.path);
        if is_json(&res) {
            view.push(json!({"path": op.path, "body": res.json::<Value>().await.unwrap()}));
        }
    }
    for sql in [
        "SELECT count(*) AS n FROM tasks",
        "SELECT coalesce(sum(version), 0)::bigint AS n FROM tasks",
        "SELECT count(*) AS n FROM outbox",
        "SELECT count(*) AS n FROM notifications WHERE read_at IS NULL",
    ] {
        view.push(json!({"sql": sql, "n": app.count(sql).await}));
    }
    view
}

fn is_json(res: &reqwest::Response) -> bool {
    res.headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}

fn request(
    app: &TestApp,
    token_user: Option<&str>,
    op: &Operation,
    path: &str,
) -> reqwest::RequestBuilder {
    let req = match token_user {
        Some(user) => app.as_user(user, op.method.clone(), path),
        None => app.anonymous(op.method.clone(), path),
    };
    match &op.body {
        Some(body) => req.json(body),
        None => req,
    }
}

#[tokio::test]
async fn no_route_lets_a_user_reach_another_users_data() {
    // Every route on, the live stream included (test apps leave it off).
    let mut s = settings(&fresh_database().await);
    s.common.kafka_brokers = taskflow_test_support::kafka::topics().await;
    s.stream.enabled = true;
    let app = spawn_with(s).await;
    let doc: Value = serde_json::to_value(backend::openapi::document()).unwrap();
    let ops = operations(&doc);
    let user_ops: Vec<&Operation> = ops
        .iter()
        .filter(|op| op.path.starts_with("/api/{user_id}"))
        .collect();
    assert!(
        user_ops.len() >= 16,
        "the walk found {} operations",
        user_ops.len()
    );
    let ids = bobs_resources(&app).await;
    let before = bobs_view(&app, &ops, &ids).await;

    for op in &user_ops {
        let label = format!("{} {}", op.method, op.path);
        let on_b = concrete(&op.path, B, &ids);
        // A's token on B's path.
        let res = request(&app, Some(A), op, &on_b).send().await.unwrap();
        error_body(res, 403).await;
        // No token.
        let res = request(&app, None, op, &on_b).send().await.unwrap();
        error_body(res, 401).await;
        // A's token on A's path: B's ids name nothing of A's; A's own collections show none of B's.
        let on_a = concrete(&op.path, A, &ids);
        if op.path.contains("{id}") {
            let res = request(&app, Some(A), op, &on_a).send().await.unwrap();
            error_body(res, 404).await;
        } else if op.method == Method::GET {
            let res = request(&app, Some(A), op, &on_a).send().await.unwrap();
            assert!(
                res.status().is_success(),
                "{label} on A's own path: {}",
                res.status()
            );
            if is_json(&res) {
                let text = res.text().await.unwrap();
                for (collection, id) in &ids {
                    assert!(
                        !text.contains(id.as_str()),
                        "{label} on A's path shows B's {collection} {id}"
                    );
                }
                assert!(
                    !text.contains("bob's") && !text.contains("example.com"),
                    "{label}: {text}"
                );
            }
        }
    }

    let after = bobs_view(&app, &ops, &ids).await;
    assert_eq!(before, after, "B's data changed during the walk");
}

/// The routes outside the user's space keep their own rules: the Dapr delivery route refuses
/// any bearer token (a user's token is never Dapr), and the unsecured operations are exactly
/// those of `UNSECURED`, answering without a token.
#[tokio::test]
async fn internal_routes_keep_their_own_rules() {
    let app = spawn_app().await;
    let doc: Value = serde_json::to_value(backend::openapi::document()).unwrap();
    for op in operations(&doc)
        .iter()
        .filter(|op| !op.path.starts_with("/api/{user_id}"))
    {
        let label = format!("{} {}", op.method, op.path);
        let res = request(&app, None, op, &op.path).send().await.unwrap();
        assert!(
            res.status().is_success(),
            "{label} without a token: {}",
            res.status()
        );
    }
    let res = app
        .as_user(A, Method::POST, backend::routes::events::TASK_EVENTS_ROUTE)
        .header("content-type", "application/cloudevents+json")
        .body("{}")
        .send()
        .await
        .unwrap();
    error_body(res, 403).await;
    let res = app
        .anonymous(Method::GET, "/dapr/subscribe")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        200,
        "Dapr reads its subscriptions without a token"
    );
}
