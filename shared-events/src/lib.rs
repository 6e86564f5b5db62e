//! What every TaskFlow service agrees on: topic names, the CloudEvents envelope,
//! the publisher seam (native Kafka or the Dapr sidecar) and the consumer toolkit.

pub mod envelope;
pub mod recurrence;
pub mod task;
pub mod topics;

pub use envelope::{CloudEvent, EventData, ReminderDue, TaskChanged, TaskEvent, TaskEventType};
pub use task::{Priority, TaskSnapshot};
