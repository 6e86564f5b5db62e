//! The backend as a Dapr subscriber: `GET /dapr/subscribe` (the programmatic form of
//! `dapr-components/subscriptions.yaml`) and `POST /api/events/task-events`, where Dapr delivers
//! `task-events` to record each task's history. Deliveries run through
//! `taskflow_runtime::dapr::deliver`, the exactly-once path the Kafka consumers use, and its
//! outcome becomes Dapr's answer: SUCCESS (recorded, or already), RETRY (database away),
//! DROP (undecodable or unknown). Internal routes: not in the OpenAPI document. The history
//! they record is served by `GET /api/{user_id}/tasks/{id}/history` (`routes::tasks`).

use actix_web::web::{Bytes, Data};
use actix_web::{HttpRequest, HttpResponse};
use diesel_async::AsyncPgConnection;
use futures::future::BoxFuture;
use shared_events::topics::{dead_letter_topic, TASK_EVENTS};
use taskflow_db::effects::{AfterCommit, Delivery, Handler, HandlerError};
use taskflow_db::DbPool;
use taskflow_runtime::dapr::{self, Refused, Routes, Subscription};

use crate::configuration::Secret;
use crate::error::ApiError;

/// The consumer name of the history in `processed_events`.
const HISTORY_CONSUMER: &str = "backend-history";
pub const TASK_EVENTS_ROUTE: &str = "/api/events/task-events";

/// The backend's subscriptions: the one source `GET /dapr/subscribe` serves, which a test
/// compares with `dapr-components/subscriptions.yaml` (the declarative form).
pub fn subscriptions(pubsub: &str) -> Vec<Subscription> {
    vec![Subscription {
        pubsubname: pubsub.to_owned(),
        topic: TASK_EVENTS.to_owned(),
        routes: Routes {
            default: TASK_EVENTS_ROUTE.to_owned(),
        },
        dead_letter_topic: dead_letter_topic(TASK_EVENTS),
    }]
}

/// `APP_API_TOKEN`, which Dapr sends as `dapr-api-token` when configured.
#[derive(Clone)]
pub struct AppApiToken(pub Option<Secret>);

impl AppApiToken {
    /// Whether `req` may call an internal route (deliveries, the cron binding).
    pub fn authorize(&self, req: &HttpRequest) -> Result<(), ApiError> {
        dapr::authorize(req, self.0.as_ref()).map_err(|e| match e {
            Refused::UserToken => ApiError::Forbidden,
            Refused::ApiToken => ApiError::Unauthorized(e.to_string()),
        })
    }
}

pub struct SubscriberState {
    pub pubsub: String,
}

pub fn routes(cfg: &mut actix_web::web::ServiceConfig) {
    use actix_web::web;
    cfg.service(web::resource("/dapr/subscribe").route(web::get().to(dapr_subscribe)))
        .service(web::resource(TASK_EVENTS_ROUTE).route(web::post().to(task_events)));
}

async fn dapr_subscribe(state: Data<SubscriberState>) -> HttpResponse {
    HttpResponse::Ok().json(subscriptions(&state.pubsub))
}

struct History;

impl Handler for History {
    fn handle<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        delivery: Delivery<'a>,
    ) -> BoxFuture<'a, Result<Option<AfterCommit>, HandlerError>> {
        Box::pin(async move {
            let event = delivery.task_event()?;
            taskflow_db::history::record(conn, delivery.event.id, event).await?;
            Ok(None)
        })
    }
}

/// Internal: Dapr's delivery of a `task-events` CloudEvent. Never reachable with a user's
/// token; with `APP_API_TOKEN` set, only with the matching `dapr-api-token`.
async fn task_events(
    req: HttpRequest,
    body: Bytes,
    pool: Data<DbPool>,
    token: Data<AppApiToken>,
) -> Result<HttpResponse, ApiError> {
    token.authorize(&req)?;
    let outcome = dapr::deliver(&pool, HISTORY_CONSUMER, &History, TASK_EVENTS, &body).await;
    Ok(outcome.response())
}
