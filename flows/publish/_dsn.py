"""The Postgres DSN is a secret: describe it without its password, and map driver errors to ours."""

from __future__ import annotations

import re

import psycopg
from psycopg import conninfo

from memberpulse.errors import ConfigError, PublishError, PublishUnavailable

# libpq's words for a connection string it parsed but cannot use (``sslmode=bogus``): no retry can fix that.
_BAD_CONNINFO = re.compile(r"invalid (\w+ value|connection option|integer value|port number)|unsupported \w+ value")

# SQLSTATE classes where retrying cannot help even though psycopg reports an OperationalError.
_FATAL_SQLSTATE_PREFIXES = ("28", "3D", "42")


def mask_dsn(dsn: str) -> str:
    """``postgresql://user@host:port/dbname`` (no password, no other parameters)."""
    try:
        parts = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        raise ConfigError(
            "SUPABASE_DB_URL is not a valid Postgres connection string",
            variable="SUPABASE_DB_URL",
            hint="use postgresql://USER:PASSWORD@HOST:5432/postgres (Supabase: Project Settings → Database)",
        ) from None
    user = parts.get("user") or "?"
    host = parts.get("host") or parts.get("hostaddr") or "localhost"
    port = parts.get("port") or "5432"
    dbname = parts.get("dbname") or user
    return f"postgresql://{user}@{host}:{port}/{dbname}"


def _scrub(text: str, dsn: str) -> str:
    """Remove the password from a driver message, should the driver ever echo it."""
    try:
        password = conninfo.conninfo_to_dict(dsn).get("password")
    except psycopg.ProgrammingError:
        password = None
    return text.replace(str(password), "***") if password else text


def translate_error(exc: psycopg.Error, *, dsn: str, action: str) -> ConfigError | PublishError | PublishUnavailable:
    """A psycopg error as PublishUnavailable (may heal: retry), PublishError (a person must fix the target) or
    ConfigError (a person must fix SUPABASE_DB_URL)."""
    where = mask_dsn(dsn)
    detail = _scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, dsn)
    sqlstate = exc.sqlstate or ""
    if not sqlstate and _BAD_CONNINFO.search(detail):
        return ConfigError(
            f"{action}: SUPABASE_DB_URL is not usable: {detail}",
            variable="SUPABASE_DB_URL",
            hint="fix the connection string's parameters (Supabase: Project Settings → Database)",
        )
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return PublishUnavailable(
            f"{action} at {where}: {detail}",
            hint="another session holds a lock on the table (raise MEMBERPULSE_PUBLISH_LOCK_TIMEOUT_SECONDS to wait"
            " longer); the next run re-sends everything pending",
        )
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return PublishError(f"{action} at {where}: {detail}", hint="apply the schema: memberpulse migrate")
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return PublishError(
            f"{action} at {where}: {detail}",
            hint="connect as the database owner or a role granted service_role (Supabase: the postgres user)",
        )
    if isinstance(exc, psycopg.OperationalError) and not sqlstate.startswith(_FATAL_SQLSTATE_PREFIXES):
        if "password authentication failed" in detail or "does not exist" in detail:
            return PublishError(f"{action} at {where}: {detail}", hint="check SUPABASE_DB_URL's credentials")
        return PublishUnavailable(f"{action} at {where}: {detail}", hint="is the database up and reachable?")
    return PublishError(f"{action} at {where}: {detail} (SQLSTATE {sqlstate or 'unknown'})")
