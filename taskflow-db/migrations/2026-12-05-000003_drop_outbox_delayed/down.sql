CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_delayed ON outbox (topic, message_key, seq)
    WHERE sent_at IS NULL AND next_attempt_at IS NOT NULL;
