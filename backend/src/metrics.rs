//! Prometheus metrics: HTTP requests by route and status, database pool, outbox backlog.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::web::Data;
use actix_web::HttpMessage;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use taskflow_db::DbPool;
use tracing::Span;
use tracing_actix_web::{RequestId, RootSpanBuilder};

/// Seconds, for request and relay latencies: 1 ms to 5 s.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Every metric the backend exports, registered in its own registry.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    db_pool: IntGaugeVec,
    pub outbox_pending: IntGauge,
    pub outbox_oldest_age_seconds: IntGauge,
    pub outbox_published: IntCounterVec,
    pub outbox_publish_failures: IntCounterVec,
    /// One relay transaction by phase: `claim` (lock and claim), `publish` (until the broker
    /// acknowledged every row), `pass` (checkout to commit).
    pub outbox_relay_seconds: HistogramVec,
    /// Creates written per statement ([`crate::create_batches`]).
    pub create_batch_rows: Histogram,
    /// 1 while the live stream's feed reads `task-updates` (0 while it rests or reconnects).
    pub stream_feed_reading: IntGauge,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = taskflow_runtime::telemetry::registry()?;
        let http_requests = IntCounterVec::new(
            Opts::new(
                "taskflow_http_requests_total",
                "HTTP requests by route and status",
            ),
            &["method", "route", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "taskflow_http_request_duration_seconds",
                "HTTP request latency by route and status",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method", "route", "status"],
        )?;
        let db_pool = IntGaugeVec::new(
            Opts::new(
                "taskflow_db_pool_connections",
                "Connections of the API's request pools (all HTTP workers) by state",
            ),
            &["state"],
        )?;
        let outbox_pending =
            IntGauge::new("taskflow_outbox_pending", "Outbox rows not yet published")?;
        let outbox_oldest_age_seconds = IntGauge::new(
            "taskflow_outbox_oldest_pending_age_seconds",
            "Age of the oldest unpublished outbox row",
        )?;
        let outbox_published = IntCounterVec::new(
            Opts::new(
                "taskflow_outbox_published_total",
                "Outbox rows published, by topic",
            ),
            &["topic"],
        )?;
        let outbox_publish_failures = IntCounterVec::new(
            Opts::new(
                "taskflow_outbox_publish_failures_total",
                "Failed publish attempts, by topic",
            ),
            &["topic"],
        )?;
        let outbox_relay_seconds = HistogramVec::new(
            HistogramOpts::new(
                "taskflow_outbox_relay_seconds",
                "One relay pass that claimed rows, by phase (claim, publish, pass), and each vacuum of the outbox (vacuum)",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["phase"],
        )?;
        let create_batch_rows = Histogram::with_opts(
            HistogramOpts::new(
                "taskflow_create_batch_rows",
                "Creates written per statement (creates that arrive together are written together)",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
        )?;
        let stream_feed_reading = IntGauge::new(
            "taskflow_stream_feed_reading",
            "1 while this process reads task-updates for live streams, 0 while it rests (no connections) or reconnects",
        )?;
        // Series exist from the start, so rates and alerts see zeros rather than nothing.
        for topic in shared_events::topics::OUTBOX_TOPICS {
            outbox_published.with_label_values(&[topic]);
            outbox_publish_failures.with_label_values(&[topic]);
        }
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(db_pool.clone()))?;
        registry.register(Box::new(outbox_pending.clone()))?;
        registry.register(Box::new(outbox_oldest_age_seconds.clone()))?;
        registry.register(Box::new(outbox_published.clone()))?;
        registry.register(Box::new(outbox_publish_failures.clone()))?;
        registry.register(Box::new(outbox_relay_seconds.clone()))?;
        registry.register(Box::new(create_batch_rows.clone()))?;
        registry.register(Box::new(stream_feed_reading.clone()))?;
        Ok(Metrics {
            registry,
            http_requests,
            http_duration,
            db_pool,
            outbox_pending,
            outbox_oldest_age_seconds,
            outbox_published,
            outbox_publish_failures,
            outbox_relay_seconds,
            create_batch_rows,
            stream_feed_reading,
        })
    }

    /// The text exposition, with the gauges of the request pools sampled now (summed over the
    /// HTTP workers' pools).
    pub fn render(&self, pools: &[DbPool]) -> String {
        // One snapshot of each pool, so the four gauges agree with one another.
        let statuses: Vec<deadpool::Status> = pools.iter().map(|p| p.status()).collect();
        let sum =
            |of: fn(&deadpool::Status) -> usize| statuses.iter().map(of).sum::<usize>() as i64;
        self.db_pool
            .with_label_values(&["max"])
            .set(sum(|s| s.max_size));
        self.db_pool
            .with_label_values(&["open"])
            .set(sum(|s| s.size));
        self.db_pool
            .with_label_values(&["idle"])
            .set(sum(|s| s.available));
        self.db_pool
            .with_label_values(&["waiting"])
            .set(sum(|s| s.waiting));
        let mut buffer = Vec::new();
        // Encoding into a Vec only fails for malformed metric families, which we never build.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

/// Middleware recording each request under its route pattern (never the raw path, which
/// would give one time series per task id), and logging it.
pub async fn record(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    // A fixed set, or anyone could add time series by inventing methods.
    let method: &'static str = match *req.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let metrics = req.app_data::<Data<Metrics>>().cloned();
    let response = next.call(req).await?;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    // Inside TracingLogger's span, so the line carries the request id.
    tracing::info!(method, %route, status, elapsed_ms = elapsed.as_secs_f64() * 1e3, "request");
    if let Some(metrics) = metrics {
        let status = status.to_string();
        let labels = [method, route.as_str(), status.as_str()];
        metrics.http_requests.with_label_values(&labels).inc();
        metrics
            .http_duration
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
    }
    Ok(response)
}

/// The span each request runs in (`TracingLogger`'s root span): its id, and nothing else. The
/// line [`record`] logs carries the method, route, status and time; the default root span's
/// eleven fields (host, scheme, user agent, raw target, OpenTelemetry names...) were formatted
/// into every span and parsed back into every JSON line, about half of what logging a request
/// cost: a 50-task list page took 177-182 µs of the backend's CPU logging JSON at `info`, 148-151
/// µs at `warn`, and 162-173 µs at `info` with this span.
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        match request.extensions().get::<RequestId>() {
            Some(id) => tracing::info_span!("request", request_id = %**id),
            None => tracing::info_span!("request"),
        }
    }

    /// Nothing to add: [`record`] logs the outcome, and `ApiError` logs what failed inside.
    fn on_request_end<B: MessageBody>(
        _span: Span,
        _outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use actix_web::middleware::from_fn;
    use actix_web::{test, web, App, HttpResponse};
    use serde_json::Value;
    use taskflow_runtime::telemetry::{subscriber, LogFormat};
    use tracing_actix_web::TracingLogger;
    use tracing_subscriber::EnvFilter;

    use super::{record, RequestSpan};

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[actix_web::test]
    async fn a_request_is_one_json_line_with_its_id_route_and_status() {
        let lines = Lines::default();
        let writer = lines.clone();
        let _logging = tracing::subscriber::set_default(subscriber(
            LogFormat::Json,
            EnvFilter::new("info"),
            move || writer.clone(),
        ));
        let app = test::init_service(
            App::new()
                .wrap(from_fn(record))
                .wrap(TracingLogger::<RequestSpan>::new())
                .route("/api/{user_id}/tasks", web::get().to(HttpResponse::Ok)),
        )
        .await;
        for _ in 0..2 {
            let request = test::TestRequest::get()
                .uri("/api/alice/tasks?q=secret")
                .to_request();
            assert!(test::call_service(&app, request)
                .await
                .status()
                .is_success());
        }

        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let logged: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(logged.len(), 2, "{text}");
        for line in &logged {
            assert_eq!(line["message"], "request", "{line}");
            assert_eq!(line["method"], "GET", "{line}");
            assert_eq!(line["route"], "/api/{user_id}/tasks", "{line}");
            assert_eq!(line["status"], 200, "{line}");
            assert!(line["elapsed_ms"].is_f64(), "{line}");
            // The span holds the id alone: not the raw path (a search's words), agent or host.
            let span = line["span"].as_object().unwrap();
            assert_eq!(span.len(), 2, "{line}");
            assert_eq!(span["name"], "request", "{line}");
            let id = span["request_id"].as_str().unwrap();
            assert!(uuid::Uuid::parse_str(id).is_ok(), "{line}");
        }
        assert_ne!(
            logged[0]["span"]["request_id"],
            logged[1]["span"]["request_id"]
        );
        assert!(!text.contains("secret"), "{text}");
    }
}
