"""Landing replicas' raw files through moto's S3 server (the named S3 stand-in) into a worker's empty cache: the
shipper uploads whole lines only, what is shipped is learned from the store after a restart, and the puller
applies each byte once, at its offset, so the reader's offsets work on the cache unchanged."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from memberpulse.contracts.raw_chunks import ARCHIVE_PREFIX, archived_key, chunk_key, parse_chunk_key
from memberpulse.contracts.raw_record import segment_path
from memberpulse.flows.raw import archive as raw_archive
from memberpulse.flows.raw import reader as raw_reader
from memberpulse.flows.raw.remote import pull_raw
from memberpulse.landing.shipper import Shipper, sources_for
from memberpulse.settings import load_settings
from memberpulse.storage import ObjectStore, open_store

DAY = date(2026, 12, 4)


@pytest.fixture
def store(storage_env: dict[str, str]) -> ObjectStore:
    opened = open_store(load_settings())
    assert opened is not None
    return opened


def _shipper(store: ObjectStore, data_dir: Path, writer: str) -> Shipper:
    return Shipper(store, sources_for(data_dir / "landing", data_dir / "quarantine"), writer=writer, interval_seconds=1)


def _append(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as fh:
        fh.write(data)


def _lines(prefix: str, n: int) -> bytes:
    return b"".join(f'{{"webhook_id":"{prefix}{i}"}}\n'.encode() for i in range(n))


def test_chunk_keys_name_their_file_and_offset() -> None:
    key = chunk_key("landing", "dt=2026-12-04/host-7-20261204T000000Z-000003.ndjson", 42)
    assert key == "raw/landing/host-7-20261204T000000Z/000000000003/dt=2026-12-04/000000000000042.ndjson"
    ref = parse_chunk_key(key)
    assert ref is not None and (ref.relpath, ref.start) == ("dt=2026-12-04/host-7-20261204T000000Z-000003.ndjson", 42)
    quarantined = parse_chunk_key(chunk_key("quarantine", "host-7-x-000001.ndjson", 0))
    assert quarantined is not None and quarantined.relpath == "host-7-x-000001.ndjson"


def test_only_whole_lines_are_shipped_and_the_rest_follows(store: ObjectStore, tmp_path: Path) -> None:
    landing = tmp_path / "a" / "landing"
    segment = segment_path(landing, DAY, "a-1-w", 1)
    _append(segment, _lines("one", 3) + b'{"webhook_id":"tor')  # a line still being written
    shipper = _shipper(store, tmp_path / "a", "a-1-w")
    shipper.ship_once()
    cache = tmp_path / "worker" / "landing"
    pull_raw(store, cache)
    rel = segment.relative_to(landing).as_posix()
    assert (cache / rel).read_bytes() == _lines("one", 3)
    _append(segment, b'n"}\n' + _lines("two", 2))
    shipper.ship_once()
    second = pull_raw(store, cache)
    assert (cache / rel).read_bytes() == segment.read_bytes()
    assert (second.chunks, second.writers) == (1, 1)


def test_a_restarted_landing_ships_only_what_its_dead_predecessor_did_not(store: ObjectStore, tmp_path: Path) -> None:
    data_dir = tmp_path / "host"
    dead = segment_path(data_dir / "landing", DAY, "h-1-w", 1)
    _append(dead, _lines("a", 5))
    _shipper(store, data_dir, "h-1-w").ship_once()
    _append(dead, _lines("b", 5))  # acknowledged after the last ship, then SIGKILL
    live = segment_path(data_dir / "landing", DAY, "h-2-w", 1)
    _append(live, _lines("c", 2))
    restarted = _shipper(store, data_dir, "h-2-w")
    restarted.ship_once(everything=True)
    assert restarted.status.chunks == 2  # the dead writer's tail and its own segment, nothing twice
    cache = tmp_path / "worker" / "landing"
    pull_raw(store, cache)
    for path in (dead, live):
        assert (cache / path.relative_to(data_dir / "landing")).read_bytes() == path.read_bytes()


def test_two_replicas_into_an_empty_cache_each_line_once(store: ObjectStore, tmp_path: Path) -> None:
    expected: dict[str, bytes] = {}
    for host in ("east", "west"):
        data_dir = tmp_path / host
        shipper = _shipper(store, data_dir, f"{host}-1-w")
        for seq in (1, 2):
            segment = segment_path(data_dir / "landing", DAY, f"{host}-1-w", seq)
            for part in range(3):
                _append(segment, _lines(f"{host}{seq}.{part}.", 4))
                shipper.ship_once()
            expected[segment.relative_to(data_dir / "landing").as_posix()] = segment.read_bytes()
    cache = tmp_path / "worker" / "landing"
    first = pull_raw(store, cache)
    assert (first.chunks, first.writers) == (12, 2)
    again = pull_raw(store, cache)
    assert again.chunks == 0 and again.bytes == 0
    read = raw_reader.read_new(cache, {})
    assert {c.relpath: c.data for c in read.chunks} == expected
    ids = [line for line in read.joined().splitlines()]
    assert len(ids) == len(set(ids)) == 48


def test_overlapping_ranges_from_two_shippers_are_applied_once(store: ObjectStore, tmp_path: Path) -> None:
    """A second process on the same disk ships a file its live writer ships too: same bytes, other ranges."""
    data_dir = tmp_path / "host"
    segment = segment_path(data_dir / "landing", DAY, "h-1-w", 1)
    _append(segment, _lines("a", 3))
    owner = _shipper(store, data_dir, "h-1-w")
    owner.ship_once()
    _append(segment, _lines("b", 3))
    _shipper(store, data_dir, "h-2-w").ship_once(everything=True)  # ships the tail from its listing
    _append(segment, _lines("c", 3))
    owner.ship_once()  # ships from what it remembers: overlaps the other's range
    cache = tmp_path / "worker" / "landing"
    pull_raw(store, cache)
    assert (cache / segment.relative_to(data_dir / "landing")).read_bytes() == segment.read_bytes()


def test_quarantine_files_are_shipped_and_pulled(store: ObjectStore, tmp_path: Path) -> None:
    data_dir = tmp_path / "host"
    refused = data_dir / "quarantine" / "h-1-w-000001.ndjson"
    _append(refused, b'{"status":401}\n')
    _shipper(store, data_dir, "h-1-w").ship_once()
    worker = tmp_path / "worker"
    pull_raw(store, worker / "landing", worker / "quarantine")
    assert (worker / "quarantine" / refused.name).read_bytes() == refused.read_bytes()


def test_compaction_uploads_the_archive_then_forgets_the_chunks(store: ObjectStore, tmp_path: Path) -> None:
    """Archive uploaded, a tombstone, chunks deleted, local segment gone; a landing restarted on the disk that
    wrote the segment does not ship it again, and a worker with an empty cache gets the archive day file."""
    data_dir = tmp_path / "host"
    old_day = datetime(2026, 11, 1, tzinfo=UTC)
    segment = segment_path(data_dir / "landing", old_day.date(), "h-1-w", 1)
    _append(segment, _lines("old", 4))
    _shipper(store, data_dir, "h-1-w").ship_once()
    worker = tmp_path / "worker" / "landing"
    pull_raw(store, worker)
    cached = worker / segment.relative_to(data_dir / "landing")
    os.utime(cached, (old_day.timestamp(), old_day.timestamp()))
    sums = raw_reader.Checksums({}, {})
    committed = {c.relpath: c.end for c in sums.through(raw_reader.iter_new(worker, {}))}
    result = raw_archive.compact(
        worker, committed, sums.at(committed), retention_days=7, now=old_day + timedelta(days=30), remote=store
    )
    assert result.segments == 1 and not cached.exists()
    keys = [info.key for info in store.list("raw/landing")]
    assert keys == [archived_key("landing", cached.relative_to(worker).as_posix())]
    assert store.head(f"{ARCHIVE_PREFIX}/dt=2026-11-01.parquet") is not None
    restarted = _shipper(store, data_dir, "h-2-w")
    restarted.ship_once(everything=True)
    assert restarted.status.chunks == 0
    retained = Shipper(store, restarted.sources, writer="h-2-w", interval_seconds=1, retention_days=7)
    assert retained.drop_archived(old_day + timedelta(days=7)) == []  # not yet past the window on its disk
    kept = segment_path(data_dir / "landing", old_day.date(), "h-1-w", 2)  # never archived: no tombstone
    _append(kept, _lines("kept", 1))
    assert retained.drop_archived(old_day + timedelta(days=30)) == [
        segment.relative_to(data_dir / "landing").as_posix()
    ]
    assert kept.exists() and not segment.exists()
    fresh = tmp_path / "fresh" / "landing"
    pulled = pull_raw(store, fresh)
    assert pulled.archives == ["dt=2026-11-01.parquet"] and pulled.chunks == 0
    history = b"".join(c.data for c in raw_archive.iter_history(fresh))
    assert history == _lines("old", 4)


def test_a_live_neighbours_file_is_left_to_its_own_shipper(store: ObjectStore, tmp_path: Path) -> None:
    """Past its first pass, a shipper ships another writer's file only once it has been quiet (its writer is
    dead); a live neighbour on the same disk (another worker process) ships its own."""
    data_dir = tmp_path / "host"
    shipper = _shipper(store, data_dir, "h-1-w")
    shipper.ship_once()
    mine, neighbours = (segment_path(data_dir / "landing", DAY, w, 1) for w in ("h-1-w", "h-2-w"))
    _append(mine, _lines("mine", 2))
    _append(neighbours, _lines("theirs", 2))
    shipper.ship_once(everything=True)
    assert shipper.status.chunks == 1
    assert [parse_chunk_key(i.key) for i in store.list("raw/landing/h-2-w")] == []


def test_the_run_signal_follows_the_upload_not_the_fsync(store: ObjectStore, tmp_path: Path) -> None:
    """With a store, a worker reads only what is shipped: the landing signals a run after each upload."""
    data_dir = tmp_path / "host"
    shipper = _shipper(store, data_dir, "h-1-w")
    signalled: list[int] = []
    shipper.on_shipped = signalled.append
    shipper.ship_once()
    _append(segment_path(data_dir / "landing", DAY, "h-1-w", 1), _lines("x", 3))
    shipper.ship_once()
    shipper.ship_once()
    assert signalled == [1]
