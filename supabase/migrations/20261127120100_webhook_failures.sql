-- memberpulse: rejected or unparseable webhooks, summarised by the flows (the TypeScript webhook guide this project started from: its "Handle Webhook
-- Failures" tip). One row per (webhook_id, reason): a re-run or a redelivery moves last_seen, never adds rows.
-- That guide's columns map as: error -> reason, payload -> body_prefix (first bytes only), timestamp -> first_seen.

CREATE TABLE IF NOT EXISTS public.webhook_failures (
    webhook_id  text        NOT NULL,
    reason      text        NOT NULL,
    event_type  text,
    body_prefix text,
    first_seen  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_failures_pkey PRIMARY KEY (webhook_id, reason),
    CONSTRAINT webhook_failures_seen_order_check CHECK (first_seen <= last_seen)
);

COMMENT ON TABLE public.webhook_failures IS
    'memberpulse: webhooks that were rejected or could not be parsed; the raw bodies stay in the landing store.';

CREATE INDEX IF NOT EXISTS webhook_failures_last_seen_idx ON public.webhook_failures (last_seen DESC);
CREATE INDEX IF NOT EXISTS webhook_failures_event_type_idx ON public.webhook_failures (event_type);

ALTER TABLE public.webhook_failures ENABLE ROW LEVEL SECURITY;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON TABLE public.webhook_failures FROM anon;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        REVOKE ALL ON TABLE public.webhook_failures FROM authenticated;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE public.webhook_failures TO service_role;
        IF NOT EXISTS (
            SELECT 1 FROM pg_policies
            WHERE schemaname = 'public' AND tablename = 'webhook_failures' AND policyname = 'service_role_all'
        ) THEN
            CREATE POLICY service_role_all ON public.webhook_failures
                FOR ALL TO service_role USING (true) WITH CHECK (true);
        END IF;
    END IF;
END $$;
