"""Suite-wide fixtures: one real PostgreSQL server per test session, a fresh database per test.

- ``postgres_server`` (session): a running :class:`tests.support.postgres.PostgresServer` (initdb + pg_ctl
  in a temp dir, 127.0.0.1, a free port; as root the server runs as the ``postgres`` user; with no system
  binaries it uses the pgserver wheel's). Carries Supabase's roles. Stopped when the session ends.
- ``postgres_dsn``: a DSN (superuser) to a brand-new empty database, dropped after the test.
- ``migrated_postgres_dsn``: the same, with ``supabase/migrations`` already applied (copied from a template
  migrated once per session, so it costs a ``CREATE DATABASE … TEMPLATE``, ~50 ms).

The server starts only when a test asks for one of these, so suites that do not use Postgres pay nothing.

The fast loop (``pytest -m "not slow"``) stays honest: a test not marked ``slow`` fails when it asks for one
of ``SLOW_FIXTURES``, starts a subprocess, a uvicorn server, or runs a Prefect flow or task (call the step
functions, or ``flow.fn``, instead).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# No telemetry from the Prefect servers the suite starts (this machine has no route out anyway).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # make ``tests.support`` importable however pytest was started
    sys.path.insert(0, str(ROOT))

from tests.support.postgres import PostgresServer, start_server  # noqa: E402

MIGRATED_TEMPLATE = "memberpulse_migrated_template"
SLOW_FIXTURES = frozenset({"postgres_server", "postgres_dsn", "migrated_postgres_dsn", "prefect_harness"})
_MARK_IT = "mark it @pytest.mark.slow, or keep the fast loop in-process"


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("slow") is None:
        wanted = sorted(SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())))
        if wanted:
            pytest.fail(f"{item.nodeid} uses {', '.join(wanted)} but is not marked slow: {_MARK_IT}", pytrace=False)


@pytest.fixture(autouse=True)
def _fast_tests_start_nothing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In a test not marked slow: starting a process, a server or a Prefect run fails the test."""
    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    caught: list[str] = []
    test_thread = threading.current_thread()

    def refuse(what: str, original: Callable[..., object]) -> Callable[..., object]:
        def guarded(*args: object, **kwargs: object) -> object:
            if threading.current_thread() is not test_thread:  # e.g. a background thread of an earlier test
                return original(*args, **kwargs)
            caught.append(what)
            raise RuntimeError(f"{request.node.nodeid} {what} but is not marked slow: {_MARK_IT}")

        return guarded

    monkeypatch.setattr(
        subprocess.Popen, "_execute_child", refuse("starts a subprocess", subprocess.Popen._execute_child)  # type: ignore[attr-defined]
    )
    if "uvicorn" in sys.modules:
        server = sys.modules["uvicorn"].Server
        monkeypatch.setattr(server, "__init__", refuse("starts a uvicorn server", server.__init__))
    if "prefect.flows" in sys.modules:
        flow, task = sys.modules["prefect.flows"].Flow, sys.modules["prefect.tasks"].Task
        monkeypatch.setattr(flow, "__call__", refuse("runs a Prefect flow", flow.__call__))
        monkeypatch.setattr(task, "__call__", refuse("runs a Prefect task", task.__call__))
    yield
    if caught:  # also when the code under test swallowed the RuntimeError
        pytest.fail(f"{request.node.nodeid} {caught[0]} but is not marked slow: {_MARK_IT}", pytrace=False)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = start_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def _migrated_template(postgres_server: PostgresServer) -> str:
    from memberpulse.flows.publish.migrations import apply_migrations

    postgres_server.create_database(MIGRATED_TEMPLATE)
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
def prefect_harness() -> Iterator[str]:
    """Prefect's test harness (a temporary SQLite-backed API) for the whole session; yields its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield str(PREFECT_API_URL.value())
