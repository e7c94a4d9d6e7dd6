"""Apply ``supabase/migrations/*.sql`` through ``SUPABASE_DB_URL`` (``memberpulse migrate`` says what it did).

The SQL files are the one source of truth; the package reaches them through ``flows/publish/sql``, a
symlink to ``supabase/migrations`` (followed when the package is built). Applied versions are recorded in
``supabase_migrations.schema_migrations``, the table the Supabase CLI itself keeps, so ``supabase db push``
and ``memberpulse migrate`` agree on what is applied. Each file is also idempotent on its own, and runs in
its own transaction under an advisory lock, so concurrent or repeated runs are harmless.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

import psycopg

from memberpulse.errors import ConfigError, InvalidInput
from memberpulse.flows.publish._dsn import mask_dsn, translate_error
from memberpulse.settings import Settings

_FILE_NAME: Final = re.compile(r"^(?P<version>\d{14})_(?P<name>[a-z0-9_]+)\.sql$")
# Any constant works; it only has to be the same for every memberpulse migrator.
_LOCK_KEY: Final = 0x6D656D626572  # "member"
_HISTORY_DDL: Final = """
CREATE SCHEMA IF NOT EXISTS supabase_migrations;
CREATE TABLE IF NOT EXISTS supabase_migrations.schema_migrations (
    version text NOT NULL PRIMARY KEY,
    statements text[],
    name text
);
"""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path

    @property
    def filename(self) -> str:
        return self.path.name

    def read(self) -> str:
        return self.path.read_text(encoding="utf-8")


def migrations_dir() -> Path:
    """Where the SQL lives: ``flows/publish/sql`` (in the repo, a symlink to ``supabase/migrations``; in an
    installed package, the copies the build made), else the repository's ``supabase/migrations``."""
    packaged = Path(str(resources.files("memberpulse.flows.publish") / "sql"))
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "supabase" / "migrations"


def list_migrations(directory: Path | None = None) -> list[Migration]:
    directory = directory or migrations_dir()
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise InvalidInput(
                f"migration file {path.name!r} does not follow the Supabase CLI naming",
                value=path.name,
                hint="name it <YYYYMMDDHHMMSS>_<snake_case_name>.sql",
            )
        found.append(Migration(match["version"], match["name"], path))
    return found


def apply_migrations(dsn: str, *, directory: Path | None = None) -> list[str]:
    """Apply the migrations not yet recorded; return the file names applied, in order (empty if none)."""
    pending = list_migrations(directory)
    applied: list[str] = []
    try:
        with psycopg.connect(dsn, connect_timeout=30, application_name="memberpulse-migrate") as conn:
            for migration in pending:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                    conn.execute(_HISTORY_DDL)
                    done = conn.execute(
                        "SELECT 1 FROM supabase_migrations.schema_migrations WHERE version = %s",
                        (migration.version,),
                    ).fetchone()
                    if done:
                        continue
                    text = migration.read()
                    conn.execute(text.encode())  # no parameters: simple protocol, several statements at once
                    conn.execute(
                        "INSERT INTO supabase_migrations.schema_migrations (version, name, statements)"
                        " VALUES (%s, %s, %s)",
                        (migration.version, migration.name, [text]),
                    )
                    applied.append(migration.filename)
    except psycopg.Error as exc:
        raise translate_error(exc, dsn=dsn, action="applying migrations") from None
    return applied


def applied_versions(dsn: str) -> list[str]:
    """Versions recorded as applied (empty when the history table does not exist yet)."""
    with psycopg.connect(dsn, connect_timeout=30) as conn:
        exists: Any = conn.execute("SELECT to_regclass('supabase_migrations.schema_migrations')").fetchone()
        if not exists or exists[0] is None:
            return []
        rows = conn.execute("SELECT version FROM supabase_migrations.schema_migrations ORDER BY version").fetchall()
        return [str(r[0]) for r in rows]


@dataclass(frozen=True)
class Migrated:
    """What ``memberpulse migrate`` did: the files it applied, in order (none: the schema was up to date), out
    of ``known`` migrations, at ``where`` (the database, password masked)."""

    applied: list[str]
    known: int
    where: str


def migrate(settings: Settings) -> Migrated:
    """Apply the pending migrations through SUPABASE_DB_URL (a ConfigError, exit 2, without it)."""
    if settings.supabase_db_url is None:
        raise ConfigError(
            "memberpulse migrate needs a direct database connection",
            variable="SUPABASE_DB_URL",
            hint="set SUPABASE_DB_URL=postgresql://postgres:PASSWORD@db.<project>.supabase.co:5432/postgres "
            "(Supabase: Project Settings → Database → Connection string), or run `supabase db push`",
        )
    dsn = settings.supabase_db_url.get_secret_value()
    applied = apply_migrations(dsn)
    return Migrated(applied=applied, known=len(list_migrations()), where=mask_dsn(dsn))
