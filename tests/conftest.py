"""Suite-wide fixtures: one real PostgreSQL server per test session, a fresh database per test.

- ``postgres_server`` (session): a running :class:`tests.support.postgres.PostgresServer` (initdb + pg_ctl
  in a temp dir, 127.0.0.1, a free port; as root the server runs as the ``postgres`` user; with no system
  binaries it uses the pgserver wheel's). Carries Supabase's roles. Stopped when the session ends.
- ``postgres_dsn``: a DSN (superuser) to a brand-new empty database, dropped after the test: a plain
  PostgreSQL (the cluster's Supabase roles, but no ``auth`` schema).
- ``migrated_postgres_dsn``: the same, as a Supabase project: Supabase's ``auth.jwt()``, then
  ``supabase/migrations`` applied (copied from a template migrated once per session, so it costs a
  ``CREATE DATABASE … TEMPLATE``, ~50 ms).

The server starts only when a test asks for one of these, so suites that do not use Postgres pay nothing.

The fast loop (``pytest -m "not slow"``) stays honest: a test not marked ``slow`` fails when it starts
PostgreSQL, Prefect, a process or a server (hooks from ``tests/support/fast_loop.py``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# No telemetry from the Prefect servers the suite starts (this machine has no route out anyway).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

# The per-user default data dir (and a per-user dotenv file) of every command the suite starts, in-process or
# as a subprocess, is a directory of this session's: no test reads or writes the account's real one.
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="memberpulse-suite-xdg-")
os.environ.pop("MEMBERPULSE_ENV_FILE", None)

ROOT = Path(__file__).resolve().parents[1]  # tests/ is a package: pytest puts ROOT on sys.path itself

from hypothesis import settings as hypothesis_settings  # noqa: E402

# Property tests: the fast loop searches at random (new examples every run, failures remembered in
# .hypothesis/); the test command (scripts/test.sh, hence CI) sets HYPOTHESIS_PROFILE=ci, the same examples on
# every machine and no example database, so a fresh clone can never go red by chance.
hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
hypothesis_settings.register_profile("dev", print_blob=True)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

from tests.support.fast_loop import pytest_runtest_call, pytest_runtest_setup  # noqa: E402, F401
from tests.support.object_store import S3Server, s3_thread  # noqa: E402
from tests.support.postgres import PostgresServer, install_supabase_auth, start_server  # noqa: E402

MIGRATED_TEMPLATE = "memberpulse_migrated_template"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = start_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def _migrated_template(postgres_server: PostgresServer) -> str:
    from memberpulse.flows.publish._migrations import apply_migrations

    postgres_server.create_database(MIGRATED_TEMPLATE)
    install_supabase_auth(postgres_server.dsn(MIGRATED_TEMPLATE))  # Supabase has it before any migration
    apply_migrations(postgres_server.dsn(MIGRATED_TEMPLATE))
    postgres_server.mark_template(MIGRATED_TEMPLATE)
    return MIGRATED_TEMPLATE


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    name = postgres_server.create_database()
    try:
        yield postgres_server.dsn(name)
    finally:
        postgres_server.drop_database(name)


@pytest.fixture
def migrated_postgres_dsn(postgres_server: PostgresServer, _migrated_template: str) -> Iterator[str]:
    name = postgres_server.create_database(template=_migrated_template)
    try:
        yield postgres_server.dsn(name)
    finally:
        postgres_server.drop_database(name)


@pytest.fixture(scope="session")
def _prefect_session_harness() -> Iterator[str]:
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield str(PREFECT_API_URL.value())


@pytest.fixture
def prefect_harness(_prefect_session_harness: str) -> Iterator[str]:
    """Prefect's test harness (a temporary SQLite-backed API, one per session); yields its API URL.

    After each test Prefect's events worker is stopped (the next flow run starts it again): left running, its
    websocket client draws from the global ``random`` in a background thread (reconnects), which Hypothesis,
    in a later test, takes for a strategy using ``random`` (a HypothesisDeprecationWarning).
    """
    from prefect.events.worker import EventsWorker

    yield _prefect_session_harness
    EventsWorker.drain_all(timeout=10)


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """moto's S3 server (the named S3 stand-in), one for the session, served from a thread of this process."""
    with s3_thread() as server:
        yield server


@pytest.fixture
def storage_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A fresh bucket and the variables that point memberpulse at it, set in this process's environment."""
    env = {**s3.environment(), "MEMBERPULSE_STORAGE_URL": f"s3://{s3.new_bucket()}/memberpulse"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env
