//! Structured logging with tracing: JSON for machines, pretty for people.

use tracing_subscriber::{fmt, EnvFilter};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    /// `json` or `pretty`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "json" => Ok(LogFormat::Json),
            "pretty" => Ok(LogFormat::Pretty),
            other => Err(format!(
                "LOG_FORMAT={other:?} is invalid: use json or pretty"
            )),
        }
    }
}

/// Install the global subscriber. `RUST_LOG` filters (default `info`). Safe to call twice:
/// the second call is a no-op, which tests rely on.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}

/// A metrics registry with the standard `process_*` metrics; each service adds its own
/// `taskflow_*` metrics to it.
pub fn registry() -> prometheus::Result<prometheus::Registry> {
    let registry = prometheus::Registry::new();
    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    Ok(registry)
}
