"""Recovery: read Whop's delivery log for the company's webhook and bring every event the raw store lacks into
it, as raw records of scheme ``delivery_log``; or ask Whop to replay the failed deliveries (``replay``).

Every page is read before anything is committed: a rate-limit storm, a dead API, a cursor that never ends or
cycles, or a log longer than MEMBERPULSE_RECOVER_MAX_DELIVERIES ends the run with :class:`WhopGaveUp` (exit 3)
and nothing written. Memory stays bounded while reading: recovered records are streamed to a hidden file,
named only at the end, and of each attempt only its compact ``webhook_deliveries`` row is kept. Whop's
``request_body`` comes back parsed; the record's body is it as compact JSON, which is what Whop POSTs, so a
recovered record and a landed one carry the same body.

The API is not trusted with what a delivery holds either: an attempt whose ``sent_at`` is not a time or whose
body cannot be stored as JSON (nested deeper than any encoder goes) is recorded as a failure (a quarantine
entry, which the reconcile brings into ``webhook_failures`` with its reason) and the recovery goes on; an event
of a company other than the configured one (the envelope's ``company_id``/``account_id``) is skipped and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from memberpulse.contracts.quarantine import encode_quarantine_entry
from memberpulse.contracts.raw_record import SCHEME_DELIVERY_LOG, encode_raw_record
from memberpulse.contracts.tables import WEBHOOK_DELIVERIES
from memberpulse.errors import ConfigError, InvalidInput, WhopGaveUp
from memberpulse.flows.raw.remote import pull_raw
from memberpulse.flows.recover._store import RETENTION, RecordSink, RecoveryStore
from memberpulse.flows.recover._webhook import find_webhook, require_recovery_settings
from memberpulse.flows.state_codec import RecoveryState
from memberpulse.flows.whop import RetryEvent, WhopBackfillClient
from memberpulse.landing.shipper import ship_files, sources_for
from memberpulse.settings import Settings
from memberpulse.storage import ObjectStore, open_store

log = logging.getLogger("memberpulse.recover")

# Re-read a little before where the last recovery stopped: an attempt logged late must not fall between runs.
OVERLAP = timedelta(minutes=10)


@dataclass(frozen=True)
class RecoveryResult:
    hook_id: str
    since: datetime
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
    other_company: int = 0  # attempts for a company other than the configured ones (skipped)
    segment: str | None = None
    seconds: float = 0.0

    def summary(self) -> str:
        if self.replayed:
            return (
                f"asked Whop to replay the failed deliveries of webhook {self.hook_id} since {self.since.isoformat()}"
            )
        text = (
            f"read {self.deliveries} delivery attempt(s) of webhook {self.hook_id} since {self.since.isoformat()}"
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
        return text


PageObserver = Callable[[int, int, "datetime | None"], None]


def recover(
    settings: Settings,
    *,
    since: datetime | None = None,
    replay: bool = False,
    on_page: PageObserver | None = None,
    on_retry: Callable[[RetryEvent], None] | None = None,
) -> RecoveryResult:
    """One recovery (see the module docstring). Raises ConfigError (exit 2) naming the setting to fix,
    WhopAuthError (2), WhopGaveUp (3)."""
    require_recovery_settings(settings)
    started = datetime.now(UTC)
    store = RecoveryStore(settings.warehouse_dir, settings.landing_dir, settings.quarantine_dir)
    state = store.load_state()
    object_store = open_store(settings)
    if object_store is not None:  # the index must see what every landing replica shipped
        pull_raw(object_store, settings.landing_dir, settings.quarantine_dir)
    window_start = _window_start(since, state, started)
    with WhopBackfillClient.from_settings(settings, on_retry=on_retry, job="recover") as client:
        hook_id = find_webhook(client, settings)
        if replay:
            request = client.sdk.webhooks.replay
            client.call("replay", 1, lambda: request(hook_id, sent_after=_iso(window_start), failed_only=True))
            log.info("asked Whop to replay failed deliveries of %s since %s", hook_id, window_start.isoformat())
            return RecoveryResult(hook_id, window_start, replayed=True)
        known, offsets = store.known_ids(state)
        reading = _LogReading(
            window_start, configured_companies(settings), set(known["webhook_id"].to_list()),
            store.record_sink(started), settings.recover_max_deliveries, client.company_id,
        )  # fmt: skip
        try:
            pages = _read_log(client, hook_id, reading, on_page)
        except BaseException:
            reading.sink.abort()
            raise
    return _commit(store, state, reading, (known, offsets), hook_id, pages, started, object_store)


def configured_companies(settings: Settings) -> frozenset[str]:
    """The companies whose events recovery keeps (those the settings list; a set, so several can be)."""
    return frozenset(settings.listed_companies)


def _window_start(since: datetime | None, state: RecoveryState, now: datetime) -> datetime:
    oldest = now - RETENTION
    if since is not None:
        if since.tzinfo is None:
            raise InvalidInput(
                "--since must carry a time zone", value=since.isoformat(), hint="e.g. 2026-11-27T00:00:00Z"
            )
        return max(since, oldest)
    stopped = state.stopped_at_time()
    return max(stopped - OVERLAP, oldest) if stopped is not None else oldest


@dataclass
class _LogReading:
    """One pass over the delivery log, newest first: what it keeps is bounded (compact rows, ids, counts);
    recovered records go straight to ``sink``."""

    since: datetime
    companies: frozenset[str]
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
        company = _company_of(attempt.request_body)
        if company is not None and company not in self.companies:
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
            on_page(pages, reading.deliveries, _time_or_none(items[-1].sent_at) if items else None)
        if not more:
            break
    return pages


def _commit(
    store: RecoveryStore,
    state: RecoveryState,
    reading: _LogReading,
    index: tuple[pl.DataFrame, dict[str, int]],
    hook_id: str,
    pages: int,
    started: datetime,
    object_store: ObjectStore | None,
) -> RecoveryResult:
    """Records, unusable attempts, then (with the storage URL set) both shipped to the store, then the
    recovery's own files (the state last): recovery reports success only once what it recovered is where every
    worker reads it."""
    known, offsets = index
    segment = reading.sink.commit()
    failures = store.write_failures(reading.unusable, reading.now)
    if object_store is not None:
        ship_recovered(object_store, store, segment, failures)
    landed_ids = set(known.filter(pl.col("landed"))["webhook_id"].to_list())
    refused = store.quarantined_ids()
    unlogged = [i for i in reading.failed_ids if i not in landed_ids and i not in refused]
    new_state = RecoveryState(
        stopped_at=(reading.newest or state.stopped_at_time() or reading.since).isoformat(),
        index_offsets=offsets,
        recovered_at=reading.now.isoformat(),
        recovered=len(reading.recovered),
        failed_attempts=len(reading.failed_ids),
        unlogged_failures=len(unlogged),
        unlogged_messages=len(set(unlogged)),
    )
    deliveries = pl.concat(reading.rows) if reading.rows else WEBHOOK_DELIVERIES.schema.to_frame()
    store.commit(new_state, known, reading.recovered, deliveries)
    return RecoveryResult(
        hook_id=hook_id, since=reading.since, pages=pages, deliveries=reading.deliveries,
        failed_attempts=len(reading.failed_ids), unlogged_failures=len(unlogged),
        unlogged_messages=new_state.unlogged_messages, recovered=len(reading.recovered),
        already_stored=len(reading.messages) - len(reading.recovered), without_id=reading.without_id,
        unusable=len(reading.unusable), other_company=reading.other_company,
        segment=str(segment) if segment else None, seconds=(datetime.now(UTC) - started).total_seconds(),
    )  # fmt: skip


def ship_recovered(
    object_store: ObjectStore, store: RecoveryStore, segment: Path | None, failures: Path | None
) -> None:
    """Ship recovery's new segment and quarantine file as chunks, as a landing replica ships its own."""
    landing, quarantine = sources_for(store.landing_dir, store.quarantine_dir)
    for source, path in ((landing, segment), (quarantine, failures)):
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
