-- One notification per reminder firing (the reminder.due event), written by the notifier in the
-- transaction that records the event as handled; unread until the user marks it read.
CREATE TABLE notifications (
    id uuid PRIMARY KEY,               -- also the webhook's Idempotency-Key
    event_id uuid NOT NULL UNIQUE,     -- the reminder.due event: a redelivery adds nothing
    reminder_id uuid NOT NULL,
    task_id uuid NOT NULL,
    user_id text NOT NULL,
    title text NOT NULL,
    due_at timestamptz NOT NULL,
    remind_at timestamptz NOT NULL,
    -- delivered once every channel delivered, failed once one gave up.
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    delivered_at timestamptz,
    read_at timestamptz,
    event jsonb NOT NULL,              -- the CloudEvent as received, for the dead-letter topic
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_user ON notifications (user_id, created_at, id);

-- Each channel's delivery of a notification.
CREATE TABLE notification_deliveries (
    notification_id uuid NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    channel text NOT NULL CHECK (channel IN ('in_app', 'webhook')),
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    delivered_at timestamptz,
    PRIMARY KEY (notification_id, channel)
);

-- The PostgreSQL implementation of the key-value store (user preferences).
CREATE TABLE kv_store (
    key text PRIMARY KEY,
    value jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
