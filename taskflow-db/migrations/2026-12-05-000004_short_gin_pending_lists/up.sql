-- GIN's fast update appends new entries to a pending list, and the insert that finds the list
-- over its limit merges all of it into the index on its own time. Since creates that arrive
-- together are written in one statement (backend::create_batches), such a merge holds the whole
-- batch: at the default 4 MB it set the p99 of c=16 creates (34-99 ms against 15-36 ms at 256 kB,
-- same throughput; README "Performance", section "batches"). A catalog change, no rewrite: the
-- index's lock is held only for the update.
ALTER INDEX tasks_search SET (gin_pending_list_limit = 256);
ALTER INDEX tasks_tags SET (gin_pending_list_limit = 256);
