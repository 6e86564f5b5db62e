//! Spawns the real application against a fresh PostgreSQL database per test.

use std::time::Duration;

use backend::configuration::Settings;
use backend::startup::Application;
use diesel::sql_types::Text;
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;
use taskflow_db::DbPool;
pub use taskflow_test_support::db::fresh_database;
use taskflow_test_support::db::EVERY_OUTBOX_ROW;

pub const SECRET: &str = "taskflow-test-secret";

/// The defaults with quick retries, Kafka from `KAFKA_BROKERS`, and the relay off so that
/// tests see raw outbox rows (event tests turn it on).
pub fn settings(database_url: &str) -> Settings {
    let mut s = Settings::local(database_url, SECRET);
    s.common.db_pool_size = 8;
    s.common.kafka_brokers = taskflow_test_support::kafka::brokers();
    s.events.relay_enabled = false;
    // Its own Kafka consumer in every test app would only slow the suite; stream tests turn it on.
    s.stream.enabled = false;
    s.events.poll_interval = Duration::from_millis(200);
    s.events.max_backoff = Duration::from_secs(2);
    s.events.publish_timeout = Duration::from_secs(5);
    s
}

pub struct TestApp {
    pub address: String,
    pub pool: DbPool,
    pub client: reqwest::Client,
}

/// The app on a random port with its own database; the relay is off so tests see raw outbox rows.
pub async fn spawn_app() -> TestApp {
    spawn_with(settings(&fresh_database().await)).await
}

pub async fn spawn_with(settings: Settings) -> TestApp {
    let app = Application::build(&settings).await.expect("build app");
    let address = format!("http://127.0.0.1:{}", app.port());
    let pool = app.pool.clone();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        pool,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    }
}

pub fn token(user: &str) -> String {
    backend::auth::issue_token(SECRET, user, Duration::from_secs(600)).unwrap()
}

impl TestApp {
    /// A request with a valid token for `user`.
    pub fn as_user(&self, user: &str, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.address))
            .bearer_auth(token(user))
    }

    /// `GET path` as `user`: the JSON body, whatever the status.
    pub async fn get_json(&self, user: &str, path: &str) -> Value {
        self.as_user(user, Method::GET, path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn create(&self, user: &str, body: Value) -> Value {
        let res = self
            .as_user(user, Method::POST, &format!("/api/{user}/tasks"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "create {body}");
        res.json().await.unwrap()
    }

    /// A request without any `Authorization` header.
    pub fn anonymous(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.address))
    }

    /// The `/metrics` exposition.
    pub async fn metrics(&self) -> String {
        let res = self
            .anonymous(Method::GET, "/metrics")
            .send()
            .await
            .unwrap();
        res.text().await.unwrap()
    }

    /// The value of one sample from `/metrics`, e.g. `taskflow_stream_feed_reading` or
    /// `name{label="value"}`, as exposed.
    pub async fn metric(&self, sample: &str) -> String {
        let prefix = format!("{sample} ");
        self.metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no sample {sample} in /metrics"))
            .to_owned()
    }

    pub async fn list(&self, user: &str, query: &str) -> Value {
        let res = self
            .as_user(user, Method::GET, &format!("/api/{user}/tasks?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "list {query}");
        res.json().await.unwrap()
    }

    /// Outbox rows on `topic`, sent or not, as (event type, CloudEvent payload), in publish order.
    pub async fn outbox(&self, topic: &str) -> Vec<(String, Value)> {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = Text)]
            event_type: String,
            #[diesel(sql_type = Text)]
            payload: String,
        }
        let mut conn = self.pool.get().await.unwrap();
        let rows: Vec<Row> = diesel::sql_query(format!(
            "SELECT event_type, payload::text AS payload FROM {EVERY_OUTBOX_ROW} \
             WHERE topic = $1 ORDER BY seq"
        ))
        .bind::<Text, _>(topic)
        .load(&mut conn)
        .await
        .unwrap();
        rows.into_iter()
            .map(|r| (r.event_type, serde_json::from_str(&r.payload).unwrap()))
            .collect()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        taskflow_test_support::db::count(&self.pool, sql).await
    }

    pub async fn execute(&self, sql: &str) {
        taskflow_test_support::db::execute(&self.pool, sql).await
    }
}

/// The JSON error body's `error.code`, asserting the status on the way.
pub async fn error_code(res: Response, status: u16) -> String {
    assert_eq!(res.status(), status);
    let body: Value = res.json().await.expect("error body is JSON");
    body["error"]["code"]
        .as_str()
        .expect("error.code")
        .to_owned()
}

/// The whole error body, asserting the status, the JSON content type and the
/// `{"error": {"code", "message", "details"}}` shape (and nothing else at the top level).
pub async fn error_body(res: Response, status: u16) -> Value {
    let url = res.url().clone();
    assert_eq!(res.status(), status, "{url}");
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        content_type.as_deref(),
        Some("application/json"),
        "{url}: error content type"
    );
    let body: Value = res.json().await.expect("error body is JSON");
    assert_error_shape(&body);
    body
}

/// `{"error": {"code": "...", "message": "...", "details": {...}}}` and nothing more.
pub fn assert_error_shape(body: &Value) {
    let top = body.as_object().expect("error body is an object");
    assert_eq!(top.len(), 1, "only `error` at the top level: {body}");
    let error = body["error"].as_object().expect("error is an object");
    let mut keys: Vec<&str> = error.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "details", "message"], "{body}");
    assert!(
        !body["error"]["code"].as_str().unwrap().is_empty(),
        "{body}"
    );
    assert!(
        !body["error"]["message"].as_str().unwrap().is_empty(),
        "{body}"
    );
    assert!(body["error"]["details"].is_object(), "{body}");
}

/// The ids of a list page's items, in order.
pub fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|t| t["id"].as_str().expect("id").to_owned())
        .collect()
}

/// `(occurrence, due_at)` of each item of an occurrences page (or a recurrence preview).
pub fn occurrence_dates(page: &Value) -> Vec<(i64, &str)> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|o| {
            (
                o["occurrence"].as_i64().unwrap(),
                o["due_at"].as_str().unwrap(),
            )
        })
        .collect()
}
