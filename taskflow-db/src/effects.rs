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
    ) -> BoxFuture<'a, Result<(), HandlerError>>;
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

/// Run `handler` for `delivery` once per `(consumer, event id)`, in one transaction with the
/// processed-event record. Only when this returns Ok is it safe to acknowledge the event.
pub async fn handle_once(
    pool: &DbPool,
    consumer: &str,
    handler: &dyn Handler,
    delivery: Delivery<'_>,
) -> Result<Handled, HandlerError> {
    if !handler.wants(&delivery) {
        return Ok(Handled::Ignored);
    }
    let mut conn = pool
        .get()
        .await
        .map_err(|e| HandlerError::Transient(format!("database: {e}")))?;
    conn.transaction::<_, HandlerError, _>(async |conn| {
        if !processed::first_time(conn, consumer, delivery.event.id).await? {
            return Ok(Handled::Duplicate);
        }
        handler.handle(conn, delivery).await?;
        Ok(Handled::Applied)
    })
    .await
}
