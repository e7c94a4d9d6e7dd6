"""A network partition in the middle of a publish: a proxy on 127.0.0.1 forwards to the real target, then stops
forwarding after a few kilobytes and keeps both sockets open, so nothing answers and nothing hangs up. The run
must give up within the publish deadline as for an outage (exit 3, snapshot written), and the next run through
the healed network must publish everything: nothing lost, nothing doubled."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import duckdb
import psycopg
import pytest

from memberpulse.errors import PublishUnavailable
from memberpulse.flows.publish import DEFAULT_PUBLISH_CONFIG, PostgresPublisher, PublishedState
from tests.support.blackhole import BlackholeProxy
from tests.support.cli_run import Finished, memberpulse_run
from tests.support.postgres import PostgresServer
from tests.support.postgrest_standin import PostgrestStandIn, run_postgrest_standin
from tests.support.publish_data import T0, members
from tests.support.reconcile_testkit import AS_OF, append_raw, crowd

pytestmark = pytest.mark.slow  # a real PostgreSQL, memberpulse run in a subprocess

SERVICE_KEY = "test-service-role-key"
DEADLINE_SECONDS = 4
BOUND_SECONDS = 30  # the default deadline is 300 s; a hung run never returns at all
# Settings that would let a run retry for minutes: only the deadline can end it this soon.
PATIENT = {
    "MEMBERPULSE_PUBLISH_DEADLINE_SECONDS": str(DEADLINE_SECONDS),
    "MEMBERPULSE_PUBLISH_MAX_ATTEMPTS": "20",
    "MEMBERPULSE_PUBLISH_TIMEOUT_SECONDS": "2",
}


def _run(data_dir: Path, target: dict[str, str]) -> Finished:
    return memberpulse_run(data_dir, {**PATIENT, **target}, "--as-of", AS_OF.isoformat())


def _target_rows(dsn: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT membership_id, status, engagement_score, last_active FROM member_activity ORDER BY 1"
        ).fetchall()


def _snapshot_rows(data_dir: Path) -> list[tuple[object, ...]]:
    with duckdb.connect(str(data_dir / "snapshots" / "latest.duckdb"), read_only=True) as con:
        return con.execute(
            "SELECT membership_id, status, engagement_score, last_active FROM member_activity ORDER BY 1"
        ).fetchall()


def _partition_mid_publish(data_dir: Path, proxy: BlackholeProxy, target: dict[str, str], dsn: str) -> None:
    """A healthy first run; a second with changes cut off 3 kB in; a third through the healed network."""
    append_raw(data_dir, crowd(300))
    assert _run(data_dir, target).code == 0
    first = _target_rows(dsn)
    assert len(first) == 300

    append_raw(data_dir, crowd(300, start=151, active_days_ago=0.5), day="2026-11-28")  # 150 changed, 150 new
    proxy.stall_after(3000)
    cut = _run(data_dir, target)

    assert proxy.stalled.is_set()  # the partition happened mid-publish, not before it
    assert cut.code == 3, cut.stderr
    assert cut.seconds < BOUND_SECONDS, f"{cut.seconds:.1f} s"
    assert "publish failed" in cut.stderr and "deadline" in cut.stderr, cut.stderr
    assert len(_snapshot_rows(data_dir)) == 450  # the analysts got this run's rows all the same
    assert _target_rows(dsn) == first  # all or nothing

    proxy.heal()
    healed = _run(data_dir, target)
    assert healed.code == 0, healed.stderr
    assert _target_rows(dsn) == _snapshot_rows(data_dir)  # everything, once: 450 rows, each as scored
    assert len(_target_rows(dsn)) == 450


@pytest.fixture
def postgres_proxy(postgres_server: PostgresServer) -> Iterator[BlackholeProxy]:
    with BlackholeProxy((postgres_server.host, postgres_server.port)) as proxy:
        yield proxy


@pytest.mark.timeout(600)
def test_a_partition_mid_publish_to_postgres_ends_the_run_with_exit_3_and_the_next_run_publishes_all(
    tmp_path: Path, migrated_postgres_dsn: str, postgres_proxy: BlackholeProxy, postgres_server: PostgresServer
) -> None:
    through_proxy = migrated_postgres_dsn.replace(f":{postgres_server.port}/", f":{postgres_proxy.port}/")
    _partition_mid_publish(tmp_path, postgres_proxy, {"SUPABASE_DB_URL": through_proxy}, migrated_postgres_dsn)


@pytest.fixture
def standin(migrated_postgres_dsn: str, postgres_server: PostgresServer) -> Iterator[PostgrestStandIn]:
    dbname = migrated_postgres_dsn.rsplit("/", 1)[1]
    dsn = postgres_server.dsn(dbname, user="authenticator", password="authenticator")
    with run_postgrest_standin(dsn, keys={SERVICE_KEY: "service_role"}) as server:
        yield server


@pytest.mark.timeout(600)
def test_a_partition_mid_publish_to_postgrest_ends_the_run_with_exit_3_and_the_next_run_publishes_all(
    tmp_path: Path, migrated_postgres_dsn: str, standin: PostgrestStandIn
) -> None:
    port = int(standin.url.rsplit(":", 1)[1])
    with BlackholeProxy(("127.0.0.1", port)) as proxy:
        target = {"SUPABASE_URL": f"http://127.0.0.1:{proxy.port}", "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY}
        _partition_mid_publish(tmp_path, proxy, target, migrated_postgres_dsn)


def test_every_publish_connection_has_tcp_keepalives_and_a_user_timeout(
    migrated_postgres_dsn: str, tmp_path: Path
) -> None:
    """What the kernel enforces on the socket itself (a vanished peer, unacknowledged data), read back from it."""
    config = replace(DEFAULT_PUBLISH_CONFIG, timeout_seconds=6)
    publisher = PostgresPublisher(migrated_postgres_dsn, state=PublishedState(tmp_path), config=config)
    with publisher._connect("checking the socket") as conn:
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        try:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 6
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 2
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 6000
        finally:
            sock.close()


def test_an_exchange_silent_longer_than_a_statement_may_run_fails_the_attempt_well_before_the_deadline(
    migrated_postgres_dsn: str, postgres_proxy: BlackholeProxy, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """The per-wait window (statement timeout + connect timeout, here 1 + 1 s) ends each try; the 5-minute
    deadline is not needed. Then the retry through the same partition cannot even connect."""
    through_proxy = migrated_postgres_dsn.replace(f":{postgres_server.port}/", f":{postgres_proxy.port}/")
    config = replace(DEFAULT_PUBLISH_CONFIG, statement_timeout_seconds=1, timeout_seconds=1, max_attempts=2,
                     backoff_seconds=0, deadline_seconds=300)  # fmt: skip
    publisher = PostgresPublisher(through_proxy, state=PublishedState(tmp_path), config=config)
    postgres_proxy.stall_after(600)  # past the connection's start-up, into the statement
    started = time.monotonic()
    with pytest.raises(PublishUnavailable) as raised:
        publisher.publish_members(members(50), run_at=T0)
    seconds = time.monotonic() - started
    assert postgres_proxy.stalled.is_set()
    assert seconds < 15, seconds  # ≈ 2 s of silence, then a connect timeout (libpq's least: 2 s)
    assert "gave up after 2 attempts" in raised.value.message, raised.value.message
    assert publisher.state.load() is None
