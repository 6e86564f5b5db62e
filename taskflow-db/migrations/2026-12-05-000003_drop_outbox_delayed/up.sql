-- Replaced by outbox_waiting (the migration before). Concurrently, so writes go on meanwhile.
DROP INDEX CONCURRENTLY IF EXISTS outbox_delayed;
