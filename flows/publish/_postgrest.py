"""The API path (``SUPABASE_URL`` + ``SUPABASE_SERVICE_ROLE_KEY``): supabase-py upserts, in batches.

Each batch is one ``POST /rest/v1/<table>?on_conflict=…`` with ``Prefer: resolution=merge-duplicates``,
which PostgREST runs as one transaction. Batches are idempotent, so a failure part-way leaves earlier
batches applied (with the data they would get anyway) and the warehouse state unadvanced: the next run
re-sends every row still pending. 5xx answers, 429 and timeouts are retried with backoff, a bounded number
of times; any other refusal (4xx: bad key, missing table, constraint) is fatal. Every HTTP phase (connect,
write, read, pool) has the timeout ``MEMBERPULSE_PUBLISH_TIMEOUT_SECONDS``, cut to what is left of the publish
deadline, and no request starts past it.

The check before each publish is a row count (``HEAD`` with ``Prefer: count=exact``): the API offers no
aggregate of our own without a database function, so a row edited in place behind our back is not noticed here
(``--full-refresh`` rewrites the table).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

import httpx
import polars as pl
from postgrest import APIError
from postgrest.types import CountMethod, ReturnMethod

from memberpulse.contracts.tables import PIPELINE_RUNS
from memberpulse.contracts.times import UTC_US
from memberpulse.errors import ConfigError, PublishError, PublishUnavailable
from memberpulse.flows.publish._changes import PublishedState
from memberpulse.flows.publish._fingerprint import Fingerprint
from memberpulse.flows.publish._publisher import DEFAULT_PUBLISH_CONFIG, PublishConfig, Publisher, Written
from memberpulse.flows.publish._schema import KEY, MEMBER_ACTIVITY_COLUMNS
from supabase import Client, ClientOptions, create_client

T = TypeVar("T")
_RETRYABLE_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504, 520})
_ISO_UTC: Final = "%Y-%m-%dT%H:%M:%S%.6f+00:00"


def json_rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts: times as ISO 8601 UTC strings, everything else as is."""
    return frame.with_columns(
        pl.col(c).dt.strftime(_ISO_UTC) for c, dtype in frame.schema.items() if dtype == UTC_US
    ).to_dicts()


class PostgrestPublisher(Publisher):
    """Publishes through Supabase's REST API with the service role key (RLS does not apply to it)."""

    target = "postgrest"
    digests = False

    def __init__(
        self,
        url: str,
        service_role_key: str,
        *,
        state: PublishedState,
        config: PublishConfig = DEFAULT_PUBLISH_CONFIG,
        sleep: Callable[[float], None] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {"sleep": sleep} if sleep else {}
        super().__init__(state=state, config=config, **kwargs)
        self.url = url.rstrip("/")
        self._last_status: int | None = None
        # Our own httpx client: a real timeout, and a hook that remembers the last HTTP status, which
        # postgrest-py's APIError does not carry (it is what tells a 503 from a 409).
        # ``transport``: where requests go (default: the network); tests pass an in-process one.
        self._http = httpx.Client(
            timeout=config.timeout_seconds, event_hooks={"response": [self._remember_status]}, transport=transport
        )
        try:
            self._client: Client = create_client(
                self.url,
                service_role_key,
                options=ClientOptions(
                    httpx_client=self._http,
                    postgrest_client_retry=False,  # we retry ourselves, bounded, POSTs included
                    auto_refresh_token=False,
                    persist_session=False,
                ),
            )
        except Exception as exc:  # supabase raises its own SupabaseException for a malformed URL
            self._http.close()
            raise ConfigError(
                f"SUPABASE_URL {self.url!r} is not usable: {exc}",
                variable="SUPABASE_URL",
                hint="use the project URL, e.g. https://<project>.supabase.co",
            ) from None

    def describe(self) -> str:
        return f"PostgREST {self.url}/rest/v1"

    def close(self) -> None:
        self._http.close()

    def _remember_status(self, response: httpx.Response) -> None:
        self._last_status = response.status_code

    def _request(self, action: str, send: Callable[[], T]) -> T:
        """One request, every HTTP phase bounded by the timeout or what is left of the deadline; errors
        translated (transient: retried by the caller; a refusal a person must fix: fatal)."""
        if self._deadline.passed():
            raise self._deadline.unavailable(action, self.describe())
        self._http.timeout = httpx.Timeout(self._deadline.within(self.config.timeout_seconds))
        self._last_status = None
        try:
            return send()
        except httpx.TimeoutException as exc:
            if self._deadline.passed():
                raise self._deadline.unavailable(action, self.describe()) from None
            raise PublishUnavailable(f"{action}: timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise PublishUnavailable(f"{action}: {type(exc).__name__}: {exc}") from None
        except APIError as exc:
            status = self._last_status
            message = f"{action}: HTTP {status}: {exc.message or 'error'} (code {exc.code})"
            if status is None or status in _RETRYABLE_STATUSES:
                raise PublishUnavailable(message) from None
            hint = exc.hint or _hint_for(status, exc.code)
            raise PublishError(message, hint=hint) from None

    def _upsert(self, table: str, rows: list[dict[str, Any]], *, on_conflict: str) -> None:
        action = f"upserting {len(rows)} row(s) into {table}"

        def send() -> None:
            self._client.table(table).upsert(rows, on_conflict=on_conflict, returning=ReturnMethod.minimal).execute()

        self._with_retries(action, lambda: self._request(action, send))

    def _target_fingerprint(self) -> Fingerprint | None:
        """The row count of member_activity (``HEAD``, ``Prefer: count=exact``); None when none comes back."""
        action = "counting member_activity"

        def send() -> int | None:
            query = self._client.table("member_activity").select(KEY, count=CountMethod.exact, head=True)
            return query.execute().count

        count = self._with_retries(action, lambda: self._request(action, send))
        return None if count is None else Fingerprint(count)

    def _upsert_members(self, changed: pl.DataFrame, *, seen_before: int, exact: bool = False) -> Written:
        frame = changed.select(MEMBER_ACTIVITY_COLUMNS)
        size = self.config.batch_size
        for offset in range(0, frame.height, size):
            batch = json_rows(frame.slice(offset, size))
            self._upsert("member_activity", batch, on_conflict=KEY)
        # PostgREST does not say which rows it inserted; the warehouse state (or the check's count) does. Every
        # sent column is overwritten (merge-duplicates), so an upsert is always exact.
        return Written(frame.height - seen_before, seen_before)

    def _upsert_runs(self, rows: list[dict[str, Any]]) -> None:
        frame = pl.DataFrame(rows, schema=PIPELINE_RUNS.schema)
        self._upsert("pipeline_runs", json_rows(frame), on_conflict="run_id")

    def _upsert_failures(self, summary: pl.DataFrame) -> None:
        size = self.config.batch_size
        for offset in range(0, summary.height, size):
            batch = json_rows(summary.slice(offset, size))
            self._upsert("webhook_failures", batch, on_conflict="webhook_id,reason")


def _hint_for(status: int, code: str | None) -> str | None:
    if status in (401, 403):
        return "check SUPABASE_SERVICE_ROLE_KEY (the service_role key, not the anon key)"
    if status == 404 or code == "42P01":
        return "apply the schema first: memberpulse migrate"
    return None
