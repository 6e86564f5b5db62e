ALTER TABLE kv_store DROP COLUMN version;
