//! HTTP routes: one module per resource.

pub mod events;
pub mod health;
pub mod notifications;
pub mod preferences;
pub mod reminders;
pub mod tasks;
