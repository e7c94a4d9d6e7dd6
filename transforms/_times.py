"""Time parsing shared by the parser: epoch seconds (Whop v5) or ISO 8601 (legacy envelope, Whop v1), to UTC µs.

Accepted, exactly:
- epoch seconds as a decimal number, optionally signed and with up to 6 fractional digits (``1700000000``,
  ``1700000000.25``); JSON numbers arrive here already as their decimal text;
- ISO 8601 ``YYYY-MM-DDTHH:MM:SS[.fraction]`` followed by ``Z``/``z``/``±HH:MM``/``±HHMM`` (converted to UTC),
  or with no offset at all (taken as UTC). Fractions finer than a microsecond are truncated.
Anything else is unparsable (null), and the parser turns that into a reject.
"""

from __future__ import annotations

import polars as pl

_EPOCH = r"^-?\d{1,11}(\.\d{1,6})?$"
_ISO_OFFSET = "%Y-%m-%dT%H:%M:%S%.f%#z"
_ISO_NAIVE = "%Y-%m-%dT%H:%M:%S%.f"


def epoch_us(text: pl.Expr) -> pl.Expr:
    """Microseconds since the epoch (Int64) for a time given as text; null when null or unparsable."""
    s = text.str.strip_chars()
    is_epoch = s.str.contains(_EPOCH)
    negative = s.str.starts_with("-")
    whole = s.str.extract(r"^-?(\d+)", 1).cast(pl.Int64, strict=False)
    frac = s.str.extract(r"\.(\d+)$", 1).str.pad_end(6, "0").cast(pl.Int64, strict=False).fill_null(0)
    magnitude = whole * 1_000_000 + frac
    from_epoch = pl.when(negative).then(-magnitude).otherwise(magnitude)
    iso = pl.coalesce(
        s.str.to_datetime(_ISO_OFFSET, strict=False, time_unit="us", time_zone="UTC"),
        s.str.to_datetime(_ISO_NAIVE, strict=False, time_unit="us").dt.replace_time_zone("UTC"),
    ).dt.epoch("us")
    return pl.when(is_epoch).then(from_epoch).otherwise(iso)


def to_utc(us: pl.Expr) -> pl.Expr:
    """Int64 microseconds → Datetime(us, UTC)."""
    return us.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def iso_offset_us(text: pl.Expr) -> pl.Expr:
    """The common case of :func:`epoch_us` alone: ISO 8601 with an offset (null for anything else)."""
    return text.str.to_datetime(_ISO_OFFSET, strict=False, time_unit="us", time_zone="UTC", cache=False).dt.epoch("us")


def complete_epoch_us(text: pl.Series, fast: pl.Series) -> pl.Series:
    """``fast`` (:func:`iso_offset_us` of ``text``) with the rows it left null worked out by :func:`epoch_us`."""
    todo = fast.is_null() & text.is_not_null()
    if not todo.any():
        return fast
    where = todo.arg_true()
    slow = pl.select(epoch_us(pl.lit(text.gather(where)))).to_series()
    return fast.scatter(where, slow)
