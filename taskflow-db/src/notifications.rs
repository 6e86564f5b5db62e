//! Notifications: one per reminder firing, with a delivery row per channel. The notifier writes
//! them; the backend's API lists them and marks them read.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use shared_events::ReminderDue;
use uuid::Uuid;

use crate::preferences::Channel;
use crate::prepared::Prepare;
use crate::schema::{notification_deliveries as deliveries, notifications};

pub const PENDING: &str = "pending";
pub const DELIVERED: &str = "delivered";
pub const FAILED: &str = "failed";

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = notifications, check_for_backend(Pg))]
pub struct NotificationRow {
    pub id: Uuid,
    pub event_id: Uuid,
    pub reminder_id: Uuid,
    pub task_id: Uuid,
    pub user_id: String,
    pub title: String,
    pub due_at: DateTime<Utc>,
    pub remind_at: DateTime<Utc>,
    pub status: String,
    pub delivered_at: Option<DateTime<Utc>>,
    pub read_at: Option<DateTime<Utc>>,
    pub event: Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = deliveries, check_for_backend(Pg))]
pub struct DeliveryRow {
    pub notification_id: Uuid,
    pub channel: String,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Record the notification of one reminder firing (`event_id`) with a delivery per channel;
/// None when this firing already has one. The in-app channel is this row itself, so its delivery
/// is written as delivered (one attempt), and a notification with no other channel is delivered
/// at once: three statements fewer per reminder than recording it afterwards.
pub async fn insert(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
    event: &Value,
    reminder: &ReminderDue,
    channels: &[Channel],
) -> QueryResult<Option<NotificationRow>> {
    let now = Utc::now();
    let delivered_now = |c: &Channel| *c == Channel::InApp;
    let status = if channels.iter().all(delivered_now) {
        DELIVERED
    } else {
        PENDING
    };
    let row: Option<NotificationRow> = diesel::insert_into(notifications::table)
        .values((
            notifications::status.eq(status),
            notifications::delivered_at.eq((status == DELIVERED).then_some(now)),
            notifications::id.eq(Uuid::now_v7()),
            notifications::event_id.eq(event_id),
            notifications::reminder_id.eq(reminder.reminder_id),
            notifications::task_id.eq(reminder.task_id),
            notifications::user_id.eq(&reminder.user_id),
            notifications::title.eq(&reminder.title),
            notifications::due_at.eq(reminder.due_at),
            notifications::remind_at.eq(reminder.remind_at),
            notifications::event.eq(event),
        ))
        .on_conflict(notifications::event_id)
        .do_nothing()
        .returning(NotificationRow::as_returning())
        .get_result(conn)
        .await
        .optional()?;
    if let Some(row) = &row {
        let values: Vec<_> = channels
            .iter()
            .map(|c| {
                let delivered = delivered_now(c);
                (
                    deliveries::notification_id.eq(row.id),
                    deliveries::channel.eq(c.as_str()),
                    deliveries::status.eq(if delivered { DELIVERED } else { PENDING }),
                    deliveries::attempts.eq(i32::from(delivered)),
                    deliveries::delivered_at.eq(delivered.then_some(now)),
                )
            })
            .collect();
        diesel::insert_into(deliveries::table)
            .values(values)
            .prepared()
            .execute(conn)
            .await?;
    }
    Ok(row)
}

pub async fn find(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<NotificationRow>> {
    notifications::table
        .find(id)
        .select(NotificationRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Record the outcome of a channel's delivery (`DELIVERED` or `FAILED`), and the notification's:
/// delivered once every channel is, failed once one failed.
pub async fn record_delivery(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    channel: Channel,
    status: &str,
    attempts: i32,
    error: Option<&str>,
) -> QueryResult<()> {
    let now = Utc::now();
    diesel::update(deliveries::table.find((id, channel.as_str())))
        .set((
            deliveries::status.eq(status),
            deliveries::attempts.eq(attempts),
            deliveries::last_error.eq(error),
            deliveries::delivered_at.eq((status == DELIVERED).then_some(now)),
        ))
        .prepared()
        .execute(conn)
        .await?;
    let statuses: Vec<String> = deliveries::table
        .filter(deliveries::notification_id.eq(id))
        .select(deliveries::status)
        .load(conn)
        .await?;
    let overall = if statuses.iter().any(|s| s == FAILED) {
        FAILED
    } else if statuses.iter().all(|s| s == DELIVERED) {
        DELIVERED
    } else {
        PENDING
    };
    diesel::update(notifications::table.find(id))
        .set((
            notifications::status.eq(overall),
            notifications::delivered_at.eq((overall == DELIVERED).then_some(now)),
        ))
        .prepared()
        .execute(conn)
        .await?;
    Ok(())
}

/// The user's notifications, newest first, with their deliveries.
pub async fn list(
    conn: &mut AsyncPgConnection,
    user_id: &str,
    status: Option<&str>,
    unread: Option<bool>,
    limit: i64,
) -> QueryResult<Vec<(NotificationRow, Vec<DeliveryRow>)>> {
    let mut query = notifications::table
        .filter(notifications::user_id.eq(user_id))
        .select(NotificationRow::as_select())
        .order((notifications::created_at.desc(), notifications::id.desc()))
        .limit(limit)
        .into_boxed();
    if let Some(status) = status {
        query = query.filter(notifications::status.eq(status.to_owned()));
    }
    match unread {
        Some(true) => query = query.filter(notifications::read_at.is_null()),
        Some(false) => query = query.filter(notifications::read_at.is_not_null()),
        None => {}
    }
    let rows: Vec<NotificationRow> = query.load(conn).await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let all: Vec<DeliveryRow> = deliveries::table
        .filter(deliveries::notification_id.eq_any(&ids))
        .select(DeliveryRow::as_select())
        .order(deliveries::channel)
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let mine = all
                .iter()
                .filter(|d| d.notification_id == r.id)
                .cloned()
                .collect();
            (r, mine)
        })
        .collect())
}

/// Mark the user's notification read (once; later calls keep the first time). False when the
/// user has no such notification.
pub async fn mark_read(conn: &mut AsyncPgConnection, user_id: &str, id: Uuid) -> QueryResult<bool> {
    let found = diesel::update(
        notifications::table
            .filter(notifications::id.eq(id))
            .filter(notifications::user_id.eq(user_id)),
    )
    .set(notifications::read_at.eq(diesel::dsl::sql::<
        diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>,
    >("coalesce(read_at, now())")))
    .execute(conn)
    .await?;
    Ok(found > 0)
}
