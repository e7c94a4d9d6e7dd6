"""Every error memberpulse raises, in one place.

Two branches decide what happens next, the way httpx separates transport errors from status errors:

- :class:`TransientError` — the outside world may heal (Whop rate limit, a 5xx, a timeout, Postgres down,
  a full disk). Flows retry these with backoff; the landing answers 503 so Whop retries.
- :class:`FatalError` — retrying cannot help (bad credentials, bad configuration, bad input).
  Flows stop at once with the message; the CLI exits non-zero.

Each error carries the offending value where there is one and a ``hint`` saying how to fix it
("set WHOP_COMPANY_ID"), and the ``exit_code`` the CLI ends with when it stops a command (:class:`ExitCode`:
transient 3, fatal 2, anything else 1). Messages never contain secrets.
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar


class ExitCode(IntEnum):
    """What ``memberpulse`` exits with."""

    OK = 0
    FAILED = 1  # the job ran and failed (e.g. send-test got a non-200 answer)
    CONFIG = 2  # a person must fix something: usage, configuration, credentials, input
    TRANSIENT = 3  # the outside world may heal: run it again later
    INTERRUPTED = 130  # 128 + SIGINT: Ctrl-C, as a shell reports it
    OUTPUT_CLOSED = 141  # 128 + SIGPIPE: the reader of standard output stopped early (`... | head`)


#: The code a fan-out exits with for its failures of each kind (``memberpulse.flows.companies.FailureKind``, in
#: the order the most pressing is chosen): a setting or a company to fix, something unexpected, try again later.
FAILURE_KIND_CODES: dict[str, ExitCode] = {
    "configuration": ExitCode.CONFIG,
    "failed": ExitCode.FAILED,
    "transient": ExitCode.TRANSIENT,
}


class MemberpulseError(Exception):
    """Base of every memberpulse error."""

    exit_code: ClassVar[ExitCode] = ExitCode.FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


# --- transient: retry -------------------------------------------------------------------------------------


class TransientError(MemberpulseError):
    """The operation may succeed if retried later.

    ``retry_soon``: a flow task may retry it after a short backoff. False when the code that raised it
    already spent its own bounded retries, so a task retry would only multiply them.
    """

    exit_code = ExitCode.TRANSIENT
    retry_soon: ClassVar[bool] = True


class StorageUnavailable(TransientError):
    """The raw store could not make a record durable (disk full, I/O error)."""


class WhopUnavailable(TransientError):
    """Whop's API answered 5xx, timed out, or the connection failed."""


class WhopRateLimited(WhopUnavailable):
    """Whop's API answered 429; ``retry_after`` is how long it asked us to wait, in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class PublishUnavailable(TransientError):
    """The publish target (Postgres or PostgREST) is unreachable or answered 5xx."""


class RunInProgress(TransientError):
    """Another run holds this data dir's lock; this one can simply run again later."""


class WhopGaveUp(TransientError):
    """Whop's API kept failing past the client's retry bounds; carries company, page and last status.

    Transient (Whop may heal: run the backfill again later), but never retried by a task: the client
    already retried that page as long as its policy allows.
    """

    retry_soon = False

    def __init__(
        self,
        message: str,
        *,
        company_id: str | None = None,
        page: int | None = None,
        last_status: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.company_id = company_id
        self.page = page
        self.last_status = last_status


# --- fatal: stop ------------------------------------------------------------------------------------------


class FatalError(MemberpulseError):
    """Retrying cannot help; a person has to change something."""

    exit_code = ExitCode.CONFIG


class ConfigError(FatalError):
    """A setting is missing or invalid; ``variable`` names the environment variable to fix."""

    def __init__(self, message: str, *, variable: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint or (f"set {variable}" if variable else None))
        self.variable = variable


class WhopAuthError(FatalError):
    """Whop's API refused the credentials (401/403)."""


class PublishError(FatalError):
    """The publish target rejected the data (schema mismatch, constraint, permission)."""


class CorruptState(FatalError):
    """A file memberpulse keeps for itself (warehouse manifest, state, published rows) cannot be read;
    ``path`` names it. The hint says how to rebuild it."""

    def __init__(self, message: str, *, path: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = path


class InvalidInput(FatalError):
    """A value handed to memberpulse is malformed; ``value`` is the offending value (never a secret)."""

    def __init__(self, message: str, *, value: object = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.value = value


__all__ = [
    "FAILURE_KIND_CODES",
    "ConfigError",
    "CorruptState",
    "ExitCode",
    "FatalError",
    "Interrupted",
    "InvalidInput",
    "MemberpulseError",
    "OutputClosed",
    "PublishError",
    "PublishUnavailable",
    "QueryError",
    "RunInProgress",
    "StorageUnavailable",
    "TransientError",
    "WhopAuthError",
    "WhopGaveUp",
    "WhopRateLimited",
    "WhopUnavailable",
]


# --- the job ran and failed: exit 1 -----------------------------------------------------------------------


class QueryError(MemberpulseError):
    """An analyst's query against a snapshot failed (DuckDB's message) or was refused (it would write)."""


# --- the reader went away: exit 141, quietly -----------------------------------------------------------------


class OutputClosed(MemberpulseError):
    """Standard output was closed before the command finished writing to it (``memberpulse sql ... | head``).

    Not a failure to report: the CLI prints nothing more and exits 141, what a shell shows for a tool that
    SIGPIPE stopped (``cat big.csv | head``), so a script under ``set -o pipefail`` sees it the same way.
    """

    exit_code = ExitCode.OUTPUT_CLOSED


# --- a person stopped it: exit 130 --------------------------------------------------------------------------


class Interrupted(MemberpulseError):
    """Ctrl-C stopped a command that can say what it kept (``memberpulse run``: whether its ingest was
    committed, and where the next run starts); the message says so, in one line."""

    exit_code = ExitCode.INTERRUPTED
