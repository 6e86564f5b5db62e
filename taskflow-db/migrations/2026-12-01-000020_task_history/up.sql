-- Each task's events as delivered back by Dapr's subscription (POST /api/events/task-events):
-- one row per event id, so redeliveries record nothing new.
CREATE TABLE task_history (
    event_id uuid PRIMARY KEY,
    task_id uuid NOT NULL,
    user_id text NOT NULL,
    event_type text NOT NULL,
    version bigint NOT NULL,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX task_history_task ON task_history (user_id, task_id, occurred_at, event_id);
