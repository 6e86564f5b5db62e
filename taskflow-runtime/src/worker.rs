//! What both workers run: their settings, a database pool for effects, the event consumer, and
//! `/health`, `/ready`, `/metrics` on `METRICS_ADDR`. Workers never migrate the database: `/ready`
//! answers 503 "migrations pending" until `backend migrate` (or the chart's Job) has run.
//! With [`PushSettings`] (the notifier's `SUBSCRIBER=dapr`) there is no consumer: the same server
//! (Dapr's app port) serves `/dapr/subscribe` and the route Dapr pushes events to, and each one
//! runs the same handler, under the same consumer name, as the consumer would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web::{self, Bytes, Data};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use anyhow::Context;
use prometheus::{Encoder, Registry, TextEncoder};
use serde_json::json;
use taskflow_db::effects::Handler;
use taskflow_db::jobs::JobRunner;
use taskflow_db::DbPool;
use taskflow_kafka::consumer::{ConsumerMetrics, ConsumerSettings, EventConsumer};

use crate::config::{millis, parsed, var, CommonSettings, Secret};
use crate::dapr::{self, Routes, Subscription};
use crate::lifecycle::shutdown_signal;
use crate::secrets::Secrets;
use crate::telemetry;

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub common: CommonSettings,
    pub metrics_addr: SocketAddr,
    pub consumer: ConsumerSettings,
    /// Events pushed by Dapr instead of consumed; None: the Kafka consumer.
    pub push: Option<PushSettings>,
}

/// Dapr push delivery of one topic.
#[derive(Debug, Clone)]
pub struct PushSettings {
    /// The Dapr pub/sub component (`DAPR_PUBSUB_NAME`).
    pub pubsub: String,
    /// The topic, without the deployment prefix.
    pub topic: &'static str,
    /// Where Dapr POSTs its CloudEvents.
    pub route: &'static str,
    /// `APP_API_TOKEN`: required as `dapr-api-token` when set.
    pub app_api_token: Option<Secret>,
}

impl WorkerSettings {
    /// The shared settings plus `METRICS_ADDR` (default `0.0.0.0:<metrics_port>`),
    /// `KAFKA_GROUP_ID` (default `group`: lets tests run side by side on one broker),
    /// `KAFKA_SESSION_TIMEOUT_MS` (10000), `KAFKA_MAX_POLL_INTERVAL_MS` (300000),
    /// `KAFKA_FETCH_WAIT_MS` (100) and `CONSUMER_BATCH_SIZE` (100).
    pub fn from_env(
        secrets: &Secrets,
        group: &str,
        topics: &[&str],
        metrics_port: u16,
    ) -> anyhow::Result<Self> {
        let common = CommonSettings::from_env(4, secrets)?;
        let mut consumer = ConsumerSettings::new(&common.kafka_brokers, group, topics);
        consumer.group_id = var("KAFKA_GROUP_ID").unwrap_or(consumer.group_id);
        consumer.topic_prefix = common.topic_prefix.clone();
        consumer.assignment_strategy = common.assignment_strategy.clone();
        consumer.session_timeout = millis("KAFKA_SESSION_TIMEOUT_MS", consumer.session_timeout)?;
        consumer.max_poll_interval =
            millis("KAFKA_MAX_POLL_INTERVAL_MS", consumer.max_poll_interval)?;
        consumer.batch_size = parsed("CONSUMER_BATCH_SIZE", consumer.batch_size)?.max(1);
        consumer.fetch_wait = millis("KAFKA_FETCH_WAIT_MS", consumer.fetch_wait)?;
        Ok(WorkerSettings {
            metrics_addr: parsed(
                "METRICS_ADDR",
                SocketAddr::from(([0, 0, 0, 0], metrics_port)),
            )?,
            common,
            consumer,
            push: None,
        })
    }

    /// What `GET /dapr/subscribe` lists in push mode: the topic on the broker (prefixed) with
    /// its dead-letter topic.
    pub fn subscriptions(&self) -> Vec<Subscription> {
        self.push
            .iter()
            .map(|push| Subscription {
                pubsubname: push.pubsub.clone(),
                topic: self.common.topic(push.topic),
                routes: Routes {
                    default: push.route.to_owned(),
                },
                dead_letter_topic: self
                    .common
                    .topic(&shared_events::topics::dead_letter_topic(push.topic)),
            })
            .collect()
    }
}

struct Health {
    pool: DbPool,
    metrics: ConsumerMetrics,
    registry: Registry,
}

/// What the push routes need.
struct Push {
    settings: PushSettings,
    subscriptions: Vec<Subscription>,
    /// The consumer name in `processed_events`: the consumer group's, so that switching between
    /// Kafka and Dapr never handles an event twice.
    consumer: String,
    handler: Arc<dyn Handler>,
}

async fn dapr_subscribe(push: Data<Push>) -> HttpResponse {
    HttpResponse::Ok().json(&push.subscriptions)
}

async fn pushed(
    req: HttpRequest,
    body: Bytes,
    push: Data<Push>,
    health: Data<Health>,
) -> Result<HttpResponse, dapr::Refused> {
    dapr::authorize(&req, push.settings.app_api_token.as_ref())?;
    let topic = push.settings.topic;
    let outcome = dapr::deliver(
        &health.pool,
        &push.consumer,
        push.handler.as_ref(),
        topic,
        &body,
    )
    .await;
    health
        .metrics
        .messages
        .with_label_values(&[topic, outcome.label()])
        .inc();
    Ok(outcome.response())
}

async fn alive() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn ready(state: Data<Health>) -> HttpResponse {
    let unavailable = |reason: String| {
        HttpResponse::ServiceUnavailable().json(json!({"status": "unavailable", "reason": reason}))
    };
    match taskflow_db::migrations::applied(&state.pool).await {
        Ok(true) => HttpResponse::Ok().json(json!({
            "status": "ok",
            "assigned_partitions": state.metrics.assigned.get(),
        })),
        Ok(false) => unavailable("migrations pending: run `backend migrate`".into()),
        Err(e) => unavailable(format!("database: {e}")),
    }
}

async fn render_metrics(state: Data<Health>) -> HttpResponse {
    let mut buffer = Vec::new();
    let _ = TextEncoder::new().encode(&state.registry.gather(), &mut buffer);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(buffer)
}

/// Run a worker until SIGTERM/Ctrl-C: consume with the handler `make_handler` builds (it may
/// register metrics of its own), run its job runner if it has one, and serve health and metrics.
pub async fn run<H: Handler + 'static>(
    name: &str,
    settings: WorkerSettings,
    make_handler: impl FnOnce(DbPool, &Registry) -> anyhow::Result<(H, Option<JobRunner>)>,
) -> anyhow::Result<()> {
    telemetry::init(settings.common.log_format);
    // Before anything slow: a SIGTERM during start-up then stops the worker cleanly.
    let shutdown = shutdown_signal();
    let pool = taskflow_db::pool(
        &taskflow_db::pool::named(
            settings.common.database_url.expose(),
            &format!("taskflow-{name}"),
        ),
        settings.common.db_pool_size,
    )?;
    let registry = telemetry::registry()?;
    let metrics = ConsumerMetrics::new(&registry)?;
    let (handler, jobs) = make_handler(pool.clone(), &registry)?;
    let handler = Arc::new(handler);
    let (consumer, push) = match &settings.push {
        None => {
            let consumer = EventConsumer::new(
                settings.consumer.clone(),
                pool.clone(),
                handler,
                metrics.clone(),
            )
            .context("creating the Kafka consumer")?;
            (Some(consumer), None)
        }
        Some(push) => {
            for outcome in taskflow_kafka::consumer::OUTCOMES {
                metrics.messages.with_label_values(&[push.topic, outcome]);
            }
            let push = Data::new(Push {
                settings: push.clone(),
                subscriptions: settings.subscriptions(),
                consumer: settings.consumer.group_id.clone(),
                handler,
            });
            (None, Some(push))
        }
    };
    let health = Data::new(Health {
        pool,
        metrics,
        registry,
    });
    let server = HttpServer::new(move || {
        let app = App::new()
            .app_data(health.clone())
            .route("/health", web::get().to(alive))
            .route("/ready", web::get().to(ready))
            .route("/metrics", web::get().to(render_metrics));
        match &push {
            Some(push) => app
                .app_data(push.clone())
                .route("/dapr/subscribe", web::get().to(dapr_subscribe))
                .route(push.settings.route, web::post().to(pushed)),
            None => app,
        }
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .bind(settings.metrics_addr)
    .with_context(|| format!("binding {}", settings.metrics_addr))?
    .run();
    let server_handle = server.handle();
    let server = tokio::spawn(server);
    let mode = if consumer.is_some() { "kafka" } else { "dapr" };
    tracing::info!(worker = name, addr = %settings.metrics_addr, topics = ?settings.consumer.topics, group = %settings.consumer.group_id, subscriber = mode, "worker started");
    let jobs = jobs.map(|runner| tokio::spawn(runner.run(shutdown.clone())));
    match consumer {
        Some(consumer) => consumer.run(shutdown).await,
        None => {
            let mut shutdown = shutdown;
            let _ = shutdown.wait_for(|stop| *stop).await;
        }
    }
    if let Some(jobs) = jobs {
        // The runner gives running jobs their shutdown budget; an abandoned one runs again later.
        let _ = jobs.await;
    }
    server_handle.stop(true).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    tracing::info!(worker = name, "worker stopped");
    Ok(())
}
