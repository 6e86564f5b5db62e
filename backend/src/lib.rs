//! TaskFlow backend: the task API on PostgreSQL and the outbox relay that publishes its events.

pub mod auth;
pub mod configuration;
pub mod create_batches;
pub mod domain;
pub mod error;
pub mod idempotency;
pub mod listing;
pub mod metrics;
pub mod openapi;
pub mod outbox;
pub mod read_pipeline;
pub mod routes;
pub mod startup;
pub mod stream;
pub mod tasks;
pub mod worker_pools;
