"""Raw history compaction: old, fully ingested landing segments move into the daily Parquet archive byte for
byte, the NDJSON goes, a full refresh from archive + live segments equals one from the NDJSON, and incremental
runs never read the archive."""

from __future__ import annotations

import os
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from memberpulse.contracts.raw_record import RAW_ARCHIVE_SCHEMA, archive_path, raw_archive_dir, segment_path
from memberpulse.flows.raw import archive as raw_archive
from memberpulse.flows.raw import reader as raw_reader
from memberpulse.flows.reconcile import reconcile_flow
from memberpulse.flows.reconcile._store import ReconcileStore
from memberpulse.landing import mock_events as mock
from memberpulse.settings import Settings
from tests.support.reconcile_testkit import (
    AS_OF,
    append_raw,
    make_settings,
    member,
    raw_record,
    scenario,
    snapshot_members,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=30)


def _segment(landing: Path, day: str, writer: str, data: bytes, *, mtime: datetime = OLD) -> Path:
    path = segment_path(landing, datetime.fromisoformat(day).date(), writer, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime.timestamp(), mtime.timestamp()))
    return path


def _lines(tag: str, n: int) -> bytes:
    return b"".join(raw_record({"type": "x", "n": i, "tag": tag}, webhook_id=f"msg_{tag}_{i}") for i in range(n))


def _ingested(landing: Path) -> tuple[dict[str, int], dict[str, int]]:
    """What a reconcile that read every segment whole commits: the offsets and the checksums of the bytes read."""
    sums = raw_reader.Checksums({}, {})
    offsets = {c.relpath: c.end for c in sums.through(raw_reader.iter_new(landing, {}))}
    return offsets, sums.at(offsets)


def test_only_old_fully_committed_segments_are_compacted_byte_exact(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    garbage = b"\x00\xff\xfe not json \x01\n\n" + b"x" * 300_000 + b"\n"
    done = _segment(landing, "2026-11-01", "a", _lines("a", 50) + garbage)
    done2 = _segment(landing, "2026-11-01", "b", _lines("b", 3))
    uncommitted = _segment(landing, "2026-11-02", "c", _lines("c", 3))
    torn = _segment(landing, "2026-11-02", "d", _lines("d", 3) + b'{"webhook_id": "half')
    recent_day = _segment(landing, "2026-11-28", "e", _lines("e", 3))
    touched = _segment(landing, "2026-11-03", "f", _lines("f", 3), mtime=NOW - timedelta(days=1))
    committed, checksums = _ingested(landing)
    committed.pop(uncommitted.relative_to(landing).as_posix())
    originals = {p: p.read_bytes() for p in (done, done2)}

    result = raw_archive.compact(landing, committed, checksums, retention_days=7, now=NOW)

    assert (result.segments, result.days, result.kept) == (2, ["2026-11-01"], [])
    assert not done.exists() and not done2.exists()
    for kept in (uncommitted, torn, recent_day, touched):
        assert kept.exists()
    archive = pl.read_parquet(archive_path(raw_archive_dir(landing), datetime(2026, 11, 1).date()))
    assert archive.schema == RAW_ARCHIVE_SCHEMA
    for path, data in originals.items():
        rows = archive.filter(pl.col("source_file") == path.relative_to(landing).as_posix()).sort("source_offset")
        assert b"".join(rows["line"].to_list()) == data
        sizes = [len(line) for line in rows["line"].to_list()]
        assert rows["source_offset"].to_list() == [sum(sizes[:i]) for i in range(len(sizes))]


def test_a_late_segment_joins_its_days_archive_and_history_reads_in_segment_order(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    for writer in ("b", "d"):
        _segment(landing, "2026-11-01", writer, _lines(writer, 4))
    late = _segment(landing, "2026-11-01", "c", _lines("c", 4))
    _segment(landing, "2026-11-29", "z", _lines("z", 2), mtime=NOW)
    reference = list(raw_reader.iter_new(landing, {}))
    committed, checksums = _ingested(landing)
    committed.pop(late.relative_to(landing).as_posix())

    raw_archive.compact(landing, committed, checksums, retention_days=7, now=NOW)
    assert late.exists()
    assert list(raw_archive.iter_history(landing)) == reference
    raw_archive.compact(landing, *_ingested(landing), retention_days=7, now=NOW)

    assert not late.exists()
    assert list(raw_archive.iter_history(landing)) == reference
    assert [p.name for p in landing.rglob("*.ndjson")] == ["z-000001.ndjson"]


def test_a_segment_both_archived_and_on_disk_is_read_once_and_then_removed(tmp_path: Path) -> None:
    """What a crash between the archive's rename and the unlink leaves behind."""
    landing = tmp_path / "landing"
    seg = _segment(landing, "2026-11-01", "a", _lines("a", 5))
    reference = list(raw_reader.iter_new(landing, {}))
    data = seg.read_bytes()
    raw_archive.compact(landing, *_ingested(landing), retention_days=7, now=NOW)
    _segment(landing, "2026-11-01", "a", data)  # as if the unlink never happened

    assert list(raw_archive.iter_history(landing)) == reference
    rel = seg.relative_to(landing).as_posix()
    result = raw_archive.compact(landing, {rel: len(data)}, {rel: zlib.crc32(data)}, retention_days=7, now=NOW)
    assert result.segments == 1 and not seg.exists()
    assert list(raw_archive.iter_history(landing)) == reference


def _outputs(settings: Settings) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    store = ReconcileStore(settings.warehouse_dir)
    manifest = store.load_manifest()
    events = store.load_events(manifest)
    assert events is not None
    rejects = pl.concat([pl.read_parquet(store.root / f) for f in manifest.reject_files])
    return (
        snapshot_members(settings),
        events.sort("webhook_id"),
        rejects.sort("source_file", "source_offset"),
    )


def _history() -> dict[tuple[str, str], list[bytes]]:
    """Four days of webhooks (one a redelivery across days), unreadable lines among them, by (writer, day)."""
    lines = scenario()
    joined = raw_record(mock.went_valid(member(5), created_at=AS_OF - timedelta(days=1)))
    return {
        ("w1", "2026-11-01"): lines[:3],
        ("w2", "2026-11-01"): [b"\x00\x01binary garbage\xff\n", *lines[3:5]],
        ("w1", "2026-11-02"): [lines[5], raw_record({"type": "membership.went_valid"})],
        ("w1", "2026-11-03"): [lines[6], lines[0], joined],
    }


def _write(data_dir: Path, history: dict[tuple[str, str], list[bytes]]) -> None:
    for (writer, day), lines in history.items():
        append_raw(data_dir, lines, writer=writer, day=day)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_full_refresh_from_archive_equals_full_refresh_from_ndjson(tmp_path: Path) -> None:
    history = _history()
    compacted = make_settings(tmp_path / "compacted", MEMBERPULSE_RAW_RETENTION_DAYS=0)
    _write(compacted.data_dir, history)
    reconcile_flow(as_of=AS_OF, settings=compacted)
    assert not list(compacted.landing_dir.rglob("*.ndjson"))
    assert len(list(raw_archive_dir(compacted.landing_dir).glob("*.parquet"))) == 3  # one per day
    live = raw_record(mock.accessed(member(5), accessed_at=AS_OF - timedelta(hours=1)))
    today = datetime.now(UTC).date().isoformat()
    append_raw(compacted.data_dir, [live], writer="live", day=today)  # a live segment too

    reference = make_settings(tmp_path / "ndjson")
    _write(reference.data_dir, history)
    append_raw(reference.data_dir, [live], writer="live", day=today)
    reconcile_flow(as_of=AS_OF, full_refresh=True, settings=reference)
    from_archive = reconcile_flow(as_of=AS_OF, full_refresh=True, settings=compacted)

    assert from_archive["records_read"] == 12 and from_archive["rejects"] == 2
    for got, expected in zip(_outputs(compacted), _outputs(reference), strict=True):
        assert_frame_equal(got, expected)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_incremental_runs_never_read_the_archive(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, MEMBERPULSE_RAW_RETENTION_DAYS=0)
    _write(settings.data_dir, _history())
    reconcile_flow(as_of=AS_OF, settings=settings)
    today = datetime.now(UTC).date().isoformat()
    for path in raw_archive_dir(settings.landing_dir).glob("*.parquet"):
        path.write_bytes(b"not parquet: reading this would fail the run")
    append_raw(settings.data_dir, [raw_record(mock.accessed(member(2), accessed_at=AS_OF))], day=today)

    report = reconcile_flow(as_of=AS_OF, settings=settings)

    assert (report["status"], report["records_read"], report["events_ingested"]) == ("completed", 1, 1)
    assert ReconcileStore(settings.warehouse_dir).load_manifest().offsets.keys() == {
        p.relative_to(settings.landing_dir).as_posix() for p in settings.landing_dir.rglob("*.ndjson")
    }


def test_compaction_copies_nothing_it_cannot_verify(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    _segment(landing, "2026-11-01", "a", _lines("a", 5))
    raw_archive.compact(landing, *_ingested(landing), retention_days=7, now=NOW)
    grown = _segment(landing, "2026-11-01", "a", _lines("a", 6))  # same name, more bytes than archived

    result = raw_archive.compact(landing, *_ingested(landing), retention_days=7, now=NOW)

    assert result.kept == ["dt=2026-11-01/a-000001.ndjson"] and grown.exists()


def test_temporary_files_a_killed_compaction_left_are_removed_by_the_next(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    _segment(landing, "2026-11-01", "a", _lines("a", 3))
    archive_dir = raw_archive_dir(landing)
    archive_dir.mkdir(parents=True)
    leftover = archive_dir / ".tmp-0123456789abcdef-dt=2026-11-01.parquet"  # atomic_target's name, half written
    leftover.write_bytes(b"PAR1 half a row group")

    result = raw_archive.compact(landing, *_ingested(landing), retention_days=7, now=NOW)

    assert result.removed_tmp == [leftover.name] and not leftover.exists()
    assert sorted(p.name for p in archive_dir.iterdir()) == ["dt=2026-11-01.parquet"]


def _edit_in_place(path: Path, at: int) -> None:
    """One byte changed, the size and the last-write time kept: what no offset check can see."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[at] = ord("7") if data[at] != ord("7") else ord("8")
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_segment_edited_in_place_after_ingestion_is_neither_archived_nor_removed(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    edited = _segment(landing, "2026-11-01", "a", _lines("a", 5))
    untouched = _segment(landing, "2026-11-01", "b", _lines("b", 5))
    untouched_bytes = untouched.read_bytes()
    committed, checksums = _ingested(landing)
    _edit_in_place(edited, at=40)
    rel = edited.relative_to(landing).as_posix()

    result = raw_archive.compact(landing, committed, checksums, retention_days=7, now=NOW)

    assert (result.changed, result.segments, result.kept) == ([rel], 1, [])
    (warning,) = result.warnings
    assert rel in warning and "memberpulse run --full-refresh" in warning and "neither archived nor removed" in warning
    assert edited.exists() and not untouched.exists()
    archive = archive_path(raw_archive_dir(landing), datetime(2026, 11, 1).date())
    rows = pl.read_parquet(archive)
    assert set(rows["source_file"]) == {untouched.relative_to(landing).as_posix()}
    assert b"".join(rows.sort("source_offset")["line"].to_list()) == untouched_bytes

    written = archive.stat()
    again = raw_archive.compact(landing, committed, checksums, retention_days=7, now=NOW)  # every run until fixed
    assert again.changed == [rel] and len(again.warnings) == 1 and edited.exists()
    assert (archive.stat().st_ino, archive.stat().st_mtime_ns) == (written.st_ino, written.st_mtime_ns)  # no rewrite


def test_a_segment_changed_while_it_is_copied_drops_the_days_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy checks the bytes it archives too: a change between the check and the copy leaves nothing."""
    landing = tmp_path / "landing"
    seg = _segment(landing, "2026-11-01", "a", _lines("a", 5))
    committed, checksums = _ingested(landing)
    _edit_in_place(seg, at=40)
    monkeypatch.setattr(raw_archive, "_as_ingested", lambda *args: True)  # as if changed just after its check

    result = raw_archive.compact(landing, committed, checksums, retention_days=7, now=NOW)

    assert result.changed == [seg.relative_to(landing).as_posix()]
    assert "while they were being archived" in result.warnings[0]
    assert seg.exists() and list(raw_archive_dir(landing).iterdir()) == []  # no archive, no temporary file


def test_a_segment_read_before_checksums_were_kept_is_archived_unchecked(tmp_path: Path) -> None:
    """A manifest of format 3 knows no checksum: its segments are trusted, as that release did."""
    landing = tmp_path / "landing"
    seg = _segment(landing, "2026-11-01", "a", _lines("a", 5))
    committed, _ = _ingested(landing)
    _edit_in_place(seg, at=40)

    result = raw_archive.compact(landing, committed, {}, retention_days=7, now=NOW)

    assert (result.segments, result.changed, result.warnings) == (1, [], [])
