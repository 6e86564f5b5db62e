//! What every TaskFlow service agrees on: topic names, the CloudEvents envelope,
//! the publisher seam (native Kafka or the Dapr sidecar) and the consumer toolkit.

pub mod admin;
pub mod consumer;
pub mod database;
pub mod envelope;
pub mod processed;
pub mod publisher;
pub mod recurrence;
pub mod task;
pub mod telemetry;
pub mod topics;
pub mod worker;

pub use envelope::{CloudEvent, EventData, ReminderDue, TaskChanged, TaskEvent, TaskEventType};
pub use task::{Priority, TaskSnapshot};
