//! Publishes outbox rows. Safe with many replicas: one relay at a time holds the publishing
//! lock (a transaction-scoped advisory lock), claims rows in `seq` order with
//! `FOR UPDATE SKIP LOCKED`, publishes each key's rows in order and stops a key at its first
//! failure, so a later event never overtakes an earlier one of the same task. What it sent leaves
//! `outbox` in the same transaction (deleted, or moved to `outbox_sent` when a retention is set),
//! so `outbox` holds only what is still to be sent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::pg::PgNotification;
use diesel::sql_types::{BigInt, Double, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::{FutureExt, StreamExt};
use taskflow_db::prepared::Prepare;
use taskflow_db::DbPool;
use taskflow_kafka::publisher::{Outbound, PublishError, Publisher};
use tokio::sync::watch;
use uuid::Uuid;

use super::handoff::{Entry, PayloadHandoff};
use super::retention::{self, PublishedBy};
use super::{arm_wakeup, EventPathHealth, RelayWakeup};
use crate::configuration::EventSettings;
use crate::metrics::Metrics;

/// Arbitrary but fixed: the advisory lock key that makes one relay the publisher.
const RELAY_LOCK: i64 = 0x7461_736b_666c_6f77; // "taskflow"
/// How often an idle relay checks that the broker or sidecar still answers.
const IDLE_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// The backlog gauges are refreshed at most this often.
const BACKLOG_REFRESH: Duration = Duration::from_secs(1);
/// The relay vacuums the outbox once this many rows have left it since its last vacuum
/// ([`Relay::vacuum`]): their dead entries are what every claim reads first. Autovacuum visits
/// a database at most once a minute (`autovacuum_naptime`), and under c=16 creates the claims
/// slowed from 4.8 to 10.6 ms over 24 s of dead rows while the heap grew by 16 MB/s. Over 30 s
/// of them, a vacuum every 0.3, 1 or 3 s left PostgreSQL 128–132 µs a create against 142–145.
const VACUUM_AFTER_ROWS: usize = 10_000;
/// While behind, a vacuum also reads the backlog's pages (every 10 full batches, draining a
/// backlog of 100,000 rows took 5.4 s instead of 3.3), so it waits for more rows.
const VACUUM_WHILE_BEHIND_ROWS: usize = 50_000;

/// The claim: up to `$1` unsent rows, oldest first, skipping every key whose head is waiting to
/// be retried, so one failing key neither overtakes its own later rows nor holds up anyone
/// else's. A key's unsent rows all come at or after its waiting head, since its rows are published
/// in `seq` order and the first failure stops them. It must cost O(claimed rows) whatever the
/// statistics say: they are taken while the relay keeps up, so after a burst the planner thinks
/// the backlog is a few rows.
/// - Only a waiting row has a `next_attempt_at`, and the lookup names nothing else, so
///   `outbox_waiting` answers it (when it could also use the claim's index, the planner read
///   the whole backlog for it on every pass). It is
///   hashed once per pass: as a NOT EXISTS, a plan without sorts compares every row with every
///   waiting key (322 ms for 500 rows with 2,500 keys waiting, against 2.5 ms).
/// - The pass runs with sorts and sequential scans disabled ([`LOCK`]), so the rows come from
///   the primary key in `seq` order instead of the whole backlog being read and sorted, and the
///   lookup never reads the table: the session keeps its plan, and one made before autovacuum
///   first analyzed the outbox (a third of its rows taken to be waiting) read all of it on
///   every pass, however large it had grown (claims of 13–26 ms instead of 1.6 in the bench).
/// - The payloads are not returned: this process's writers handed most of them over
///   ([`PayloadHandoff`]); [`PAYLOADS`] reads the others.
pub const CLAIM: &str = "SELECT seq, id, topic, message_key \
     FROM outbox o WHERE (topic, message_key) NOT IN ( \
         SELECT topic, message_key FROM outbox WHERE next_attempt_at > now()) \
     ORDER BY seq LIMIT $1 FOR UPDATE OF o SKIP LOCKED";

/// The payloads of claimed rows that were not handed over (written by another process, before
/// this relay published, or past the handoff's budget), by `seq`.
const PAYLOADS: &str =
    "SELECT seq, payload::text AS payload, payload->>'traceparent' AS traceparent \
     FROM outbox WHERE seq = ANY($1)";

/// Delete the sent rows (by `seq`): Kafka keeps the events, so by default no copy stays here.
const DELETE_SENT: &str = "DELETE FROM outbox WHERE seq = ANY($1)";

/// With a retention (`OUTBOX_RETENTION_HOURS`), move the sent rows (by `seq`) to the retained
/// table instead, at a price: a second heap row and index entry per event (dev-server A/B of
/// c=16 creates: PostgreSQL 161.8 µs of CPU a create moving, 150.7 deleting). `sent_at` is the
/// clock, not now() (this transaction's start, before the claim): every row here has been
/// acknowledged by then, so it is when the row was on Kafka at the latest.
const MOVE_SENT: &str = "WITH sent AS (DELETE FROM outbox WHERE seq = ANY($1) \
       RETURNING seq, id, topic, message_key, event_type, payload, created_at, attempts, last_error) \
     INSERT INTO outbox_sent (seq, id, topic, message_key, event_type, payload, created_at, \
                              attempts, last_error, sent_at) \
     SELECT seq, id, topic, message_key, event_type, payload, created_at, attempts, last_error, \
            clock_timestamp() FROM sent";

/// The publishing lock, and the planner settings the claim needs, for this transaction only.
pub const LOCK: &str =
    "SELECT pg_try_advisory_xact_lock($1) AS locked, set_config('enable_sort', 'off', true), \
     set_config('enable_seqscan', 'off', true)";

/// A claimed row, without its payload ([`CLAIM`]).
#[derive(Debug, QueryableByName)]
struct Claimed {
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    topic: String,
    #[diesel(sql_type = Text)]
    message_key: String,
}

/// A payload read back ([`PAYLOADS`]).
#[derive(QueryableByName)]
struct Stored {
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = Text)]
    payload: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    traceparent: Option<String>,
}

/// A claimed row with its payload, to publish.
#[derive(Debug)]
struct Pending {
    seq: i64,
    topic: String,
    message_key: String,
    payload: String,
    traceparent: Option<String>,
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    locked: bool,
}

#[derive(QueryableByName)]
struct Backlog {
    #[diesel(sql_type = BigInt)]
    pending: i64,
    /// Rows waiting for their retry time after a failed publish.
    #[diesel(sql_type = BigInt)]
    delayed: i64,
    #[diesel(sql_type = Double)]
    oldest_seconds: f64,
}

/// What one pass over a batch achieved.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pass {
    pub claimed: usize,
    pub published: usize,
    /// Another relay holds the publishing lock.
    pub standby: bool,
    pub failure: Option<String>,
}

pub struct Relay {
    pool: DbPool,
    database_url: String,
    /// Put in front of each row's topic on the broker (`KAFKA_TOPIC_PREFIX`).
    topic_prefix: String,
    publisher: Arc<dyn Publisher>,
    settings: EventSettings,
    metrics: Arc<Metrics>,
    health: Arc<EventPathHealth>,
    wakeup: Arc<RelayWakeup>,
    handoff: Arc<PayloadHandoff>,
    /// Rows sent since the last vacuum: each left a dead row and index entry behind.
    removed: AtomicUsize,
}

impl Relay {
    pub fn new(
        pool: DbPool,
        database_url: String,
        topic_prefix: String,
        publisher: Arc<dyn Publisher>,
        settings: EventSettings,
        metrics: Arc<Metrics>,
        health: Arc<EventPathHealth>,
    ) -> Self {
        Relay {
            pool,
            database_url,
            topic_prefix,
            publisher,
            settings,
            metrics,
            health,
            wakeup: Arc::default(),
            handoff: Arc::default(),
            removed: AtomicUsize::new(0),
        }
    }

    /// What this process's writers call after committing outbox rows.
    pub fn wakeup(&self) -> Arc<RelayWakeup> {
        self.wakeup.clone()
    }

    /// Where this process's writers offer the payloads they write.
    pub fn handoff(&self) -> Arc<PayloadHandoff> {
        self.handoff.clone()
    }

    /// Claim, publish and mark one batch, all in one transaction.
    pub async fn publish_batch(&self) -> anyhow::Result<Pass> {
        let started = Instant::now();
        let mut conn = self.pool.get().await?;
        let conn: &mut AsyncPgConnection = &mut conn;
        let batch_size = self.settings.batch_size;
        let publisher = self.publisher.clone();
        let prefix = self.topic_prefix.as_str();
        let metrics = self.metrics.clone();
        let max_backoff = self.settings.max_backoff.as_secs_f64();
        let handoff = self.handoff.as_ref();
        let mark_sent = if self.settings.retention.is_zero() {
            DELETE_SENT
        } else {
            MOVE_SENT
        };
        let pass = conn.transaction::<_, anyhow::Error, _>(async |conn| {
            let Locked { locked } = diesel::sql_query(LOCK)
                .bind::<BigInt, _>(RELAY_LOCK)
                .prepared()
                .get_result(conn)
                .await?;
            handoff.set_publishing(locked);
            if !locked {
                return Ok(Pass { standby: true, ..Pass::default() });
            }
            let claimed: Vec<Claimed> = diesel::sql_query(CLAIM)
            .bind::<BigInt, _>(batch_size)
            .prepared()
            .load(conn)
            .await?;
            if claimed.is_empty() {
                return Ok(Pass::default());
            }
            let rows = with_payloads(conn, handoff, claimed).await?;
            let claimed = rows.len();
            let claim = started.elapsed();
            let outcome = publish_in_key_order(publisher.as_ref(), prefix, &rows).await;
            let phase = |name: &str, seconds: f64| {
                metrics.outbox_relay_seconds.with_label_values(&[name]).observe(seconds)
            };
            phase("claim", claim.as_secs_f64());
            phase("publish", (started.elapsed() - claim).as_secs_f64());
            for row in &outcome.sent {
                metrics.outbox_published.with_label_values(&[row.topic.as_str()]).inc();
            }
            if !outcome.sent.is_empty() {
                let sent: Vec<i64> = outcome.sent.iter().map(|row| row.seq).collect();
                diesel::sql_query(mark_sent)
                    .bind::<diesel::sql_types::Array<BigInt>, _>(&sent)
                    .prepared()
                    .execute(conn)
                    .await?;
            }
            for (row, error) in &outcome.failed {
                metrics.outbox_publish_failures.with_label_values(&[row.topic.as_str()]).inc();
                // Capped exponential backoff for this key: 0.1 s, 0.2 s, 0.4 s ... max_backoff.
                diesel::sql_query(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = $2, \
                     next_attempt_at = clock_timestamp() + make_interval(secs => least($3, 0.1 * power(2, least(attempts, 30)))) \
                     WHERE seq = $1",
                )
                .bind::<BigInt, _>(row.seq)
                .bind::<Text, _>(error.to_string())
                .bind::<Double, _>(max_backoff)
                .prepared()
                .execute(conn)
                .await?;
            }
            Ok(Pass {
                claimed,
                published: outcome.sent.len(),
                standby: false,
                failure: <[_]>::first(&outcome.failed).map(|(_, e)| e.to_string()),
            })
        })
        .await?;
        if pass.claimed > 0 {
            self.metrics
                .outbox_relay_seconds
                .with_label_values(&["pass"])
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(pass)
    }

    /// Publish until the outbox is empty, a publish fails, or another relay has the lock.
    pub async fn drain(&self) -> anyhow::Result<Pass> {
        let mut total = Pass::default();
        loop {
            let pass = self.publish_batch().await?;
            total.claimed += pass.claimed;
            total.published += pass.published;
            total.standby = pass.standby;
            let behind = pass.claimed as i64 >= self.settings.batch_size;
            let removed =
                self.removed.fetch_add(pass.published, Ordering::Relaxed) + pass.published;
            let due = if behind {
                VACUUM_WHILE_BEHIND_ROWS
            } else {
                VACUUM_AFTER_ROWS
            };
            if removed >= due {
                self.vacuum().await;
                self.removed.store(0, Ordering::Relaxed);
            }
            if pass.failure.is_some() || pass.standby || !behind {
                total.failure = pass.failure;
                return Ok(total);
            }
        }
    }

    /// A claim reads the primary key from its start, over the entries of the rows already sent,
    /// which stay until a vacuum: every claim costs what was sent since (44 ms for 500 rows after
    /// a burst, against 3 ms), and autovacuum may come a minute later. The outbox holds only
    /// unsent rows, so its vacuum costs milliseconds. A vacuum that fails or is skipped only
    /// leaves the claims slower.
    async fn vacuum(&self) {
        let started = Instant::now();
        let vacuumed = async {
            let mut conn = self.pool.get().await?;
            diesel::sql_query("VACUUM (INDEX_CLEANUP ON, SKIP_LOCKED) outbox")
                .execute(&mut conn)
                .await?;
            anyhow::Ok(())
        };
        match vacuumed.await {
            Ok(()) => self
                .metrics
                .outbox_relay_seconds
                .with_label_values(&["vacuum"])
                .observe(started.elapsed().as_secs_f64()),
            Err(e) => tracing::warn!(error = %e, "could not vacuum the outbox"),
        }
    }

    /// Update the backlog gauges; returns how many rows wait for a retry.
    async fn refresh_backlog(&self) -> anyhow::Result<i64> {
        let mut conn = self.pool.get().await?;
        // ORDER BY seq pins the primary key, so this costs O(pending) even when stale statistics
        // make the planner prefer scanning the heap, which keeps the size of the largest backlog
        // (the outbox is created with vacuum_truncate off).
        let backlog: Backlog = diesel::sql_query(
            "SELECT count(*) AS pending, \
                    count(*) FILTER (WHERE next_attempt_at > now()) AS delayed, \
                    coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_seconds \
             FROM (SELECT created_at, next_attempt_at FROM outbox ORDER BY seq) unsent",
        )
        .prepared()
        .get_result(&mut conn)
        .await?;
        self.metrics.outbox_pending.set(backlog.pending);
        self.metrics
            .outbox_oldest_age_seconds
            .set(backlog.oldest_seconds as i64);
        Ok(backlog.delayed)
    }

    /// Delete rows sent longer than the retention ago, and what else expires
    /// ([`retention::prune`]).
    pub async fn prune(&self) -> anyhow::Result<()> {
        retention::prune(&self.pool, self.settings.retention, PublishedBy::Relay).await
    }

    /// A connection that hears `NOTIFY outbox`; None when LISTEN is not possible (polling still works).
    async fn listener(&self) -> Option<AsyncPgConnection> {
        let mut conn = AsyncPgConnection::establish(&self.database_url)
            .await
            .map_err(|e| tracing::warn!(error = %e, "outbox LISTEN connection failed; polling"))
            .ok()?;
        diesel::sql_query("LISTEN outbox")
            .execute(&mut conn)
            .await
            .map_err(|e| tracing::warn!(error = %e, "LISTEN outbox failed; polling"))
            .ok()?;
        Some(conn)
    }

    /// Run until `shutdown` turns true.
    ///
    /// Woken by this process's writers ([`RelayWakeup`]), by NOTIFY from other processes while it
    /// is idle and armed, and by the poll interval. While rows keep coming, wake-ups do not start
    /// a pass: it looks again one pass interval after its last drain started, so a pass takes what
    /// came meanwhile instead of each writer's commit starting one.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(publisher = self.publisher.name(), "outbox relay started");
        let mut listener = self.listener().await;
        // Failures of the relay itself (database); publish failures back off per key instead.
        let mut failures: u32 = 0;
        let mut last_prune = Instant::now() - Duration::from_secs(3600);
        let mut last_check = Instant::now() - IDLE_CHECK_INTERVAL;
        let mut last_backlog = Instant::now() - BACKLOG_REFRESH;
        let mut delayed = 0;
        let mut last_problem: Option<String> = None;
        // Whether this relay has asked other processes' writers to NOTIFY (see `arm_wakeup`).
        let mut armed = false;
        // The first pass runs at once: rows may have waited while no relay ran.
        let mut wait = Duration::ZERO;
        // Rows keep coming: this process's wake-ups wait for the pass interval too.
        let mut paced = false;
        loop {
            {
                let notified = async {
                    match listener.as_mut() {
                        Some(conn) => heard(conn.notifications_stream()).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = shutdown.wait_for(|stop| *stop) => break,
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.wakeup.woken(), if !paced => {}
                    alive = notified => if !alive { listener = None; },
                }
            }
            if listener.is_none() {
                listener = self.listener().await;
            }
            wait = self.settings.poll_interval;
            paced = false;
            let started = Instant::now();
            match self.drain().await {
                Ok(pass) => {
                    failures = 0;
                    // Only the publishing relay looks at the backlog; standbys stay cheap. While
                    // rows fail or wait for a retry, every pass looks, so /ready follows closely.
                    let failed = pass.failure.is_some();
                    let due = failed || delayed > 0 || last_backlog.elapsed() >= BACKLOG_REFRESH;
                    if !pass.standby && due {
                        last_backlog = Instant::now();
                        delayed = self.refresh_backlog().await.unwrap_or_else(|e| {
                            tracing::debug!(error = %e, "outbox backlog query failed");
                            0
                        });
                    }
                    if let Some(reason) = pass.failure {
                        tracing::warn!(%reason, "publishing failed; those keys wait in the outbox");
                        last_problem = Some(reason);
                    }
                    if failed || delayed > 0 {
                        let reason = last_problem
                            .as_deref()
                            .unwrap_or("earlier publish failures");
                        self.health.degraded(format!(
                            "publish failing: {delayed} event(s) waiting to be retried ({reason})"
                        ));
                    } else if pass.claimed > 0 {
                        if last_problem.take().is_some() {
                            tracing::info!("event path recovered");
                        }
                        self.health.healthy();
                        last_check = Instant::now();
                    } else if last_check.elapsed() >= IDLE_CHECK_INTERVAL {
                        // Nothing to publish says nothing about the broker: ask it.
                        last_check = Instant::now();
                        match self.publisher.check().await {
                            Ok(()) => {
                                last_problem = None;
                                self.health.healthy()
                            }
                            Err(e) => self.health.degraded(format!("publisher unreachable: {e}")),
                        }
                    }
                    // Busy (or the lock holder may miss our rows): disarm other writers' NOTIFY
                    // and look again soon. Idle: arm it, then one more pass at once for rows
                    // whose writers committed before they could see the flag.
                    let busy = pass.claimed > 0 || pass.standby;
                    if busy == armed {
                        match arm_wakeup(&self.pool, !busy).await {
                            Ok(()) => {
                                armed = !busy;
                                if armed {
                                    wait = Duration::ZERO;
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, "outbox wake-up flag not set"),
                        }
                    }
                    // Soon: one pass interval after this drain started.
                    if busy && !failed {
                        wait = self
                            .settings
                            .pass_interval
                            .saturating_sub(started.elapsed());
                        paced = true;
                    }
                }
                Err(e) => {
                    failures += 1;
                    wait = backoff(failures, self.settings.max_backoff);
                    tracing::warn!(error = %e, failures, "outbox relay pass failed");
                    self.health.degraded(format!("outbox relay: {e}"));
                }
            }
            if last_prune.elapsed() >= retention::PRUNE_INTERVAL {
                last_prune = Instant::now();
                if let Err(e) = self.prune().await {
                    tracing::warn!(error = %e, "pruning failed");
                }
            }
        }
        tracing::info!("outbox relay stopped");
    }
}

/// The claimed rows with their payloads: handed over by this process's writers, or read back
/// in one statement for the others.
async fn with_payloads(
    conn: &mut AsyncPgConnection,
    handoff: &PayloadHandoff,
    claimed: Vec<Claimed>,
) -> anyhow::Result<Vec<Pending>> {
    let handed = handoff.take(claimed.iter().map(|row| row.id));
    let missing: Vec<i64> = claimed
        .iter()
        .zip(&handed)
        .filter(|(_, entry)| entry.is_none())
        .map(|(row, _)| row.seq)
        .collect();
    let mut stored: HashMap<i64, Entry> = HashMap::with_capacity(missing.len());
    if !missing.is_empty() {
        let read: Vec<Stored> = diesel::sql_query(PAYLOADS)
            .bind::<diesel::sql_types::Array<BigInt>, _>(&missing)
            .prepared()
            .load(conn)
            .await?;
        stored.extend(read.into_iter().map(|row| {
            let entry = Entry {
                payload: row.payload,
                traceparent: row.traceparent,
            };
            (row.seq, entry)
        }));
    }
    claimed
        .into_iter()
        .zip(handed)
        .map(|(row, entry)| {
            // The pass holds the row's lock: what it claimed is still there to read.
            let Entry {
                payload,
                traceparent,
            } = entry
                .or_else(|| stored.remove(&row.seq))
                .ok_or_else(|| anyhow::anyhow!("outbox row {} vanished while claimed", row.seq))?;
            Ok(Pending {
                seq: row.seq,
                topic: row.topic,
                message_key: row.message_key,
                payload,
                traceparent,
            })
        })
        .collect()
}

/// Capped exponential backoff: 100 ms, 200 ms, 400 ms ... up to `max`.
fn backoff(failures: u32, max: Duration) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << failures.min(16).saturating_sub(1))).min(max)
}

struct Outcome<'a> {
    sent: Vec<&'a Pending>,
    failed: Vec<(&'a Pending, PublishError)>,
}

/// Publish each (topic, key)'s rows one after another, in rounds: a round publishes the next row
/// of every chain at once, and a chain stops at its first failure so its later rows stay pending
/// behind it.
async fn publish_in_key_order<'a>(
    publisher: &dyn Publisher,
    prefix: &str,
    rows: &'a [Pending],
) -> Outcome<'a> {
    // Order matters within a topic's partition, so a chain is one (topic, key): a task's
    // `task-updates` notice does not wait for its `task-events` acknowledgement.
    let mut by_key: HashMap<(&str, &str), Vec<&Pending>> = HashMap::new();
    for row in rows {
        by_key
            .entry((row.topic.as_str(), row.message_key.as_str()))
            .or_default()
            .push(row);
    }
    let topics: HashMap<&str, String> = by_key
        .keys()
        .map(|(topic, _)| (*topic, format!("{prefix}{topic}")))
        .collect();
    let mut chains: Vec<_> = by_key.into_values().map(Vec::into_iter).collect();
    let mut outcome = Outcome {
        sent: Vec::with_capacity(rows.len()),
        failed: Vec::new(),
    };
    loop {
        // The next row of each chain, in the order of the chains left.
        let mut heads = Vec::with_capacity(chains.len());
        chains.retain_mut(|chain| chain.next().map(|row| heads.push(row)).is_some());
        if heads.is_empty() {
            return outcome;
        }
        let messages: Vec<Outbound<'_>> = heads
            .iter()
            .map(|row| Outbound {
                topic: &topics[row.topic.as_str()],
                key: &row.message_key,
                payload: row.payload.as_bytes(),
                traceparent: row.traceparent.as_deref(),
            })
            .collect();
        let results = publisher.publish(&messages).await;
        // Whether each chain goes on: a row without a result stays pending, as a failed one.
        let mut going = heads
            .into_iter()
            .zip(results)
            .map(|(row, result)| match result {
                Ok(()) => {
                    outcome.sent.push(row);
                    true
                }
                Err(e) => {
                    outcome.failed.push((row, e));
                    false
                }
            });
        chains.retain(|_| going.next().unwrap_or(false));
    }
}

/// Wait for a notification, then take the rest of its burst (one pass publishes everything
/// committed so far, not one pass each); false when the connection is gone. The burst is taken
/// only after a notification: a stream that ended must not be polled again (it panics).
async fn heard(stream: impl futures::Stream<Item = diesel::QueryResult<PgNotification>>) -> bool {
    let mut stream = std::pin::pin!(stream);
    let alive = matches!(stream.next().await, Some(Ok(_)));
    if alive {
        while let Some(Some(Ok(_))) = stream.next().now_or_never() {}
    }
    alive
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let max = Duration::from_secs(30);
        assert_eq!(backoff(1, max), Duration::from_millis(100));
        assert_eq!(backoff(2, max), Duration::from_millis(200));
        assert_eq!(backoff(5, max), Duration::from_millis(1600));
        assert_eq!(backoff(40, max), max);
    }

    // Found by ./dev chaos: PostgreSQL restarted just after a NOTIFY reached the relay's LISTEN
    // connection. The error that closed it ended that burst; the next wait found the stream
    // ended, polled it again and panicked: the relay task died and its replica published no
    // more events.
    #[tokio::test]
    async fn a_listen_connection_closed_after_a_notification_is_reported_gone() {
        use diesel::result::{DatabaseErrorKind, Error};
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tx.send(Ok(PgNotification {
            process_id: 1,
            channel: "outbox".into(),
            payload: String::new(),
        }))
        .unwrap();
        tx.send(Err(Error::DatabaseError(
            DatabaseErrorKind::UnableToSendCommand,
            Box::new("connection closed".to_owned()),
        )))
        .unwrap();
        drop(tx);
        // As diesel-async's `notifications_stream`: a new stream over the connection's channel
        // for every wait.
        fn stream(
            rx: &mut tokio::sync::mpsc::UnboundedReceiver<diesel::QueryResult<PgNotification>>,
        ) -> impl futures::Stream<Item = diesel::QueryResult<PgNotification>> + '_ {
            futures::stream::unfold(rx, |rx| async { rx.recv().await.map(|item| (item, rx)) })
        }
        assert!(heard(stream(&mut rx)).await, "the notification");
        assert!(!heard(stream(&mut rx)).await, "the connection is gone");
    }
}
