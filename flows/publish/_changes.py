"""Only changed rows: compare the scored rows with what was last published successfully.

The last published rows live in ``warehouse/published/member_activity.parquet``. It is replaced atomically
(tmp file, fsync, rename) and only *after* the target committed, so a failed or killed publish leaves it as
it was and the next run finds the same rows pending and sends them again. A row counts as changed when any
published column other than ``updated_at`` differs (nulls compare equal to nulls); changed rows get
``updated_at = run_at``, unchanged rows keep the ``updated_at`` they were published with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import polars as pl

from memberpulse.contracts.frames import conform
from memberpulse.contracts.times import UTC_US, require_aware
from memberpulse.flows.publish._schema import (
    COMPARED_COLUMNS,
    KEY,
    MEMBER_ACTIVITY_COLUMNS,
    MEMBER_ACTIVITY_SCHEMA,
    conform_members,
)
from memberpulse.flows.state_codec import PUBLISHED_ROWS, read_table_if_present, write_table

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
class ChangeHints:
    """What the reconcile flow knows about which scored rows can differ from an earlier publish, so that
    only those are compared (at 1M members, comparing all costs seconds; these are usually a few thousand).

    ``token_before``/``token_after`` name the member state before and after this run's facts; ``touched``
    the members those facts touched (None: possibly anyone); ``moved(t)`` the members whose row as of
    ``as_of`` can differ from their row as of ``t`` with the same facts (scores decay in integer steps and
    statuses cross thresholds, so this is computed, not compared). ``exact``: the rows were scored from the
    committed state itself (not from a rebuild for a backdated as-of).
    """

    as_of: datetime
    scoring: tuple[float, float, float]
    token_before: str | None
    token_after: str | None
    touched: pl.Series | None
    moved: Callable[[datetime], pl.Series]
    exact: bool = True

    def candidates(self, *, as_of: str | None, token: str | None, scoring: list[float] | None) -> pl.Series | None:
        """Ids that can differ from rows published from state ``token`` as of ``as_of`` with ``scoring``;
        None when that is not known (then every row is compared)."""
        if not self.exact or as_of is None or token is None or scoring != list(self.scoring):
            return None
        last_as_of = datetime.fromisoformat(as_of)
        if last_as_of > self.as_of:
            return None
        if token == self.token_after:
            touched = pl.Series(KEY, [], pl.Utf8)
        elif token == self.token_before and self.touched is not None:
            touched = self.touched.cast(pl.Utf8).rename(KEY)
        else:
            return None
        return pl.concat([touched, self.moved(last_as_of).cast(pl.Utf8).rename(KEY)]).unique()

    @property
    def rebuilt(self) -> bool:
        """The member state was built from nothing by this run (``--full-refresh``, or the first run): the target
        is then rewritten whole too, whatever the check before the publish finds."""
        return self.token_before is None

    def published_from(self) -> dict[str, object]:
        """What to remember about rows published from these hints (the arguments of ``candidates``)."""
        return {
            "as_of": self.as_of.astimezone(UTC).isoformat(),
            "token": self.token_after if self.exact else None,
            "scoring": list(self.scoring),
        }


@dataclass(frozen=True)
class PublishPlan:
    """One comparison of ``current`` with ``last``, from which both the rows to send and the resulting
    published table are derived (so a publish compares once). ``partial``: only candidate rows were compared
    (``marked`` holds those; every other current row equals its published row)."""

    marked: pl.DataFrame
    last: pl.DataFrame | None
    run_at: datetime
    total: int = 0
    partial: bool = False

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
        if self.partial:
            return self._published_partially()
        stamp = _run_at_literal(self.run_at)
        now = self.marked.with_columns(
            pl.when(pl.col(_CHANGED)).then(stamp).otherwise(pl.col(f"{_LAST}updated_at")).alias("updated_at")
        ).select(MEMBER_ACTIVITY_COLUMNS)
        if self.last is not None and self.last.height:
            kept = _typed(self.last).join(now.select(KEY), on=KEY, how="anti")
            now = pl.concat([now, kept])
        return now.sort(KEY)

    def _published_partially(self) -> pl.DataFrame:
        """``last`` with the changed rows put in, in key order (``last`` is kept sorted by key)."""
        assert self.last is not None
        last = _typed(self.last)
        if not last.get_column(KEY).is_sorted():
            last = last.sort(KEY)
        changed = self.changed
        if changed.height == 0:
            return last
        rest = last.join(changed.select(KEY), on=KEY, how="anti", maintain_order="left")
        return rest.merge_sorted(changed.sort(KEY), key=KEY)

    @cached_property
    def changed_keys(self) -> pl.Series:
        return self.changed.get_column(KEY)


def plan_publish(
    current: pl.DataFrame, last: pl.DataFrame | None, *, run_at: datetime, candidates: pl.Series | None = None
) -> PublishPlan:
    """Compare the scored rows (validated here) with the last published ones.

    ``candidates`` (ids, from ``ChangeHints.candidates``) limits the comparison to those rows; the caller
    vouches that every other row equals its published row. The plan is the same as comparing all.
    """
    _run_at_literal(run_at)  # refuse a naive time up front
    if candidates is None or last is None or last.height == 0:
        return PublishPlan(_mark_changes(conform_members(current), last), last, run_at, total=current.height)
    ids = candidates.implode()
    subset = current.filter(pl.col(KEY).is_in(ids))
    last_subset = last.filter(pl.col(KEY).is_in(ids))
    marked = _mark_changes(conform_members(subset), last_subset)
    return PublishPlan(marked, last, run_at, total=current.height, partial=True)


def diff_published(current: pl.DataFrame, last: pl.DataFrame | None, *, run_at: datetime) -> pl.DataFrame:
    """The rows of ``current`` that are new or changed since ``last``, stamped ``updated_at = run_at``."""
    return plan_publish(current, last, run_at=run_at).changed


def as_published(current: pl.DataFrame, last: pl.DataFrame | None, *, run_at: datetime) -> pl.DataFrame:
    """What the target holds once ``diff_published(current, last, run_at=...)`` is committed (by key)."""
    return plan_publish(current, last, run_at=run_at).published


def newly_at_risk(current: pl.DataFrame, last: pl.DataFrame | None) -> list[dict[str, Any]]:
    """Members at_risk in ``current`` that were not at_risk (or not there) in the last published rows.

    Passing only the changed rows gives the same answer: an unchanged row kept its status."""
    now = current.filter(pl.col("status") == "at_risk")
    if last is not None and last.height and now.height:
        before = last.select(pl.col(KEY), pl.col("status").alias("__status_before"))
        now = now.join(before, on=KEY, how="left").filter(pl.col("__status_before").ne_missing("at_risk"))
    cols = [c for c in ("membership_id", "member_name", "email", "engagement_score", "last_active") if c in now.columns]
    frame = now.select(cols).sort(KEY)
    return frame.with_columns(pl.col(pl.Datetime).dt.to_string("%Y-%m-%dT%H:%M:%S%.6f+00:00")).to_dicts()


class PublishedState:
    """The last successfully published ``member_activity`` rows, kept in the warehouse."""

    def __init__(self, warehouse_dir: Path, *, name: str = "member_activity", path: Path | None = None) -> None:
        self.path = path if path is not None else warehouse_dir / "published" / f"{name}.parquet"

    def load(self) -> pl.DataFrame | None:
        return read_table_if_present(self.path, PUBLISHED_ROWS)

    def save(self, frame: pl.DataFrame) -> None:
        """Replace the state atomically; call only after the target committed these rows."""
        write_table(frame.select(MEMBER_ACTIVITY_COLUMNS), self.path)
