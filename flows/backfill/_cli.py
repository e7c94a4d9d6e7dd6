"""``memberpulse backfill``: one flow run in Prefect's ephemeral mode, with progress and a one-line result."""

from __future__ import annotations

import logging
import sys
from urllib.parse import urlsplit, urlunsplit

from memberpulse.errors import ExitCode, MemberpulseError
from memberpulse.flows.backfill._flow import backfill
from memberpulse.flows.backfill._progress import LineProgress, RichProgress, rate, reporting
from memberpulse.flows.whop import backfill_skip_reason, latest_snapshot
from memberpulse.settings import Settings


def run_once(settings: Settings) -> int:
    """``memberpulse backfill``: one flow run in Prefect's ephemeral mode. Exit 0 done or skipped, 2 a setting
    to fix (bad credentials, bad config), 3 Whop stayed unavailable (run it again later)."""
    reason = backfill_skip_reason(settings)
    if reason is not None:
        print(f"memberpulse backfill: {reason}; nothing fetched, no snapshot written.")
        return ExitCode.OK
    interactive = sys.stdout.isatty()
    progress: RichProgress | LineProgress = RichProgress() if interactive else LineProgress()
    assert settings.whop_company_id is not None
    print(f"memberpulse backfill: company {settings.whop_company_id.strip()} from {_safe_url(settings)}")
    # Our own lines say what failed and how to fix it; Prefect's failure tracebacks would only bury them.
    prefect_logger = logging.getLogger("prefect")
    previous_level = prefect_logger.level
    prefect_logger.setLevel(logging.CRITICAL)
    try:
        with reporting(progress):
            if isinstance(progress, RichProgress):
                with progress:
                    result = backfill(settings)
            else:
                result = backfill(settings)
    except MemberpulseError as exc:  # 2: bad credentials or configuration; 3: Whop stayed unavailable
        return _failed(settings, exc)
    finally:
        prefect_logger.setLevel(previous_level)
    if result.snapshot is None:
        print(f"memberpulse backfill: {result.message}")
        return ExitCode.OK
    counts = ", ".join(f"{r.records:,} {r.resource}" for r in result.resources.values())
    print(
        f"memberpulse backfill: wrote {result.snapshot.path} ({counts}) in {result.seconds:.1f} s, "
        f"{rate(result.records, result.seconds)}"
    )
    if result.recovery_note:
        print(f"memberpulse backfill: {result.recovery_note}", file=sys.stderr if result.recovery_error else sys.stdout)
    return result.recovery_error.exit_code if result.recovery_error else ExitCode.OK


def _safe_url(settings: Settings) -> str:
    """The base URL without any ``user:password@`` part (secrets never reach output)."""
    url = urlsplit(settings.whop_api_base_url)
    if url.username is None and url.password is None:
        return settings.whop_api_base_url
    host = url.hostname or ""
    return urlunsplit(url._replace(netloc=f"{host}:{url.port}" if url.port else host))


def _failed(settings: Settings, exc: MemberpulseError) -> int:
    print(f"memberpulse backfill: {exc}", file=sys.stderr)
    previous = latest_snapshot(settings.warehouse_dir)
    if previous is not None:
        print(f"memberpulse backfill: no snapshot written; the latest is still {previous.path}", file=sys.stderr)
    else:
        print("memberpulse backfill: no snapshot written", file=sys.stderr)
    return exc.exit_code
