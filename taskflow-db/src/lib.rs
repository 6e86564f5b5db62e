//! The one database every TaskFlow service shares. This crate owns its whole migration history,
//! the diesel schema and every query more than one service runs: the task store, the outbox
//! writer, the processed-events record of idempotent consumers, the job queue, reminders, notifications and the key-value store of preferences.

pub mod cte;
pub mod effects;
pub mod history;
pub mod jobs;
pub mod kv;
pub mod migrations;
pub mod notifications;
pub mod outbox;
pub mod pool;
pub mod positional;
pub mod preferences;
pub mod prepared;
pub mod processed;
pub mod reminders;
pub mod schema;
pub mod tasks;

pub use pool::{ping, pool, DbPool};
