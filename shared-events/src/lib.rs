//! The event contract every TaskFlow service agrees on: topic names, the CloudEvents envelope,
//! the versioned event payloads and the recurrence rules. Pure: no I/O.

pub mod envelope;
pub mod recurrence;
pub mod task;
pub mod topics;

pub use envelope::{CloudEvent, EventData, ReminderDue, TaskChanged, TaskEvent, TaskEventType};
pub use task::{Priority, TaskSnapshot};
