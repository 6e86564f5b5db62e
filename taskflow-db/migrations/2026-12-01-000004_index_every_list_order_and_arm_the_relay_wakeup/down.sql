CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END;
$$;
DROP TABLE outbox_relay_wakeup;

DROP INDEX tasks_user_title;
DROP INDEX tasks_user_due_desc;
DROP INDEX tasks_user_due_asc;
CREATE INDEX tasks_user_due ON tasks (user_id, completed, due_at, id);
