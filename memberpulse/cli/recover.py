"""``memberpulse recover [--since ISO8601] [--replay]``: one recovery from Whop's delivery log, its progress
shown (a live line on a terminal, plain lines in logs and pipes), and a one-line result."""

from __future__ import annotations

import argparse
import contextlib
import sys
from datetime import datetime
from typing import TextIO

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from memberpulse.cli._failures import print_failures
from memberpulse.errors import FAILURE_KIND_CODES, ExitCode, MemberpulseError
from memberpulse.flows.recover import recover
from memberpulse.flows.statestore import shared_state
from memberpulse.flows.whop import RetryEvent
from memberpulse.settings import Settings


def command(args: argparse.Namespace, settings: Settings) -> int:
    return run_once(settings, since=args.since, replay=args.replay)


class LineProgress:
    """Plain lines (logs, pipes): one per page of the delivery log, one per retry."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def page(self, hook_id: str, pages: int, deliveries: int, oldest: datetime | None) -> None:
        back_to = f", back to {oldest.isoformat()}" if oldest else ""
        print(
            f"memberpulse recover: {hook_id} page {pages}, {deliveries} delivery attempt(s) in the window{back_to}",
            file=self.out,
        )

    def retry(self, event: RetryEvent) -> None:
        line = f"{event.resource} page {event.page}: {event.reason}; retrying in {event.wait:.1f} s"
        print(f"memberpulse recover: {line}", file=self.out)


class RichProgress(LineProgress):
    """A live line on a terminal: pages and attempts read, how far back, elapsed time."""

    def __init__(self) -> None:
        super().__init__()
        self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=Console())
        self.task = self.bar.add_task("reading Whop's delivery log", total=None)

    def page(self, hook_id: str, pages: int, deliveries: int, oldest: datetime | None) -> None:
        back_to = f", back to {oldest:%Y-%m-%d %H:%M}" if oldest else ""
        line = f"{hook_id}'s delivery log: {pages} page(s), {deliveries} attempt(s){back_to}"
        self.bar.update(self.task, description=line)

    def retry(self, event: RetryEvent) -> None:
        self.bar.console.print(
            f"[yellow]{event.resource} page {event.page}: {event.reason}; retrying in {event.wait:.1f} s"
        )


def run_once(settings: Settings, *, since: datetime | None, replay: bool) -> int:
    """Exit 0 done, 2 a setting to fix (named), 3 Whop stayed unavailable (nothing written; run it again)."""
    progress = RichProgress() if sys.stdout.isatty() else LineProgress()
    try:
        with shared_state(settings, "recover"):  # the storage URL set: lease, cache, one tree commit
            shown = progress.bar if isinstance(progress, RichProgress) else contextlib.nullcontext()
            with shown:
                result = recover(settings, since=since, replay=replay, on_page=progress.page, on_retry=progress.retry)
    except MemberpulseError as exc:
        print(f"memberpulse recover: {exc}", file=sys.stderr)
        if exc.exit_code == ExitCode.TRANSIENT:
            print("memberpulse recover: nothing written; run it again later", file=sys.stderr)
        return exc.exit_code
    print(f"memberpulse recover: {result.summary()}")
    if result.recovered:
        print("memberpulse recover: the next `memberpulse run` folds them in")
    if result.failure_kind is None:
        return ExitCode.OK
    print_failures(
        "recover", f"{len(result.failures)} company(ies) or webhook(s) not read", "company or webhook",
        result.failures, "the others' events are stored; a webhook not read is read again by the next recovery "
        "from where it was last read",
    )  # fmt: skip
    return FAILURE_KIND_CODES[result.failure_kind]
