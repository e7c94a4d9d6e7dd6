"""Text PostgreSQL cannot store, made storable on the way out.

PostgreSQL ``text`` refuses the NUL character (U+0000), and a JSON ``\\u0000`` escape is enough to put one in a
membership id, a username or a rejected body. Rather than let one such value fail every publish, each NUL is
replaced by U+FFFD (the Unicode replacement character) in every text column sent to Supabase and written to
the snapshot. (Lone surrogates such as ``\\ud800`` cannot reach here: polars strings are valid UTF-8, and the
JSON decoder turns such an escape into U+0000 or U+FFFD.)

A membership id that only differs from another after the replacement is dropped, so the key stays unique;
the unaltered id wins.
"""

from __future__ import annotations

import logging
from typing import Final

import polars as pl

log = logging.getLogger(__name__)

NUL: Final = "\x00"
REPLACEMENT: Final = "\ufffd"


def storable_text(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with every NUL in its text columns replaced by U+FFFD (unchanged, not copied, when none)."""
    text = [name for name, dtype in frame.schema.items() if dtype == pl.Utf8]
    if not text or frame.height == 0:
        return frame
    has_nul = frame.select(pl.any_horizontal(pl.col(text).str.contains(NUL, literal=True).fill_null(False)).any())
    if not has_nul.item():
        return frame
    return frame.with_columns(pl.col(text).str.replace_all(NUL, REPLACEMENT, literal=True))


def storable_members(scored: pl.DataFrame, key: str) -> pl.DataFrame:
    """:func:`storable_text` for a frame keyed by ``key``, dropping rows whose key collides after it."""
    clean = storable_text(scored)
    if clean is scored or clean[key].n_unique() == clean.height:
        return clean
    altered = (scored[key] != clean[key]).alias("__altered")
    kept = (
        clean.with_columns(altered)
        .with_row_index("__order")
        .sort("__altered", "__order")
        .unique(subset=key, keep="first", maintain_order=True)
        .sort("__order")
        .drop("__altered", "__order")
    )
    log.warning(
        "%d member(s) dropped: their membership id holds a NUL character and equals another id once it is replaced",
        clean.height - kept.height,
    )
    return kept
