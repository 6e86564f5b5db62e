//! `/api/{user_id}/tasks`: create, read, list, edit, complete, delete, cancel recurrence.

use actix_web::http::header::{self, HeaderMap};
use actix_web::http::StatusCode;
use actix_web::web::{Data, Json, Query};
use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::{PathUser, TaskId};
use crate::create_batches::CreateBatches;
use crate::domain::list_query::ListQuery;
use crate::domain::task::{Tag, TaskBody, TaskFields, TaskPatch};
use crate::domain::task_view::TaskView;
use crate::error::ApiError;
use crate::idempotency::{self, IdempotencyKey};
use crate::listing;
use crate::outbox::RelayWakeup;
use crate::read_pipeline::ReadPipeline;
use crate::tasks::{self, Change, Edit, Precondition};
use shared_events::Priority;
use taskflow_db::tasks::{self as store, TaskRow};
use taskflow_db::DbPool;

/// The `/api/{user_id}/tasks` resource: its routes and, right beside them, their OpenAPI
/// entries. Resources rather than bare routes, so a wrong method is 405 rather than 404.
pub fn scope() -> actix_web::Scope {
    use actix_web::web;
    web::scope("/api/{user_id}/tasks")
        .service(
            web::resource("")
                .route(web::post().to(create))
                .route(web::get().to(list)),
        )
        .service(
            web::resource("/{id}")
                .route(web::get().to(get))
                .route(web::patch().to(patch))
                .route(web::put().to(replace))
                .route(web::delete().to(delete)),
        )
        .service(web::resource("/{id}/complete").route(web::patch().to(complete)))
        .service(web::resource("/{id}/recurrence/cancel").route(web::post().to(cancel_recurrence)))
        .service(web::resource("/{id}/occurrences").route(web::get().to(occurrences)))
        .service(web::resource("/{id}/history").route(web::get().to(history)))
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(
    create,
    list,
    get,
    patch,
    replace,
    complete,
    delete,
    cancel_recurrence,
    occurrences,
    history
))]
pub struct TasksApi;

/// One page of tasks.
// Written by `listing::page_json`, from tasks already written as JSON.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskPage<'a> {
    pub items: Vec<TaskView<'a>>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A request header's value. One that is present but not visible ASCII is refused, so that a
/// garbled `If-Match` or `Idempotency-Key` is never mistaken for an absent one.
pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str().map_err(|_| {
                ApiError::bad_request(
                    "invalid_header",
                    format!("the {name} header must be visible ASCII"),
                )
            })
        })
        .transpose()
}

/// W3C trace context, passed into the events this request causes; a malformed one is ignored.
fn traceparent(req: &HttpRequest) -> Option<&str> {
    header(req.headers(), "traceparent")
        .ok()
        .flatten()
        .filter(|t| t.len() == 55 && t.is_ascii())
}

fn parse_body<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    // serde would also read a struct from an array (fields by position): only objects are bodies.
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "the body must be a JSON object",
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        ApiError::bad_request("invalid_body", format!("the body has the wrong shape: {e}"))
    })
}

fn task_response(status: StatusCode, row: &TaskRow) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::ETAG, format!("\"{}\"", row.version)))
        .json(TaskView::from(row))
}

/// Wake this process's relay for the outbox rows a change has just committed.
fn wake_relay(req: &HttpRequest) {
    if let Some(wakeup) = req.app_data::<Data<RelayWakeup>>() {
        wakeup.wake();
    }
}

/// Runs `f` in a transaction on a pooled connection, then wakes the relay if it committed.
macro_rules! transaction {
    ($pool:expr, $req:expr, |$conn:ident| $body:expr) => {{
        let mut pooled = $pool.get().await?;
        let conn: &mut AsyncPgConnection = &mut pooled;
        let committed = conn
            .transaction::<_, ApiError, _>(async |$conn| $body)
            .await;
        if committed.is_ok() {
            wake_relay($req);
        }
        committed
    }};
}

/// Why a create did not produce a new task.
enum Replay {
    Stored(u16, Value),
    Error(ApiError),
}

impl From<diesel::result::Error> for Replay {
    fn from(e: diesel::result::Error) -> Self {
        Replay::Error(e.into())
    }
}

#[utoipa::path(
    post, path = "/api/{user_id}/tasks", tag = "tasks",
    params(("user_id" = String, Path), ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    request_body = TaskBody,
    responses(
        (status = 201, description = "Created", body = TaskView),
        (status = 400, description = "Malformed JSON"), (status = 401, description = "Missing, invalid or expired token"), (status = 403, description = "The path's user is not the token's subject"),
        (status = 413, description = "Body over 64 KiB"), (status = 415, description = "Body is not JSON"), (status = 422, description = "Invalid fields"),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    PathUser(user_id): PathUser,
    req: HttpRequest,
    body: Json<Value>,
    pool: Data<DbPool>,
    batches: Data<CreateBatches>,
) -> Result<HttpResponse, ApiError> {
    let key = header(req.headers(), "Idempotency-Key")?
        .map(|h| IdempotencyKey::parse(h, &body))
        .transpose()?;
    let fields = TaskFields::from_body(parse_body::<TaskBody>(body.into_inner())?)?;
    let ctx = Change {
        user_id: &user_id,
        traceparent: traceparent(&req),
        now: Utc::now(),
    };
    let task = tasks::NewTask::new(&ctx, fields);
    if key.is_none() && task.is_one_statement() {
        // The task and its events in one statement, atomic as it is (no BEGIN and COMMIT), and
        // written with the creates that arrive beside it.
        let row = batches.create(&ctx, task).await?;
        wake_relay(&req);
        return Ok(created(&user_id, &row));
    }
    let mut pooled = pool.get().await?;
    let conn: &mut AsyncPgConnection = &mut pooled;
    let outcome = conn
        .transaction::<_, Replay, _>(async |conn| {
            if let Some(key) = &key {
                if let Some(stored) = idempotency::find(conn, &user_id, key).await? {
                    return Err(match idempotency::replay(key, stored) {
                        Ok((status, body)) => Replay::Stored(status, body),
                        Err(e) => Replay::Error(e),
                    });
                }
            }
            let row = tasks::create(conn, &ctx, task)
                .await
                .map_err(Replay::Error)?;
            if let Some(key) = &key {
                let body = serde_json::to_value(TaskView::from(&row))
                    .map_err(|e| Replay::Error(anyhow::Error::from(e).into()))?;
                if !idempotency::save(conn, &user_id, key, 201, &body).await? {
                    // A concurrent request with this key committed first: undo ours, replay theirs.
                    return Err(Replay::Error(ApiError::Conflict {
                        code: RACE,
                        message: String::new(),
                    }));
                }
            }
            Ok(row)
        })
        .await;
    if outcome.is_ok() {
        wake_relay(&req);
    }
    match outcome {
        Ok(row) => Ok(created(&user_id, &row)),
        Err(Replay::Stored(status, body)) => Ok(replayed(&user_id, status, body)),
        Err(Replay::Error(ApiError::Conflict { code: RACE, .. })) => {
            let key = key.ok_or_else(|| anyhow::anyhow!("idempotency race without a key"))?;
            let stored = idempotency::find(conn, &user_id, &key)
                .await?
                .ok_or_else(|| anyhow::anyhow!("idempotency entry vanished"))?;
            let (status, body) = idempotency::replay(&key, stored)?;
            Ok(replayed(&user_id, status, body))
        }
        Err(Replay::Error(e)) => Err(e),
    }
}

/// 201 with the new task.
fn created(user_id: &str, row: &TaskRow) -> HttpResponse {
    HttpResponse::Created()
        .insert_header((header::ETAG, format!("\"{}\"", row.version)))
        .insert_header((header::LOCATION, format!("/api/{user_id}/tasks/{}", row.id)))
        .json(TaskView::from(row))
}

/// Marks the concurrent-create case inside the transaction; never reaches a client.
const RACE: &str = "idempotency_race";

/// The first response to an idempotent create, sent again.
fn replayed(user_id: &str, status: u16, body: Value) -> HttpResponse {
    let id = body["id"].as_str().unwrap_or_default().to_owned();
    HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::CREATED))
        .insert_header((header::LOCATION, format!("/api/{user_id}/tasks/{id}")))
        .insert_header(("Idempotent-Replayed", "true"))
        .json(body)
}

#[utoipa::path(
    get, path = "/api/{user_id}/tasks", tag = "tasks",
    params(
        ("user_id" = String, Path),
        ("status" = Option<String>, Query, pattern = "^(pending|completed|all)$", description = "pending (default), completed or all"),
        ("priority" = Option<Vec<Priority>>, Query, description = "repeatable"),
        ("tag" = Option<Vec<Tag>>, Query, description = "repeatable; all must match"),
        ("q" = Option<String>, Query, pattern = r"^[^\x00]*$", description = "full-text search over title and description"),
        ("due_before" = Option<DateTime<Utc>>, Query, pattern = r"^\s*(?!0000|0001|9999)[0-9]{4}-"), ("due_after" = Option<DateTime<Utc>>, Query, pattern = r"^\s*(?!0000|0001|9999)[0-9]{4}-"),
        ("overdue" = Option<bool>, Query),
        ("sort" = Option<String>, Query, pattern = "^-?(due_at|priority|created_at|title)$", description = "due_at, priority, created_at or title; prefix - for descending"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "1 to 200, default 50"),
        ("cursor" = Option<String>, Query, pattern = "^[A-Za-z0-9_-]+$", description = "next_cursor of the previous page, with the same sort; any other value is 400"),
    ),
    responses((status = 200, description = "OK", body = TaskPage), (status = 400, description = "Malformed JSON, wrong types, bad query or header"), (status = 401, description = "Missing, invalid or expired token"), (status = 403, description = "The path's user is not the token's subject")),
    security(("bearer" = []))
)]
pub async fn list(
    PathUser(user_id): PathUser,
    req: HttpRequest,
    pool: Data<DbPool>,
    pipeline: Data<ReadPipeline>,
) -> Result<HttpResponse, ApiError> {
    let query = ListQuery::parse(req.query_string())?;
    // The connection is let go before the page is written.
    let mut tasks = if listing::reads_only_the_page(&query) {
        pipeline
            .read(async |conn| listing::plain_page(conn, &user_id, &query).await)
            .await??
    } else {
        listing::list(&mut *pool.get().await?, &user_id, &query).await?
    };
    let more = tasks.len() as i64 > query.limit;
    tasks.truncate(query.limit as usize);
    let next_cursor = match tasks.last() {
        Some(last) if more => Some(
            listing::cursor_after(&query, last)
                .map_err(anyhow::Error::from)?
                .encode(),
        ),
        _ => None,
    };
    let body = listing::page_json(&tasks, next_cursor.as_deref()).map_err(anyhow::Error::from)?;
    Ok(HttpResponse::Ok()
        .insert_header(header::ContentType::json())
        .body(body))
}

#[utoipa::path(
    get, path = "/api/{user_id}/tasks/{id}", tag = "tasks",
    params(("user_id" = String, Path), ("id" = Uuid, Path)),
    responses((status = 200, description = "OK", body = TaskView), (status = 401, description = "Missing, invalid or expired token"), (status = 403, description = "The path's user is not the token's subject"), (status = 404, description = "No such task")),
    security(("bearer" = []))
)]
pub async fn get(
    PathUser(user_id): PathUser,
    TaskId(id): TaskId,
    pool: Data<DbPool>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = pool.get().await?;
    let row = store::find(&mut conn, &user_id, id, false)
        .await?
        .ok_or(ApiError::NotFound("no such task"))?;
    Ok(task_response(StatusCode::OK, &row))
}

async fn apply_edit(
    user_id: String,
    id: Uuid,
    req: HttpRequest,
    pool: Data<DbPool>,
    edit: impl FnOnce() -> Result<Edit, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let precondition = Precondition::parse(header(req.headers(), "If-Match")?)?;
    let edit = edit()?;
    let ctx = Change {
        user_id: &user_id,
        traceparent: traceparent(&req),
        now: Utc::now(),
    };
    let mut pooled = pool.get().await?;
    let conn: &mut AsyncPgConnection = &mut pooled;
    let row = match tasks::edit_in_one_statement(conn, &ctx, id, precondition, edit.clone()).await?
    {
        Some(row) => row,
        None => {
            conn.transaction::<_, ApiError, _>(async |conn| {
                tasks::edit(conn, &ctx, id, precondition, edit).await
            })
            .await?
        }
    };
    wake_relay(&req);
    Ok(task_response(StatusCode::OK, &row))
}

#[utoipa::path(
    patch, path = "/api/{user_id}/tasks/{id}", tag = "tasks",
    params(("user_id" = String, Path), ("id" = Uuid, Path), ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(\*|[0-9]{1,18}|"[0-9]{1,18}"|W/"[0-9]{1,18}")$"#, description = "*, a version or its ETag (W/ or quoted)")),
    request_body = TaskPatch,
    responses(
        (status = 200, description = "OK", body = TaskView), (status = 400, description = "Malformed JSON, wrong types, bad query or header"), (status = 401, description = "Missing, invalid or expired token"), (status = 403, description = "The path's user is not the token's subject"),
        (status = 404, description = "No such task"), (status = 412, description = "If-Match names an older version"), (status = 413, description = "Body over 64 KiB"), (status = 415, description = "Body is not JSON"), (status = 422, description = "Invalid fields (details.fields)"),
    ),
    security(("bearer" = []))
)]
pub async fn patch(
    PathUser(user_id): PathUser,
    TaskId(id): TaskId,
    req: HttpRequest,
    body: Json<Value>,
    pool: Data<DbPool>,
) -> Result<HttpResponse, ApiError> {
    apply_edit(user_id, id, req, pool, || {
        Ok(Edit::Patch(parse_body(body.into_inner())?))
    })
    .await
}

#[utoipa::path(
    put, path = "/api/{user_id}/tasks/{id}", tag = "tasks",
    params(("user_id" = String, Path), ("id" = Uuid, Path), ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(\*|[0-9]{1,18}|"[0-9]{1,18}"|W/"[0-9]{1,18}")$"#, description = "*, a version or its ETag (W/ or quoted)")),
    request_body = TaskBody,
    responses(
        (status = 200, description = "OK", body = TaskView), (status = 400, description = "Malformed JSON, wrong types, bad query or header"), (status = 401, description = "Missing, invalid or expired token"), (status = 403, description = "The path's user is not the token's subject"),
        (status = 404, description = "No such task"), (status = 412, description = "If-Match names an older version"), (status = 413, description = "Body over 64 KiB"), (status = 415, description = "Body is not JSON"), (status = 422, description = "Invalid fields (details.fields)"),
    ),
    security(("bearer" = []))
)]
pub async fn replace(
    PathUser(user_id): PathUser,
    TaskId(id): TaskId,
    req: HttpRequest,
    body: Json<Value>,
    pool: Data<DbPool>,
) -> Result<HttpResponse, ApiError> {
    apply_edit(user_id, id, req, pool, || {
        Ok(Edit::Replace(TaskFields::from_body(parse_body(
            body.into_inner(),
        )?)?))
    })
    .await
}

#[utoipa::path(
    patch, path = "/api/{user_id}/tasks/{id}/complete", tag = "tasks",
    params(("user_id" = String, Path), ("id" = Uuid, Path), ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(\*|[0-9]{1,18}|"[0-9]{1,18}"|W/"[0-9]{1,18}")$"#, description = "*, a version or its ETag (W/ or quoted)")),
    responses(
        (status = 200, description = "The completed task; completing twice changes nothing", body = TaskView),
        (status = 401, description = "Missing, invalid or expired token"), (status = 403, description = "The path's user is not the token's subject"), (status = 404, description = "No such task"), (status = 412, description = "If-Match names an older version"),
    ),
    security(("bearer" = []))
)]
pub async fn complete(
    PathUser(user_id): PathUser,
    TaskId(id): TaskId,
    req: HttpRequest,
    pool: Data<DbPool>,
) -> Result<HttpResponse, ApiError> {
    apply_edit(user_id, id, req, pool, || Ok(Edit::Complete)).await
}

#[utoipa::path(
    delete, path = "/api/{user_id}/tasks/{id}", tag = "tasks",
    params(("user_id" = String, Path), ("id" = Uuid, Path), ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(\*|[0-9]{1,18}|"[0-9]{1,18}"|W/"[0-9]{1,18}")$"#, description = "*, a version or its ETag (W/ or quoted)")),
    responses((status = 204, description = "Deleted"), (status = 401, description = "Missing, invalid or expired token"), (status = 403, description = "The path's user is not the token's subject"), (status = 404, description = "No such task"), (status = 412, description = "If-Match names an older version")),
    security(("bearer" = []))
)]
pub async fn delete(
    PathUser(user_id): PathUser,
    TaskId(id): TaskId,
    req: HttpRequest,
    pool: Data<DbPool>,
) -> Result<HttpResponse, ApiError> {
    let precondition = Precondition::parse(header(req.headers(), "If-Match")?)?;
    let ctx = Change {
        user_id: &user_id,
        traceparent: traceparent(&req),
        now: Utc::now(),
    };
    transaction!(pool, &req, |conn| tasks::delete(
        conn,
        &ctx,
        id,
        precondition
    )
    .await)?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    post, path = "/api/{user_id}/tasks/{id}/recurrence/cancel", tag = "tasks",
    params(("user_id" = String, Path), ("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The task with recurrence.active = false", body = TaskView),
        (status = 409, description = "The task does not recur"),
        (status = 401, description = "Missing, invalid or expired token"), (status = 403, description = "The path's user is not the token's subject"), (status = 404, description = "No such task"),
    ),
    security(("bearer" = []))
)]
pub async fn cancel_recurrence(
    PathUser(user_id): PathUser,
    TaskId(id): TaskId,
    req: HttpRequest,
    pool: Data<DbPool>,
) -> Result<HttpResponse, ApiError> {
    let ctx = Change {
        user_id: &user_id,
        traceparent: traceparent(&req),
        now: Utc::now(),
    };
    let row = transaction!(pool, &req, |conn| tasks::cancel_recurrence(conn, &ctx, id)
        .await)?;
    Ok(task_response(StatusCode::OK, &row))
}

/// `?limit=` of the occurrences endpoint.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OccurrencesQuery {
    /// How many dates, 1 to 100 (default 5).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
}

/// One coming occurrence of a series.
#[derive(Debug, Serialize, ToSchema)]
pub struct Occurrence {
    /// Its number in the series.
    pub occurrence: i64,
    pub due_at: DateTime<Utc>,
}

/// The coming occurrences of a task's series.
#[derive(Debug, Serialize, ToSchema)]
pub struct OccurrencePage {
    pub task_id: Uuid,
    pub series_id: Uuid,
    /// The next due dates from this task on, as they come when each occurrence is completed on
    /// time; empty when the task does not recur, the series ended or was cancelled, or it has no
    /// due date to count from.
    pub items: Vec<Occurrence>,
}

#[utoipa::path(
    get, path = "/api/{user_id}/tasks/{id}/occurrences", tag = "tasks",
    params(("user_id" = String, Path), ("id" = Uuid, Path), OccurrencesQuery),
    responses(
        (status = 200, description = "The next due dates of the series, from the engine the recurrence worker uses", body = OccurrencePage),
        (status = 400, description = "Bad query"), (status = 401, description = "Missing, invalid or expired token"), (status = 403, description = "The path's user is not the token's subject"), (status = 404, description = "No such task"),
    ),
    security(("bearer" = []))
)]
pub async fn occurrences(
    PathUser(user_id): PathUser,
    TaskId(id): TaskId,
    query: Query<OccurrencesQuery>,
    pool: Data<DbPool>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(5);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be between 1 and 100",
        ));
    }
    let mut conn = pool.get().await?;
    let row = store::find(&mut conn, &user_id, id, false)
        .await?
        .ok_or(ApiError::NotFound("no such task"))?;
    let tz: Tz = row.timezone.parse().unwrap_or(Tz::UTC);
    let dates = match (row.recurrence(), row.due_at) {
        (Some(recurrence), Some(due)) => {
            recurrence.upcoming(due, u32::try_from(row.occurrence).unwrap_or(1), tz, limit)
        }
        _ => Vec::new(),
    };
    Ok(HttpResponse::Ok().json(OccurrencePage {
        task_id: row.id,
        series_id: row.series_id,
        items: dates
            .into_iter()
            .zip(i64::from(row.occurrence) + 1..)
            .map(|(due_at, occurrence)| Occurrence { occurrence, due_at })
            .collect(),
    }))
}

/// One recorded event of a task.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryItem {
    pub event_id: Uuid,
    /// created, updated, completed, deleted or recurrence_cancelled.
    pub event_type: String,
    /// The task's version after the change.
    pub version: i64,
    pub occurred_at: DateTime<Utc>,
}

#[utoipa::path(
    get, path = "/api/{user_id}/tasks/{id}/history", tag = "tasks",
    params(("user_id" = String, Path), ("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The task's events as delivered back through Dapr, oldest first", body = Vec<HistoryItem>),
        (status = 401, description = "Missing, invalid or expired token"), (status = 403, description = "The path's user is not the token's subject"), (status = 404, description = "No such task"),
    ),
    security(("bearer" = []))
)]
pub async fn history(
    PathUser(user_id): PathUser,
    TaskId(id): TaskId,
    pool: Data<DbPool>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = pool.get().await?;
    let entries = taskflow_db::history::of_task(&mut conn, &user_id, id).await?;
    // A deleted task keeps its history; one that never had events does not exist for this user.
    if entries.is_empty()
        && taskflow_db::tasks::find(&mut conn, &user_id, id, false)
            .await?
            .is_none()
    {
        return Err(ApiError::NotFound("no such task"));
    }
    Ok(HttpResponse::Ok().json(
        entries
            .into_iter()
            .map(|e| HistoryItem {
                event_id: e.event_id,
                event_type: e.event_type,
                version: e.version,
                occurred_at: e.occurred_at,
            })
            .collect::<Vec<_>>(),
    ))
}
