"""What every publish target does: only changed rows, all or nothing, bounded retries and an overall deadline,
and a cheap check that the target still holds what was published.

A target subclass implements three writes (members, runs, failures) and a fingerprint of its member rows; this
base decides *what* to send (``changes.diff_published``, or everything when the target was changed behind our
back or the member state was rebuilt) and advances the warehouse's published state only after the target
committed.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, Literal, NamedTuple, TypeVar

import polars as pl

from memberpulse.errors import PublishUnavailable
from memberpulse.flows.fsio import file_version
from memberpulse.flows.publish._changes import ChangeHints, PublishedState, PublishPlan, newly_at_risk, plan_publish
from memberpulse.flows.publish._deadline import DEADLINE_HINT, Deadline
from memberpulse.flows.publish._fingerprint import NOTHING, Fingerprint, fingerprint_rows
from memberpulse.flows.publish._schema import KEY, summarise_webhook_failures
from memberpulse.flows.publish._storable_text import NUL, REPLACEMENT, storable_text
from memberpulse.flows.publish._targets import TargetState
from memberpulse.flows.state_codec import TargetMeta
from memberpulse.settings import Settings, default_settings

log = logging.getLogger(__name__)
T = TypeVar("T")
RunStatus = Literal["running", "completed", "failed"]
_MAX_BACKOFF_SECONDS = 30.0
_MAX_ERROR_CHARS = 2000
# The two failure counts of a run, named once: the run summaries and the report's pipeline chart all say these.
REJECTS_LABEL = "rejects (unparseable records)"
REFUSED_LABEL = "refused by the landing (quarantine)"


@dataclass(frozen=True)
class PublishConfig:
    """How every publish target behaves: the MEMBERPULSE_PUBLISH_* settings, as :meth:`from_settings` reads
    them (their defaults and bounds are on the Settings fields)."""

    max_attempts: int  # tries of one write on a transient failure (the first counts)
    backoff_seconds: float  # the first wait between tries; doubles per try
    timeout_seconds: float  # connecting (Postgres), or each HTTP phase (PostgREST)
    statement_timeout_seconds: float  # Postgres: every publish statement's statement_timeout
    lock_timeout_seconds: float  # Postgres: every publish statement's lock_timeout
    batch_size: int  # PostgREST: rows per upsert request
    deadline_seconds: float  # the whole of one publish call, retries and waits included

    @classmethod
    def from_settings(cls, settings: Settings) -> PublishConfig:
        return cls(
            max_attempts=settings.publish_max_attempts,
            backoff_seconds=settings.publish_backoff_seconds,
            timeout_seconds=settings.publish_timeout_seconds,
            statement_timeout_seconds=settings.publish_statement_timeout_seconds,
            lock_timeout_seconds=settings.publish_lock_timeout_seconds,
            batch_size=settings.publish_batch_size,
            deadline_seconds=settings.publish_deadline_seconds,
        )


#: The config with every setting at its default: what a publisher made without one publishes with.
DEFAULT_PUBLISH_CONFIG: Final = PublishConfig.from_settings(default_settings())


@dataclass(frozen=True)
class PublishResult:
    """What one ``publish_members`` call did to ``member_activity``.

    ``inserted`` + ``updated`` rows were written with ``updated_at = run_at``; ``unchanged`` rows were left
    alone (equal to what was last published, or equal in the target already). ``published`` is the whole
    table as it now stands (the warehouse's published state), for snapshots. ``repaired``: why the whole
    published state was sent again (the target disagreed with it, or the member state was rebuilt), or None;
    the counts then say what the target needed.
    """

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    published: pl.DataFrame | None = field(default=None, compare=False, repr=False)
    changed_keys: pl.Series | None = field(default=None, compare=False, repr=False)
    newly_at_risk: list[dict[str, Any]] = field(default_factory=list, compare=False, repr=False)
    repaired: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class PipelineRun:
    """One row of ``pipeline_runs``. Record it with status "running" at start, again when it ends."""

    run_id: str
    flow: str
    started_at: datetime
    status: RunStatus = "running"
    finished_at: datetime | None = None
    events_ingested: int = 0
    rejects: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_unchanged: int = 0
    drift_count: int = 0
    error: str | None = None
    landing_rejections: int = 0

    def as_row(self) -> dict[str, Any]:
        row = asdict(self)
        if row["error"] is not None:
            row["error"] = row["error"][:_MAX_ERROR_CHARS].replace(NUL, REPLACEMENT)
        return row


class Written(NamedTuple):
    """What a target did with the changed rows. ``kept``: (membership_id, updated_at) of rows it already
    held unchanged and left alone (only after the warehouse state was lost), or None."""

    inserted: int
    updated: int
    kept: pl.DataFrame | None = None


@dataclass(frozen=True)
class TargetCheck:
    """What the check before a publish found. ``local``: the published state's fingerprint (None before the
    first publish: then nothing is asked); ``found``: the target's; ``foreign``: what it holds besides our rows,
    as last measured; ``repair``: why the whole published state is sent again, or None."""

    local: Fingerprint | None = None
    found: Fingerprint | None = None
    foreign: Fingerprint = NOTHING
    repair: str | None = None
    disagreed: bool = False  # the target did not hold the published state (not merely a rewrite)

    def held(self, sent: int) -> int:
        """How many of ``sent`` rows the target still holds, as far as its count tells."""
        if self.found is None:
            return 0
        return max(0, min(sent, self.found.rows - self.foreign.rows))


def repair_reason(found: Fingerprint | None, local: Fingerprint, *, rewrite: bool) -> str:
    """What a run says when it sends the whole published state again (``found``: the target's fingerprint)."""
    why = "the member state was rebuilt (full refresh): " if rewrite else ""
    if found is None:
        return f"{why}re-published all {local.rows} rows"
    had = f"the target had {found.rows} rows, the published state {local.rows}"
    if found.rows == local.rows and not local.agrees(found):
        had += ", with other contents"
    return f"{why}{had}: re-published all"


class Publisher(ABC):
    """Publishes to one target. Use as a context manager, or call ``close()``."""

    target: ClassVar[str]
    #: The target's fingerprint digests every row (Postgres), or only counts them (PostgREST).
    digests: ClassVar[bool]

    def __init__(
        self,
        *,
        state: PublishedState,
        config: PublishConfig = DEFAULT_PUBLISH_CONFIG,
        target_state: TargetState | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.state = state
        self.config = config
        self.target_state = target_state
        self._sleep = sleep
        self._deadline = Deadline(config.deadline_seconds)

    def _start(self) -> None:
        """Each call the flows make gets the whole publish deadline (``MEMBERPULSE_PUBLISH_DEADLINE_SECONDS``)."""
        self._deadline = Deadline(self.config.deadline_seconds)

    # --- the surface the flows call ------------------------------------------------------------------------
    def publish_members(
        self, rows: pl.DataFrame, *, run_at: datetime, hints: ChangeHints | None = None, rewrite: bool = False
    ) -> PublishResult:
        """Send the rows that differ from the last successful publish, then remember them as published.

        First one cheap query asks the target for its fingerprint. When it does not hold the published state
        (rows truncated, deleted or edited behind our back), or with ``rewrite`` (also when ``hints`` say this run
        rebuilt the member state: ``--full-refresh``), the whole published state is sent, exactly. ``hints`` lets
        it compare only the rows that can have changed since this target's last publish.
        Raises PublishUnavailable (after bounded retries, or past the deadline) or PublishError; in both cases
        the warehouse's published state is untouched, so the next run sends the same rows again.
        """
        self._start()
        last = self.state.load()
        plan = plan_publish(rows, last, run_at=run_at, candidates=self._candidates(hints))
        meta = self.target_state.load_meta() if self.target_state is not None else TargetMeta()
        check = self._check(last, meta, rewrite=rewrite or (hints is not None and hints.rebuilt))
        if check.repair is None and plan.changed.height == 0:
            self._remember(meta, hints, check.local, check.foreign)
            return PublishResult(unchanged=plan.total, published=last, changed_keys=plan.changed_keys)
        if check.repair is not None:
            log.log(logging.WARNING if check.disagreed else logging.INFO, "%s: %s", self.describe(), check.repair)
        published, written = self._send(plan, check)
        self.state.save(published)  # only now: the target has committed
        local, foreign = self._after(plan, check, published)
        if check.repair is not None:
            meta = meta.with_(repaired=f"{datetime.now(UTC).isoformat(timespec='seconds')}: {check.repair}")
        self._remember(meta, hints, local, foreign)
        unchanged = max(0, plan.total - written.inserted - written.updated)
        return PublishResult(
            written.inserted, written.updated, unchanged, published=published, changed_keys=plan.changed_keys,
            newly_at_risk=newly_at_risk(plan.changed, last), repaired=check.repair,
        )  # fmt: skip

    def _candidates(self, hints: ChangeHints | None) -> pl.Series | None:
        if hints is None or self.target_state is None:
            return None
        meta = self.target_state.load_meta()
        return hints.candidates(as_of=meta.as_of, token=meta.change_token, scoring=meta.scoring)

    def _check(self, last: pl.DataFrame | None, meta: TargetMeta, *, rewrite: bool) -> TargetCheck:
        """The cheap check: one query for the target's fingerprint, compared with the published state's plus
        the rows someone else keeps there. Not asked before the first publish (everything is sent then)."""
        if last is None:
            return TargetCheck()
        found = self._target_fingerprint()
        local = self._local_fingerprint(last, meta)
        foreign = Fingerprint(meta.foreign_rows, meta.foreign_digest)
        if found is None:  # the target could not count: only a rewrite sends everything
            return TargetCheck(local, None, foreign, repair_reason(None, local, rewrite=True) if rewrite else None)
        disagreed = not local.plus(foreign).agrees(found)
        if not (disagreed or rewrite):
            return TargetCheck(local, found, foreign)
        return TargetCheck(local, found, foreign, repair_reason(found, local, rewrite=rewrite), disagreed)

    def _local_fingerprint(self, last: pl.DataFrame, meta: TargetMeta) -> Fingerprint:
        """The published state's fingerprint: remembered with the file it describes, else computed."""
        if not self.digests:
            return Fingerprint(last.height)
        if meta.published_digest is not None and meta.published_version == file_version(self.state.path):
            return Fingerprint(last.height, meta.published_digest)
        return fingerprint_rows(last)

    def _send(self, plan: PublishPlan, check: TargetCheck) -> tuple[pl.DataFrame, Written]:
        """Write the changed rows, or (a repair) the whole published state exactly as published; returns the
        published state as the target now holds it, and what the target did."""
        if check.repair is None:
            written = self._upsert_members(plan.changed, seen_before=plan.seen_before)
        else:
            everything = plan.published
            written = self._upsert_members(everything, seen_before=check.held(everything.height), exact=True)
        published = plan.published
        if written.kept is not None and written.kept.height:
            # Rows we sent that the target already held: their updated_at is the target's, not run_at.
            published = published.update(written.kept, on=KEY)
        return published, written

    def _after(self, plan: PublishPlan, check: TargetCheck, published: pl.DataFrame) -> tuple[Fingerprint, Fingerprint]:
        """The new published state's fingerprint, and what the target holds besides it: measured (one more
        query) after a repair, carried over otherwise (our upserts leave other rows alone)."""
        if check.local is not None and check.repair is None:
            return self._updated_fingerprint(check.local, plan, published), check.foreign
        local = fingerprint_rows(published) if self.digests else Fingerprint(published.height)
        if check.repair is None:  # the first publish
            return local, NOTHING
        found = self._target_fingerprint()
        foreign = NOTHING if found is None else found.minus(local)
        if foreign.rows <= 0:  # none, or the target changed meanwhile: the next check sees to it
            return local, NOTHING
        log.warning(
            "%s: %d row(s) in member_activity were not published from here: left alone", self.describe(), foreign.rows
        )
        return local, foreign

    def _updated_fingerprint(self, before: Fingerprint, plan: PublishPlan, published: pl.DataFrame) -> Fingerprint:
        """``before`` with the changed rows' old digests taken out and their new ones put in (digests add up),
        so a run pays for the rows it changed, not for the whole table."""
        if not self.digests:
            return Fingerprint(published.height)
        if before.digest is None or plan.last is None:
            return fingerprint_rows(published)
        keys = plan.changed_keys.implode()
        old = fingerprint_rows(plan.last.filter(pl.col(KEY).is_in(keys)))
        return before.minus(old).plus(fingerprint_rows(published.filter(pl.col(KEY).is_in(keys))))

    def _remember(
        self, meta: TargetMeta, hints: ChangeHints | None, local: Fingerprint | None, foreign: Fingerprint
    ) -> None:
        """After the rows are saved: which state and as-of they came from (unknown without hints), and what
        the next check compares."""
        if self.target_state is None:
            return
        known = hints.published_from() if hints is not None else {"as_of": None, "token": None, "scoring": None}
        self.target_state.save_meta(
            meta.with_(
                as_of=known["as_of"], change_token=known["token"], scoring=known["scoring"],
                published_version=file_version(self.state.path), published_digest=local.digest if local else None,
                foreign_rows=foreign.rows, foreign_digest=foreign.digest or 0,
            )
        )  # fmt: skip

    def record_run(self, run: PipelineRun) -> None:
        """Insert or update (by run_id) this run's row in ``pipeline_runs``."""
        self._start()
        self._upsert_runs([run.as_row()])

    def record_failures(self, frame: pl.DataFrame) -> int:
        """Upsert webhook failures (webhook_id, event_type, reason, received_at, body_prefix) into
        ``webhook_failures``, one row per (webhook_id, reason); returns how many keys were sent."""
        self._start()
        summary = storable_text(summarise_webhook_failures(frame))
        if summary.height:
            self._upsert_failures(summary)
        return summary.height

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default target holds none between calls."""

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def describe(self) -> str:
        """Where this publishes, safe to print (no secrets)."""

    # --- what a target implements --------------------------------------------------------------------------
    @abstractmethod
    def _upsert_members(self, changed: pl.DataFrame, *, seen_before: int, exact: bool = False) -> Written:
        """Write ``changed`` all or nothing.

        ``seen_before`` = how many of these rows the target held before (for targets that cannot tell).
        ``exact``: leave every row exactly as sent, ``updated_at`` included (a repair); otherwise a row whose
        data the target holds already keeps its ``updated_at`` (reported in ``Written.kept``)."""

    @abstractmethod
    def _target_fingerprint(self) -> Fingerprint | None:
        """The target's ``member_activity`` fingerprint, in one query (None: the target cannot count)."""

    @abstractmethod
    def _upsert_runs(self, rows: list[dict[str, Any]]) -> None: ...

    @abstractmethod
    def _upsert_failures(self, summary: pl.DataFrame) -> None: ...

    # --- shared --------------------------------------------------------------------------------------------
    def _with_retries(self, what: str, attempt: Callable[[], T]) -> T:
        """Run ``attempt`` until it succeeds, fails fatally, fails transiently ``max_attempts`` times, or the
        next try would start past the publish deadline."""
        max_attempts, backoff = self.config.max_attempts, self.config.backoff_seconds
        for number in range(1, max_attempts + 1):
            try:
                return attempt()
            except PublishUnavailable as exc:
                wait = min(backoff * 2 ** (number - 1), _MAX_BACKOFF_SECONDS)
                out_of_time = self._deadline.remaining() <= wait
                if number == max_attempts or out_of_time:
                    raise self._gave_up(what, exc, number, deadline=out_of_time and number < max_attempts) from exc
                self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _gave_up(self, what: str, exc: PublishUnavailable, number: int, *, deadline: bool) -> PublishUnavailable:
        hint = exc.hint or (DEADLINE_HINT if deadline else None)
        hint = hint or "check that the target is up; the next run re-sends everything pending"
        # Name the action and the target once, whether or not the target's own message did.
        where = self.describe()
        text = exc.message if where.split(" ", 1)[-1] in exc.message else f"{where}: {exc.message}"
        text = text if text.startswith(what) or what in text else f"{what}: {text}"
        tries = f"{number} attempt{'s' if number > 1 else ''}"
        said = "publish deadline" in exc.message  # the attempt itself ran into it: say it once
        ended = (
            f"; the publish deadline ({self._deadline.seconds:g} s) left no time for another"
            if deadline and not said
            else ""
        )
        return PublishUnavailable(f"{text} (gave up after {tries}{ended})", hint=hint)
