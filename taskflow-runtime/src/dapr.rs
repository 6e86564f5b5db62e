//! Dapr's app-facing contract, shared by every service that Dapr pushes to: the subscriptions an
//! app lists on `GET /dapr/subscribe`, the `dapr-api-token` check of internal routes, and push
//! deliveries run through [`handle_once`] (the Kafka consumer's batch path, one event at a
//! time) with their outcome answered as Dapr documents it: SUCCESS, RETRY or DROP in a 2xx body.

use actix_web::http::header::AUTHORIZATION;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::json;
use shared_events::CloudEvent;
use taskflow_db::effects::{handle_once, Delivery, Handled, Handler, HandlerError};
use taskflow_db::DbPool;

use crate::config::Secret;

/// One subscription, as `GET /dapr/subscribe` lists it (Dapr's programmatic form); the
/// declarative twins are in `dapr-components/subscriptions.yaml`.
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

/// Why an internal route refused a caller.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("internal route: user tokens are not accepted")]
    UserToken,
    #[error("dapr-api-token missing or wrong")]
    ApiToken,
}

/// Internal routes (deliveries, bindings) never take a user's token; with `APP_API_TOKEN` set
/// they need it as `dapr-api-token`, which the sidecar then sends on every call to the app.
pub fn authorize(req: &HttpRequest, app_api_token: Option<&Secret>) -> Result<(), Refused> {
    if req.headers().contains_key(AUTHORIZATION) {
        return Err(Refused::UserToken);
    }
    if let Some(expected) = app_api_token {
        let given = req.headers().get("dapr-api-token").map(|v| v.as_bytes());
        if given != Some(expected.expose().as_bytes()) {
            return Err(Refused::ApiToken);
        }
    }
    Ok(())
}

/// The workers' rendering; the backend maps [`Refused`] onto its own error type.
impl ResponseError for Refused {
    fn status_code(&self) -> StatusCode {
        match self {
            Refused::UserToken => StatusCode::FORBIDDEN,
            Refused::ApiToken => StatusCode::UNAUTHORIZED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let code = match self {
            Refused::UserToken => "forbidden",
            Refused::ApiToken => "unauthorized",
        };
        HttpResponse::build(self.status_code()).json(json!({
            "error": {"code": code, "message": self.to_string(), "details": {}}
        }))
    }
}

/// What became of one push delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Handled,
    Duplicate,
    /// The handler has nothing to do with it.
    Ignored,
    /// Database away or the like: Dapr delivers it again.
    Retry,
    /// Undecodable, unknown, or never handleable: Dapr dead-letters it.
    Drop,
}

impl Outcome {
    /// Dapr's status word for it.
    pub fn status(self) -> &'static str {
        match self {
            Outcome::Handled | Outcome::Duplicate | Outcome::Ignored => "SUCCESS",
            Outcome::Retry => "RETRY",
            Outcome::Drop => "DROP",
        }
    }

    /// The outcome label of `taskflow_consumer_messages_total`, as the Kafka consumer counts.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Handled => "handled",
            Outcome::Duplicate => "duplicate",
            Outcome::Ignored => "ignored",
            Outcome::Retry => "retried",
            Outcome::Drop => "dead_lettered",
        }
    }

    /// The answer Dapr reads: 200 with the status (a non-2xx would mean "retry" whatever it said).
    pub fn response(self) -> HttpResponse {
        HttpResponse::Ok().json(json!({ "status": self.status() }))
    }
}

/// Decode a delivered CloudEvent (structured, with Dapr's extra attributes) and run `handler`
/// once per `(consumer, event id)`.
pub async fn deliver(
    pool: &DbPool,
    consumer: &str,
    handler: &dyn Handler,
    topic: &str,
    body: &[u8],
) -> Outcome {
    let (event, data) = match CloudEvent::decode(Some(body)) {
        Ok(decoded) => decoded,
        Err(e) => {
            tracing::warn!(%topic, error = %e, "undecodable delivery dropped");
            return Outcome::Drop;
        }
    };
    let delivery = Delivery {
        event: &event,
        data: &data,
        topic,
    };
    match handle_once(pool, consumer, handler, delivery).await {
        Ok(Handled::Applied) => Outcome::Handled,
        Ok(Handled::Duplicate) => Outcome::Duplicate,
        Ok(Handled::Ignored) => Outcome::Ignored,
        Err(HandlerError::Transient(reason)) => {
            tracing::warn!(event = %event.id, %topic, %reason, "delivery to retry");
            Outcome::Retry
        }
        Err(HandlerError::Permanent(reason)) => {
            tracing::warn!(event = %event.id, %topic, %reason, "delivery dropped");
            Outcome::Drop
        }
    }
}
