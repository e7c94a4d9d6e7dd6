"""memberpulse: keep a Whop creator's member activity true, fresh and queryable.

The public surface is small on purpose:

- :class:`memberpulse.settings.Settings` — all configuration, from the environment or ``.env``.
- :mod:`memberpulse.errors` — the one exception hierarchy; transient errors retry, fatal ones stop.

The stages are ``memberpulse.landing`` (webhook intake), ``memberpulse.transforms`` (pure polars) and
``memberpulse.flows`` (Prefect flows and the I/O edges: Whop client, publishers, snapshot writer); why their
folders sit at the repository's top level: docs/architecture.md.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from memberpulse.errors import ConfigError, FatalError, MemberpulseError, TransientError
from memberpulse.settings import Settings

__all__ = [
    "ConfigError",
    "FatalError",
    "MemberpulseError",
    "Settings",
    "TransientError",
]

try:  # pyproject.toml is the one source of the version; the installed metadata carries it
    __version__ = _version("memberpulse")
except PackageNotFoundError:  # imported from a checkout that was never installed
    __version__ = "0+unknown"
