//! Liveness, readiness and metrics.

use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::web::Data;
use actix_web::HttpResponse;
use serde_json::json;

use crate::metrics::Metrics;
use crate::outbox::EventPathHealth;
use crate::worker_pools::WorkerPools;
use taskflow_db::DbPool;

/// The operations endpoints and their OpenAPI entries.
pub fn routes(cfg: &mut actix_web::web::ServiceConfig) {
    use actix_web::web;
    cfg.service(web::resource("/health").route(web::get().to(health)))
        .service(web::resource("/ready").route(web::get().to(ready)))
        .service(web::resource("/metrics").route(web::get().to(metrics)));
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(health, ready, metrics))]
pub struct HealthApi;

/// Remembers that migrations were found applied, so `/ready` checks them once.
#[derive(Default)]
pub struct MigrationsSeen(AtomicBool);

#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, description = "The process is alive")))]
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready when the database answers and is migrated. The event path is reported but does not
/// make the API unready: the outbox keeps events while the broker or sidecar is away.
#[utoipa::path(get, path = "/ready", tag = "operations", responses((status = 200, description = "Database reachable and migrated; checks.event_path tells whether events flow"), (status = 503, description = "Database unreachable or not migrated")))]
pub async fn ready(
    pool: Data<DbPool>,
    seen: Data<MigrationsSeen>,
    events: Data<EventPathHealth>,
) -> HttpResponse {
    let database = taskflow_db::ping(&pool).await.map_err(|e| e.to_string());
    let migrations = if seen.0.load(Ordering::Relaxed) {
        Ok(())
    } else {
        match taskflow_db::migrations::applied(&pool).await {
            Ok(true) => {
                seen.0.store(true, Ordering::Relaxed);
                Ok(())
            }
            Ok(false) => Err("pending migrations".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    };
    let event_path = events.problem();
    let ok = database.is_ok() && migrations.is_ok();
    let body = json!({
        "status": if !ok { "unavailable" } else if event_path.is_some() { "degraded" } else { "ok" },
        "checks": {
            "database": database.err().unwrap_or_else(|| "ok".into()),
            "migrations": migrations.err().unwrap_or_else(|| "ok".into()),
            "event_path": event_path.unwrap_or_else(|| "ok".into()),
        }
    });
    if ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(metrics: Data<Metrics>, pools: Data<WorkerPools>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics.render(pools.pools()))
}
