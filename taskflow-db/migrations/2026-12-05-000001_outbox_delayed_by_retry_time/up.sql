-- The relay's claim looks up, on every pass, the keys whose head waits for a retry. The lookup
-- said `sent_at IS NULL`, so the unsent index qualified for it too, and the planner took that
-- index: its statistics say it is empty (it nearly is whenever VACUUM looks), while under load it
-- holds the backlog and the entries of every row sent since. So each pass read all of them, a
-- backlog made every pass slower, and the relay fell further behind.
-- Now only a waiting row has next_attempt_at (the relay clears it when the row is sent), the
-- lookup names only that column, and this index, keyed by the retry time, answers it.
UPDATE outbox SET next_attempt_at = NULL WHERE sent_at IS NOT NULL AND next_attempt_at IS NOT NULL;
DROP INDEX outbox_delayed;
CREATE INDEX outbox_delayed ON outbox (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
