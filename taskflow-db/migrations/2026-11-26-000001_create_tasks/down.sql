DROP TABLE processed_events;
DROP TABLE idempotency_keys;
DROP TRIGGER outbox_notify ON outbox;
DROP FUNCTION outbox_notify();
DROP TABLE outbox;
DROP TABLE tasks;
