//! The one database every TaskFlow service shares. This crate owns its whole migration history,
//! the diesel schema and every query more than one service runs: the task store, the outbox
//! writer, the processed-events record of idempotent consumers, the job queue and reminders.

pub mod effects;
pub mod jobs;
pub mod migrations;
pub mod outbox;
pub mod pool;
pub mod processed;
pub mod reminders;
pub mod schema;
pub mod tasks;

pub use pool::{ping, pool, DbPool};
