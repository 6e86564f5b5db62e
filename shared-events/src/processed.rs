//! Idempotent consumers: record `(consumer, event id)` in the effect's own transaction.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

diesel::table! {
    processed_events (consumer, event_id) {
        consumer -> Text,
        event_id -> Uuid,
        processed_at -> Timestamptz,
    }
}

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

/// [`first_time`] on a pooled connection, for consumers whose effect is outside the database.
pub async fn record_once(
    pool: &crate::database::DbPool,
    consumer: &str,
    event_id: Uuid,
) -> anyhow::Result<bool> {
    let mut conn = pool.get().await?;
    Ok(first_time(&mut conn, consumer, event_id).await?)
}
