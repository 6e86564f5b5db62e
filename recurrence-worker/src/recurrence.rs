//! The effect of a `completed` event: the next occurrence of its series.

use chrono::Utc;
use chrono_tz::Tz;
use diesel_async::AsyncPgConnection;
use futures::future::BoxFuture;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use shared_events::{TaskEvent, TaskEventType};
use taskflow_db::effects::{AfterCommit, Delivery, Handler, HandlerError};
use taskflow_db::{outbox, reminders, tasks};

/// What the worker did with a `completed` event, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    /// COUNT or UNTIL reached: the series ended with this occurrence.
    SeriesEnded,
    /// Another delivery of this completion (or a racing replica) already created it.
    AlreadyCreated,
    Skipped(SkipReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    NotRecurring,
    /// The series was cancelled, possibly while this event was in flight.
    Inactive,
    /// The occurrence was deleted after it was completed.
    TaskGone,
    /// Reopened since: a later completion will bring its own event.
    NotCompleted,
}

impl SkipReason {
    fn as_str(self) -> &'static str {
        match self {
            SkipReason::NotRecurring => "not_recurring",
            SkipReason::Inactive => "inactive",
            SkipReason::TaskGone => "task_gone",
            SkipReason::NotCompleted => "not_completed",
        }
    }
}

pub struct RecurrenceHandler {
    events: IntCounterVec,
    created: IntCounter,
    ended: IntCounter,
    skipped: IntCounterVec,
}

impl RecurrenceHandler {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let events = IntCounterVec::new(
            Opts::new(
                "taskflow_recurrence_events_total",
                "Task events by type: a completion counts once it is handled, the others (nothing to do) as they arrive",
            ),
            &["type"],
        )?;
        for t in TaskEventType::ALL {
            events.with_label_values(&[t.as_str()]);
        }
        let created = IntCounter::new(
            "taskflow_recurrence_occurrences_created_total",
            "Next occurrences created",
        )?;
        let ended = IntCounter::new(
            "taskflow_recurrence_series_ended_total",
            "Series that reached COUNT or UNTIL",
        )?;
        let skipped = IntCounterVec::new(
            Opts::new(
                "taskflow_recurrence_completions_skipped_total",
                "Completions that create nothing, by reason",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(events.clone()))?;
        registry.register(Box::new(created.clone()))?;
        registry.register(Box::new(ended.clone()))?;
        registry.register(Box::new(skipped.clone()))?;
        Ok(RecurrenceHandler {
            events,
            created,
            ended,
            skipped,
        })
    }
}

impl Handler for RecurrenceHandler {
    /// Only completions create anything; every other task event is acknowledged without a
    /// transaction. Anything else on the topic goes on to `handle`, which dead-letters it.
    fn wants(&self, delivery: &Delivery<'_>) -> bool {
        let Ok(event) = delivery.task_event() else {
            return true;
        };
        let wanted = event.event_type == TaskEventType::Completed;
        if !wanted {
            self.events
                .with_label_values(&[event.event_type.as_str()])
                .inc();
        }
        wanted
    }

    fn handle<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        delivery: Delivery<'a>,
    ) -> BoxFuture<'a, Result<Option<AfterCommit>, HandlerError>> {
        Box::pin(async move {
            let event = delivery.task_event()?;
            let outcome =
                next_occurrence(conn, event, delivery.event.traceparent.as_deref()).await?;
            let seen = self.events.with_label_values(&[event.event_type.as_str()]);
            let counted = match &outcome {
                Outcome::Created => Some(self.created.clone()),
                Outcome::SeriesEnded => Some(self.ended.clone()),
                Outcome::AlreadyCreated => None,
                Outcome::Skipped(reason) => {
                    Some(self.skipped.with_label_values(&[reason.as_str()]))
                }
            };
            let (task, series) = (event.task_id, event.series_id);
            Ok(Some(Box::new(move || {
                seen.inc();
                counted.iter().for_each(IntCounter::inc);
                tracing::info!(%task, %series, ?outcome, "completion handled");
            }) as AfterCommit))
        })
    }
}

/// Create the occurrence after the one `event` completed, on the caller's transaction. The
/// series is locked (in id order, like every writer of a whole series) and re-read first, so a
/// cancel that committed meanwhile wins over this in-flight completion.
pub async fn next_occurrence(
    conn: &mut AsyncPgConnection,
    event: &TaskEvent,
    traceparent: Option<&str>,
) -> Result<Outcome, HandlerError> {
    let user = event.user_id.as_str();
    tasks::lock_series(conn, user, event.series_id).await?;
    let Some(done) = tasks::find(conn, user, event.task_id, false).await? else {
        return Ok(Outcome::Skipped(SkipReason::TaskGone));
    };
    let Some(recurrence) = done.recurrence() else {
        return Ok(Outcome::Skipped(SkipReason::NotRecurring));
    };
    if !recurrence.active {
        return Ok(Outcome::Skipped(SkipReason::Inactive));
    }
    let Some(completed_at) = done.completed_at.filter(|_| done.completed) else {
        return Ok(Outcome::Skipped(SkipReason::NotCompleted));
    };
    // An unknown stored zone cannot come from the API, which validates it.
    let tz: Tz = done.timezone.parse().unwrap_or(Tz::UTC);
    let occurrence = u32::try_from(done.occurrence).unwrap_or(1);
    let now = Utc::now();
    match recurrence.next_occurrence(done.due_at, completed_at, occurrence, tz) {
        Some(due_at) => {
            let Some(next) =
                tasks::insert_occurrence(conn, &done.next_occurrence(due_at, now)).await?
            else {
                return Ok(Outcome::AlreadyCreated);
            };
            reminders::schedule_for_new_task(conn, &next).await?;
            outbox::record_task_change(
                conn,
                TaskEventType::Created,
                &next.snapshot(),
                traceparent,
                now,
            )
            .await?;
            Ok(Outcome::Created)
        }
        None => {
            for ended in tasks::deactivate_series(conn, user, done.series_id, now).await? {
                outbox::record_task_change(
                    conn,
                    TaskEventType::Updated,
                    &ended.snapshot(),
                    traceparent,
                    now,
                )
                .await?;
            }
            Ok(Outcome::SeriesEnded)
        }
    }
}
