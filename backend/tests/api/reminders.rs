//! Reminders: one pending reminder per task kept in line with the task, fired once at its time
//! by the job runner (or a scan), however many replicas race; listing and snoozing.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use taskflow_test_support::kafka::{read, topics};
use tokio::time::Instant;

use crate::helpers::{fresh_database, settings, spawn_app, spawn_with, TestApp};

const USER: &str = "rita";

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

async fn reminders(app: &TestApp, query: &str) -> Vec<Value> {
    let res = app
        .as_user(USER, Method::GET, &format!("/api/{USER}/reminders?{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "reminders?{query}");
    let page: Value = res.json().await.unwrap();
    page["items"].as_array().unwrap().clone()
}

/// The `reminder.due` outbox rows of `task_id`.
async fn fired(app: &TestApp, task_id: &str) -> Vec<Value> {
    app.outbox("reminders")
        .await
        .into_iter()
        .filter(|(_, e)| e["data"]["task_id"] == task_id)
        .map(|(event_type, e)| {
            assert_eq!(event_type, "com.taskflow.reminder.due");
            e
        })
        .collect()
}

/// Wait until `task_id` has `n` reminder events (or 10 s), then a little longer for extras.
async fn wait_fired(app: &TestApp, task_id: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while fired(app, task_id).await.len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    fired(app, task_id).await
}

async fn patch(app: &TestApp, id: &str, path: &str, body: Value) -> Value {
    let res = app
        .as_user(
            USER,
            Method::PATCH,
            &format!("/api/{USER}/tasks/{id}{path}"),
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "PATCH {path} {body}");
    res.json().await.unwrap()
}

#[tokio::test]
async fn a_reminder_already_due_fires_once_immediately() {
    let app = spawn_app().await;
    let task = app
        .create(
            USER,
            json!({"title": "Call Bob", "due_at": at(Utc::now() + TimeDelta::seconds(3)), "reminder_minutes_before": 1}),
        )
        .await;
    let id = task["id"].as_str().unwrap();
    let events = wait_fired(&app, id, 1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let data = &events[0]["data"];
    assert_eq!(data["user_id"], USER);
    assert_eq!(data["title"], "Call Bob");
    let listed = reminders(&app, "status=fired").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(data["reminder_id"], listed[0]["id"]);
    assert!(reminders(&app, "status=pending").await.is_empty());
}

#[tokio::test]
async fn a_reminder_fires_within_a_second_of_its_time() {
    let app = spawn_app().await;
    let due = Utc::now() + TimeDelta::seconds(4);
    let task = app
        .create(
            USER,
            json!({"title": "Soon", "due_at": at(due), "reminder_minutes_before": 0}),
        )
        .await;
    let id = task["id"].as_str().unwrap();
    assert_eq!(reminders(&app, "status=pending").await.len(), 1);
    let events = wait_fired(&app, id, 1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let fired_at: DateTime<Utc> = reminders(&app, "status=fired").await[0]["fired_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let late = fired_at - due;
    assert!(
        late >= TimeDelta::zero() && late < TimeDelta::seconds(1),
        "fired {late} after its time"
    );
}

#[tokio::test]
async fn three_schedulers_racing_over_200_due_reminders_fire_each_once() {
    let url = fresh_database().await;
    let mut quiet = settings(&url);
    quiet.reminder_scheduler_enabled = false;
    let writer = spawn_with(quiet).await;
    let due = at(Utc::now() + TimeDelta::hours(1));
    for i in 0..200 {
        writer
            .create(
                USER,
                json!({"title": format!("t{i}"), "due_at": due, "reminder_minutes_before": 5}),
            )
            .await;
    }
    // Everything falls due at once, as after an outage.
    writer
        .execute("UPDATE reminders SET remind_at = now() - interval '1 minute'")
        .await;
    writer
        .execute("UPDATE jobs SET run_at = now() - interval '1 minute'")
        .await;
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(spawn_with(settings(&url)).await);
    }
    let scans = replicas.iter().map(|app| {
        app.anonymous(Method::POST, "/internal/reminders/scan")
            .send()
    });
    for res in futures::future::join_all(scans).await {
        assert_eq!(res.unwrap().status(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while writer.count("SELECT count(*) AS n FROM jobs").await > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = writer.outbox("reminders").await;
    let ids: HashSet<String> = events
        .iter()
        .map(|(_, e)| e["data"]["reminder_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(events.len(), 200);
    assert_eq!(ids.len(), 200);
    assert_eq!(
        writer
            .count("SELECT count(*) AS n FROM reminders WHERE status = 'fired'")
            .await,
        200
    );
}

#[tokio::test]
async fn the_reminder_follows_the_task() {
    let app = spawn_app().await;
    // Milliseconds, as the API keeps them.
    let due: DateTime<Utc> = at(Utc::now() + TimeDelta::days(1)).parse().unwrap();
    let task = app
        .create(
            USER,
            json!({"title": "Dentist", "due_at": at(due), "reminder_minutes_before": 30}),
        )
        .await;
    let id = task["id"].as_str().unwrap();
    let pending = reminders(&app, "status=pending").await;
    assert_eq!(pending.len(), 1);
    let remind_at: DateTime<Utc> = pending[0]["remind_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(remind_at, due - TimeDelta::minutes(30));

    // Moving the due date moves the one reminder.
    let later = due + TimeDelta::hours(2);
    patch(&app, id, "", json!({"due_at": at(later)})).await;
    let pending = reminders(&app, "status=pending").await;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["id"], reminders(&app, "").await[0]["id"]);
    let remind_at: DateTime<Utc> = pending[0]["remind_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(remind_at, later - TimeDelta::minutes(30));
    // An edit that keeps the time keeps the reminder as it is.
    patch(&app, id, "", json!({"title": "Dentist at 3"})).await;
    assert_eq!(reminders(&app, "").await.len(), 1);

    // Clearing the offset cancels it; setting it again schedules a new one.
    patch(&app, id, "", json!({"reminder_minutes_before": null})).await;
    assert!(reminders(&app, "status=pending").await.is_empty());
    assert_eq!(reminders(&app, "status=cancelled").await.len(), 1);
    patch(&app, id, "", json!({"reminder_minutes_before": 10})).await;
    assert_eq!(reminders(&app, "status=pending").await.len(), 1);

    // Completing cancels it.
    patch(&app, id, "/complete", json!({})).await;
    assert!(reminders(&app, "status=pending").await.is_empty());
    assert_eq!(reminders(&app, "status=cancelled").await.len(), 2);

    // Deleting cancels it too.
    let other = app
        .create(
            USER,
            json!({"title": "Other", "due_at": at(due), "reminder_minutes_before": 5}),
        )
        .await;
    let res = app
        .as_user(
            USER,
            Method::DELETE,
            &format!("/api/{USER}/tasks/{}", other["id"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert!(reminders(&app, "status=pending").await.is_empty());
    assert_eq!(reminders(&app, "status=cancelled").await.len(), 3);
    assert!(fired(&app, id).await.is_empty());
}

#[tokio::test]
async fn a_snoozed_reminder_fires_again_once() {
    let app = spawn_app().await;
    let task = app
        .create(
            USER,
            json!({"title": "Stretch", "due_at": at(Utc::now() + TimeDelta::seconds(1)), "reminder_minutes_before": 1}),
        )
        .await;
    let id = task["id"].as_str().unwrap();
    assert_eq!(wait_fired(&app, id, 1).await.len(), 1);
    let reminder = reminders(&app, "status=fired").await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let snooze = |body: Value| {
        app.as_user(
            USER,
            Method::POST,
            &format!("/api/{USER}/reminders/{reminder}/snooze"),
        )
        .json(&body)
        .send()
    };
    assert_eq!(snooze(json!({"minutes": 0})).await.unwrap().status(), 422);
    assert_eq!(
        snooze(json!({"minutes": 1441})).await.unwrap().status(),
        422
    );
    let res = snooze(json!({"minutes": 10})).await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "pending");
    // A pending reminder cannot be snoozed.
    assert_eq!(snooze(json!({"minutes": 5})).await.unwrap().status(), 409);
    // Ten minutes pass.
    app.execute("UPDATE reminders SET remind_at = now()").await;
    let res = app
        .anonymous(Method::POST, "/internal/reminders/scan")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let events = wait_fired(&app, id, 2).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1]["data"]["reminder_id"], reminder.as_str());
    assert_ne!(events[0]["id"], events[1]["id"]);
    // Another user's reminder is not found; a malformed id names nothing.
    let res = app
        .as_user(
            "mallory",
            Method::POST,
            &format!("/api/mallory/reminders/{reminder}/snooze"),
        )
        .json(&json!({"minutes": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = app
        .as_user(
            USER,
            Method::POST,
            &format!("/api/{USER}/reminders/nope/snooze"),
        )
        .json(&json!({"minutes": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn listing_checks_the_user_and_the_status() {
    let app = spawn_app().await;
    let res = app
        .as_user("mallory", Method::GET, &format!("/api/{USER}/reminders"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = app
        .as_user(
            USER,
            Method::GET,
            &format!("/api/{USER}/reminders?status=soon"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn a_fired_reminder_reaches_kafka_keyed_by_its_task() {
    let brokers = topics().await;
    let mut s = settings(&fresh_database().await);
    s.events.relay_enabled = true;
    let app = spawn_with(s).await;
    let task = app
        .create(
            USER,
            json!({"title": "Publish", "due_at": at(Utc::now()), "reminder_minutes_before": 1}),
        )
        .await;
    let id = task["id"].as_str().unwrap().to_owned();
    let got = read(&brokers, "reminders", 1, Duration::from_secs(30), |r| {
        r.body["data"]["task_id"] == id.as_str()
    })
    .await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].key, id);
    assert_eq!(got[0].body["type"], "com.taskflow.reminder.due");
}
