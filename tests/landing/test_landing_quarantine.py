"""The quarantine under a flood, on a real directory: rotation keeps it under its cap without ever dropping a new
refusal, counts per reason survive restarts and are shared by every landing process, and the first refusal of
each reason stays whatever the cap."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from memberpulse.contracts.quarantine import FIRST_OF_EACH_REASON, REASON_COUNTS, decode_quarantine_entry
from memberpulse.landing.quarantine import ALLOWANCE_BYTES, MAX_REASONS, SAMPLES_MAX_BYTES, Quarantine
from tests.support.landing_testkit import rotated_bytes

ROTATED_FILES = "*-[0-9][0-9][0-9][0-9][0-9][0-9].ndjson"  # <writer>-<seq>.ndjson


def _refuse(quarantine: Quarantine, webhook_id: str, *, reason: str = "no matching signature found") -> bool:
    return quarantine.record(
        status=403, reason=reason, headers={"webhook-id": webhook_id}, body_prefix=b"x" * 1000, body_bytes=1000,
        remote="203.0.113.9",
    )  # fmt: skip


def _entries(directory: Path, pattern: str = "*.ndjson") -> list[dict[str, Any]]:
    return [json.loads(line) for p in sorted(directory.glob(pattern)) for line in p.read_bytes().splitlines()]


def _ids(directory: Path, pattern: str = "*.ndjson") -> list[str]:
    return [entry["headers"]["webhook-id"] for entry in _entries(directory, pattern)]


def _counts(directory: Path) -> dict[str, int]:
    """``<16-digit count> <status> <reason>`` lines; a line cut short is not one."""
    lines = (directory / REASON_COUNTS).read_text().splitlines()
    return {line[17:]: int(line[:16]) for line in lines if len(line) > 17 and line[16] == " "}


def test_a_flood_past_the_cap_rotates_out_old_entries_and_never_drops_a_new_one(tmp_path: Path) -> None:
    cap = 20_000
    quarantine = Quarantine(tmp_path, max_bytes=cap, writer="w")
    for n in range(200):
        assert _refuse(quarantine, f"msg_{n}")
        assert f"msg_{n}" in _ids(tmp_path, ROTATED_FILES) or n == 0  # the newest is always there ...
        assert rotated_bytes(tmp_path) <= cap  # ... and the cap holds after every write
    quarantine.close()
    rotated = _entries(tmp_path, ROTATED_FILES)
    assert rotated_bytes(tmp_path) > cap - 2 * cap // 8  # only whole old files went: most of the cap is kept
    counts = [entry["reason_count"] for entry in rotated]
    assert counts == list(range(200 - len(counts) + 1, 201))  # the newest, in order, each with its running count
    assert _ids(tmp_path, FIRST_OF_EACH_REASON) == ["msg_0"]  # the first of its reason, never rotated
    assert _counts(tmp_path) == {"403 no matching signature found": 200}
    assert (quarantine.kept, quarantine.dropped) == (200, 0)
    assert quarantine.refusals == {"403 no matching signature found": 200}


def test_counts_and_the_first_of_each_reason_survive_a_restart_even_with_a_cap_of_zero(tmp_path: Path) -> None:
    first = Quarantine(tmp_path, max_bytes=0, writer="w1")
    assert [_refuse(first, "a1"), _refuse(first, "b1", reason="webhook-timestamp too old"), _refuse(first, "a2")] == [
        True, True, False,
    ]  # fmt: skip
    first.close()
    restarted = Quarantine(tmp_path, max_bytes=0, writer="w2")
    assert not _refuse(restarted, "a3")  # not the first of its reason, and nothing fits under a cap of 0
    assert _refuse(restarted, "c1", reason="webhook-timestamp too new")  # a new reason is always kept
    restarted.close()
    assert _ids(tmp_path) == ["a1", "b1", "c1"]
    assert [entry["reason_count"] for entry in _entries(tmp_path)] == [1, 1, 1]
    assert _counts(tmp_path) == {
        "403 no matching signature found": 3, "403 webhook-timestamp too old": 1, "403 webhook-timestamp too new": 1,
    }  # fmt: skip
    assert restarted.refusals == {"403 no matching signature found": 1, "403 webhook-timestamp too new": 1}


def test_processes_share_the_cap_and_the_counts_and_survive_each_others_rotation(tmp_path: Path) -> None:
    cap = 30_000
    processes = [Quarantine(tmp_path, max_bytes=cap, writer=f"w{n}") for n in range(3)]
    for n in range(150):  # each one's files are removed by the others' rotations as often as by its own
        assert _refuse(processes[n % 3], f"msg_{n}")
        assert rotated_bytes(tmp_path) <= cap
    for quarantine in processes:
        quarantine.close()
    ids = _ids(tmp_path)
    assert {"msg_147", "msg_148", "msg_149"} <= set(ids)  # no write went to a file another one had removed
    assert _counts(tmp_path) == {"403 no matching signature found": 150}
    counts = [entry["reason_count"] for entry in _entries(tmp_path)]
    assert len(set(counts)) == len(counts) and max(counts) == 150  # one count for the directory, none repeated


def test_reasons_past_the_limit_share_one_count_and_the_samples_stay_bounded(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path, max_bytes=0, writer="w")
    for n in range(MAX_REASONS + 10):
        _refuse(quarantine, f"r{n}", reason=f"reason {n} " + "z" * 300)  # long: cut in the counts, kept in full
    quarantine.close()
    counts = _counts(tmp_path)
    assert len(counts) == MAX_REASONS + 1 and counts["(other reasons)"] == 10
    samples = tmp_path / FIRST_OF_EACH_REASON
    assert samples.stat().st_size <= SAMPLES_MAX_BYTES
    assert len(_ids(tmp_path)) == MAX_REASONS + 1  # the first of each counted reason, and of the others together
    total = sum(p.stat().st_size for p in tmp_path.iterdir() if p.is_file())
    assert total <= ALLOWANCE_BYTES
    assert quarantine.refusals["(other reasons)"] == 10


def test_a_torn_or_removed_counts_file_is_written_on(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path, max_bytes=10_000, writer="w")
    _refuse(quarantine, "a1")
    with open(tmp_path / REASON_COUNTS, "ab") as counts:
        counts.write(b"00000000000000")  # a line cut short by a crash
    _refuse(quarantine, "b1", reason="webhook-timestamp too old")
    _refuse(quarantine, "a2")
    assert _counts(tmp_path) == {"403 no matching signature found": 2, "403 webhook-timestamp too old": 1}
    (tmp_path / REASON_COUNTS).unlink()  # removed by hand: counting starts again in a new file
    _refuse(quarantine, "a3")
    quarantine.close()
    assert _counts(tmp_path) == {"403 no matching signature found": 1}


def test_an_entry_carries_its_reasons_count_and_older_entries_read_without_one() -> None:
    line = b'{"received_at":"2026-12-01T00:00:00Z","status":403,"reason":"x","headers":{"webhook-id":"m"}}'
    old = decode_quarantine_entry(line)
    assert old is not None and old.reason_count is None and old.webhook_id == "m"
    counted = decode_quarantine_entry(line[:-1] + b',"reason_count":7}')
    assert counted is not None and counted.reason_count == 7
    assert decode_quarantine_entry(line[:-1] + b',"reason_count":"7"}').reason_count is None  # type: ignore[union-attr]


def test_files_of_an_earlier_release_count_toward_the_cap_and_go_first(tmp_path: Path) -> None:
    legacy = tmp_path / "host-1-20261101T000000000000Z.ndjson"  # one file per process, as 0.2.0 wrote them
    legacy.write_bytes(b'{"status":403,"reason":"x","headers":{"webhook-id":"old"}}\n' * 250)  # ~15 KB
    (tmp_path / ".lock").write_bytes(b"garbage")  # what an earlier release left in its lock file: nothing usable
    quarantine = Quarantine(tmp_path, max_bytes=20_000, writer="w")
    for n in range(10):
        assert _refuse(quarantine, f"msg_{n}")
        assert rotated_bytes(tmp_path) <= 20_000
    quarantine.close()
    assert not legacy.exists()  # the oldest file made room first
    assert {f"msg_{n}" for n in range(1, 10)} <= set(_ids(tmp_path, ROTATED_FILES))
