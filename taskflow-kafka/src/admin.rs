//! Topic creation through the Kafka admin API.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::publisher::client_config;
use shared_events::topics::TopicSpec;

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("kafka admin: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("creating topic {topic}: {code}")]
    Create {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("topic {topic} has {actual} partitions but needs at least {wanted}; add partitions (they can grow, never shrink)")]
    TooFewPartitions {
        topic: String,
        actual: usize,
        wanted: i32,
    },
    #[error("topic {0} is missing from the cluster metadata")]
    Missing(String),
}

/// Create each topic (named with `prefix` in front) that is missing; fail if an existing one has
/// fewer partitions than wanted.
pub async fn ensure_topics(
    brokers: &str,
    topics: &[TopicSpec],
    replication: i32,
    prefix: &str,
) -> Result<(), TopicError> {
    let admin: AdminClient<DefaultClientContext> = client_config(brokers).create()?;
    let names: Vec<String> = topics
        .iter()
        .map(|t| format!("{prefix}{}", t.name))
        .collect();
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .zip(&names)
        .map(|(t, name)| NewTopic::new(name, t.partitions, TopicReplication::Fixed(replication)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new, &options).await? {
        match result {
            Ok(topic) => tracing::info!(%topic, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(TopicError::Create { topic, code }),
        }
    }
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))?;
    for (spec, name) in topics.iter().zip(&names) {
        let topic = metadata
            .topics()
            .iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| TopicError::Missing(name.clone()))?;
        let actual = topic.partitions().len();
        if (actual as i32) < spec.partitions {
            return Err(TopicError::TooFewPartitions {
                topic: name.clone(),
                actual,
                wanted: spec.partitions,
            });
        }
    }
    Ok(())
}
