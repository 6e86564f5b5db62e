//! The OpenAPI 3.1 document, generated from the handlers and types; each resource lists its own
//! operations beside its routes (`routes::*::*Api`).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

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

/// The whole document: the info and security scheme, and each resource's own entries.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = Info::openapi();
    doc.merge(routes::tasks::TasksApi::openapi());
    doc.merge(routes::reminders::RemindersApi::openapi());
    doc.merge(routes::notifications::NotificationsApi::openapi());
    doc.merge(routes::preferences::PreferencesApi::openapi());
    doc.merge(routes::health::HealthApi::openapi());
    doc.merge(routes::stream::StreamApi::openapi());
    doc.merge(routes::recurrence::RecurrenceApi::openapi());
    doc
}
