"""Page-by-page reads of Whop's memberships and members through the official whop-sdk, with our own retries.

Why page by page: the SDK's pager (``for m in client.memberships.list(...)``) cannot be resumed once a
page fails; calling ``list(first=..., after=cursor)`` ourselves lets a retry ask for the same page again and
lets us count pages.
Why ``max_retries=0`` on the SDK: its built-in retry (2 tries on 408/409/429/5xx, at most 60 s,
``Retry-After`` but not Whop's "Try again in N seconds" body) would nest inside ours, multiplying attempts and
hiding waits from our bounds; with it off, every HTTP attempt is counted and every wait is ours.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any, Final, TypeVar

import httpx
from whop_sdk import Whop
from whop_sdk.core.api_error import ApiError
from whop_sdk.core.parse_error import ParsingError
from whop_sdk.environment import WhopEnvironment

from memberpulse.errors import ConfigError, WhopAuthError, WhopGaveUp
from memberpulse.flows.whop._rate_limit import RequestLimiter
from memberpulse.flows.whop._records import Resource
from memberpulse.flows.whop._retry import RetryPolicy, retry_after_seconds
from memberpulse.settings import Settings, default_settings

log = logging.getLogger("memberpulse.backfill")
T = TypeVar("T")

# Whop may answer 429 with "Try again in 0 seconds"; never hammer it faster than this.
MIN_RATE_LIMIT_WAIT = 0.1
_COMPANY_VARS = "WHOP_COMPANY_ID (or NEXT_PUBLIC_WHOP_COMPANY_ID)"
_KEPT = {
    "backfill": "the previous snapshot stays latest",
    "recover": "nothing was written",
    "send-test": "nothing sent",
}


@dataclass(frozen=True)
class WhopClientConfig:
    """How the client reads Whop: MEMBERPULSE_WHOP_PAGE_SIZE, _WHOP_TIMEOUT_SECONDS, _WHOP_MAX_PAGES and the
    retry policy, as :meth:`from_settings` reads them (their defaults and bounds are on the Settings fields)."""

    page_size: int
    timeout_seconds: float  # of one HTTP request
    retry: RetryPolicy
    max_pages: int  # of one listing: past it the cursor is taken as endless

    @classmethod
    def from_settings(cls, settings: Settings) -> WhopClientConfig:
        return cls(
            page_size=settings.whop_page_size,
            timeout_seconds=settings.whop_timeout_seconds,
            retry=RetryPolicy.from_settings(settings),
            max_pages=settings.whop_max_pages,
        )


#: The config with every setting at its default: what a client made without one reads Whop with.
DEFAULT_WHOP_CLIENT_CONFIG: Final = WhopClientConfig.from_settings(default_settings())


@dataclass(frozen=True)
class Page:
    """One page of a list endpoint: the SDK's parsed models (``Membership`` or ``Member`` of whop_sdk)."""

    resource: Resource
    number: int  # 1-based
    items: Sequence[Any]
    end_cursor: str | None
    has_next: bool
    attempts: int


@dataclass(frozen=True)
class RetryEvent:
    """A page attempt failed and will be retried after ``wait`` seconds (for progress output and logs)."""

    resource: str  # a Resource for the backfill; what else was asked (e.g. "deliveries") otherwise
    page: int
    attempt: int
    status: int | None  # HTTP status, None for a timeout or a connection error
    reason: str
    wait: float
    company_id: str = ""


def backfill_skip_reason(settings: Settings) -> str | None:
    """Why a backfill cannot run with these settings (a run without backfill settings skips it and says so), or
    None. Only a key is needed: with an app's key alone, the companies come from the webhooks that landed."""
    default = settings.whop_api_key
    if (default is None or not default.get_secret_value().strip()) and not settings.company_api_keys:
        return (
            f"backfill skipped: WHOP_API_KEY and {_COMPANY_VARS} not set (the Whop API backfill needs a key, and "
            "companies: listed, or seen in landed webhooks)"
        )
    return None


@dataclass
class _Tries:
    """How one page has fared so far."""

    attempts: int = 0  # 5xx / timeout / connection attempts
    rate_limited: int = 0
    waited_for_rate_limit: float = 0.0


class WhopBackfillClient:
    """Reads every page of one company's memberships or members. Use as a context manager (closes the
    connection pool). Raises :class:`WhopAuthError` at once on 401/403 and :class:`WhopGaveUp` past the
    retry bounds; never puts the API key in a message."""

    def __init__(
        self,
        *,
        api_key: str,
        company_id: str,
        base_url: str,
        config: WhopClientConfig = DEFAULT_WHOP_CLIENT_CONFIG,
        on_retry: Callable[[RetryEvent], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
        job: str = "backfill",
        limiter: RequestLimiter | None = None,
    ) -> None:
        self.company_id = company_id
        self._limiter = limiter  # takes a turn of the key's request budget before every HTTP attempt
        self.base_url = base_url.rstrip("/")
        self.config = config
        self.page_size = config.page_size
        self.timeout = config.timeout_seconds
        self.policy = config.retry
        self._on_retry = on_retry
        self._sleep = sleep
        self._job = job  # what the hints tell a person to run again later
        # ``transport``: where requests go (default: the network); tests pass an in-process one.
        self._http = httpx.Client(timeout=self.timeout, follow_redirects=True, transport=transport)
        vault = WhopEnvironment.PRODUCTION.vault if self.base_url == WhopEnvironment.PRODUCTION.api else base_url
        self._sdk = Whop(
            token=api_key,
            environment=WhopEnvironment(api=self.base_url, vault=vault),
            timeout=self.timeout,
            max_retries=0,
            httpx_client=self._http,
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        company_id: str | None = None,
        on_retry: Callable[[RetryEvent], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
        job: str = "backfill",
        limiter: RequestLimiter | None = None,
    ) -> WhopBackfillClient:
        """A client for ``company_id`` (default: the first company the settings list), with its key."""
        reason = backfill_skip_reason(settings)
        if reason is not None:
            raise ConfigError(reason, variable="WHOP_API_KEY")
        company = company_id or next(iter(settings.listed_companies), None)
        if company is None:
            raise ConfigError(
                f"no company to read: {_COMPANY_VARS} and WHOP_COMPANY_IDS are not set", variable="WHOP_COMPANY_ID"
            )
        key = settings.whop_key_for(company)
        if key is None:
            raise ConfigError(
                f"no API key reads company {company}: WHOP_API_KEY is not set and WHOP_COMPANY_API_KEYS has none "
                "for it",
                variable="WHOP_COMPANY_API_KEYS",
                hint=f"add {company}=<its API key> to WHOP_COMPANY_API_KEYS, set WHOP_API_KEY, or leave it out "
                f"with -{company} in WHOP_COMPANY_IDS",
            )
        return cls(
            api_key=key.get_secret_value().strip(),
            company_id=company,
            base_url=settings.whop_api_base_url,
            config=WhopClientConfig.from_settings(settings),
            on_retry=on_retry,
            sleep=sleep,
            transport=transport,
            job=job,
            limiter=limiter,
        )

    def __enter__(self) -> WhopBackfillClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- pages ---------------------------------------------------------------------------------------------
    def pages(self, resource: Resource) -> Iterator[Page]:
        """Every page, first to last (see :meth:`cursor_pages` for when it stops and what it refuses)."""
        for number, pager, attempts in self.cursor_pages(resource, lambda after: self._list(resource, after)):
            yield self._page(resource, number, pager, attempts)

    def cursor_pages(
        self, what: str, request: Callable[[str | None], Any], *, not_found: ConfigError | None = None
    ) -> Iterator[tuple[int, Any, int]]:
        """(page number, whop-sdk page, HTTP attempts) of one cursor listing, ``request(after)`` fetching one
        page through :meth:`call`. Stops when Whop says there is no next page (no ``end_cursor`` — what the
        SDK's pager checks — or ``has_next_page`` false) or a page comes back empty. Never trusts the cursor:
        one that comes back (A→A, A→B→A) or a listing past MEMBERPULSE_WHOP_MAX_PAGES is WhopGaveUp (exit 3)
        naming ``what`` and the cursor, instead of paging until killed."""
        after: str | None = None
        seen: dict[str, int] = {}  # cursor -> the page that handed it out
        number = 1
        while True:
            pager, attempts = self.call(what, number, partial(request, after), not_found=not_found)
            yield number, pager, attempts
            page_info = pager.response.page_info
            end = page_info.end_cursor or None
            if end is None or not page_info.has_next_page or not pager.items:
                return
            if end in seen:
                raise self._runaway(what, number, end, f"handed out again (first by page {seen[end]}): it cycles")
            if number >= self.config.max_pages:
                raise self._runaway(what, number, end, f"still has a next page after {number} pages")
            seen[end] = number
            after = end
            number += 1

    def _runaway(self, what: str, number: int, cursor: str, detail: str) -> WhopGaveUp:
        return WhopGaveUp(
            f"stopped reading Whop {what} for company {self.company_id} at page {number}: cursor {cursor[:80]!r} "
            f"{detail}",
            company_id=self.company_id,
            page=number,
            last_status=200,
            hint=f"Whop's API is paging without end; run the {self._job} later "
            f"({_KEPT.get(self._job, 'nothing was written')}), or raise MEMBERPULSE_WHOP_MAX_PAGES "
            f"(now {self.config.max_pages}) if the company really has more",
        )

    def fetch_page(self, resource: Resource, *, after: str | None, number: int) -> Page:
        """One page, retried within the policy's bounds."""
        pager, attempts = self.call(resource, number, lambda: self._list(resource, after))
        return self._page(resource, number, pager, attempts)

    @staticmethod
    def _page(resource: Resource, number: int, pager: Any, attempts: int) -> Page:
        page_info = pager.response.page_info
        end_cursor = page_info.end_cursor or None
        items: Sequence[Any] = pager.items or []
        return Page(
            resource=resource,
            number=number,
            items=items,
            end_cursor=end_cursor,
            has_next=end_cursor is not None and bool(page_info.has_next_page),
            attempts=attempts,
        )

    @property
    def sdk(self) -> Whop:
        """The whop-sdk client (its own retries off): pass calls on it through :meth:`call`."""
        return self._sdk

    def call(
        self, what: str, number: int, request: Callable[[], T], *, not_found: ConfigError | None = None
    ) -> tuple[T, int]:
        """``request()`` (one whop-sdk call) retried within the policy's bounds, and the HTTP attempts it took.
        ``what``/``number`` name it in messages (``memberships`` page 3); ``not_found`` is the error a 404
        means (default: a wrong WHOP_API_BASE_URL)."""
        tries = _Tries()
        while True:
            tries.attempts += 1
            if self._limiter is not None:
                self._limiter.acquire()
            try:
                return request(), tries.attempts + tries.rate_limited
            except ApiError as exc:
                if exc.status_code == 404 and not_found is not None:
                    raise not_found from None
                self._after_api_error(exc, what, number, tries)
            except ParsingError as exc:
                raise self._gave_up(
                    what,
                    number,
                    exc.status_code,
                    "the response did not match whop-sdk's model",
                    hint="upgrade whop-sdk; Whop may have changed the response shape",
                ) from None
            except httpx.TimeoutException:
                self._backoff_or_give_up(what, number, tries.attempts, None, f"timed out after {self.timeout:g} s")
            except httpx.TransportError as exc:
                reason = f"connection error ({type(exc).__name__})"
                self._backoff_or_give_up(what, number, tries.attempts, None, reason)

    def _after_api_error(self, exc: ApiError, resource: str, number: int, tries: _Tries) -> None:
        """Wait before the next try, or raise the error this answer calls for."""
        # 2.6.0's list endpoints raise typed errors only for 400/401/403/404 and a bare ApiError for
        # 429/5xx (other endpoints raise TooManyRequestsError, an ApiError too): decide by status.
        status = exc.status_code or 0
        if status in (401, 403):
            raise self._auth_error(resource, status) from None
        if status == 429:
            tries.attempts -= 1  # 429s have their own bound: the summed wait
            self._wait_for_rate_limit(exc, resource, number, tries)
            return
        if status == 404:
            raise ConfigError(
                f"Whop answered 404 for {self.base_url}/{resource} of company {self.company_id}: the base URL "
                "looks wrong, or the company is not reachable",
                variable="WHOP_API_BASE_URL",
                hint="set WHOP_API_BASE_URL to the API root, e.g. https://api.whop.com/api/v1 (when only this "
                f"company answers 404, it is gone: leave it out with -{self.company_id} in WHOP_COMPANY_IDS)",
            ) from None
        if not (status >= 500 or status in (408, 409) or 200 <= status < 300):
            raise self._gave_up(resource, number, status, f"Whop answered {status}, not retryable") from None
        # 5xx, 408/409, or a 2xx whose body was not JSON (a cut connection): worth another try.
        reason = f"HTTP {status}" if status >= 300 else "unreadable response body"
        self._backoff_or_give_up(resource, number, tries.attempts, status, reason)

    def _wait_for_rate_limit(self, exc: ApiError, resource: str, number: int, tries: _Tries) -> None:
        """Wait as long as a 429 asked (at least MIN_RATE_LIMIT_WAIT), unless that passes the summed bound."""
        tries.rate_limited += 1
        told = retry_after_seconds(exc.headers, exc.body)
        wait = max(MIN_RATE_LIMIT_WAIT, told if told is not None else self.policy.backoff(tries.rate_limited))
        if tries.waited_for_rate_limit + wait > self.policy.max_rate_limit_wait:
            raise self._gave_up(
                resource,
                number,
                429,
                f"still rate limited after {tries.rate_limited} answers and "
                f"{tries.waited_for_rate_limit:.1f} s of waiting; the next wait ({wait:.1f} s) would "
                f"pass the {self.policy.max_rate_limit_wait:g} s bound",
                hint=f"run the {self._job} later, or raise MEMBERPULSE_WHOP_MAX_RATE_LIMIT_WAIT_SECONDS",
            ) from None
        tries.waited_for_rate_limit += wait
        self._retry(resource, number, tries.rate_limited, 429, "rate limited", wait)

    # --- internals -----------------------------------------------------------------------------------------
    def _list(self, resource: Resource, after: str | None) -> Any:
        api = self._sdk.memberships if resource == "memberships" else self._sdk.members
        return api.list(account_id=self.company_id, first=self.page_size, after=after)

    def _backoff_or_give_up(self, resource: str, number: int, attempts: int, status: int | None, reason: str) -> None:
        if attempts >= self.policy.max_attempts:
            raise self._gave_up(resource, number, status, f"{reason} on all {attempts} attempts")
        self._retry(resource, number, attempts, status, reason, self.policy.backoff(attempts))

    def _retry(self, resource: str, number: int, attempt: int, status: int | None, reason: str, wait: float) -> None:
        event = RetryEvent(resource, number, attempt, status, reason, wait, self.company_id)
        log.warning("whop %s page %d: %s; retrying in %.2f s (attempt %d)", resource, number, reason, wait, attempt)
        if self._on_retry is not None:
            self._on_retry(event)
        self._sleep(wait)

    def _gave_up(
        self, resource: str, number: int, status: int | None, detail: str, *, hint: str | None = None
    ) -> WhopGaveUp:
        last = f"last status {status}" if status else "last status: no HTTP answer"
        return WhopGaveUp(
            f"gave up fetching Whop {resource} for company {self.company_id} at page {number}: {detail} ({last})",
            company_id=self.company_id,
            page=number,
            last_status=status,
            hint=hint or f"Whop seems down; run the {self._job} later ({_KEPT.get(self._job, 'nothing was written')})",
        )

    def _auth_error(self, resource: str, status: int) -> WhopAuthError:
        if status == 401:
            return WhopAuthError(
                f"Whop rejected the API key (401) reading {resource} of company {self.company_id}",
                hint="set WHOP_API_KEY to a valid company API key (Whop dashboard → Developer → API keys)",
            )
        return WhopAuthError(
            f"Whop refused access to company {self.company_id} (403) reading {resource}: not reachable with its key",
            hint=f"check {_COMPANY_VARS} or WHOP_COMPANY_IDS names a company its key (WHOP_API_KEY, or its own in "
            "WHOP_COMPANY_API_KEYS) may read memberships and members of; a company that uninstalled your app "
            f"answers so: leave it out with -{self.company_id} in WHOP_COMPANY_IDS",
        )
