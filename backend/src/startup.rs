//! Builds the application: pool, authenticator, relay and the HTTP server, on a port that tests
//! can set to 0 and read back.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::http::StatusCode;
use actix_web::middleware::{from_fn, ErrorHandlerResponse, ErrorHandlers};
use actix_web::web::{self, Data};
use actix_web::{App, HttpResponse, HttpServer};
use anyhow::{bail, Context};
use taskflow_db::jobs::{JobRunner, RunnerSettings};
use taskflow_db::reminders::{FireReminders, FIRE_JOB};
use taskflow_db::DbPool;
use taskflow_kafka::publisher::{DaprPublisher, KafkaPublisher, Publisher};
use tokio::sync::watch;
use tracing_actix_web::TracingLogger;

use crate::auth::Authenticator;
use crate::configuration::{PublisherKind, Settings};
use crate::create_batches::{self, CreateBatches};
use crate::error::{self, ApiError, BODY_LIMIT};
use crate::metrics::{self, Metrics};
use crate::outbox::handoff::PayloadHandoff;
use crate::outbox::relay::Relay;
use crate::outbox::retention;
use crate::outbox::{EventPathHealth, RelayWakeup};
use crate::routes::{
    events, health, notifications, preferences, recurrence, reminders, stream, tasks, ui,
};
use crate::stream::{Feed, Hub, Live};
use crate::worker_pools::WorkerPools;

/// Connections for what runs beside the requests: migrations, the reminder scheduler's jobs,
/// pruning and the preferences store.
const BACKGROUND_POOL_SIZE: usize = 4;

/// The methods of the routes outside the OpenAPI document (the Dapr subscriber, the document
/// itself), for the `Allow` header; the documented ones come from the document.
const UNDOCUMENTED_ROUTES: [(&str, &str); 3] = [
    ("/dapr/subscribe", "GET"),
    (events::TASK_EVENTS_ROUTE, "POST"),
    ("/openapi.json", "GET"),
];

fn allowed_methods(pattern: &str) -> Option<&'static str> {
    crate::openapi::allowed_methods(pattern).or_else(|| {
        UNDOCUMENTED_ROUTES
            .iter()
            .find(|(path, _)| *path == pattern)
            .map(|(_, methods)| *methods)
    })
}

pub struct Application {
    port: u16,
    server: Server,
    outbox: Option<OutboxTask>,
    scheduler: Option<JobRunner>,
    feed: Option<Feed>,
    /// The background pool (migrations, scheduler, pruning, preferences); requests use their
    /// HTTP worker's own ([`WorkerPools`]).
    pub pool: DbPool,
    pub metrics: Data<Metrics>,
    pub event_path: Data<EventPathHealth>,
}

/// What looks after the outbox in this process.
enum OutboxTask {
    /// Publishes it (and prunes sent rows).
    Relay(Box<Relay>),
    /// Debezium publishes it; only prune, with this retention.
    Prune(Duration),
}

impl Application {
    /// Migrate the database, bind the listener and assemble the app. Nothing runs until
    /// [`Application::run_until_stopped`].
    pub async fn build(settings: &Settings) -> anyhow::Result<Application> {
        let database_url = settings.common.database_url.expose();
        let api_url = taskflow_db::pool::generic_plans(&taskflow_db::pool::named(
            database_url,
            "taskflow-backend",
        ));
        let workers = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        // The pages that share a connection (backend::read_pipeline), told apart in
        // pg_stat_activity.
        let lists_url = taskflow_db::pool::generic_plans(&taskflow_db::pool::named(
            database_url,
            "taskflow-backend-lists",
        ));
        let request_pools = Arc::new(WorkerPools::new(
            &api_url,
            &lists_url,
            settings.common.db_pool_size,
            workers,
        )?);
        let pool = taskflow_db::pool(&api_url, BACKGROUND_POOL_SIZE)?;
        let applied = taskflow_db::migrations::migrate(&pool).await?;
        if applied > 0 {
            tracing::info!(applied, "database migrations applied");
        }
        let listener = TcpListener::bind(settings.http_addr)
            .with_context(|| format!("binding {}", settings.http_addr))?;
        let port = listener.local_addr()?.port();
        let metrics = Data::new(Metrics::new()?);
        let event_path = Data::new(EventPathHealth::default());
        let auth = Data::new(Authenticator::from_settings(settings).await);
        let outbox = if !settings.events.relay_enabled {
            None
        } else if settings.events.publisher == PublisherKind::Debezium {
            Some(OutboxTask::Prune(settings.events.retention))
        } else {
            // A connection of its own: on the API's pool, a pass waited behind the requests
            // (19 ms of a 62 ms pass under 1,000 creates/s at 16 connections).
            let relay_url = taskflow_db::pool::named(database_url, "taskflow-outbox-relay");
            Some(OutboxTask::Relay(Box::new(Relay::new(
                taskflow_db::pool(&relay_url, 1)?,
                relay_url,
                settings.common.topic_prefix.clone(),
                publisher(settings).await?,
                settings.events.clone(),
                metrics.clone().into_inner(),
                event_path.clone().into_inner(),
            ))))
        };
        let subscriber = Subscriber {
            state: Data::new(events::SubscriberState {
                pubsub: settings.events.dapr_pubsub_name.clone(),
            }),
            token: Data::new(events::AppApiToken(settings.app_api_token.clone())),
        };
        // Reminders fire on the job runner: a job queued at each reminder's time, woken by
        // `NOTIFY jobs` on commit in every replica, claimed by one.
        let scheduler = if settings.reminder_scheduler_enabled {
            let runner = JobRunner::new(
                pool.clone(),
                settings.common.database_url.expose(),
                RunnerSettings {
                    concurrency: 1,
                    poll_interval: Duration::from_secs(30),
                    base_backoff: Duration::from_millis(200),
                    max_backoff: Duration::from_secs(30),
                    shutdown_budget: Duration::from_secs(5),
                },
                &metrics.registry,
            )?;
            Some(runner.register(FIRE_JOB, Arc::new(FireReminders)))
        } else {
            None
        };
        // Every process reads all of task-updates itself: a replica serves its own clients.
        let hub = settings
            .stream
            .enabled
            .then(|| Hub::new(settings.stream.client_buffer, settings.stream.replay));
        let feed = hub.clone().map(|hub| {
            Feed::new(
                hub,
                &settings.common.kafka_brokers,
                format!(
                    "{}{}",
                    settings.common.topic_prefix,
                    shared_events::topics::TASK_UPDATES
                ),
                settings.stream.feed_rest,
                metrics.stream_feed_reading.clone(),
            )
        });
        let live = Data::new(Live {
            hub,
            keepalive: settings.stream.keepalive,
            closing: taskflow_runtime::lifecycle::shutdown_signal(),
        });
        // Without a relay in this process nobody listens; another replica's relay polls.
        let (wakeup, handoff): (Data<RelayWakeup>, _) = match &outbox {
            Some(OutboxTask::Relay(r)) => (Data::from(r.wakeup()), Some(r.handoff())),
            _ => (Data::default(), None),
        };
        let store: preferences::Store = Data::new(settings.common.state_store.open(pool.clone())?);
        let server = run(
            listener,
            workers,
            request_pools,
            store,
            auth,
            metrics.clone(),
            event_path.clone(),
            subscriber,
            wakeup,
            handoff,
            live,
            settings.create_batches,
        )?;
        Ok(Application {
            port,
            server,
            outbox,
            scheduler,
            feed,
            pool,
            metrics,
            event_path,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serve until the server stops (SIGTERM or Ctrl-C), then stop the relay and the scheduler.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let (stop, stopped) = watch::channel(false);
        let scheduler = self
            .scheduler
            .map(|runner| tokio::spawn(runner.run(stopped.clone())));
        let feed = self
            .feed
            .map(|feed| tokio::spawn(feed.run(stopped.clone())));
        let outbox = self.outbox.map(|task| match task {
            OutboxTask::Relay(relay) => tokio::spawn(relay.run(stopped)),
            OutboxTask::Prune(keep) => {
                tokio::spawn(retention::run(self.pool.clone(), keep, stopped))
            }
        });
        let served = self.server.await;
        let _ = stop.send(true);
        if let Some(scheduler) = scheduler {
            // The runner gives a running job its shutdown budget; nothing is lost past it.
            let _ = scheduler.await;
        }
        if let Some(feed) = feed {
            // It stops at once: nothing to hand over.
            let _ = feed.await;
        }
        if let Some(outbox) = outbox {
            if tokio::time::timeout(Duration::from_secs(10), outbox)
                .await
                .is_err()
            {
                tracing::warn!("the outbox relay did not stop within 10 s");
            }
        }
        served
    }
}

/// The configured publisher; the Dapr one first waits for its sidecar.
async fn publisher(settings: &Settings) -> anyhow::Result<Arc<dyn Publisher>> {
    let brokers = &settings.common.kafka_brokers;
    let settings = &settings.events;
    Ok(match settings.publisher {
        PublisherKind::Kafka => {
            let kafka =
                KafkaPublisher::new(brokers, settings.publish_timeout, settings.compression)
                    .context("creating the Kafka producer")?;
            // Connect now, so the first event does not pay for the connection. An idempotent
            // producer still holds messages until it has its producer id, up to 500 ms after it
            // was created (README "Performance", section "last").
            if let Err(e) = kafka.check().await {
                tracing::warn!(error = %e, "Kafka not reachable yet; events wait in the outbox");
            }
            Arc::new(kafka)
        }
        PublisherKind::Dapr => {
            let dapr = DaprPublisher::new(
                &settings.dapr_http_endpoint,
                &settings.dapr_pubsub_name,
                settings.publish_timeout,
            )
            .context("creating the Dapr client")?;
            // Serving before the sidecar can publish only fills the outbox; wait a while for it.
            if let Err(e) = dapr.wait_until_ready(settings.publish_timeout).await {
                tracing::warn!(error = %e, "Dapr sidecar not ready; events wait in the outbox");
            }
            Arc::new(dapr)
        }
        PublisherKind::Debezium => bail!("with EVENT_PUBLISHER=debezium nothing here publishes"),
    })
}

/// Give actix's own empty error responses (405, unmatched routes) the API's JSON error body.
fn json_error_body<B>(
    res: actix_web::dev::ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .response()
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let error = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            ApiError::bad_request("method_not_allowed", "method not allowed on this resource")
        }
        StatusCode::NOT_FOUND => ApiError::NotFound("no such resource"),
        _ => return Ok(ErrorHandlerResponse::Response(res.map_into_left_body())),
    };
    let mut response = actix_web::ResponseError::error_response(&error);
    *response.status_mut() = status;
    let (req, _) = res.into_parts();
    if status == StatusCode::METHOD_NOT_ALLOWED {
        // RFC 9110: a 405 lists what the resource does answer.
        if let Some(allow) = req.match_pattern().as_deref().and_then(allowed_methods) {
            response.headers_mut().insert(
                actix_web::http::header::ALLOW,
                actix_web::http::header::HeaderValue::from_static(allow),
            );
        }
    }
    Ok(ErrorHandlerResponse::Response(
        actix_web::dev::ServiceResponse::new(req, response).map_into_right_body(),
    ))
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such resource"))
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(crate::openapi::document())
}

/// What the Dapr subscription routes need.
struct Subscriber {
    state: Data<events::SubscriberState>,
    token: Data<events::AppApiToken>,
}

// One parameter per shared piece of state the routes take; grouping them would only rename them.
#[allow(clippy::too_many_arguments)]
fn run(
    listener: TcpListener,
    workers: usize,
    pools: Arc<WorkerPools>,
    store: preferences::Store,
    auth: Data<Authenticator>,
    metrics: Data<Metrics>,
    event_path: Data<EventPathHealth>,
    subscriber: Subscriber,
    wakeup: Data<RelayWakeup>,
    handoff: Option<Arc<PayloadHandoff>>,
    live: Data<Live>,
    create_limits: create_batches::Limits,
) -> anyhow::Result<Server> {
    let migrations_seen = Data::new(health::MigrationsSeen::default());
    let all_pools = Data::from(pools.clone());
    let server = HttpServer::new(move || {
        let (pool, pipeline) = pools.for_worker();
        let batches = CreateBatches::new(
            pool.clone(),
            create_limits,
            metrics.create_batch_rows.clone(),
            handoff.clone(),
        );
        App::new()
            .wrap(
                ErrorHandlers::new()
                    .handler(StatusCode::METHOD_NOT_ALLOWED, json_error_body)
                    .handler(StatusCode::NOT_FOUND, json_error_body),
            )
            .wrap(from_fn(metrics::record))
            .wrap(TracingLogger::<metrics::RequestSpan>::new())
            .app_data(Data::new(pool))
            .app_data(Data::new(pipeline))
            .app_data(Data::new(batches))
            .app_data(all_pools.clone())
            .app_data(store.clone())
            .app_data(auth.clone())
            .app_data(subscriber.state.clone())
            .app_data(subscriber.token.clone())
            .app_data(metrics.clone())
            .app_data(event_path.clone())
            .app_data(wakeup.clone())
            .app_data(migrations_seen.clone())
            .app_data(live.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(BODY_LIMIT)
                    .content_type_required(true)
                    .content_type(|mime| {
                        mime.subtype() == actix_web::mime::JSON
                            || mime.suffix() == Some(actix_web::mime::JSON)
                    })
                    .error_handler(error::json_error),
            )
            .app_data(web::PathConfig::default().error_handler(error::path_error))
            .app_data(web::QueryConfig::default().error_handler(error::query_error))
            .configure(health::routes)
            .configure(events::routes)
            .service(web::resource("/openapi.json").route(web::get().to(openapi)))
            .service(tasks::scope())
            .service(reminders::scope())
            .service(reminders::internal_scope())
            .service(notifications::scope())
            .service(preferences::scope())
            .service(stream::scope())
            .service(recurrence::scope())
            .configure(ui::routes)
            .default_service(web::to(not_found))
    })
    .workers(workers)
    .listen(listener)?
    .shutdown_timeout(10)
    .run();
    Ok(server)
}
