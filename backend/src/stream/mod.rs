//! Live updates for the web UI: `task-updates` read by every backend process ([`feed`]) and
//! fanned out in-process to each user's connections ([`hub`]); served as Server-Sent Events by
//! `routes::stream`.

pub mod feed;
pub mod hub;

use std::sync::Arc;
use std::time::Duration;

use prometheus::IntGauge;
use tokio::sync::watch;

pub use hub::Hub;

/// `STREAM_*` settings (README configuration table).
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Read `task-updates` and serve `/api/{user_id}/stream` in this process.
    pub enabled: bool,
    /// Notices one connection may have queued before it is dropped as too slow.
    pub client_buffer: usize,
    /// Latest notices kept for `Last-Event-ID` resume.
    pub replay: usize,
    /// A comment line this often keeps proxies from closing an idle stream.
    pub keepalive: Duration,
    /// With no connection open for this long, stop reading `task-updates` until the next one
    /// (zero: never).
    pub feed_rest: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            enabled: true,
            client_buffer: 64,
            replay: 1024,
            keepalive: Duration::from_secs(15),
            feed_rest: Duration::from_secs(30),
        }
    }
}

/// What the stream route needs: the hub (None when the stream is off) and the keep-alive.
pub struct Live {
    pub hub: Option<Arc<Hub>>,
    pub keepalive: Duration,
    /// Turns true on SIGTERM/Ctrl-C: streams end at once, so that they do not hold the
    /// server's graceful shutdown for its whole timeout (clients reconnect elsewhere).
    pub closing: watch::Receiver<bool>,
}

/// The feed of this process, started by `Application::run_until_stopped`.
pub struct Feed {
    hub: Arc<Hub>,
    brokers: String,
    topic: String,
    rest_after: Duration,
    reading: IntGauge,
}

impl Feed {
    pub fn new(
        hub: Arc<Hub>,
        brokers: &str,
        topic: String,
        rest_after: Duration,
        reading: IntGauge,
    ) -> Feed {
        Feed {
            hub,
            brokers: brokers.to_owned(),
            topic,
            rest_after,
            reading,
        }
    }

    pub async fn run(self, stop: watch::Receiver<bool>) {
        feed::run(
            self.hub,
            self.brokers,
            self.topic,
            self.rest_after,
            self.reading,
            stop,
        )
        .await;
    }
}
