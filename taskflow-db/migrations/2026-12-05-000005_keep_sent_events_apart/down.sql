DROP TRIGGER outbox_notify ON outbox;
ALTER TABLE outbox_sent ADD COLUMN next_attempt_at timestamptz;
INSERT INTO outbox_sent (id, seq, topic, message_key, event_type, payload, created_at, attempts,
                         last_error, next_attempt_at)
SELECT id, seq, topic, message_key, event_type, payload, created_at, attempts, last_error,
       next_attempt_at
FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_sent RENAME TO outbox;
ALTER TABLE outbox ALTER COLUMN seq ADD GENERATED ALWAYS AS IDENTITY;
SELECT setval(pg_get_serial_sequence('outbox', 'seq'), coalesce(max(seq), 0) + 1, false) FROM outbox;
ALTER TABLE outbox ADD PRIMARY KEY (id), ADD UNIQUE (seq);
CREATE INDEX outbox_unsent ON outbox (seq) WHERE sent_at IS NULL;
CREATE INDEX outbox_waiting ON outbox (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
