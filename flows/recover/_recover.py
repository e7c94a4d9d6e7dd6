"""Recovery: read Whop's delivery logs (every webhook of the companies served: ``_hooks``) and bring every event
the raw store lacks into it, as raw records of scheme ``delivery_log``; or ask Whop to replay the failed
deliveries (``replay``).

The webhooks are read side by side (MEMBERPULSE_BACKFILL_CONCURRENCY), each request taking a turn of its key's
budget as the backfill's do, and one webhook's failure is its own: the others' records are committed, the result
names the failed company or webhook with its reason, and the failed webhook's log is read again next time from
where it was last read (``RecoveryState.hooks``). When nothing could be read, the most pressing failure is
raised, as a recovery of one webhook always did.

Every page of a webhook is read before any of it is committed: a rate-limit storm, a dead API, a cursor that
never ends or cycles, or a log longer than MEMBERPULSE_RECOVER_MAX_DELIVERIES ends that webhook's read with
:class:`WhopGaveUp` (exit 3) and nothing of it written. Memory stays bounded while reading: recovered records
are streamed to a hidden file, named only at the end, and of each attempt only its compact
``webhook_deliveries`` row is kept. Whop's ``request_body`` comes back parsed; the record's body is it as
compact JSON, which is what Whop POSTs, so a recovered record and a landed one carry the same body.

The API is not trusted with what a delivery holds either: an attempt whose ``sent_at`` is not a time or whose
body cannot be stored as JSON (nested deeper than any encoder goes) is recorded as a failure (a quarantine
entry, which the reconcile brings into ``webhook_failures`` with its reason) and the recovery goes on; an event
of a company the webhook does not carry for this deployment (``Hook.keeps``: the envelope's
``company_id``/``account_id``) is skipped and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Literal, NoReturn

import orjson
import polars as pl

from memberpulse.contracts.quarantine import encode_quarantine_entry
from memberpulse.contracts.raw_record import SCHEME_DELIVERY_LOG, encode_raw_record
from memberpulse.contracts.tables import WEBHOOK_DELIVERIES
from memberpulse.errors import ConfigError, InvalidInput, WhopGaveUp
from memberpulse.flows.companies import CompanyFailure, FailureKind, most_pressing, serving_companies
from memberpulse.flows.raw.remote import pull_raw
from memberpulse.flows.recover._hooks import Hook, find_hooks
from memberpulse.flows.recover._store import RETENTION, RecordSink, RecoveryStore
from memberpulse.flows.recover._webhook import require_recovery_settings
from memberpulse.flows.state_codec import RecoveryState
from memberpulse.flows.whop import (
    PrefectRateLimit,
    RateBudget,
    RetryEvent,
    WhopBackfillClient,
    WhopClientConfig,
    local_limiter,
)
from memberpulse.landing.shipper import ship_files, sources_for
from memberpulse.settings import Settings
from memberpulse.storage import ObjectStore, open_store

log = logging.getLogger("memberpulse.recover")

#: Where a webhook's requests take their turns (as the backfill's): this process's bucket, or the key's Prefect
#: global concurrency limit (the deployed backfill's recovery step).
LimiterKind = Literal["local", "prefect"]

# Re-read a little before where the last recovery stopped: an attempt logged late must not fall between runs.
OVERLAP = timedelta(minutes=10)


@dataclass(frozen=True)
class RecoveryResult:
    hooks: tuple[str, ...]  # the webhooks read (or asked to replay)
    since: datetime  # the earliest window start
    replayed: bool = False
    pages: int = 0
    deliveries: int = 0  # attempts read
    failed_attempts: int = 0
    unlogged_failures: int = 0  # failed attempts for messages the landing never logged
    unlogged_messages: int = 0
    recovered: int = 0  # events written to the raw store
    already_stored: int = 0  # messages in the log the raw store already had
    without_id: int = 0  # attempts whose body carries no envelope id (cannot be deduplicated: skipped)
    unusable: int = 0  # attempts recorded as failures (a sent_at that is no time, a body no encoder takes)
    other_company: int = 0  # attempts for a company the webhook does not carry here (skipped)
    segments: tuple[str, ...] = ()
    seconds: float = 0.0
    failures: dict[str, CompanyFailure] = field(default_factory=dict)  # company or webhook -> why

    @property
    def hook_id(self) -> str:
        return ", ".join(self.hooks)

    @property
    def failure_kind(self) -> FailureKind | None:
        return most_pressing(f.kind for f in self.failures.values())

    def summary(self) -> str:
        which = f"webhook {self.hook_id}" if len(self.hooks) == 1 else f"{len(self.hooks)} webhooks"
        if self.replayed:
            return f"asked Whop to replay the failed deliveries of {which} since {self.since.isoformat()}"
        text = (
            f"read {self.deliveries} delivery attempt(s) of {which} since {self.since.isoformat()}"
            f" ({self.failed_attempts} failed); recovered {self.recovered} event(s), {self.already_stored} "
            "already stored"
        )
        if self.unlogged_failures:
            text += (
                f"; Whop saw {self.unlogged_failures} failed attempt(s) for {self.unlogged_messages} message(s) "
                "the landing never logged (the requests never reached it)"
            )
        if self.without_id:
            text += f"; {self.without_id} attempt(s) without an envelope id skipped"
        if self.unusable:
            text += f"; {self.unusable} unusable attempt(s) recorded as failures (see webhook_failures)"
        if self.other_company:
            text += f"; {self.other_company} attempt(s) for another company skipped"
        if self.failures:
            text += f"; {len(self.failures)} company(ies) or webhook(s) not read: {', '.join(sorted(self.failures))}"
        return text


#: (webhook, pages read, attempts read, the oldest attempt's time) after each page of a webhook's log.
PageObserver = Callable[[str, int, int, "datetime | None"], None]


def recover(
    settings: Settings,
    *,
    since: datetime | None = None,
    replay: bool = False,
    on_page: PageObserver | None = None,
    on_retry: Callable[[RetryEvent], None] | None = None,
    limiter: LimiterKind = "local",
) -> RecoveryResult:
    """One recovery (see the module docstring). A company or webhook that fails is in the result's
    ``failures``; when none could be read its error is raised: ConfigError (exit 2) naming the setting to fix,
    WhopAuthError (2), WhopGaveUp (3)."""
    require_recovery_settings(settings)
    started = datetime.now(UTC)
    store = RecoveryStore(settings.warehouse_dir, settings.landing_dir, settings.quarantine_dir)
    state = store.load_state()
    object_store = open_store(settings)
    if object_store is not None:  # the index must see what every landing replica shipped
        pull_raw(object_store, settings.landing_dir, settings.quarantine_dir)
    serving = serving_companies(settings)
    client_for = partial(_client_for, settings, on_retry, limiter)
    hooks, failures = find_hooks(settings, serving, client_for)
    windows = {h.id: _window_start(since, state, h.id, started) for h in hooks}
    if replay:
        return _replay_all(hooks, windows, failures, client_for)
    known, offsets = store.known_ids(state)
    context = _Reading(serving, settings, set(known["webhook_id"].to_list()), store, started, on_page, client_for)
    reads = list(_read_all(hooks, windows, context, failures))
    if not reads:
        _raise_most_pressing(failures)
    return _commit(store, state, reads, (known, offsets), started, object_store, failures)


def _client_for(
    settings: Settings, on_retry: Callable[[RetryEvent], None] | None, limiter: LimiterKind, reader: str
) -> WhopBackfillClient:
    """A client with the key of company ``reader`` ("": WHOP_API_KEY's), taking turns of that key's budget."""
    key = settings.whop_key_for(reader) if reader else settings.whop_api_key
    if key is None:
        raise ConfigError(f"no API key reads company {reader}", variable="WHOP_COMPANY_API_KEYS")
    secret = key.get_secret_value().strip()
    budget = RateBudget.from_settings(settings)
    turns = PrefectRateLimit.ensure(secret, budget) if limiter == "prefect" else local_limiter(secret, budget)
    label = reader or next(iter(settings.listed_companies), "of WHOP_API_KEY")
    return WhopBackfillClient(
        api_key=secret, company_id=label, base_url=settings.whop_api_base_url,
        config=WhopClientConfig.from_settings(settings), on_retry=on_retry, job="recover", limiter=turns,
    )  # fmt: skip


def _raise_most_pressing(failures: list[CompanyFailure]) -> NoReturn:
    kind = most_pressing(f.kind for f in failures)
    failure = next(f for f in failures if f.kind == kind)
    assert failure.error is not None
    raise failure.error


@dataclass(frozen=True)
class _Reading:
    """What every webhook's read shares."""

    serving: list[str]
    settings: Settings
    known_ids: set[str]
    store: RecoveryStore
    started: datetime
    on_page: PageObserver | None
    client_for: Callable[[str], WhopBackfillClient]


@dataclass(frozen=True)
class _HookRead:
    hook: Hook
    reading: _LogReading
    pages: int


def _read_all(
    hooks: list[Hook], windows: dict[str, datetime], context: _Reading, failures: list[CompanyFailure]
) -> Iterator[_HookRead]:
    """Every webhook's log, side by side; a webhook's failure is appended to ``failures`` and ends only it."""

    def one(number: int, hook: Hook) -> _HookRead | CompanyFailure:
        try:
            return _read_hook(hook, windows[hook.id], context, number)
        except Exception as exc:  # its sink is gone; the other webhooks' reads go on
            return CompanyFailure.of(hook.id, exc)

    workers = max(1, min(context.settings.backfill_concurrency, len(hooks)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="recover") as pool:
        for outcome in pool.map(one, range(1, len(hooks) + 1), hooks):
            if isinstance(outcome, CompanyFailure):
                failures.append(outcome)
            else:
                yield outcome


def _read_hook(hook: Hook, window_start: datetime, context: _Reading, number: int) -> _HookRead:
    keeps = partial(hook.keeps, serving=context.serving, left_out=context.settings.excluded_companies)
    sink = context.store.record_sink(context.started, seq=number)
    reading = _LogReading(
        window_start, keeps, context.known_ids, sink, context.settings.recover_max_deliveries, hook.reader or hook.id
    )
    try:
        with context.client_for(hook.reader) as client:
            pages = _read_log(client, hook.id, reading, context.on_page)
    except BaseException:
        sink.abort()
        raise
    return _HookRead(hook, reading, pages)


def _replay_all(
    hooks: list[Hook],
    windows: dict[str, datetime],
    failures: list[CompanyFailure],
    client_for: Callable[[str], WhopBackfillClient],
) -> RecoveryResult:
    """Ask Whop to re-send each webhook's failed deliveries since its window's start."""
    asked = []
    for hook in hooks:
        try:
            with client_for(hook.reader) as client:
                replay = partial(client.sdk.webhooks.replay, hook.id, sent_after=_iso(windows[hook.id]))
                client.call("replay", 1, partial(replay, failed_only=True))
        except Exception as exc:  # one webhook's refusal is its own
            failures.append(CompanyFailure.of(hook.id, exc))
            continue
        asked.append(hook.id)
        log.info("asked Whop to replay failed deliveries of %s since %s", hook.id, windows[hook.id].isoformat())
    if not asked:
        _raise_most_pressing(failures)
    since = min(windows[h] for h in asked)
    return RecoveryResult(tuple(asked), since, replayed=True, failures={f.company_id: f for f in failures})


def _window_start(since: datetime | None, state: RecoveryState, hook_id: str, now: datetime) -> datetime:
    oldest = now - RETENTION
    if since is not None:
        if since.tzinfo is None:
            raise InvalidInput(
                "--since must carry a time zone", value=since.isoformat(), hint="e.g. 2026-11-27T00:00:00Z"
            )
        return max(since, oldest)
    stopped = state.hook_stopped_at(hook_id)
    return max(stopped - OVERLAP, oldest) if stopped is not None else oldest


@dataclass
class _LogReading:
    """One pass over the delivery log, newest first: what it keeps is bounded (compact rows, ids, counts);
    recovered records go straight to ``sink``."""

    since: datetime
    keeps: Callable[[str | None], bool]  # whether an event of this company belongs here (Hook.keeps)
    known_ids: set[str]
    sink: RecordSink
    max_deliveries: int
    company_id: str
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    seen: set[str] = field(default_factory=set)  # delivery ids (a page shift may show one twice)
    messages: set[str] = field(default_factory=set)  # envelope ids of the attempts read
    recovered: set[str] = field(default_factory=set)
    failed_ids: list[str | None] = field(default_factory=list)  # envelope ids of failed attempts
    rows: list[pl.DataFrame] = field(default_factory=list)
    unusable: list[bytes] = field(default_factory=list)  # quarantine lines
    newest: datetime | None = None
    deliveries: int = 0
    without_id: int = 0
    other_company: int = 0

    def take(self, items: list[Any]) -> bool:
        """Take one page; False once it reaches attempts older than the window (the rest are older still)."""
        rows: list[dict[str, Any]] = []
        lines: list[bytes] = []
        older = False
        for attempt in items:
            sent = _time_or_none(attempt.sent_at)
            if sent is not None and sent < self.since:
                older = True
            elif attempt.id not in self.seen:
                self.seen.add(attempt.id)
                self._count()
                problem = self._take_one(attempt, sent, rows, lines)
                if problem is not None:
                    self.unusable.append(_failure_line(attempt, problem, self.now))
        self.sink.write(lines)
        self.rows.append(pl.DataFrame(rows, schema=WEBHOOK_DELIVERIES.schema))
        return not older

    def _count(self) -> None:
        self.deliveries += 1
        if self.deliveries > self.max_deliveries:
            raise WhopGaveUp(
                f"stopped reading Whop's delivery log for company {self.company_id}: more than "
                f"{self.max_deliveries} attempts since {self.since.isoformat()}",
                company_id=self.company_id,
                last_status=200,
                hint="nothing was written; raise MEMBERPULSE_RECOVER_MAX_DELIVERIES if the log really is that "
                "long, or recover a shorter window with --since",
            )

    def _take_one(
        self, attempt: Any, sent: datetime | None, rows: list[dict[str, Any]], lines: list[bytes]
    ) -> str | None:
        """Keep one attempt in the window; why it cannot be taken, or None."""
        if sent is None:
            return f"sent_at {str(attempt.sent_at)[:64]!r} is not a time"
        if not self.keeps(_company_of(attempt.request_body)):
            self.other_company += 1
            return None
        webhook_id = _envelope_id(attempt)
        try:
            rows.append(_delivery_row(attempt, webhook_id, sent))
            if webhook_id is not None and webhook_id not in self.known_ids and webhook_id not in self.recovered:
                body = orjson.dumps(attempt.request_body).decode()
                lines.append(encode_raw_record(webhook_id, self.now, None, SCHEME_DELIVERY_LOG, attempt.event, body))
                self.recovered.add(webhook_id)
        except (orjson.JSONEncodeError, TypeError, ValueError) as exc:
            return f"request_body cannot be stored as JSON ({str(exc)[:120]})"
        self.newest = max(sent, self.newest) if self.newest is not None else sent
        self.without_id += webhook_id is None
        if webhook_id is not None:
            self.messages.add(webhook_id)
        if not attempt.success:
            self.failed_ids.append(webhook_id)
        return None


def _read_log(client: WhopBackfillClient, hook_id: str, reading: _LogReading, on_page: PageObserver | None) -> int:
    """Every attempt sent at or after the window's start (the log is newest first: stop at the first older)."""
    missing = ConfigError(
        f"Whop has no webhook {hook_id} for this API key",
        variable="WHOP_WEBHOOK_ID",
        hint="set WHOP_WEBHOOK_ID to the hook_... id shown in Whop's dashboard (Developer → Webhooks)",
    )
    request = partial(client.sdk.webhooks.list_deliveries, hook_id, first=client.page_size)
    pages = 0
    for pages, pager, _ in client.cursor_pages("deliveries", lambda after: request(after=after), not_found=missing):
        items = list(pager.items or [])
        more = reading.take(items)
        if on_page is not None:
            on_page(hook_id, pages, reading.deliveries, _time_or_none(items[-1].sent_at) if items else None)
        if not more:
            break
    return pages


def _commit(
    store: RecoveryStore,
    state: RecoveryState,
    reads: list[_HookRead],
    index: tuple[pl.DataFrame, dict[str, int]],
    started: datetime,
    object_store: ObjectStore | None,
    failures: list[CompanyFailure],
) -> RecoveryResult:
    """The webhooks read in full: records, unusable attempts, then (with the storage URL set) both shipped to
    the store, then the recovery's own files (the state last): recovery reports success only once what it
    recovered is where every worker reads it. A webhook that failed keeps where it was read up to."""
    known, offsets = index
    now = datetime.now(UTC)
    segments = [path for r in reads if (path := r.reading.sink.commit()) is not None]
    failures_file = store.write_failures([line for r in reads for line in r.reading.unusable], now)
    if object_store is not None:
        ship_recovered(object_store, store, segments, failures_file)
    landed_ids = set(known.filter(pl.col("landed"))["webhook_id"].to_list())
    refused = store.quarantined_ids()
    failed_ids = [i for r in reads for i in r.reading.failed_ids]
    unlogged = [i for i in failed_ids if i not in landed_ids and i not in refused]
    recovered = {i for r in reads for i in r.reading.recovered}
    stood = _read_up_to(state, reads)
    new_state = RecoveryState(
        stopped_at=max(stood.values()), hooks=stood, index_offsets=offsets, recovered_at=now.isoformat(),
        recovered=len(recovered), failed_attempts=len(failed_ids), unlogged_failures=len(unlogged),
        unlogged_messages=len(set(unlogged)),
    )  # fmt: skip
    rows = [row for r in reads for row in r.reading.rows]
    store.commit(new_state, known, recovered, pl.concat(rows) if rows else WEBHOOK_DELIVERIES.schema.to_frame())
    return RecoveryResult(
        hooks=tuple(r.hook.id for r in reads), since=min(r.reading.since for r in reads),
        pages=sum(r.pages for r in reads), deliveries=sum(r.reading.deliveries for r in reads),
        failed_attempts=len(failed_ids), unlogged_failures=len(unlogged), unlogged_messages=len(set(unlogged)),
        recovered=len(recovered),
        already_stored=len({m for r in reads for m in r.reading.messages}) - len(recovered),
        without_id=sum(r.reading.without_id for r in reads), unusable=sum(len(r.reading.unusable) for r in reads),
        other_company=sum(r.reading.other_company for r in reads), segments=tuple(str(p) for p in segments),
        seconds=(now - started).total_seconds(), failures={f.company_id: f for f in failures},
    )  # fmt: skip


def _read_up_to(state: RecoveryState, reads: list[_HookRead]) -> dict[str, str]:
    """Each webhook's newest attempt read: this recovery's, else the earlier one (a webhook whose log held no
    attempt in the window stands where its window started)."""
    stood = dict(state.hooks)
    for r in reads:
        newest = r.reading.newest or state.hook_stopped_at(r.hook.id) or r.reading.since
        stood[r.hook.id] = newest.isoformat()
    return stood


def ship_recovered(
    object_store: ObjectStore, store: RecoveryStore, segments: list[Path], failures: Path | None
) -> None:
    """Ship recovery's new segments and quarantine file as chunks, as a landing replica ships its own."""
    landing, quarantine = sources_for(store.landing_dir, store.quarantine_dir)
    for source, path in [*((landing, s) for s in segments), (quarantine, failures)]:
        if path is not None:
            ship_files(object_store, source, [path.relative_to(source.root).as_posix()])


def _failure_line(attempt: Any, problem: str, now: datetime) -> bytes:
    """An attempt recovery cannot take, as a quarantine entry keyed by its envelope id (when it has one)."""
    webhook_id = _envelope_id(attempt)
    try:
        prefix = orjson.dumps(attempt.request_body)[:4096]
    except (orjson.JSONEncodeError, TypeError):
        prefix = repr(attempt.request_body)[:4096].encode("utf-8", "backslashreplace")
    return encode_quarantine_entry(
        received_at=now,
        status=422,
        reason=f"recovered from Whop's delivery log but unusable: delivery {attempt.id}: {problem}",
        remote="whop delivery log",
        headers={"webhook-id": webhook_id} if webhook_id else {},
        body_bytes=len(prefix),
        body_prefix=prefix,
    )


def _company_of(body: Any) -> str | None:
    """The company an event belongs to: the v1 envelope's ``company_id`` (or ``account_id``), else its data's."""
    if not isinstance(body, dict):
        return None
    data = body.get("data")
    data = data if isinstance(data, dict) else {}
    company = data.get("company")
    company = company if isinstance(company, dict) else {}
    for value in (body.get("company_id"), body.get("account_id"), data.get("company_id"), company.get("id")):
        if isinstance(value, str) and value:
            return value
    return None


def _delivery_row(attempt: Any, webhook_id: str | None, sent: datetime) -> dict[str, Any]:
    return {
        "delivery_id": attempt.id,
        "company_id": _company_of(attempt.request_body),
        "event": attempt.event,
        "webhook_id": webhook_id,
        "sent_at": sent,
        "response_code": int(attempt.response_code),
        "success": bool(attempt.success),
        "total_time": float(attempt.total_time),
        "replayed_from": attempt.replayed_from,
    }


def deliveries_frame(attempts: list[Any]) -> pl.DataFrame:
    """whop-sdk ``WebhookDelivery`` models as ``webhook_deliveries`` rows (the payload is not kept again)."""
    rows = [_delivery_row(a, _envelope_id(a), _parse_time(a.sent_at)) for a in attempts]
    return pl.DataFrame(rows, schema=WEBHOOK_DELIVERIES.schema)


def _envelope_id(attempt: Any) -> str | None:
    value = attempt.request_body.get("id") if isinstance(attempt.request_body, dict) else None
    return value if isinstance(value, str) and value else None


def _parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _time_or_none(text: Any) -> datetime | None:
    """``sent_at`` as a time, or None when Whop's log holds something else there."""
    try:
        return _parse_time(text)
    except (ValueError, TypeError, AttributeError):
        return None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
