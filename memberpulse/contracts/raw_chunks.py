"""Raw chunks: the landing's segment and quarantine bytes as immutable objects in ``MEMBERPULSE_STORAGE_URL``.

A landing process with the storage URL set keeps writing its local files exactly as without it; a shipper in the
same process uploads what each file gained since the last ship, whole lines only, as one object per range::

    raw/landing/<writer>/<seq:012d>/dt=YYYY-MM-DD/<start:015d>.ndjson      bytes [start, start+size) of
                                                                            dt=YYYY-MM-DD/<writer>-<seq>.ndjson
    raw/quarantine/<writer>/<seq:012d>/<start:015d>.ndjson                  of the quarantine's <writer>-<seq>.ndjson
    raw/landing/<writer>/<seq:012d>/dt=YYYY-MM-DD/archived                   empty: the file was compacted into
                                                                            the archive, its chunks deleted
    raw/writers/<writer>                                                    empty: this writer has chunks

Everything a reader needs is in the key: the file the bytes belong to and where they start (the object's size
says where they end). Within one writer, keys sort by file then by offset, so "the chunks after the last key I
applied" is a listing that starts after that key. No key carries a clock reading that another host compares
with its own: the writer's name holds its start time only to be unique, and each writer is read on its own.

Chunks never change once written (create-only puts). Two shippers may ship overlapping ranges of one file (a
second process on the same disk shipping a file whose writer it thinks dead): the ranges are of the same bytes,
so a reader appends only the part past what it has.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

RAW_ROOT: Final = "raw"
WRITERS_PREFIX: Final = f"{RAW_ROOT}/writers"
#: The archive day files of compacted segments (``archive/landing/dt=YYYY-MM-DD.parquet``, as on disk).
ARCHIVE_PREFIX: Final = "archive/landing"
ChunkKind = Literal["landing", "quarantine"]
CHUNK_KINDS: Final[tuple[ChunkKind, ...]] = ("landing", "quarantine")
ARCHIVED: Final = "archived"

_FILE_NAME = re.compile(r"^(?P<writer>[\w.=-]+)-(?P<seq>\d+)\.ndjson$")


@dataclass(frozen=True)
class ChunkRef:
    """Where a chunk's bytes belong: ``relpath`` under the landing (or quarantine) directory, from ``start``."""

    kind: ChunkKind
    writer: str
    seq: int
    relpath: str
    start: int
    #: The tombstone compaction leaves: the file is in the archive, its chunks are gone; never ship it again.
    archived: bool = False


def split_file_name(name: str) -> tuple[str, int] | None:
    """``(writer, seq)`` of a segment or quarantine file name, or None for a name that is not one."""
    match = _FILE_NAME.match(name)
    return (match["writer"], int(match["seq"])) if match else None


def writer_prefix(kind: ChunkKind, writer: str) -> str:
    return f"{RAW_ROOT}/{kind}/{writer}"


def file_prefix(kind: ChunkKind, writer: str, seq: int) -> str:
    """The prefix of every chunk of one file (what compaction deletes once the file is archived)."""
    return f"{writer_prefix(kind, writer)}/{seq:012d}"


def writer_marker(writer: str) -> str:
    return f"{WRITERS_PREFIX}/{writer}"


def chunk_key(kind: ChunkKind, relpath: str, start: int) -> str:
    """The object key of the bytes of ``relpath`` from ``start``; ValueError for a file that is not a writer's."""
    *dirs, name = relpath.split("/")
    parts = split_file_name(name)
    if parts is None:
        raise ValueError(f"{relpath} is not a segment or quarantine file")
    writer, seq = parts
    middle = "".join(f"{d}/" for d in dirs)
    return f"{file_prefix(kind, writer, seq)}/{middle}{start:015d}.ndjson"


def archived_key(kind: ChunkKind, relpath: str) -> str:
    """The tombstone of a compacted file (written before its chunks are deleted)."""
    return chunk_key(kind, relpath, 0).rsplit("/", 1)[0] + f"/{ARCHIVED}"


def parse_chunk_key(key: str) -> ChunkRef | None:
    """The file and offset a chunk key names, or None for a key that is not a chunk's."""
    parts = key.split("/")
    if len(parts) < 5 or parts[0] != RAW_ROOT or parts[1] not in CHUNK_KINDS:
        return None
    kind: ChunkKind = "landing" if parts[1] == "landing" else "quarantine"
    writer, seq_text, *dirs, name = parts[2:]
    archived = name == ARCHIVED
    offset = name.removesuffix(".ndjson")
    if not seq_text.isdigit() or not (archived or (name.endswith(".ndjson") and offset.isdigit())):
        return None
    seq = int(seq_text)
    relpath = "/".join([*dirs, f"{writer}-{seq:06d}.ndjson"])
    return ChunkRef(kind, writer, seq, relpath, 0 if archived else int(offset), archived=archived)
