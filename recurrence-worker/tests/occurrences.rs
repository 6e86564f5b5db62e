//! The real `recurrence-worker` binary creating next occurrences, against the test broker and a
//! fresh database: the right local due date, exactly once however often the completion is
//! delivered, nothing after a cancel, and the end of a series at its COUNT.

mod common;

use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use common::*;
use shared_events::topics::TASK_EVENTS;
use shared_events::TaskEventType;
use taskflow_db::DbPool;
use taskflow_test_support::kafka::prefixed_topics;
use uuid::Uuid;

struct Setup {
    pool: DbPool,
    brokers: String,
    topic: String,
    group: String,
    worker: Service,
}

async fn setup(name: &str) -> Setup {
    let database_url = fresh_database().await;
    let brokers = brokers();
    let prefix = format!("rw-{name}-{}.", Uuid::now_v7().simple());
    prefixed_topics(&brokers, &prefix).await;
    let group = format!("{prefix}group");
    let worker = start_worker(&database_url, &brokers, &prefix, &group, 1);
    worker.assert_healthy().await;
    Setup {
        pool: taskflow_db::pool(&database_url, 2).expect("pool"),
        topic: format!("{prefix}{TASK_EVENTS}"),
        brokers,
        group,
        worker,
    }
}

impl Setup {
    async fn deliver(&self, key: Uuid, payload: &[u8]) {
        send(
            &producer(&self.brokers),
            &self.topic,
            &key.to_string(),
            None,
            payload,
        )
        .await;
    }

    /// Wait until the worker recorded `event` as handled.
    async fn handled(&self, event: Uuid) {
        let sql = format!(
            "SELECT count(*) AS n FROM processed_events WHERE consumer = '{}' AND event_id = '{event}'",
            self.group
        );
        eventually(
            "the event to be handled",
            || self.worker.log(),
            async || {
                let n = count(&self.pool, &sql).await;
                (n == 1).then_some(()).ok_or(format!("{n} records"))
            },
        )
        .await;
    }
}

fn berlin(y: i32, m: u32, d: u32, h: u32, min: u32) -> chrono::DateTime<Tz> {
    Tz::Europe__Berlin
        .with_ymd_and_hms(y, m, d, h, min, 0)
        .single()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_daily_task_gets_its_next_day_once_however_often_it_is_delivered() {
    let s = setup("daily").await;
    // The day before Berlin's 2027 spring-forward: 09:00 stays 09:00 local (07:00 UTC after).
    let first = recurring_task(&s.pool, "alice", "daily", berlin(2027, 3, 27, 9, 0)).await;
    let (event, payload) = complete(&s.pool, &first).await;
    for _ in 0..3 {
        s.deliver(first.series_id, &payload).await;
    }
    eventually(
        "the next occurrence",
        || s.worker.log(),
        async || {
            let n = occurrences(&s.pool, first.series_id).await.len();
            (n == 2).then_some(()).ok_or(format!("{n} occurrences"))
        },
    )
    .await;
    s.handled(event).await;
    // Let the two redeliveries arrive too.
    eventually(
        "both duplicates skipped",
        || s.worker.log(),
        async || {
            let n = handled(&s.worker, "duplicate");
            (n == 2).then_some(()).ok_or(format!("{n} duplicates"))
        },
    )
    .await;
    let series = occurrences(&s.pool, first.series_id).await;
    assert_eq!(series.len(), 2, "exactly one next occurrence");
    let next = &series[1];
    assert_eq!(next.occurrence, 2);
    assert_eq!(
        next.due_at,
        Some(Utc.with_ymd_and_hms(2027, 3, 28, 7, 0, 0).unwrap()),
        "09:00 CEST on the day after"
    );
    assert!(!next.completed);
    assert_ne!(next.id, first.id);
    assert_eq!(
        (
            &next.title,
            &next.description,
            next.priority,
            &next.tags,
            &next.timezone
        ),
        (
            &first.title,
            &first.description,
            first.priority,
            &first.tags,
            &first.timezone
        )
    );
    assert_eq!(next.reminder_minutes_before, Some(15));
    let mut conn = s.pool.get().await.unwrap();
    let pending = taskflow_db::reminders::list(
        &mut conn,
        "alice",
        Some(taskflow_db::reminders::ReminderStatus::Pending),
        10,
    )
    .await
    .unwrap();
    assert_eq!(pending.len(), 1, "the next occurrence has its own reminder");
    assert_eq!(pending[0].task_id, next.id);
    assert_eq!(
        pending[0].remind_at,
        Utc.with_ymd_and_hms(2027, 3, 28, 6, 45, 0).unwrap()
    );
    assert_eq!(
        next.recurrence, first.recurrence,
        "the series' recurrence, start included"
    );
    assert_eq!(
        outbox_events(&s.pool, "com.taskflow.task.created", next.id).await,
        1,
        "its created event is in the outbox, once"
    );
    assert_eq!(
        metric(
            &s.worker.addr,
            "taskflow_recurrence_occurrences_created_total",
            &[]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &s.worker.addr,
            "taskflow_recurrence_events_total",
            &[("type", "completed")]
        ),
        1.0,
        "the two redeliveries never reached the handler"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_completions_take_a_transaction_the_other_events_are_acknowledged_as_they_come() {
    let s = setup("ignored").await;
    let task = Uuid::now_v7();
    let (updated, completed) = (Uuid::now_v7(), Uuid::now_v7());
    // One key, so one partition, in this order.
    s.deliver(task, &task_event(updated, task, 2, TaskEventType::Updated))
        .await;
    s.deliver(
        task,
        &task_event(completed, task, 3, TaskEventType::Completed),
    )
    .await;
    // A completion of a task this database does not have creates nothing but is recorded.
    s.handled(completed).await;
    assert_eq!(handled(&s.worker, "ignored"), 1);
    assert_eq!(handled(&s.worker, "handled"), 1);
    let recorded = processed_ids(&s.pool, &s.group).await;
    assert_eq!(recorded, [completed].into(), "no record for the update");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_wins_over_an_in_flight_completion() {
    let s = setup("cancel").await;
    let first = recurring_task(&s.pool, "bob", "weekly", berlin(2027, 5, 3, 18, 30)).await;
    let (event, payload) = complete(&s.pool, &first).await;
    // The cancel commits while the completion is still on its way to the worker.
    {
        let mut conn = s.pool.get().await.unwrap();
        taskflow_db::tasks::deactivate_series(&mut conn, "bob", first.series_id, Utc::now())
            .await
            .unwrap();
    }
    s.deliver(first.series_id, &payload).await;
    s.handled(event).await;
    assert_eq!(occurrences(&s.pool, first.series_id).await.len(), 1);
    assert_eq!(
        metric(
            &s.worker.addr,
            "taskflow_recurrence_completions_skipped_total",
            &[("reason", "inactive")]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_series_ends_at_its_count() {
    let s = setup("count").await;
    let first = recurring_task(
        &s.pool,
        "carol",
        "FREQ=MONTHLY;COUNT=2",
        berlin(2027, 1, 31, 9, 0),
    )
    .await;
    let (event, payload) = complete(&s.pool, &first).await;
    s.deliver(first.series_id, &payload).await;
    s.handled(event).await;
    let series = occurrences(&s.pool, first.series_id).await;
    assert_eq!(series.len(), 2);
    let (last_event, payload) = complete(&s.pool, &series[1]).await;
    s.deliver(first.series_id, &payload).await;
    s.handled(last_event).await;
    let series = occurrences(&s.pool, first.series_id).await;
    assert_eq!(series.len(), 2, "COUNT=2: no third occurrence");
    let stored: serde_json::Value = series[1].recurrence.clone().unwrap();
    assert_eq!(
        stored["active"], false,
        "the series ended on its last occurrence"
    );
    assert_eq!(
        outbox_events(&s.pool, "com.taskflow.task.updated", series[1].id).await,
        1
    );
    assert_eq!(
        metric(
            &s.worker.addr,
            "taskflow_recurrence_series_ended_total",
            &[]
        ),
        1.0
    );
}
