//! Liveness, readiness, Prometheus metrics and the OpenAPI document.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp};

async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    app.anonymous(Method::GET, path).send().await.unwrap()
}

#[tokio::test]
async fn health_is_200_without_a_token() {
    let app = spawn_app().await;
    let res = get(&app, "/health").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"status": "ok"}));
}

#[tokio::test]
async fn ready_reports_each_check() {
    let app = spawn_app().await;
    let res = get(&app, "/ready").await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({
            "status": "ok",
            "checks": {"database": "ok", "migrations": "ok", "event_path": "ok"}
        })
    );
}

#[tokio::test]
async fn ready_is_503_while_the_database_is_unreachable() {
    let app = spawn_app().await;
    assert_eq!(get(&app, "/ready").await.status(), 200);
    #[derive(diesel::QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    let db = {
        use diesel_async::RunQueryDsl;
        let mut conn = app.pool.get().await.unwrap();
        diesel::sql_query("SELECT current_database()::text AS name")
            .get_result::<Name>(&mut conn)
            .await
            .unwrap()
            .name
    };
    // Refuse new connections and end the pooled ones, from outside the app's pool.
    let admin = std::env::var("DATABASE_URL").unwrap();
    let outside = taskflow_db::pool(&admin, 1).unwrap();
    let run = |sql: String| {
        let outside = outside.clone();
        async move {
            use diesel_async::RunQueryDsl;
            let mut conn = outside.get().await.unwrap();
            diesel::sql_query(sql).execute(&mut conn).await.unwrap();
        }
    };
    run(format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false")).await;
    run(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"
    ))
    .await;
    // pg_terminate_backend only signals: wait until the backends have actually gone.
    let mut gone = false;
    for _ in 0..500 {
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let left = {
            use diesel_async::RunQueryDsl;
            let mut conn = outside.get().await.unwrap();
            diesel::sql_query(format!(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = '{db}'"
            ))
            .get_result::<Count>(&mut conn)
            .await
            .unwrap()
            .n
        };
        if left == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(gone, "the app's connections were not terminated");
    let res = get(&app, "/ready").await;
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_ne!(body["checks"]["database"], "ok");
    // Task routes report the outage as 503 JSON, not as a 500.
    let res = app
        .as_user("alice", Method::GET, "/api/alice/tasks")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["error"]["code"], "unavailable");

    run(format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true")).await;
    let res = get(&app, "/ready").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ok");
}

/// The sample lines of a Prometheus text exposition, by metric name with labels.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').expect("sample line");
            (name.to_owned(), value.parse().expect("sample value"))
        })
        .collect()
}

#[tokio::test]
async fn metrics_count_requests_by_route_pattern() {
    let app = spawn_app().await;
    let task = app.create("alice", json!({"title": "t"})).await;
    app.list("alice", "").await;
    app.list("alice", "status=all").await;
    let missing = uuid::Uuid::now_v7();
    let res = app
        .as_user("alice", Method::GET, &format!("/api/alice/tasks/{missing}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = app
        .as_user(
            "alice",
            Method::GET,
            &format!("/api/alice/tasks/{}", task["id"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    get(&app, "/no/such/route").await;

    let res = get(&app, "/metrics").await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = res.text().await.unwrap();
    taskflow_test_support::process::save_metrics("backend", &text);
    for standard in ["process_resident_memory_bytes", "taskflow_outbox_pending"] {
        assert!(
            text.contains(&format!("# TYPE {standard} gauge")),
            "{standard}"
        );
    }
    let s = samples(&text);
    let requests = |method: &str, route: &str, status: u16| {
        s.get(&format!(
            "taskflow_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}}"
        ))
        .copied()
    };
    assert_eq!(
        requests("GET", "/api/{user_id}/tasks", 200),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        requests("POST", "/api/{user_id}/tasks", 201),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        requests("GET", "/api/{user_id}/tasks/{id}", 404),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        requests("GET", "/api/{user_id}/tasks/{id}", 200),
        Some(1.0),
        "{text}"
    );
    assert_eq!(requests("GET", "unmatched", 404), Some(1.0), "{text}");
    // Raw paths would make one series per user and task.
    assert!(!text.contains("/api/alice"), "{text}");
    assert!(!text.contains(&missing.to_string()), "{text}");
    assert!(!text.contains("/no/such/route"), "{text}");

    // The latency histogram, with the same labels.
    let count = s.get(
        "taskflow_http_request_duration_seconds_count{method=\"GET\",route=\"/api/{user_id}/tasks\",status=\"200\"}",
    );
    assert_eq!(count, Some(&2.0), "{text}");
    let inf = s.get(
        "taskflow_http_request_duration_seconds_bucket{method=\"GET\",route=\"/api/{user_id}/tasks\",status=\"200\",le=\"+Inf\"}",
    );
    assert_eq!(inf, Some(&2.0), "{text}");
    assert!(text.contains("# TYPE taskflow_http_request_duration_seconds histogram"));
    assert!(s.contains_key(
        "taskflow_http_request_duration_seconds_sum{method=\"GET\",route=\"/api/{user_id}/tasks\",status=\"200\"}"
    ));

    // Pool gauges: helpers size the pool at 8.
    assert_eq!(
        s.get("taskflow_db_pool_connections{state=\"max\"}"),
        Some(&8.0),
        "{text}"
    );
    for state in ["open", "idle", "waiting"] {
        assert!(
            s.contains_key(&format!(
                "taskflow_db_pool_connections{{state=\"{state}\"}}"
            )),
            "{state}: {text}"
        );
    }

    // The scrape itself is counted on the next one.
    let again = samples(&get(&app, "/metrics").await.text().await.unwrap());
    assert_eq!(
        again.get("taskflow_http_requests_total{method=\"GET\",route=\"/metrics\",status=\"200\"}"),
        Some(&1.0)
    );
}

#[tokio::test]
async fn openapi_is_3_1_and_lists_every_operation() {
    let app = spawn_app().await;
    let res = get(&app, "/openapi.json").await;
    assert_eq!(res.status(), 200);
    let doc: Value = res.json().await.unwrap();
    let version = doc["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.1."), "{version}");
    let paths = doc["paths"].as_object().unwrap();
    let operations: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| {
                    ["get", "put", "post", "delete", "patch", "head", "options"]
                        .contains(&k.as_str())
                })
                .map(|method| (path.clone(), method.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("/api/{user_id}/tasks", "get"),
        ("/api/{user_id}/tasks", "post"),
        ("/api/{user_id}/tasks/{id}", "get"),
        ("/api/{user_id}/tasks/{id}", "patch"),
        ("/api/{user_id}/tasks/{id}", "put"),
        ("/api/{user_id}/tasks/{id}", "delete"),
        ("/api/{user_id}/tasks/{id}/complete", "patch"),
        ("/api/{user_id}/tasks/{id}/recurrence/cancel", "post"),
        ("/api/{user_id}/tasks/{id}/occurrences", "get"),
        ("/api/{user_id}/tasks/{id}/history", "get"),
        ("/api/{user_id}/reminders", "get"),
        ("/api/{user_id}/reminders/{id}/snooze", "post"),
        ("/api/{user_id}/notifications", "get"),
        ("/api/{user_id}/notifications/{id}/read", "post"),
        ("/api/{user_id}/preferences", "get"),
        ("/api/{user_id}/preferences", "put"),
        ("/api/{user_id}/stream", "get"),
        ("/api/{user_id}/recurrence/preview", "post"),
        ("/internal/reminders/scan", "post"),
        ("/health", "get"),
        ("/ready", "get"),
        ("/metrics", "get"),
    ]
    .into_iter()
    .map(|(p, m)| (p.to_owned(), m.to_owned()))
    .collect();
    assert_eq!(operations, expected);
    // Operation ids are unique (OpenAPI requires it; generated clients name methods after them).
    let mut ids: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|ops| ops.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    let all = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), all, "duplicate operationId in {ids:?}");

    // Task operations need the bearer scheme, which is defined.
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for (path, method) in expected.iter().filter(|(p, _)| p.starts_with("/api/")) {
        let op = &doc["paths"][path][method];
        assert_eq!(op["security"], json!([{"bearer": []}]), "{method} {path}");
        let responses = op["responses"].as_object().unwrap();
        let mut documented = vec!["401", "403"];
        if path.contains("{id}") {
            documented.push("404");
        }
        for status in documented {
            assert!(
                responses.contains_key(status),
                "{method} {path} does not document {status}"
            );
        }
    }
    // The task schema names every response field.
    let task = &doc["components"]["schemas"]["Task"]["properties"];
    for field in [
        "id",
        "user_id",
        "title",
        "description",
        "completed",
        "completed_at",
        "priority",
        "tags",
        "due_at",
        "timezone",
        "reminder_minutes_before",
        "recurrence",
        "series_id",
        "occurrence",
        "version",
        "created_at",
        "updated_at",
    ] {
        assert!(task.get(field).is_some(), "Task.{field}");
    }
    // The list parameters are documented.
    let params: BTreeSet<&str> = doc["paths"]["/api/{user_id}/tasks"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in [
        "user_id",
        "status",
        "priority",
        "tag",
        "q",
        "due_before",
        "due_after",
        "overdue",
        "sort",
        "limit",
        "cursor",
    ] {
        assert!(params.contains(name), "{name}");
    }
}

#[tokio::test]
async fn invented_http_methods_share_one_metrics_label() {
    let app = spawn_app().await;
    for i in 0..20 {
        let method = reqwest::Method::from_bytes(format!("M{i}X").as_bytes()).unwrap();
        let res = app
            .client
            .request(method, format!("{}/health", app.address))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_client_error());
    }
    let metrics = get(&app, "/metrics").await.text().await.unwrap();
    assert!(
        !metrics.contains("method=\"M1X\""),
        "a series per invented method"
    );
    assert!(
        metrics.contains(
            "taskflow_http_requests_total{method=\"other\",route=\"/health\",status=\"405\"} 20"
        ),
        "{metrics}"
    );
}
