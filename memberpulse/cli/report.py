"""``memberpulse report``: the analysts' HTML report of the latest snapshot, and where it was written."""

from __future__ import annotations

import argparse

from memberpulse.errors import ExitCode
from memberpulse.flows.report import write_report
from memberpulse.flows.snapshot import parse_companies
from memberpulse.flows.statestore import analysts_snapshots_dir
from memberpulse.settings import Settings


def command(args: argparse.Namespace, settings: Settings) -> int:
    companies = parse_companies(args.company or [])
    print(f"report written: {write_report(analysts_snapshots_dir(settings), args.out, companies=companies)}")
    return ExitCode.OK
