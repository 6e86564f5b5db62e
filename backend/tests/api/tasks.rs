//! Create, read, edit, complete, delete, cancel recurrence; versions, If-Match, idempotent
//! create, and the outbox rows each change writes.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{error_code, occurrence_dates, spawn_app, TestApp};

const USER: &str = "alice";

async fn send(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> reqwest::Response {
    let mut req = app.as_user(USER, method, &format!("/api/{USER}/tasks{path}"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

/// Occurrence 2 of `first`'s series, as the recurrence worker creates it (through the store);
/// returns its id.
async fn second_occurrence(app: &TestApp, first: &str) -> String {
    let mut conn = app.pool.get().await.unwrap();
    let first = taskflow_db::tasks::find(&mut conn, USER, first.parse().unwrap(), false)
        .await
        .unwrap()
        .expect("first occurrence");
    let due = first.due_at.expect("due") + chrono::TimeDelta::days(1);
    let next = taskflow_db::tasks::insert_occurrence(
        &mut conn,
        &first.next_occurrence(due, chrono::Utc::now()),
    )
    .await
    .unwrap()
    .expect("inserted");
    next.id.to_string()
}

fn event_types(rows: &[(String, Value)]) -> Vec<&str> {
    rows.iter().map(|(t, _)| t.as_str()).collect()
}

#[tokio::test]
async fn create_returns_201_location_and_the_full_task() {
    let app = spawn_app().await;
    let res = send(
        &app,
        Method::POST,
        "",
        Some(json!({
            "title": "  Write report ",
            "description": "quarterly",
            "priority": "high",
            "tags": ["work", "q4"],
            "due_at": "2026-12-01T10:00:00+01:00",
            "timezone": "Europe/Berlin",
            "reminder_minutes_before": 30
        })),
    )
    .await;
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(res.headers()["etag"], "\"1\"");
    let task: Value = res.json().await.unwrap();
    assert_eq!(
        location,
        format!("/api/{USER}/tasks/{}", task["id"].as_str().unwrap())
    );
    assert_eq!(task["title"], "Write report");
    assert_eq!(task["user_id"], USER);
    assert_eq!(task["priority"], "high");
    assert_eq!(task["tags"], json!(["work", "q4"]));
    assert_eq!(task["due_at"], "2026-12-01T09:00:00Z");
    assert_eq!(task["timezone"], "Europe/Berlin");
    assert_eq!(task["reminder_minutes_before"], 30);
    assert_eq!(task["completed"], false);
    assert_eq!(task["completed_at"], Value::Null);
    assert_eq!(task["recurrence"], Value::Null);
    assert_eq!(task["series_id"], task["id"]);
    assert_eq!(task["occurrence"], 1);
    assert_eq!(task["version"], 1);
    let id = task["id"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);

    let fetched: Value = send(&app, Method::GET, &format!("/{id}"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, task);

    let events = app.outbox("task-events").await;
    assert_eq!(event_types(&events), vec!["com.taskflow.task.created"]);
    let (_, ce) = &events[0];
    assert_eq!(ce["specversion"], "1.0");
    assert_eq!(ce["source"], "taskflow/backend");
    assert_eq!(ce["subject"], task["id"]);
    assert_eq!(ce["datacontenttype"], "application/json");
    assert_eq!(ce["data"]["event_type"], "created");
    assert_eq!(ce["data"]["task"], task);
    assert_eq!(app.outbox("task-updates").await.len(), 1);
}

/// A create reads nothing back (the task and its events are one statement): what it returns and
/// publishes must still be what a read gives, to the microsecond, on either side of
/// PostgreSQL's 2000-01-01 epoch, with and without a reminder (a transaction of its own).
#[tokio::test]
async fn a_created_task_reads_back_as_returned_to_the_microsecond() {
    let app = spawn_app().await;
    for (due, stored, reminder) in [
        ("1999-12-31T23:59:59.9999995Z", "2000-01-01T00:00:00Z", None),
        (
            "1970-01-01T00:00:00.0000019Z",
            "1970-01-01T00:00:00.000002Z",
            Some(5),
        ),
        (
            "2031-05-05T05:05:05.1234567Z",
            "2031-05-05T05:05:05.123456Z",
            None,
        ),
        (
            "2031-05-05T05:05:05.1234567Z",
            "2031-05-05T05:05:05.123456Z",
            Some(5),
        ),
    ] {
        let task = app
            .create(
                USER,
                json!({"title": due, "due_at": due, "reminder_minutes_before": reminder}),
            )
            .await;
        assert_eq!(task["due_at"], stored, "{due}");
        let id = task["id"].as_str().unwrap();
        let fetched = app.get_json(USER, &format!("/api/{USER}/tasks/{id}")).await;
        assert_eq!(fetched, task, "{due}");
        let events = app.outbox("task-events").await;
        let (_, ce) = events.last().unwrap();
        assert_eq!(ce["data"]["task"], task, "{due}");
    }
    assert_eq!(
        app.count("SELECT count(*) AS n FROM reminders").await,
        2,
        "the tasks with reminder_minutes_before have their reminder"
    );
}

#[tokio::test]
async fn patch_changes_only_given_fields_and_bumps_the_version() {
    let app = spawn_app().await;
    let task = app
        .create(
            USER,
            json!({"title": "t", "description": "d", "tags": ["a"]}),
        )
        .await;
    let id = task["id"].as_str().unwrap();
    let res = send(
        &app,
        Method::PATCH,
        &format!("/{id}"),
        Some(json!({"description": null, "priority": "urgent"})),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"], "\"2\"");
    let patched: Value = res.json().await.unwrap();
    assert_eq!(patched["description"], Value::Null);
    assert_eq!(patched["priority"], "urgent");
    assert_eq!(patched["tags"], json!(["a"]));
    assert_eq!(patched["version"], 2);

    // The same values again change nothing and emit nothing.
    let same: Value = send(
        &app,
        Method::PATCH,
        &format!("/{id}"),
        Some(json!({"priority": "urgent"})),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(same["version"], 2);
    assert_eq!(
        event_types(&app.outbox("task-events").await),
        vec!["com.taskflow.task.created", "com.taskflow.task.updated"]
    );
}

#[tokio::test]
async fn put_replaces_the_whole_task() {
    let app = spawn_app().await;
    let task = app
        .create(
            USER,
            json!({"title": "t", "priority": "low", "tags": ["x"]}),
        )
        .await;
    let id = task["id"].as_str().unwrap();
    let replaced: Value = send(
        &app,
        Method::PUT,
        &format!("/{id}"),
        Some(json!({"title": "new"})),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(replaced["title"], "new");
    assert_eq!(replaced["priority"], "none");
    assert_eq!(replaced["tags"], json!([]));
    assert_eq!(replaced["id"], task["id"]);
    assert_eq!(replaced["created_at"], task["created_at"]);
    let res = send(
        &app,
        Method::PUT,
        &format!("/{id}"),
        Some(json!({"priority": "high"})),
    )
    .await;
    assert_eq!(error_code(res, 422).await, "validation_failed");
}

#[tokio::test]
async fn completing_twice_changes_nothing_the_second_time() {
    let app = spawn_app().await;
    let task = app.create(USER, json!({"title": "t"})).await;
    let id = task["id"].as_str().unwrap();
    let first: Value = send(&app, Method::PATCH, &format!("/{id}/complete"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["completed"], true);
    assert!(first["completed_at"].is_string());
    assert_eq!(first["version"], 2);
    let second: Value = send(&app, Method::PATCH, &format!("/{id}/complete"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second, first);
    assert_eq!(
        event_types(&app.outbox("task-events").await),
        vec!["com.taskflow.task.created", "com.taskflow.task.completed"]
    );

    // Reopening through PATCH clears completed_at and is an update.
    let reopened: Value = send(
        &app,
        Method::PATCH,
        &format!("/{id}"),
        Some(json!({"completed": false})),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(reopened["completed_at"], Value::Null);
    assert_eq!(
        app.outbox("task-events").await.last().unwrap().0,
        "com.taskflow.task.updated"
    );
}

#[tokio::test]
async fn delete_returns_204_then_404_and_emits_deleted() {
    let app = spawn_app().await;
    let task = app.create(USER, json!({"title": "t"})).await;
    let id = task["id"].as_str().unwrap();
    let res = send(&app, Method::DELETE, &format!("/{id}"), None).await;
    assert_eq!(res.status(), 204);
    let res = send(&app, Method::GET, &format!("/{id}"), None).await;
    assert_eq!(error_code(res, 404).await, "not_found");
    let res = send(&app, Method::DELETE, &format!("/{id}"), None).await;
    assert_eq!(error_code(res, 404).await, "not_found");
    let events = app.outbox("task-events").await;
    assert_eq!(
        event_types(&events),
        vec!["com.taskflow.task.created", "com.taskflow.task.deleted"]
    );
    assert_eq!(events[1].1["data"]["task"]["version"], 2);
}

#[tokio::test]
async fn stale_if_match_gets_412_and_changes_nothing() {
    let app = spawn_app().await;
    let task = app.create(USER, json!({"title": "t"})).await;
    let id = task["id"].as_str().unwrap();
    let path = format!("/api/{USER}/tasks/{id}");
    let ok = app
        .as_user(USER, Method::PATCH, &path)
        .header("If-Match", "\"1\"")
        .json(&json!({"title": "v2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    for method in [Method::PATCH, Method::PUT, Method::DELETE] {
        let res = app
            .as_user(USER, method.clone(), &path)
            .header("If-Match", "1")
            .json(&json!({"title": "stale"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 412, "{method}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "version_mismatch");
        assert_eq!(body["error"]["details"]["current_version"], 2);
    }
    let res = app
        .as_user(USER, Method::PATCH, &format!("{path}/complete"))
        .header("If-Match", "\"7\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 412);
    let res = app
        .as_user(USER, Method::PATCH, &path)
        .header("If-Match", "banana")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(res, 400).await, "invalid_header");
    let current: Value = send(&app, Method::GET, &format!("/{id}"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(current["title"], "v2");
    assert_eq!(app.outbox("task-events").await.len(), 2);
}

#[tokio::test]
async fn idempotent_create_replays_the_first_result() {
    let app = spawn_app().await;
    let post = |body: Value, key: &str| {
        app.as_user(USER, Method::POST, &format!("/api/{USER}/tasks"))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let first = post(json!({"title": "once", "tags": ["a"]}), "key-1")
        .await
        .unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    // Same body with keys in another order: same request.
    let again = post(json!({"tags": ["a"], "title": "once"}), "key-1")
        .await
        .unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    let other = post(json!({"title": "different"}), "key-1").await.unwrap();
    assert_eq!(error_code(other, 409).await, "idempotency_key_reused");
    // Another key is another request.
    assert_eq!(
        post(json!({"title": "once", "tags": ["a"]}), "key-2")
            .await
            .unwrap()
            .status(),
        201
    );
    assert_eq!(app.count("SELECT count(*) AS n FROM tasks").await, 2);
    assert_eq!(app.outbox("task-events").await.len(), 2);

    // Concurrent duplicates create one task.
    let results =
        futures::future::join_all((0..8).map(|_| post(json!({"title": "race"}), "key-3"))).await;
    let ids: std::collections::HashSet<String> = futures::future::join_all(
        results
            .into_iter()
            .map(|r| async { r.unwrap().json::<Value>().await.unwrap()["id"].to_string() }),
    )
    .await
    .into_iter()
    .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(
        app.count("SELECT count(*) AS n FROM tasks WHERE title = 'race'")
            .await,
        1
    );

    // A key older than 24 hours is forgotten.
    app.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE idempotency_key = 'key-1'")
        .await;
    assert_eq!(
        post(json!({"title": "different"}), "key-1")
            .await
            .unwrap()
            .status(),
        201
    );
}

#[tokio::test]
async fn cancel_recurrence_stops_the_whole_series() {
    let app = spawn_app().await;
    let task = app
        .create(
            USER,
            json!({"title": "standup", "due_at": "2026-12-01T09:00:00Z", "recurrence": "weekly"}),
        )
        .await;
    assert_eq!(task["recurrence"]["active"], true);
    let id = task["id"].as_str().unwrap();
    second_occurrence(&app, id).await;
    let res = send(
        &app,
        Method::POST,
        &format!("/{id}/recurrence/cancel"),
        None,
    )
    .await;
    assert_eq!(res.status(), 200);
    let cancelled: Value = res.json().await.unwrap();
    assert_eq!(cancelled["recurrence"]["active"], false);
    assert_eq!(cancelled["version"], 2);
    assert_eq!(
        app.count("SELECT count(*) AS n FROM tasks WHERE (recurrence->>'active')::boolean")
            .await,
        0
    );
    let cancels = app
        .outbox("task-events")
        .await
        .into_iter()
        .filter(|(t, _)| t == "com.taskflow.task.recurrence_cancelled")
        .count();
    assert_eq!(cancels, 2);
    // Cancelling again changes nothing; a task without recurrence cannot be cancelled.
    let again: Value = send(
        &app,
        Method::POST,
        &format!("/{id}/recurrence/cancel"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(again["version"], 2);
    let plain = app.create(USER, json!({"title": "plain"})).await;
    let res = send(
        &app,
        Method::POST,
        &format!("/{}/recurrence/cancel", plain["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(error_code(res, 409).await, "not_recurring");
}

#[tokio::test]
async fn a_failed_event_write_rolls_back_the_change() {
    let app = spawn_app().await;
    let task = app.create(USER, json!({"title": "keep me"})).await;
    let id = task["id"].as_str().unwrap();
    // Make the outbox refuse the next event; the task update in the same transaction must go too.
    app.execute(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'outbox down'; END $$",
    )
    .await;
    app.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION refuse()",
    )
    .await;
    let res = send(
        &app,
        Method::PATCH,
        &format!("/{id}"),
        Some(json!({"title": "lost"})),
    )
    .await;
    assert_eq!(error_code(res, 500).await, "internal");
    let res = send(&app, Method::POST, "", Some(json!({"title": "never"}))).await;
    assert_eq!(res.status(), 500);
    app.execute("DROP TRIGGER refuse ON outbox").await;
    let current: Value = send(&app, Method::GET, &format!("/{id}"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(current["title"], "keep me");
    assert_eq!(current["version"], 1);
    assert_eq!(app.count("SELECT count(*) AS n FROM tasks").await, 1);
    assert_eq!(app.outbox("task-events").await.len(), 1);
}

#[tokio::test]
async fn concurrent_cancels_on_one_series_all_succeed() {
    let app = spawn_app().await;
    let task = app
        .create(
            USER,
            json!({"title": "series", "due_at": "2026-12-01T09:00:00Z", "recurrence": "daily"}),
        )
        .await;
    let first = task["id"].as_str().unwrap().to_owned();
    let second = second_occurrence(&app, &first).await;
    // Each cancel locks the series; crossing each other they used to deadlock (a 500).
    let paths: Vec<String> = (0..12)
        .map(|i| {
            format!(
                "/{}/recurrence/cancel",
                if i % 2 == 0 { &first } else { &second }
            )
        })
        .collect();
    let cancels = paths.iter().map(|p| send(&app, Method::POST, p, None));
    for res in futures::future::join_all(cancels).await {
        assert_eq!(res.status(), 200);
    }
    let cancels = app
        .outbox("task-events")
        .await
        .into_iter()
        .filter(|(t, _)| t == "com.taskflow.task.recurrence_cancelled")
        .count();
    assert_eq!(
        cancels, 2,
        "one event per occurrence, however many requests"
    );
}

#[tokio::test]
async fn concurrent_edits_of_one_task_each_apply_once() {
    let app = spawn_app().await;
    let task = app.create(USER, json!({"title": "contended"})).await;
    let id = task["id"].as_str().unwrap().to_owned();
    // Without If-Match every edit applies, each to the version before it: an edit that lost the
    // race between its read and its write must neither overwrite the winner nor emit an event.
    const EDITS: i64 = 16;
    let path = format!("/{id}");
    let edits = (0..EDITS).map(|i| {
        let body = json!({"title": format!("edit {i}"), "tags": [format!("t{i}")]});
        send(&app, Method::PATCH, &path, Some(body))
    });
    let mut answers = Vec::new();
    for res in futures::future::join_all(edits).await {
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        // The response is the task as that edit left it: its own title with its own tag.
        let title = body["title"].as_str().unwrap().to_owned();
        assert_eq!(body["tags"], json!([title.replace("edit ", "t")]));
        answers.push((body["version"].as_i64().unwrap(), title));
    }
    answers.sort();
    let versions: Vec<i64> = answers.iter().map(|(v, _)| *v).collect();
    assert_eq!(versions, (2..=EDITS + 1).collect::<Vec<_>>());
    let current: Value = send(&app, Method::GET, &format!("/{id}"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(current["version"], EDITS + 1);
    assert_eq!(current["title"], answers.last().unwrap().1.as_str());

    // One event per edit, each the task as that edit wrote it.
    let mut updated: Vec<(i64, String)> = app
        .outbox("task-events")
        .await
        .into_iter()
        .filter(|(t, _)| t == "com.taskflow.task.updated")
        .map(|(_, e)| {
            let task = &e["data"]["task"];
            (
                task["version"].as_i64().unwrap(),
                task["title"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    updated.sort();
    assert_eq!(updated, answers);
    assert_eq!(app.outbox("task-updates").await.len() as i64, EDITS + 1);
}

#[tokio::test]
async fn occurrences_lists_the_next_due_dates_of_the_series() {
    let app = spawn_app().await;
    // Monday 2027-01-04 18:00 in Berlin: every 2 weeks on Monday and Wednesday.
    let task = app
        .create(
            USER,
            json!({
                "title": "gym",
                "due_at": "2027-01-04T18:00:00+01:00",
                "timezone": "Europe/Berlin",
                "recurrence": {"rule": "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE"},
            }),
        )
        .await;
    assert_eq!(task["recurrence"]["dtstart"], "2027-01-04T18:00:00");
    assert_eq!(task["recurrence"]["tzid"], "Europe/Berlin");
    let id = task["id"].as_str().unwrap();
    let res = send(
        &app,
        Method::GET,
        &format!("/{id}/occurrences?limit=4"),
        None,
    )
    .await;
    assert_eq!(res.status(), 200);
    let page: Value = res.json().await.unwrap();
    assert_eq!(page["task_id"], id);
    let dates = occurrence_dates(&page);
    assert_eq!(
        dates,
        [
            (2, "2027-01-06T17:00:00Z"),
            (3, "2027-01-18T17:00:00Z"),
            (4, "2027-01-20T17:00:00Z"),
            (5, "2027-02-01T17:00:00Z"),
        ]
    );
    let default: Value = send(&app, Method::GET, &format!("/{id}/occurrences"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(default["items"].as_array().unwrap().len(), 5);
    for bad in ["limit=0", "limit=101", "limit=x", "colour=blue"] {
        let res = send(&app, Method::GET, &format!("/{id}/occurrences?{bad}"), None).await;
        assert_eq!(error_code(res, 400).await, "invalid_query", "{bad}");
    }
    let plain = app.create(USER, json!({"title": "once"})).await;
    let res = send(
        &app,
        Method::GET,
        &format!("/{}/occurrences", plain["id"].as_str().unwrap()),
        None,
    )
    .await;
    let page: Value = res.json().await.unwrap();
    assert_eq!(
        page["items"],
        json!([]),
        "a task that does not recur has none"
    );
    // Another user's task does not exist for this one.
    let res = app
        .as_user(
            "mallory",
            Method::GET,
            &format!("/api/mallory/tasks/{id}/occurrences"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(res, 404).await, "not_found");
}

/// `taskflow_create_batch_rows`: (statements, creates in them) so far.
async fn create_statements(app: &TestApp) -> (f64, f64) {
    let text = app.metrics().await;
    let sample = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {text}"))
    };
    (
        sample("taskflow_create_batch_rows_count"),
        sample("taskflow_create_batch_rows_sum"),
    )
}

#[tokio::test]
async fn creates_that_arrive_together_are_written_together_each_with_its_own_outcome() {
    let mut settings = crate::helpers::settings(&crate::helpers::fresh_database().await);
    settings.create_batches.statements = 1;
    let app = crate::helpers::spawn_with(settings).await;
    // Every statement on tasks takes 300 ms, so the creates sent meanwhile queue behind it; a
    // row titled "refused" fails its statement, as a database error would.
    app.execute(
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_sleep(0.3); RETURN NULL; END $$",
    )
    .await;
    app.execute("CREATE TRIGGER slow BEFORE INSERT ON tasks EXECUTE FUNCTION slow()")
        .await;
    app.execute(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN IF NEW.title = 'refused' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$",
    )
    .await;
    app.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON tasks FOR EACH ROW EXECUTE FUNCTION refuse()",
    )
    .await;
    let create = |title: String| send(&app, Method::POST, "", Some(json!({ "title": title })));
    let created = async |responses: Vec<reqwest::Response>| {
        let mut titles = Vec::new();
        for res in responses {
            assert_eq!(res.status(), 201);
            let task: Value = res.json().await.unwrap();
            let stored = app
                .get_json(
                    USER,
                    &format!("/api/{USER}/tasks/{}", task["id"].as_str().unwrap()),
                )
                .await;
            assert_eq!(stored, task, "stored as answered");
            titles.push(task["title"].as_str().unwrap().to_owned());
        }
        titles.sort();
        titles
    };

    // 20 creates at once, and two clients that give up before their statement can finish.
    let (statements_before, _) = create_statements(&app).await;
    let impatient = (0..2).map(|i| {
        app.as_user(USER, Method::POST, &format!("/api/{USER}/tasks"))
            .json(&json!({ "title": format!("impatient {i}") }))
            .timeout(std::time::Duration::from_millis(100))
            .send()
    });
    let (responses, gave_up) = tokio::join!(
        futures::future::join_all((10..30).map(|i| create(format!("together {i}")))),
        futures::future::join_all(impatient)
    );
    assert!(gave_up
        .iter()
        .all(|r| r.as_ref().is_err_and(|e| e.is_timeout())));
    let expected: Vec<String> = (10..30).map(|i| format!("together {i}")).collect();
    assert_eq!(created(responses).await, expected);
    let (statements, rows) = create_statements(&app).await;
    assert_eq!(rows, 22.0, "the impatient creates were written too");
    // Two HTTP workers here, each with one statement at a time: a first one each, then the rest.
    let statements = statements - statements_before;
    assert!(
        statements <= 8.0,
        "{statements} statements for 22 creates: they were not written together"
    );

    // A refused row fails its statement; its neighbours are then written one by one.
    let mut responses = futures::future::join_all(
        ["refused".to_owned()]
            .into_iter()
            .chain((0..5).map(|i| format!("beside {i}")))
            .map(create),
    )
    .await;
    assert_eq!(error_code(responses.remove(0), 500).await, "internal");
    let expected: Vec<String> = (0..5).map(|i| format!("beside {i}")).collect();
    assert_eq!(created(responses).await, expected);

    // Each create answered (and the impatient ones) stored once with its two events; the refused
    // one nowhere.
    assert_eq!(app.count("SELECT count(*) AS n FROM tasks").await, 27);
    assert_eq!(
        app.count("SELECT count(*) AS n FROM tasks WHERE title = 'refused'")
            .await,
        0
    );
    for topic in ["task-events", "task-updates"] {
        let mut ids: Vec<String> = app
            .outbox(topic)
            .await
            .into_iter()
            .map(|(_, e)| {
                e["data"]["task_id"]
                    .as_str()
                    .or(e["data"]["id"].as_str())
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(ids.len(), 27, "{topic}: one event for each task");
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 27, "{topic}: one event for each task");
    }
}
