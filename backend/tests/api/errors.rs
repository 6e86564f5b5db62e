//! Every error status and code, with the JSON error body; bad input never gives a 5xx.

use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::helpers::{error_body, spawn_app, TestApp};

const USER: &str = "alice";

/// The three endpoints that take a task body: create, replace and patch.
fn writes(id: &str) -> [(Method, String); 3] {
    [
        (Method::POST, format!("/api/{USER}/tasks")),
        (Method::PUT, format!("/api/{USER}/tasks/{id}")),
        (Method::PATCH, format!("/api/{USER}/tasks/{id}")),
    ]
}

async fn send_raw(
    app: &TestApp,
    method: &Method,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Response {
    let mut req = app.as_user(USER, method.clone(), path).body(body);
    if let Some(ct) = content_type {
        req = req.header(CONTENT_TYPE, ct);
    }
    req.send().await.unwrap()
}

async fn task(app: &TestApp) -> (String, Value) {
    let task = app.create(USER, json!({"title": "original"})).await;
    (task["id"].as_str().unwrap().to_owned(), task)
}

/// The task is exactly as it was and no event beyond its creation was written.
async fn unchanged(app: &TestApp, id: &str, before: &Value) {
    let now: Value = app.get_json(USER, &format!("/api/{USER}/tasks/{id}")).await;
    assert_eq!(&now, before);
    assert_eq!(app.count("SELECT count(*) AS n FROM tasks").await, 1);
    // The create's two rows (task-events and task-updates) and nothing since.
    assert_eq!(app.count("SELECT count(*) AS n FROM outbox").await, 2);
}

#[tokio::test]
async fn malformed_json_is_400_malformed_json() {
    let app = spawn_app().await;
    let (id, before) = task(&app).await;
    for body in [
        "{",
        "{\"title\": }",
        "{\"title\": \"t\",}",
        "not json",
        "",
        "{\"title\": \"t\"} trailing",
        "{'title': 't'}",
        "{\"title\": \"\\ud800\"}",
        "\u{feff}{\"title\": \"t\"}",
    ] {
        for (method, path) in writes(&id) {
            let res = send_raw(&app, &method, &path, Some("application/json"), body).await;
            let err = error_body(res, 400).await;
            assert_eq!(
                err["error"]["code"], "malformed_json",
                "{method} {body:?}: {err}"
            );
        }
    }
    unchanged(&app, &id, &before).await;
}

#[tokio::test]
async fn wrong_types_are_400_invalid_body() {
    let app = spawn_app().await;
    let (id, before) = task(&app).await;
    for body in [
        json!({"title": 5}),
        json!({"title": "t", "tags": "x"}),
        json!({"title": "t", "tags": [1, 2]}),
        json!({"title": "t", "priority": 3}),
        json!({"title": "t", "completed": "yes"}),
        json!({"title": "t", "reminder_minutes_before": "10"}),
        json!({"title": "t", "reminder_minutes_before": 1.5}),
        json!({"title": "t", "due_at": 1_700_000_000}),
        json!({"title": ["t"]}),
        json!(null),
        json!("title"),
        json!(42),
        json!([]),
        json!(["t"]),
    ] {
        for (method, path) in writes(&id) {
            let res = app
                .as_user(USER, method.clone(), &path)
                .json(&body)
                .send()
                .await
                .unwrap();
            let err = error_body(res, 400).await;
            assert_eq!(
                err["error"]["code"], "invalid_body",
                "{method} {body}: {err}"
            );
        }
    }
    unchanged(&app, &id, &before).await;
}

#[tokio::test]
async fn unknown_fields_are_400_invalid_body_naming_the_field() {
    let app = spawn_app().await;
    let (id, before) = task(&app).await;
    for body in [
        json!({"title": "t", "colour": "red"}),
        json!({"title": "t", "id": id}),
        json!({"title": "t", "version": 7}),
        json!({"title": "t", "user_id": "bob"}),
    ] {
        let field = body
            .as_object()
            .unwrap()
            .keys()
            .find(|k| *k != "title")
            .unwrap()
            .clone();
        for (method, path) in writes(&id) {
            let res = app
                .as_user(USER, method.clone(), &path)
                .json(&body)
                .send()
                .await
                .unwrap();
            let err = error_body(res, 400).await;
            assert_eq!(err["error"]["code"], "invalid_body", "{method} {body}");
            assert!(
                err["error"]["message"].as_str().unwrap().contains(&field),
                "{method}: {err}"
            );
        }
    }
    unchanged(&app, &id, &before).await;
}

#[tokio::test]
async fn a_body_over_64_kib_is_413() {
    let app = spawn_app().await;
    let (id, before) = task(&app).await;
    let big = json!({"title": "t", "description": "x".repeat(70 * 1024)}).to_string();
    for (method, path) in writes(&id) {
        let res = send_raw(&app, &method, &path, Some("application/json"), big.clone()).await;
        let err = error_body(res, 413).await;
        assert_eq!(err["error"]["code"], "payload_too_large", "{method}");
        assert_eq!(err["error"]["details"]["limit_bytes"], 65536);
    }
    // One byte over the limit is too much; exactly the limit is read (and then validated).
    let padded = |size: usize| {
        let skeleton = json!({"title": "t", "description": ""}).to_string();
        let description = "y".repeat(size - skeleton.len());
        let body = json!({"title": "t", "description": description}).to_string();
        assert_eq!(body.len(), size);
        body
    };
    let path = format!("/api/{USER}/tasks");
    let res = send_raw(
        &app,
        &Method::POST,
        &path,
        Some("application/json"),
        padded(65537),
    )
    .await;
    assert_eq!(
        error_body(res, 413).await["error"]["code"],
        "payload_too_large"
    );
    let res = send_raw(
        &app,
        &Method::POST,
        &path,
        Some("application/json"),
        padded(65536),
    )
    .await;
    let err = error_body(res, 422).await;
    assert_eq!(err["error"]["code"], "validation_failed");
    assert!(err["error"]["details"]["fields"]["description"].is_string());
    unchanged(&app, &id, &before).await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let app = spawn_app().await;
    let (id, before) = task(&app).await;
    let body = json!({"title": "t"}).to_string();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/xml"),
        Some("not a mime type"),
        None,
    ] {
        for (method, path) in writes(&id) {
            let res = send_raw(&app, &method, &path, content_type, body.clone()).await;
            let err = error_body(res, 415).await;
            assert_eq!(
                err["error"]["code"], "unsupported_media_type",
                "{method} {content_type:?}"
            );
        }
    }
    unchanged(&app, &id, &before).await;
    // JSON with a charset or a +json suffix is JSON.
    let path = format!("/api/{USER}/tasks/{id}");
    let res = send_raw(
        &app,
        &Method::PATCH,
        &path,
        Some("application/merge-patch+json"),
        r#"{"title": "merged"}"#,
    )
    .await;
    assert_eq!(res.status(), 200);
    let res = send_raw(
        &app,
        &Method::POST,
        &format!("/api/{USER}/tasks"),
        Some("application/json; charset=utf-8"),
        r#"{"title": "charset"}"#,
    )
    .await;
    assert_eq!(res.status(), 201);
}

#[tokio::test]
async fn semantic_problems_are_422_with_a_message_per_field() {
    let app = spawn_app().await;
    let (id, before) = task(&app).await;
    let body = json!({
        "title": "x".repeat(201),
        "priority": "critical",
        "timezone": "Mars/Olympus",
        "reminder_minutes_before": 15,
        "recurrence": {"rule": "FREQ=FORTNIGHTLY", "anchor": "due"},
    });
    for (method, path) in writes(&id).into_iter() {
        let res = app
            .as_user(USER, method.clone(), &path)
            .json(&body)
            .send()
            .await
            .unwrap();
        let err = error_body(res, 422).await;
        assert_eq!(err["error"]["code"], "validation_failed", "{method}");
        let fields = err["error"]["details"]["fields"].as_object().unwrap();
        let mut names: Vec<&str> = fields.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "priority",
                "recurrence",
                "reminder_minutes_before",
                "timezone",
                "title"
            ],
            "{method}: {err}"
        );
        assert!(fields["title"].as_str().unwrap().contains("200"), "{err}");
        assert!(
            fields["timezone"]
                .as_str()
                .unwrap()
                .contains("Mars/Olympus"),
            "{err}"
        );
        assert!(
            fields["priority"].as_str().unwrap().contains("critical"),
            "{err}"
        );
        assert_eq!(fields["reminder_minutes_before"], "needs due_at");
    }

    // One problem at a time names just that field.
    let cases = [
        (json!({"title": "   "}), "title"),
        (
            json!({"title": "t", "description": "d".repeat(4001)}),
            "description",
        ),
        (json!({"title": "t", "tags": ["ok", ""]}), "tags"),
        (json!({"title": "t", "tags": ["x".repeat(33)]}), "tags"),
        (
            json!({"title": "t", "tags": (0..21).map(|i| format!("t{i}")).collect::<Vec<_>>()}),
            "tags",
        ),
        (json!({"title": "t", "due_at": "tomorrow"}), "due_at"),
        (
            json!({"title": "t", "due_at": "2026-02-30T00:00:00Z"}),
            "due_at",
        ),
        (
            json!({"title": "t", "timezone": "Mars/Olympus"}),
            "timezone",
        ),
        (
            json!({"title": "t", "reminder_minutes_before": 10}),
            "reminder_minutes_before",
        ),
        (
            json!({"title": "t", "due_at": "2026-12-01T09:00:00Z", "reminder_minutes_before": 525_601}),
            "reminder_minutes_before",
        ),
        (
            json!({"title": "t", "due_at": "2026-12-01T09:00:00Z", "reminder_minutes_before": -1}),
            "reminder_minutes_before",
        ),
        (
            json!({"title": "t", "due_at": "2026-12-01T09:00:00Z", "recurrence": {"rule": "FREQ=SOMETIMES", "anchor": "due"}}),
            "recurrence",
        ),
        (
            json!({"title": "t", "due_at": "2026-12-01T09:00:00Z", "recurrence": "fortnightly"}),
            "recurrence",
        ),
        (
            json!({"title": "t", "due_at": "2026-12-01T09:00:00Z", "recurrence": {"cron": "not a cron", "anchor": "due"}}),
            "recurrence",
        ),
        (
            json!({"title": "t", "due_at": "2026-12-01T09:00:00Z", "recurrence": {"rule": "FREQ=DAILY", "anchor": "sometime"}}),
            "recurrence",
        ),
        (json!({"title": "t\u{0}"}), "title"),
        (
            json!({"title": "t", "description": "a\u{0}b"}),
            "description",
        ),
        (json!({"title": "t", "tags": ["a\u{0}"]}), "tags"),
    ];
    for (body, field) in cases {
        let res = app
            .as_user(USER, Method::POST, &format!("/api/{USER}/tasks"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let err = error_body(res, 422).await;
        let fields = err["error"]["details"]["fields"].as_object().unwrap();
        assert_eq!(fields.keys().collect::<Vec<_>>(), [field], "{body}: {err}");
        assert!(!fields[field].as_str().unwrap().is_empty());
    }
    // A patch that clears what another field needs is refused as a whole.
    let dated = app
        .create(
            USER,
            // Due far ahead, so its reminder does not fire while this test looks at the outbox.
            json!({"title": "dated", "due_at": "2099-12-01T09:00:00Z", "reminder_minutes_before": 5}),
        )
        .await;
    let res = app
        .as_user(
            USER,
            Method::PATCH,
            &format!("/api/{USER}/tasks/{}", dated["id"].as_str().unwrap()),
        )
        .json(&json!({"due_at": null, "title": "renamed"}))
        .send()
        .await
        .unwrap();
    let err = error_body(res, 422).await;
    assert!(err["error"]["details"]["fields"]["reminder_minutes_before"].is_string());
    let dated_id = dated["id"].as_str().unwrap();
    app.execute(&format!(
        "DELETE FROM outbox WHERE payload->>'subject' = '{dated_id}'"
    ))
    .await;
    app.execute(&format!("DELETE FROM tasks WHERE id = '{dated_id}'"))
        .await;
    unchanged(&app, &id, &before).await;
}

#[tokio::test]
async fn unknown_routes_and_non_uuid_ids_are_json_404() {
    let app = spawn_app().await;
    let (id, _) = task(&app).await;
    for (method, path) in [
        (Method::GET, "/nope".to_owned()),
        (Method::POST, "/nope".to_owned()),
        (Method::GET, "/api".to_owned()),
        (Method::GET, format!("/api/{USER}")),
        (Method::GET, format!("/api/{USER}/things")),
        (Method::GET, format!("/api/{USER}/tasks/{id}/nope")),
        (Method::GET, format!("/api/{USER}/tasks/{id}/recurrence")),
        (Method::GET, "/api/tasks".to_owned()),
        (Method::GET, format!("/api/{USER}/tasks/not-a-uuid")),
        (Method::GET, format!("/api/{USER}/tasks/123")),
        (Method::PATCH, format!("/api/{USER}/tasks/not-a-uuid")),
        (Method::PUT, format!("/api/{USER}/tasks/not-a-uuid")),
        (Method::DELETE, format!("/api/{USER}/tasks/%00")),
        (Method::PATCH, format!("/api/{USER}/tasks/xyz/complete")),
        (
            Method::POST,
            format!("/api/{USER}/tasks/xyz/recurrence/cancel"),
        ),
        (
            Method::GET,
            format!("/api/{USER}/tasks/{}", uuid::Uuid::now_v7()),
        ),
        (Method::GET, format!("/api/{USER}/tasks/{id}x")),
    ] {
        let res = app
            .as_user(USER, method.clone(), &path)
            .json(&json!({"title": "t"}))
            .send()
            .await
            .unwrap();
        let err = error_body(res, 404).await;
        assert_eq!(err["error"]["code"], "not_found", "{method} {path}");
    }
}

#[tokio::test]
async fn a_wrong_method_is_json_405() {
    let app = spawn_app().await;
    let (id, before) = task(&app).await;
    let trace = Method::from_bytes(b"TRACE").unwrap();
    for (method, path, allow) in [
        (Method::DELETE, format!("/api/{USER}/tasks"), "GET, POST"),
        (Method::PUT, format!("/api/{USER}/tasks"), "GET, POST"),
        (Method::PATCH, format!("/api/{USER}/tasks"), "GET, POST"),
        (
            Method::POST,
            format!("/api/{USER}/tasks/{id}"),
            "GET, PUT, DELETE, PATCH",
        ),
        (
            trace,
            format!("/api/{USER}/tasks/{id}"),
            "GET, PUT, DELETE, PATCH",
        ),
        (
            Method::GET,
            format!("/api/{USER}/tasks/{id}/complete"),
            "PATCH",
        ),
        (
            Method::POST,
            format!("/api/{USER}/tasks/{id}/complete"),
            "PATCH",
        ),
        (
            Method::GET,
            format!("/api/{USER}/tasks/{id}/recurrence/cancel"),
            "POST",
        ),
        (
            Method::DELETE,
            format!("/api/{USER}/tasks/{id}/recurrence/cancel"),
            "POST",
        ),
        (Method::POST, "/health".to_owned(), "GET"),
        (Method::DELETE, "/ready".to_owned(), "GET"),
        (Method::PUT, "/metrics".to_owned(), "GET"),
        (Method::POST, "/openapi.json".to_owned(), "GET"),
        (Method::POST, "/dapr/subscribe".to_owned(), "GET"),
    ] {
        let res = app
            .as_user(USER, method.clone(), &path)
            .json(&json!({"title": "t"}))
            .send()
            .await
            .unwrap();
        // RFC 9110: a 405 says what the resource answers.
        assert_eq!(
            res.headers().get("allow").map(|v| v.to_str().unwrap()),
            Some(allow),
            "{method} {path}"
        );
        let err = error_body(res, 405).await;
        assert_eq!(
            err["error"]["code"], "method_not_allowed",
            "{method} {path}"
        );
    }
    unchanged(&app, &id, &before).await;
}

/// A small deterministic generator, so a failing byte string can be reproduced.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[tokio::test]
async fn garbage_bodies_never_give_a_5xx() {
    let app = spawn_app().await;
    let (id, _) = task(&app).await;
    let mut bodies: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02\x03".to_vec(),
        b"\xff\xfe\xfd".to_vec(),
        b"{\"title\": \"\xff\xfe\"}".to_vec(),
        b"{\"title\": \"\\u0000\"}".to_vec(),
        b"{\"title\": \"ok\", \"tags\": [\"\\u0000\"]}".to_vec(),
        b"{\"title\": \"ok\", \"description\": \"\\u0000\"}".to_vec(),
        b"{\"title\": \"ok\", \"timezone\": \"\\u0000\"}".to_vec(),
        b"{\"title\": \"ok\", \"due_at\": \"2026-12-01T09:00:00Z\", \"recurrence\": {\"rule\": \"FREQ=DAILY\\u0000\"}}".to_vec(),
        b"{\"title\": \"ok\", \"due_at\": \"2026-12-01T09:00:00Z\", \"recurrence\": {\"cron\": \"\\u0000\"}}".to_vec(),
        b"{\"title\": \"ok\", \"due_at\": \"2026-12-01T09:00:00Z\", \"recurrence\": {\"rule\": \"FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30\"}}".to_vec(),
        b"{\"title\": \"ok\", \"due_at\": \"2026-12-01T09:00:00Z\", \"recurrence\": {\"rule\": \"FREQ=SECONDLY;INTERVAL=0\"}}".to_vec(),
        b"{\"title\": \"ok\", \"due_at\": \"2026-12-01T09:00:00Z\", \"recurrence\": {\"rule\": \"FREQ=DAILY;COUNT=-1\"}}".to_vec(),
        b"{\"title\": \"ok\", \"due_at\": \"2026-12-01T09:00:00Z\", \"recurrence\": {\"cron\": \"0 0 0 31 2 *\"}}".to_vec(),
        b"{\"title\": \"ok\", \"due_at\": \"0000-01-01T00:00:00+14:00\"}".to_vec(),
        b"{\"title\": \"ok\", \"due_at\": \"9999-12-31T23:59:59-23:59\", \"recurrence\": \"daily\"}".to_vec(),
        b"{\"title\": \"ok\", \"reminder_minutes_before\": 1e400}".to_vec(),
        b"{\"title\": \"ok\", \"reminder_minutes_before\": 99999999999999999999}".to_vec(),
        b"{\"title\": \"a\", \"title\": \"b\"}".to_vec(),
        b"\"\\ud800\"".to_vec(),
        b"-".to_vec(),
        b"nul".to_vec(),
        "[".repeat(10_000).into_bytes(),
        "{\"a\":".repeat(5_000).into_bytes(),
        b"{\"title\": \"\xf0\x9f\x92\xa9\"}".to_vec(),
    ];
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for len in [1, 2, 7, 64, 512, 4096] {
        bodies.push(rng.bytes(len));
    }
    // Valid JSON wrapped around random bytes read as text.
    for _ in 0..4 {
        let text = String::from_utf8_lossy(&rng.bytes(40)).into_owned();
        bodies.push(
            json!({"title": text, "tags": [text], "description": text})
                .to_string()
                .into_bytes(),
        );
    }
    for body in &bodies {
        for (method, path) in writes(&id) {
            let res = send_raw(&app, &method, &path, Some("application/json"), body.clone()).await;
            let status = res.status();
            assert!(
                status.is_success() || status.is_client_error(),
                "{method} {:?}: {status}",
                String::from_utf8_lossy(&body[..body.len().min(120)])
            );
            if status.is_client_error() {
                error_body(res, status.as_u16()).await;
            }
        }
        // Also as a query parameter (URLs stay well under the server's header size limit).
        if body.len() > 1024 {
            continue;
        }
        let query: String = url::form_urlencoded::byte_serialize(body).collect();
        for name in ["q", "tag", "cursor", "due_before", "sort"] {
            let res = app
                .as_user(
                    USER,
                    Method::GET,
                    &format!("/api/{USER}/tasks?{name}={query}"),
                )
                .send()
                .await
                .unwrap();
            let status = res.status();
            assert!(status == 200 || status == 400, "{name}: {status}");
        }
    }
    // The app is still serving.
    assert_eq!(
        app.as_user(USER, Method::GET, &format!("/api/{USER}/tasks/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn garbled_if_match_and_idempotency_key_headers_are_400() {
    let app = spawn_app().await;
    let (id, before) = task(&app).await;
    let garbled = reqwest::header::HeaderValue::from_bytes(b"\"1\xff\"").unwrap();
    let path = format!("/api/{USER}/tasks/{id}");
    for (method, path) in [
        (Method::PATCH, path.clone()),
        (Method::PUT, path.clone()),
        (Method::DELETE, path.clone()),
        (Method::PATCH, format!("{path}/complete")),
    ] {
        let res = app
            .as_user(USER, method.clone(), &path)
            .header("If-Match", garbled.clone())
            .json(&json!({"title": "changed"}))
            .send()
            .await
            .unwrap();
        let err = error_body(res, 400).await;
        assert_eq!(err["error"]["code"], "invalid_header", "{method} {path}");
    }
    for key in [&b"k\xffy"[..], &b"\x80"[..]] {
        let res = app
            .as_user(USER, Method::POST, &format!("/api/{USER}/tasks"))
            .header(
                "Idempotency-Key",
                reqwest::header::HeaderValue::from_bytes(key).unwrap(),
            )
            .json(&json!({"title": "new"}))
            .send()
            .await
            .unwrap();
        let err = error_body(res, 400).await;
        assert_eq!(err["error"]["code"], "invalid_header");
    }
    unchanged(&app, &id, &before).await;
}
