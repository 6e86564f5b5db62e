//! The backend against Dapr's documented contract: `GET /dapr/subscribe` equals
//! `dapr-components/subscriptions.yaml`, `POST /api/events/task-events` answers SUCCESS / RETRY
//! / DROP as Dapr interprets them; preferences through either state store; the cron binding's
//! scan; secrets from the Dapr secret store, or a start-up error naming the missing one.

use reqwest::Method;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

use taskflow_test_support::dapr::{contract_endpoint, declared_subscriptions, TestSidecar};
use taskflow_test_support::kafka::brokers;
use taskflow_test_support::process::{free_port, Service};
use taskflow_test_support::proxy::TcpProxy;
use tokio::time::Instant;

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
    let declared = declared_subscriptions("todo-backend");
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
        .get_json("erin", &format!("/api/erin/tasks/{id}/history"))
        .await;
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
        tokio::time::sleep(Duration::from_millis(100)).await;
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

// ---------------------------------------------------------------------------------------------
// The other building blocks: state (preferences), the cron binding, secrets.

/// PUT the preferences with an optional If-Match: (status, ETag, body).
async fn put_preferences(
    app: &TestApp,
    user: &str,
    if_match: Option<&str>,
    url: &str,
) -> (u16, Option<String>, Value) {
    let mut req = app
        .as_user(user, Method::PUT, &format!("/api/{user}/preferences"))
        .json(&json!({"channels": ["in_app", "webhook"], "webhook_url": url, "webhook_secret": "s3cret"}));
    if let Some(etag) = if_match {
        req = req.header("If-Match", etag);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let etag = res
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, etag, res.json().await.unwrap())
}

/// Round trip and conflicts of the preferences API, whatever store is behind it.
async fn preferences_behave(app: &TestApp) {
    let user = "pia";
    let (status, etag, _) = put_preferences(app, user, None, "https://example.org/a").await;
    assert_eq!(status, 200);
    let first = etag.expect("a saved value has an ETag");
    let res = app
        .as_user(user, Method::GET, &format!("/api/{user}/preferences"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers().get("etag").unwrap().to_str().unwrap(),
        first,
        "GET answers the ETag the PUT did"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["webhook_url"], "https://example.org/a");
    assert_eq!(body["channels"], json!(["in_app", "webhook"]));
    assert_eq!(body["webhook_secret_set"], true);

    let (status, etag, _) = put_preferences(app, user, Some(&first), "https://example.org/b").await;
    assert_eq!(status, 200);
    let second = etag.unwrap();
    assert_ne!(second, first);
    // The first ETag is stale now: 412, and nothing changes.
    let (status, _, body) = put_preferences(app, user, Some(&first), "https://example.org/c").await;
    assert_eq!(status, 412, "{body}");
    assert_eq!(body["error"]["code"], "etag_mismatch");
    let (status, _, body) = put_preferences(app, user, Some("\"garbage\""), "https://x.org/").await;
    assert_eq!(status, 412, "{body}");
    let got: Value = app
        .get_json(user, &format!("/api/{user}/preferences"))
        .await;
    assert_eq!(got["webhook_url"], "https://example.org/b");
    // Writers racing over the same read: one wins, the others get 412.
    let racers = (0..4).map(|i| {
        let second = second.clone();
        async move {
            put_preferences(app, user, Some(&second), &format!("https://r{i}.org/"))
                .await
                .0
        }
    });
    let mut statuses = futures::future::join_all(racers).await;
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 412, 412, 412]);
}

#[tokio::test]
async fn preferences_round_trip_and_conflict_in_postgres() {
    let app = spawn_with(settings(&fresh_database().await)).await;
    preferences_behave(&app).await;
}

#[tokio::test]
async fn preferences_round_trip_and_conflict_in_the_dapr_state_store() {
    let sidecar = TestSidecar::start(&brokers(), "kafka-pubsub").await;
    sidecar.add_state_store("taskflow-state");
    let url = fresh_database().await;
    let mut s = settings(&url);
    s.common.state_store = taskflow_runtime::config::StateStore::Dapr {
        endpoint: contract_endpoint(&sidecar),
        store: "taskflow-state".into(),
    };
    let app = spawn_with(s).await;
    preferences_behave(&app).await;
    assert_eq!(
        app.count("SELECT count(*) AS n FROM kv_store").await,
        0,
        "with STATE_STORE=dapr nothing is written to kv_store"
    );
    sidecar.stop().await;
}

#[tokio::test]
async fn the_cron_binding_runs_the_reminder_scan() {
    let sidecar = TestSidecar::start(&brokers(), "kafka-pubsub").await;
    let mut s = settings(&fresh_database().await);
    // Only the binding fires reminders here.
    s.reminder_scheduler_enabled = false;
    s.app_api_token = Some(backend::configuration::Secret::new("dapr-secret"));
    let app = spawn_with(s).await;
    let due = (chrono::Utc::now() + chrono::TimeDelta::hours(2)).to_rfc3339();
    for i in 0..3 {
        app.create(
            "cora",
            json!({"title": format!("c{i}"), "due_at": due, "reminder_minutes_before": 5}),
        )
        .await;
    }
    app.execute("UPDATE reminders SET remind_at = now() - interval '1 second'")
        .await;
    // Without the app token the binding's call is refused, and nothing fires.
    assert_eq!(
        sidecar
            .trigger_binding(&app.address, "reminder-scan", None)
            .await,
        401
    );
    assert_eq!(app.outbox("reminders").await.len(), 0);
    // Every replica's binding fires: two calls, each reminder once.
    for _ in 0..2 {
        assert_eq!(
            sidecar
                .trigger_binding(&app.address, "reminder-scan", Some("dapr-secret"))
                .await,
            200
        );
    }
    assert_eq!(app.outbox("reminders").await.len(), 3);
    assert_eq!(
        app.count("SELECT count(*) AS n FROM reminders WHERE status = 'fired'")
            .await,
        3
    );
    sidecar.stop().await;
}

/// The backend binary with `SECRETS_SOURCE=dapr` against `sidecar`, the environment's
/// `DATABASE_URL` pointing nowhere.
fn backend_with_dapr_secrets(sidecar: &TestSidecar, name: &str) -> (Service, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut service = Service::start(
        env!("CARGO_BIN_EXE_backend"),
        name,
        &PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
        &[
            ("SECRETS_SOURCE", "dapr"),
            ("DAPR_HTTP_ENDPOINT", &sidecar.endpoint),
            ("DAPR_SECRET_STORE", "test-secrets"),
            ("DAPR_SECRET_NAME", "taskflow-secrets"),
            (
                "DATABASE_URL",
                "postgres://nobody:wrong@127.0.0.1:1/nowhere",
            ),
            ("JWT_SECRET", "the-environment-s-secret"),
            ("HTTP_ADDR", &addr),
            ("KAFKA_BROKERS", &brokers()),
        ],
    );
    service.addr = addr.clone();
    (service, format!("http://{addr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_come_from_the_dapr_secret_store() {
    let sidecar = TestSidecar::start(&brokers(), "kafka-pubsub").await;
    let url = fresh_database().await;
    sidecar.put_secret(
        "test-secrets",
        "taskflow-secrets",
        &[("DATABASE_URL", &url), ("JWT_SECRET", "the-dapr-secret")],
    );
    let (backend, base) = backend_with_dapr_secrets(&sidecar, "backend-dapr-secrets");
    backend.wait_for("/ready", 200).await;
    let client = reqwest::Client::new();
    let signed =
        |secret: &str| backend::auth::issue_token(secret, "sam", Duration::from_secs(60)).unwrap();
    let res = client
        .get(format!("{base}/api/sam/tasks"))
        .bearer_auth(signed("the-dapr-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", backend.log());
    let res = client
        .get(format!("{base}/api/sam/tasks"))
        .bearer_auth(signed("the-environment-s-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        401,
        "the environment's JWT_SECRET is not used"
    );
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_stops_start_up_naming_it() {
    let sidecar = TestSidecar::start(&brokers(), "kafka-pubsub").await;
    let url = fresh_database().await;
    sidecar.put_secret(
        "test-secrets",
        "taskflow-secrets",
        &[("DATABASE_URL", &url)],
    );
    start_up_fails_naming(
        &sidecar,
        "backend-dapr-missing-key",
        "secret \"taskflow-secrets\" in Dapr secret store \"test-secrets\" has no key JWT_SECRET",
    )
    .await;
    // No such secret at all.
    let empty = TestSidecar::start(&brokers(), "kafka-pubsub").await;
    empty.put_secret("test-secrets", "other", &[]);
    start_up_fails_naming(
        &empty,
        "backend-dapr-no-secret",
        "secret \"taskflow-secrets\" not found in Dapr secret store \"test-secrets\"",
    )
    .await;
    sidecar.stop().await;
    empty.stop().await;
}

/// The backend, started with its secrets from `sidecar`, stops with `message` in its log.
async fn start_up_fails_naming(sidecar: &TestSidecar, name: &str, message: &str) {
    let (mut backend, _) = backend_with_dapr_secrets(sidecar, name);
    let status = backend
        .exit_within(Duration::from_secs(20), Instant::now())
        .await;
    assert!(!status.success());
    let log = backend.log();
    assert!(log.contains(message), "{log}");
}
