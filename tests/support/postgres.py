"""A real, throwaway PostgreSQL server for tests and benchmarks: ``initdb`` + ``pg_ctl`` in a temp dir.

Binaries are found in this order: ``$MEMBERPULSE_PG_BINDIR``, ``pg_config --bindir``, the newest
``/usr/lib/postgresql/*/bin``, ``PATH``, and finally the server bundled in the ``pgserver`` wheel (a dev
dependency), so a machine without a system PostgreSQL still gets a real server instead of a skipped test.

PostgreSQL refuses to run as root, so when we are root the data dir belongs to, and every server process
runs as, the ``postgres`` OS user (created by the Debian package; ``pgserver``'s fallback uses ``nobody``).
The cluster is tuned for tests (fsync off, TCP on 127.0.0.1 only, no Unix socket) and carries Supabase's
roles (``anon``, ``authenticated``, ``service_role``, ``authenticator``) so grants and RLS behave as there;
:func:`install_supabase_auth` gives a database Supabase's ``auth.jwt()``, which the RLS policies read.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from tests.support.net import free_port

SUPERUSER = "postgres"
# Supabase's API roles: service_role bypasses RLS (BYPASSRLS); anon/authenticated get only what is granted.
SUPABASE_ROLES_SQL = """
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
    CREATE ROLE anon NOLOGIN NOINHERIT;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
    CREATE ROLE authenticated NOLOGIN NOINHERIT;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
    CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticator') THEN
    CREATE ROLE authenticator LOGIN NOINHERIT PASSWORD 'authenticator';
  END IF;
END $$;
GRANT anon, authenticated, service_role TO authenticator;
"""
# Supabase's auth.jwt(), defined as Supabase defines it (its auth schema provides it; the product's migrations only
# call it): the request's JWT claims as PostgREST sets them for the transaction, NULL without a request.
SUPABASE_AUTH_SQL = """
CREATE SCHEMA IF NOT EXISTS auth;
DO $$
BEGIN
  IF to_regprocedure('auth.jwt()') IS NULL THEN
    CREATE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $fn$
      select
        coalesce(
          nullif(current_setting('request.jwt.claim', true), ''),
          nullif(current_setting('request.jwt.claims', true), '')
        )::jsonb
    $fn$;
  END IF;
END $$;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION auth.jwt() TO anon, authenticated, service_role;
"""
_TEST_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "60",
    "shared_buffers": "64MB",
    "log_min_messages": "warning",
    "timezone": "UTC",
}


EMPTY = "''"


class PostgresUnavailable(RuntimeError):
    """No way to run a PostgreSQL server was found here (no binaries, no pgserver wheel)."""


def find_bindir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``."""
    candidates: list[Path] = []
    if env := os.environ.get("MEMBERPULSE_PG_BINDIR"):
        candidates.append(Path(env))
    if shutil.which("pg_config"):
        with contextlib.suppress(subprocess.CalledProcessError, OSError):
            out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
            candidates.append(Path(out.stdout.strip()))

    def _version(path: str) -> int:
        match = re.search(r"/postgresql/(\d+)/", path)
        return int(match.group(1)) if match else 0

    system = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True)
    candidates += [Path(p) for p in system]
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).resolve().parent)
    if (spec := importlib.util.find_spec("pgserver")) and spec.origin:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin")
    for bindir in candidates:
        if all((bindir / exe).is_file() for exe in ("initdb", "pg_ctl", "postgres")):
            return bindir
    raise PostgresUnavailable(
        "no PostgreSQL server binaries: install the system package (apt-get install postgresql) "
        "or the pgserver wheel (pip install -e '.[dev]')"
    )


def _server_os_user() -> pwd.struct_passwd | None:
    """The unprivileged user to run as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresUnavailable("running as root and neither a 'postgres' nor a 'nobody' user exists")


@dataclass
class PostgresServer:
    """One running test cluster. ``dsn(dbname)`` gives a superuser DSN for a database on it."""

    bindir: Path
    root: Path
    port: int
    host: str = "127.0.0.1"
    user: str = SUPERUSER
    _os_user: pwd.struct_passwd | None = field(default=None, repr=False)
    settings: dict[str, str] = field(default_factory=dict)  # on top of the test settings
    version: int = 0  # server_version_num, e.g. 150018
    _running: bool = field(default=False, repr=False)

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        return self.root / "server.log"

    def dsn(self, dbname: str = "postgres", *, user: str | None = None, password: str | None = None) -> str:
        auth = user or self.user
        if password:
            auth += f":{password}"
        return f"postgresql://{auth}@{self.host}:{self.port}/{dbname}"

    # --- lifecycle -----------------------------------------------------------------------------------------
    def _run(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        user = self._os_user
        return subprocess.run(
            args,
            check=True,
            capture_output=True,
            text=True,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
            cwd=self.root,
        )

    def start(self) -> None:
        self._os_user = _server_os_user()
        if self._os_user:
            os.chown(self.root, self._os_user.pw_uid, self._os_user.pw_gid)
        self._run(
            [str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", self.user, "-A", "trust",
             "-E", "UTF8", "--locale=C", "--no-sync"]
        )  # fmt: skip
        self._pg_ctl_start()
        self._running = True
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(SUPABASE_ROLES_SQL)
            self.version = conn.info.server_version

    def _pg_ctl_start(self) -> None:
        merged = {**_TEST_SETTINGS, **self.settings, "port": str(self.port)}
        # pg_ctl hands -o to a shell: an empty value must be quoted to survive
        options = " ".join(f"-c {key}={value or EMPTY}" for key, value in merged.items())
        try:
            self._run(
                [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile), "-w",
                 "-t", "60", "-o", options, "start"]
            )  # fmt: skip
        except subprocess.CalledProcessError as exc:
            log = self.logfile.read_text(errors="replace") if self.logfile.exists() else ""
            raise PostgresUnavailable(f"pg_ctl start failed: {exc.stderr}\n{log[-2000:]}") from exc

    def halt(self) -> None:
        """Stop the server and keep its data (an outage); :meth:`resume` starts it again on the same port."""
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop"])

    def resume(self) -> None:
        self._pg_ctl_start()

    def stop(self) -> None:
        if self._running:
            with contextlib.suppress(subprocess.CalledProcessError):
                self._run([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop"])
            self._running = False
        shutil.rmtree(self.root, ignore_errors=True)

    # --- databases -----------------------------------------------------------------------------------------
    def create_database(self, name: str | None = None, *, template: str = "template1") -> str:
        """Create a database copied from ``template`` and return its name (WAL_LOG: ~50 ms for small ones)."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}{}").format(
                    sql.Identifier(name),
                    sql.Identifier(template),
                    sql.SQL(" STRATEGY WAL_LOG" if self.version >= 150000 else ""),
                )
            )
        return name

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def mark_template(self, name: str) -> None:
        """Freeze a database as a template: no connections allowed, so copies of it never block."""
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(sql.Identifier(name))
            )


def install_supabase_auth(dsn: str) -> None:
    """Give the database at ``dsn`` Supabase's ``auth.jwt()`` (kept when it exists), as a Supabase project has."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SUPABASE_AUTH_SQL)


def start_server(*, settings: dict[str, str] | None = None, attempts: int = 3) -> PostgresServer:
    """Start a fresh cluster on a free 127.0.0.1 port (retrying if another process grabbed the port).

    ``settings`` override the test tuning, e.g. ``{"fsync": "on"}`` for a benchmark that should pay for
    durability like a real server does."""
    bindir = find_bindir()
    last: Exception | None = None
    for _ in range(attempts):
        root = Path(tempfile.mkdtemp(prefix="memberpulse-pg-"))
        os.chmod(root, 0o700)
        server = PostgresServer(bindir=bindir, root=root, port=free_port(), settings=dict(settings or {}))
        try:
            server.start()
            return server
        except (PostgresUnavailable, subprocess.CalledProcessError, psycopg.OperationalError) as exc:
            last = exc
            server.stop()
            time.sleep(0.2)
    raise PostgresUnavailable(f"could not start a PostgreSQL server from {bindir}: {last}")
