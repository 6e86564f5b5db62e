//! `/api/{user_id}/preferences`: the user's notification channels and webhook. The webhook secret
//! is write-only: answers only say whether one is set. Answers carry the stored value's `ETag`;
//! a `PUT` with `If-Match` saves only over that version, and every `PUT` saves only over what it
//! read, so a lost race is a 412 rather than a silent overwrite (both stores, `STATE_STORE`).

use std::sync::Arc;

use actix_web::http::header;
use actix_web::web::{Data, Json};
use actix_web::{HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use taskflow_db::kv::{KeyValueStore, KvError};
use taskflow_db::preferences::{self, Channel, Preferences};
use utoipa::ToSchema;

use crate::auth::PathUser;
use crate::error::{ApiError, FieldErrors};

/// The preferences store the API reads and writes (PostgreSQL, or Dapr's state API).
pub type Store = Data<Arc<dyn KeyValueStore>>;

pub fn scope() -> actix_web::Scope {
    use actix_web::web;
    web::scope("/api/{user_id}/preferences").service(
        web::resource("")
            .route(web::get().to(get))
            .route(web::put().to(put)),
    )
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(get, put))]
pub struct PreferencesApi;

/// The schema of a channel name, as `Channel` (de)serialises.
pub struct ChannelName;

impl utoipa::PartialSchema for ChannelName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(["in_app", "webhook"]))
            .into()
    }
}
impl ToSchema for ChannelName {}

/// The preferences as answered: never the secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct PreferencesView {
    /// in_app (always) and webhook.
    #[schema(value_type = Vec<ChannelName>)]
    pub channels: Vec<Channel>,
    pub webhook_url: Option<String>,
    pub webhook_secret_set: bool,
}

impl From<&Preferences> for PreferencesView {
    fn from(p: &Preferences) -> Self {
        PreferencesView {
            channels: p.channels.clone(),
            webhook_url: p.webhook_url.clone(),
            webhook_secret_set: p.webhook_secret.is_some(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreferencesBody {
    /// Enabled channels; in_app is always on.
    #[schema(value_type = Vec<ChannelName>)]
    pub channels: Vec<Channel>,
    /// http(s) URL the webhook channel POSTs to.
    pub webhook_url: Option<String>,
    /// The HMAC key of signatures: absent or null keeps the stored one, "" clears it.
    pub webhook_secret: Option<String>,
}

impl From<KvError> for ApiError {
    fn from(e: KvError) -> Self {
        match e {
            KvError::Unavailable(m) => ApiError::Unavailable(m),
            KvError::Conflict(_) => ApiError::StaleWrite(
                "the preferences changed since they were read; GET them and retry".into(),
            ),
            KvError::Database(e) => e.into(),
        }
    }
}

#[utoipa::path(
    get, operation_id = "get_preferences", path = "/api/{user_id}/preferences", tag = "notifications",
    params(("user_id" = String, Path)),
    responses((status = 200, description = "The preferences (in-app only until saved)", body = PreferencesView), (status = 401, description = "Missing, invalid or expired token"), (status = 403, description = "The path's user is not the token's subject")),
    security(("bearer" = []))
)]
pub async fn get(PathUser(user_id): PathUser, store: Store) -> Result<HttpResponse, ApiError> {
    let (prefs, etag) = preferences::load_versioned(store.as_ref().as_ref(), &user_id).await?;
    Ok(answer(&prefs, etag.as_deref()))
}

fn answer(prefs: &Preferences, etag: Option<&str>) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    if let Some(etag) = etag {
        response.insert_header((header::ETAG, format!("\"{etag}\"")));
    }
    response.json(PreferencesView::from(prefs))
}

#[utoipa::path(
    put, operation_id = "put_preferences", path = "/api/{user_id}/preferences", tag = "notifications",
    params(("user_id" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body = PreferencesBody,
    responses((status = 200, description = "The saved preferences", body = PreferencesView), (status = 400, description = "Malformed JSON or wrong types"), (status = 401, description = "Missing, invalid or expired token"), (status = 403, description = "The path's user is not the token's subject"), (status = 412, description = "If-Match names an older version, or another write came first"), (status = 422, description = "Invalid fields (details.fields)")),
    security(("bearer" = []))
)]
pub async fn put(
    PathUser(user_id): PathUser,
    req: HttpRequest,
    body: Json<PreferencesBody>,
    store: Store,
) -> Result<HttpResponse, ApiError> {
    let store = store.as_ref().as_ref();
    let body = body.into_inner();
    let if_match = crate::routes::tasks::header(req.headers(), "If-Match")?.map(|v| {
        v.trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_owned()
    });
    let (stored, read) = preferences::load_versioned(store, &user_id).await?;
    if if_match.is_some() && if_match != read {
        return Err(KvError::Conflict(user_id).into());
    }
    let mut channels = vec![Channel::InApp];
    if body.channels.contains(&Channel::Webhook) {
        channels.push(Channel::Webhook);
    }
    let next = Preferences {
        channels,
        webhook_url: body.webhook_url.filter(|u| !u.trim().is_empty()),
        webhook_secret: match body.webhook_secret {
            None => stored.webhook_secret,
            Some(s) if s.is_empty() => None,
            Some(s) => Some(s),
        },
    };
    let mut errors = FieldErrors::new();
    // PostgreSQL's jsonb cannot hold \u0000 (the kv store answered 500 for a secret with one).
    let texts = [
        ("webhook_url", next.webhook_url.as_deref()),
        ("webhook_secret", next.webhook_secret.as_deref()),
    ];
    for (field, text) in texts {
        if text.is_some_and(|t| t.contains('\0')) {
            errors.insert(field.into(), "must not contain NUL characters".into());
        }
    }
    if let Some(url) = next
        .webhook_url
        .as_deref()
        .filter(|_| !errors.contains_key("webhook_url"))
    {
        let valid = url::Url::parse(url)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if !valid {
            errors.insert("webhook_url".into(), "must be an http(s) URL".into());
        }
    }
    if next.channels.contains(&Channel::Webhook) && next.webhook().is_none() {
        errors.insert(
            "channels".into(),
            "webhook needs webhook_url and webhook_secret".into(),
        );
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    preferences::save(store, &user_id, &next, read.as_deref()).await?;
    // The new ETag is the store's to make (Dapr answers a save without one): read it back.
    let (_, etag) = preferences::load_versioned(store, &user_id).await?;
    Ok(answer(&next, etag.as_deref()))
}
