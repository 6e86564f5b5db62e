//! The event path of the backend: the [`relay`] publishes the rows that `taskflow_db::outbox`
//! writes, [`retention`] deletes what is no longer needed, and [`EventPathHealth`] says whether
//! the relay can publish.

use diesel_async::RunQueryDsl;
use taskflow_db::prepared::Prepare;
use taskflow_db::DbPool;

pub mod handoff;
pub mod relay;
pub mod retention;

/// Arm or disarm the NOTIFY of writers in other processes (the `outbox_notify` trigger): an idle
/// relay arms it, a busy one disarms it. An upsert, since the flag's table is unlogged and empty
/// after a crash.
async fn arm_wakeup(pool: &DbPool, armed: bool) -> anyhow::Result<()> {
    let mut conn = pool.get().await?;
    diesel::sql_query(
        "INSERT INTO outbox_relay_wakeup (armed) VALUES ($1) \
         ON CONFLICT (id) DO UPDATE SET armed = excluded.armed",
    )
    .bind::<diesel::sql_types::Bool, _>(armed)
    .prepared()
    .execute(&mut conn)
    .await?;
    Ok(())
}

/// Wakes this process's relay after a commit that wrote outbox rows. In-process, so commits do
/// not queue on PostgreSQL's database-wide notification lock as a NOTIFY per transaction did.
#[derive(Debug, Default)]
pub struct RelayWakeup(tokio::sync::Notify);

impl RelayWakeup {
    /// Call after the commit; a wake-up while the relay is busy is kept for its next wait.
    pub fn wake(&self) {
        self.0.notify_one();
    }

    async fn woken(&self) {
        self.0.notified().await
    }
}

/// Whether the event path (relay to broker or sidecar) works, for `/ready` and logs.
#[derive(Debug, Default)]
pub struct EventPathHealth {
    problem: std::sync::Mutex<Option<String>>,
}

impl EventPathHealth {
    pub fn degraded(&self, reason: String) {
        if let Ok(mut p) = self.problem.lock() {
            *p = Some(reason);
        }
    }

    pub fn healthy(&self) {
        if let Ok(mut p) = self.problem.lock() {
            *p = None;
        }
    }

    /// The current problem, if any.
    pub fn problem(&self) -> Option<String> {
        self.problem.lock().ok().and_then(|p| p.clone())
    }
}
