//! The embedded migration history. Only `backend migrate` (and the chart's migration Job) applies
//! it; the workers only ask whether it has been applied.

use anyhow::Context;
use diesel_async::AsyncMigrationHarness;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::pool::{pool, DbPool};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Apply pending migrations; returns how many ran.
pub async fn migrate(pool: &DbPool) -> anyhow::Result<usize> {
    let conn = pool.get().await.context("connecting to the database")?;
    let applied = tokio::task::spawn_blocking(move || {
        let mut harness = AsyncMigrationHarness::new(conn);
        harness
            .run_pending_migrations(MIGRATIONS)
            .map(|versions| versions.len())
            .map_err(|e| anyhow::anyhow!("running migrations: {e}"))
    })
    .await??;
    Ok(applied)
}

/// True when every embedded migration has been applied.
pub async fn applied(pool: &DbPool) -> anyhow::Result<bool> {
    let conn = pool.get().await?;
    tokio::task::spawn_blocking(move || {
        let mut harness = AsyncMigrationHarness::new(conn);
        harness
            .has_pending_migration(MIGRATIONS)
            .map(|pending| !pending)
            .map_err(|e| anyhow::anyhow!("checking migrations: {e}"))
    })
    .await?
}

/// Create database `name` on the server `admin_url` points at and return its URL: a copy of
/// `template` when given, else empty and then migrated. For tests and benchmarks, which each
/// want a database of their own.
pub async fn create_database(
    admin_url: &str,
    name: &str,
    template: Option<&str>,
) -> anyhow::Result<String> {
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
    let mut url = url::Url::parse(admin_url).context("the admin database URL")?;
    let mut admin = AsyncPgConnection::establish(admin_url)
        .await
        .context("connecting to the admin database")?;
    let sql = match template {
        Some(t) => format!("CREATE DATABASE \"{name}\" TEMPLATE \"{t}\""),
        None => format!("CREATE DATABASE \"{name}\""),
    };
    diesel::sql_query(sql)
        .execute(&mut admin)
        .await
        .with_context(|| format!("creating database {name}"))?;
    url.set_path(name);
    let url = url.to_string();
    if template.is_none() {
        let pool = pool(&url, 1)?;
        migrate(&pool).await?;
        pool.close();
    }
    Ok(url)
}
