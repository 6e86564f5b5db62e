//! Kafka plumbing shared by the services: topic creation, the publisher seam (native Kafka or
//! the Dapr sidecar) and the consumer that drives `taskflow_db::effects` handlers.

pub mod admin;
pub mod consumer;
pub mod publisher;
