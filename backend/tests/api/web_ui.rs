//! The web UI's page and modules at `/` (embedded, under a strict CSP) and the recurrence
//! preview its form uses.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{error_body, error_code, occurrence_dates, spawn_app};

#[tokio::test]
async fn the_page_and_its_modules_are_served_under_a_strict_csp() {
    let app = spawn_app().await;
    for (path, content_type, needle) in [
        (
            "/",
            "text/html",
            "<script type=\"module\" src=\"/ui/app.js\">",
        ),
        ("/ui/app.js", "text/javascript", "import"),
        ("/ui/live.js", "text/javascript", "Last-Event-ID"),
        ("/ui/style.css", "text/css", ":focus-visible"),
    ] {
        let res = app.anonymous(Method::GET, path).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let headers = res.headers().clone();
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with(content_type),
            "{path}"
        );
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'none'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        let body = res.text().await.unwrap();
        assert!(body.contains(needle), "{path} lacks {needle}");
        // Nothing from elsewhere: no absolute URLs to load.
        assert!(
            !body.contains("https://"),
            "{path} refers to another origin"
        );
    }
    let res = app
        .anonymous(Method::GET, "/ui/secret.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(res, 404).await, "not_found");
    let res = app
        .anonymous(Method::GET, "/ui/../Cargo.toml")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    // `/` used to be an unknown route; only GET is served there.
    let res = app.anonymous(Method::POST, "/").send().await.unwrap();
    assert_eq!(error_code(res, 405).await, "method_not_allowed");
}

#[tokio::test]
async fn a_recurrence_preview_gives_the_summary_and_next_dates() {
    let app = spawn_app().await;
    let res = app
        .as_user("ann", Method::POST, "/api/ann/recurrence/preview")
        .json(&json!({
            "recurrence": {"rule": "FREQ=WEEKLY;BYDAY=MO,WE"},
            "due_at": "2026-12-07T09:00:00+01:00",
            "timezone": "Europe/Berlin",
            "limit": 3,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["recurrence"]["summary"],
        "every week on Monday and Wednesday"
    );
    let dates = occurrence_dates(&body);
    assert_eq!(
        dates,
        [
            (2, "2026-12-09T08:00:00Z"),
            (3, "2026-12-14T08:00:00Z"),
            (4, "2026-12-16T08:00:00Z")
        ]
    );
    // Saves nothing.
    assert_eq!(app.count("SELECT count(*) AS n FROM tasks").await, 0);
}

#[tokio::test]
async fn a_bad_preview_names_the_field_like_create_does() {
    let app = spawn_app().await;
    for (body, field) in [
        (
            json!({"recurrence": {"rule": "FREQ=SECONDLY"}, "due_at": "2026-12-07T09:00:00Z"}),
            "recurrence",
        ),
        (
            json!({"recurrence": "fortnightly", "due_at": "2026-12-07T09:00:00Z"}),
            "recurrence",
        ),
        (
            json!({"recurrence": "daily", "due_at": "2026-12-07T09:00:00Z", "timezone": "Mars/Olympus"}),
            "timezone",
        ),
        (
            json!({"recurrence": "daily", "due_at": "tomorrow"}),
            "due_at",
        ),
        (
            json!({"recurrence": "daily", "due_at": "2026-12-07T09:00:00Z", "limit": 0}),
            "limit",
        ),
    ] {
        let res = app
            .as_user("ann", Method::POST, "/api/ann/recurrence/preview")
            .json(&body)
            .send()
            .await
            .unwrap();
        let error = error_body(res, 422).await;
        assert!(
            error["error"]["details"]["fields"][field].is_string(),
            "{body}: {error}"
        );
    }
    let res = app
        .as_user("ann", Method::POST, "/api/bob/recurrence/preview")
        .json(&json!({"recurrence": "daily"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(res, 403).await, "forbidden");
}
