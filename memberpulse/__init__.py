"""memberpulse: keep a Whop creator's member activity true, fresh and queryable.

The public surface is small on purpose:

- :class:`memberpulse.settings.Settings` — all configuration, from the environment or ``.env``.
- :mod:`memberpulse.errors` — the one exception hierarchy; transient errors retry, fatal ones stop.

The stages live in their own top-level packages: ``landing`` (webhook intake), ``transforms`` (pure polars),
``flows`` (Prefect flows and the I/O edges: Whop client, publishers, snapshot writer).
"""

from memberpulse.errors import ConfigError, FatalError, MemberpulseError, TransientError
from memberpulse.settings import Settings

__all__ = [
    "ConfigError",
    "FatalError",
    "MemberpulseError",
    "Settings",
    "TransientError",
]
__version__ = "0.1.0"
