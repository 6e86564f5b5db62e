//! Reads `task-updates` into the hub: one consumer per backend process, assigned the topic's
//! partition by hand rather than joining a group, so every replica sees every notice (a shared
//! group would give each notice to one replica only) and starts reading at once (no group join).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use shared_events::{CloudEvent, EventData};
use tokio::sync::watch;

use super::hub::{Hub, Notice};

/// The partition the stream reads; its offsets are the event ids (see `hub`).
const PARTITION: i32 = 0;
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Feed `hub` from `topic` until `stop` turns true; reconnects with backoff while the broker
/// is away (the API serves meanwhile; the stream only announces no position).
pub async fn run(hub: Arc<Hub>, brokers: String, topic: String, mut stop: watch::Receiver<bool>) {
    let mut retry = RETRY_MIN;
    loop {
        let attempt = async {
            match connect(&hub, &brokers, &topic).await {
                Ok(consumer) => {
                    retry = RETRY_MIN;
                    read(&hub, &consumer).await
                }
                Err(e) => e,
            }
        };
        let failed = tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            failed = attempt => failed,
        };
        tracing::warn!(error = %failed, topic, retry_in = ?retry, "live stream feed interrupted");
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            () = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(RETRY_MAX);
    }
}

/// A consumer assigned at the partition's end, after telling the hub where that is.
async fn connect(hub: &Hub, brokers: &str, topic: &str) -> anyhow::Result<StreamConsumer> {
    let consumer: StreamConsumer = config(brokers).create()?;
    let (brokers, topic_name) = (brokers.to_owned(), topic.to_owned());
    // librdkafka's metadata calls block: off the async workers.
    let (partitions, high) = tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = config(&brokers).create()?;
        let metadata = client.fetch_metadata(Some(&topic_name), Duration::from_secs(5))?;
        let partitions = metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len());
        let (_, high) = client.fetch_watermarks(&topic_name, PARTITION, Duration::from_secs(5))?;
        anyhow::Ok((partitions, high))
    })
    .await??;
    if partitions != 1 {
        // The ids are one partition's offsets; more partitions would need a vector of them.
        anyhow::bail!("{topic} has {partitions} partitions; the live stream needs exactly 1");
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, PARTITION, Offset::Offset(high))?;
    consumer.assign(&tpl)?;
    hub.start(high);
    tracing::info!(topic, offset = high, "live stream feed reading");
    Ok(consumer)
}

fn config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        // Required by librdkafka; nothing is committed and no group is joined (assign()).
        .set("group.id", "taskflow-backend-stream")
        .set("enable.auto.commit", "false")
        // After the topic was recreated the stored position is past its end: read it all.
        .set("auto.offset.reset", "earliest")
        // Tansu holds an idle fetch for the whole wait: keep notices quick.
        .set("fetch.wait.max.ms", "100");
    config
}

/// Hand every task notice to the hub; returns only with an error worth reconnecting for.
async fn read(hub: &Hub, consumer: &StreamConsumer) -> anyhow::Error {
    loop {
        let message = match consumer.recv().await {
            Ok(message) => message,
            Err(e) => return e.into(),
        };
        match CloudEvent::decode(message.payload()) {
            Ok((_, EventData::Changed(changed))) => hub.publish(Notice {
                offset: message.offset(),
                user_id: changed.user_id.clone(),
                // A derived Serialize of plain fields: cannot fail.
                data: serde_json::to_string(&changed).unwrap_or_default(),
            }),
            // Not for live clients; the topic's other readers deal with them.
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, offset = message.offset(), "undecodable notice"),
        }
    }
}
