-- The relay claims from `outbox`; sent rows move to `outbox_sent`, kept there for
-- OUTBOX_RETENTION_HOURS. While both lived in one table, a backlog's rows left dead entries in
-- the claim's index on pages nothing revisits, and every later claim read them until a VACUUM
-- with index cleanup. Autovacuum waits for 20 % of the table (72 hours of events) and then
-- skips the indexes when the dead rows sit on < 2 % of its pages, so after one burst each claim
-- read ~185 extra pages for hours (README "Performance", section "late"). Now the claimed table
-- holds only what is unsent: its autovacuum threshold is relative to that, and one vacuum costs
-- what the backlog was, not what the retention keeps. The move is a DELETE and an INSERT where
-- the relay used to UPDATE (a new row version and three index entries).
--
-- The old table becomes `outbox_sent` (a rename: no rows are copied); its unsent rows move to
-- a new `outbox` with the same `seq`, whose numbering goes on where the old one stopped.
ALTER TABLE outbox RENAME TO outbox_sent;
ALTER SEQUENCE outbox_seq_seq RENAME TO outbox_sent_seq_seq;
DROP TRIGGER outbox_notify ON outbox_sent;
-- The names the new table takes.
DROP INDEX outbox_waiting;
ALTER TABLE outbox_sent DROP CONSTRAINT outbox_pkey;

-- Only the claim's columns and indexes: `seq` is the claim's order and the row's identity (the
-- CloudEvent `id` is a UUID v7 and needs no index of its own); fewer indexes also keep a create's
-- locks within PostgreSQL's 16 fast-path slots.
CREATE TABLE outbox (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id uuid NOT NULL,                  -- the CloudEvent id (UUID v7)
    topic text NOT NULL,
    message_key text NOT NULL,         -- the task's series id: one task's events stay in order
    event_type text NOT NULL,          -- the CloudEvents type
    payload jsonb NOT NULL,            -- the whole structured CloudEvent
    created_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    -- Set on a failed publish: this row, and so its key's later rows, wait until then.
    next_attempt_at timestamptz
) WITH (
    -- A vacuum after a backlog would otherwise truncate the emptied heap, which takes an
    -- exclusive lock that every create waits behind; the free pages are reused instead.
    vacuum_truncate = false
);
CREATE INDEX outbox_waiting ON outbox (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
SELECT setval('outbox_seq_seq', last_value, is_called) FROM outbox_sent_seq_seq;

INSERT INTO outbox (seq, id, topic, message_key, event_type, payload, created_at, attempts,
                    last_error, next_attempt_at)
OVERRIDING SYSTEM VALUE
SELECT seq, id, topic, message_key, event_type, payload, created_at, attempts, last_error,
       next_attempt_at
FROM outbox_sent WHERE sent_at IS NULL ORDER BY seq;
DELETE FROM outbox_sent WHERE sent_at IS NULL;

-- The retained table keeps one index, the prune's on `sent_at`: nothing looks a sent row up.
ALTER TABLE outbox_sent ALTER COLUMN seq DROP IDENTITY;
DROP INDEX outbox_unsent;
ALTER TABLE outbox_sent DROP CONSTRAINT outbox_seq_key;
ALTER TABLE outbox_sent DROP COLUMN next_attempt_at;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
