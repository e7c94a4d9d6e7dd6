"""The contracts between stages: one definition each, and the files that restate them (SQL migrations) agree."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest

from memberpulse.contracts import conform, file_time, find_file_time, require_aware
from memberpulse.contracts.quarantine import decode_quarantine_entry, encode_quarantine_entry
from memberpulse.contracts.raw_record import (
    SEGMENT_GLOB,
    InvalidRawRecord,
    decode_raw_record,
    encode_raw_record,
    segment_path,
)
from memberpulse.contracts.tables import PUBLISHED_TABLES, SNAPSHOT_TABLES, Table
from memberpulse.errors import InvalidInput

MIGRATIONS = Path(__file__).resolve().parents[2] / "supabase" / "migrations"
_COLUMN = re.compile(r"^\s+([a-z_]+)\s+([a-z]+)\b(.*?),?$")


def _migration_columns(table: Table) -> list[tuple[str, str, bool, bool]]:
    """(name, type, nullable, filled by the database) of ``CREATE TABLE public.<table>`` in the Supabase migrations,
    then of each later ``ALTER TABLE public.<table> ADD COLUMN``, in migration order (where Postgres puts them)."""
    sql = "\n".join(path.read_text() for path in sorted(MIGRATIONS.glob("*.sql")))
    block = re.search(rf"CREATE TABLE IF NOT EXISTS public\.{table.name} \((.*?)\n\);", sql, re.S)
    assert block, f"no migration creates {table.name}"
    added = re.findall(rf"^ALTER TABLE public\.{table.name} ADD COLUMN IF NOT EXISTS (.*?);$", sql, re.M)
    columns = []
    for line in block.group(1).splitlines() + [f"    {column}" for column in added]:
        match = _COLUMN.match(line)
        if match and match.group(1) != "constraint" and not line.strip().startswith("CONSTRAINT"):
            rest = match.group(3)
            nullable = "NOT NULL" not in rest and "PRIMARY KEY" not in rest
            columns.append((match.group(1), match.group(2), nullable, "GENERATED" in rest or "DEFAULT now()" in rest))
    return columns


@pytest.mark.parametrize("table", PUBLISHED_TABLES, ids=lambda t: t.name)
def test_migration_declares_the_table_definition(table: Table) -> None:
    declared = [(name, sql_type, nullable) for name, sql_type, nullable, _ in _migration_columns(table)]
    assert declared == [(c.name, c.sql_type, c.nullable) for c in table.columns]
    # What writers never send, the database must fill: a generated column or a default.
    filled = {name for name, _, _, by_database in _migration_columns(table) if by_database}
    assert {c.name for c in table.columns if c.filled_by_database} <= filled


def test_every_column_is_described() -> None:
    for table in SNAPSHOT_TABLES + PUBLISHED_TABLES:
        assert table.description.endswith(".")
        for column in table.columns:
            assert column.description.endswith("."), (table.name, column.name)
            assert len(column.description) > 15, (table.name, column.name)


def test_raw_record_bytes_are_the_landing_format() -> None:
    received = datetime(2026, 11, 27, 12, 0, 0, 123456, tzinfo=UTC)
    line = encode_raw_record("msg_1", received, 1796040000, "standard", "membership.went_valid", '{"a":"é"}')
    assert line == (
        b'{"webhook_id":"msg_1","received_at":"2026-11-27T12:00:00.123456Z","signed_at":1796040000,'
        b'"scheme":"standard","event_type":"membership.went_valid","body":"{\\"a\\":\\"\xc3\xa9\\"}"}\n'
    )
    assert decode_raw_record(line) == {
        "webhook_id": "msg_1", "received_at": "2026-11-27T12:00:00.123456Z", "signed_at": 1796040000,
        "scheme": "standard", "event_type": "membership.went_valid", "body": '{"a":"é"}',
    }  # fmt: skip
    # A whole second still carries its microseconds, so every record's received_at has one width.
    whole = encode_raw_record("msg_2", received.replace(microsecond=0), None, None, None, "{}")
    assert b'"received_at":"2026-11-27T12:00:00.000000Z"' in whole


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"webhook_id":"m","received_at":"t"}', "body missing"),
        (b'{"webhook_id":"m","received_at":"t","body":"{}","signed_at":true}', "signed_at is not an integer"),
        (b'{"webhook_id":"m","received_at":"t","body":"{}","scheme":1}', "scheme is not a string"),
    ],
)
def test_decode_raw_record_says_what_is_wrong(line: bytes, problem: str) -> None:
    with pytest.raises(InvalidRawRecord, match=problem):
        decode_raw_record(line)


def test_segment_paths_match_the_reader_glob(tmp_path: Path) -> None:
    path = segment_path(tmp_path, date(2026, 11, 27), "host-1-20261127T120000000000Z", 7)
    assert path.relative_to(tmp_path).as_posix() == "dt=2026-11-27/host-1-20261127T120000000000Z-000007.ndjson"
    path.parent.mkdir(parents=True)
    path.touch()
    assert list(tmp_path.glob(SEGMENT_GLOB)) == [path]


def test_quarantine_entry_round_trip_keeps_no_signature() -> None:
    line = encode_quarantine_entry(
        received_at=datetime(2026, 11, 27, 12, tzinfo=UTC), status=403, reason="signature mismatch", remote="10.0.0.1",
        headers={"webhook-id": "msg_9", "webhook-signature": "v1,secret", "cookie": "c"}, body_bytes=5000,
        body_prefix=b"x" * 5000,
    )  # fmt: skip
    assert b"secret" not in line and b"cookie" not in line and line.endswith(b"\n")
    entry = decode_quarantine_entry(line)
    assert entry is not None
    assert (entry.webhook_id, entry.status, entry.reason, entry.received_at) == (
        "msg_9", 403, "signature mismatch", "2026-11-27T12:00:00Z",
    )  # fmt: skip
    assert entry.signature_headers == ("webhook-signature",) and entry.body_prefix == "x" * 4096
    assert decode_quarantine_entry(b'{"torn') is None


def test_file_time_round_trip_and_awareness() -> None:
    moment = datetime(2026, 11, 27, 12, 30, 1, 42, tzinfo=UTC)
    assert file_time(moment) == "20261127T123001000042Z"
    assert find_file_time(f"{file_time(moment)}-abc.duckdb") == moment
    assert find_file_time("no-time-here.parquet") is None
    with pytest.raises(InvalidInput, match="as_of must be timezone-aware"):
        require_aware(moment.replace(tzinfo=None), "as_of")


def test_conform_orders_casts_and_fills() -> None:
    schema = {"a": pl.Int64(), "b": pl.String()}
    frame = conform(pl.DataFrame({"b": ["x"], "a": [1], "extra": [0]}, schema={"b": pl.String, "a": pl.Int32,
                                                                                "extra": pl.Int8}), schema)  # fmt: skip
    assert frame.schema == pl.Schema(schema) and frame.rows() == [(1, "x")]
    assert conform(pl.DataFrame({"a": [2]}), schema).rows() == [(2, None)]
    assert conform(None, schema).schema == pl.Schema(schema)
