//! The event contract every TaskFlow service agrees on: topic names, the CloudEvents envelope,
//! the versioned event payloads and the recurrence rules. Pure: no I/O.

pub mod envelope;
#[cfg(any(test, feature = "fuzzing"))]
pub mod input_checks;
pub mod recurrence;
pub mod task;
pub mod topics;

pub use envelope::{CloudEvent, EventData, ReminderDue, TaskChanged, TaskEvent, TaskEventType};
pub use task::{Priority, TaskSnapshot};
