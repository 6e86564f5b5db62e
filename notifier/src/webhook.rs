//! The webhook channel: a job per notification POSTs signed JSON to the user's URL.
//!
//! `X-TaskFlow-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>` with
//! `X-TaskFlow-Timestamp` (Unix seconds), so a receiver can check both and reject replays;
//! `Idempotency-Key` is the notification id, the same on every attempt.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use diesel_async::AsyncPgConnection;
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::json;
use sha2::Sha256;
use taskflow_db::jobs::{JobError, JobHandler, JobRecord};
use taskflow_db::kv::KeyValueStore;
use taskflow_db::notifications::{self, NotificationRow, DELIVERED, FAILED};
use taskflow_db::preferences::{self, Channel};
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::ssrf::{self, Policy};

pub const WEBHOOK_JOB: &str = "notification.webhook";

/// `sha256=<hex>` of `timestamp.body` under `secret`.
pub fn signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// Finally failed reminders, copied to `reminders.dlq` as received, with the reason.
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl DeadLetters {
    pub fn new(brokers: &str, topic: String) -> anyhow::Result<Self> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "10000")
            .create()?;
        Ok(DeadLetters { producer, topic })
    }

    async fn send(&self, n: &NotificationRow, reason: &str) -> Result<(), String> {
        let payload = serde_json::to_vec(&n.event).map_err(|e| e.to_string())?;
        let key = n.task_id.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "content-type",
                value: Some("application/cloudevents+json"),
            })
            .insert(Header {
                key: "dlq_error",
                value: Some(reason),
            })
            .insert(Header {
                key: "dlq_notification",
                value: Some(&n.id.to_string()),
            });
        let record = FutureRecord::to(&self.topic)
            .key(&key)
            .payload(&payload)
            .headers(headers);
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .map(|_| ())
            .map_err(|(e, _)| e.to_string())
    }
}

pub struct WebhookDelivery {
    client: reqwest::Client,
    policy: Policy,
    store: Arc<dyn KeyValueStore>,
    metrics: Arc<Metrics>,
    dead_letters: DeadLetters,
}

impl WebhookDelivery {
    pub fn new(
        policy: Policy,
        timeout: Duration,
        store: Arc<dyn KeyValueStore>,
        metrics: Arc<Metrics>,
        dead_letters: DeadLetters,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(policy.clone()))
            // A redirect could lead anywhere; the receiver must answer at its URL.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .no_proxy()
            .build()?;
        Ok(WebhookDelivery {
            client,
            policy,
            store,
            metrics,
            dead_letters,
        })
    }

    async fn notification(
        conn: &mut AsyncPgConnection,
        job: &JobRecord,
    ) -> Result<NotificationRow, JobError> {
        let id = job.payload["notification_id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| JobError::Fail(format!("bad payload {}", job.payload)))?;
        notifications::find(conn, id)
            .await?
            .ok_or_else(|| JobError::Fail(format!("notification {id} is gone")))
    }

    /// One POST; the reason when it did not deliver, and whether trying again can help.
    async fn post(&self, n: &NotificationRow) -> Result<(), JobError> {
        let prefs = preferences::load(self.store.as_ref(), &n.user_id)
            .await
            .map_err(|e| JobError::Retry(e.to_string()))?;
        let (url, secret) = prefs
            .webhook()
            .ok_or_else(|| JobError::Fail("the webhook channel is not configured".into()))?;
        let url = self
            .policy
            .check_url(url)
            .map_err(|e| JobError::Fail(e.to_string()))?;
        let body = serde_json::to_vec(&json!({
            "notification_id": n.id,
            "type": "reminder.due",
            "reminder_id": n.reminder_id,
            "task_id": n.task_id,
            "user_id": n.user_id,
            "title": n.title,
            "due_at": n.due_at,
            "remind_at": n.remind_at,
        }))
        .map_err(|e| JobError::Fail(e.to_string()))?;
        let timestamp = Utc::now().timestamp().to_string();
        let res = self
            .client
            .post(url)
            .header("Content-Type", "application/json")
            .header("X-TaskFlow-Timestamp", &timestamp)
            .header("X-TaskFlow-Signature", signature(secret, &timestamp, &body))
            .header("Idempotency-Key", n.id.to_string())
            .body(body)
            .send()
            .await;
        match res {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) if r.status().is_redirection() => Err(JobError::Fail(format!(
                "refused: redirects are not followed (HTTP {})",
                r.status().as_u16()
            ))),
            Ok(r) => Err(JobError::Retry(format!("HTTP {}", r.status().as_u16()))),
            Err(e) => Err(match ssrf::refusal(&e) {
                Some(refused) => JobError::Fail(refused.to_string()),
                None => JobError::Retry(e.to_string()),
            }),
        }
    }
}

impl JobHandler for WebhookDelivery {
    fn run<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        job: &'a JobRecord,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let n = Self::notification(conn, job).await?;
            match self.post(&n).await {
                Ok(()) => {
                    notifications::record_delivery(
                        conn,
                        n.id,
                        Channel::Webhook,
                        DELIVERED,
                        job.attempts,
                        None,
                    )
                    .await?;
                    self.metrics.delivered(Channel::Webhook, n.remind_at);
                    tracing::info!(notification = %n.id, reminder = %n.reminder_id, user = %n.user_id, channel = "webhook", attempts = job.attempts, outcome = "delivered", "notification delivered");
                    Ok(())
                }
                Err(e) => {
                    if matches!(e, JobError::Retry(_)) && job.attempts < job.max_attempts {
                        self.metrics.retried(Channel::Webhook);
                        tracing::warn!(notification = %n.id, user = %n.user_id, channel = "webhook", attempts = job.attempts, error = e.reason(), outcome = "retry", "webhook delivery failed; will retry");
                    }
                    Err(e)
                }
            }
        })
    }

    fn failed<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        job: &'a JobRecord,
        error: &'a str,
    ) -> BoxFuture<'a, diesel::QueryResult<()>> {
        Box::pin(async move {
            let Ok(n) = Self::notification(conn, job).await else {
                return Ok(());
            };
            notifications::record_delivery(
                conn,
                n.id,
                Channel::Webhook,
                FAILED,
                job.attempts,
                Some(error),
            )
            .await?;
            // Without its dead letter the failure is not recorded: roll back and come again.
            self.dead_letters.send(&n, error).await.map_err(|e| {
                diesel::result::Error::QueryBuilderError(format!("dead-lettering: {e}").into())
            })?;
            self.metrics.failed(Channel::Webhook);
            tracing::error!(notification = %n.id, reminder = %n.reminder_id, user = %n.user_id, channel = "webhook", attempts = job.attempts, error, outcome = "failed", "notification failed");
            Ok(())
        })
    }
}
