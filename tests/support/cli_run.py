"""``memberpulse run`` in a child process, as a person or a timer starts it: only the settings given (no
``SUPABASE_*`` or ``MEMBERPULSE_*`` leaking in from the test's own environment), its own stderr to read."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Finished:
    code: int
    stderr: str
    seconds: float


def memberpulse_run(data_dir: Path, settings: dict[str, str], *args: str, timeout: float = 120) -> Finished:
    """``python -m memberpulse run *args`` with ``settings`` and the data dir; waits at most ``timeout`` seconds
    (subprocess.TimeoutExpired past it: a run that hangs fails the test instead of holding it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE_", "MEMBERPULSE_"))}
    env |= {"MEMBERPULSE_DATA_DIR": str(data_dir), "MEMBERPULSE_LOG_LEVEL": "WARNING", **settings}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "memberpulse", "run", *args],
        env=env, cwd=data_dir, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    return Finished(done.returncode, done.stderr, time.monotonic() - started)
