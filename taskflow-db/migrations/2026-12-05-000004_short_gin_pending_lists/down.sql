ALTER INDEX tasks_search RESET (gin_pending_list_limit);
ALTER INDEX tasks_tags RESET (gin_pending_list_limit);
