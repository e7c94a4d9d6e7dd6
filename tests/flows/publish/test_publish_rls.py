"""Row level security per Whop company, on a real PostgreSQL, asked the way PostgREST asks: connected as
``authenticator``, in a transaction, ``SET LOCAL ROLE authenticated`` (or anon, or service_role), the JWT's claims
in ``request.jwt.claims`` (``set_config(…, true)``), then the query.

The database is a Supabase project upgraded to this version: Supabase's ``auth.jwt()``, the migrations before
the company policies, a dashboard view an operator made in ``public`` meanwhile (granted to the API roles, as
Supabase's default privileges do), then the rest; two companies' rows and rows of no company.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import polars as pl
import psycopg
import pytest
from psycopg import conninfo, sql

from memberpulse import transforms
from memberpulse.contracts.quarantine import encode_quarantine_entry
from memberpulse.contracts.raw_record import encode_raw_record
from memberpulse.flows.publish import PostgresPublisher, PublishedState, failures_from_rejects
from memberpulse.flows.publish._migrations import apply_migrations, list_migrations
from memberpulse.flows.raw import reader as raw_reader
from memberpulse.flows.reconcile._ingest import landing_rejections
from tests.support.postgres import PostgresServer, install_supabase_auth
from tests.support.publish_data import T0

pytestmark = pytest.mark.slow  # the real PostgreSQL server

A, B = "biz_alpha", "biz_bravo"
VIEW = "member_companies"  # the operator's dashboard view
# Every relation's rows: key -> the company it belongs to (None: no company).
ROWS: Final[dict[str, dict[str, str | None]]] = {
    "member_activity": {"mem_a1": A, "mem_a2": A, "mem_b1": B, "mem_none": None},
    "webhook_failures": {"msg_a": A, "msg_b": B, "msg_forged": None},
    "pipeline_runs": {"run_1": None, "run_2": None},
    VIEW: {A: A, B: B, "(none)": None},
}
KEYS: Final = {
    "member_activity": "SELECT membership_id FROM public.member_activity",
    "webhook_failures": "SELECT webhook_id FROM public.webhook_failures",
    "pipeline_runs": "SELECT run_id FROM public.pipeline_runs",
    VIEW: f"SELECT coalesce(company_id, '(none)') FROM public.{VIEW}",
}
# A run's row is about every company it touched: the service role's alone (see the migration).
SERVICE_ROLE_ONLY: Final = frozenset({"pipeline_runs"})


def _claims(ids: Any) -> dict[str, Any]:
    """The claims of a Supabase user whose ``app_metadata.whop_company_ids`` is ``ids``."""
    return {"sub": "user-1", "role": "authenticated", "app_metadata": {"provider": "email", "whop_company_ids": ids}}


# (id, the request's claims (None: no JWT at all), the companies they grant: an authenticated request reads their rows).
CLAIMS: Final[list[tuple[str, dict[str, Any] | None, frozenset[str]]]] = [
    ("company A", _claims([A]), frozenset({A})),
    ("company B", _claims([B]), frozenset({B})),
    ("companies A and B", _claims([A, B]), frozenset({A, B})),
    ("A among junk elements", _claims([7, None, A, "", {"id": B}, [B]]), frozenset({A})),
    ("a company with no rows", _claims(["biz_charlie"]), frozenset({"biz_charlie"})),
    ("no JWT", None, frozenset()),
    ("no claim", {"sub": "user-1", "role": "authenticated", "app_metadata": {"provider": "email"}}, frozenset()),
    ("an empty array", _claims([]), frozenset()),
    ("a string", _claims(A), frozenset()),
    ("an object", _claims({A: True}), frozenset()),
    ("a number", _claims(7), frozenset()),
    ("JSON null", _claims(None), frozenset()),
    ("app_metadata a string", {"sub": "user-1", "app_metadata": A}, frozenset()),
    # user_metadata is the user's to edit: a claim there counts for nothing.
    ("only in user_metadata", {"sub": "user-1", "user_metadata": {"whop_company_ids": [A, B]}}, frozenset()),
]
ROLES: Final = ("service_role", "authenticated", "anon")
REFUSED: Final = "refused"


@dataclass(frozen=True)
class SupabaseDatabase:
    dsn: str  # superuser
    api_dsn: str  # authenticator, as PostgREST connects
    reading_as_owner_before: list[str]  # views in public without security_invoker, before the upgrade


def _views_reading_as_owner(conn: psycopg.Connection[Any]) -> list[str]:
    """Views in public that read with their owner's rights (security_invoker off), and every materialized view
    there (it has no invoker mode: it never obeys a policy)."""
    rows = conn.execute(
        """
        SELECT c.oid::regclass::text FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace AND (c.relkind = 'm' OR (c.relkind = 'v' AND NOT coalesce(
            (SELECT o.option_value::boolean FROM pg_options_to_table(c.reloptions) o
             WHERE o.option_name = 'security_invoker'), false)))
        ORDER BY 1
        """
    ).fetchall()
    return [str(r[0]) for r in rows]


def _upgrade_with_a_dashboard_view(dsn: str, earlier: Path) -> list[str]:
    """Apply the migrations before the company policies, make the operator's view, apply the rest; return the
    views reading as their owner just before the upgrade."""
    migrations = list_migrations()
    first_new = next(i for i, m in enumerate(migrations) if m.name == "webhook_failures_company_id")
    for migration in migrations[:first_new]:
        shutil.copy(migration.path, earlier / migration.filename)
    apply_migrations(dsn, directory=earlier)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"CREATE VIEW public.{VIEW} AS SELECT company_id, count(*) AS members FROM public.member_activity"
            " GROUP BY company_id"
        )
        conn.execute(f"GRANT SELECT ON public.{VIEW} TO anon, authenticated, service_role")
        before = _views_reading_as_owner(conn)
    apply_migrations(dsn)
    return before


def _seed(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for key, company in ROWS["member_activity"].items():
            conn.execute(
                "INSERT INTO member_activity (membership_id, company_id, status, engagement_score, valid)"
                " VALUES (%s, %s, 'active', 80, true)",
                (key, company),
            )
        for key, company in ROWS["webhook_failures"].items():
            conn.execute(
                "INSERT INTO webhook_failures (webhook_id, reason, first_seen, last_seen, company_id)"
                " VALUES (%s, 'unparsable timestamp', %s, %s, %s)",
                (key, T0, T0, company),
            )
        for key in ROWS["pipeline_runs"]:
            conn.execute(
                "INSERT INTO pipeline_runs (run_id, flow, started_at, status)"
                " VALUES (%s, 'reconcile', %s, 'completed')",
                (key, T0),
            )


def _api_dsn(dsn: str) -> str:
    """The same database as PostgREST's login role, which may only switch to the API roles."""
    return conninfo.make_conninfo(dsn, user="authenticator", password="authenticator")


@pytest.fixture(scope="module")
def supabase_db(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SupabaseDatabase]:
    name = postgres_server.create_database()
    dsn = postgres_server.dsn(name)
    try:
        install_supabase_auth(dsn)
        before = _upgrade_with_a_dashboard_view(dsn, tmp_path_factory.mktemp("earlier-migrations"))
        _seed(dsn)
        yield SupabaseDatabase(dsn, _api_dsn(dsn), before)
    finally:
        postgres_server.drop_database(name)


@pytest.fixture(scope="module")
def api(supabase_db: SupabaseDatabase) -> Iterator[psycopg.Connection[Any]]:
    """One connection as ``authenticator``, as PostgREST holds them; each request is its own transaction."""
    with psycopg.connect(supabase_db.api_dsn, autocommit=True) as conn:
        yield conn


def _request(conn: psycopg.Connection[Any], role: str, claims: dict[str, Any] | None, query: str) -> list[Any]:
    """``query`` as PostgREST runs a request of ``role`` with ``claims``; rolled back, so requests never mix."""
    with conn.transaction(force_rollback=True):
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        if claims is not None:
            conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
        cur = conn.execute(query.encode())
        return cur.fetchall() if cur.description else [cur.rowcount]


def _expected(role: str, companies: frozenset[str], relation: str) -> list[str] | str:
    if role == "service_role":
        return sorted(ROWS[relation])
    if role == "anon" or relation in SERVICE_ROLE_ONLY:
        return REFUSED
    return sorted(key for key, company in ROWS[relation].items() if company in companies)


@pytest.mark.parametrize("relation", list(ROWS))
@pytest.mark.parametrize(("claims", "companies"), [pytest.param(c, v, id=i) for i, c, v in CLAIMS])
@pytest.mark.parametrize("role", ROLES)
def test_each_role_and_claim_reads_only_its_companies_rows(
    api: psycopg.Connection[Any], role: str, claims: dict[str, Any] | None, companies: frozenset[str], relation: str
) -> None:
    expected = _expected(role, companies, relation)
    if expected == REFUSED:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
            _request(api, role, claims, KEYS[relation])
        # A refusal names the relation and nothing it holds.
        assert str(refused.value).startswith("permission denied for ") and "biz_" not in str(refused.value)
    else:
        assert sorted(r[0] for r in _request(api, role, claims, KEYS[relation])) == expected


@pytest.mark.parametrize(("claims", "companies"), [pytest.param(c, v, id=i) for i, c, v in CLAIMS])
def test_the_claim_is_read_as_a_list_of_companies_and_anything_malformed_as_none(
    api: psycopg.Connection[Any], claims: dict[str, Any] | None, companies: frozenset[str]
) -> None:
    (claimed,) = _request(api, "authenticated", claims, "SELECT public.memberpulse_claimed_companies()")
    assert sorted(claimed[0]) == sorted(companies)


def test_anon_cannot_call_the_claim_function(api: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        _request(api, "anon", _claims([A]), "SELECT public.memberpulse_claimed_companies()")


WRITES: Final = {
    "member_activity": (
        f"INSERT INTO public.member_activity (membership_id, company_id, status, engagement_score, valid)"
        f" VALUES ('mem_new', '{A}', 'active', 50, true)",
        f"UPDATE public.member_activity SET engagement_score = 1 WHERE company_id = '{A}'",
        f"DELETE FROM public.member_activity WHERE company_id = '{A}'",
    ),
    "webhook_failures": (
        f"INSERT INTO public.webhook_failures (webhook_id, reason, first_seen, last_seen, company_id)"
        f" VALUES ('msg_new', 'x', now(), now(), '{A}')",
        f"UPDATE public.webhook_failures SET reason = 'y' WHERE company_id = '{A}'",
        f"DELETE FROM public.webhook_failures WHERE company_id = '{A}'",
    ),
    "pipeline_runs": (
        "INSERT INTO public.pipeline_runs (run_id, flow, started_at, status) VALUES ('run_new', 'x', now(), 'running')",
        "UPDATE public.pipeline_runs SET status = 'failed'",
        "DELETE FROM public.pipeline_runs",
    ),
}
WRITE_CASES: Final = [
    pytest.param(statement, id=f"{table}-{statement.split()[0].lower()}")
    for table, statements in WRITES.items()
    for statement in statements
]


@pytest.mark.parametrize("statement", WRITE_CASES)
@pytest.mark.parametrize("role", ["authenticated", "anon"])
def test_the_api_roles_cannot_write_even_their_own_companys_rows(
    api: psycopg.Connection[Any], role: str, statement: str
) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        _request(api, role, _claims([A, B]), statement)


@pytest.mark.parametrize("statement", WRITE_CASES)
def test_the_service_role_writes_every_row(api: psycopg.Connection[Any], statement: str) -> None:
    (changed,) = _request(api, "service_role", None, statement)
    table = next(t for t, statements in WRITES.items() if statement in statements)
    everything = len(ROWS[table]) if table == "pipeline_runs" else sum(c == A for c in ROWS[table].values())
    assert changed == (1 if statement.startswith("INSERT") else everything)


@pytest.mark.parametrize("table", ["member_activity", "webhook_failures"])
def test_the_claim_is_parsed_once_per_statement_and_the_company_index_is_used(
    supabase_db: SupabaseDatabase, table: str
) -> None:
    with psycopg.connect(supabase_db.dsn, autocommit=True) as conn:  # a superuser may count function calls
        conn.execute("SET track_functions = 'all'")
        with conn.transaction(force_rollback=True):
            conn.execute("SET LOCAL ROLE authenticated")
            conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (json.dumps(_claims([A, B])),))
            rows = conn.execute(sql.SQL("SELECT * FROM public.{}").format(sql.Identifier(table))).fetchall()
            conn.execute("SET LOCAL enable_seqscan = off")  # so the plan shows whether the index can serve it
            plan = "\n".join(r[0] for r in conn.execute(sql.SQL("EXPLAIN SELECT * FROM public.{}").format(
                sql.Identifier(table))).fetchall())  # fmt: skip
            conn.execute("RESET ROLE")
            calls = conn.execute(
                "SELECT calls FROM pg_stat_xact_user_functions WHERE funcname = 'memberpulse_claimed_companies'"
            ).fetchall()
    assert len(rows) == sum(c in (A, B) for c in ROWS[table].values()) > 1
    assert calls == [(1,)]  # one statement ran: one parse of the claim, however many rows it read
    assert "InitPlan" in plan and f"{table}_company_id_idx" in plan, plan


def test_every_view_in_public_reads_with_the_callers_rights(supabase_db: SupabaseDatabase) -> None:
    """A view without security_invoker reads as its owner, whom the policies do not bind. Every migration is
    applied here, so a view a later migration adds is checked too."""
    assert supabase_db.reading_as_owner_before == [VIEW]  # the operator's view, until the upgrade
    with psycopg.connect(supabase_db.dsn) as conn:
        views = [r[0] for r in conn.execute("SELECT viewname FROM pg_views WHERE schemaname = 'public'").fetchall()]
        assert _views_reading_as_owner(conn) == []
    assert VIEW in views


def test_without_auth_jwt_the_migrations_apply_and_no_claim_counts_until_it_exists(postgres_dsn: str) -> None:
    """A plain PostgreSQL (no auth schema): the guard makes the claim read as no company; once auth.jwt()
    exists, applying the policies' migration again (docs/deploy.md) reads it."""
    apply_migrations(postgres_dsn)
    _seed(postgres_dsn)
    query = KEYS["member_activity"]
    with psycopg.connect(_api_dsn(postgres_dsn), autocommit=True) as api:
        assert _request(api, "authenticated", _claims([A]), query) == []
        install_supabase_auth(postgres_dsn)
        policies = next(m for m in list_migrations() if m.name == "company_row_level_security")
        with psycopg.connect(postgres_dsn, autocommit=True) as owner:
            owner.execute(policies.read().encode())
        assert sorted(r[0] for r in _request(api, "authenticated", _claims([A]), query)) == ["mem_a1", "mem_a2"]


def _failures_found(tmp_path: Path) -> pl.DataFrame:
    """Three failures as a run finds them: two signed webhooks the parser refused (from the raw store), one
    naming company A in its envelope, one B in data.company.id; and a forged webhook the landing refused, whose
    body claims company A."""
    bad_time = '{"id":"%s","type":"membership.activated","timestamp":"soon",%s}'
    lines = b"".join(
        encode_raw_record(webhook_id, T0, None, "standard", None, bad_time % (webhook_id, rest))
        for webhook_id, rest in (
            ("msg_a", f'"account_id":"{A}","data":{{"id":"mem_1"}}'),
            ("msg_b", f'"data":{{"id":"mem_2","company":{{"id":"{B}"}}}}'),
        )
    )
    raw = transforms.parse_raw(transforms.parse_ndjson(lines, source_file="dt=2026-11-01/w-000001.ndjson").records)
    quarantine = tmp_path / "quarantine"
    quarantine.mkdir()
    forged = (bad_time % ("msg_forged", f'"company_id":"{A}","data":{{"id":"mem_3"}}')).encode()
    (quarantine / "w.ndjson").write_bytes(
        encode_quarantine_entry(received_at=T0, status=403, reason="signature mismatch", remote=None,
                                headers={"webhook-id": "msg_forged"}, body_bytes=len(forged), body_prefix=forged)
    )  # fmt: skip
    refused = landing_rejections(raw_reader.read_new(quarantine, {}, raw_reader.QUARANTINE_FILES))
    return pl.concat([raw.rejects, refused])


def test_published_failures_carry_their_verified_company_and_a_forged_one_none(
    migrated_postgres_dsn: str, tmp_path: Path
) -> None:
    found = _failures_found(tmp_path)
    assert found["reason"].to_list()[:2] == ["unparsable timestamp: 'soon'"] * 2
    publisher = PostgresPublisher(migrated_postgres_dsn, state=PublishedState(tmp_path / "warehouse"))
    assert publisher.record_failures(failures_from_rejects(found, seen_at=T0)) == 3
    query = "SELECT webhook_id, company_id FROM public.webhook_failures ORDER BY 1"
    with psycopg.connect(_api_dsn(migrated_postgres_dsn), autocommit=True) as api:
        everything = _request(api, "service_role", None, query)
        seen_by_a = _request(api, "authenticated", _claims([A]), query)
        seen_by_b = _request(api, "authenticated", _claims([B]), query)
    assert everything == [("msg_a", A), ("msg_b", B), ("msg_forged", None)]
    assert (seen_by_a, seen_by_b) == ([("msg_a", A)], [("msg_b", B)])  # the forged claim to A shows nowhere
