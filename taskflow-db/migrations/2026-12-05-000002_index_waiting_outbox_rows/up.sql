-- The rows that wait for a retry, by their retry time: the relay's claim looks up, on every pass,
-- the keys whose head waits. That lookup said `sent_at IS NULL`, so the unsent index qualified for
-- it too, and the planner took that index: its statistics say it is empty (it nearly is whenever
-- VACUUM looks), while under load it holds the backlog and the entries of every row sent since.
-- So each pass read all of them, a backlog made every pass slower, and the relay fell further
-- behind. Now the lookup names only `next_attempt_at > now()`, which only this index answers.
-- Concurrently, outside a transaction: a plain CREATE INDEX would hold up every write to the
-- outbox while it reads the whole table.
CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_waiting ON outbox (next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
