//! `POST /api/{user_id}/recurrence/preview`: what a recurrence would give, before saving it —
//! the summary and the next dates, validated exactly as a task's create validates them (the
//! web UI's live preview of a custom RRULE).

use actix_web::web::Json;
use actix_web::HttpResponse;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::auth::PathUser;
use crate::domain::task::{TaskBody, TaskFields};
use crate::error::ApiError;
use crate::routes::tasks::Occurrence;
use shared_events::recurrence::{RecurrenceInput, RecurrenceView};

pub fn scope() -> actix_web::Scope {
    use actix_web::web;
    web::scope("/api/{user_id}/recurrence")
        .service(web::resource("/preview").route(web::post().to(preview)))
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(preview))]
pub struct RecurrenceApi;

/// A recurrence to preview, with the due date and zone of the task it would be set on.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewBody {
    /// As in a task body: a shorthand, `{"rule", "anchor"}` or `{"cron", "anchor"}`.
    #[schema(value_type = RecurrenceInput)]
    pub recurrence: Value,
    /// RFC 3339 date-time: the first occurrence.
    #[schema(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    pub due_at: Option<String>,
    /// IANA time zone (default UTC).
    pub timezone: Option<String>,
    /// How many dates, 1 to 20 (default 5).
    #[schema(minimum = 1, maximum = 20)]
    #[serde(default, deserialize_with = "crate::domain::task::integral")]
    pub limit: Option<i64>,
}

/// The normalised recurrence and its next dates.
#[derive(Debug, Serialize, ToSchema)]
pub struct Preview {
    pub recurrence: RecurrenceView,
    /// The occurrences after the first, as they come when each is completed on time.
    pub items: Vec<Occurrence>,
}

#[utoipa::path(
    post, path = "/api/{user_id}/recurrence/preview", tag = "tasks", operation_id = "preview_recurrence",
    params(("user_id" = String, Path)),
    request_body = PreviewBody,
    responses(
        (status = 200, description = "The recurrence's summary and next dates", body = Preview),
        (status = 400, description = "Malformed body"),
        (status = 401, description = "Missing, invalid or expired token"),
        (status = 403, description = "The path's user is not the token's subject"),
        (status = 422, description = "The recurrence, due date or zone is invalid (`details.fields`)"),
    ),
    security(("bearer" = []))
)]
pub async fn preview(
    PathUser(_): PathUser,
    body: Json<PreviewBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let limit = body.limit.unwrap_or(5);
    if !(1..=20).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 20"));
    }
    let limit = limit as usize;
    let fields = TaskFields::from_body(TaskBody {
        title: Some("preview".into()),
        due_at: body.due_at,
        timezone: body.timezone,
        recurrence: Some(body.recurrence),
        ..TaskBody::default()
    })?;
    let recurrence = fields
        .recurrence
        .ok_or_else(|| ApiError::field("recurrence", "is required"))?;
    let items = fields
        .due_at
        .map(|due| recurrence.upcoming(due, 1, fields.timezone, limit))
        .unwrap_or_default()
        .into_iter()
        .zip(2..)
        .map(|(due_at, occurrence)| Occurrence { occurrence, due_at })
        .collect();
    Ok(HttpResponse::Ok().json(Preview {
        recurrence: RecurrenceView::from(recurrence),
        items,
    }))
}
