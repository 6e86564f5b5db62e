//! What the outbox and its neighbours no longer need. With the built-in relay a sent row kept in
//! `outbox_sent` (only with an `OUTBOX_RETENTION_HOURS`; by default the relay deletes it) goes
//! once it was sent longer than the retention ago, an hour at least, which also clears what a
//! relay kept before the retention was turned off. With `EVENT_PUBLISHER=debezium` nothing in
//! this process publishes and no row is ever moved, because Debezium reads committed rows from
//! the write-ahead log, never from the table: every row older than the retention (an hour at
//! least) goes, and so do the sent rows of a relay that ran before.

use std::time::Duration;

use diesel_async::RunQueryDsl;
use taskflow_db::DbPool;
use tokio::sync::watch;

/// Who publishes the outbox's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishedBy {
    /// The relay: unsent rows stay in `outbox` until they are sent.
    Relay,
    /// Debezium, from the write-ahead log: a committed row is already on its way.
    ChangeCapture,
}

/// How often the pruning runs.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Delete outbox rows past the retention, expired idempotency keys, and consumers'
/// processed-event records older than 30 days.
pub async fn prune(pool: &DbPool, retention: Duration, by: PublishedBy) -> anyhow::Result<()> {
    let mut conn = pool.get().await?;
    let hours = (retention.as_secs() / 3600).max(1) as i64;
    // The cutoff is in the text, not a parameter: the API's sessions plan parameters
    // generically (taskflow_db::pool::generic_plans), and how many rows this deletes decides
    // between the index and a scan.
    // With Debezium too: what a relay sent before the switch.
    let mut pruned = diesel::sql_query(format!(
        "DELETE FROM outbox_sent WHERE sent_at IS NOT NULL AND sent_at < now() - make_interval(hours => {hours})"
    ))
    .execute(&mut conn)
    .await?;
    if by == PublishedBy::ChangeCapture {
        pruned += diesel::sql_query(format!(
            "DELETE FROM outbox WHERE created_at < now() - make_interval(hours => {hours})"
        ))
        .execute(&mut conn)
        .await?;
    }
    let keys = crate::idempotency::prune(&mut conn).await?;
    let processed = taskflow_db::processed::prune(&mut conn).await?;
    if pruned + keys + processed > 0 {
        tracing::info!(
            outbox_rows = pruned,
            idempotency_keys = keys,
            processed_events = processed,
            "pruned"
        );
    }
    Ok(())
}

/// Prune every [`PRUNE_INTERVAL`] until `shutdown` turns true: what runs instead of the relay
/// when Debezium publishes.
///
/// Each time it also disarms the writers' NOTIFY: a relay that stopped while idle (before the
/// switch, or a replica still running one) leaves it armed, no relay here disarms it, and every
/// statement writing outbox rows would then NOTIFY, its commit queueing on PostgreSQL's
/// database-wide notification lock (pgbench's creates: 5,543–5,783 tps armed, 8,362–8,827 not).
/// A relay still running elsewhere then hears other processes' rows by its poll only.
pub async fn run(pool: DbPool, retention: Duration, mut shutdown: watch::Receiver<bool>) {
    tracing::info!("outbox published by change data capture (Debezium): pruning only");
    loop {
        if let Err(e) = super::arm_wakeup(&pool, false).await {
            tracing::warn!(error = %e, "could not disarm the relay's wake-up");
        }
        if let Err(e) = prune(&pool, retention, PublishedBy::ChangeCapture).await {
            tracing::warn!(error = %e, "pruning failed");
        }
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            _ = tokio::time::sleep(PRUNE_INTERVAL) => {}
        }
    }
}
