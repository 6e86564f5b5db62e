//! The OpenAPI 3.1 document, generated from the handlers and types.

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
    paths(
        routes::tasks::create,
        routes::tasks::list,
        routes::tasks::get,
        routes::tasks::patch,
        routes::tasks::replace,
        routes::tasks::complete,
        routes::tasks::delete,
        routes::tasks::cancel_recurrence,
        routes::tasks::occurrences,
        routes::health::health,
        routes::health::ready,
        routes::health::metrics,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;
