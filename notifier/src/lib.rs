//! Notifier: reacts to `reminders`. Each reminder firing becomes one notification (idempotent on
//! the event id) in the transaction that records the event as handled: the in-app channel is the
//! row itself, delivered at once; the webhook channel is a job, delivered by the job runner with
//! retries, recorded, and dead-lettered to `reminders.dlq` when it finally fails.

pub mod metrics;
pub mod ssrf;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use diesel_async::AsyncPgConnection;
use futures::future::BoxFuture;
use prometheus::Registry;
use serde_json::json;
use shared_events::topics::{REMINDERS, REMINDERS_DLQ};
use taskflow_db::effects::{AfterCommit, Delivery, Handler, HandlerError};
use taskflow_db::jobs::{self, JobRunner, RunnerSettings};
use taskflow_db::kv::KeyValueStore;
use taskflow_db::notifications;
use taskflow_db::preferences::{self, Channel};
use taskflow_db::DbPool;
use taskflow_runtime::config::{millis, parsed, shared, var, Secret};
use taskflow_runtime::worker::{PushSettings, WorkerSettings};

use crate::metrics::Metrics;
use crate::webhook::{DeadLetters, WebhookDelivery, WEBHOOK_JOB};

/// The notifier's `DB_POOL_SIZE` default. A running webhook job holds its claiming connection and
/// reads the preferences on a second one; the consumer's transaction of each assigned partition
/// holds one (it reads the preferences on it): with the default `WEBHOOK_CONCURRENCY` of 4 and
/// all 3 `reminders` partitions on one replica that is 2 x 4 + 3, plus the queued gauge's and
/// one spare, so the pool never runs dry with every holder waiting for a second connection.
pub const DEFAULT_POOL_SIZE: usize = 13;

/// The webhook knobs (README configuration table).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Webhook deliveries at once.
    pub concurrency: usize,
    /// Hosts (names or IP literals) exempt from the address policy; empty in production.
    pub allowed_hosts: Vec<String>,
    pub timeout: Duration,
    pub max_attempts: i32,
    /// The wait before the second attempt; it doubles with each further one.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
}

impl WebhookSettings {
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(WebhookSettings {
            concurrency: parsed("WEBHOOK_CONCURRENCY", 4_usize)?.max(1),
            allowed_hosts: var("WEBHOOK_ALLOWED_HOSTS")
                .map(|v| v.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
            timeout: millis("WEBHOOK_TIMEOUT_MS", Duration::from_secs(5))?,
            max_attempts: parsed("WEBHOOK_MAX_ATTEMPTS", 5)?.max(1),
            base_backoff: millis("WEBHOOK_BACKOFF_MS", Duration::from_secs(2))?,
            max_backoff: millis("WEBHOOK_MAX_BACKOFF_MS", Duration::from_secs(600))?,
        })
    }
}

/// Where Dapr pushes `reminders` with `SUBSCRIBER=dapr` (`dapr-components/subscriptions.yaml`).
pub const REMINDERS_ROUTE: &str = "/api/events/reminders";

/// `SUBSCRIBER`: `kafka` (the consumer group) or `dapr` (pushed by the sidecar to
/// [`REMINDERS_ROUTE`], guarded by `APP_API_TOKEN`).
pub fn push_settings() -> anyhow::Result<Option<PushSettings>> {
    match shared("SUBSCRIBER").as_str() {
        "kafka" => Ok(None),
        "dapr" => Ok(Some(PushSettings {
            pubsub: shared("DAPR_PUBSUB_NAME"),
            topic: REMINDERS,
            route: REMINDERS_ROUTE,
            app_api_token: var("APP_API_TOKEN").map(Secret::new),
        })),
        other => anyhow::bail!("SUBSCRIBER={other:?} is invalid: use kafka or dapr"),
    }
}

pub struct ReminderHandler {
    store: Arc<dyn KeyValueStore>,
    metrics: Arc<Metrics>,
    webhook_attempts: i32,
}

impl Handler for ReminderHandler {
    fn handle<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        delivery: Delivery<'a>,
    ) -> BoxFuture<'a, Result<Option<AfterCommit>, HandlerError>> {
        Box::pin(async move {
            let reminder = delivery.reminder()?;
            let prefs = preferences::load_on(self.store.as_ref(), conn, &reminder.user_id)
                .await
                .map_err(|e| HandlerError::Transient(e.to_string()))?;
            let webhook = prefs.webhook().is_some();
            let channels: &[Channel] = if webhook {
                &[Channel::InApp, Channel::Webhook]
            } else {
                &[Channel::InApp]
            };
            let event = serde_json::to_value(delivery.event)
                .map_err(|e| HandlerError::Permanent(e.to_string()))?;
            let Some(n) =
                notifications::insert(conn, delivery.event.id, &event, reminder, channels).await?
            else {
                tracing::info!(event = %delivery.event.id, reminder = %reminder.reminder_id, "reminder firing already notified");
                return Ok(None);
            };
            if webhook {
                let payload = json!({ "notification_id": n.id });
                jobs::enqueue(
                    conn,
                    WEBHOOK_JOB,
                    &payload,
                    chrono::Utc::now(),
                    self.webhook_attempts,
                )
                .await?;
            }
            let metrics = self.metrics.clone();
            Ok(Some(Box::new(move || {
                metrics.delivered(Channel::InApp, n.remind_at);
                tracing::info!(notification = %n.id, reminder = %n.reminder_id, task = %n.task_id, user = %n.user_id, channel = "in_app", attempts = 1, outcome = "delivered", "notification delivered");
            }) as AfterCommit))
        })
    }
}

/// The handler and the job runner of the webhook channel, on one pool and registry.
pub fn build(
    pool: DbPool,
    registry: &Registry,
    worker: &WorkerSettings,
    webhook: &WebhookSettings,
) -> anyhow::Result<(ReminderHandler, JobRunner)> {
    let store: Arc<dyn KeyValueStore> = worker.common.state_store.open(pool.clone())?;
    let metrics = Arc::new(Metrics::new(registry)?);
    let dead_letters = DeadLetters::new(
        &worker.common.kafka_brokers,
        worker.common.topic(REMINDERS_DLQ),
    )?;
    let delivery = WebhookDelivery::new(
        ssrf::Policy::new(webhook.allowed_hosts.clone()),
        webhook.timeout,
        store.clone(),
        metrics.clone(),
        dead_letters,
    )?;
    let runner = JobRunner::new(
        pool,
        worker.common.database_url.expose(),
        RunnerSettings {
            concurrency: webhook.concurrency,
            base_backoff: webhook.base_backoff,
            max_backoff: webhook.max_backoff,
            ..RunnerSettings::default()
        },
        registry,
    )?
    .register(WEBHOOK_JOB, Arc::new(delivery));
    Ok((
        ReminderHandler {
            store,
            metrics,
            webhook_attempts: webhook.max_attempts,
        },
        runner,
    ))
}
