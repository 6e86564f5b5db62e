//! Effects of consumed events, exactly once. A [`Handler`] runs inside the transaction that
//! records `(consumer, event id)` in `processed_events`: the effect and the record commit or roll
//! back together, so a redelivery after a crash either finds both or neither. An effect outside
//! the database (a webhook) is written as a job row in that same transaction, never performed by
//! the handler itself.
//!
//! Nothing here knows about Kafka: the consumer toolkit and Dapr's push deliveries drive the same
//! handler and map its outcome to their own acknowledgements.

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use futures::future::BoxFuture;
use serde_json::Value;
use shared_events::{CloudEvent, EventData, ReminderDue, TaskEvent};

use crate::pool::DbPool;
use crate::processed;

/// One decoded event handed to a [`Handler`].
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub event: &'a CloudEvent<Value>,
    pub data: &'a EventData,
    /// The topic it came from, without any deployment prefix.
    pub topic: &'a str,
}

impl<'a> Delivery<'a> {
    /// The task event this delivery carries, or a permanent error naming what came instead.
    pub fn task_event(&self) -> Result<&'a TaskEvent, HandlerError> {
        match self.data {
            EventData::Task(event) => Ok(event),
            _ => Err(self.misplaced()),
        }
    }

    /// The due reminder this delivery carries, or a permanent error naming what came instead.
    pub fn reminder(&self) -> Result<&'a ReminderDue, HandlerError> {
        match self.data {
            EventData::Reminder(reminder) => Ok(reminder),
            _ => Err(self.misplaced()),
        }
    }

    fn misplaced(&self) -> HandlerError {
        HandlerError::Permanent(format!(
            "{} does not belong on {}",
            self.event.event_type, self.topic
        ))
    }
}

/// Why an event was not handled.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Try the same event again later (database down, ...); its partition waits.
    #[error("transient: {0}")]
    Transient(String),
    /// The event can never be handled; it is dead-lettered (Dapr: DROP).
    #[error("permanent: {0}")]
    Permanent(String),
}

impl From<DieselError> for HandlerError {
    fn from(e: DieselError) -> Self {
        match &e {
            // The event's data breaks a rule of the schema: it will every time.
            DieselError::DatabaseError(
                DatabaseErrorKind::CheckViolation
                | DatabaseErrorKind::NotNullViolation
                | DatabaseErrorKind::ForeignKeyViolation,
                _,
            ) => HandlerError::Permanent(e.to_string()),
            _ => HandlerError::Transient(e.to_string()),
        }
    }
}

/// What a handler does once its transaction has committed, such as counting the effect in its
/// metrics. Not inside the transaction: a batch that rolls back runs its earlier deliveries
/// again, and what they counted the first time would be counted twice.
pub type AfterCommit = Box<dyn FnOnce() + Send>;

/// The effect of an event, run on the connection of the transaction that records it.
pub trait Handler: Send + Sync {
    /// Whether `delivery` can have an effect at all. One that cannot is acknowledged without a
    /// transaction or a processed-event record: handling it again does nothing either.
    fn wants(&self, _delivery: &Delivery<'_>) -> bool {
        true
    }

    fn handle<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        delivery: Delivery<'a>,
    ) -> BoxFuture<'a, Result<Option<AfterCommit>, HandlerError>>;
}

/// What became of an event that did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// The effect ran and committed with the record.
    Applied,
    /// `consumer` had already handled this event id: nothing ran.
    Duplicate,
    /// [`Handler::wants`] said no: nothing ran, nothing was recorded.
    Ignored,
}

/// What [`handle_batch`] did with a batch, in delivery order.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// One entry per delivery that is finished: handled, or `Err(reason)` when it can never be
    /// (dead-letter it). Safe to acknowledge, in order.
    pub done: Vec<Result<Handled, String>>,
    /// Why the delivery after the finished ones failed transiently; it and the rest are to be
    /// tried again.
    pub transient: Option<String>,
}

/// Run `handler` for `delivery` once per `(consumer, event id)`, in one transaction with the
/// processed-event record. Only when this returns Ok is it safe to acknowledge the event.
pub async fn handle_once(
    pool: &DbPool,
    consumer: &str,
    handler: &dyn Handler,
    delivery: Delivery<'_>,
) -> Result<Handled, HandlerError> {
    let mut outcome = handle_batch(pool, consumer, handler, &[delivery], &|| true).await;
    match (outcome.done.pop(), outcome.transient) {
        (Some(Ok(handled)), _) => Ok(handled),
        (Some(Err(reason)), _) => Err(HandlerError::Permanent(reason)),
        (None, reason) => Err(HandlerError::Transient(reason.unwrap_or_default())),
    }
}

/// [`handle_once`] for consecutive deliveries of one partition, with one transaction for all of
/// them: BEGIN, COMMIT and the commit's WAL flush are paid once per batch, not per event. When
/// one fails, the transaction is rolled back and the ones before it are run again in a
/// transaction of their own; after a permanent failure the batch goes on past it (it is not run
/// again), after a transient one it stops there. `keep_going` is asked before each delivery
/// after the first: once it says no, what is done commits and the rest is left undone.
pub async fn handle_batch(
    pool: &DbPool,
    consumer: &str,
    handler: &dyn Handler,
    deliveries: &[Delivery<'_>],
    keep_going: &(dyn Fn() -> bool + Sync),
) -> BatchOutcome {
    let wanted: Vec<bool> = deliveries.iter().map(|d| handler.wants(d)).collect();
    let mut outcome = BatchOutcome::default();
    if !wanted.contains(&true) {
        outcome.done = vec![Ok(Handled::Ignored); deliveries.len()];
        return outcome;
    }
    let mut conn = match pool.get().await {
        Ok(conn) => conn,
        Err(e) => {
            outcome.transient = Some(format!("database: {e}"));
            return outcome;
        }
    };
    let mut start = 0;
    // The delivery known to fail and how: the next transaction stops before it.
    let mut failed: Option<(usize, HandlerError)> = None;
    while start < deliveries.len() {
        let end = failed.as_ref().map_or(deliveries.len(), |(at, _)| *at);
        if start < end {
            let run = conn
                .transaction::<_, Failed, _>(async |conn| {
                    let mut done = Vec::with_capacity(end - start);
                    let mut after_commit = Vec::new();
                    for at in start..end {
                        if at > start && !keep_going() {
                            break;
                        }
                        done.push(if wanted[at] {
                            let (handled, after) =
                                record_and_handle(conn, consumer, handler, deliveries[at])
                                    .await
                                    .map_err(|error| Failed {
                                        at: Some(at),
                                        error,
                                    })?;
                            after_commit.extend(after);
                            handled
                        } else {
                            Handled::Ignored
                        });
                    }
                    Ok((done, after_commit))
                })
                .await;
            match run {
                Ok((done, after_commit)) => {
                    after_commit.into_iter().for_each(|after| after());
                    let cut = start + done.len() < end;
                    start += done.len();
                    outcome.done.extend(done.into_iter().map(Ok));
                    if cut {
                        return outcome;
                    }
                }
                Err(Failed {
                    at: Some(at),
                    error,
                }) => {
                    failed = Some((at, error));
                    continue;
                }
                Err(Failed {
                    at: None,
                    error: HandlerError::Transient(reason) | HandlerError::Permanent(reason),
                }) => {
                    outcome.transient = Some(reason);
                    return outcome;
                }
            }
        }
        match failed.take() {
            Some((_, HandlerError::Permanent(reason))) => {
                outcome.done.push(Err(reason));
                start += 1;
            }
            Some((_, HandlerError::Transient(reason))) => {
                outcome.transient = Some(reason);
                return outcome;
            }
            None => {}
        }
    }
    outcome
}

/// Which delivery of a batch's transaction failed, and how.
struct Failed {
    /// None: BEGIN or COMMIT, the transaction as a whole.
    at: Option<usize>,
    error: HandlerError,
}

impl From<DieselError> for Failed {
    fn from(e: DieselError) -> Self {
        Failed {
            at: None,
            error: HandlerError::Transient(e.to_string()),
        }
    }
}

async fn record_and_handle(
    conn: &mut AsyncPgConnection,
    consumer: &str,
    handler: &dyn Handler,
    delivery: Delivery<'_>,
) -> Result<(Handled, Option<AfterCommit>), HandlerError> {
    if !processed::first_time(conn, consumer, delivery.event.id).await? {
        return Ok((Handled::Duplicate, None));
    }
    let after = handler.handle(conn, delivery).await?;
    Ok((Handled::Applied, after))
}
