-- Reminders of tasks: maintained by `taskflow_db::reminders::sync_for_task` in the transaction of
-- every change of a task, fired by the `reminder.fire` job. No foreign key to `tasks`: a deleted
-- task's reminder stays, cancelled, as the record of what happened.
CREATE TABLE reminders (
    id uuid PRIMARY KEY,
    task_id uuid NOT NULL,
    user_id text NOT NULL,
    -- The task's due date and `due_at - reminder_minutes_before` when it was scheduled: what a
    -- change of the task is compared with, so an edit that keeps them keeps a fired or snoozed
    -- reminder as it is.
    due_at timestamptz NOT NULL,
    scheduled_for timestamptz NOT NULL,
    -- When it fires: `scheduled_for`, or later when snoozed.
    remind_at timestamptz NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'fired', 'cancelled')),
    fired_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- One pending reminder per task.
CREATE UNIQUE INDEX reminders_pending_task ON reminders (task_id) WHERE status = 'pending';
-- The scan walks pending reminders by time.
CREATE INDEX reminders_pending_due ON reminders (remind_at) WHERE status = 'pending';
CREATE INDEX reminders_user ON reminders (user_id, status, remind_at);
CREATE INDEX reminders_task ON reminders (task_id);
