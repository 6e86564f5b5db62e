//! Recurrence worker: reacts to `task-events`. When an occurrence of a recurring series is
//! completed, it creates the next occurrence, exactly once, in the transaction that records the
//! event as handled: the new task row, the unique `(series_id, occurrence)` guard, and the
//! outbox row of its `created` event commit together or not at all.

pub mod recurrence;

pub use recurrence::RecurrenceHandler;
