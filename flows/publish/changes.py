"""Only changed rows: compare the scored rows with what was last published successfully.

The last published rows live in ``warehouse/published/member_activity.parquet``. It is replaced atomically
(tmp file, fsync, rename) and only *after* the target committed, so a failed or killed publish leaves it as
it was and the next run finds the same rows pending and sends them again. A row counts as changed when any
published column other than ``updated_at`` differs (nulls compare equal to nulls); changed rows get
``updated_at = run_at``, unchanged rows keep the ``updated_at`` they were published with.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import polars as pl

from memberpulse.contracts.frames import conform
from memberpulse.contracts.times import UTC_US, require_aware
from memberpulse.flows.fsio import atomic_write_parquet
from memberpulse.flows.publish._schema import (
    COMPARED_COLUMNS,
    KEY,
    MEMBER_ACTIVITY_COLUMNS,
    MEMBER_ACTIVITY_SCHEMA,
    conform_members,
)

_LAST = "__last_"
_CHANGED = "__changed"


def _run_at_literal(run_at: datetime) -> pl.Expr:
    return pl.lit(require_aware(run_at, "run_at").astimezone(UTC)).cast(UTC_US)


def _typed(frame: pl.DataFrame) -> pl.DataFrame:
    """Published columns with their types, without the checks (for rows we published ourselves)."""
    return conform(frame, MEMBER_ACTIVITY_SCHEMA)


def _mark_changes(current: pl.DataFrame, last: pl.DataFrame | None) -> pl.DataFrame:
    """``current`` (conformed) + ``__changed`` + the last published ``updated_at`` (``__last_updated_at``)."""
    if last is None or last.height == 0:
        return current.with_columns(pl.lit(True).alias(_CHANGED), pl.lit(None).cast(UTC_US).alias(f"{_LAST}updated_at"))
    previous = _typed(last).select(
        pl.col(KEY),
        pl.lit(True).alias(f"{_LAST}present"),
        *(pl.col(c).alias(f"{_LAST}{c}") for c in (*COMPARED_COLUMNS, "updated_at")),
    )
    joined = current.join(previous, on=KEY, how="left", maintain_order="left")
    is_new = pl.col(f"{_LAST}present").is_null()
    differs = pl.any_horizontal(pl.col(c).ne_missing(pl.col(f"{_LAST}{c}")) for c in COMPARED_COLUMNS)
    return joined.with_columns((is_new | differs).alias(_CHANGED)).drop(
        f"{_LAST}present", *(f"{_LAST}{c}" for c in COMPARED_COLUMNS)
    )


@dataclass(frozen=True)
class PublishPlan:
    """One comparison of ``current`` with ``last``, from which both the rows to send and the resulting
    published table are derived (so a publish compares once)."""

    marked: pl.DataFrame
    last: pl.DataFrame | None
    run_at: datetime

    @cached_property
    def changed(self) -> pl.DataFrame:
        """New or changed rows, stamped ``updated_at = run_at``: what the target must receive."""
        rows = self.marked.filter(pl.col(_CHANGED))
        return rows.with_columns(_run_at_literal(self.run_at).alias("updated_at")).select(MEMBER_ACTIVITY_COLUMNS)

    @cached_property
    def seen_before(self) -> int:
        """How many of the changed rows had been published before (the rest are new)."""
        if self.last is None:
            return 0
        return self.changed.join(self.last.select(KEY), on=KEY, how="semi").height

    @cached_property
    def published(self) -> pl.DataFrame:
        """The whole table once ``changed`` is committed: changed rows carry run_at, unchanged rows keep their
        ``updated_at``, rows published before but absent now stay (history is never deleted). By key."""
        stamp = _run_at_literal(self.run_at)
        now = self.marked.with_columns(
            pl.when(pl.col(_CHANGED)).then(stamp).otherwise(pl.col(f"{_LAST}updated_at")).alias("updated_at")
        ).select(MEMBER_ACTIVITY_COLUMNS)
        if self.last is not None and self.last.height:
            kept = _typed(self.last).join(now.select(KEY), on=KEY, how="anti")
            now = pl.concat([now, kept])
        return now.sort(KEY)


def plan_publish(current: pl.DataFrame, last: pl.DataFrame | None, *, run_at: datetime) -> PublishPlan:
    """Compare the scored rows (validated here) with the last published ones."""
    _run_at_literal(run_at)  # refuse a naive time up front
    return PublishPlan(_mark_changes(conform_members(current), last), last, run_at)


def diff_published(current: pl.DataFrame, last: pl.DataFrame | None, *, run_at: datetime) -> pl.DataFrame:
    """The rows of ``current`` that are new or changed since ``last``, stamped ``updated_at = run_at``."""
    return plan_publish(current, last, run_at=run_at).changed


def as_published(current: pl.DataFrame, last: pl.DataFrame | None, *, run_at: datetime) -> pl.DataFrame:
    """What the target holds once ``diff_published(current, last, run_at=...)`` is committed (by key)."""
    return plan_publish(current, last, run_at=run_at).published


class PublishedState:
    """The last successfully published ``member_activity`` rows, kept in the warehouse."""

    def __init__(self, warehouse_dir: Path, *, name: str = "member_activity", path: Path | None = None) -> None:
        self.path = path if path is not None else warehouse_dir / "published" / f"{name}.parquet"

    def load(self) -> pl.DataFrame | None:
        if not self.path.exists():
            return None
        return pl.read_parquet(self.path)

    def save(self, frame: pl.DataFrame) -> None:
        """Replace the state atomically; call only after the target committed these rows."""
        atomic_write_parquet(frame.select(MEMBER_ACTIVITY_COLUMNS), self.path)
