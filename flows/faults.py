"""Named crash points for the crash-safety tests.

With ``MEMBERPULSE_FAULT_KILL_AT=<name>`` in the environment, the process SIGKILLs itself when it reaches
``kill_point(<name>)`` — no cleanup, no ``finally``, exactly like a power cut or an OOM kill. Unset (always, in
production) it costs one dictionary lookup. Points: ``after_ingest`` (state committed, nothing published),
``publish_before_commit`` (rows sent, transaction open), ``snapshot_before_swap`` (new DuckDB file written,
``latest.duckdb`` not yet replaced).
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "MEMBERPULSE_FAULT_KILL_AT"
KILL_POINTS = ("after_ingest", "publish_before_commit", "snapshot_before_swap")


def kill_point(name: str) -> None:
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
