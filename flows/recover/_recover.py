"""Recovery: read Whop's delivery log for the company's webhook and bring every event the raw store lacks into
it, as raw records of scheme ``delivery_log``; or ask Whop to replay the failed deliveries (``replay``).

All reads happen before any write: a rate-limit storm or a dead API ends the run with :class:`WhopGaveUp`
(exit 3) and nothing written. Whop's ``request_body`` comes back parsed; the record's body is it as compact
JSON, which is what Whop POSTs, so a recovered record and a landed one carry the same body.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import orjson
import polars as pl

from memberpulse.contracts.raw_record import SCHEME_DELIVERY_LOG, encode_raw_record
from memberpulse.contracts.tables import WEBHOOK_DELIVERIES
from memberpulse.errors import ConfigError, InvalidInput
from memberpulse.flows.recover._store import RETENTION, RecoveryStore
from memberpulse.flows.recover._webhook import find_webhook, require_recovery_settings
from memberpulse.flows.state_codec import RecoveryState
from memberpulse.flows.whop import RetryEvent, WhopBackfillClient
from memberpulse.settings import Settings

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
    window_start = _window_start(since, state, started)
    with WhopBackfillClient.from_settings(settings, on_retry=on_retry, job="recover") as client:
        hook_id = find_webhook(client, settings)
        if replay:
            request = client.sdk.webhooks.replay
            client.call("replay", 1, lambda: request(hook_id, sent_after=_iso(window_start), failed_only=True))
            log.info("asked Whop to replay failed deliveries of %s since %s", hook_id, window_start.isoformat())
            return RecoveryResult(hook_id, window_start, replayed=True)
        attempts, pages = _read_log(client, hook_id, window_start, on_page)
    return _store_recovered(store, state, attempts, hook_id, window_start, pages, started)


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


def _read_log(
    client: WhopBackfillClient, hook_id: str, since: datetime, on_page: PageObserver | None
) -> tuple[list[Any], int]:
    """Every attempt sent at or after ``since`` (the log is newest first: stop at the first older one)."""
    missing = ConfigError(
        f"Whop has no webhook {hook_id} for this API key",
        variable="WHOP_WEBHOOK_ID",
        hint="set WHOP_WEBHOOK_ID to the hook_... id shown in Whop's dashboard (Developer → Webhooks)",
    )
    list_deliveries = client.sdk.webhooks.list_deliveries
    attempts: list[Any] = []
    seen: set[str] = set()
    after: str | None = None
    page = 0
    while True:
        page += 1
        pager, _ = client.call(
            "deliveries",
            page,
            partial(list_deliveries, hook_id, first=client.page_size, after=after),
            not_found=missing,
        )
        items = list(pager.items or [])
        fresh = [d for d in items if _parse_time(d.sent_at) >= since]
        # New attempts logged while we page shift the pages: an attempt may come twice, keep it once.
        attempts += [d for d in fresh if d.id not in seen]
        seen.update(d.id for d in fresh)
        oldest = _parse_time(items[-1].sent_at) if items else None
        if on_page is not None:
            on_page(page, len(attempts), oldest)
        end = pager.response.page_info.end_cursor or None
        if len(fresh) < len(items) or not items or end is None or end == after:
            return attempts, page
        after = end


def _store_recovered(
    store: RecoveryStore,
    state: RecoveryState,
    attempts: list[Any],
    hook_id: str,
    since: datetime,
    pages: int,
    started: datetime,
) -> RecoveryResult:
    known, offsets = store.known_ids(state)
    landed_ids = set(known.filter(pl.col("landed"))["webhook_id"].to_list())
    now = datetime.now(UTC)
    lines, without_id = _missing_records(attempts, set(known["webhook_id"].to_list()), now)
    segment = store.write_records(list(lines.values()), now)

    refused = store.quarantined_ids()
    failed = [a for a in attempts if not a.success]
    unlogged = [a for a in failed if _envelope_id(a) not in landed_ids and _envelope_id(a) not in refused]
    newest = max((_parse_time(a.sent_at) for a in attempts), default=None)
    new_state = RecoveryState(
        stopped_at=(newest or state.stopped_at_time() or since).isoformat(),
        index_offsets=offsets,
        recovered_at=now.isoformat(),
        recovered=len(lines),
        failed_attempts=len(failed),
        unlogged_failures=len(unlogged),
        unlogged_messages=len({_envelope_id(a) for a in unlogged}),
    )
    store.commit(new_state, known, lines.keys(), deliveries_frame(attempts))
    messages = {i for i in map(_envelope_id, attempts) if i is not None}
    return RecoveryResult(
        hook_id=hook_id,
        since=since,
        pages=pages,
        deliveries=len(attempts),
        failed_attempts=len(failed),
        unlogged_failures=len(unlogged),
        unlogged_messages=new_state.unlogged_messages,
        recovered=len(lines),
        already_stored=len(messages) - len(lines),
        without_id=without_id,
        segment=str(segment) if segment else None,
        seconds=(datetime.now(UTC) - started).total_seconds(),
    )


def _missing_records(attempts: list[Any], known_ids: set[str], now: datetime) -> tuple[dict[str, bytes], int]:
    """Raw-record lines for the messages the raw store lacks (by webhook id), and how many attempts had no id."""
    lines: dict[str, bytes] = {}
    without_id = 0
    for attempt in reversed(attempts):  # oldest first: the earliest attempt of a message is its record
        webhook_id = _envelope_id(attempt)
        if webhook_id is None:
            without_id += 1
        elif webhook_id not in known_ids and webhook_id not in lines:
            body = orjson.dumps(attempt.request_body).decode()
            lines[webhook_id] = encode_raw_record(webhook_id, now, None, SCHEME_DELIVERY_LOG, attempt.event, body)
    return lines, without_id


def deliveries_frame(attempts: list[Any]) -> pl.DataFrame:
    """whop-sdk ``WebhookDelivery`` models as ``webhook_deliveries`` rows (the payload is not kept again)."""
    rows = [
        {
            "delivery_id": a.id,
            "event": a.event,
            "webhook_id": _envelope_id(a),
            "sent_at": _parse_time(a.sent_at),
            "response_code": int(a.response_code),
            "success": bool(a.success),
            "total_time": float(a.total_time),
            "replayed_from": a.replayed_from,
        }
        for a in attempts
    ]
    return pl.DataFrame(rows, schema=WEBHOOK_DELIVERIES.schema)


def _envelope_id(attempt: Any) -> str | None:
    value = attempt.request_body.get("id") if isinstance(attempt.request_body, dict) else None
    return value if isinstance(value, str) and value else None


def _parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
