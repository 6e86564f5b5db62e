//! The notifier's delivery metrics, by channel.

use chrono::{DateTime, Utc};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use taskflow_db::preferences::Channel;

pub struct Metrics {
    delivered: IntCounterVec,
    failed: IntCounterVec,
    retries: IntCounterVec,
    latency: HistogramVec,
}

impl Metrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounterVec> {
            let c = IntCounterVec::new(Opts::new(name, help), &["channel"])?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "taskflow_notification_delivery_seconds",
                "From a reminder's time to its delivery, by channel",
            )
            .buckets(vec![
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
            ]),
            &["channel"],
        )?;
        registry.register(Box::new(latency.clone()))?;
        let metrics = Metrics {
            delivered: counter(
                "taskflow_notifications_delivered_total",
                "Notifications delivered, by channel",
            )?,
            failed: counter(
                "taskflow_notifications_failed_total",
                "Notifications that finally failed, by channel",
            )?,
            retries: counter(
                "taskflow_notification_retries_total",
                "Failed delivery attempts that will be retried, by channel",
            )?,
            latency,
        };
        // Every channel's series exists from the start, at zero.
        for channel in [Channel::InApp, Channel::Webhook] {
            let c = [channel.as_str()];
            metrics.delivered.with_label_values(&c);
            metrics.failed.with_label_values(&c);
            metrics.retries.with_label_values(&c);
            metrics.latency.with_label_values(&c);
        }
        Ok(metrics)
    }

    pub fn delivered(&self, channel: Channel, remind_at: DateTime<Utc>) {
        let c = [channel.as_str()];
        self.delivered.with_label_values(&c).inc();
        let seconds = (Utc::now() - remind_at).num_milliseconds().max(0) as f64 / 1000.0;
        self.latency.with_label_values(&c).observe(seconds);
    }

    pub fn failed(&self, channel: Channel) {
        self.failed.with_label_values(&[channel.as_str()]).inc();
    }

    pub fn retried(&self, channel: Channel) {
        self.retries.with_label_values(&[channel.as_str()]).inc();
    }
}
