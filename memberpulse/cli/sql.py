"""``memberpulse sql``: one read-only statement against the latest snapshot, shown as a table or exported.

Query results are data, whatever a signed webhook put in them. The table view shows each value (and each
column name) as plain text: never read as rich markup or emoji codes, and with every character that would
drive the terminal or reorder the line written as a visible escape (:func:`display_text`). It folds long
values over several lines rather than cutting them, and grows past the terminal's width rather than squeezing
a column to nothing. csv and json are DuckDB's COPY output byte for byte, to ``--out FILE`` or standard output;
parquet only to a file. A reader that stops early (``| head``) is :class:`OutputClosed`: exit 141, quietly.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from memberpulse.cli._parser import DEFAULT_TIMEOUT_SECONDS
from memberpulse.errors import ConfigError, ExitCode, OutputClosed
from memberpulse.flows.snapshot import (
    EXPORT_FORMATS,
    TEXT_FORMATS,
    QueryLimits,
    export,
    exported,
    parse_companies,
    query,
)
from memberpulse.flows.statestore import analysts_snapshots_dir
from memberpulse.settings import Settings

# What a query may do when called without the command line's options: no file but the snapshot, the default
# timeout.
DEFAULT_QUERY_LIMITS = QueryLimits(timeout_seconds=DEFAULT_TIMEOUT_SECONDS, allow_files=False)

# The table view never narrows a column below this (or below its widest value, when that is narrower).
MIN_COLUMN_WIDTH = 10

# What the table view escapes: C0 controls (NUL included), DEL and C1 controls drive the terminal; line and
# paragraph separators break the line; bidi controls (U+202E ...) reorder what follows them on the line.
_BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_HIDDEN = "".join(chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))) + "\u2028\u2029" + _BIDI_CONTROLS
_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(char: str) -> str:
    code = ord(char)
    return _SHORT.get(char) or (f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}")


# A string value's own backslash is doubled, so ``\x00`` shown always means a NUL, never the four characters.
_STRING = str.maketrans({"\\": "\\\\", **{c: _escape(c) for c in _HIDDEN}})
_PLAN = str.maketrans({"\\": "\\\\", **{c: _escape(c) for c in _HIDDEN if c != "\n"}})  # EXPLAIN: lines stay
# Anything else is shown by str(), which already writes the strings inside lists, structs and blobs with repr().
_OTHER = str.maketrans({c: _escape(c) for c in _HIDDEN})


def display_text(value: object, *, keep_newlines: bool = False) -> str:
    """How the table view shows one value: its text, with the characters in ``_HIDDEN`` escaped Python-style
    (``\\x1b``, ``\\x00``, ``\\n``, ``\\u202e``) and a string's backslash doubled; newlines kept on request."""
    if isinstance(value, str):
        return value.translate(_PLAN if keep_newlines else _STRING)
    return str(value).translate(_OTHER)


class _DataConsole(Console):
    """Prints text as given (no markup, emoji codes or highlighting); a closed standard output raises
    :class:`OutputClosed` for :func:`memberpulse.cli.main` to end quietly, instead of rich's own ``SystemExit(1)``."""

    def __init__(self) -> None:
        super().__init__(markup=False, emoji=False, highlight=False)

    def on_broken_pipe(self) -> None:
        self.quiet = True  # drop whatever is still buffered
        raise OutputClosed("standard output was closed")


def command(args: argparse.Namespace, settings: Settings) -> int:
    limits = QueryLimits(
        timeout_seconds=args.timeout, allow_files=args.allow_files, companies=parse_companies(args.company or [])
    )
    return run_sql(analysts_snapshots_dir(settings), args.query, fmt=args.format, out=args.out, limits=limits)


def run_sql(
    snapshots_dir: Path,
    sql: str,
    *,
    fmt: str,
    out: Path | None,
    limits: QueryLimits = DEFAULT_QUERY_LIMITS,
    console: Console | None = None,
) -> int:
    """Print the rows as a table; or export them all with ``--format csv|json`` (to standard output) or
    ``--out FILE`` (any export format, from ``--format`` or the file's extension)."""
    console = console or _DataConsole()
    if out is not None:
        fmt = fmt if fmt != "table" else out.suffix.lstrip(".").lower()
        if fmt not in EXPORT_FORMATS:
            raise ConfigError(f"cannot tell the export format of {out}", hint="add --format csv|json|parquet")
        rows = export(snapshots_dir, sql, limits, fmt=fmt, out=out)
        console.print(f"{rows} rows written to {out}", markup=False, emoji=False, highlight=False)
        return ExitCode.OK
    if fmt in TEXT_FORMATS:
        _to_stdout(snapshots_dir, sql, fmt, limits)
        return ExitCode.OK
    if fmt in EXPORT_FORMATS:  # parquet: binary, of no use on a terminal; a file says what it is
        raise ConfigError(f"--format {fmt} writes a binary file, not text for standard output", hint="add --out FILE")
    if fmt != "table":
        raise ConfigError(f"unknown format {fmt!r}", hint="use table, csv, json or parquet")
    found = query(snapshots_dir, sql, limits)
    table, needed = build_table(found.columns, found.rows, keep_newlines=found.plan)
    # Wider than the terminal: print it at the width it needs (the terminal wraps the lines) rather than let
    # rich squeeze columns to nothing.
    console.width = max(console.width, needed)
    console.print(table)
    if found.truncated:
        console.print(
            f"(first {len(found.rows)} rows shown; every row, verbatim: --format csv or json, or --out FILE)",
            markup=False,
            emoji=False,
            highlight=False,
        )
    return ExitCode.OK


def _to_stdout(snapshots_dir: Path, sql: str, fmt: str, limits: QueryLimits) -> None:
    """Every row as DuckDB's COPY wrote them, copied unchanged to standard output."""
    try:
        sys.stdout.flush()  # anything printed before goes first
        with exported(snapshots_dir, sql, limits, fmt=fmt) as rows, rows.open("rb") as rows_file:
            shutil.copyfileobj(rows_file, sys.stdout.buffer)
            sys.stdout.buffer.flush()
    except BrokenPipeError:
        raise OutputClosed("standard output was closed") from None


def build_table(columns: list[str], rows: list[tuple[Any, ...]], *, keep_newlines: bool = False) -> tuple[Table, int]:
    """The table view of ``rows`` and the narrowest width that shows every column at least
    ``MIN_COLUMN_WIDTH`` wide (or whole, when narrower). Cells are :class:`Text`: never markup."""
    header = [Text(display_text(name)) for name in columns]
    body = [
        [Text("NULL", style="dim") if v is None else Text(display_text(v, keep_newlines=keep_newlines)) for v in row]
        for row in rows
    ]
    table = Table(header_style="bold")
    for name in header:
        table.add_column(name, overflow="fold")  # fold: a long value wraps onto more lines, never loses a character
    for cells in body:
        table.add_row(*cells)
    widest = [max(_width(text) for text in (name, *(cells[i] for cells in body))) for i, name in enumerate(header)]
    # Each column's content plus its padding (1 + 1), plus one border between and around the columns.
    needed = sum(min(width, MIN_COLUMN_WIDTH) + 2 for width in widest) + len(columns) + 1
    return table, needed


def _width(text: Text) -> int:
    return max(cell_len(line) for line in text.plain.split("\n"))
