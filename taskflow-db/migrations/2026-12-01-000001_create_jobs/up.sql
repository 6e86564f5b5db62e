-- Background jobs (reminders at their time, webhook deliveries): inserted in the transaction whose
-- commit makes them necessary, run by `taskflow_db::jobs::JobRunner`. A job that succeeds is
-- deleted (its effect records what happened); one that gave up stays as 'failed' with its error.
CREATE TABLE jobs (
    id bigserial PRIMARY KEY,
    kind text NOT NULL,
    payload jsonb NOT NULL,
    state text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'failed')),
    -- Attempts recorded so far; an attempt whose runner died before committing is not counted.
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts integer NOT NULL CHECK (max_attempts >= 1),
    -- Not before this: the schedule, then the next retry after a backoff.
    run_at timestamptz NOT NULL DEFAULT now(),
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- The claim walks queued jobs in (run_at, id) order; failed jobs stay out of the index. `kind` is
-- included so the queued-by-kind gauge is read from the index alone.
CREATE INDEX jobs_queued ON jobs (run_at, id) INCLUDE (kind) WHERE state = 'queued';
