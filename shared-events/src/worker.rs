//! What both workers run: settings from the environment, a database pool for idempotent
//! effects, the event consumer, and `/health`, `/ready`, `/metrics` on `HTTP_ADDR`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web::{self, Data};
use actix_web::{App, HttpResponse, HttpServer};
use anyhow::Context;
use prometheus::{Encoder, IntGauge, Registry, TextEncoder};
use serde_json::json;

use crate::consumer::{shutdown_signal, ConsumerSettings, ConsumerStats, EventConsumer, Handler};
use crate::database::{self, DbPool};
use crate::telemetry::{self, LogFormat};

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub http_addr: SocketAddr,
    pub database_url: String,
    pub db_pool_size: usize,
    pub consumer: ConsumerSettings,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

impl WorkerSettings {
    /// `DATABASE_URL`, `KAFKA_BROKERS`, `HTTP_ADDR`, `DB_POOL_SIZE`, `KAFKA_ASSIGNMENT_STRATEGY`,
    /// and two knobs that let several copies share one broker (tests, side-by-side environments):
    /// - `KAFKA_TOPIC_PREFIX` (default empty) is put in front of every topic the worker subscribes
    ///   to, e.g. `t1.` makes it read `t1.task-events`; dead letters go to that topic's `.dlq`
    ///   (`t1.task-events.dlq`), which must exist like the topic itself.
    /// - `KAFKA_GROUP_ID` (default `group`, the worker's fixed consumer group) is the group id.
    pub fn from_env(group: &str, topics: &[&str], default_port: u16) -> anyhow::Result<Self> {
        let strategy = env_or("KAFKA_ASSIGNMENT_STRATEGY", "cooperative-sticky");
        let prefix = std::env::var("KAFKA_TOPIC_PREFIX").unwrap_or_default();
        let prefix = prefix.trim();
        if !["range", "roundrobin", "cooperative-sticky"].contains(&strategy.as_str()) {
            anyhow::bail!("KAFKA_ASSIGNMENT_STRATEGY={strategy:?} is invalid: use range, roundrobin or cooperative-sticky");
        }
        Ok(WorkerSettings {
            http_addr: env_or("HTTP_ADDR", &format!("0.0.0.0:{default_port}"))
                .parse()
                .context("HTTP_ADDR")?,
            database_url: env_or(
                "DATABASE_URL",
                "postgres://taskflow:taskflow@127.0.0.1:55432/taskflow",
            ),
            db_pool_size: env_or("DB_POOL_SIZE", "4")
                .parse()
                .context("DB_POOL_SIZE")?,
            consumer: ConsumerSettings {
                brokers: env_or("KAFKA_BROKERS", "127.0.0.1:9092"),
                group_id: env_or("KAFKA_GROUP_ID", group),
                topics: topics.iter().map(|t| format!("{prefix}{t}")).collect(),
                assignment_strategy: strategy,
                max_backoff: Duration::from_secs(30),
            },
        })
    }
}

struct Health {
    pool: DbPool,
    stats: Arc<ConsumerStats>,
    registry: Registry,
    gauges: [IntGauge; 4],
}

impl Health {
    fn new(pool: DbPool, stats: Arc<ConsumerStats>) -> anyhow::Result<Self> {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| -> anyhow::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let gauges = [
            gauge(
                "consumer_messages_handled_total",
                "Messages whose effect completed",
            )?,
            gauge(
                "consumer_messages_dead_lettered_total",
                "Messages sent to the dead-letter topic",
            )?,
            gauge("consumer_effect_retries_total", "Retries of failed effects")?,
            gauge(
                "consumer_assigned_partitions",
                "Partitions assigned to this member",
            )?,
        ];
        Ok(Health {
            pool,
            stats,
            registry,
            gauges,
        })
    }

    fn render(&self) -> String {
        let s = &self.stats;
        let values = [
            s.handled.load(Ordering::Relaxed) as i64,
            s.dead_lettered.load(Ordering::Relaxed) as i64,
            s.retries.load(Ordering::Relaxed) as i64,
            s.assigned.load(Ordering::Relaxed) as i64,
        ];
        for (g, v) in self.gauges.iter().zip(values) {
            g.set(v);
        }
        let mut buffer = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

async fn alive() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn ready(state: Data<Health>) -> HttpResponse {
    let database = database::ping(&state.pool).await;
    let assigned = state.stats.assigned.load(Ordering::Relaxed);
    match database {
        Ok(()) => HttpResponse::Ok().json(json!({"status": "ok", "assigned_partitions": assigned})),
        Err(e) => HttpResponse::ServiceUnavailable()
            .json(json!({"status": "unavailable", "database": e.to_string()})),
    }
}

async fn metrics(state: Data<Health>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.render())
}

/// Run a worker until SIGTERM/Ctrl-C: consume with `make_handler`'s handler and serve health.
pub async fn run<H: Handler + 'static>(
    name: &str,
    settings: WorkerSettings,
    make_handler: impl FnOnce(DbPool) -> H,
) -> anyhow::Result<()> {
    telemetry::init(LogFormat::from_env().map_err(anyhow::Error::msg)?);
    // Before anything slow: a SIGTERM during start-up then stops the worker cleanly.
    let shutdown = shutdown_signal();
    let pool = database::pool(&settings.database_url, settings.db_pool_size)?;
    let consumer =
        EventConsumer::new(settings.consumer.clone()).context("creating the Kafka consumer")?;
    let health = Data::new(Health::new(pool.clone(), consumer.stats.clone())?);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(health.clone())
            .route("/health", web::get().to(alive))
            .route("/ready", web::get().to(ready))
            .route("/metrics", web::get().to(metrics))
    })
    .workers(1)
    .disable_signals()
    .bind(settings.http_addr)
    .with_context(|| format!("binding {}", settings.http_addr))?
    .run();
    let server_handle = server.handle();
    let server = tokio::spawn(server);
    tracing::info!(worker = name, addr = %settings.http_addr, topics = ?settings.consumer.topics, "worker started");
    let handler = make_handler(pool);
    consumer.run(&handler, shutdown).await;
    server_handle.stop(true).await;
    let _ = server.await;
    tracing::info!(worker = name, "worker stopped");
    Ok(())
}
