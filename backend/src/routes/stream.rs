//! `GET /api/{user_id}/stream`: the user's task changes as Server-Sent Events.
//!
//! Authenticated like every route, with `Authorization: Bearer`. The web UI reads it with
//! `fetch` rather than `EventSource` (which cannot send headers), so no token ever goes into a
//! URL (and so into logs) or a cookie (and so into CSRF's reach).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use actix_web::http::header;
use actix_web::web::{Bytes, Data};
use actix_web::{HttpRequest, HttpResponse};
use tokio::sync::watch;

use crate::auth::PathUser;
use crate::error::ApiError;
use crate::stream::hub::{Notice, Resume, Subscription};
use crate::stream::Live;

pub fn scope() -> actix_web::Scope {
    use actix_web::web;
    web::scope("/api/{user_id}/stream").service(web::resource("").route(web::get().to(stream)))
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(stream))]
pub struct StreamApi;

/// How long a client waits before reconnecting (the SSE `retry` field).
const RETRY_MS: u32 = 2000;
/// How long a new connection waits for a resting feed to read what came meanwhile; past it the
/// connection opens anyway and gets those notices as they are read.
const WAKE_WAIT: Duration = Duration::from_secs(3);

#[utoipa::path(
    get, path = "/api/{user_id}/stream", tag = "stream", operation_id = "stream_task_changes",
    params(
        ("user_id" = String, Path),
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event received: the events missed since are sent first, or `resync` when they are no longer known"),
    ),
    responses(
        (status = 200, description = "`text/event-stream`. First `event: ready` (or `event: resync`: reload, the events since Last-Event-ID are not known here) with the current id; then one `event: task` per change of the user's tasks, `data` `{\"event_type\", \"task_id\", \"user_id\", \"version\", \"occurred_at\"}`, `id` its offset on task-updates; a `: keep-alive` comment when idle. Ends when the client falls too far behind: reconnect with Last-Event-ID.", content_type = "text/event-stream", body = String),
        (status = 401, description = "Missing, invalid or expired token"),
        (status = 403, description = "The path's user is not the token's subject"),
        (status = 503, description = "The live stream is off in this process (STREAM_ENABLED=false)"),
    ),
    security(("bearer" = []))
)]
pub async fn stream(
    PathUser(user_id): PathUser,
    req: HttpRequest,
    live: Data<Live>,
) -> Result<HttpResponse, ApiError> {
    let hub = live
        .hub
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("the live stream is off in this process".into()))?;
    let last_event_id = req
        .headers()
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or_default());
    hub.wake(WAKE_WAIT).await;
    let subscription = hub.subscribe(&user_id, last_event_id);
    let body = futures::stream::unfold(
        Connection::new(subscription, live.keepalive, live.closing.clone()),
        |mut c| async move {
            let chunk = c.next().await?;
            Some((Ok::<_, Infallible>(chunk), c))
        },
    );
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        // Proxies such as nginx would otherwise buffer the stream.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

/// One client's stream: the opening lines, then notices and keep-alives.
struct Connection {
    opening: VecDeque<Bytes>,
    subscription: Subscription,
    keepalive: tokio::time::Interval,
    closing: watch::Receiver<bool>,
}

impl Connection {
    fn new(
        mut subscription: Subscription,
        keepalive: Duration,
        closing: watch::Receiver<bool>,
    ) -> Connection {
        let mut opening = VecDeque::from([Bytes::from(format!("retry: {RETRY_MS}\n\n"))]);
        let position = subscription.position;
        match std::mem::replace(&mut subscription.resume, Resume::Fresh) {
            Resume::Fresh => opening.push_back(marker("ready", position)),
            Resume::Resync => opening.push_back(marker("resync", position)),
            Resume::Replay(missed) => {
                opening.push_back(marker("ready", position));
                opening.extend(missed.iter().map(|n| task_event(n)));
            }
        }
        let keepalive = keepalive.max(Duration::from_millis(100));
        Connection {
            opening,
            subscription,
            keepalive: tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive),
            closing,
        }
    }

    /// The next chunk; None ends the response (the client was dropped as too slow, or the
    /// server is stopping).
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(chunk) = self.opening.pop_front() {
            return Some(chunk);
        }
        tokio::select! {
            notice = self.subscription.notices.recv() => notice.map(|n| task_event(&n)),
            _ = self.keepalive.tick() => Some(Bytes::from_static(b": keep-alive\n\n")),
            _ = self.closing.wait_for(|closing| *closing) => None,
        }
    }
}

/// `ready` or `resync`, with the position as id so that a client can resume from it.
fn marker(event: &str, position: Option<i64>) -> Bytes {
    let id = position.map(|p| format!("id: {p}\n")).unwrap_or_default();
    Bytes::from(format!("event: {event}\n{id}data: {{}}\n\n"))
}

fn task_event(notice: &Notice) -> Bytes {
    // `data` is one line of JSON (serde_json escapes newlines), as SSE requires.
    Bytes::from(format!(
        "event: task\nid: {}\ndata: {}\n\n",
        notice.offset, notice.data
    ))
}
