"""``memberpulse demo``: the whole loop on this machine, with no credentials.

It starts the landing endpoint (a real ``memberpulse serve`` process) and the Whop API simulator on free
local ports, sends signed webhooks for a few hundred simulated members — some delivered twice, a few never
delivered, one forged — runs the backfill and reconcile flows, prints what they found, and stops everything
it started. Everything is written under ``$MEMBERPULSE_DATA_DIR/demo`` (wiped at the start), never to a real
Supabase project.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from memberpulse.settings import Settings

DEMO_COMPANY = "biz_memberpulse_demo"
DEMO_MEMBERS = 300
WEBHOOK_PATH = "/api/webhooks/whop"
MISSED_SHARE = 0.04  # deliveries Whop "never made": reconciliation must notice them as drift
DUPLICATE_SHARE = 0.05  # at-least-once delivery: the same webhook twice, counted once


@dataclass(frozen=True)
class Delivery:
    body: bytes
    headers: dict[str, str]
    membership_id: str


@dataclass
class SendStats:
    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    missed: int = 0
    duplicates: int = 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def landing_process(data_dir: Path, secret: str, port: int | None = None) -> Iterator[str]:
    """A real ``memberpulse serve`` on ``port`` (default: a free one); yields its webhook URL, stops it on exit."""
    port = port or _free_port()
    env = {**os.environ, "WHOP_WEBHOOK_SECRET": secret, "MEMBERPULSE_DATA_DIR": str(data_dir)}
    log = open(data_dir / "landing.log", "ab")  # noqa: SIM115 - closed below, after the process ends
    proc = subprocess.Popen(
        [sys.executable, "-m", "memberpulse", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the landing endpoint exited at start-up; see {data_dir / 'landing.log'}")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the landing endpoint did not answer within 30 s")
            time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def plan_deliveries(population: object, secret: str, now: datetime, seed: int = 11) -> list[Delivery]:
    """Webhooks Whop would have sent for the simulated company, in a shuffled (real-world) order."""
    from memberpulse.landing import mock_events as mock
    from memberpulse.whop_simulator import Population

    assert isinstance(population, Population)
    rng = random.Random(seed)
    deliveries: list[Delivery] = []
    for membership in population.memberships:
        member = population.member(membership.member_id)
        who = mock.MockMember(
            membership_id=membership.id,
            user_id=membership.user.id,
            company_id=membership.company_id,
            email=membership.user.email or "",
            username=membership.user.username,
            name=membership.user.name or membership.user.username,
            product_id=membership.product_id,
            plan_id=membership.plan_id,
        )
        # Half the company joined before the app switched to Whop's v1 webhooks.
        if rng.random() < 0.5:
            payloads = [mock.went_valid(who, created_at=membership.created_at)]
        else:
            payloads = [mock.activated(who, at=membership.created_at)]
        # The guide's "accessed" events, up to the member's real last access.
        if member.last_accessed_at is not None:
            span = (member.last_accessed_at - membership.created_at).total_seconds()
            visits = sorted(rng.uniform(0, span) for _ in range(rng.randrange(0, 4)))
            for offset in [*visits, span]:
                payloads.append(mock.accessed(who, accessed_at=membership.created_at + timedelta(seconds=offset)))
        if not membership.valid:
            left_at = membership.canceled_at or membership.updated_at
            if rng.random() < 0.5:
                payloads.append(mock.went_invalid(who, expired_at=left_at))
            else:
                payloads.append(
                    mock.deactivated(who, at=left_at, created_at=membership.created_at, status=membership.status)
                )
        for payload in payloads:
            body, headers = mock.signed_delivery(payload, secret=secret)
            deliveries.append(Delivery(body, headers, membership.id))
    rng.shuffle(deliveries)
    return deliveries


async def _post_all(url: str, deliveries: list[Delivery], stats: SendStats, concurrency: int = 16) -> None:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:
        gate = asyncio.Semaphore(concurrency)

        async def post(delivery: Delivery) -> None:
            async with gate:
                response = await client.post(url, content=delivery.body, headers=delivery.headers)
            stats.sent += 1
            if response.status_code == 200:
                stats.accepted += 1
            else:
                stats.rejected += 1

        await asyncio.gather(*(post(d) for d in deliveries))


def send_webhooks(url: str, deliveries: list[Delivery], secret: str, seed: int = 13) -> SendStats:
    from memberpulse.landing import mock_events as mock

    rng = random.Random(seed)
    stats = SendStats()
    kept = [d for d in deliveries if rng.random() >= MISSED_SHARE]
    stats.missed = len(deliveries) - len(kept)
    again = [d for d in kept if rng.random() < DUPLICATE_SHARE]
    stats.duplicates = len(again)
    # One forgery: a real body signed with the wrong secret must get a 403 and leave no trace.
    forged_body, forged_headers = mock.signed_delivery(
        mock.mock_event("membership.went_valid"), secret="ws_" + secrets.token_hex(24)
    )
    batch = [*kept, *again, Delivery(forged_body, forged_headers, "forged")]
    asyncio.run(_post_all(url, batch, stats))
    return stats


def _demo_settings(settings: Settings, root: Path, secret: str, api_key: str, base_url: str) -> Settings:
    return settings.model_copy(
        update={
            "data_dir": root,
            "whop_webhook_secret": SecretStr(secret),
            "whop_api_key": SecretStr(api_key),
            "whop_company_id": DEMO_COMPANY,
            "whop_api_base_url": base_url,
            "whop_max_rate_limit_wait_seconds": 30.0,
            # The demo never publishes to a real Supabase project, whatever the environment says.
            "supabase_db_url": None,
            "supabase_url": None,
            "supabase_service_role_key": None,
        }
    )


def _print_findings(console: Console, snapshot: Path) -> None:
    import duckdb

    with duckdb.connect(str(snapshot), read_only=True) as con:
        status_rows = con.execute(
            "SELECT status, count(*), round(avg(engagement_score), 1) FROM member_activity GROUP BY 1 ORDER BY 2 DESC"
        ).fetchall()
        drift_rows = con.execute(
            "SELECT reason, count(*) FROM reconciliation_drift GROUP BY 1 ORDER BY 2 DESC"
        ).fetchall()
        top = con.execute(
            "SELECT member_name, status, activity_score, last_active, updated_at FROM member_activity "
            "ORDER BY updated_at DESC, engagement_score DESC LIMIT 5"
        ).fetchall()

    table = Table(title="Members by status")
    for column in ("status", "members", "avg score"):
        table.add_column(column, justify="right" if column != "status" else "left")
    for status, count, avg in status_rows:
        table.add_row(str(status), str(count), str(avg))
    console.print(table)

    drift = Table(title="Drift found (Whop's API vs the webhooks received)")
    drift.add_column("reason")
    drift.add_column("members", justify="right")
    for reason, count in drift_rows:
        drift.add_row(str(reason), str(count))
    if not drift_rows:
        drift.add_row("(none)", "0")
    console.print(drift)

    seed_query = Table(title="The guide's check query (5 of 10 rows)")
    for column in ("member_name", "status", "activity_score", "last_active", "updated_at"):
        seed_query.add_column(column)
    for row in top:
        seed_query.add_row(*(str(v) for v in row))
    console.print(seed_query)


def main(settings: Settings) -> int:
    from memberpulse.flows.backfill import run_once as backfill_once
    from memberpulse.flows.reconcile import run_once as reconcile_once
    from memberpulse.whop_simulator import Population, create_app, serve_in_thread

    console = Console()
    started = time.monotonic()
    root = settings.data_dir.resolve() / "demo"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    secret = "ws_" + secrets.token_hex(24)
    api_key = "sim_" + secrets.token_hex(16)
    now = datetime.now(UTC)

    console.rule("[bold]memberpulse demo")
    population = Population.generate(seed=7, n=DEMO_MEMBERS, company_id=DEMO_COMPANY, now=now)
    app = create_app(population, api_key=api_key)
    with serve_in_thread(app) as base_url, landing_process(root, secret) as webhook_url:
        console.print(f"Whop API simulator (a stand-in for api.whop.com): {base_url}")
        console.print(f"landing endpoint (memberpulse serve):             {webhook_url}")
        deliveries = plan_deliveries(population, secret, now)
        stats = send_webhooks(webhook_url, deliveries, secret)
        console.print(
            f"webhooks: {stats.sent} sent, {stats.accepted} answered 200, {stats.rejected} rejected (the forgery), "
            f"{stats.duplicates} delivered twice, {stats.missed} never delivered"
        )
        # After the webhooks, Whop's view moves on: a few members cancel and the webhooks for it go missing.
        for membership in population.memberships[:5]:
            if membership.valid:
                population.set_status(membership.id, "canceled", at=now)

        demo = _demo_settings(settings, root, secret, api_key, base_url)
        console.rule("backfill (Whop API → warehouse snapshot)")
        code = backfill_once(demo)
        if code != 0:
            return code
    console.rule("reconcile (raw webhooks + API → scores → snapshot)")
    code = reconcile_once(demo, as_of=None, full_refresh=False)
    if code != 0:
        return code

    _print_outro(console, demo.snapshots_dir / "latest.duckdb", deliveries, started)
    return 0


def _print_outro(console: Console, snapshot: Path, deliveries: list[Delivery], started: float) -> None:
    """What the demo found, how long it took, and how to look at the snapshot."""
    _print_findings(console, snapshot)
    counts = Counter(d.membership_id for d in deliveries)
    console.print(
        f"\n{len(counts)} simulated members, {len(deliveries)} webhooks planned; finished in "
        f"{time.monotonic() - started:.1f} s. Nothing is left running."
    )
    console.print(f"snapshot for analysts: [bold]{snapshot}[/bold]")
    console.print("try:")
    console.print(
        f"  .venv/bin/python -c \"import duckdb; print(duckdb.connect('{snapshot}', read_only=True)"
        f".sql('SELECT * FROM members_at_risk_now LIMIT 10'))\""
    )
