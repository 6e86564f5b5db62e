-- Every list order reads only its page from an index. due_at sorts NULLs last in both
-- directions, so each direction gets its own key with NULL mapped past the end (no API date can
-- be infinite); descending orders scan their index backwards (ties by id descending).
DROP INDEX tasks_user_due;
CREATE INDEX tasks_user_due_asc ON tasks (user_id, completed, coalesce(due_at, 'infinity'::timestamptz), id);
CREATE INDEX tasks_user_due_desc ON tasks (user_id, completed, coalesce(due_at, '-infinity'::timestamptz), id);
CREATE INDEX tasks_user_title ON tasks (user_id, completed, title, id);

-- A NOTIFY inside a transaction takes the database-wide notification lock at commit, which
-- serialised every create. The backend wakes its own relay in-process; other writers (other
-- processes, other replicas) NOTIFY only while a relay has armed this flag before going idle,
-- and the relay disarms it when it wakes: at most a burst per idle period, not one per commit.
CREATE UNLOGGED TABLE outbox_relay_wakeup (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    armed boolean NOT NULL
);
INSERT INTO outbox_relay_wakeup (armed) VALUES (false);

CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT armed FROM outbox_relay_wakeup) THEN
        PERFORM pg_notify('outbox', '');
    END IF;
    RETURN NULL;
END;
$$;
