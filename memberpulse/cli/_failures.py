"""The table both fan-outs (``backfill``, ``recover``) end with when some company failed: each with the code it
alone would exit with and why, on standard error, then what happens next."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from rich.console import Console
from rich.table import Table

from memberpulse.errors import FAILURE_KIND_CODES
from memberpulse.flows.companies import CompanyFailure


def print_failures(
    command: str, title: str, first_column: str, failures: Mapping[str, CompanyFailure], after: str
) -> None:
    table = Table(title=title, title_justify="left")
    table.add_column(first_column, no_wrap=True)
    table.add_column("exit", justify="right")
    table.add_column("why")
    for unit, failure in sorted(failures.items()):
        table.add_row(unit, str(int(FAILURE_KIND_CODES[failure.kind])), failure.reason)
    Console(stderr=True).print(table)
    print(f"memberpulse {command}: {after}", file=sys.stderr)
