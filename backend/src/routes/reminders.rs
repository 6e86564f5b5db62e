//! `/api/{user_id}/reminders`: the user's reminders and snoozing one; and
//! `POST /internal/reminders/scan`, one scan for due reminders: the route of the Dapr cron binding
//! `dapr-components/binding-cron.yaml`, guarded like Dapr's deliveries (`APP_API_TOKEN`).

use actix_web::web::{Data, Json, Query};
use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, TimeDelta, Utc};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::{PathUser, ReminderId};
use crate::error::ApiError;
use crate::routes::events::AppApiToken;
use taskflow_db::reminders::{self, ReminderRow, ReminderStatus, SnoozeError};
use taskflow_db::DbPool;

/// The `/api/{user_id}/reminders` resource.
pub fn scope() -> actix_web::Scope {
    use actix_web::web;
    web::scope("/api/{user_id}/reminders")
        .service(web::resource("").route(web::get().to(list)))
        .service(web::resource("/{id}/snooze").route(web::post().to(snooze)))
}

/// Operations endpoints that are not under a user: never expose them through the ingress.
pub fn internal_scope() -> actix_web::Scope {
    use actix_web::web;
    web::scope("/internal/reminders").service(web::resource("/scan").route(web::post().to(scan)))
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(list, snooze, scan))]
pub struct RemindersApi;

/// A reminder of a task.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReminderView {
    pub id: Uuid,
    pub task_id: Uuid,
    /// The task's due date when the reminder was scheduled.
    pub due_at: DateTime<Utc>,
    /// When it fires (later than `due_at - reminder_minutes_before` once snoozed).
    pub remind_at: DateTime<Utc>,
    /// pending, fired or cancelled.
    pub status: String,
    /// The last time it fired.
    pub fired_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<ReminderRow> for ReminderView {
    fn from(r: ReminderRow) -> Self {
        ReminderView {
            id: r.id,
            task_id: r.task_id,
            due_at: r.due_at,
            remind_at: r.remind_at,
            status: r.status,
            fired_at: r.fired_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReminderPage {
    pub items: Vec<ReminderView>,
}

/// `?status=` of the list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReminderQuery {
    /// pending, fired or cancelled; all when absent.
    #[param(value_type = Option<String>, pattern = "^(pending|fired|cancelled)$")]
    pub status: Option<ReminderStatus>,
}

/// The most reminders one list answers with (the earliest first).
const LIST_LIMIT: i64 = 500;

#[utoipa::path(
    get, operation_id = "list_reminders", path = "/api/{user_id}/reminders", tag = "reminders",
    params(("user_id" = String, Path), ReminderQuery),
    responses((status = 200, description = "The user's reminders by time (at most 500)", body = ReminderPage), (status = 400, description = "Bad query"), (status = 401, description = "Missing, invalid or expired token"), (status = 403, description = "The path's user is not the token's subject")),
    security(("bearer" = []))
)]
pub async fn list(
    PathUser(user_id): PathUser,
    query: Query<ReminderQuery>,
    pool: Data<DbPool>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = pool.get().await?;
    let rows = reminders::list(&mut conn, &user_id, query.status, LIST_LIMIT).await?;
    Ok(HttpResponse::Ok().json(ReminderPage {
        items: rows.into_iter().map(ReminderView::from).collect(),
    }))
}

/// How long to snooze.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnoozeBody {
    /// 1 to 1440.
    #[schema(minimum = 1, maximum = 1440)]
    #[serde(deserialize_with = "crate::domain::task::whole_number")]
    pub minutes: i64,
}

impl From<SnoozeError> for ApiError {
    fn from(e: SnoozeError) -> Self {
        match e {
            SnoozeError::NotFound => ApiError::NotFound("no such reminder"),
            SnoozeError::NotFired | SnoozeError::AlreadyPending => ApiError::Conflict {
                code: "reminder_not_snoozable",
                message: e.to_string(),
            },
            SnoozeError::Database(e) => e.into(),
        }
    }
}

#[utoipa::path(
    post, operation_id = "snooze_reminder", path = "/api/{user_id}/reminders/{id}/snooze", tag = "reminders",
    params(("user_id" = String, Path), ("id" = Uuid, Path)),
    request_body = SnoozeBody,
    responses(
        (status = 200, description = "The re-armed reminder, pending at now + minutes", body = ReminderView),
        (status = 400, description = "Malformed JSON or wrong types"), (status = 401, description = "Missing, invalid or expired token"), (status = 403, description = "The path's user is not the token's subject"),
        (status = 404, description = "No such reminder"), (status = 409, description = "Not fired, its task is completed, or the task has a pending reminder"), (status = 422, description = "minutes out of range"),
    ),
    security(("bearer" = []))
)]
pub async fn snooze(
    PathUser(user_id): PathUser,
    ReminderId(id): ReminderId,
    body: Json<SnoozeBody>,
    pool: Data<DbPool>,
) -> Result<HttpResponse, ApiError> {
    if !(1..=1440).contains(&body.minutes) {
        return Err(ApiError::field("minutes", "must be 1 to 1440"));
    }
    let at = Utc::now() + TimeDelta::minutes(body.minutes);
    let mut pooled = pool.get().await?;
    let conn: &mut AsyncPgConnection = &mut pooled;
    let row = conn
        .transaction::<_, ApiError, _>(async |conn| {
            Ok(reminders::snooze(conn, &user_id, id, at).await?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(ReminderView::from(row)))
}

/// What one scan did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScanResult {
    /// Reminders this scan fired (those another replica held are left to it).
    pub fired: usize,
}

#[utoipa::path(
    post, operation_id = "scan_reminders", path = "/internal/reminders/scan", tag = "operations",
    responses((status = 200, description = "Due reminders fired; harmless on every replica at once", body = ScanResult), (status = 401, description = "APP_API_TOKEN is set and dapr-api-token is missing or wrong"), (status = 403, description = "Called with a user's token")),
)]
pub async fn scan(
    req: HttpRequest,
    pool: Data<DbPool>,
    token: Data<AppApiToken>,
) -> Result<HttpResponse, ApiError> {
    token.authorize(&req)?;
    let mut pooled = pool.get().await?;
    let conn: &mut AsyncPgConnection = &mut pooled;
    let fired = conn
        .transaction::<_, ApiError, _>(async |conn| Ok(reminders::fire_due(conn).await?))
        .await?;
    Ok(HttpResponse::Ok().json(ScanResult { fired }))
}
