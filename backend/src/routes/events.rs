//! The backend as a Dapr subscriber: `GET /dapr/subscribe` (the programmatic form of
//! `dapr-components/subscriptions.yaml`) and `POST /api/events/task-events`, where Dapr delivers
//! `task-events` to record each task's history. The handler runs through
//! `taskflow_db::effects::handle_once`, the same exactly-once path the Kafka consumers use, and
//! its outcome becomes Dapr's answer: SUCCESS (recorded, or already), RETRY (database away),
//! DROP (undecodable or unknown). Internal routes: not in the OpenAPI document. The history
//! they record is served by `GET /api/{user_id}/tasks/{id}/history` (`routes::tasks`).

use actix_web::web::{Bytes, Data};
use actix_web::{HttpRequest, HttpResponse};
use diesel_async::AsyncPgConnection;
use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::json;
use shared_events::topics::{dead_letter_topic, TASK_EVENTS};
use shared_events::CloudEvent;
use taskflow_db::effects::{handle_once, Delivery, Handler, HandlerError};
use taskflow_db::DbPool;

use crate::configuration::Secret;
use crate::error::ApiError;

/// The consumer name of the history in `processed_events`.
const HISTORY_CONSUMER: &str = "backend-history";
pub const TASK_EVENTS_ROUTE: &str = "/api/events/task-events";

/// One subscription, as `GET /dapr/subscribe` lists it (Dapr's programmatic form).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub pubsubname: String,
    pub topic: String,
    pub routes: Routes,
    pub dead_letter_topic: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Routes {
    pub default: String,
}

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
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let event = delivery.task_event()?;
            taskflow_db::history::record(conn, delivery.event.id, event).await?;
            Ok(())
        })
    }
}

fn dapr_status(status: &str) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": status }))
}

/// Internal: Dapr's delivery of a `task-events` CloudEvent. Never reachable with a user's
/// token; with `APP_API_TOKEN` set, only with the matching `dapr-api-token`.
async fn task_events(
    req: HttpRequest,
    body: Bytes,
    pool: Data<DbPool>,
    token: Data<AppApiToken>,
) -> Result<HttpResponse, ApiError> {
    if req
        .headers()
        .contains_key(actix_web::http::header::AUTHORIZATION)
    {
        return Err(ApiError::Forbidden);
    }
    if let Some(expected) = &token.0 {
        let given = req.headers().get("dapr-api-token").map(|v| v.as_bytes());
        if given != Some(expected.expose().as_bytes()) {
            return Err(ApiError::Unauthorized(
                "dapr-api-token missing or wrong".into(),
            ));
        }
    }
    let (event, data) = match CloudEvent::decode(Some(&body)) {
        Ok(decoded) => decoded,
        Err(e) => {
            tracing::warn!(error = %e, "undecodable delivery dropped");
            return Ok(dapr_status("DROP"));
        }
    };
    let delivery = Delivery {
        event: &event,
        data: &data,
        topic: TASK_EVENTS,
    };
    Ok(
        match handle_once(&pool, HISTORY_CONSUMER, &History, delivery).await {
            Ok(_) => dapr_status("SUCCESS"),
            Err(HandlerError::Transient(reason)) => {
                tracing::warn!(event = %event.id, %reason, "delivery to retry");
                dapr_status("RETRY")
            }
            Err(HandlerError::Permanent(reason)) => {
                tracing::warn!(event = %event.id, %reason, "delivery dropped");
                dapr_status("DROP")
            }
        },
    )
}
