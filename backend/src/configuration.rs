//! Settings from environment variables; every knob and its default is in the README table.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
pub use taskflow_runtime::config::Secret;
use taskflow_runtime::config::{default_of, millis, parsed, shared, var, CommonSettings};
use taskflow_runtime::secrets::Secrets;

use crate::create_batches;
use crate::stream::StreamSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublisherKind {
    Kafka,
    Dapr,
    /// Debezium publishes the outbox from the write-ahead log (deploy/kafka/debezium); this
    /// process only prunes it.
    Debezium,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// Database, brokers, topic prefix, log format: what every service shares.
    pub common: CommonSettings,
    pub http_addr: SocketAddr,
    pub jwt_secret: Option<Secret>,
    pub jwt_jwks_url: Option<String>,
    /// When set, tokens must carry this `iss`.
    pub jwt_issuer: Option<String>,
    /// When set, tokens must carry this `aud`.
    pub jwt_audience: Option<String>,
    /// When set, Dapr's deliveries must carry it as `dapr-api-token`.
    pub app_api_token: Option<Secret>,
    pub events: EventSettings,
    /// Run the job runner that fires reminders at their time in this process.
    pub reminder_scheduler_enabled: bool,
    /// The live stream of task changes for the web UI.
    pub stream: StreamSettings,
    /// Creates written together ([`crate::create_batches`]).
    pub create_batches: create_batches::Limits,
}

/// The event path: outbox relay and publisher.
#[derive(Debug, Clone)]
pub struct EventSettings {
    /// Off only in tests that look at outbox rows before anything publishes them.
    pub relay_enabled: bool,
    pub publisher: PublisherKind,
    pub dapr_http_endpoint: String,
    pub dapr_pubsub_name: String,
    pub batch_size: i64,
    pub poll_interval: Duration,
    /// While rows keep coming (or another relay holds the lock), a pass starts at most this
    /// often, counted from the start of the one before; a full batch is followed at once.
    pub pass_interval: Duration,
    pub max_backoff: Duration,
    /// How long one publish may wait for the broker or sidecar before it counts as failed.
    pub publish_timeout: Duration,
    /// How long the relay keeps what it sent (in `outbox_sent`); zero deletes a row once it is
    /// acknowledged. With Debezium, how long rows stay in `outbox` (an hour at least).
    pub retention: Duration,
    /// The Kafka publisher's `compression.type`: none, gzip, snappy or lz4.
    pub compression: &'static str,
}

impl Default for EventSettings {
    /// The documented defaults (README configuration table).
    fn default() -> Self {
        EventSettings {
            relay_enabled: true,
            publisher: PublisherKind::Kafka,
            dapr_http_endpoint: default_of("DAPR_HTTP_ENDPOINT").into(),
            dapr_pubsub_name: default_of("DAPR_PUBSUB_NAME").into(),
            batch_size: 500,
            poll_interval: Duration::from_millis(1_000),
            // Under load a pass per writer's wake-up cost more than its rows: in the bench, 15 ms
            // cut the passes of the c=16 creates from 1,035 to 426–479 and the broker's CPU a
            // create from 22 to 11–15 µs, for about 8 ms more on the event path's p99.
            pass_interval: Duration::from_millis(15),
            max_backoff: Duration::from_millis(30_000),
            publish_timeout: Duration::from_millis(10_000),
            // Kafka keeps the events: a second copy here cost PostgreSQL about 11 µs a create
            // and about 1.2 kB of WAL and heap per event, however long it is kept.
            retention: Duration::ZERO,
            // Batches of a relay pass are a few small JSON events each; uncompressed, consumers
            // keep no decompressed copies (the recurrence worker's peak in the bench fell by
            // 3.4-4.9 MiB), and Dapr's Kafka component does not compress by default either.
            compression: "none",
        }
    }
}

impl Settings {
    /// The defaults, on a random loopback port with an HS256 secret: for running the
    /// application in-process (tests, benchmarks).
    pub fn local(database_url: &str, jwt_secret: &str) -> Settings {
        Settings {
            common: CommonSettings::local(database_url, 16),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            jwt_secret: Some(Secret::new(jwt_secret)),
            jwt_jwks_url: None,
            jwt_issuer: None,
            jwt_audience: None,
            app_api_token: None,
            events: EventSettings::default(),
            reminder_scheduler_enabled: true,
            stream: StreamSettings::default(),
            create_batches: create_batches::Limits::default(),
        }
    }

    /// The secrets the backend needs (`SECRETS_SOURCE`): the database's URL, and the HS256 key
    /// unless tokens are checked against `JWT_JWKS_URL` only.
    pub async fn secrets() -> anyhow::Result<Secrets> {
        let required: &[&str] = if var("JWT_JWKS_URL").is_some() {
            &["DATABASE_URL"]
        } else {
            &["DATABASE_URL", "JWT_SECRET"]
        };
        Ok(Secrets::load(required).await?)
    }

    /// Read the settings from the environment, the secrets from `secrets`.
    pub fn from_env(secrets: &Secrets) -> anyhow::Result<Settings> {
        let common = CommonSettings::from_env(16, secrets)?;
        let jwt_secret = secrets.var("JWT_SECRET").map(Secret::new);
        let jwt_jwks_url = var("JWT_JWKS_URL");
        if jwt_secret.is_none() && jwt_jwks_url.is_none() {
            bail!("set JWT_SECRET (HS256) and/or JWT_JWKS_URL (asymmetric keys)");
        }
        let d = EventSettings::default();
        let publisher = match var("EVENT_PUBLISHER").as_deref() {
            None | Some("kafka") => PublisherKind::Kafka,
            Some("dapr") => PublisherKind::Dapr,
            Some("debezium") => PublisherKind::Debezium,
            Some(other) => {
                bail!("EVENT_PUBLISHER={other:?} is invalid: use kafka, dapr or debezium")
            }
        };
        let compression = match var("KAFKA_COMPRESSION").as_deref() {
            None => d.compression,
            Some("none") => "none",
            Some("gzip") => "gzip",
            Some("snappy") => "snappy",
            Some("lz4") => "lz4",
            Some(other) => {
                bail!("KAFKA_COMPRESSION={other:?} is invalid: use none, gzip, snappy or lz4")
            }
        };
        Ok(Settings {
            common,
            http_addr: parsed("HTTP_ADDR", SocketAddr::from(([0, 0, 0, 0], 8000)))
                .context("HTTP_ADDR")?,
            jwt_secret,
            jwt_jwks_url,
            jwt_issuer: var("JWT_ISSUER"),
            jwt_audience: var("JWT_AUDIENCE"),
            app_api_token: var("APP_API_TOKEN").map(Secret::new),
            events: EventSettings {
                relay_enabled: parsed("OUTBOX_RELAY_ENABLED", d.relay_enabled)?,
                publisher,
                dapr_http_endpoint: shared("DAPR_HTTP_ENDPOINT"),
                dapr_pubsub_name: shared("DAPR_PUBSUB_NAME"),
                batch_size: parsed("OUTBOX_BATCH_SIZE", d.batch_size)?.clamp(1, 10_000),
                poll_interval: millis("OUTBOX_POLL_INTERVAL_MS", d.poll_interval)?,
                // At least 1 ms: a standby relay polls the lock at this rate.
                pass_interval: millis("OUTBOX_PASS_INTERVAL_MS", d.pass_interval)?
                    .clamp(Duration::from_millis(1), Duration::from_secs(1)),
                max_backoff: millis("OUTBOX_MAX_BACKOFF_MS", d.max_backoff)?,
                publish_timeout: millis("PUBLISH_TIMEOUT_MS", d.publish_timeout)?,
                retention: Duration::from_secs(
                    parsed("OUTBOX_RETENTION_HOURS", d.retention.as_secs() / 3600)? * 3600,
                ),
                compression,
            },
            reminder_scheduler_enabled: parsed("REMINDER_SCHEDULER_ENABLED", true)?,
            stream: stream_settings()?,
            create_batches: create_batch_limits()?,
        })
    }
}

fn create_batch_limits() -> anyhow::Result<create_batches::Limits> {
    let d = create_batches::Limits::default();
    Ok(create_batches::Limits {
        max_rows: parsed("CREATE_BATCH_MAX_ROWS", d.max_rows)?.clamp(1, 1_000),
        statements: parsed("CREATE_BATCH_STATEMENTS", d.statements)?.clamp(1, 64),
    })
}

fn stream_settings() -> anyhow::Result<StreamSettings> {
    let d = StreamSettings::default();
    Ok(StreamSettings {
        enabled: parsed("STREAM_ENABLED", d.enabled)?,
        client_buffer: parsed("STREAM_CLIENT_BUFFER", d.client_buffer)?.clamp(1, 10_000),
        replay: parsed("STREAM_REPLAY", d.replay)?.min(1_000_000),
        keepalive: millis("STREAM_KEEPALIVE_MS", d.keepalive)?,
        feed_rest: millis("STREAM_FEED_REST_MS", d.feed_rest)?,
    })
}
