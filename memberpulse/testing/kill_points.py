"""Kill a memberpulse process at a named checkpoint, like a power cut or an OOM kill: for crash-safety tests.

The product announces its checkpoints as audit events (:mod:`memberpulse.contracts.checkpoints`) and never
reads this module's variable. Run a command with the kill point armed::

    MEMBERPULSE_FAULT_KILL_AT=after_ingest python -m memberpulse.testing.kill_points run --as-of ...

This installs an audit hook that SIGKILLs the process when the named checkpoint is reached (no cleanup, no
``finally``), then runs the ``memberpulse`` CLI with the remaining arguments. ``MEMBERPULSE_FAULT_SIGNAL=SIGINT``
sends that signal instead (a person's Ctrl-C at that moment).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Final

from memberpulse.contracts.checkpoints import AUDIT_EVENT, CHECKPOINTS, SHARED_STATE_CHECKPOINTS

FAULT_ENV: Final = "MEMBERPULSE_FAULT_KILL_AT"
SIGNAL_ENV: Final = "MEMBERPULSE_FAULT_SIGNAL"
#: ``MEMBERPULSE_FAULT_PAUSE_AT=<checkpoint>`` with ``MEMBERPULSE_FAULT_PAUSE_FILE=<path>``: at the checkpoint the
#: process creates ``<path>.reached`` and waits until ``<path>`` exists (a test holds it there, deterministically).
PAUSE_ENV: Final = "MEMBERPULSE_FAULT_PAUSE_AT"
PAUSE_FILE_ENV: Final = "MEMBERPULSE_FAULT_PAUSE_FILE"
KILL_POINTS: Final = CHECKPOINTS  # a local run reaches every one of them
ALL_POINTS: Final = (*CHECKPOINTS, *SHARED_STATE_CHECKPOINTS)


def install(point: str, signum: int = signal.SIGKILL) -> None:
    """From now on, this process sends itself ``signum`` (SIGKILL) on reaching checkpoint ``point``."""
    if point not in ALL_POINTS:
        raise ValueError(f"unknown kill point {point!r}; one of: {', '.join(ALL_POINTS)}")

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event == AUDIT_EVENT and args == (point,):
            os.kill(os.getpid(), signum)

    sys.addaudithook(hook)


def install_pause(point: str, gate: Path) -> None:
    """From now on, this process waits at checkpoint ``point`` until ``gate`` exists (announcing it arrived)."""
    if point not in ALL_POINTS:
        raise ValueError(f"unknown pause point {point!r}; one of: {', '.join(ALL_POINTS)}")

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event == AUDIT_EVENT and args == (point,):
            gate.with_name(gate.name + ".reached").touch()
            while not gate.exists():
                time.sleep(0.02)

    sys.addaudithook(hook)


def main(argv: list[str] | None = None) -> int:
    point = os.environ.get(FAULT_ENV)
    if point:
        install(point, signal.Signals[os.environ.get(SIGNAL_ENV, "SIGKILL")])
    pause = os.environ.get(PAUSE_ENV)
    if pause:
        install_pause(pause, Path(os.environ[PAUSE_FILE_ENV]))
    from memberpulse.cli import main as cli_main

    return cli_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
