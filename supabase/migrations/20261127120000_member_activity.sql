-- memberpulse: the published, scored member rows (columns described in memberpulse/contracts/tables.py and docs/architecture.md).
-- Written only by the flows (service_role or the database owner); never readable by anon/authenticated.
-- Safe to apply more than once: every statement is IF NOT EXISTS or guarded.

CREATE TABLE IF NOT EXISTS public.member_activity (
    membership_id     text        PRIMARY KEY,
    company_id        text,
    user_id           text,
    member_name       text,
    email             text,
    status            text        NOT NULL,
    engagement_score  integer     NOT NULL,
    -- The check query of the TypeScript webhook guide this project started from selects activity_score; keep it equal to engagement_score by construction.
    activity_score    integer     GENERATED ALWAYS AS (engagement_score) STORED,
    last_active       timestamptz,
    joined_at         timestamptz,
    total_sessions    integer     NOT NULL DEFAULT 0,
    membership_status text,
    valid             boolean     NOT NULL,
    -- Set by the flow to the run's time when the row's data changed; untouched otherwise.
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT member_activity_status_check CHECK (status IN ('active', 'at_risk', 'inactive')),
    CONSTRAINT member_activity_engagement_score_check CHECK (engagement_score BETWEEN 0 AND 100),
    CONSTRAINT member_activity_total_sessions_check CHECK (total_sessions >= 0)
);

COMMENT ON TABLE public.member_activity IS
    'memberpulse: one row per Whop membership, scored as of the last flow run. Written by the flows only.';

CREATE INDEX IF NOT EXISTS member_activity_status_idx ON public.member_activity (status);
CREATE INDEX IF NOT EXISTS member_activity_last_active_idx ON public.member_activity (last_active DESC);
CREATE INDEX IF NOT EXISTS member_activity_updated_at_idx ON public.member_activity (updated_at DESC);

-- Row level security with no policy for anon/authenticated: the API keys handed to browsers see nothing.
ALTER TABLE public.member_activity ENABLE ROW LEVEL SECURITY;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON TABLE public.member_activity FROM anon;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON TABLE public.member_activity FROM authenticated;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE public.member_activity TO service_role;
        -- Supabase's service_role has BYPASSRLS; the policy keeps it working where it does not.
        IF NOT EXISTS (
            SELECT 1 FROM pg_policies
            WHERE schemaname = 'public' AND tablename = 'member_activity' AND policyname = 'service_role_all'
        ) THEN
            CREATE POLICY service_role_all ON public.member_activity
                FOR ALL TO service_role USING (true) WITH CHECK (true);
        END IF;
    END IF;
END $$;
