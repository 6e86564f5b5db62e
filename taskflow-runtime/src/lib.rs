//! What every TaskFlow service runs on: settings shared by all of them (with their defaults in
//! `config/defaults.env`), structured logs, the shutdown signal, and the workers' run loop with
//! `/health`, `/ready` and `/metrics`.

pub mod config;
pub mod dapr;
pub mod lifecycle;
pub mod secrets;
pub mod telemetry;
pub mod worker;
