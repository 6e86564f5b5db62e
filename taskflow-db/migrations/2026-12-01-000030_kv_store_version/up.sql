-- The ETag of the key-value store (first-write concurrency, as Dapr's state API has it).
ALTER TABLE kv_store ADD COLUMN version bigint NOT NULL DEFAULT 1;
