//! The OpenAPI 3.1 document, generated from the handlers and types; each resource lists its own
//! operations beside its routes (`routes::*::*Api`). The answers every operation can give by its
//! shape (auth, body, headers, query) and the links between operations are added here, in one
//! place, so that no handler's list can forget one.

use std::collections::HashMap;
use std::sync::OnceLock;

use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use crate::error::ErrorBody;
use crate::routes;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "TaskFlow API", description = "Tasks with due dates, reminders, priorities, tags and recurrence; every change is an event on Kafka."),
    modifiers(&BearerAuth)
)]
struct Info;

/// The whole document: the info and security scheme, each resource's own entries, then the
/// answers every operation shares and the links.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = Info::openapi();
    doc.merge(routes::tasks::TasksApi::openapi());
    doc.merge(routes::reminders::RemindersApi::openapi());
    doc.merge(routes::notifications::NotificationsApi::openapi());
    doc.merge(routes::preferences::PreferencesApi::openapi());
    doc.merge(routes::health::HealthApi::openapi());
    doc.merge(routes::stream::StreamApi::openapi());
    doc.merge(routes::recurrence::RecurrenceApi::openapi());
    shared_responses(&mut doc);
    links(&mut doc);
    doc
}

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("GET", &mut item.get),
        ("PUT", &mut item.put),
        ("POST", &mut item.post),
        ("DELETE", &mut item.delete),
        ("PATCH", &mut item.patch),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.as_mut().map(|op| (method, op)))
}

fn has_header(op: &Operation, name: &str) -> bool {
    op.parameters.iter().flatten().any(|p| match p {
        RefOr::T(p) => p.parameter_in == ParameterIn::Header && p.name.eq_ignore_ascii_case(name),
        RefOr::Ref(_) => false,
    })
}

/// The statuses an operation can answer because of its shape, as `ApiError` maps them.
fn shape_statuses(path: &str, op: &Operation) -> Vec<(&'static str, &'static str)> {
    let mut statuses = Vec::new();
    if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
        statuses.push(("401", "Missing, invalid or expired token"));
    }
    if path.contains("{user_id}") {
        statuses.push(("403", "The path's user is not the token's subject"));
    }
    if path.contains("{id}") {
        statuses.push((
            "404",
            "No such resource (an id that is not a UUID names none)",
        ));
    }
    let query = op
        .parameters
        .iter()
        .flatten()
        .any(|p| matches!(p, RefOr::T(p) if p.parameter_in == ParameterIn::Query));
    if query {
        statuses.push(("400", "Bad query parameter"));
    }
    if op.request_body.is_some() {
        statuses.push(("400", "Malformed JSON or a body of the wrong shape"));
        statuses.push(("413", "Body over 64 KiB"));
        statuses.push(("415", "Body is not JSON (Content-Type: application/json)"));
        statuses.push(("422", "Invalid fields (details.fields)"));
    }
    if has_header(op, "If-Match") {
        statuses.push(("400", "If-Match is not *, a version or an ETag of one"));
        statuses.push((
            "412",
            "If-Match names another version (details.current_version)",
        ));
    }
    if has_header(op, "Idempotency-Key") {
        statuses.push((
            "400",
            "Idempotency-Key is not 1 to 255 visible ASCII characters",
        ));
        statuses.push(("409", "Idempotency-Key was used with another body"));
    }
    if path.starts_with("/api/") || path.starts_with("/internal/") {
        statuses.push(("503", "Database unavailable"));
    }
    statuses
}

/// Adds each operation's shape statuses it does not list itself, and the `Error` body to every
/// 4xx and 5xx without one.
fn shared_responses(doc: &mut utoipa::openapi::OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components
        .schemas
        .insert(ErrorBody::name().into_owned(), ErrorBody::schema());
    let error = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name(ErrorBody::name())))
        .build();
    for (path, item) in doc.paths.paths.iter_mut() {
        for (_, op) in operations_mut(item) {
            for (status, description) in shape_statuses(path, op) {
                op.responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| RefOr::T(Response::new(description)));
            }
            for (status, response) in op.responses.responses.iter_mut() {
                if let RefOr::T(response) = response {
                    if status.as_str() >= "400" && response.content.is_empty() {
                        response
                            .content
                            .insert("application/json".into(), error.clone().into());
                    }
                }
            }
        }
    }
}

/// Links from a collection to the operations on its members: `POST P` (201, the created body)
/// and `GET P` (200, the first of `items`) to every operation under `P/{id}`, so that stateful
/// clients (schemathesis) reach real resources.
fn links(doc: &mut utoipa::openapi::OpenApi) {
    let members: Vec<(String, Vec<(String, bool)>)> = doc
        .paths
        .paths
        .keys()
        .map(|collection| {
            let prefix = format!("{collection}/{{id}}");
            let targets = doc
                .paths
                .paths
                .iter()
                .filter(|(path, _)| path.starts_with(&prefix))
                .flat_map(|(_, item)| {
                    let mut item = item.clone();
                    operations_mut(&mut item)
                        .filter_map(|(_, op)| {
                            let id = op.operation_id.clone()?;
                            Some((id, has_header(op, "If-Match")))
                        })
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>();
            (collection.clone(), targets)
        })
        .filter(|(_, targets)| !targets.is_empty())
        .collect();
    for (collection, targets) in members {
        let Some(item) = doc.paths.paths.get_mut(&collection) else {
            continue;
        };
        for (method, op) in operations_mut(item) {
            let (status, id) = match method {
                "POST" => ("201", "$response.body#/id"),
                "GET" => ("200", "$response.body#/items/0/id"),
                _ => continue,
            };
            let Some(RefOr::T(response)) = op.responses.responses.get_mut(status) else {
                continue;
            };
            for (target, if_match) in &targets {
                let mut link = LinkBuilder::new()
                    .operation_id(target)
                    .parameter("user_id", "$request.path.user_id")
                    .parameter("id", id);
                if *if_match && method == "POST" {
                    link = link.parameter("header.If-Match", "$response.header.ETag");
                }
                response.links.insert(target.clone(), link.build().into());
            }
        }
    }
}

/// The methods a documented path answers, for the `Allow` header of a 405; keyed by the
/// route pattern as actix names it (`HttpRequest::match_pattern`), which the document uses too.
pub fn allowed_methods(pattern: &str) -> Option<&'static str> {
    static ALLOW: OnceLock<HashMap<String, String>> = OnceLock::new();
    ALLOW
        .get_or_init(|| {
            let mut doc = document();
            doc.paths
                .paths
                .iter_mut()
                .map(|(path, item)| {
                    let methods: Vec<&str> = operations_mut(item).map(|(m, _)| m).collect();
                    (path.clone(), methods.join(", "))
                })
                .collect()
        })
        .get(pattern)
        .map(String::as_str)
}
