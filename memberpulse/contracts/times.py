"""Time conventions every stage shares: the in-frame time type, the time format in file names, awareness."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Final

import polars as pl

from memberpulse.errors import InvalidInput

#: Every time column in every frame and table: microseconds, UTC.
UTC_US: Final = pl.Datetime("us", "UTC")

#: Times in file names (landing writers, backfill snapshots, history parquet, DuckDB snapshots): UTC, to the
#: microsecond, so names sort by time. ``YYYYMMDDTHHMMSSffffffZ``.
FILE_TIME_FORMAT: Final = "%Y%m%dT%H%M%S%fZ"
FILE_TIME_PATTERN: Final = r"\d{8}T\d{12}Z"
_FILE_TIME = re.compile(f"({FILE_TIME_PATTERN})")


#: How far a time may lie ahead of this machine's clock and still count as "now": clocks of two hosts (a
#: landing, a worker) disagree by a little. An ``--as-of`` beyond it is refused; a committed as-of beyond it is
#: a warehouse written under a clock that was ahead (or by an older version that allowed a future as-of).
CLOCK_SKEW_ALLOWANCE: Final = timedelta(minutes=5)
#: A last commit ahead of this clock by more than the allowance but at most this much was made on a host whose
#: clock ran ahead (hours, not years): ordinary runs go on as of that commit and say so. Further ahead is damage
#: (an older version's future ``--as-of``, a clock set decades off): runs stop and name the remedy.
CLOCK_BEHIND_LIMIT: Final = timedelta(days=1)


def file_time(moment: datetime) -> str:
    """``moment`` (aware) as it appears in a file name."""
    return moment.astimezone(UTC).strftime(FILE_TIME_FORMAT)


def find_file_time(name: str) -> datetime | None:
    """The first file-name time inside ``name``, or None when it carries none."""
    match = _FILE_TIME.search(name)
    return datetime.strptime(match.group(1), FILE_TIME_FORMAT).replace(tzinfo=UTC) if match else None


def require_aware(moment: datetime, name: str) -> datetime:
    """``moment`` unchanged if it carries a time zone; InvalidInput naming the parameter otherwise.

    A naive time is ambiguous (local? UTC?) and every stage compares instants, so it is refused at the door.
    """
    if moment.tzinfo is None:
        raise InvalidInput(
            f"{name} must be timezone-aware", value=moment.isoformat(), hint=f"pass e.g. datetime.now(UTC) as {name}"
        )
    return moment
