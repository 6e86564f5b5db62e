//! Connection pool and embedded migrations.

use anyhow::Context;
use diesel_async::AsyncMigrationHarness;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

pub use shared_events::database::{ping, pool, DbPool};

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
pub async fn migrations_applied(pool: &DbPool) -> anyhow::Result<bool> {
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
