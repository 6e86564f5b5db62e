//! API integration tests: one binary, one module per endpoint group. Each test gets its own
//! database (cloned from a migrated template) and its own port.

mod auth;
mod dapr;
mod errors;
mod events;
mod health;
mod helpers;
mod list;
mod notifications;
mod reminders;
mod route_walk;
mod stream;
mod tasks;
mod web_ui;
