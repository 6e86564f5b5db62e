//! The consumer toolkit both workers run on: a `StreamConsumer` whose offsets advance only after
//! the effect is durable, poison messages to a dead-letter topic, and a graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Message, TopicPartitionList};
use serde_json::Value;
use tokio::sync::watch;

use crate::envelope::{CloudEvent, EventData};
use crate::publisher::client_config;
use crate::topics::dead_letter_topic;

/// How long a stopping consumer waits for its last commit and for leaving the group.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub brokers: String,
    pub group_id: String,
    pub topics: Vec<String>,
    /// `cooperative-sticky` for Kafka; `range` against Tansu, whose cooperative protocol misbehaves.
    pub assignment_strategy: String,
    /// Retries of a failing effect wait this long at most between attempts.
    pub max_backoff: Duration,
}

/// Why a handler did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Try the same message again (database down, ...). The partition waits.
    #[error("transient: {0}")]
    Transient(String),
    /// The message can never be handled; it goes to the dead-letter topic.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// One decoded message handed to a [`Handler`].
pub struct Delivery<'a> {
    pub event: &'a CloudEvent<Value>,
    pub data: &'a EventData,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// The effect of a message. It must be idempotent: record the event id with
/// [`crate::processed::first_time`] in the effect's transaction.
pub trait Handler: Send + Sync {
    fn handle<'a>(&'a self, delivery: Delivery<'a>) -> BoxFuture<'a, Result<(), HandlerError>>;
}

/// Counts for metrics and tests.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    pub handled: std::sync::atomic::AtomicU64,
    pub dead_lettered: std::sync::atomic::AtomicU64,
    pub retries: std::sync::atomic::AtomicU64,
    /// Partitions currently assigned.
    pub assigned: std::sync::atomic::AtomicUsize,
}

/// Logs assignments and revocations, and commits stored offsets before partitions go away.
pub struct LoggingContext {
    stats: Arc<ConsumerStats>,
}

impl ClientContext for LoggingContext {}

impl ConsumerContext for LoggingContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = %describe(tpl), "partitions revoked");
                // Offsets stored so far belong to finished effects: hand them over now.
                if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                    tracing::debug!(error = %e, "commit on revoke");
                }
            }
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = %describe(tpl), "partitions assigned")
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, _rebalance: &Rebalance<'_>) {
        let count = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        self.stats
            .assigned
            .store(count, std::sync::atomic::Ordering::Relaxed);
    }
}

fn describe(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}[{}]", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(",")
}

pub struct EventConsumer {
    consumer: StreamConsumer<LoggingContext>,
    dlq: FutureProducer,
    settings: ConsumerSettings,
    pub stats: Arc<ConsumerStats>,
}

impl EventConsumer {
    pub fn new(settings: ConsumerSettings) -> KafkaResult<Self> {
        let stats = Arc::new(ConsumerStats::default());
        let consumer: StreamConsumer<LoggingContext> = client_config(&settings.brokers)
            .set("group.id", &settings.group_id)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            // Offsets are stored by hand, after the effect; auto-commit only ships stored ones.
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "partition.assignment.strategy",
                &settings.assignment_strategy,
            )
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .create_with_context(LoggingContext {
                stats: stats.clone(),
            })?;
        let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        let dlq = client_config(&settings.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()?;
        Ok(EventConsumer {
            consumer,
            dlq,
            settings,
            stats,
        })
    }

    /// Consume until `shutdown` turns true: the message in hand is finished (or left for
    /// redelivery), stored offsets are committed and the group is left, giving up on the last
    /// two after [`CLOSE_TIMEOUT`] when the broker does not answer.
    pub async fn run(self, handler: &dyn Handler, mut shutdown: watch::Receiver<bool>) {
        loop {
            let message = tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => break,
                m = self.consumer.recv() => m,
            };
            match message {
                Ok(m) => {
                    if !self.process(handler, &m, &mut shutdown).await {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "kafka consumer error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        self.close(CLOSE_TIMEOUT).await;
    }

    /// Commit the stored offsets and leave the group (the consumer's drop closes it), off the
    /// async runtime. Against an unreachable broker both block for many seconds (10 s each with
    /// these settings), which would break the shutdown budget, so wait at most `timeout`: what
    /// was not committed is redelivered to the next owner and skipped as a duplicate there.
    async fn close(self, timeout: Duration) {
        let group = self.settings.group_id.clone();
        let (done, closed) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("kafka-consumer-close".into())
            .spawn(move || {
                if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
                    // NoOffset: nothing stored since the last (auto) commit.
                    tracing::debug!(error = %e, "final commit");
                }
                self.consumer.unsubscribe();
                drop(self);
                let _ = done.send(());
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not close the consumer");
            return;
        }
        match tokio::time::timeout(timeout, closed).await {
            Ok(_) => tracing::info!(%group, "consumer stopped"),
            Err(_) => tracing::warn!(
                %group,
                ?timeout,
                "consumer stopped without confirming its last commit and leaving the group; \
                 the broker did not answer"
            ),
        }
    }

    /// Handle one message; false when shutdown interrupted it before the effect was durable.
    async fn process(
        &self,
        handler: &dyn Handler,
        m: &BorrowedMessage<'_>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let (event, data) = match CloudEvent::decode(m.payload()) {
            Ok(decoded) => decoded,
            Err(e) => return self.dead_letter(m, &e.to_string(), shutdown).await,
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            let delivery = Delivery {
                event: &event,
                data: &data,
                topic: m.topic(),
                partition: m.partition(),
                offset: m.offset(),
            };
            match handler.handle(delivery).await {
                Ok(()) => {
                    self.stats
                        .handled
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.store(m);
                    return true;
                }
                Err(HandlerError::Permanent(reason)) => {
                    return self.dead_letter(m, &reason, shutdown).await
                }
                Err(HandlerError::Transient(reason)) => {
                    self.stats
                        .retries
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(event = %event.id, %reason, ?backoff, "effect failed; retrying");
                    tokio::select! {
                        _ = shutdown.wait_for(|stop| *stop) => return false,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.settings.max_backoff);
                }
            }
        }
    }

    /// Copy the message to `<topic>.dlq` with the reason in headers, then move on.
    async fn dead_letter(
        &self,
        m: &BorrowedMessage<'_>,
        reason: &str,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let topic = dead_letter_topic(m.topic());
        let partition = m.partition().to_string();
        let offset = m.offset().to_string();
        let mut headers = OwnedHeaders::new();
        if let Some(original) = m.headers() {
            for h in original.iter() {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        headers = headers
            .insert(Header {
                key: "dlq_error",
                value: Some(reason),
            })
            .insert(Header {
                key: "dlq_topic",
                value: Some(m.topic()),
            })
            .insert(Header {
                key: "dlq_partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "dlq_offset",
                value: Some(&offset),
            });
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut record = FutureRecord::<[u8], [u8]>::to(&topic).headers(headers.clone());
            if let Some(key) = m.key() {
                record = record.key(key);
            }
            if let Some(payload) = m.payload() {
                record = record.payload(payload);
            }
            match self.dlq.send(record, Duration::from_secs(5)).await {
                Ok(_) => {
                    tracing::warn!(topic = m.topic(), partition = m.partition(), offset = m.offset(), %reason, "message dead-lettered");
                    self.stats
                        .dead_lettered
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.store(m);
                    return true;
                }
                Err((e, _)) => {
                    tracing::warn!(error = %e, "dead-letter publish failed; retrying");
                    tokio::select! {
                        _ = shutdown.wait_for(|stop| *stop) => return false,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.settings.max_backoff);
                }
            }
        }
    }

    fn store(&self, m: &BorrowedMessage<'_>) {
        if let Err(e) = self.consumer.store_offset_from_message(m) {
            // Only fails when the partition was revoked meanwhile; the next owner redelivers.
            tracing::warn!(error = %e, "storing offset failed");
        }
    }
}

/// A receiver that turns true on SIGTERM or Ctrl-C. The handlers are installed before this
/// returns, so call it first thing: from then on a SIGTERM is never the default, fatal action.
pub fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        let mut interrupt = signal(SignalKind::interrupt()).expect("install SIGINT handler");
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
            tracing::info!("shutdown requested");
            let _ = tx.send(true);
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested");
        let _ = tx.send(true);
    });
    rx
}
