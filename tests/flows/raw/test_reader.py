import os
import zlib
from datetime import UTC, datetime
from pathlib import Path

from memberpulse.flows.raw.reader import Checksums, OffsetCheck, check_offsets, iter_new, list_segments, read_new


def _segment(root: Path, day: str, name: str, data: bytes) -> Path:
    path = root / f"dt={day}" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as fh:
        fh.write(data)
    return path


def test_reads_only_whole_lines_and_resumes_from_offsets(tmp_path: Path) -> None:
    _segment(tmp_path, "2026-11-26", "a.ndjson", b'{"n":1}\n{"n":2}\n{"n":')
    _segment(tmp_path, "2026-11-27", "b.ndjson", b'{"n":9}\n')

    first = read_new(tmp_path, {})
    assert [c.relpath for c in first.chunks] == ["dt=2026-11-26/a.ndjson", "dt=2026-11-27/b.ndjson"]
    assert first.chunks[0].data == b'{"n":1}\n{"n":2}\n'  # the torn tail waits for its newline
    assert first.new_offsets == {"dt=2026-11-26/a.ndjson": 16, "dt=2026-11-27/b.ndjson": 8}

    _segment(tmp_path, "2026-11-26", "a.ndjson", b"3}\n")
    second = read_new(tmp_path, first.new_offsets)
    assert second.joined() == b'{"n":3}\n'
    assert second.new_offsets == {"dt=2026-11-26/a.ndjson": 24}

    assert read_new(tmp_path, {**first.new_offsets, **second.new_offsets}).chunks == []


def test_missing_landing_dir_is_empty(tmp_path: Path) -> None:
    assert list_segments(tmp_path / "nope") == []
    assert read_new(tmp_path / "nope", {}).nbytes == 0


def test_slices_cut_at_newlines_and_carry_long_lines_over(tmp_path: Path) -> None:
    lines = [b'{"n":%d,"pad":"%s"}\n' % (i, b"x" * (i * 7 % 40)) for i in range(50)]
    _segment(tmp_path, "2026-11-27", "a.ndjson", b"".join(lines) + b'{"torn":')

    chunks = list(iter_new(tmp_path, {}, slice_bytes=64))  # smaller than some lines
    assert all(c.data.endswith(b"\n") for c in chunks)
    assert b"".join(c.data for c in chunks) == b"".join(lines)
    assert [c.start for c in chunks[1:]] == [c.end for c in chunks[:-1]]  # contiguous, nothing skipped
    assert chunks[-1].end == len(b"".join(lines))  # the torn tail waits


def test_a_segment_truncated_then_appended_to_is_named_and_read_again_from_its_start(tmp_path: Path) -> None:
    seg = _segment(tmp_path, "2026-11-27", "a.ndjson", b'{"n":1}\n{"n":2}\n{"n":3}\n')
    offsets = read_new(tmp_path, {}).new_offsets  # all 24 bytes ingested
    seg.write_bytes(b'{"n":1}\n{"n":20}\n{"n":30}\n')  # restored from an older copy, then appended to: 26 bytes

    checked = check_offsets(tmp_path, offsets)
    assert checked.offsets == {"dt=2026-11-27/a.ndjson": 0}
    (warning,) = checked.warnings
    assert "dt=2026-11-27/a.ndjson" in warning and "offset 24 (of 26 bytes)" in warning
    assert "--full-refresh" in warning
    assert read_new(tmp_path, checked.offsets).joined() == seg.read_bytes()  # the new records are read


def test_a_segment_shorter_than_its_offset_is_named_with_both_sizes(tmp_path: Path) -> None:
    seg = _segment(tmp_path, "2026-11-27", "a.ndjson", b'{"n":1}\n{"n":2}\n')
    offsets = read_new(tmp_path, {}).new_offsets
    seg.write_bytes(b'{"n":1}\n')

    checked = check_offsets(tmp_path, offsets)
    assert checked.offsets == {"dt=2026-11-27/a.ndjson": 0}
    assert "it is 8 bytes, shorter than the 16 bytes already ingested" in checked.warnings[0]


def test_an_intact_segment_keeps_its_offset_without_a_warning(tmp_path: Path) -> None:
    _segment(tmp_path, "2026-11-27", "a.ndjson", b'{"n":1}\n')
    offsets = read_new(tmp_path, {}).new_offsets
    _segment(tmp_path, "2026-11-27", "a.ndjson", b'{"n":2}\n')  # an ordinary append
    assert check_offsets(tmp_path, {**offsets, "dt=2026-11-20/gone.ndjson": 5}) == OffsetCheck(
        {**offsets, "dt=2026-11-20/gone.ndjson": 5}, []
    )


def test_only_a_sealed_segment_gives_up_its_torn_tail(tmp_path: Path) -> None:
    seg = _segment(tmp_path, "2026-11-01", "a.ndjson", b'{"n":1}\n{"torn":')
    old = datetime(2026, 11, 2, tzinfo=UTC).timestamp()
    os.utime(seg, (old, old))

    in_flight = read_new(tmp_path, {})  # no cutoff: the tail may still be being written
    assert in_flight.joined() == b'{"n":1}\n'
    before_sealed = list(iter_new(tmp_path, {}, sealed_before=datetime(2026, 11, 1, 23, tzinfo=UTC)))
    assert b"".join(c.data for c in before_sealed) == b'{"n":1}\n'
    sealed = list(iter_new(tmp_path, {}, sealed_before=datetime(2026, 11, 9, tzinfo=UTC)))
    assert b"".join(c.data for c in sealed) == seg.read_bytes() and sealed[-1].end == seg.stat().st_size


def test_checksums_cover_exactly_the_bytes_read_across_reads(tmp_path: Path) -> None:
    seg = _segment(tmp_path, "2026-11-27", "a.ndjson", b'{"n":1}\n{"n":2}\n{"n":')
    first = Checksums({}, {})
    offsets = {c.relpath: c.end for c in first.through(iter_new(tmp_path, {}))}
    assert first.at(offsets) == {"dt=2026-11-27/a.ndjson": zlib.crc32(b'{"n":1}\n{"n":2}\n')}  # not the torn tail

    _segment(tmp_path, "2026-11-27", "a.ndjson", b'3}\n{"n":4}\n')
    second = Checksums(offsets, first.at(offsets))  # the next run starts from the committed ones
    offsets |= {c.relpath: c.end for c in second.through(iter_new(tmp_path, offsets, slice_bytes=8))}
    assert second.at(offsets) == {"dt=2026-11-27/a.ndjson": zlib.crc32(seg.read_bytes())}


def test_a_checksum_never_known_stays_unknown_until_the_segment_is_read_from_its_start(tmp_path: Path) -> None:
    _segment(tmp_path, "2026-11-27", "a.ndjson", b'{"n":1}\n')
    _segment(tmp_path, "2026-11-27", "b.ndjson", b'{"n":1}\n')
    offsets = {"dt=2026-11-27/a.ndjson": 8, "dt=2026-11-27/b.ndjson": 0}  # a read by a release keeping none
    _segment(tmp_path, "2026-11-27", "a.ndjson", b'{"n":2}\n')

    sums = Checksums(offsets, {})
    offsets |= {c.relpath: c.end for c in sums.through(iter_new(tmp_path, offsets))}
    assert sums.at(offsets) == {"dt=2026-11-27/b.ndjson": zlib.crc32(b'{"n":1}\n')}
    assert sums.at({"dt=2026-11-27/b.ndjson": 0}) == {}  # only at the offset it describes
