"""Which per-run history files go into a snapshot.

The reconcile store keeps one parquet of scored members per run, named by the run's time. Loading every one
costs O(members x runs) per snapshot: at 1M members and a run every 5 minutes that is 288M rows a day.
:func:`thin_history` keeps every run of the recent past and one run per older UTC day (the day's last), which
is exactly what ``status_counts_per_day`` reads, so that view's answers do not change.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from pathlib import Path

from memberpulse.contracts.times import find_file_time


def history_file_time(path: Path) -> datetime | None:
    """The run time in a ``<YYYYMMDDTHHMMSSffffffZ>.parquet`` name, or None when the name carries none."""
    return find_file_time(Path(path).name)


def thin_history(paths: Sequence[Path], *, recent: timedelta = timedelta(hours=1)) -> list[Path]:
    """Every run within ``recent`` of the newest run, plus each older UTC day's last run; oldest first.

    Files whose names carry no run time are all kept (nothing is known to thin them by).
    """
    dated = [(history_file_time(p), Path(p)) for p in paths]
    times = [when for when, _ in dated if when is not None]
    if not times:
        return [p for _, p in dated]
    cutoff = max(times) - recent
    recent_runs = [(when, p) for when, p in dated if when is not None and when >= cutoff]
    recent_days = {when.date() for when, _ in recent_runs}
    last_of_day: dict[date, tuple[datetime, Path]] = {}
    for when, path in dated:
        if when is None or when >= cutoff or when.date() in recent_days:
            continue
        if when.date() not in last_of_day or when > last_of_day[when.date()][0]:
            last_of_day[when.date()] = (when, path)
    undated = [p for when, p in dated if when is None]
    return undated + [p for _, p in sorted([*last_of_day.values(), *recent_runs], key=lambda item: item[0])]
