CREATE TABLE tasks (
    id uuid PRIMARY KEY,
    user_id text NOT NULL,
    title text NOT NULL,
    description text,
    completed boolean NOT NULL DEFAULT false,
    completed_at timestamptz,
    -- 0 none .. 4 urgent, so ORDER BY priority orders by urgency
    priority smallint NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 4),
    tags text[] NOT NULL DEFAULT '{}',
    due_at timestamptz,
    timezone text NOT NULL DEFAULT 'UTC',
    reminder_minutes_before integer CHECK (reminder_minutes_before BETWEEN 0 AND 525600),
    recurrence jsonb,
    series_id uuid NOT NULL,
    occurrence integer NOT NULL DEFAULT 1 CHECK (occurrence >= 1),
    version bigint NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    search tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', title), 'A')
        || setweight(to_tsvector('english', coalesce(description, '')), 'B')
    ) STORED
);

-- One row per occurrence number in a series: a redelivered "completed" event cannot create
-- the next occurrence twice.
CREATE UNIQUE INDEX tasks_series_occurrence ON tasks (series_id, occurrence);
-- One index per list order (status filter first): a page is read from the index, not sorted.
CREATE INDEX tasks_user_due ON tasks (user_id, completed, due_at, id);
CREATE INDEX tasks_user_priority ON tasks (user_id, completed, priority, id);
CREATE INDEX tasks_user_created ON tasks (user_id, completed, created_at, id);
CREATE INDEX tasks_search ON tasks USING gin (search);
CREATE INDEX tasks_tags ON tasks USING gin (tags);

-- Transactional outbox: written in the same transaction as the change, published by the relay.
CREATE TABLE outbox (
    id uuid PRIMARY KEY,               -- the CloudEvent id (UUID v7)
    -- Publish order. Taken at insert time, after the change's row lock, so a task's later change
    -- always has a larger seq even when clocks of two backend replicas disagree.
    seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    topic text NOT NULL,
    message_key text NOT NULL,         -- the task's series id: one task's events stay in order
    event_type text NOT NULL,          -- the CloudEvents type
    payload jsonb NOT NULL,            -- the whole structured CloudEvent
    created_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    -- Set on a failed publish: this row, and so its key's later rows, wait until then.
    next_attempt_at timestamptz,
    sent_at timestamptz
);
CREATE INDEX outbox_unsent ON outbox (seq) WHERE sent_at IS NULL;
-- Finds the keys whose head is waiting to be retried (few rows, so the claim stays cheap).
CREATE INDEX outbox_delayed ON outbox (topic, message_key, seq)
    WHERE sent_at IS NULL AND next_attempt_at IS NOT NULL;
CREATE INDEX outbox_sent_at ON outbox (sent_at) WHERE sent_at IS NOT NULL;

-- Wake the relay as soon as a transaction that wrote events commits.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- Idempotency-Key for POST /tasks: the same key and body within 24 h replays the first answer.
CREATE TABLE idempotency_keys (
    user_id text NOT NULL,
    idempotency_key text NOT NULL,
    request_hash bytea NOT NULL,
    response_status smallint NOT NULL,
    response_body jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, idempotency_key)
);

-- Idempotent consumers: (consumer, event id) inserted in the effect's transaction.
CREATE TABLE processed_events (
    consumer text NOT NULL,
    event_id uuid NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
