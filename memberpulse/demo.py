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
from typing import TYPE_CHECKING

import httpx
import orjson
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from memberpulse.settings import Settings

if TYPE_CHECKING:
    from memberpulse.whop_simulator import WebhookHub

DEMO_COMPANY = "biz_memberpulse_demo"
DEMO_MEMBERS = 300
WEBHOOK_PATH = "/api/webhooks/whop"
MISSED_SHARE = 0.04  # deliveries Whop "never made": reconciliation must notice them as drift
DUPLICATE_SHARE = 0.05  # at-least-once delivery: the same webhook twice, counted once
OUTAGE_SHARE = 0.04  # webhooks Whop sends while the landing is down: recovery brings them back
OUTAGE_SECONDS = 3.0
WHOP_SENT = 20  # webhooks the simulated Whop delivers itself before the outage (the rest are posted directly)


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


def _print_recovery(console: Console, snapshot: Path, lost: list[str]) -> bool:
    """Whether every webhook of the outage is in the events table (then the scores are those of a run without
    the outage: scoring is a function of the events and the API facts), and Whop's side of delivery health."""
    import duckdb
    import polars as pl

    with duckdb.connect(str(snapshot), read_only=True) as con:
        con.register("lost", pl.DataFrame({"webhook_id": lost}, schema={"webhook_id": pl.String()}))
        back = con.execute("SELECT count(*) FROM lost JOIN events USING (webhook_id)").fetchall()[0][0]
        health = con.execute(
            "SELECT hour, attempts, failed, success_rate_pct, failures_by_status, p95_seconds "
            "FROM webhook_delivery_health ORDER BY hour"
        ).fetchall()
    table = Table(title="Delivery health, Whop's side (webhook_delivery_health)")
    for column in ("hour", "attempts", "failed", "success %", "failures by status", "p95 s"):
        table.add_column(column)
    for row in health:
        table.add_row(*(str(v) for v in row))
    console.print(table)
    if back != len(lost):
        console.print(f"[red]outage: only {back} of the {len(lost)} webhooks lost in the outage came back")
        return False
    console.print(
        f"outage: {len(lost)} webhooks failed while the landing was down; all of them are in the events table, "
        "recovered from Whop's delivery log, so the scores equal a run without the outage."
    )
    return True


def main(settings: Settings) -> int:
    from memberpulse.flows.backfill import run_once as backfill_once
    from memberpulse.flows.reconcile import run_once as reconcile_once
    from memberpulse.whop_simulator import Population, WebhookHub, create_app, serve_in_thread

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
    hub = WebhookHub(DEMO_COMPANY, timeout=2.0)
    port = _free_port()
    with serve_in_thread(create_app(population, api_key=api_key, webhooks=hub)) as base_url:
        deliveries = plan_deliveries(population, secret, now)
        outage_share = max(1, int(len(deliveries) * OUTAGE_SHARE))
        in_outage, calm = deliveries[:outage_share], deliveries[outage_share:]
        hook_id = _send_calm(console, hub, root, secret, port, base_url, calm)
        lost = _outage(console, hub, hook_id, in_outage)
        with landing_process(root, secret, port):
            # After the webhooks, Whop's view moves on: a few members cancel and the webhooks for it go missing.
            for membership in population.memberships[:5]:
                if membership.valid:
                    population.set_status(membership.id, "canceled", at=now)
            demo = _demo_settings(settings, root, secret, api_key, base_url).model_copy(
                update={"whop_webhook_id": hook_id}
            )
            console.rule("backfill (Whop API → warehouse snapshot; Whop's delivery log → missed webhooks)")
            code = backfill_once(demo)
            if code != 0:
                return code
    console.rule("reconcile (raw webhooks + API → scores → snapshot)")
    code = reconcile_once(demo, as_of=None, full_refresh=False)
    if code != 0:
        return code

    recovered = _print_outro(console, demo.snapshots_dir / "latest.duckdb", deliveries, started, lost)
    return 0 if recovered else 1


def _send_calm(
    console: Console, hub: WebhookHub, root: Path, secret: str, port: int, base_url: str, calm: list[Delivery]
) -> str:
    """Before the outage: the landing up, the webhook registered with the simulated Whop, the stream sent.
    Returns the webhook's id."""
    with landing_process(root, secret, port) as webhook_url:
        hook = hub.register(webhook_url, secret=secret)
        console.print(f"Whop API simulator (a stand-in for api.whop.com): {base_url}")
        console.print(f"landing endpoint (memberpulse serve):             {webhook_url}")
        # Whop's own sends (signed by the simulator, in its delivery log) for part of the stream.
        for delivery in calm[:WHOP_SENT]:
            hub.send(hook.id, orjson.loads(delivery.body))
        stats = send_webhooks(webhook_url, calm[WHOP_SENT:], secret)
        console.print(
            f"webhooks: {WHOP_SENT} sent by the simulated Whop, then {stats.sent} posted: {stats.accepted} "
            f"answered 200, {stats.rejected} rejected (the forgery), {stats.duplicates} delivered twice, "
            f"{stats.missed} never delivered"
        )
    return hook.id


def _outage(console: Console, hub: WebhookHub, hook_id: str, deliveries: list[Delivery]) -> list[str]:
    """The landing is down for a few seconds while Whop keeps sending: every one of those deliveries fails.
    Returns their webhook ids."""
    started = time.monotonic()
    lost = []
    for n, delivery in enumerate(deliveries, 1):
        attempt = hub.send(hook_id, orjson.loads(delivery.body))
        lost.append(attempt.webhook_id)
        time.sleep(max(0.0, started + OUTAGE_SECONDS * n / len(deliveries) - time.monotonic()))
    failed = sum(not a.success for a in hub.deliveries(hook_id))
    console.print(
        f"outage: the landing was stopped for {time.monotonic() - started:.1f} s while Whop sent "
        f"{len(deliveries)} webhooks; {failed} deliveries failed (connection refused), as Whop's log shows"
    )
    return lost


def _print_outro(console: Console, snapshot: Path, deliveries: list[Delivery], started: float, lost: list[str]) -> bool:
    """What the demo found, how long it took, and how to look at the snapshot; False if the outage was not
    fully recovered."""
    _print_findings(console, snapshot)
    recovered = _print_recovery(console, snapshot, lost)
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
    return recovered
