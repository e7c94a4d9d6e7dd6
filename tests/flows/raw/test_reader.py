from pathlib import Path

from memberpulse.flows.raw.reader import iter_new, list_segments, read_new


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
