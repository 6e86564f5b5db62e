//! Reads `task-updates` into the hub: one consumer per backend process, assigned the topic's
//! partition by hand rather than joining a group, so every replica sees every notice (a shared
//! group would give each notice to one replica only) and starts reading at once (no group join).
//! With no connection open for a while it drops the consumer until the next one
//! ([`Hub::try_rest`]).

use std::sync::Arc;
use std::time::Duration;

use prometheus::IntGauge;
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
/// How often a reading feed asks the hub whether it may rest.
const REST_CHECK: Duration = Duration::from_millis(250);

/// Why reading stopped.
enum Stopped {
    /// No connection for the rest time: wait for the next one.
    Rested,
    Failed(anyhow::Error),
}

/// Feed `hub` from `topic` until `stop` turns true; reconnects with backoff while the broker
/// is away (the API serves meanwhile; the stream only announces no position). Rests after
/// `rest_after` without connections (zero: never); `reading` is 1 while it reads.
pub async fn run(
    hub: Arc<Hub>,
    brokers: String,
    topic: String,
    rest_after: Duration,
    reading: IntGauge,
    mut stop: watch::Receiver<bool>,
) {
    let mut retry = RETRY_MIN;
    loop {
        let attempt = async {
            match connect(&hub, &brokers, &topic).await {
                Ok((consumer, span)) => {
                    retry = RETRY_MIN;
                    reading.set(1);
                    let stopped = read(&hub, &consumer, span, rest_after).await;
                    reading.set(0);
                    stopped
                }
                Err(e) => Stopped::Failed(e),
            }
        };
        let stopped = tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            stopped = attempt => stopped,
        };
        let failed = match stopped {
            Stopped::Failed(e) => e,
            Stopped::Rested => {
                tracing::info!(topic, "live stream feed resting: no connections");
                tokio::select! {
                    _ = stop.wait_for(|stopped| *stopped) => return,
                    () = hub.wanted() => continue,
                }
            }
        };
        tracing::warn!(error = %failed, topic, retry_in = ?retry, "live stream feed interrupted");
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            () = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(RETRY_MAX);
    }
}

/// A consumer assigned where the hub reads on from ([`Hub::resume_offset`]), after telling the
/// hub where that is; with that offset and the partition's end, up to which it catches up.
async fn connect(
    hub: &Hub,
    brokers: &str,
    topic: &str,
) -> anyhow::Result<(StreamConsumer, (i64, i64))> {
    let consumer: StreamConsumer = config(brokers).create()?;
    let (brokers, topic_name) = (brokers.to_owned(), topic.to_owned());
    // librdkafka's metadata calls block: off the async workers.
    let (partitions, (low, high)) = tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = config(&brokers).create()?;
        let metadata = client.fetch_metadata(Some(&topic_name), Duration::from_secs(5))?;
        let partitions = metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len());
        let watermarks = client.fetch_watermarks(&topic_name, PARTITION, Duration::from_secs(5))?;
        anyhow::Ok((partitions, watermarks))
    })
    .await??;
    if partitions != 1 {
        // The ids are one partition's offsets; more partitions would need a vector of them.
        anyhow::bail!("{topic} has {partitions} partitions; the live stream needs exactly 1");
    }
    let next = hub.resume_offset(low, high);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, PARTITION, Offset::Offset(next))?;
    consumer.assign(&tpl)?;
    hub.start(next);
    tracing::info!(topic, offset = next, end = high, "live stream feed reading");
    Ok((consumer, (next, high)))
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

/// Hand every task notice to the hub, reading from `next` and telling the hub once the offsets
/// before `end` are read (`task-updates` has no transaction markers, so the last one is a
/// message); returns when the hub lets the feed rest, or with an error worth reconnecting for.
async fn read(
    hub: &Hub,
    consumer: &StreamConsumer,
    (next, end): (i64, i64),
    rest_after: Duration,
) -> Stopped {
    let mut behind = next < end;
    if !behind {
        hub.caught_up();
    }
    let mut check = tokio::time::interval(REST_CHECK);
    loop {
        let message = tokio::select! {
            received = consumer.recv() => match received {
                Ok(message) => message,
                Err(e) => return Stopped::Failed(e.into()),
            },
            _ = check.tick() => {
                if !behind && hub.try_rest(rest_after) {
                    return Stopped::Rested;
                }
                continue;
            }
        };
        if behind && message.offset() + 1 >= end {
            behind = false;
            hub.caught_up();
        }
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
