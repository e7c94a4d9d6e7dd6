"""Unit tests of the raw store on a real file system: group commit, rotation, day boundary, failures, dedupe."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from datetime import date
from pathlib import Path

import pytest

from memberpulse.errors import StorageUnavailable
from memberpulse.landing.raw_store import RawStore
from tests.support.landing_testkit import complete_lines

DAY = date(2026, 11, 27)
NEXT_DAY = date(2026, 11, 28)


def line(n: int, size: int = 100) -> bytes:
    text = f'{{"webhook_id":"msg_{n}","pad":"'
    return (text + "x" * max(0, size - len(text) - 3) + '"}\n').encode()


def store_at(root: Path, **kwargs: object) -> RawStore:
    options: dict[str, object] = {"segment_max_bytes": 1 << 20, "segment_max_age_seconds": 3600.0}
    options.update(kwargs)
    return RawStore(root, writer="testhost-1-20261127T000000Z", **options)  # type: ignore[arg-type]


def test_append_is_durable_in_the_day_partition(tmp_path: Path) -> None:
    async def run() -> None:
        store = store_at(tmp_path)
        assert await store.append("msg_1", line(1), day=DAY)
        await store.aclose()

    asyncio.run(run())
    (segment,) = tmp_path.glob("dt=2026-11-27/*.ndjson")
    assert segment.name == "testhost-1-20261127T000000Z-000001.ndjson"
    assert segment.read_bytes() == line(1)


def test_concurrent_appends_share_one_fsync_and_wait_for_it(tmp_path: Path) -> None:
    """Group commit: while the first fsync is blocked, 49 more appends pile up and go in the next one."""
    release = threading.Event()
    fsyncs: list[int] = []
    batches: list[int] = []

    def slow_fsync(fd: int) -> None:
        fsyncs.append(fd)
        release.wait(10)
        os.fsync(fd)

    async def run() -> None:
        store = store_at(tmp_path, fsync=slow_fsync, on_flush=lambda n, _s: batches.append(n))
        first = asyncio.create_task(store.append("msg_0", line(0), day=DAY))
        await asyncio.sleep(0.05)
        rest = [asyncio.create_task(store.append(f"msg_{n}", line(n), day=DAY)) for n in range(1, 50)]
        await asyncio.sleep(0.05)
        # Nothing is acknowledged before its fsync returned.
        assert not first.done() and not any(task.done() for task in rest)
        assert len(fsyncs) == 1
        release.set()
        assert all(await asyncio.gather(first, *rest))
        await store.aclose()

    asyncio.run(run())
    assert batches == [1, 49]
    assert len(fsyncs) == 2
    (segment,) = tmp_path.rglob("*.ndjson")
    assert segment.read_bytes() == b"".join(line(n) for n in range(50))


def test_rotation_by_size_keeps_closed_segments_unchanged(tmp_path: Path) -> None:
    async def run() -> list[Path]:
        store = store_at(tmp_path, segment_max_bytes=1000)
        closed: dict[Path, bytes] = {}
        for n in range(30):
            await store.append(f"msg_{n}", line(n, 300), day=DAY)
            for path in store.segments[:-1]:
                closed.setdefault(path, path.read_bytes())
        await store.aclose()
        for path, content in closed.items():
            assert path.read_bytes() == content  # closed segments never change
        return store.segments

    segments = asyncio.run(run())
    assert len(segments) == 10  # 3 lines of 300 bytes fit under 1000
    assert all(p.stat().st_size <= 1000 for p in segments)
    assert b"".join(p.read_bytes() for p in segments) == b"".join(line(n, 300) for n in range(30))


def test_one_oversized_record_gets_its_own_segment(tmp_path: Path) -> None:
    async def run() -> list[Path]:
        store = store_at(tmp_path, segment_max_bytes=200)
        await store.append("a", line(1, 100), day=DAY)
        await store.append("b", line(2, 500), day=DAY)
        await store.append("c", line(3, 100), day=DAY)
        await store.aclose()
        return store.segments

    segments = asyncio.run(run())
    assert [p.stat().st_size for p in segments] == [100, 500, 100]


def test_rotation_by_age(tmp_path: Path) -> None:
    now = [1000.0]

    async def run() -> list[Path]:
        store = store_at(tmp_path, segment_max_age_seconds=60.0, clock=lambda: now[0])
        await store.append("a", line(1), day=DAY)
        now[0] += 59
        await store.append("b", line(2), day=DAY)
        now[0] += 2
        await store.append("c", line(3), day=DAY)
        await store.aclose()
        return store.segments

    segments = asyncio.run(run())
    assert [len(complete_lines(p)) for p in segments] == [2, 1]


def test_day_boundary_rotates_even_inside_one_batch(tmp_path: Path) -> None:
    async def run() -> list[Path]:
        store = store_at(tmp_path)
        await asyncio.gather(
            store.append("a", line(1), day=DAY),
            store.append("b", line(2), day=DAY),
            store.append("c", line(3), day=NEXT_DAY),
        )
        await store.append("d", line(4), day=NEXT_DAY)
        await store.aclose()
        return store.segments

    segments = asyncio.run(run())
    assert [p.parent.name for p in segments] == ["dt=2026-11-27", "dt=2026-11-28"]
    assert segments[0].read_bytes() == line(1) + line(2)
    assert segments[1].read_bytes() == line(3) + line(4)


def test_a_recent_duplicate_is_acknowledged_but_stored_once(tmp_path: Path) -> None:
    async def run() -> list[bool]:
        store = store_at(tmp_path)
        results = list(await asyncio.gather(*(store.append("same", line(1), day=DAY) for _ in range(5))))
        results.append(await store.append("same", line(1), day=DAY))
        await store.aclose()
        return results

    results = asyncio.run(run())
    assert results.count(True) == 1 and results.count(False) == 5
    (segment,) = tmp_path.rglob("*.ndjson")
    assert segment.read_bytes() == line(1)


def test_the_recent_id_memory_is_bounded(tmp_path: Path) -> None:
    async def run() -> list[bool]:
        store = store_at(tmp_path, recent_id_bytes=2 * (1 + 160))
        results = [await store.append(i, line(n), day=DAY) for n, i in enumerate(["a", "b", "c", "a", "c"])]
        await store.aclose()
        return results

    # "a" was forgotten after "c" (bound: two one-character ids), so it is stored again; "c" is remembered.
    assert asyncio.run(run()) == [True, True, True, True, False]


def test_the_recent_id_memory_is_bounded_in_bytes_whatever_the_id_size(tmp_path: Path) -> None:
    bound = 1024 * 1024

    async def run() -> RawStore:
        store = store_at(tmp_path, recent_id_bytes=bound, segment_max_bytes=1 << 30)
        for n in range(600):  # 600 ids of 8 KiB: 4.7 MiB of ids, the bound is 1 MiB
            await store.append(f"{n:06d}" + "x" * 8192, line(n), day=DAY)
        await store.aclose()
        return store

    store = asyncio.run(run())
    assert 0.9 * bound < store.recent_id_bytes <= bound


def test_failed_writes_do_not_leave_a_new_empty_segment_each(tmp_path: Path) -> None:
    full = [False]

    def write(fd: int, data: memoryview) -> int:
        if full[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)

    async def run() -> RawStore:
        store = store_at(tmp_path, write=write)
        assert await store.append("ok-1", line(1), day=DAY)
        full[0] = True
        for n in range(20):
            with pytest.raises(StorageUnavailable, match="No space left"):
                await store.append(f"bad-{n}", line(n), day=DAY)
        full[0] = False
        assert await store.append("ok-2", line(2), day=DAY)
        await store.aclose()
        return store

    store = asyncio.run(run())
    files = sorted(p.read_bytes() for p in tmp_path.rglob("*.ndjson"))
    assert files == sorted([line(1), line(2)])  # the first segment, abandoned, and the one that worked
    assert len(store.segments) == 2


def test_failed_fsync_fails_the_batch_and_abandons_the_segment(tmp_path: Path) -> None:
    fail = [False]

    def flaky_fsync(fd: int) -> None:
        if fail[0]:
            raise OSError(errno.EIO, "Input/output error")
        os.fsync(fd)

    async def run() -> RawStore:
        store = store_at(tmp_path, fsync=flaky_fsync)
        assert await store.append("ok-1", line(1), day=DAY)
        fail[0] = True
        outcomes = await asyncio.gather(
            store.append("bad-1", line(2), day=DAY), store.append("bad-2", line(3), day=DAY), return_exceptions=True
        )
        assert all(isinstance(o, StorageUnavailable) for o in outcomes)
        assert "Input/output error" in str(outcomes[0])
        fail[0] = False
        assert await store.append("bad-1", line(2), day=DAY)  # not remembered: the retry is stored
        await store.aclose()
        return store

    store = asyncio.run(run())
    first, second = store.segments
    # The failed segment is closed for good (files only grow; its unacknowledged tail is a duplicate of the
    # retry at worst); the retry went to a fresh segment.
    assert first.read_bytes().startswith(line(1))
    assert second.read_bytes() == line(2)


def test_directory_that_cannot_be_created_is_storage_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "landing"
    blocker.write_text("not a directory")

    async def run() -> None:
        store = store_at(blocker)
        with pytest.raises(StorageUnavailable, match="durable"):
            await store.append("a", line(1), day=DAY)
        await store.aclose()

    asyncio.run(run())
    assert blocker.read_text() == "not a directory"


def test_close_finishes_pending_batches_and_refuses_new_ones(tmp_path: Path) -> None:
    async def run() -> None:
        store = store_at(tmp_path)
        tasks = [asyncio.create_task(store.append(str(n), line(n), day=DAY)) for n in range(20)]
        await asyncio.sleep(0)
        await store.aclose()
        assert all(t.done() and t.result() for t in tasks)
        with pytest.raises(StorageUnavailable, match="closed"):
            await store.append("late", line(99), day=DAY)

    asyncio.run(run())
    assert sum(len(complete_lines(p)) for p in tmp_path.rglob("*.ndjson")) == 20


def test_writer_names_are_unique_per_process_and_segment(tmp_path: Path) -> None:
    async def run() -> list[Path]:
        a = RawStore(tmp_path, segment_max_bytes=1 << 20, segment_max_age_seconds=60)
        b = RawStore(tmp_path, segment_max_bytes=1 << 20, segment_max_age_seconds=60, writer=a.writer)
        await a.append("x", line(1), day=DAY)
        await b.append("y", line(2), day=DAY)  # same writer name (impossible across processes): no clobbering
        await a.aclose()
        await b.aclose()
        return [*a.segments, *b.segments]

    paths = asyncio.run(run())
    assert len(set(paths)) == 2
    assert str(os.getpid()) in paths[0].name
    assert sorted(p.read_bytes() for p in paths) == sorted([line(1), line(2)])
