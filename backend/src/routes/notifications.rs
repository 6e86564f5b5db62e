//! `/api/{user_id}/notifications`: the user's notifications (one per reminder firing, written by
//! the notifier) with each channel's delivery, and marking one read.

use actix_web::web::{Data, Query};
use actix_web::HttpResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use taskflow_db::notifications::{self, DeliveryRow, NotificationRow, DELIVERED, FAILED, PENDING};
use taskflow_db::DbPool;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::{NotificationId, PathUser};
use crate::error::ApiError;

pub fn scope() -> actix_web::Scope {
    use actix_web::web;
    web::scope("/api/{user_id}/notifications")
        .service(web::resource("").route(web::get().to(list)))
        .service(web::resource("/{id}/read").route(web::post().to(read)))
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(list, read))]
pub struct NotificationsApi;

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    /// in_app or webhook.
    pub channel: String,
    /// pending, delivered or failed.
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationView {
    pub id: Uuid,
    pub reminder_id: Uuid,
    pub task_id: Uuid,
    pub title: String,
    pub due_at: DateTime<Utc>,
    pub remind_at: DateTime<Utc>,
    /// pending, delivered (every channel) or failed (one channel gave up).
    pub status: String,
    pub delivered_at: Option<DateTime<Utc>>,
    pub read_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub deliveries: Vec<DeliveryView>,
}

impl NotificationView {
    fn new(n: NotificationRow, deliveries: Vec<DeliveryRow>) -> Self {
        NotificationView {
            id: n.id,
            reminder_id: n.reminder_id,
            task_id: n.task_id,
            title: n.title,
            due_at: n.due_at,
            remind_at: n.remind_at,
            status: n.status,
            delivered_at: n.delivered_at,
            read_at: n.read_at,
            created_at: n.created_at,
            deliveries: deliveries
                .into_iter()
                .map(|d| DeliveryView {
                    channel: d.channel,
                    status: d.status,
                    attempts: d.attempts,
                    last_error: d.last_error,
                    delivered_at: d.delivered_at,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationPage {
    pub items: Vec<NotificationView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NotificationQuery {
    /// pending, delivered or failed.
    #[param(pattern = "^(pending|delivered|failed)$")]
    pub status: Option<String>,
    /// true: only unread; false: only read.
    pub unread: Option<bool>,
}

/// The most notifications one list answers with (the newest first).
const LIST_LIMIT: i64 = 200;

#[utoipa::path(
    get, operation_id = "list_notifications", path = "/api/{user_id}/notifications", tag = "notifications",
    params(("user_id" = String, Path), NotificationQuery),
    responses((status = 200, description = "The newest notifications (at most 200)", body = NotificationPage), (status = 400, description = "Bad query"), (status = 401, description = "Missing, invalid or expired token"), (status = 403, description = "The path's user is not the token's subject")),
    security(("bearer" = []))
)]
pub async fn list(
    PathUser(user_id): PathUser,
    query: Query<NotificationQuery>,
    pool: Data<DbPool>,
) -> Result<HttpResponse, ApiError> {
    let status = query.status.as_deref();
    if status.is_some_and(|s| ![PENDING, DELIVERED, FAILED].contains(&s)) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "status must be pending, delivered or failed",
        ));
    }
    let mut conn = pool.get().await?;
    let rows = notifications::list(&mut conn, &user_id, status, query.unread, LIST_LIMIT).await?;
    Ok(HttpResponse::Ok().json(NotificationPage {
        items: rows
            .into_iter()
            .map(|(n, d)| NotificationView::new(n, d))
            .collect(),
    }))
}

#[utoipa::path(
    post, operation_id = "mark_notification_read", path = "/api/{user_id}/notifications/{id}/read", tag = "notifications",
    params(("user_id" = String, Path), ("id" = Uuid, Path)),
    responses((status = 204, description = "Marked read (the first time is kept)"), (status = 401, description = "Missing, invalid or expired token"), (status = 403, description = "The path's user is not the token's subject"), (status = 404, description = "No such notification")),
    security(("bearer" = []))
)]
pub async fn read(
    PathUser(user_id): PathUser,
    NotificationId(id): NotificationId,
    pool: Data<DbPool>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = pool.get().await?;
    if notifications::mark_read(&mut conn, &user_id, id).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound("no such notification"))
    }
}
