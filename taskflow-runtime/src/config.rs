//! Settings from environment variables. The ones every service shares are parsed here, once,
//! with their defaults in `config/defaults.env` (which `./dev` reads too).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use taskflow_db::kv::{DaprStateStore, KeyValueStore, PgKeyValueStore};
use taskflow_db::DbPool;

use crate::secrets::Secrets;
use crate::telemetry::LogFormat;

const DEFAULTS: &str = include_str!("../../config/defaults.env");

/// The documented default of a shared setting.
pub fn default_of(name: &str) -> &'static str {
    DEFAULTS
        .lines()
        .filter_map(|line| line.split_once('='))
        .find(|(key, _)| key.trim() == name)
        .map(|(_, value)| value.trim())
        .unwrap_or_else(|| panic!("{name} is not in config/defaults.env"))
}

/// A non-empty environment variable.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A variable parsed as `T`, or `default` when unset.
pub fn parsed<T: FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{name}={v:?} is invalid: {e}")),
    }
}

/// A shared setting: the environment's value, else its default in `config/defaults.env`.
pub fn shared(name: &str) -> String {
    var(name).unwrap_or_else(|| default_of(name).to_owned())
}

/// A variable in milliseconds.
pub fn millis(name: &str, default: Duration) -> anyhow::Result<Duration> {
    parsed(name, default.as_millis() as u64).map(Duration::from_millis)
}

/// A secret that never prints.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The settings every service shares.
#[derive(Debug, Clone)]
pub struct CommonSettings {
    pub database_url: Secret,
    pub db_pool_size: usize,
    pub kafka_brokers: String,
    /// Put in front of every topic name (`t1.` makes `task-events` into `t1.task-events`).
    pub topic_prefix: String,
    pub assignment_strategy: String,
    pub log_format: LogFormat,
    /// Where preferences live.
    pub state_store: StateStore,
}

/// `STATE_STORE`: the key-value store behind preferences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateStore {
    /// `kv_store` in the shared database.
    Postgres,
    /// Dapr's state API: the component `store` of the sidecar at `endpoint`.
    Dapr { endpoint: String, store: String },
}

impl StateStore {
    /// `STATE_STORE` (postgres or dapr), with `DAPR_HTTP_ENDPOINT` and `DAPR_STATE_STORE`.
    pub fn from_env() -> anyhow::Result<Self> {
        match shared("STATE_STORE").as_str() {
            "postgres" => Ok(StateStore::Postgres),
            "dapr" => Ok(StateStore::Dapr {
                endpoint: shared("DAPR_HTTP_ENDPOINT"),
                store: shared("DAPR_STATE_STORE"),
            }),
            other => bail!("STATE_STORE={other:?} is invalid: use postgres or dapr"),
        }
    }

    pub fn open(&self, pool: DbPool) -> anyhow::Result<Arc<dyn KeyValueStore>> {
        Ok(match self {
            StateStore::Postgres => Arc::new(PgKeyValueStore::new(pool)),
            StateStore::Dapr { endpoint, store } => Arc::new(
                DaprStateStore::new(endpoint, store, Duration::from_secs(5))
                    .context("creating the Dapr state client")?,
            ),
        })
    }
}

impl CommonSettings {
    /// The defaults of `config/defaults.env` with `database_url` and a pool of `db_pool_size`.
    pub fn local(database_url: &str, db_pool_size: usize) -> Self {
        CommonSettings {
            database_url: Secret::new(database_url),
            db_pool_size,
            kafka_brokers: default_of("KAFKA_BROKERS").to_owned(),
            topic_prefix: default_of("KAFKA_TOPIC_PREFIX").to_owned(),
            assignment_strategy: default_of("KAFKA_ASSIGNMENT_STRATEGY").to_owned(),
            log_format: LogFormat::Json,
            state_store: StateStore::Postgres,
        }
    }

    /// Read from the environment, `DATABASE_URL` from `secrets`; `db_pool_size` is this
    /// service's default for `DB_POOL_SIZE`.
    pub fn from_env(db_pool_size: usize, secrets: &Secrets) -> anyhow::Result<Self> {
        let assignment_strategy = shared("KAFKA_ASSIGNMENT_STRATEGY");
        if !["range", "roundrobin", "cooperative-sticky"].contains(&assignment_strategy.as_str()) {
            bail!("KAFKA_ASSIGNMENT_STRATEGY={assignment_strategy:?} is invalid: use range, roundrobin or cooperative-sticky");
        }
        let db_pool_size = parsed("DB_POOL_SIZE", db_pool_size)?;
        if db_pool_size == 0 {
            bail!("DB_POOL_SIZE must be at least 1");
        }
        Ok(CommonSettings {
            database_url: Secret::new(
                secrets
                    .var("DATABASE_URL")
                    .unwrap_or_else(|| default_of("DATABASE_URL").to_owned()),
            ),
            db_pool_size,
            kafka_brokers: shared("KAFKA_BROKERS"),
            // May be empty, so not through `shared`, whose empty value means "unset".
            topic_prefix: std::env::var("KAFKA_TOPIC_PREFIX")
                .unwrap_or_else(|_| default_of("KAFKA_TOPIC_PREFIX").to_owned())
                .trim()
                .to_owned(),
            assignment_strategy,
            log_format: shared("LOG_FORMAT").parse().map_err(anyhow::Error::msg)?,
            state_store: StateStore::from_env()?,
        })
    }

    /// A topic's name on the broker.
    pub fn topic(&self, topic: &str) -> String {
        format!("{}{topic}", self.topic_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shared_setting_has_a_default() {
        assert_eq!(default_of("KAFKA_BROKERS"), "127.0.0.1:9092");
        assert_eq!(default_of("KAFKA_TOPIC_PREFIX"), "");
        assert_eq!(
            default_of("LOG_FORMAT").parse::<LogFormat>(),
            Ok(LogFormat::Json)
        );
        let local = CommonSettings::local("postgres://x/y", 3);
        assert_eq!(local.assignment_strategy, "cooperative-sticky");
        assert_eq!(local.topic("task-events"), "task-events");
    }
}
