"""A PostgREST STAND-IN for tests — not PostgREST. The real server cannot be installed on our machines.

It implements only what memberpulse's supabase-py client sends: ``POST /rest/v1/<table>`` upserts with
``Prefer: return=…,resolution=merge-duplicates`` and the ``on_conflict`` / ``columns`` query parameters, and
``HEAD /rest/v1/<table>`` with ``Prefer: count=exact`` (the row count in ``Content-Range``, as PostgREST gives it),
over a real PostgreSQL database, the way PostgREST does it: the gateway checks the ``apikey`` header, the
``Authorization: Bearer <key>`` picks the database role (``SET LOCAL ROLE``), the rows go through
``json_populate_recordset`` into one ``INSERT … ON CONFLICT … DO UPDATE`` inside one transaction, and
Postgres errors come back as PostgREST-shaped JSON (``code``/``message``/``details``/``hint``) with
PostgREST's status codes. Every request is recorded (method, path, query, headers, parsed body) so tests can
assert exactly what the client sent; ``fail_next`` / ``hang_next`` inject 5xx answers and slow answers.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import uvicorn
from psycopg import sql
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.postgres import free_port

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: Any


@dataclass
class PostgrestStandIn:
    """The stand-in's state. ``keys`` maps an API key to the database role its JWT would carry."""

    dsn: str
    keys: dict[str, str]
    requests: list[RecordedRequest] = field(default_factory=list)
    fail_next: list[int] = field(default_factory=list)  # answer these statuses first, touching nothing
    hang_next: list[float] = field(default_factory=list)  # sleep this long, then 504, touching nothing
    url: str = ""

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/rest/v1/{table}", self._post, methods=["POST"]),
                Route("/rest/v1/{table}", self._head, methods=["HEAD"]),
            ]
        )

    async def _admit(self, request: Request) -> tuple[str, Any] | Response:
        """Record the request, answer an injected failure, check the keys: (the key's role, the parsed body)."""
        try:
            raw = await request.body()
        except ClientDisconnect:  # the client (or a partition in between) gave up mid-body: nobody to answer
            return Response(status_code=499)
        body: Any = json.loads(raw) if raw else None
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.url.path,
                query=dict(request.query_params),
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
            )
        )
        if self.fail_next:
            status = self.fail_next.pop(0)
            return _error(status, "PGRST000", "stand-in: injected failure")
        if self.hang_next:
            await asyncio.sleep(self.hang_next.pop(0))
            return _error(504, "PGRST000", "stand-in: gateway timeout")

        apikey = request.headers.get("apikey")
        if apikey not in self.keys:
            return JSONResponse({"message": "Invalid API key"}, status_code=401)
        bearer = request.headers.get("authorization", "")
        token = bearer.removeprefix("Bearer ")
        if not bearer.startswith("Bearer ") or token not in self.keys:
            return _error(401, "PGRST301", "JWT could not be decoded")
        return self.keys[token], body

    async def _head(self, request: Request) -> Response:
        """``HEAD`` with ``Prefer: count=exact``: no rows, their count in ``Content-Range`` (``0-9/10``, ``*/0``)."""
        admitted = await self._admit(request)
        if isinstance(admitted, Response):
            return admitted
        role, _ = admitted
        table = request.path_params["table"]
        if _prefer(request).get("count") != "exact" or not _IDENT.match(table):
            return _error(400, "PGRST100", "stand-in supports HEAD with Prefer: count=exact only")
        try:
            count = await run_in_threadpool(self._count, role, table)
        except psycopg.Error as exc:
            return _postgres_error(exc, role=role)
        return Response(status_code=200, headers={"Content-Range": f"0-{count - 1}/{count}" if count else "*/0"})

    def _count(self, role: str, table: str) -> int:
        with psycopg.connect(self.dsn, connect_timeout=5) as conn, conn.cursor() as cur:
            cur.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("public", table)))
            row = cur.fetchone()
            assert row is not None
            return int(row[0])

    async def _post(self, request: Request) -> Response:
        admitted = await self._admit(request)
        if isinstance(admitted, Response):
            return admitted
        role, body = admitted
        table = request.path_params["table"]
        prefer = _prefer(request)
        on_conflict = _names(request.query_params.get("on_conflict", ""))
        columns = _names(request.query_params.get("columns", ""))
        rows: list[dict[str, Any]] = body if isinstance(body, list) else [body]
        if not columns:
            columns = sorted({k for row in rows for k in row})
        names = [table, *on_conflict, *columns]
        if not on_conflict or not all(_IDENT.match(n) for n in names):
            return _error(400, "PGRST100", "stand-in supports upserts with on_conflict and plain names only")
        try:
            result = await run_in_threadpool(self._upsert, role, table, rows, columns, on_conflict, prefer)
        except psycopg.Error as exc:
            return _postgres_error(exc, role=role)
        if prefer.get("return") == "representation":
            return JSONResponse(result, status_code=201)
        return Response(status_code=201)

    def _upsert(
        self,
        role: str,
        table: str,
        rows: list[dict[str, Any]],
        columns: list[str],
        on_conflict: list[str],
        prefer: dict[str, str],
    ) -> list[dict[str, Any]]:
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        target = sql.Identifier("public", table)
        action: sql.Composable
        if prefer.get("resolution") == "ignore-duplicates":
            action = sql.SQL("DO NOTHING")
        else:
            action = sql.SQL("DO UPDATE SET {}").format(
                sql.SQL(", ").join(
                    sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in columns if c not in on_conflict
                )
            )
        statement = sql.SQL(
            "INSERT INTO {target} ({cols})"
            " SELECT {cols} FROM json_populate_recordset(NULL::{target}, %s::json)"
            " ON CONFLICT ({conflict}) {action} RETURNING to_jsonb({alias}.*)"
        ).format(
            target=target,
            cols=cols,
            conflict=sql.SQL(", ").join(sql.Identifier(c) for c in on_conflict),
            action=action,
            alias=sql.Identifier(table),
        )
        with psycopg.connect(self.dsn, connect_timeout=5) as conn, conn.cursor() as cur:
            cur.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
            cur.execute(statement, (json.dumps(rows),))
            return [r[0] for r in cur.fetchall()]


def _prefer(request: Request) -> dict[str, str]:
    return {
        k.strip(): v.strip()
        for k, _, v in (p.partition("=") for p in request.headers.get("prefer", "").split(","))
        if k.strip()
    }


def _names(param: str) -> list[str]:
    """``a,"b"`` → ["a", "b"] (postgrest-py quotes some column names)."""
    return [c.strip().strip('"') for c in param.split(",") if c.strip()]


def _error(status: int, code: str, message: str, hint: str | None = None) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "details": None, "hint": hint}, status_code=status)


def _postgres_error(exc: psycopg.Error, *, role: str) -> JSONResponse:
    """PostgREST's mapping of SQLSTATEs to HTTP statuses (the part memberpulse can meet)."""
    state = exc.sqlstate or ""
    message = exc.diag.message_primary or str(exc)
    if isinstance(exc, psycopg.OperationalError) and not state:
        return _error(503, "PGRST000", "Database client error. Retrying the connection.")
    if state == "42501":
        return _error(401 if role == "anon" else 403, state, message)
    if state == "42P01":
        return _error(404, state, message)
    if state in ("23505", "23503"):
        return _error(409, state, message)
    return _error(400, state or "PGRST000", message)


@contextmanager
def run_postgrest_standin(dsn: str, *, keys: dict[str, str]) -> Iterator[PostgrestStandIn]:
    """Serve a stand-in on 127.0.0.1 (free port) for the duration of the block; ``.url`` is its base URL."""
    standin = PostgrestStandIn(dsn=dsn, keys=keys)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            standin.app(),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
    )
    thread = threading.Thread(target=server.run, name="postgrest-standin", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the PostgREST stand-in did not start")
        time.sleep(0.01)
    standin.url = f"http://127.0.0.1:{port}"
    try:
        yield standin
    finally:
        server.should_exit = True
        thread.join(timeout=10)
