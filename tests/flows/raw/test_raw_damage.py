"""Raw records damaged after they landed, through real runs (``reconcile``, the plain-call path of
``memberpulse run``): event times far in the future are rejects, not facts; a segment changed after it was
ingested is named and read again without counting twice; one edited in place (its size unchanged) is not
archived, the run names it, and a full refresh reads it as it now is; a sealed segment's torn tail is a reject
and the segment is compacted."""

from __future__ import annotations

import os
import zlib
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl

from memberpulse.contracts.raw_record import archive_path, raw_archive_dir
from memberpulse.flows.reconcile import reconcile
from memberpulse.flows.reconcile._ingest import ingest
from memberpulse.flows.reconcile._store import ReconcileStore
from memberpulse.landing import mock_events as mock
from tests.support.reconcile_testkit import AS_OF, append_raw, make_settings, member, raw_record, scenario

RUN_AT = AS_OF + timedelta(hours=1)


def _sealed(*segments: Path) -> None:
    """Last written weeks ago: past any retention window, so compaction takes them."""
    old = datetime(2026, 11, 2, tzinfo=UTC).timestamp()
    for seg in segments:
        os.utime(seg, (old, old))


def test_an_event_dated_year_9999_is_a_reject_and_never_a_members_latest_activity(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    far = mock.accessed(member(1), accessed_at=AS_OF.replace(year=9999))
    append_raw(tmp_path, [*scenario(), raw_record(far, webhook_id="msg_year_9999")])

    first = reconcile(settings, as_of=RUN_AT, full_refresh=False)
    assert (first.status, first.events_ingested, first.rejects) == ("completed", 7, 1)
    with duckdb.connect(str(settings.snapshots_dir / "latest.duckdb"), read_only=True) as con:
        failures = con.execute("SELECT webhook_id, reason FROM webhook_failures").fetchall()
        last_active = con.execute("SELECT last_active FROM member_activity WHERE membership_id = 'mem_0001'").fetchone()
        future_events = con.execute("SELECT count(*) FROM events WHERE event_at > ?", [RUN_AT]).fetchone()
    assert [(w, r.split(":")[0]) for w, r in failures] == [("msg_year_9999", "event time in the future")]
    assert last_active == (AS_OF - timedelta(days=3.5),)  # its real last visit, not the year 9999
    assert future_events == (0,)


def test_a_segment_truncated_then_appended_to_is_named_read_again_and_counts_nothing_twice(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    lines = scenario()
    seg = append_raw(tmp_path, lines)
    assert reconcile(settings, as_of=RUN_AT, full_refresh=False).events_ingested == 7
    m5 = member(5)
    new = [raw_record(mock.went_valid(m5, created_at=AS_OF - timedelta(days=1))),
           raw_record(mock.accessed(m5, accessed_at=AS_OF - timedelta(hours=2)))]  # fmt: skip
    seg.write_bytes(b"".join(lines[:3] + new))  # restored from an older copy, then the landing appended

    looked = ingest(settings, ReconcileStore(settings.warehouse_dir), run_id="look", full_refresh=False, commit=False)
    (warning,) = looked.raw_warnings
    assert seg.name in warning and "from its start" in warning
    assert (looked.records_read, looked.events_ingested) == (5, 2)  # the 3 already ingested are dropped by id

    run = reconcile(settings, as_of=RUN_AT, full_refresh=False)
    assert (run.status, run.records_read, run.events_ingested) == ("completed", 5, 2)
    assert any(seg.name in w and "from its start" in w for w in run.warnings)  # the run's report says it
    with duckdb.connect(str(settings.snapshots_dir / "latest.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*), count(DISTINCT webhook_id) FROM events").fetchone() == (9, 9)
        assert con.execute("SELECT count(*) FROM member_activity WHERE membership_id = 'mem_0005'").fetchone() == (1,)
    quiet = reconcile(settings, as_of=RUN_AT, full_refresh=False)  # the offset is sound again: nothing re-read
    assert quiet.records_read == 0
    rel = seg.relative_to(settings.landing_dir).as_posix()
    assert ReconcileStore(settings.warehouse_dir).load_manifest().checksums[rel] == zlib.crc32(seg.read_bytes())
    assert ingest(settings, ReconcileStore(settings.warehouse_dir), run_id="again", full_refresh=False,
                  commit=False).raw_warnings == []  # fmt: skip


def test_a_sealed_segment_with_a_torn_tail_is_compacted_and_its_tail_recorded(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, MEMBERPULSE_RAW_RETENTION_DAYS=7)
    torn = b'{"webhook_id":"msg_torn","received_at":"2026-11-01T00:0'
    seg = append_raw(tmp_path, [*scenario(), torn], day="2026-11-01")
    data = seg.read_bytes()
    _sealed(seg)  # a writer that died mid-line weeks ago

    run = reconcile(settings, as_of=RUN_AT, full_refresh=False)
    assert (run.status, run.events_ingested, run.rejects) == ("completed", 7, 1)
    assert not seg.exists()  # compacted, torn tail and all
    archived = pl.read_parquet(archive_path(raw_archive_dir(settings.landing_dir), date(2026, 11, 1)))
    assert b"".join(archived.sort("source_offset")["line"].to_list()) == data
    with duckdb.connect(str(settings.snapshots_dir / "latest.duckdb"), read_only=True) as con:
        (reason,) = con.execute("SELECT reason FROM webhook_failures").fetchone() or ("",)
    assert reason.startswith("torn last line of a sealed segment") and seg.name in reason

    again = reconcile(settings, as_of=RUN_AT, full_refresh=True)  # from the archive: the same facts and reject
    assert (again.events_ingested, again.rejects) == (7, 1)


def test_a_segment_edited_in_place_after_ingestion_is_not_archived_and_the_run_names_it(tmp_path: Path) -> None:
    lines = scenario()
    edited = append_raw(tmp_path, lines[:3], writer="edited", day="2026-11-01")
    untouched = append_raw(tmp_path, lines[3:], writer="untouched", day="2026-11-01")
    ingested = reconcile(make_settings(tmp_path, MEMBERPULSE_RAW_RETENTION_DAYS=3650), as_of=RUN_AT, full_refresh=False)
    assert ingested.events_ingested == 7 and edited.exists() and untouched.exists()  # not old enough to archive
    data = edited.read_bytes()
    last = data.rindex(b"\n", 0, len(data) - 1) + 1  # member 1's last visit: now another member's, same size
    edited.write_bytes(data[:last] + data[last:].replace(b"mem_0001", b"mem_0009"))
    _sealed(edited, untouched)
    settings = make_settings(tmp_path, MEMBERPULSE_RAW_RETENTION_DAYS=7)

    run = reconcile(settings, as_of=RUN_AT, full_refresh=False)
    assert (run.status, run.records_read) == ("completed", 0)
    (warning,) = run.warnings
    assert edited.name in warning and "memberpulse run --full-refresh" in warning
    assert edited.exists() and not untouched.exists()  # the intact one archived as before

    refreshed = reconcile(settings, as_of=RUN_AT, full_refresh=True)  # reads it as it now is, then archives it
    assert (refreshed.status, refreshed.warnings, edited.exists()) == ("completed", [], False)
    archived = pl.read_parquet(archive_path(raw_archive_dir(settings.landing_dir), date(2026, 11, 1)))
    assert b"mem_0009" in b"".join(archived["line"].to_list())
    with duckdb.connect(str(settings.snapshots_dir / "latest.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM member_activity WHERE membership_id = 'mem_0009'").fetchone() == (1,)
    assert reconcile(settings, as_of=RUN_AT, full_refresh=False).warnings == []
