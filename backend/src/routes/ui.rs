//! The web UI at `/`: a page and its modules, embedded in the binary, under a strict
//! Content-Security-Policy (only this origin's scripts, styles and API; no inline code).

use actix_web::http::header;
use actix_web::web::{self, Path};
use actix_web::HttpResponse;

use crate::error::ApiError;

pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// `/ui/<name>`: name, content type, content.
const ASSETS: [(&str, &str, &str); 6] = [
    ("app.js", JS, include_str!("../../web/app.js")),
    ("api.js", JS, include_str!("../../web/api.js")),
    ("live.js", JS, include_str!("../../web/live.js")),
    ("format.js", JS, include_str!("../../web/format.js")),
    ("form.js", JS, include_str!("../../web/form.js")),
    ("style.css", CSS, include_str!("../../web/style.css")),
];

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/").route(web::get().to(index)))
        .service(web::resource("/ui/{name}").route(web::get().to(asset)));
}

fn page(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        // Not fingerprinted: revalidate, so a new binary's UI is picked up at once.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

async fn index() -> HttpResponse {
    page(HTML, include_str!("../../web/index.html"))
}

async fn asset(name: Path<String>) -> Result<HttpResponse, ApiError> {
    ASSETS
        .iter()
        .find(|(n, _, _)| *n == name.as_str())
        .map(|(_, content_type, body)| page(content_type, body))
        .ok_or(ApiError::NotFound("no such file"))
}
