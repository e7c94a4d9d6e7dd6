"""``memberpulse migrate``: apply the pending Supabase migrations and say what happened (the password masked)."""

from __future__ import annotations

import argparse
import sys

from memberpulse.errors import ExitCode
from memberpulse.flows.publish import migrate
from memberpulse.settings import Settings


def command(args: argparse.Namespace, settings: Settings) -> int:
    done = migrate(settings)
    if done.applied:
        for name in done.applied:
            print(f"applied {name}")
        print(f"{len(done.applied)} migration(s) applied to {done.where}")
    else:
        print(f"schema up to date at {done.where} ({done.known} migration(s) already applied)")
    sys.stdout.flush()
    return ExitCode.OK
