//! Migrations that move rows, tried on rows: a database migrated up to the migration before,
//! given rows in the old shape, then migrated the rest of the way (and back).

use diesel_async::pooled_connection::deadpool::Object;
use diesel_async::{AsyncMigrationHarness, AsyncPgConnection};
use diesel_migrations::MigrationHarness;
use taskflow_db::migrations::{create_database, MIGRATIONS};
use taskflow_db::pool::pool;
use taskflow_db::DbPool;
use taskflow_test_support::db::{admin_url, count, execute};
use uuid::Uuid;

/// An empty database migrated up to, not including, the migration whose name starts `before`.
async fn migrated_up_to(before: &'static str) -> DbPool {
    let name = format!("tf_mig_{}_{}", Uuid::now_v7().simple(), std::process::id());
    let url = create_database(&admin_url(), &name, Some("template0"))
        .await
        .expect("create database");
    let pool = pool(&url, 1).expect("pool");
    harness(&pool, move |h| loop {
        let pending = h.pending_migrations(MIGRATIONS).expect("pending");
        let next = pending
            .first()
            .unwrap_or_else(|| panic!("no migration {before}"));
        if next.name().to_string().starts_with(before) {
            return;
        }
        h.run_migration(next.as_ref()).expect("migration");
    })
    .await;
    pool
}

type Harness = AsyncMigrationHarness<Object<AsyncPgConnection>>;

/// Run `run` with a migration harness on one of the pool's connections.
async fn harness<T: Send + 'static>(
    pool: &DbPool,
    run: impl FnOnce(&mut Harness) -> T + Send + 'static,
) -> T {
    let conn = pool.get().await.expect("connection");
    tokio::task::spawn_blocking(move || run(&mut AsyncMigrationHarness::new(conn)))
        .await
        .unwrap()
}

#[tokio::test]
async fn splitting_the_outbox_keeps_unsent_rows_in_order_and_sent_rows_retained() {
    let pool = migrated_up_to("2026-12-05-000005").await;
    // seq 1..5: sent, waiting for a retry, sent, unsent, sent.
    execute(
        &pool,
        "INSERT INTO outbox (id, topic, message_key, event_type, payload, attempts, last_error, \
                             next_attempt_at, sent_at) \
         SELECT gen_random_uuid(), 'task-events', 'k' || i, 't', jsonb_build_object('i', i), \
                CASE WHEN i = 2 THEN 3 ELSE 0 END, CASE WHEN i = 2 THEN 'broker down' END, \
                CASE WHEN i = 2 THEN now() + interval '1 minute' END, \
                CASE WHEN i IN (1, 3, 5) THEN now() - interval '1 hour' END \
         FROM generate_series(1, 5) i ORDER BY i",
    )
    .await;

    harness(&pool, |h| h.run_pending_migrations(MIGRATIONS).map(|_| ()))
        .await
        .expect("the split");
    // The unsent rows keep their seq, attempts and retry time; the sent ones their sent_at.
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) AS n FROM outbox WHERE (seq = 2 AND attempts = 3 \
               AND last_error = 'broker down' AND next_attempt_at > now() AND payload->>'i' = '2') \
               OR (seq = 4 AND attempts = 0 AND next_attempt_at IS NULL AND payload->>'i' = '4')"
        )
        .await,
        2
    );
    assert_eq!(count(&pool, "SELECT count(*) AS n FROM outbox").await, 2);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) AS n FROM outbox_sent WHERE seq IN (1, 3, 5) \
               AND payload->>'i' = seq::text AND sent_at < now()"
        )
        .await,
        3
    );
    assert_eq!(
        count(&pool, "SELECT count(*) AS n FROM outbox_sent").await,
        3
    );
    // The numbering goes on, and a new row still wakes the relay (the trigger moved with it).
    assert_eq!(new_row_seq(&pool).await, 6, "seq continues");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) AS n FROM pg_trigger \
             WHERE tgrelid = 'outbox'::regclass AND tgname = 'outbox_notify'"
        )
        .await,
        1
    );

    // And back: one table again, every row with its seq, the unsent ones still unsent.
    harness(&pool, |h| h.revert_last_migration(MIGRATIONS).map(|_| ()))
        .await
        .expect("the revert");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL"
        )
        .await,
        3
    );
    assert_eq!(
        count(&pool, "SELECT coalesce(sum(seq), 0)::int8 AS n FROM outbox").await,
        21
    );
    assert_eq!(
        new_row_seq(&pool).await,
        7,
        "seq continues after the revert"
    );
}

/// Insert an outbox row; its `seq`.
async fn new_row_seq(pool: &DbPool) -> i64 {
    execute(
        pool,
        "INSERT INTO outbox (id, topic, message_key, event_type, payload) \
         VALUES (gen_random_uuid(), 'task-events', 'k', 't', '{}')",
    )
    .await;
    count(pool, "SELECT max(seq) AS n FROM outbox").await
}
