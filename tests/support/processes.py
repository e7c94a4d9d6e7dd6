"""Finding the processes a command left behind, for the orphan checks."""

from __future__ import annotations

import os
from pathlib import Path


def processes_carrying(marker: str) -> list[int]:
    """Processes whose environment holds ``marker`` (every child of the CLI inherits it)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker.encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found
