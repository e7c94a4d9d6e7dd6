from pathlib import Path

from flows.raw_reader import list_segments, read_new


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

    _segment(tmp_path, "2026-11-26", "a.ndjson", b'3}\n')
    second = read_new(tmp_path, first.new_offsets)
    assert second.joined() == b'{"n":3}\n'
    assert second.new_offsets == {"dt=2026-11-26/a.ndjson": 24}

    assert read_new(tmp_path, {**first.new_offsets, **second.new_offsets}).chunks == []


def test_missing_landing_dir_is_empty(tmp_path: Path) -> None:
    assert list_segments(tmp_path / "nope") == []
    assert read_new(tmp_path / "nope", {}).nbytes == 0
