"""Unreadable raw lines (binary garbage, a 50 MB line) reach webhook_failures in PostgreSQL and in the snapshot,
with their segment, offset, reason and a bounded plain-text excerpt, and never fail a run."""

from __future__ import annotations

from pathlib import Path

import duckdb
import psycopg
import pytest

from memberpulse.flows.reconcile import reconcile_flow
from tests.support.reconcile_testkit import AS_OF, append_raw, make_settings, scenario

GARBAGE = b"\x00\x01\x02binary\xff\xfe garbage \x1b[31m\n"
HUGE = b'{"webhook_id": "msg_huge", "body": "' + b"A" * (50 * 1024 * 1024) + b"\n"  # 50 MB, never closed


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_unreadable_lines_are_recorded_in_postgres_and_the_snapshot(tmp_path: Path, migrated_postgres_dsn: str) -> None:
    settings = make_settings(tmp_path, SUPABASE_DB_URL=migrated_postgres_dsn)
    good = scenario()
    path = append_raw(tmp_path, [good[0], GARBAGE, good[1], HUGE, GARBAGE, *good[2:]])
    segment = path.relative_to(settings.landing_dir).as_posix()
    offsets = [len(good[0]), len(good[0]) + len(GARBAGE) + len(good[1])]
    offsets.append(offsets[1] + len(HUGE))

    report = reconcile_flow(as_of=AS_OF, settings=settings)

    assert (report["status"], report["events_ingested"], report["rejects"]) == ("completed", len(good), 3)
    with psycopg.connect(migrated_postgres_dsn) as con:
        rows = con.execute(
            "SELECT webhook_id, reason, body_prefix, first_seen, last_seen FROM webhook_failures ORDER BY reason"
        ).fetchall()
    rows.sort()
    assert {r[1].rsplit(" (", 1)[1] for r in rows} == {f"{segment} byte {o})" for o in offsets}
    for webhook_id, reason, excerpt, first_seen, last_seen in rows:
        assert reason.startswith("invalid raw record: line is not valid JSON")
        assert len(webhook_id) == 64 and first_seen == last_seen
        assert "\x00" not in excerpt and 0 < len(excerpt) <= 512
    excerpts = sorted(r[2] for r in rows)
    assert excerpts[0].startswith("\\x00\\x01\\x02binary\\xff\\xfe garbage \\x1b[31m")
    assert excerpts[-1].startswith('{"webhook_id": "msg_huge", "body": "AAAA')

    with duckdb.connect(str(settings.snapshots_dir / "latest.duckdb"), read_only=True) as snap:
        in_snapshot = snap.execute("SELECT webhook_id, reason, body_prefix FROM webhook_failures").fetchall()
    assert sorted(in_snapshot) == [r[:3] for r in rows]

    # A full refresh finds the same lines again: the same rows, last_seen moved, none added.
    reconcile_flow(as_of=AS_OF, full_refresh=True, settings=settings)
    with psycopg.connect(migrated_postgres_dsn) as con:
        again = con.execute("SELECT webhook_id, reason, first_seen FROM webhook_failures").fetchall()
    assert sorted(again) == [(r[0], r[1], r[3]) for r in rows]
    with duckdb.connect(str(settings.snapshots_dir / "latest.duckdb"), read_only=True) as snap:
        assert snap.execute("SELECT count(*) FROM webhook_failures").fetchone() == (3,)
