"""The backfill: every company's two resources fetched into its own snapshot, companies side by side, then a
recovery from Whop's delivery log.

Two entry points share one body: :func:`backfill` (``memberpulse backfill``) fetches the companies as plain calls
on a bounded pool of threads, outside any Prefect flow run, so no temporary Prefect API server starts and none
can outlive a killed command (as ``memberpulse run`` does), their requests taking turns from this process's
bucket per API key; :func:`backfill_flow` (deployments) fetches each company as a tracked, retried Prefect
task, their requests taking turns from the key's Prefect global concurrency limit, and adds a summary artifact.

One company never holds up or fails another: each fetch is on its own (a 403 after an uninstall, a 5xx storm, a
runaway cursor end that company's fetch only), the others' snapshots are written, and the result names each
failed company with its reason. Which companies a backfill fetches, and the round that retries only the failed
ones: ``_companies``.

Prefect loads this file by path for deployments (``prefect.yaml``), so every import here is absolute.
"""

# No ``from __future__ import annotations``: a runner (``flow.serve()``) cloudpickles the flow by value, and
# string annotations would then name types its globals no longer hold (Prefect's parameter model fails).

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.futures import as_completed as prefect_as_completed

from memberpulse.errors import MemberpulseError
from memberpulse.flows.backfill._companies import Plan, plan, record_round
from memberpulse.flows.backfill._fetch import CompanyBackfill, backfill_company, fetch_company
from memberpulse.flows.backfill._progress import ResourceResult, current, rate
from memberpulse.flows.companies import CompanyFailure, FailureKind, most_pressing
from memberpulse.flows.deployment_runs import in_deployment, require_absolute_data_dir
from memberpulse.flows.recover import RecoveryResult, recover, recovery_skip_reason
from memberpulse.flows.statestore import shared_state
from memberpulse.flows.whop import BackfillSnapshot, PrefectRateLimit, RateBudget, backfill_skip_reason, clean_stale_tmp
from memberpulse.settings import Settings, load_settings

log = logging.getLogger("memberpulse.backfill")

Outcome = CompanyBackfill | CompanyFailure


@dataclass(frozen=True)
class BackfillResult:
    status: Literal["written", "skipped"]
    message: str
    written: dict[str, CompanyBackfill] = field(default_factory=dict)  # company -> its new snapshot
    failures: dict[str, CompanyFailure] = field(default_factory=dict)  # company -> why it has none
    fetched_this_round: tuple[str, ...] = ()  # left alone: a retry fetches only the companies still to do
    round_started: datetime | None = None
    seconds: float = 0.0
    recovery: RecoveryResult | None = None  # the delivery-log step (None: skipped or failed)
    recovery_note: str | None = None  # why it was skipped, or what stopped it
    recovery_error: MemberpulseError | None = None

    @property
    def snapshot(self) -> BackfillSnapshot | None:
        """The newest snapshot this backfill wrote (the only one, for one company)."""
        snapshots = [c.snapshot for c in self.written.values()]
        return max(snapshots, key=lambda s: (s.path.name, s.key)) if snapshots else None

    @property
    def resources(self) -> dict[str, ResourceResult]:
        """Pages, records and time per resource, summed over the companies written."""
        summed: dict[str, ResourceResult] = {}
        for company in self.written.values():
            for name, r in company.resources.items():
                s = summed.get(name, ResourceResult(r.resource, 0, 0, 0.0))
                summed[name] = ResourceResult(
                    r.resource, s.pages + r.pages, s.records + r.records, s.seconds + r.seconds
                )
        return summed

    @property
    def records(self) -> int:
        return sum(r.records for r in self.resources.values())

    @property
    def failure_kind(self) -> FailureKind | None:
        """The most pressing kind among the companies' failures (a setting to fix before an unexpected failure
        before a later try), None when every company was written; the CLI exits with its code."""
        return most_pressing(f.kind for f in self.failures.values())


class CompaniesFailed(MemberpulseError):
    """A deployed backfill finished for the other companies but not for these: the flow run fails, naming them
    (their snapshots are not written; the next backfill retries them)."""


#: Fetches the due companies; yields each one's outcome as it ends.
FanOut = Callable[[Settings, Sequence[str]], Iterator[Outcome]]


def backfill(settings: Settings, *, all_companies: bool = False) -> BackfillResult:
    """One backfill as plain calls (``memberpulse backfill``): no Prefect flow run, no temporary API server.

    A company that fails is in the result's ``failures`` (its previous snapshot stays its latest); only a
    problem with the whole backfill raises: ConfigError, CorruptState (the round's file), StorageUnavailable.
    """
    with shared_state(settings, "backfill"):  # the storage URL set: lease, cache fetched, one tree commit
        return _backfill(settings, _fan_out_on_threads, recover, all_companies=all_companies)


@flow(name="backfill", validate_parameters=False, persist_result=False)
def backfill_flow(settings: Settings | None = None, all_companies: bool = False) -> BackfillResult:
    """One backfill as a Prefect flow (deployments): one tracked, retried task per company, and a summary
    artifact. Raises :class:`CompaniesFailed` after writing the others when some companies failed."""
    settings = settings or load_settings()
    with shared_state(settings, "backfill"):
        result = _backfill(settings, _fan_out_as_tasks, recover_task, all_companies=all_companies)
    if result.status == "written":
        _summary_artifact(result)
    if result.failures:
        named = "; ".join(f"{c}: {f.reason}" for c, f in sorted(result.failures.items()))
        raise CompaniesFailed(f"{len(result.failures)} of the companies were not backfilled: {named}")
    return result


def _backfill(
    settings: Settings,
    fan_out: FanOut,
    recover_step: Callable[[Settings], RecoveryResult],
    *,
    all_companies: bool,
) -> BackfillResult:
    log.info("data dir: %s", settings.data_dir.resolve())
    if in_deployment():
        require_absolute_data_dir(settings)
    reason = backfill_skip_reason(settings)
    if reason is not None:
        log.warning(reason)
        return BackfillResult(status="skipped", message=reason)
    started, now = time.monotonic(), datetime.now(UTC)
    todo = plan(settings, now, all_companies=all_companies)
    if not todo.due and not todo.keyless:
        return _nothing_to_do(todo)
    clean_stale_tmp(settings.warehouse_dir)
    written, failures = _fetch_all(settings, fan_out, todo)
    record_round(settings.warehouse_dir, todo, failures, now)
    recovery, note, error = _recover_step(settings, recover_step)
    return BackfillResult(
        status="written",
        message=f"{len(written)} of {len(todo.due) + len(todo.keyless)} companies backfilled",
        written=written,
        failures=failures,
        fetched_this_round=todo.fetched_this_round,
        round_started=todo.round_started,
        seconds=time.monotonic() - started,
        recovery=recovery,
        recovery_note=note,
        recovery_error=error,
    )


def _nothing_to_do(todo: Plan) -> BackfillResult:
    message = (
        "backfill skipped: no company to fetch (none listed in WHOP_COMPANY_ID or WHOP_COMPANY_IDS, and no "
        "webhook of one has landed and been run yet)"
    )
    log.warning(message)
    return BackfillResult(status="skipped", message=message, round_started=todo.round_started)


def _fetch_all(
    settings: Settings, fan_out: FanOut, todo: Plan
) -> tuple[dict[str, CompanyBackfill], dict[str, CompanyFailure]]:
    progress = current()
    if progress is not None:
        progress.started([*todo.due, *(f.company_id for f in todo.keyless)])
    written: dict[str, CompanyBackfill] = {}
    failures: dict[str, CompanyFailure] = {f.company_id: f for f in todo.keyless}
    for failure in todo.keyless:
        _report(failure)
    for outcome in fan_out(settings, todo.due) if todo.due else ():
        if isinstance(outcome, CompanyBackfill):
            written[outcome.company_id] = outcome
        else:
            failures[outcome.company_id] = outcome
        _report(outcome)
    return written, failures


def _report(outcome: Outcome) -> None:
    if isinstance(outcome, CompanyFailure):
        log.info("backfill of company %s failed: %s", outcome.company_id, outcome.reason)
    progress = current()
    if progress is not None:
        failure = outcome.reason if isinstance(outcome, CompanyFailure) else None
        progress.company_done(outcome.company_id, failure)


def _fetch_isolated(settings: Settings, company_id: str) -> Outcome:
    """One company's fetch as plain calls; whatever stops it is that company's failure alone."""
    try:
        return fetch_company(settings, company_id, "local")
    except Exception as exc:  # a bug met in one company's data must not cost the others their snapshots
        if not isinstance(exc, MemberpulseError):
            log.exception("backfill of company %s stopped by an unexpected error", company_id)
        return CompanyFailure.of(company_id, exc)


def _fan_out_on_threads(settings: Settings, companies: Sequence[str]) -> Iterator[Outcome]:
    """At most MEMBERPULSE_BACKFILL_CONCURRENCY companies at once, each outcome as it ends. Interrupted (Ctrl-C),
    companies not started yet are dropped and those under way abort (no snapshot of theirs is written)."""
    pool = ThreadPoolExecutor(
        max_workers=min(settings.backfill_concurrency, len(companies)), thread_name_prefix="company"
    )
    try:
        futures: list[Future[Outcome]] = [pool.submit(_fetch_isolated, settings, c) for c in companies]
        for done in as_completed(futures):
            yield done.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _fan_out_as_tasks(settings: Settings, companies: Sequence[str]) -> Iterator[Outcome]:
    """One Prefect task per company, at most MEMBERPULSE_BACKFILL_CONCURRENCY submitted at a time (the task
    runner would otherwise start a thread for each of a thousand). Each key's global concurrency limit is made
    (or resized) first: a ``rate_limit`` on one that does not exist lets every request through."""
    budget = RateBudget.from_settings(settings)
    for key in {k.get_secret_value().strip() for c in companies if (k := settings.whop_key_for(c)) is not None}:
        PrefectRateLimit.ensure(key, budget)
    waiting: deque[str] = deque(companies)
    running: dict[PrefectFuture[CompanyBackfill], str] = {}
    while waiting or running:
        while waiting and len(running) < settings.backfill_concurrency:
            company = waiting.popleft()
            running[backfill_company.submit(settings, company)] = company
        done = next(iter(prefect_as_completed(list(running))))
        company = running.pop(done)
        outcome: Any = done.result(raise_on_failure=False)
        yield outcome if isinstance(outcome, CompanyBackfill) else CompanyFailure.of(company, outcome)


@task(name="recover", cache_policy=NO_CACHE)
def recover_task(settings: Settings) -> RecoveryResult:
    """The deployed backfill's recovery: its requests take turns of each key's Prefect global concurrency limit,
    as the fetches' do."""
    return recover(settings, limiter="prefect")


def _recover_step(
    settings: Settings, recover_step: Callable[[Settings], RecoveryResult]
) -> tuple[RecoveryResult | None, str | None, MemberpulseError | None]:
    """The last step: events the landing missed, from Whop's delivery log. Its failure never undoes the
    snapshots already written; it is reported (and the CLI exits with its code)."""
    reason = recovery_skip_reason(settings)
    if reason is not None:
        log.info(reason)
        return None, reason, None
    try:
        result = recover_step(settings)
    except MemberpulseError as exc:
        log.warning("recovery from Whop's delivery log failed: %s", exc)
        return None, f"recovery failed: {exc}", exc
    log.info("recovery: %s", result.summary())
    return result, result.summary(), None


def _summary_artifact(result: BackfillResult) -> None:
    """A markdown summary on the flow run (deployments show it in the UI); never fails the run."""
    try:
        from prefect.artifacts import create_markdown_artifact

        rows = "\n".join(
            f"| {c.company_id} | written | {sum(r.records for r in c.resources.values())} | "
            f"{rate(sum(r.records for r in c.resources.values()), c.seconds)} |"
            for c in result.written.values()
        )
        failed = "\n".join(f"| {f.company_id} | failed ({f.kind}) | {f.reason} | |" for f in result.failures.values())
        create_markdown_artifact(
            key="backfill-summary",
            markdown=f"## Backfill\n\n{result.message}\n\n{result.recovery_note or ''}\n\n"
            f"| company | outcome | records | rate |\n|---|---|---|---|\n{rows}\n{failed}\n",
            description="memberpulse backfill",
        )
    except Exception as exc:  # an artifact is a nicety
        log.debug("could not create the backfill artifact: %s", exc)
