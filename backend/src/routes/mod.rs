//! HTTP routes: one module per resource.

pub mod events;
pub mod health;
pub mod notifications;
pub mod preferences;
pub mod recurrence;
pub mod reminders;
pub mod stream;
pub mod tasks;
pub mod ui;
