-- memberpulse: one row per flow run (reconcile, backfill): what it read, what it published, how it ended.
-- A run is recorded as 'running' when it starts and updated in place (by run_id) as 'completed' or 'failed'.

CREATE TABLE IF NOT EXISTS public.pipeline_runs (
    run_id          text        PRIMARY KEY,
    flow            text        NOT NULL,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    status          text        NOT NULL,
    events_ingested bigint      NOT NULL DEFAULT 0,
    rejects         bigint      NOT NULL DEFAULT 0,
    rows_inserted   bigint      NOT NULL DEFAULT 0,
    rows_updated    bigint      NOT NULL DEFAULT 0,
    rows_unchanged  bigint      NOT NULL DEFAULT 0,
    drift_count     bigint      NOT NULL DEFAULT 0,
    error           text,
    CONSTRAINT pipeline_runs_status_check CHECK (status IN ('running', 'completed', 'failed')),
    CONSTRAINT pipeline_runs_finished_check CHECK (finished_at IS NULL OR finished_at >= started_at)
);

COMMENT ON TABLE public.pipeline_runs IS 'memberpulse: one row per flow run, with counts, status and timings.';

CREATE INDEX IF NOT EXISTS pipeline_runs_started_at_idx ON public.pipeline_runs (started_at DESC);
CREATE INDEX IF NOT EXISTS pipeline_runs_flow_started_at_idx ON public.pipeline_runs (flow, started_at DESC);
CREATE INDEX IF NOT EXISTS pipeline_runs_status_idx ON public.pipeline_runs (status);

ALTER TABLE public.pipeline_runs ENABLE ROW LEVEL SECURITY;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON TABLE public.pipeline_runs FROM anon;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON TABLE public.pipeline_runs FROM authenticated;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE public.pipeline_runs TO service_role;
        IF NOT EXISTS (
            SELECT 1 FROM pg_policies
            WHERE schemaname = 'public' AND tablename = 'pipeline_runs' AND policyname = 'service_role_all'
        ) THEN
            CREATE POLICY service_role_all ON public.pipeline_runs
                FOR ALL TO service_role USING (true) WITH CHECK (true);
        END IF;
    END IF;
END $$;
