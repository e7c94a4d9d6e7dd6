"""The world ``memberpulse demo`` plays in, with no credentials: three simulated companies that installed one
Whop app, the app's webhooks, the landing endpoint (a real ``memberpulse serve`` process) on a free local port,
an outage, one company uninstalling the app in the middle of the backfill, and what the snapshot shows
afterwards. Nothing here writes to the terminal: the command (``memberpulse.cli.demo``) runs the story and
tells it.

Webhooks for a few hundred simulated members — some delivered twice, a few never delivered, one forged — go
under ``$MEMBERPULSE_DATA_DIR/demo``, never to a real Supabase project.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson
from pydantic import SecretStr

from memberpulse.settings import Settings

if TYPE_CHECKING:
    from memberpulse.whop_simulator import WebhookHub

DEMO_COMPANY = "biz_memberpulse_demo"
DEMO_MEMBERS = 300
#: The companies that installed the demo's Whop app, with their members; the last uninstalls it mid-backfill.
DEMO_COMPANIES = {DEMO_COMPANY: DEMO_MEMBERS, "biz_demo_north": 150, "biz_demo_south": 80}
UNINSTALLING = "biz_demo_south"
DEMO_APP = "app_memberpulse_demo"  # the app whose webhook carries every installed company's events
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def landing_process(data_dir: Path, secret: str, port: int | None = None) -> Iterator[str]:
    """A real ``memberpulse serve`` on ``port`` (default: a free one); yields its webhook URL, stops it on exit."""
    port = port or free_port()
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


def plan_all_deliveries(populations: Iterable[object], secret: str, now: datetime, seed: int = 11) -> list[Delivery]:
    """Every company's webhooks (``plan_deliveries``), interleaved as an app's webhook delivers them."""
    deliveries = [d for n, p in enumerate(populations) for d in plan_deliveries(p, secret, now, seed=seed + n)]
    random.Random(seed).shuffle(deliveries)
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


def demo_settings(settings: Settings, root: Path, secret: str, api_key: str, base_url: str) -> Settings:
    """The demo's settings: the app's key, its three companies listed (whatever the environment says)."""
    return settings.model_copy(
        update={
            "data_dir": root,
            "whop_webhook_secret": SecretStr(secret),
            "whop_api_key": SecretStr(api_key),
            "whop_company_id": None,
            "whop_company_ids": ",".join(DEMO_COMPANIES),
            "whop_company_api_keys": None,
            "whop_api_base_url": base_url,
            "whop_max_rate_limit_wait_seconds": 30.0,
            # The demo never publishes to a real Supabase project, whatever the environment says.
            "supabase_db_url": None,
            "supabase_url": None,
            "supabase_service_role_key": None,
        }
    )


class UninstallMidBackfill:
    """The simulator's ``intercept``: once ``company``'s backfill has read ``pages`` pages, it uninstalls the app
    (the app's key gets 403 for it from then on), as a creator might in the middle of a nightly run."""

    def __init__(self, company: str, pages: int = 1) -> None:
        self.company, self.pages, self.served = company, pages, 0
        self.state: Any = None  # the simulator's state, set once the app is made

    async def __call__(self, endpoint: str, company_id: str | None) -> None:
        if company_id == self.company and endpoint in ("memberships", "members") and self.state is not None:
            self.served += 1
            if self.served > self.pages:
                self.state.uninstall(self.company)


def companies_world(now: datetime, api_key: str) -> tuple[Any, WebhookHub, UninstallMidBackfill]:
    """The simulated Whop of the demo: the three companies, the app's webhook hub, the uninstall to come."""
    from memberpulse.whop_simulator import Population, WebhookHub, create_app

    populations = [
        Population.generate(seed=7 + n, n=members, company_id=company, now=now)
        for n, (company, members) in enumerate(DEMO_COMPANIES.items())
    ]
    hub = WebhookHub(DEMO_APP, timeout=2.0)
    uninstall = UninstallMidBackfill(UNINSTALLING)
    app = create_app(populations, api_key=api_key, webhooks=hub, intercept=uninstall)
    uninstall.state = app.state.whop_simulator
    return app, hub, uninstall


@dataclass(frozen=True)
class Findings:
    """What the demo's snapshot shows: members by status (status, members, average score), the drift found
    (reason, members), and the guide's check query (the 5 most recently updated members)."""

    by_status: list[tuple[Any, ...]]
    drift: list[tuple[Any, ...]]
    latest: list[tuple[Any, ...]]
    by_company: list[tuple[Any, ...]]  # company, members, active, at risk, whop snapshot rows, drift rows


def findings(snapshot: Path) -> Findings:
    import duckdb

    with duckdb.connect(str(snapshot), read_only=True) as con:
        return Findings(
            by_status=con.execute(
                "SELECT status, count(*), round(avg(engagement_score), 1) FROM member_activity GROUP BY 1 "
                "ORDER BY 2 DESC"
            ).fetchall(),
            drift=con.execute(
                "SELECT reason, count(*) FROM reconciliation_drift GROUP BY 1 ORDER BY 2 DESC"
            ).fetchall(),
            latest=con.execute(
                "SELECT member_name, status, activity_score, last_active, updated_at FROM member_activity "
                "ORDER BY updated_at DESC, engagement_score DESC LIMIT 5"
            ).fetchall(),
            by_company=con.execute(
                "SELECT m.company_id, count(*), count(*) FILTER (WHERE status = 'active'), "
                "count(*) FILTER (WHERE status = 'at_risk'), "
                "(SELECT count(*) FROM whop_member_access w WHERE w.company_id = m.company_id), "
                "(SELECT count(*) FROM reconciliation_drift d WHERE d.company_id = m.company_id) "
                "FROM member_activity m GROUP BY 1 ORDER BY 2 DESC"
            ).fetchall(),
        )


@dataclass(frozen=True)
class Recovered:
    """Of the webhooks lost in the outage, how many are in the snapshot's events table (all: the scores are
    those of a run without the outage, scoring being a function of the events and the API facts), and Whop's
    side of delivery health (``webhook_delivery_health`` rows)."""

    lost: int
    back: int
    health: list[tuple[Any, ...]]


def recovered(snapshot: Path, lost: list[str]) -> Recovered:
    import duckdb
    import polars as pl

    with duckdb.connect(str(snapshot), read_only=True) as con:
        con.register("lost", pl.DataFrame({"webhook_id": lost}, schema={"webhook_id": pl.String()}))
        back = con.execute("SELECT count(*) FROM lost JOIN events USING (webhook_id)").fetchall()[0][0]
        health = con.execute(
            "SELECT hour, attempts, failed, success_rate_pct, failures_by_status, p95_seconds "
            "FROM webhook_delivery_health ORDER BY hour"
        ).fetchall()
    return Recovered(lost=len(lost), back=int(back), health=health)


@dataclass(frozen=True)
class Calm:
    """Before the outage: the webhook registered with the simulated Whop, its URL, and what was sent to it."""

    hook_id: str
    webhook_url: str
    whop_sent: int
    stats: SendStats


def send_calm(hub: WebhookHub, root: Path, secret: str, port: int, calm: list[Delivery]) -> Calm:
    """The landing up, the webhook registered with the simulated Whop, the stream sent: the first
    ``WHOP_SENT`` by the simulated Whop itself (signed by it, in its delivery log), the rest posted directly."""
    with landing_process(root, secret, port) as webhook_url:
        hook = hub.register(webhook_url, secret=secret)
        for delivery in calm[:WHOP_SENT]:
            hub.send(hook.id, orjson.loads(delivery.body))
        stats = send_webhooks(webhook_url, calm[WHOP_SENT:], secret)
    return Calm(hook.id, webhook_url, WHOP_SENT, stats)


@dataclass(frozen=True)
class Outage:
    """The webhooks Whop sent while the landing was down (their ids), the deliveries that failed, how long."""

    lost: list[str]
    failed: int
    seconds: float


def outage(hub: WebhookHub, hook_id: str, deliveries: list[Delivery]) -> Outage:
    """The landing is down for a few seconds while Whop keeps sending: every one of those deliveries fails."""
    started = time.monotonic()
    lost = []
    for n, delivery in enumerate(deliveries, 1):
        attempt = hub.send(hook_id, orjson.loads(delivery.body))
        lost.append(attempt.webhook_id)
        time.sleep(max(0.0, started + OUTAGE_SECONDS * n / len(deliveries) - time.monotonic()))
    failed = sum(not a.success for a in hub.deliveries(hook_id))
    return Outage(lost, failed, time.monotonic() - started)
