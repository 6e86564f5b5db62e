//! The publisher seam (the Dapr pub/sub adapter): one trait, two implementations that put the
//! same CloudEvent on the same topic and partition.
//! - [`KafkaPublisher`]: librdkafka, idempotent, with Sarama's (Dapr's) key placement.
//! - [`DaprPublisher`]: the sidecar's HTTP publish API.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::task::AtomicWaker;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use reqwest::StatusCode;

use shared_events::envelope::CLOUDEVENTS_JSON;

/// One message to publish: a structured CloudEvent and where it goes.
#[derive(Debug, Clone, Copy)]
pub struct Outbound<'a> {
    pub topic: &'a str,
    /// The partition key: a task's series id.
    pub key: &'a str,
    /// The CloudEvent JSON.
    pub payload: &'a [u8],
    /// W3C trace context, also a plain Kafka header for tracing tools.
    pub traceparent: Option<&'a str>,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Worth retrying: broker or sidecar unavailable, timeouts, 5xx.
    #[error("{0}")]
    Unavailable(String),
    /// Retrying will not help until someone changes configuration (Dapr 403/404).
    #[error("{0}")]
    Misconfigured(String),
}

/// Where events go. Implementations must be safe to call concurrently.
pub trait Publisher: Send + Sync {
    /// Publish `messages` together, in no particular order between them: one result each, in
    /// their order, each Ok only once the broker (or sidecar) has accepted that message. A
    /// caller that needs two messages in order publishes the second after the first's result.
    fn publish<'a>(
        &'a self,
        messages: &'a [Outbound<'a>],
    ) -> BoxFuture<'a, Vec<Result<(), PublishError>>>;

    /// Whether the path to the broker works right now.
    fn check(&self) -> BoxFuture<'_, Result<(), PublishError>>;

    /// A short name for logs and metrics.
    fn name(&self) -> &'static str;
}

/// Settings every rdkafka client here shares.
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", "taskflow")
        .set("socket.keepalive.enable", "true");
    config
}

/// The Kafka header that marks a structured-mode CloudEvent (CloudEvents Kafka protocol binding).
/// No header starts with `ce_`: that prefix means binary mode to CloudEvents readers.
pub const CONTENT_TYPE_HEADER: &str = "content-type";

/// The headers that accompany each message.
pub fn headers(message: &Outbound<'_>) -> OwnedHeaders {
    let headers = OwnedHeaders::new_with_capacity(2).insert(Header {
        key: CONTENT_TYPE_HEADER,
        value: Some(CLOUDEVENTS_JSON),
    });
    match message.traceparent {
        Some(tp) => headers.insert(Header {
            key: "traceparent",
            value: Some(tp),
        }),
        None => headers,
    }
}

/// The delivery reports of messages published together ([`KafkaPublisher::publish`]): the
/// publisher is woken once, by the last report, instead of once per message through a channel
/// of its own (rdkafka's `FutureProducer`): the relay's runtime spent 7.1 µs of CPU a create
/// instead of 10.0 (README, Performance, "2026-12-06, evening").
struct Round {
    results: Mutex<Vec<Result<(), KafkaError>>>,
    /// Reports still to come.
    remaining: AtomicUsize,
    waker: AtomicWaker,
}

impl Round {
    fn new(messages: usize) -> Round {
        Round {
            // Every slot is overwritten by its report before the round is read.
            results: Mutex::new((0..messages).map(|_| Ok(())).collect()),
            remaining: AtomicUsize::new(messages),
            waker: AtomicWaker::new(),
        }
    }

    fn report(&self, index: usize, result: Result<(), KafkaError>) {
        self.results.lock().unwrap_or_else(PoisonError::into_inner)[index] = result;
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.waker.wake();
        }
    }

    /// Every report, once the last is in.
    async fn finished(&self) -> Vec<Result<(), KafkaError>> {
        futures::future::poll_fn(|cx| {
            self.waker.register(cx.waker());
            if self.remaining.load(Ordering::Acquire) == 0 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        std::mem::take(&mut *self.results.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// One message's place in its [`Round`], handed to librdkafka with the message.
struct Slot {
    round: Arc<Round>,
    index: usize,
    reported: bool,
}

impl Drop for Slot {
    /// A message dropped without a report (not queued, or its producer destroyed) still
    /// finishes its round.
    fn drop(&mut self) {
        if !self.reported {
            self.round.report(self.index, Err(KafkaError::Canceled));
        }
    }
}

/// Sends each delivery report to the message's round.
struct Reports;

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Box<Slot>;

    fn delivery(&self, report: &DeliveryResult<'_>, mut slot: Box<Slot>) {
        let result = match report {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.clone()),
        };
        slot.round.report(slot.index, result);
        slot.reported = true;
    }
}

type KafkaProducer = ThreadedProducer<Reports>;

pub struct KafkaPublisher {
    config: ClientConfig,
    producer: std::sync::RwLock<KafkaProducer>,
}

impl KafkaPublisher {
    /// An idempotent producer (acks=all, no duplicates or reordering from its own retries) whose
    /// `fnv1a_random` partitioner places a key where Dapr's Sarama producer would.
    /// `message_timeout` bounds how long one publish may wait for an unreachable broker;
    /// `compression` is librdkafka's `compression.type` (consumers read any of them).
    pub fn new(
        brokers: &str,
        message_timeout: Duration,
        compression: &str,
    ) -> Result<Self, KafkaError> {
        let mut config = client_config(brokers);
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", compression)
            .set("partitioner", "fnv1a_random")
            // The relay hands over a whole claimed batch at once, so waiting for more buys
            // little batching; 5 ms was most of an idle relay pass (6.7 ms to acknowledgement).
            .set("linger.ms", "1")
            .set(
                "message.timeout.ms",
                message_timeout.as_millis().to_string(),
            );
        let producer = config.create_with_context(Reports)?;
        Ok(KafkaPublisher {
            config,
            producer: std::sync::RwLock::new(producer),
        })
    }

    fn producer(&self) -> KafkaProducer {
        self.producer
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Start a new producer when `failed` (the one that just failed with `error`) can publish no
    /// more: an idempotent producer that hit a fatal error (its sequence state no longer matches
    /// the broker's) refuses every later message, and one whose producer id the broker fences
    /// is refused by the broker. What failed stays in the outbox and is published again by the
    /// new producer, under a new producer id.
    fn replace_if_broken(&self, failed: &KafkaProducer, error: &KafkaError) {
        let Some(why) = broken(failed, error) else {
            return;
        };
        let mut current = self
            .producer
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.client().native_ptr() != failed.client().native_ptr() {
            return; // another publish already replaced it
        }
        match self.config.create_with_context(Reports) {
            Ok(fresh) => {
                tracing::warn!(%why, "Kafka producer can publish no more; replaced it");
                let broken = std::mem::replace(&mut *current, fresh);
                // Destroying a client waits on librdkafka's threads: not on the async runtime.
                std::thread::spawn(move || drop(broken));
            }
            Err(e) => {
                tracing::error!(%why, error = %e, "Kafka producer can publish no more and could not be replaced")
            }
        }
    }
}

/// Why `producer` can publish no more after `error`, if it cannot.
///
/// Fencing is not fatal to librdkafka: after a broker stall longer than `message.timeout.ms` it
/// bumps the producer epoch, Tansu answers every later produce with PRODUCER_FENCED, and
/// librdkafka bumps again, without end (seen: a relay stuck for good until restarted).
fn broken(producer: &KafkaProducer, error: &KafkaError) -> Option<String> {
    if let Some((code, reason)) = producer.client().fatal_error() {
        return Some(format!("fatal error {code:?}: {reason}"));
    }
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch) => {
            Some(error.to_string())
        }
        _ => None,
    }
}

impl Publisher for KafkaPublisher {
    fn publish<'a>(
        &'a self,
        messages: &'a [Outbound<'a>],
    ) -> BoxFuture<'a, Vec<Result<(), PublishError>>> {
        Box::pin(async move {
            let producer = self.producer();
            let round = Arc::new(Round::new(messages.len()));
            for (index, message) in messages.iter().enumerate() {
                let slot = Box::new(Slot {
                    round: round.clone(),
                    index,
                    reported: false,
                });
                let record = BaseRecord::with_opaque_to(message.topic, slot)
                    .key(message.key)
                    .payload(message.payload)
                    .headers(headers(message));
                // One not queued (a full queue, a fatal error) is reported by its slot's drop;
                // the pass that published it retries it later.
                if let Err((e, _)) = producer.send(record) {
                    tracing::debug!(error = %e, "Kafka producer did not queue a message");
                }
            }
            let results = round.finished().await;
            results
                .into_iter()
                .map(|result| {
                    result.map_err(|e| {
                        self.replace_if_broken(&producer, &e);
                        PublishError::Unavailable(format!("kafka: {e}"))
                    })
                })
                .collect()
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), PublishError>> {
        Box::pin(async move {
            let producer = self.producer();
            tokio::task::spawn_blocking(move || {
                producer
                    .client()
                    .fetch_metadata(None, Duration::from_secs(3))
                    .map(|_| ())
                    .map_err(|e| PublishError::Unavailable(format!("kafka: {e}")))
            })
            .await
            .map_err(|e| PublishError::Unavailable(e.to_string()))?
        })
    }

    fn name(&self) -> &'static str {
        "kafka"
    }
}

pub struct DaprPublisher {
    client: reqwest::Client,
    endpoint: String,
    pubsub: String,
}

impl DaprPublisher {
    /// `endpoint` is the sidecar's HTTP address, e.g. `http://127.0.0.1:3500`; one call may
    /// take at most `timeout`.
    pub fn new(endpoint: &str, pubsub: &str, timeout: Duration) -> Result<Self, reqwest::Error> {
        Ok(DaprPublisher {
            client: reqwest::Client::builder().timeout(timeout).build()?,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            pubsub: pubsub.to_owned(),
        })
    }

    /// Poll `/v1.0/healthz/outbound` until the sidecar can publish or `timeout` passes.
    pub async fn wait_until_ready(&self, timeout: Duration) -> Result<(), PublishError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let answer = tokio::time::timeout_at(deadline, self.check())
                .await
                .unwrap_or_else(|_| {
                    Err(PublishError::Unavailable(format!(
                        "dapr sidecar not ready within {timeout:?}"
                    )))
                });
            match answer {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    async fn publish_one(&self, message: &Outbound<'_>) -> Result<(), PublishError> {
        let url = format!(
            "{}/v1.0/publish/{}/{}",
            self.endpoint, self.pubsub, message.topic
        );
        // metadata.X other than Dapr's own keys become Kafka headers, so the headers match
        // what the native path sets.
        let mut query = vec![
            ("metadata.partitionKey", message.key),
            ("metadata.content-type", CLOUDEVENTS_JSON),
        ];
        if let Some(tp) = message.traceparent {
            query.push(("metadata.traceparent", tp));
        }
        let response = self
            .client
            .post(&url)
            .query(&query)
            .header(reqwest::header::CONTENT_TYPE, CLOUDEVENTS_JSON)
            .body(message.payload.to_vec())
            .send()
            .await
            .map_err(|e| PublishError::Unavailable(format!("dapr sidecar: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        let detail = format!(
            "dapr publish to {} returned {status}: {body}",
            message.topic
        );
        // 4xx: the sidecar refused this request (403 access control, 404 unknown pub/sub or
        // topic, ...), which only a configuration change fixes; 5xx: it could not deliver.
        if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
            Err(PublishError::Misconfigured(detail))
        } else {
            Err(PublishError::Unavailable(detail))
        }
    }
}

impl Publisher for DaprPublisher {
    /// One publish request each, all at once.
    fn publish<'a>(
        &'a self,
        messages: &'a [Outbound<'a>],
    ) -> BoxFuture<'a, Vec<Result<(), PublishError>>> {
        Box::pin(futures::future::join_all(
            messages.iter().map(|message| self.publish_one(message)),
        ))
    }

    fn check(&self) -> BoxFuture<'_, Result<(), PublishError>> {
        Box::pin(async move {
            let url = format!("{}/v1.0/healthz/outbound", self.endpoint);
            match self.client.get(&url).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(PublishError::Unavailable(format!(
                    "dapr sidecar outbound health: {}",
                    r.status()
                ))),
                Err(e) => Err(PublishError::Unavailable(format!("dapr sidecar: {e}"))),
            }
        })
    }

    fn name(&self) -> &'static str {
        "dapr"
    }
}
