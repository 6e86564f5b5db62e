//! Diesel table definitions of the shared database (the generated `search` tsvector column is
//! used only in raw SQL).

diesel::table! {
    tasks (id) {
        id -> Uuid,
        user_id -> Text,
        title -> Text,
        description -> Nullable<Text>,
        completed -> Bool,
        completed_at -> Nullable<Timestamptz>,
        priority -> SmallInt,
        tags -> Array<Text>,
        due_at -> Nullable<Timestamptz>,
        timezone -> Text,
        reminder_minutes_before -> Nullable<Integer>,
        recurrence -> Nullable<Jsonb>,
        series_id -> Uuid,
        occurrence -> Integer,
        version -> BigInt,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    /// Unsent events only: the relay deletes what it sent, or with a retention moves it to
    /// `outbox_sent` (raw SQL).
    outbox (seq) {
        seq -> BigInt,
        id -> Uuid,
        topic -> Text,
        message_key -> Text,
        event_type -> Text,
        payload -> Jsonb,
        created_at -> Timestamptz,
        attempts -> Integer,
        last_error -> Nullable<Text>,
        next_attempt_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    idempotency_keys (user_id, idempotency_key) {
        user_id -> Text,
        idempotency_key -> Text,
        request_hash -> Bytea,
        response_status -> SmallInt,
        response_body -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    processed_events (consumer, event_id) {
        consumer -> Text,
        event_id -> Uuid,
        processed_at -> Timestamptz,
    }
}

diesel::table! {
    jobs (id) {
        id -> BigInt,
        kind -> Text,
        payload -> Jsonb,
        state -> Text,
        attempts -> Integer,
        max_attempts -> Integer,
        run_at -> Timestamptz,
        last_error -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    task_history (event_id) {
        event_id -> Uuid,
        task_id -> Uuid,
        user_id -> Text,
        event_type -> Text,
        version -> BigInt,
        occurred_at -> Timestamptz,
        recorded_at -> Timestamptz,
    }
}

diesel::table! {
    reminders (id) {
        id -> Uuid,
        task_id -> Uuid,
        user_id -> Text,
        due_at -> Timestamptz,
        scheduled_for -> Timestamptz,
        remind_at -> Timestamptz,
        status -> Text,
        fired_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    notifications (id) {
        id -> Uuid,
        event_id -> Uuid,
        reminder_id -> Uuid,
        task_id -> Uuid,
        user_id -> Text,
        title -> Text,
        due_at -> Timestamptz,
        remind_at -> Timestamptz,
        status -> Text,
        delivered_at -> Nullable<Timestamptz>,
        read_at -> Nullable<Timestamptz>,
        event -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    notification_deliveries (notification_id, channel) {
        notification_id -> Uuid,
        channel -> Text,
        status -> Text,
        attempts -> Integer,
        last_error -> Nullable<Text>,
        delivered_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    kv_store (key) {
        key -> Text,
        value -> Jsonb,
        updated_at -> Timestamptz,
        version -> Int8,
    }
}

diesel::joinable!(notification_deliveries -> notifications (notification_id));
diesel::allow_tables_to_appear_in_same_query!(notifications, notification_deliveries);
