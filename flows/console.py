"""What a person sees when running a flow from the terminal: Prefect kept quiet, our own lines kept."""

from __future__ import annotations

import logging
import os


def quiet_prefect() -> None:
    """Keep Prefect's own chatter (engine start-up, ephemeral server) out of a CLI run; our lines stay.

    Prefect reads its settings from the environment when it is first imported, so the CLI calls this before
    importing any flow. Each value is only a default: the environment still wins.
    """
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The ephemeral API starts in a subprocess and migrates its SQLite database on first use; on a busy
    # 2-core machine that can take longer than Prefect's default 20 s.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    logging.getLogger("prefect").setLevel(logging.WARNING)
