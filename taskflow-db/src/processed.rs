//! Idempotent consumers: `(consumer, event id)` recorded in the effect's own transaction.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::schema::processed_events;

/// Record that `consumer` handled `event_id`. Returns false when it already had: the caller
/// skips the effect. Call it inside the transaction that makes the effect durable.
pub async fn first_time(
    conn: &mut AsyncPgConnection,
    consumer: &str,
    event_id: Uuid,
) -> QueryResult<bool> {
    let inserted = diesel::insert_into(processed_events::table)
        .values((
            processed_events::consumer.eq(consumer),
            processed_events::event_id.eq(event_id),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(inserted == 1)
}

/// Forget records older than 30 days: far longer than any topic keeps messages (7 days), so a
/// redelivery is always recognised.
pub async fn prune(conn: &mut AsyncPgConnection) -> QueryResult<usize> {
    diesel::sql_query(
        "DELETE FROM processed_events WHERE processed_at < now() - interval '30 days'",
    )
    .execute(conn)
    .await
}
