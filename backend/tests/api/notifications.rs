//! Preferences (secret write-only) and the notifications the notifier recorded: listing by status
//! and read state, marking read.

use reqwest::Method;
use serde_json::{json, Value};
use shared_events::ReminderDue;
use taskflow_db::notifications;
use taskflow_db::preferences::Channel;

use crate::helpers::{spawn_app, TestApp};

const USER: &str = "nora";

async fn call(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = app.as_user(USER, method, &format!("/api/{USER}{path}"));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn preferences_keep_the_secret_write_only() {
    let app = spawn_app().await;
    let (status, body) = call(&app, Method::GET, "/preferences", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"channels": ["in_app"], "webhook_url": null, "webhook_secret_set": false})
    );
    let (status, body) = call(
        &app,
        Method::PUT,
        "/preferences",
        Some(json!({"channels": ["webhook"], "webhook_url": "https://hooks.example.org/t", "webhook_secret": "s3cret"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"channels": ["in_app", "webhook"], "webhook_url": "https://hooks.example.org/t", "webhook_secret_set": true})
    );
    let (_, got) = call(&app, Method::GET, "/preferences", None).await;
    assert_eq!(got, body);
    assert!(!got.to_string().contains("s3cret"));
    // Left out, the secret is kept; "" clears it, which the webhook channel cannot do without.
    let (status, _) = call(
        &app,
        Method::PUT,
        "/preferences",
        Some(json!({"channels": ["in_app", "webhook"], "webhook_url": "https://hooks.example.org/u"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = call(
        &app,
        Method::PUT,
        "/preferences",
        Some(json!({"channels": ["webhook"], "webhook_url": "https://hooks.example.org/u", "webhook_secret": ""})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["details"]["fields"]["channels"].is_string());
    let (status, body) = call(
        &app,
        Method::PUT,
        "/preferences",
        Some(json!({"channels": [], "webhook_url": "ftp://x"})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["details"]["fields"]["webhook_url"].is_string());
    // PostgreSQL cannot store NUL in JSON text: refused as a field error, not a 500.
    let (status, body) = call(
        &app,
        Method::PUT,
        "/preferences",
        Some(json!({"channels": [], "webhook_url": "https://hooks.example.org/\u{0}", "webhook_secret": "a\u{0}b"})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let fields = &body["error"]["details"]["fields"];
    assert_eq!(fields["webhook_secret"], "must not contain NUL characters");
    assert_eq!(fields["webhook_url"], "must not contain NUL characters");
    let (_, got) = call(&app, Method::GET, "/preferences", None).await;
    assert_eq!(
        got["webhook_url"], "https://hooks.example.org/u",
        "nothing saved"
    );
    let res = app
        .as_user("mallory", Method::GET, &format!("/api/{USER}/preferences"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn notifications_are_listed_and_marked_read() {
    let app = spawn_app().await;
    let now = chrono::Utc::now();
    let mut conn = app.pool.get().await.unwrap();
    let mut ids = Vec::new();
    // In-app only: delivered at once; with a webhook too: pending until the webhook is.
    for (title, channels) in [
        ("first", &[Channel::InApp][..]),
        ("second", &[Channel::InApp, Channel::Webhook][..]),
    ] {
        let reminder = ReminderDue {
            reminder_id: uuid::Uuid::now_v7(),
            task_id: uuid::Uuid::now_v7(),
            user_id: USER.into(),
            title: title.into(),
            due_at: now,
            remind_at: now,
        };
        let n = notifications::insert(
            &mut conn,
            uuid::Uuid::now_v7(),
            &json!({}),
            &reminder,
            channels,
        )
        .await
        .unwrap()
        .unwrap();
        ids.push(n.id);
    }
    let (status, page) = call(&app, Method::GET, "/notifications", None).await;
    assert_eq!(status, 200);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["title"], "second", "newest first");
    let (_, delivered) = call(&app, Method::GET, "/notifications?status=delivered", None).await;
    assert_eq!(delivered["items"][0]["id"], ids[0].to_string());
    assert_eq!(delivered["items"][0]["deliveries"][0]["channel"], "in_app");
    assert_eq!(delivered["items"].as_array().unwrap().len(), 1);

    let (status, _) = call(
        &app,
        Method::POST,
        &format!("/notifications/{}/read", ids[0]),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (_, unread) = call(&app, Method::GET, "/notifications?unread=true", None).await;
    assert_eq!(unread["items"].as_array().unwrap().len(), 1);
    assert_eq!(unread["items"][0]["id"], ids[1].to_string());
    let (_, read) = call(&app, Method::GET, "/notifications?unread=false", None).await;
    assert!(read["items"][0]["read_at"].is_string());

    let (status, _) = call(&app, Method::GET, "/notifications?status=soon", None).await;
    assert_eq!(status, 400);
    let res = app
        .as_user(
            "mallory",
            Method::POST,
            &format!("/api/mallory/notifications/{}/read", ids[1]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}
