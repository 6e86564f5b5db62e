//! The consumer both workers run on. Each assigned partition is handled by its own task, in
//! offset order, so one slow or failing key holds up only its partition. The messages waiting
//! in a partition go through [`taskflow_db::effects::handle_batch`] together (effects and
//! processed-event records in one transaction) and their offsets are stored only after that
//! committed; auto-commit ships stored offsets. A transient failure pauses the partition and retries it with capped backoff while
//! the consumer keeps polling, so the member never exceeds `max.poll.interval.ms` and stays in
//! its group. Undecodable and permanently failing messages go to `<topic>.dlq` with the reason.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Message, TopicPartitionList};
use shared_events::topics::dead_letter_topic;
use shared_events::CloudEvent;
use taskflow_db::effects::{handle_batch, Delivery, Handled, Handler};
use taskflow_db::DbPool;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::publisher::client_config;

/// How long a stopping consumer waits for its last commit and for leaving the group.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stopping consumer lets its partitions finish the message in hand.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(4);
/// Fetching of a partition stops while this many of its messages wait, and resumes at
/// [`RESUME_BELOW`]: memory stays bounded however slow a partition is.
const PAUSE_AT: usize = 1_000;
const RESUME_BELOW: usize = 100;
/// librdkafka's own prefetch, in KiB, for all partitions of the consumer together: still a
/// third of a second of the recurrence worker's handling.
const PREFETCH_KBYTES: &str = "512";
/// How often the main loop looks at flow control and revocations when no message arrives; it
/// also polls the consumer at least this often, which keeps the member in its group.
const TICK: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub brokers: String,
    pub group_id: String,
    /// Topics as the system names them (`task-events`); [`ConsumerSettings::topic_prefix`] is put
    /// in front on the broker.
    pub topics: Vec<String>,
    pub topic_prefix: String,
    pub assignment_strategy: String,
    /// Retries of a failing effect wait this long at most between attempts.
    pub max_backoff: Duration,
    pub session_timeout: Duration,
    pub max_poll_interval: Duration,
    /// At most this many waiting messages of a partition are handled in one transaction.
    pub batch_size: usize,
    /// librdkafka's `fetch.wait.max.ms`: how long the broker may hold a fetch that has no data.
    /// Kafka answers as soon as data arrives, so this only sets the idle fetch rate; Tansu holds
    /// every fetch for the whole wait, so there it is up to this much latency per event (not
    /// lower by default: at 25 ms Tansu stayed 2-3 times slower for every client afterwards).
    pub fetch_wait: Duration,
}

impl ConsumerSettings {
    /// The defaults for a group reading `topics`.
    pub fn new(brokers: &str, group_id: &str, topics: &[&str]) -> Self {
        ConsumerSettings {
            brokers: brokers.to_owned(),
            group_id: group_id.to_owned(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            topic_prefix: String::new(),
            assignment_strategy: "cooperative-sticky".to_owned(),
            max_backoff: Duration::from_secs(30),
            session_timeout: Duration::from_secs(10),
            max_poll_interval: Duration::from_secs(300),
            batch_size: 100,
            fetch_wait: Duration::from_millis(100),
        }
    }

    fn broker_topics(&self) -> Vec<String> {
        self.topics
            .iter()
            .map(|t| format!("{}{t}", self.topic_prefix))
            .collect()
    }
}

/// The `outcome` label values of `taskflow_consumer_messages_total`.
pub const OUTCOMES: [&str; 5] = [
    "handled",
    "duplicate",
    "ignored",
    "dead_lettered",
    "retried",
];

/// The consumer's Prometheus metrics.
#[derive(Clone)]
pub struct ConsumerMetrics {
    /// Messages by topic and outcome: handled, duplicate, ignored, dead_lettered, retried.
    pub messages: IntCounterVec,
    pub assigned: IntGauge,
    /// Partitions taken away by rebalances: stays 0 while nothing joins or leaves the group.
    pub revoked: IntCounter,
    /// Messages not yet handled, per partition: from the partition's end (or the last offset
    /// seen, when the broker under-reports its end) to the committed offset.
    pub lag: IntGaugeVec,
    /// From the event's `time` to the commit of its effect.
    pub processing: HistogramVec,
}

impl ConsumerMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = ConsumerMetrics {
            messages: IntCounterVec::new(
                Opts::new(
                    "taskflow_consumer_messages_total",
                    "Consumed messages by topic and outcome (handled, duplicate, ignored, dead_lettered, retried)",
                ),
                &["topic", "outcome"],
            )?,
            assigned: IntGauge::new(
                "taskflow_consumer_assigned_partitions",
                "Partitions assigned to this member",
            )?,
            revoked: IntCounter::new(
                "taskflow_consumer_partitions_revoked_total",
                "Partitions taken away from this member by rebalances",
            )?,
            lag: IntGaugeVec::new(
                Opts::new(
                    "taskflow_consumer_lag",
                    "Messages not yet handled per assigned partition",
                ),
                &["topic", "partition"],
            )?,
            processing: HistogramVec::new(
                HistogramOpts::new(
                    "taskflow_consumer_processing_seconds",
                    "From an event's time to the commit of its effect",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                ]),
                &["topic"],
            )?,
        };
        registry.register(Box::new(metrics.messages.clone()))?;
        registry.register(Box::new(metrics.assigned.clone()))?;
        registry.register(Box::new(metrics.revoked.clone()))?;
        registry.register(Box::new(metrics.lag.clone()))?;
        registry.register(Box::new(metrics.processing.clone()))?;
        Ok(metrics)
    }

    /// How many messages of `topic` ended with `outcome`.
    pub fn count(&self, topic: &str, outcome: &str) -> u64 {
        self.messages.with_label_values(&[topic, outcome]).get()
    }
}

/// Logs rebalances, commits stored offsets before partitions go away, remembers revoked
/// partitions for the main loop, and turns librdkafka's statistics into the lag gauge.
pub struct ConsumerEvents {
    metrics: ConsumerMetrics,
    revoked: Mutex<Vec<(String, i32)>>,
}

impl ClientContext for ConsumerEvents {
    fn stats(&self, statistics: Statistics) {
        self.metrics.lag.reset();
        for (topic, t) in &statistics.topics {
            for (id, p) in &t.partitions {
                if *id < 0 || !p.desired {
                    continue;
                }
                let end = p.hi_offset.max(p.next_offset).max(p.app_offset);
                let start = if p.committed_offset >= 0 {
                    p.committed_offset
                } else {
                    p.lo_offset.max(0)
                };
                self.metrics
                    .lag
                    .with_label_values(&[topic.as_str(), &id.to_string()])
                    .set((end - start).max(0));
            }
        }
    }
}

impl ConsumerContext for ConsumerEvents {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = %describe(tpl), "partitions revoked");
                self.metrics.revoked.inc_by(tpl.count() as u64);
                if let Ok(mut revoked) = self.revoked.lock() {
                    revoked.extend(
                        tpl.elements()
                            .iter()
                            .map(|e| (e.topic().to_owned(), e.partition())),
                    );
                }
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
        self.metrics.assigned.set(count as i64);
    }
}

fn describe(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}[{}]", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(",")
}

/// What the partition tasks share.
struct Shared {
    consumer: StreamConsumer<ConsumerEvents>,
    dlq: FutureProducer,
    pool: DbPool,
    handler: Arc<dyn Handler>,
    settings: ConsumerSettings,
    metrics: ConsumerMetrics,
}

/// A partition's task as the main loop sees it.
struct Partition {
    messages: mpsc::UnboundedSender<OwnedMessage>,
    state: Arc<PartitionState>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    paused: bool,
}

#[derive(Default)]
struct PartitionState {
    /// Messages handed to the task and not finished.
    queued: AtomicUsize,
    /// The message in hand failed transiently and is being retried.
    failing: AtomicBool,
}

pub struct EventConsumer {
    shared: Arc<Shared>,
}

impl EventConsumer {
    pub fn new(
        settings: ConsumerSettings,
        pool: DbPool,
        handler: Arc<dyn Handler>,
        metrics: ConsumerMetrics,
    ) -> KafkaResult<Self> {
        let consumer: StreamConsumer<ConsumerEvents> = client_config(&settings.brokers)
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
            .set(
                "session.timeout.ms",
                settings.session_timeout.as_millis().to_string(),
            )
            .set("heartbeat.interval.ms", "1000")
            .set(
                "max.poll.interval.ms",
                settings.max_poll_interval.as_millis().to_string(),
            )
            .set("statistics.interval.ms", "5000")
            .set(
                "fetch.wait.max.ms",
                settings.fetch_wait.as_millis().to_string(),
            )
            // librdkafka prefetches up to 64 MiB by default: the recurrence worker started on a
            // backlog of 900,000 events grew to 90 MiB (48 MiB at 2 MiB, 34 at 512 KiB; lower
            // saved nothing more). With so small a queue, librdkafka's default 1 s pause after
            // filling it would leave the handler idle.
            .set("queued.max.messages.kbytes", PREFETCH_KBYTES)
            .set("fetch.queue.backoff.ms", "50")
            .create_with_context(ConsumerEvents {
                metrics: metrics.clone(),
                revoked: Mutex::new(Vec::new()),
            })?;
        // Every series exists from the start, so rates and alerts see zeros rather than nothing.
        for topic in &settings.topics {
            for outcome in OUTCOMES {
                metrics
                    .messages
                    .with_label_values(&[topic.as_str(), outcome]);
            }
            metrics.processing.with_label_values(&[topic.as_str()]);
        }
        let topics = settings.broker_topics();
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        let dlq = client_config(&settings.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()?;
        Ok(EventConsumer {
            shared: Arc::new(Shared {
                consumer,
                dlq,
                pool,
                handler,
                settings,
                metrics,
            }),
        })
    }

    /// Consume until `shutdown` turns true: each partition finishes the message in hand (or
    /// leaves it for redelivery), stored offsets are committed and the group is left, giving up
    /// on the last two after [`CLOSE_TIMEOUT`] when the broker does not answer.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let shared = self.shared;
        let mut partitions: HashMap<(String, i32), Partition> = HashMap::new();
        // Tasks of revoked partitions that may still be finishing their message in hand.
        let mut retiring: HashMap<(String, i32), JoinHandle<()>> = HashMap::new();
        loop {
            let received = tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => break,
                m = shared.consumer.recv() => Some(m.map(|m| m.detach())),
                _ = tokio::time::sleep(TICK) => None,
            };
            retire_revoked(&shared, &mut partitions, &mut retiring);
            match received {
                Some(Ok(message)) => {
                    let key = (message.topic().to_owned(), message.partition());
                    let partition = partitions
                        .entry(key.clone())
                        .or_insert_with(|| start_partition(shared.clone(), retiring.remove(&key)));
                    partition.state.queued.fetch_add(1, Ordering::Relaxed);
                    // Cannot fail: the task only stops when told to, and it is then removed.
                    let _ = partition.messages.send(message);
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "kafka consumer error");
                }
                None => {}
            }
            flow_control(&shared.consumer, &mut partitions);
        }
        let tasks: Vec<JoinHandle<()>> = partitions
            .into_values()
            .map(|p| {
                let _ = p.stop.send(true);
                p.task
            })
            .chain(retiring.into_values())
            .collect();
        if tokio::time::timeout(DRAIN_TIMEOUT, futures::future::join_all(tasks))
            .await
            .is_err()
        {
            tracing::warn!(
                "a partition did not finish its message in time; it will be redelivered"
            );
        }
        close(shared, CLOSE_TIMEOUT).await;
    }
}

/// Stop the tasks of partitions this member no longer owns; their unfinished messages are
/// redelivered to the new owner (and skipped there if their effect did commit).
fn retire_revoked(
    shared: &Shared,
    partitions: &mut HashMap<(String, i32), Partition>,
    retiring: &mut HashMap<(String, i32), JoinHandle<()>>,
) {
    let revoked = match shared.consumer.context().revoked.lock() {
        Ok(mut revoked) => std::mem::take(&mut *revoked),
        Err(_) => return,
    };
    for key in revoked {
        if let Some(p) = partitions.remove(&key) {
            let _ = p.stop.send(true);
            retiring.insert(key, p.task);
        }
    }
    retiring.retain(|_, task| !task.is_finished());
}

/// The task that handles one partition's messages in order. When the partition was just
/// revoked and assigned back, it first waits for the old task to finish its message in hand.
fn start_partition(shared: Arc<Shared>, previous: Option<JoinHandle<()>>) -> Partition {
    let (messages, mut inbox) = mpsc::unbounded_channel::<OwnedMessage>();
    let (stop, mut stopped) = watch::channel(false);
    let state = Arc::new(PartitionState::default());
    let task_state = state.clone();
    let task = tokio::spawn(async move {
        if let Some(previous) = previous {
            let _ = previous.await;
        }
        let max = shared.settings.batch_size.max(1);
        let mut batch = Vec::with_capacity(max);
        loop {
            let first = tokio::select! {
                biased;
                _ = stopped.wait_for(|stop| *stop) => break,
                m = inbox.recv() => match m { Some(m) => m, None => break },
            };
            // Whatever else has arrived goes into the same transaction; nothing waits for more.
            batch.push(first);
            while batch.len() < max {
                match inbox.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            if !process(&shared, &batch, &task_state, &mut stopped).await {
                break;
            }
            task_state.queued.fetch_sub(batch.len(), Ordering::Relaxed);
            batch.clear();
        }
    });
    Partition {
        messages,
        state,
        stop,
        task,
        paused: false,
    }
}

/// Pause fetching of partitions that are failing or have too much waiting; resume them once
/// they recover. Paused partitions are still polled, so the member stays in the group.
fn flow_control(
    consumer: &StreamConsumer<ConsumerEvents>,
    partitions: &mut HashMap<(String, i32), Partition>,
) {
    for ((topic, partition), p) in partitions.iter_mut() {
        let queued = p.state.queued.load(Ordering::Relaxed);
        let failing = p.state.failing.load(Ordering::Relaxed);
        let want_paused = if p.paused {
            failing || queued >= RESUME_BELOW
        } else {
            failing || queued >= PAUSE_AT
        };
        if want_paused == p.paused {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, *partition);
        let done = if want_paused {
            consumer.pause(&tpl)
        } else {
            consumer.resume(&tpl)
        };
        match done {
            Ok(()) => {
                p.paused = want_paused;
                tracing::info!(%topic, partition, paused = want_paused, queued, failing, "partition flow control");
            }
            // Revoked meanwhile: the task is retired on the next pass.
            Err(e) => tracing::debug!(error = %e, %topic, partition, "pause/resume"),
        }
    }
}

/// Handle consecutive messages of one partition, in order; false when told to stop before all
/// their effects were durable. Undecodable messages are dead-lettered where they stand, so
/// offsets are stored in order.
async fn process(
    shared: &Shared,
    batch: &[OwnedMessage],
    state: &PartitionState,
    stopped: &mut watch::Receiver<bool>,
) -> bool {
    let mut rest = batch;
    while !rest.is_empty() {
        let mut events = Vec::with_capacity(rest.len());
        let mut undecodable = None;
        for m in rest {
            match CloudEvent::decode(m.payload()) {
                Ok(decoded) => events.push(decoded),
                Err(e) => {
                    undecodable = Some(e.to_string());
                    break;
                }
            }
        }
        let (good, after) = rest.split_at(events.len());
        if !handle(shared, good, &events, state, stopped).await {
            return false;
        }
        if let Some(reason) = undecodable {
            if !dead_letter(shared, &after[0], &reason, stopped).await {
                return false;
            }
            rest = &after[1..];
        } else {
            rest = after;
        }
    }
    true
}

/// Handle decoded messages in one transaction, retrying what failed transiently with capped
/// backoff (the partition is paused meanwhile) and dead-lettering what failed permanently.
async fn handle(
    shared: &Shared,
    messages: &[OwnedMessage],
    events: &[(CloudEvent<serde_json::Value>, shared_events::EventData)],
    state: &PartitionState,
    stopped: &mut watch::Receiver<bool>,
) -> bool {
    let Some(first) = messages.first() else {
        return true;
    };
    let topic = first
        .topic()
        .strip_prefix(shared.settings.topic_prefix.as_str())
        .unwrap_or(first.topic());
    let mut next = 0;
    let mut backoff = Duration::from_millis(100);
    while next < messages.len() {
        let deliveries: Vec<Delivery> = events[next..]
            .iter()
            .map(|(event, data)| Delivery { event, data, topic })
            .collect();
        // Told to stop: the event in hand finishes, the rest of the batch is redelivered.
        let outcome = handle_batch(
            &shared.pool,
            &shared.settings.group_id,
            shared.handler.as_ref(),
            &deliveries,
            &|| !*stopped.borrow(),
        )
        .await;
        if !outcome.done.is_empty() {
            state.failing.store(false, Ordering::Relaxed);
            backoff = Duration::from_millis(100);
        }
        for result in outcome.done {
            let (m, (event, _)) = (&messages[next], &events[next]);
            next += 1;
            let outcome = match result {
                Ok(Handled::Applied) => "handled",
                Ok(Handled::Duplicate) => "duplicate",
                Ok(Handled::Ignored) => "ignored",
                Err(reason) => {
                    if !dead_letter(shared, m, &reason, stopped).await {
                        return false;
                    }
                    continue;
                }
            };
            shared
                .metrics
                .messages
                .with_label_values(&[topic, outcome])
                .inc();
            let age = (Utc::now() - event.time)
                .num_microseconds()
                .unwrap_or(0)
                .max(0);
            shared
                .metrics
                .processing
                .with_label_values(&[topic])
                .observe(age as f64 / 1e6);
            store(shared, m);
        }
        let Some(reason) = outcome.transient else {
            if next < messages.len() {
                return false;
            }
            break;
        };
        state.failing.store(true, Ordering::Relaxed);
        shared
            .metrics
            .messages
            .with_label_values(&[topic, "retried"])
            .inc();
        let m = &messages[next];
        tracing::warn!(event = %events[next].0.id, partition = m.partition(), offset = m.offset(), %reason, ?backoff, "effect failed; partition paused, retrying");
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return false,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(shared.settings.max_backoff);
    }
    true
}

/// Copy the message to `<topic>.dlq` with the reason in headers, then move on.
async fn dead_letter(
    shared: &Shared,
    m: &OwnedMessage,
    reason: &str,
    stopped: &mut watch::Receiver<bool>,
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
    let logical = m
        .topic()
        .strip_prefix(shared.settings.topic_prefix.as_str())
        .unwrap_or(m.topic());
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut record = FutureRecord::<[u8], [u8]>::to(&topic).headers(headers.clone());
        if let Some(key) = m.key() {
            record = record.key(key);
        }
        if let Some(payload) = m.payload() {
            record = record.payload(payload);
        }
        match shared.dlq.send(record, Duration::from_secs(5)).await {
            Ok(_) => {
                tracing::warn!(topic = m.topic(), partition = m.partition(), offset = m.offset(), %reason, "message dead-lettered");
                shared
                    .metrics
                    .messages
                    .with_label_values(&[logical, "dead_lettered"])
                    .inc();
                store(shared, m);
                return true;
            }
            Err((e, _)) => {
                tracing::warn!(error = %e, "dead-letter publish failed; retrying");
                tokio::select! {
                    _ = stopped.wait_for(|stop| *stop) => return false,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(shared.settings.max_backoff);
            }
        }
    }
}

fn store(shared: &Shared, m: &OwnedMessage) {
    if let Err(e) = shared
        .consumer
        .store_offset(m.topic(), m.partition(), m.offset())
    {
        // Only fails when the partition was revoked meanwhile; the next owner redelivers.
        tracing::debug!(error = %e, "storing offset failed");
    }
}

/// Commit the stored offsets and leave the group (dropping the consumer closes it), off the
/// async runtime. Against an unreachable broker both block for many seconds, which would break
/// the shutdown budget, so wait at most `timeout`: what was not committed is redelivered to the
/// next owner and skipped as a duplicate there.
async fn close(shared: Arc<Shared>, timeout: Duration) {
    let group = shared.settings.group_id.clone();
    let (done, closed) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("kafka-consumer-close".into())
        .spawn(move || {
            if let Err(e) = shared.consumer.commit_consumer_state(CommitMode::Sync) {
                // NoOffset: nothing stored since the last (auto) commit.
                tracing::debug!(error = %e, "final commit");
            }
            shared.consumer.unsubscribe();
            drop(shared);
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
