//! `GET /api/{user_id}/tasks`: filters, full-text search, every sort with its ties and nulls,
//! limits and keyset pagination (also while tasks are being added).

use std::collections::{HashMap, HashSet};

use chrono::{Duration, SecondsFormat, Utc};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{error_body, ids, spawn_app, TestApp};

const USER: &str = "alice";

/// Percent-encode a query value (RFC 3339 offsets contain `+` and `:`).
fn enc(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

fn titles(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|t| t["title"].as_str().expect("title").to_owned())
        .collect()
}

async fn create(app: &TestApp, body: Value) -> String {
    app.create(USER, body).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn complete(app: &TestApp, id: &str) {
    let res = app
        .as_user(
            USER,
            Method::PATCH,
            &format!("/api/{USER}/tasks/{id}/complete"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

async fn list_status(app: &TestApp, query: &str) -> reqwest::Response {
    app.as_user(USER, Method::GET, &format!("/api/{USER}/tasks?{query}"))
        .send()
        .await
        .unwrap()
}

/// Follow `next_cursor` from the first page to the last; every page but the last is full.
async fn walk(app: &TestApp, query: &str, limit: usize) -> Vec<String> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut q = format!("{query}&limit={limit}");
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={}", enc(c)));
        }
        let page = app.list(USER, &q).await;
        let page_ids = ids(&page);
        assert!(page_ids.len() <= limit, "{q}: page larger than the limit");
        all.extend(page_ids.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => {
                assert_eq!(page_ids.len(), limit, "{q}: a page before the last is full");
                cursor = Some(next.to_owned());
            }
            None => {
                assert_eq!(page["next_cursor"], Value::Null);
                return all;
            }
        }
    }
    panic!("{query}: pagination never ended");
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    // Hyphenated lowercase hex sorts like the 16 bytes PostgreSQL compares.
    ids.sort();
    ids
}

fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[tokio::test]
async fn status_defaults_to_pending_and_selects_completed_or_all() {
    let app = spawn_app().await;
    let a = create(&app, json!({"title": "a"})).await;
    let b = create(&app, json!({"title": "b"})).await;
    let c = create(&app, json!({"title": "c"})).await;
    complete(&app, &b).await;

    let default = app.list(USER, "").await;
    assert_eq!(ids(&default), vec![a.clone(), c.clone()]);
    assert_eq!(default["next_cursor"], Value::Null);
    assert_eq!(default["items"][0]["completed"], false);
    assert_eq!(
        ids(&app.list(USER, "status=pending").await),
        vec![a.clone(), c.clone()]
    );
    let completed = app.list(USER, "status=completed").await;
    assert_eq!(ids(&completed), vec![b.clone()]);
    assert_eq!(completed["items"][0]["completed"], true);
    assert_eq!(ids(&app.list(USER, "status=all").await), vec![a, b, c]);
}

#[tokio::test]
async fn priority_filter_is_repeatable() {
    let app = spawn_app().await;
    let mut by_priority = HashMap::new();
    for p in ["none", "low", "medium", "high", "urgent"] {
        by_priority.insert(p, create(&app, json!({"title": p, "priority": p})).await);
    }
    let page = app.list(USER, "priority=high").await;
    assert_eq!(ids(&page), vec![by_priority["high"].clone()]);
    assert_eq!(page["items"][0]["priority"], "high");
    assert_eq!(
        sorted(ids(&app.list(USER, "priority=urgent&priority=low").await)),
        sorted(vec![
            by_priority["urgent"].clone(),
            by_priority["low"].clone()
        ])
    );
    assert_eq!(
        ids(&app.list(USER, "priority=none").await),
        vec![by_priority["none"].clone()]
    );
    // Repeating a value is harmless.
    assert_eq!(
        ids(&app.list(USER, "priority=medium&priority=medium").await),
        vec![by_priority["medium"].clone()]
    );
}

#[tokio::test]
async fn tag_filter_requires_every_tag() {
    let app = spawn_app().await;
    let ab = create(&app, json!({"title": "ab", "tags": ["a", "b"]})).await;
    let a = create(&app, json!({"title": "a", "tags": ["a"]})).await;
    let bc = create(&app, json!({"title": "bc", "tags": ["b", "c"]})).await;
    let spaced = create(&app, json!({"title": "spaced", "tags": ["deep work"]})).await;
    create(&app, json!({"title": "untagged"})).await;

    assert_eq!(ids(&app.list(USER, "tag=a").await), vec![ab.clone(), a]);
    assert_eq!(
        ids(&app.list(USER, "tag=b").await),
        vec![ab.clone(), bc.clone()]
    );
    assert_eq!(ids(&app.list(USER, "tag=a&tag=b").await), vec![ab]);
    assert_eq!(ids(&app.list(USER, "tag=b&tag=c").await), vec![bc]);
    assert!(ids(&app.list(USER, "tag=a&tag=c").await).is_empty());
    assert!(ids(&app.list(USER, "tag=A").await).is_empty());
    assert_eq!(ids(&app.list(USER, "tag=deep%20work").await), vec![spaced]);
}

#[tokio::test]
async fn full_text_search_stems_and_covers_the_description() {
    let app = spawn_app().await;
    let meeting = create(&app, json!({"title": "Team meeting"})).await;
    let invoices = create(
        &app,
        json!({"title": "Groceries", "description": "and remember to pay the invoices"}),
    )
    .await;
    let running = create(&app, json!({"title": "Go running", "description": "5 km"})).await;
    let done = create(&app, json!({"title": "Old meeting notes"})).await;
    complete(&app, &done).await;

    // English stemming: "meetings" finds "meeting", "invoice" finds "invoices", "runs" finds "running".
    assert_eq!(
        ids(&app.list(USER, "q=meetings").await),
        vec![meeting.clone()]
    );
    assert_eq!(
        ids(&app.list(USER, "q=invoice").await),
        vec![invoices.clone()]
    );
    assert_eq!(ids(&app.list(USER, "q=RUNS").await), vec![running]);
    // Words are ANDed; `or` and quoted phrases follow web-search syntax.
    assert!(ids(&app.list(USER, "q=meeting%20invoice").await).is_empty());
    assert_eq!(
        ids(&app.list(USER, "q=meeting%20or%20invoice").await),
        vec![meeting.clone(), invoices.clone()]
    );
    assert_eq!(
        ids(&app.list(USER, "q=%22pay%20the%20invoices%22").await),
        vec![invoices]
    );
    assert!(ids(&app.list(USER, "q=%22invoices%20pay%22").await).is_empty());
    assert!(ids(&app.list(USER, "q=dentist").await).is_empty());
    // Search combines with the status filter.
    assert_eq!(
        ids(&app.list(USER, "q=meeting&status=all").await),
        vec![meeting.clone(), done.clone()]
    );
    assert_eq!(
        ids(&app.list(USER, "q=meeting&status=completed").await),
        vec![done]
    );
    // An empty q is no filter.
    assert_eq!(ids(&app.list(USER, "q=").await).len(), 3);
}

/// Both GIN indexes (search and tags) merge their pending lists at 256 kB, not the default 4 MB:
/// the insert that finds the list full merges it on its own time, holding a whole batch of
/// creates (migration `2026-12-05-000004`). Read from the catalog, as PostgreSQL applies it.
#[tokio::test]
async fn the_gin_indexes_merge_their_pending_lists_every_256_kb() {
    let app = spawn_app().await;
    let set = "SELECT count(*) AS n FROM pg_class \
               WHERE relname IN ('tasks_search', 'tasks_tags') \
               AND 'gin_pending_list_limit=256' = ANY(reloptions)";
    assert_eq!(app.count(set).await, 2);
}

#[tokio::test]
async fn odd_search_text_is_not_an_error() {
    let app = spawn_app().await;
    let id = create(&app, json!({"title": "Plan the trip"})).await;
    for q in [
        "the",
        "!!!",
        "\"",
        "'",
        "a & b | c",
        "trip:*",
        "-trip",
        "(trip",
        "\\",
        "or",
        "ünïcødé 漢字",
    ] {
        let res = list_status(&app, &format!("q={}", enc(q))).await;
        assert_eq!(res.status(), 200, "q={q:?}");
    }
    let long = "trip ".repeat(500);
    assert_eq!(
        ids(&app.list(USER, &format!("q={}", enc(&long))).await),
        vec![id]
    );
}

#[tokio::test]
async fn due_window_and_overdue() {
    let app = spawn_app().await;
    let now = Utc::now();
    let past = create(
        &app,
        json!({"title": "past", "due_at": rfc3339(now - Duration::days(2))}),
    )
    .await;
    let past_done = create(
        &app,
        json!({"title": "past done", "due_at": rfc3339(now - Duration::days(3))}),
    )
    .await;
    complete(&app, &past_done).await;
    let soon = create(
        &app,
        json!({"title": "soon", "due_at": rfc3339(now + Duration::days(1))}),
    )
    .await;
    let later = create(
        &app,
        json!({"title": "later", "due_at": rfc3339(now + Duration::days(10))}),
    )
    .await;
    let undated = create(&app, json!({"title": "undated"})).await;

    let at = |d: i64| enc(&rfc3339(now + Duration::days(d)));
    assert_eq!(
        ids(&app.list(USER, &format!("due_before={}", at(0))).await),
        vec![past.clone()]
    );
    assert_eq!(
        ids(&app
            .list(USER, &format!("due_before={}&status=all", at(0)))
            .await),
        vec![past_done.clone(), past.clone()]
    );
    assert_eq!(
        ids(&app.list(USER, &format!("due_after={}", at(0))).await),
        vec![soon.clone(), later.clone()]
    );
    assert_eq!(
        ids(&app
            .list(USER, &format!("due_after={}&due_before={}", at(-5), at(5)))
            .await),
        vec![past.clone(), soon.clone()]
    );
    // Any RFC 3339 offset is accepted.
    let berlin = (now + Duration::days(5))
        .with_timezone(&chrono::FixedOffset::east_opt(3600).unwrap())
        .to_rfc3339_opts(SecondsFormat::Secs, false);
    assert!(berlin.ends_with("+01:00"));
    assert_eq!(
        ids(&app.list(USER, &format!("due_after={}", enc(&berlin))).await),
        vec![later.clone()]
    );

    // Overdue: due in the past and not completed, whatever the status filter says.
    assert_eq!(
        ids(&app.list(USER, "overdue=true").await),
        vec![past.clone()]
    );
    assert_eq!(
        ids(&app.list(USER, "overdue=true&status=all").await),
        vec![past.clone()]
    );
    assert!(ids(&app.list(USER, "overdue=true&status=completed").await).is_empty());
    assert_eq!(
        ids(&app.list(USER, "overdue=false").await),
        vec![past, soon, later, undated]
    );
}

/// Six tasks with ties on every sort key and two without a due date.
struct SortFixture {
    /// title label -> id; `alpha1` and `alpha2` share the title "alpha".
    id: HashMap<&'static str, String>,
    created: Vec<String>,
}

impl SortFixture {
    async fn new(app: &TestApp) -> SortFixture {
        let specs: [(&str, &str, Option<&str>, &str); 6] = [
            ("delta", "delta", Some("2026-01-02T00:00:00Z"), "high"),
            ("alpha1", "alpha", Some("2026-01-01T00:00:00Z"), "low"),
            ("charlie", "charlie", Some("2026-01-02T00:00:00Z"), "high"),
            ("bravo", "bravo", None, "urgent"),
            ("echo", "echo", None, "none"),
            ("alpha2", "alpha", Some("2026-01-03T00:00:00Z"), "low"),
        ];
        let mut id = HashMap::new();
        let mut created = Vec::new();
        for (label, title, due, priority) in specs {
            let task = create(
                app,
                json!({"title": title, "due_at": due, "priority": priority}),
            )
            .await;
            id.insert(label, task.clone());
            created.push(task);
        }
        SortFixture { id, created }
    }

    /// Groups in order; the ids within a group are tied and come out by id, in the sort's
    /// direction (so that a descending order is one backward index scan).
    fn expect(&self, descending: bool, groups: &[&[&str]]) -> Vec<String> {
        groups
            .iter()
            .flat_map(|group| {
                let mut ids = sorted(group.iter().map(|l| self.id[l].clone()).collect());
                if descending {
                    ids.reverse();
                }
                ids
            })
            .collect()
    }
}

#[tokio::test]
async fn every_sort_breaks_ties_by_id_and_puts_missing_due_dates_last() {
    let app = spawn_app().await;
    let f = SortFixture::new(&app).await;
    // Two tasks created at the same instant: a created_at tie.
    app.execute(&format!(
        "UPDATE tasks SET created_at = '2025-01-01T00:00:00Z' WHERE id IN ('{}', '{}')",
        f.id["charlie"], f.id["delta"]
    ))
    .await;
    let later_created: Vec<String> = f
        .created
        .iter()
        .filter(|id| **id != f.id["charlie"] && **id != f.id["delta"])
        .cloned()
        .collect();
    let mut created_asc = f.expect(false, &[&["charlie", "delta"]]);
    created_asc.extend(later_created.iter().cloned());
    let mut created_desc: Vec<String> = later_created.iter().rev().cloned().collect();
    created_desc.extend(f.expect(true, &[&["charlie", "delta"]]));

    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "due_at",
            f.expect(
                false,
                &[
                    &["alpha1"],
                    &["charlie", "delta"],
                    &["alpha2"],
                    &["bravo", "echo"],
                ],
            ),
        ),
        (
            "-due_at",
            f.expect(
                true,
                &[
                    &["alpha2"],
                    &["charlie", "delta"],
                    &["alpha1"],
                    &["bravo", "echo"],
                ],
            ),
        ),
        (
            "priority",
            f.expect(
                false,
                &[
                    &["echo"],
                    &["alpha1", "alpha2"],
                    &["charlie", "delta"],
                    &["bravo"],
                ],
            ),
        ),
        (
            "-priority",
            f.expect(
                true,
                &[
                    &["bravo"],
                    &["charlie", "delta"],
                    &["alpha1", "alpha2"],
                    &["echo"],
                ],
            ),
        ),
        ("created_at", created_asc),
        ("-created_at", created_desc),
        (
            "title",
            f.expect(
                false,
                &[
                    &["alpha1", "alpha2"],
                    &["bravo"],
                    &["charlie"],
                    &["delta"],
                    &["echo"],
                ],
            ),
        ),
        (
            "-title",
            f.expect(
                true,
                &[
                    &["echo"],
                    &["delta"],
                    &["charlie"],
                    &["bravo"],
                    &["alpha1", "alpha2"],
                ],
            ),
        ),
    ];
    for (sort, expected) in &cases {
        let page = app.list(USER, &format!("sort={sort}")).await;
        assert_eq!(&ids(&page), expected, "sort={sort}: {:?}", titles(&page));
        // The same order page by page, including across ties and the null due dates.
        for limit in [1, 2, 4] {
            assert_eq!(
                &walk(&app, &format!("sort={sort}"), limit).await,
                expected,
                "sort={sort} limit={limit}"
            );
        }
    }
    // due_at ascending is the default.
    assert_eq!(ids(&app.list(USER, "").await), cases[0].1);
}

#[tokio::test]
async fn extreme_due_dates_sort_and_paginate() {
    let app = spawn_app().await;
    // The first and last instants whose UTC form has a four-digit year.
    let earliest = create(
        &app,
        json!({"title": "a", "due_at": "0001-01-01T00:00:00Z"}),
    )
    .await;
    let latest = create(
        &app,
        json!({"title": "b", "due_at": "9999-12-31T23:59:59Z"}),
    )
    .await;
    // In UTC these are 2 BC and AD 10000: no RFC 3339 form to hand back, so refused.
    for outside in ["0000-01-01T00:00:00+14:00", "9999-12-31T23:59:59-23:59"] {
        let res = app
            .as_user(USER, Method::POST, &format!("/api/{USER}/tasks"))
            .json(&json!({"title": "x", "due_at": outside}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 422, "{outside}");
    }
    let middle = create(
        &app,
        json!({"title": "c", "due_at": "2026-01-01T00:00:00Z"}),
    )
    .await;
    let undated = create(&app, json!({"title": "d"})).await;
    let ascending = vec![
        earliest.clone(),
        middle.clone(),
        latest.clone(),
        undated.clone(),
    ];
    assert_eq!(walk(&app, "sort=due_at", 1).await, ascending);
    assert_eq!(
        walk(&app, "sort=-due_at", 1).await,
        vec![latest, middle, earliest, undated]
    );
    assert_eq!(
        ids(&app.list(USER, "due_before=0001-01-01T00:00:01Z").await).len(),
        1
    );
}

#[tokio::test]
async fn pagination_visits_every_task_exactly_once_in_order() {
    let app = spawn_app().await;
    let priorities = ["none", "low", "medium", "high", "urgent"];
    for i in 0..23 {
        // Many shared due dates and priorities, every fourth task undated.
        let due = (i % 4 != 0).then(|| format!("2026-03-0{}T12:00:00Z", 1 + i % 3));
        app.create(
            USER,
            json!({
                "title": format!("task {:02}", i % 7),
                "due_at": due,
                "priority": priorities[i % 5],
            }),
        )
        .await;
    }
    for sort in [
        "due_at",
        "-due_at",
        "priority",
        "-priority",
        "created_at",
        "-created_at",
        "title",
        "-title",
    ] {
        let full = ids(&app.list(USER, &format!("sort={sort}&limit=200")).await);
        assert_eq!(full.len(), 23, "sort={sort}");
        for limit in [3, 5, 23] {
            let walked = walk(&app, &format!("sort={sort}"), limit).await;
            assert_eq!(walked, full, "sort={sort} limit={limit}");
            let unique: HashSet<&String> = walked.iter().collect();
            assert_eq!(unique.len(), 23, "sort={sort} limit={limit}: duplicates");
        }
    }
    // Filters apply on every page too.
    let high = ids(&app.list(USER, "priority=high&sort=title").await);
    assert_eq!(high.len(), 4);
    assert_eq!(walk(&app, "priority=high&sort=title", 2).await, high);
}

/// Fetch pages of `query` with limit 3, adding three tasks after each of the first four pages;
/// returns the ids seen.
async fn walk_while_inserting(app: &TestApp, query: &str, mut round: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for pages in 1.. {
        let mut q = format!("{query}&limit=3");
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={}", enc(c)));
        }
        let page = app.list(USER, &q).await;
        seen.extend(ids(&page));
        // New tasks before, among and after the rows already seen.
        let dues: &[&str] = if pages <= 4 { &DUES } else { &[] };
        for due in dues {
            round += 1;
            app.create(
                USER,
                json!({"title": format!("new {round}"), "due_at": due, "priority": "medium"}),
            )
            .await;
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return seen,
        }
        assert!(seen.len() < 500, "{query}: pagination never ended");
    }
    unreachable!()
}

const DUES: [&str; 3] = [
    "2026-05-01T00:00:00Z",
    "2026-05-05T00:00:00Z",
    "2026-05-09T00:00:00Z",
];

#[tokio::test]
async fn pagination_is_stable_while_tasks_are_added() {
    let app = spawn_app().await;
    for i in 0..10 {
        let priority = ["low", "medium", "high"][i % 3];
        create(
            &app,
            json!({
                "title": format!("orig {i}"),
                "due_at": format!("2026-05-{:02}T00:00:00Z", 1 + i),
                "priority": priority,
            }),
        )
        .await;
    }
    for (n, sort) in [
        "due_at",
        "-due_at",
        "created_at",
        "-created_at",
        "priority",
        "-priority",
        "title",
        "-title",
    ]
    .into_iter()
    .enumerate()
    {
        // Every row that exists before this walk starts, in the order of the sort.
        let existing = ids(&app.list(USER, &format!("sort={sort}&limit=200")).await);
        let seen = walk_while_inserting(&app, &format!("sort={sort}"), n * 1000).await;
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "sort={sort}: a task was listed twice"
        );
        let existing_seen: Vec<String> = seen
            .iter()
            .filter(|id| existing.contains(id))
            .cloned()
            .collect();
        assert_eq!(
            existing_seen, existing,
            "sort={sort}: an existing task was skipped or moved"
        );
        match sort {
            // New tasks sort before the first page's cursor: none of them is listed.
            "-created_at" => assert_eq!(seen, existing, "sort={sort}"),
            // New tasks sort after every existing one: the walk picks them up at the end.
            "created_at" => {
                assert!(seen.len() > existing.len(), "sort={sort}");
                assert_eq!(seen[..existing.len()], existing[..], "sort={sort}");
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn limit_is_1_to_200_and_defaults_to_50() {
    let app = spawn_app().await;
    for i in 0..51 {
        app.create(USER, json!({"title": format!("t{i}")})).await;
    }
    let page = app.list(USER, "").await;
    assert_eq!(ids(&page).len(), 50);
    assert!(page["next_cursor"].is_string());
    let rest = app
        .list(
            USER,
            &format!("cursor={}", enc(page["next_cursor"].as_str().unwrap())),
        )
        .await;
    assert_eq!(ids(&rest).len(), 1);
    assert_eq!(rest["next_cursor"], Value::Null);

    let one = app.list(USER, "limit=1").await;
    assert_eq!(ids(&one).len(), 1);
    assert!(one["next_cursor"].is_string());
    let all = app.list(USER, "limit=200").await;
    assert_eq!(ids(&all).len(), 51);
    assert_eq!(all["next_cursor"], Value::Null);
    // Exactly as many rows as the limit: no further page.
    let exact = app.list(USER, "limit=51").await;
    assert_eq!(ids(&exact).len(), 51);
    assert_eq!(exact["next_cursor"], Value::Null);

    for bad in ["0", "201", "-1", "abc", "1.5", "", "99999999999999999999"] {
        let res = list_status(&app, &format!("limit={bad}")).await;
        let body = error_body(res, 400).await;
        assert_eq!(body["error"]["code"], "invalid_query", "limit={bad}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("limit"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_cursor_only_continues_the_sort_it_was_made_for() {
    let app = spawn_app().await;
    for i in 0..3 {
        app.create(USER, json!({"title": format!("t{i}")})).await;
    }
    let page = app.list(USER, "sort=title&limit=1").await;
    let cursor = enc(page["next_cursor"].as_str().unwrap());
    assert_eq!(
        ids(&app
            .list(USER, &format!("sort=title&limit=1&cursor={cursor}"))
            .await)
        .len(),
        1
    );
    for other in ["-title", "due_at", "priority", "created_at"] {
        let res = list_status(&app, &format!("sort={other}&cursor={cursor}")).await;
        let body = error_body(res, 400).await;
        assert_eq!(body["error"]["code"], "invalid_query", "sort={other}");
    }
    // Without a sort the default (due_at) applies, which is not title either.
    let res = list_status(&app, &format!("cursor={cursor}")).await;
    assert_eq!(error_body(res, 400).await["error"]["code"], "invalid_query");
    // Filters may change between pages; the cursor only binds the order.
    assert_eq!(
        app.list(USER, &format!("sort=title&q=t1&cursor={cursor}"))
            .await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn other_users_tasks_are_never_listed() {
    let app = spawn_app().await;
    let mine = create(
        &app,
        json!({"title": "shared words", "tags": ["x"], "priority": "high"}),
    )
    .await;
    for i in 0..5 {
        app.create(
            "bob",
            json!({"title": format!("shared words {i}"), "tags": ["x"], "priority": "high", "due_at": "2020-01-01T00:00:00Z"}),
        )
        .await;
    }
    for query in [
        "",
        "status=all",
        "q=shared",
        "tag=x",
        "priority=high",
        "overdue=true&status=all",
        "sort=-created_at",
        "limit=1",
    ] {
        let page = app.list(USER, query).await;
        for task in page["items"].as_array().unwrap() {
            assert_eq!(task["user_id"], USER, "{query}");
        }
    }
    assert_eq!(walk(&app, "status=all", 1).await, vec![mine]);
    assert_eq!(
        app.list("bob", "status=all").await["items"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    // Nor through a cursor made from bob's pages.
    let bobs = app.list("bob", "limit=1&sort=title").await;
    let cursor = enc(bobs["next_cursor"].as_str().unwrap());
    let page = app
        .list(USER, &format!("sort=title&limit=1&cursor={cursor}"))
        .await;
    for task in page["items"].as_array().unwrap() {
        assert_eq!(task["user_id"], USER);
    }
}

#[tokio::test]
async fn invalid_parameters_are_400_invalid_query() {
    let app = spawn_app().await;
    app.create(USER, json!({"title": "t"})).await;
    let title_cursor = {
        use base64::Engine;
        let raw = json!({"sort": "title", "descending": false, "value": {"text": "a\u{0}b"}, "id": uuid::Uuid::now_v7()});
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw.to_string())
    };
    let wrong_type_cursor = {
        use base64::Engine;
        let raw = json!({"sort": "due_at", "descending": false, "value": {"text": "x"}, "id": uuid::Uuid::now_v7()});
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw.to_string())
    };
    let far_past_cursor = {
        use base64::Engine;
        let raw = json!({"sort": "due_at", "descending": false, "value": {"time": "-262143-01-01T00:00:00Z"}, "id": uuid::Uuid::now_v7()});
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw.to_string())
    };
    for query in [
        format!("cursor={far_past_cursor}"),
        "status=done".to_owned(),
        "status=".to_owned(),
        "priority=critical".to_owned(),
        "priority=HIGH".to_owned(),
        "tag=".to_owned(),
        "tag=%00".to_owned(),
        "q=%00".to_owned(),
        "q=a%00b".to_owned(),
        "due_before=yesterday".to_owned(),
        "due_after=2026-13-01T00:00:00Z".to_owned(),
        "due_after=2026-01-01".to_owned(),
        "overdue=maybe".to_owned(),
        "overdue=1".to_owned(),
        "sort=colour".to_owned(),
        "sort=--title".to_owned(),
        "sort=".to_owned(),
        "cursor=%%%".to_owned(),
        "cursor=bm9wZQ".to_owned(),
        "cursor=".to_owned(),
        format!("sort=title&cursor={title_cursor}"),
        format!("cursor={wrong_type_cursor}"),
        "page=2".to_owned(),
        "limit=10&offset=5".to_owned(),
    ] {
        let res = list_status(&app, &query).await;
        let body = error_body(res, 400).await;
        assert_eq!(body["error"]["code"], "invalid_query", "{query}: {body}");
    }
}

/// A page's statement is planned once per session, whoever asks: left to choose, PostgreSQL
/// planned it again on every run for a user with many tasks, a third of its CPU per page. A page
/// filtered by value is planned for its values, in a transaction of its own, and leaves the
/// session's setting as it was.
#[tokio::test]
async fn a_page_is_planned_once_per_session_and_a_filtered_page_for_its_values() {
    use backend::domain::list_query::ListQuery;
    use diesel::sql_types::{BigInt, Text};
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Plans {
        #[diesel(sql_type = BigInt)]
        generic_plans: i64,
        #[diesel(sql_type = BigInt)]
        custom_plans: i64,
    }
    #[derive(diesel::QueryableByName)]
    struct Setting {
        #[diesel(sql_type = Text)]
        mode: String,
    }
    let app = spawn_app().await;
    // Inherent, not diesel's `execute` (RunQueryDsl is in scope for the queries below).
    TestApp::execute(
        &app,
        &format!(
            "INSERT INTO tasks (id, user_id, title, tags, series_id, created_at, updated_at) \
         SELECT gen_random_uuid(), '{USER}', 'task ' || i, ARRAY['t' || (i % 10)], \
                gen_random_uuid(), now(), now() \
         FROM generate_series(1, 2000) i"
        ),
    )
    .await;
    TestApp::execute(&app, "ANALYZE tasks").await;
    let mut conn = app.pool.get().await.unwrap();
    let page = ListQuery::parse("sort=priority&limit=10").unwrap();
    for _ in 0..8 {
        let rows = backend::listing::list(&mut conn, USER, &page)
            .await
            .unwrap();
        assert_eq!(rows.len(), 11);
    }
    let plans: Plans = diesel::sql_query(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1",
    )
    .bind::<Text, _>(backend::listing::sql(&page))
    .get_result(&mut conn)
    .await
    .unwrap();
    assert_eq!((plans.generic_plans, plans.custom_plans), (8, 0));

    let filtered = ListQuery::parse("tag=t3&limit=10").unwrap();
    let rows = backend::listing::list(&mut conn, USER, &filtered)
        .await
        .unwrap();
    assert_eq!(rows.len(), 11);
    for row in &rows {
        let task: Value = serde_json::from_slice(&row.json).unwrap();
        assert_eq!(task["tags"], json!(["t3"]), "{task}");
    }
    let Setting { mode } = diesel::sql_query("SELECT current_setting('plan_cache_mode') AS mode")
        .get_result(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "force_generic_plan");
}

/// A page writes each task from its row's bytes (`backend::listing::Listed`), the single-task
/// routes through a decoded row: both must give the same JSON, byte for byte, for every kind of
/// value (escapes, non-ASCII text, NULLs, empty and several tags, timestamps of every precision,
/// a recurrence with its summary, one that cannot be read), and a title cursor must carry the
/// title exactly as stored.
#[tokio::test]
async fn a_listed_task_is_the_same_json_as_the_task_read_alone() {
    let app = spawn_app().await;
    let mut made = vec![
        create(&app, json!({"title": "plain"})).await,
        create(
            &app,
            json!({
                "title": "Quotes \" and \\ back\tslash, \u{1} control, caf\u{e9} \u{1F600}",
                "description": "line one\nline two \u{2028} </script>",
                "priority": "urgent",
                "tags": ["b", "a\"q", "\u{fc}ber"],
                "due_at": "2031-02-03T04:05:06.789Z",
                "timezone": "Asia/Kolkata",
                "reminder_minutes_before": 15,
            }),
        )
        .await,
        create(
            &app,
            json!({
                "title": "weekly",
                "due_at": "2031-02-03T09:00:00Z",
                "timezone": "Europe/Berlin",
                "recurrence": {"rule": "FREQ=WEEKLY;BYDAY=MO,WE"},
            }),
        )
        .await,
        create(
            &app,
            json!({"title": "done", "tags": [], "description": "  "}),
        )
        .await,
    ];
    complete(&app, &made[3]).await;
    complete(&app, &made[2]).await;
    // Stored before the API validated rules: the task is still listed, without a recurrence.
    app.execute(&format!(
        "INSERT INTO tasks (id, user_id, title, recurrence, series_id, created_at, updated_at) \
         VALUES ('0190f5c8-0000-7000-8000-000000000001', '{USER}', 'unreadable rule', \
                 '{{\"rule\": 42}}', gen_random_uuid(), '2030-01-01T00:00:00.5Z', now())"
    ))
    .await;
    made.push("0190f5c8-0000-7000-8000-000000000001".to_owned());

    let res = list_status(&app, "status=all&sort=title&limit=200").await;
    assert_eq!(res.status(), 200);
    let page_text = res.text().await.unwrap();
    let page: Value = serde_json::from_str(&page_text).unwrap();
    let listed = ids(&page);
    assert_eq!(sorted(listed.clone()), sorted(made.clone()), "{page}");
    let mut alone = Vec::new();
    for id in &listed {
        let res = app
            .as_user(USER, Method::GET, &format!("/api/{USER}/tasks/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        alone.push(res.text().await.unwrap());
    }
    let expected = format!("{{\"items\":[{}],\"next_cursor\":null}}", alone.join(","));
    assert_eq!(page_text, expected);
    let by_id: HashMap<&str, &Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].as_str().unwrap(), t))
        .collect();
    assert_eq!(
        by_id[made[1].as_str()]["tags"],
        json!(["b", "a\"q", "\u{fc}ber"])
    );
    assert_eq!(
        by_id[made[1].as_str()]["due_at"],
        "2031-02-03T04:05:06.789Z"
    );
    assert_eq!(by_id[made[3].as_str()]["description"], Value::Null);
    assert!(by_id[made[3].as_str()]["completed_at"].is_string());
    assert!(by_id[made[2].as_str()]["recurrence"]["summary"].is_string());
    assert_eq!(by_id[made[4].as_str()]["recurrence"], Value::Null);
    assert_eq!(
        by_id[made[4].as_str()]["created_at"],
        "2030-01-01T00:00:00.500Z"
    );

    // One task a page, in title order: each cursor continues after the exact stored title.
    assert_eq!(walk(&app, "status=all&sort=title", 1).await, listed);
    let mut backwards = walk(&app, "status=all&sort=-title", 1).await;
    backwards.reverse();
    assert_eq!(backwards, listed);
}

const LIST_SESSIONS: &str = "SELECT count(*) AS n FROM pg_stat_activity \
     WHERE datname = current_database() AND application_name = 'taskflow-backend-lists'";

/// The request pools' open connections, from `/metrics`.
async fn pooled_connections(app: &TestApp) -> String {
    app.metric("taskflow_db_pool_connections{state=\"open\"}")
        .await
}

#[tokio::test]
async fn concurrent_pages_share_a_connection_per_worker_and_each_gets_its_own() {
    let app = spawn_app().await;
    for user in ["alice", "bob"] {
        for i in 0..12 {
            let priority = ["none", "low", "medium", "high", "urgent"][i % 5];
            app.create(
                user,
                json!({"title": format!("{user} {i:02}"), "priority": priority}),
            )
            .await;
        }
    }
    let queries = [
        "sort=title&limit=5",
        "sort=-title&limit=7",
        "sort=priority&limit=3",
        "sort=-created_at&limit=12",
        "sort=due_at&limit=2",
        "status=completed",
    ];
    let mut alone = HashMap::new();
    for user in ["alice", "bob"] {
        for q in queries {
            alone.insert((user, q), app.list(user, q).await);
        }
    }
    let pooled = pooled_connections(&app).await;

    let requests = (0..96).map(|i| {
        let (user, q) = (["alice", "bob"][i % 2], queries[i % queries.len()]);
        let app = &app;
        async move { (user, q, app.list(user, q).await) }
    });
    for (user, q, page) in futures::future::join_all(requests).await {
        assert_eq!(page, alone[&(user, q)], "{user} {q}");
    }
    // Plain pages took no connection from the request pools, and at most one each worker.
    assert_eq!(pooled_connections(&app).await, pooled);
    let workers = std::thread::available_parallelism().unwrap().get() as i64;
    let sessions = app.count(LIST_SESSIONS).await;
    assert!(
        (1..=workers).contains(&sessions),
        "{sessions} list sessions"
    );
}

#[tokio::test]
async fn a_page_after_the_server_closed_the_shared_connection_is_served_on_a_new_one() {
    let app = spawn_app().await;
    for title in ["a", "b", "c"] {
        create(&app, json!({ "title": title })).await;
    }
    let pages = || futures::future::join_all((0..8).map(|_| app.list(USER, "sort=title")));
    let before = pages().await;
    assert!(app.count(LIST_SESSIONS).await >= 1);

    // As a restart of the server or an administrator would.
    app.execute(&LIST_SESSIONS.replace("count(*) AS n", "pg_terminate_backend(pid)"))
        .await;
    for _ in 0..200 {
        if app.count(LIST_SESSIONS).await == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(app.count(LIST_SESSIONS).await, 0);

    assert_eq!(pages().await, before);
    assert!(app.count(LIST_SESSIONS).await >= 1);
}

/// Every order of every status, first page and a later one, as the API runs it (kept prepared,
/// planned generically): index scans that read only the page, nothing sorted.
#[tokio::test]
async fn every_order_of_every_status_reads_only_its_page() {
    use backend::domain::list_query::{ListQuery, SortValue};
    use diesel::sql_types::Text;
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Line {
        #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
        line: String,
    }
    let app = spawn_app().await;
    // Inherent, not diesel's `execute` (RunQueryDsl is in scope for the queries below).
    TestApp::execute(
        &app,
        &format!(
            "INSERT INTO tasks (id, user_id, title, priority, completed, completed_at, due_at, \
                            series_id, created_at, updated_at) \
         SELECT gen_random_uuid(), '{USER}', 'task ' || i, i % 5, i % 3 = 0, \
                CASE WHEN i % 3 = 0 THEN now() END, \
                CASE WHEN i % 4 > 0 THEN now() + i * interval '1 hour' END, \
                gen_random_uuid(), now() - i * interval '1 second', now() \
         FROM generate_series(1, 3000) i"
        ),
    )
    .await;
    TestApp::execute(&app, "ANALYZE tasks").await;
    let mut conn = app.pool.get().await.unwrap();
    let literal = |value: &Option<SortValue>| match value {
        Some(SortValue::Time(t)) => format!("'{}'", t.to_rfc3339()),
        Some(SortValue::Rank(r)) => r.to_string(),
        Some(SortValue::Text(s)) => format!("'{}'", s.replace('\'', "''")),
        None => "NULL".to_owned(),
    };
    let orders = ["due_at", "priority", "created_at", "title"];
    for sort in orders.iter().flat_map(|o| [o.to_string(), format!("-{o}")]) {
        for status in ["pending", "completed", "all"] {
            let first = format!("status={status}&sort={sort}&limit=10");
            let cursor = app.list(USER, &first).await["next_cursor"]
                .as_str()
                .expect("a next page")
                .to_owned();
            for query in [first.clone(), format!("{first}&cursor={cursor}")] {
                let q = ListQuery::parse(&query).unwrap();
                let args = match &q.cursor {
                    Some(c) => format!("'{USER}', {}, '{}', 11", literal(&c.value), c.id),
                    None => format!("'{USER}', 11"),
                };
                diesel::sql_query("DEALLOCATE ALL")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                diesel::sql_query(format!("PREPARE page AS {}", backend::listing::sql(&q)))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                let plan: Vec<Line> = diesel::sql_query(format!("EXPLAIN EXECUTE page({args})"))
                    .load(&mut conn)
                    .await
                    .unwrap();
                let plan: Vec<&str> = plan.iter().map(|l| l.line.as_str()).collect();
                let plan = plan.join("\n");
                let nodes: Vec<&str> = plan
                    .lines()
                    .map(|l| l.trim_start().trim_start_matches("->").trim_start())
                    .collect();
                assert!(plan.contains("Index Scan"), "{query}:\n{plan}");
                for node in [
                    "Sort  (",
                    "Incremental Sort  (",
                    "Seq Scan",
                    "Bitmap Heap Scan",
                ] {
                    assert!(
                        !nodes.iter().any(|l| l.starts_with(node)),
                        "{query}:\n{plan}"
                    );
                }
            }
        }
    }
}
