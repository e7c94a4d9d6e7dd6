-- memberpulse: row level security per Whop company. A Whop app's webhooks carry every company that installed
-- it, so one deployment publishes many companies' rows into the same tables. A request through PostgREST whose
-- JWT lists companies in app_metadata.whop_company_ids (app_metadata: users cannot edit it, unlike
-- user_metadata) reads only those companies' rows of member_activity and webhook_failures; any other
-- authenticated request reads no row. anon keeps no grant at all (refused). pipeline_runs stays service-role
-- only: a run's row (its counts, its error) is about every company it touched, so it belongs to none of them.
-- service_role (BYPASSRLS, plus its service_role_all policies) and the tables' owner, which SUPABASE_DB_URL
-- connects as, keep full access: the publisher is unaffected.
-- Safe to apply more than once. On a Postgres without Supabase's auth.jwt() the claim reads as no company
-- (authenticated sees nothing); without Supabase's roles no grant or policy is made. Apply this file again
-- once auth.jwt() exists to read the claim.

-- The companies the request's JWT claims. Anything else — no JWT, no claim, a claim that is not an array — is
-- no company, never an error; elements that are not non-empty strings are skipped. Policies call it as
-- (SELECT public.memberpulse_claimed_companies()): an InitPlan, so the claim is parsed once per statement and
-- company_id = ANY (…) can use the company_id indexes.
DO $$
BEGIN
    IF to_regprocedure('auth.jwt()') IS NOT NULL THEN
        CREATE OR REPLACE FUNCTION public.memberpulse_claimed_companies() RETURNS text[]
            LANGUAGE sql STABLE SET search_path = ''
        AS $fn$
            WITH claim AS (SELECT auth.jwt() -> 'app_metadata' -> 'whop_company_ids' AS ids)
            SELECT coalesce(
                array_agg(element #>> '{}') FILTER (WHERE jsonb_typeof(element) = 'string' AND element #>> '{}' <> ''),
                '{}'
            )
            FROM claim, jsonb_array_elements(CASE WHEN jsonb_typeof(claim.ids) = 'array' THEN claim.ids ELSE '[]' END)
                AS element
        $fn$;
    ELSE
        RAISE WARNING 'memberpulse: auth.jwt() does not exist (not Supabase): no JWT claims any company, so the '
            'role authenticated reads no row; apply this migration again once it exists';
        CREATE OR REPLACE FUNCTION public.memberpulse_claimed_companies() RETURNS text[]
            LANGUAGE sql STABLE SET search_path = ''
        AS $fn$ SELECT '{}'::text[] $fn$;
    END IF;
END $$;

COMMENT ON FUNCTION public.memberpulse_claimed_companies() IS
    'memberpulse: the Whop companies (biz_…) listed in the request JWT''s app_metadata.whop_company_ids; empty when there are none or the claim is malformed. Read by the row level security policies.';

-- Not for PUBLIC (Supabase grants new functions in public to anon by default, and PostgREST would expose it as
-- an RPC): only the roles whose policies call it.
REVOKE ALL ON FUNCTION public.memberpulse_claimed_companies() FROM PUBLIC;

CREATE INDEX IF NOT EXISTS member_activity_company_id_idx ON public.member_activity (company_id);
CREATE INDEX IF NOT EXISTS webhook_failures_company_id_idx ON public.webhook_failures (company_id);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON FUNCTION public.memberpulse_claimed_companies() FROM anon;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT EXECUTE ON FUNCTION public.memberpulse_claimed_companies() TO service_role;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        -- Reading only: every write by authenticated stays refused (no INSERT, UPDATE or DELETE grant).
        GRANT SELECT ON TABLE public.member_activity, public.webhook_failures TO authenticated;
        GRANT EXECUTE ON FUNCTION public.memberpulse_claimed_companies() TO authenticated;
        -- Dropped and made again, so applying this file again also brings an older definition up to date.
        -- A row with a NULL company_id matches no claim: the service role alone sees it.
        DROP POLICY IF EXISTS claimed_companies_read ON public.member_activity;
        CREATE POLICY claimed_companies_read ON public.member_activity FOR SELECT TO authenticated
            USING (company_id = ANY ((SELECT public.memberpulse_claimed_companies())::text[]));
        DROP POLICY IF EXISTS claimed_companies_read ON public.webhook_failures;
        CREATE POLICY claimed_companies_read ON public.webhook_failures FOR SELECT TO authenticated
            USING (company_id = ANY ((SELECT public.memberpulse_claimed_companies())::text[]));
    END IF;
END $$;

-- A view reads its tables with its owner's rights unless security_invoker is on, and the owner of these tables
-- is exempt from their policies: such a view would show every company's rows to whoever may read it (Supabase
-- grants new views in public to anon and authenticated). Every view already in public is switched to the
-- querying role's rights; create later ones WITH (security_invoker = on). An extension's views are left alone,
-- and a view this role cannot alter is named in a warning.
DO $$
DECLARE
    found record;
BEGIN
    IF current_setting('server_version_num')::int < 150000 THEN
        RAISE WARNING 'memberpulse: PostgreSQL before 15 has no security_invoker views: a view in public over '
            'member_activity or webhook_failures shows every company''s rows';
        RETURN;
    END IF;
    FOR found IN
        SELECT c.oid::regclass AS view_name, pg_has_role(c.relowner, 'USAGE') AS may_alter
        FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'v'
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                                                       AND d.deptype = 'e')
          AND NOT coalesce((SELECT o.option_value::boolean FROM pg_options_to_table(c.reloptions) o
                            WHERE o.option_name = 'security_invoker'), false)
    LOOP
        IF found.may_alter THEN
            EXECUTE format('ALTER VIEW %s SET (security_invoker = on)', found.view_name);
            RAISE NOTICE 'memberpulse: view % now reads with the querying role''s rights (security_invoker)', found.view_name;
        ELSE
            RAISE WARNING 'memberpulse: view % reads with its owner''s rights and this role cannot change it: '
                'ALTER VIEW % SET (security_invoker = on) as its owner', found.view_name, found.view_name;
        END IF;
    END LOOP;
END $$;
