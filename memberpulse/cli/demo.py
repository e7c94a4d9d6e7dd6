"""``memberpulse demo``: the whole loop on this machine, with no credentials, told as it goes.

It starts the landing endpoint (a real ``memberpulse serve`` process) and the Whop API simulator on free
local ports, sends signed webhooks of a Whop app for a few hundred simulated members of three companies
(``memberpulse.demo``, the demo's world), stops the landing for a few seconds while Whop keeps sending, runs
``memberpulse backfill`` (the companies side by side; one uninstalls the app midway and fails alone; the
recovery step brings the lost webhooks back) and ``memberpulse run``, prints what they found, and stops
everything it started. Everything is written under ``$MEMBERPULSE_DATA_DIR/demo`` (wiped at the start).
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from memberpulse import demo as world
from memberpulse.cli import backfill, run
from memberpulse.errors import ExitCode
from memberpulse.flows.backfill import load_round
from memberpulse.settings import Settings

if TYPE_CHECKING:
    from memberpulse.whop_simulator import WebhookHub


def command(args: argparse.Namespace, settings: Settings) -> int:
    return run_demo(settings)


def run_demo(settings: Settings) -> int:
    """0 when every webhook lost in the outage came back, 1 when not; a failing backfill or run's own code (the
    backfill's exit 2 for the company that uninstalled the app is the story, not a failure)."""
    from memberpulse.whop_simulator import serve_in_thread

    console, started = Console(), time.monotonic()
    root = settings.data_dir.resolve() / "demo"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    secret, api_key, now = "ws_" + secrets.token_hex(24), "sim_" + secrets.token_hex(16), datetime.now(UTC)

    console.rule("[bold]memberpulse demo")
    app, hub, uninstall = world.companies_world(now, api_key)
    port = world.free_port()
    with serve_in_thread(app) as base_url:
        deliveries = world.plan_all_deliveries(uninstall.state.populations.values(), secret, now)
        outage_share = max(1, int(len(deliveries) * world.OUTAGE_SHARE))
        in_outage, calm = deliveries[:outage_share], deliveries[outage_share:]
        hook_id = _send_calm(console, hub, root, secret, port, base_url, calm)
        lost = _outage(console, hub, hook_id, in_outage)
        with world.landing_process(root, secret, port):
            # After the webhooks, Whop's view moves on: a few members cancel and the webhooks for it go missing.
            for membership in uninstall.state.population.memberships[:5]:
                if membership.valid:
                    uninstall.state.population.set_status(membership.id, "canceled", at=now)
            demo = world.demo_settings(settings, root, secret, api_key, base_url).model_copy(
                update={"whop_webhook_id": hook_id}
            )
            console.rule("backfill (Whop API → a snapshot per company; Whop's delivery log → missed webhooks)")
            code = backfill.run_once(demo)
            if not _only_the_uninstall_failed(console, demo, code):
                return code
    console.rule("reconcile (raw webhooks + API → scores → snapshot)")
    code = run.run_once(demo, as_of=None, full_refresh=False)
    if code != ExitCode.OK:
        return code
    back = _print_outro(console, demo.snapshots_dir / "latest.duckdb", deliveries, started, lost)
    return ExitCode.OK if back else ExitCode.FAILED


def _only_the_uninstall_failed(console: Console, settings: Settings, code: int) -> bool:
    """Whether the backfill went as the story goes: every company written but the one that uninstalled the app
    midway, which failed alone (exit 2, as a real run would)."""
    failed = set(load_round(settings.warehouse_dir).failed)
    if code != ExitCode.CONFIG or failed != {world.UNINSTALLING}:
        return code == ExitCode.OK
    console.print(
        f"[bold]{world.UNINSTALLING} uninstalled the app in the middle of the backfill[/bold]: Whop answered 403 "
        "for it, so it got no snapshot and the backfill exited 2 naming it, while the other companies' snapshots "
        "were written; its members keep their webhooks' view and are judged for drift only against a fetch of "
        "their own (none here). The next `memberpulse backfill` would retry only it."
    )
    return True


def _send_calm(
    console: Console,
    hub: WebhookHub,
    root: Path,
    secret: str,
    port: int,
    base_url: str,
    calm: list[world.Delivery],
) -> str:
    """Before the outage: the stream sent to the landing. Returns the webhook's id."""
    sent = world.send_calm(hub, root, secret, port, calm)
    stats = sent.stats
    console.print(f"Whop API simulator (a stand-in for api.whop.com): {base_url}")
    console.print(f"landing endpoint (memberpulse serve):             {sent.webhook_url}")
    console.print(
        f"webhooks: {sent.whop_sent} sent by the simulated Whop, then {stats.sent} posted: {stats.accepted} "
        f"answered 200, {stats.rejected} rejected (the forgery), {stats.duplicates} delivered twice, "
        f"{stats.missed} never delivered"
    )
    return sent.hook_id


def _outage(console: Console, hub: WebhookHub, hook_id: str, deliveries: list[world.Delivery]) -> list[str]:
    """The landing down while Whop sends. Returns the lost webhooks' ids."""
    down = world.outage(hub, hook_id, deliveries)
    console.print(
        f"outage: the landing was stopped for {down.seconds:.1f} s while Whop sent "
        f"{len(deliveries)} webhooks; {down.failed} deliveries failed (connection refused), as Whop's log shows"
    )
    return down.lost


def _print_findings(console: Console, snapshot: Path) -> None:
    found = world.findings(snapshot)
    companies = Table(title="Companies (one Whop app, one deployment)")
    for column in ("company", "members", "active", "at risk", "in Whop's snapshot", "drift rows"):
        companies.add_column(column, justify="left" if column == "company" else "right")
    for company, *counts in found.by_company:
        note = " (uninstalled mid-run)" if company == world.UNINSTALLING else ""
        companies.add_row(f"{company}{note}", *(str(c) for c in counts))
    console.print(companies)
    table = Table(title="Members by status")
    for column in ("status", "members", "avg score"):
        table.add_column(column, justify="right" if column != "status" else "left")
    for status, count, avg in found.by_status:
        table.add_row(str(status), str(count), str(avg))
    console.print(table)

    drift = Table(title="Drift found (Whop's API vs the webhooks received)")
    drift.add_column("reason")
    drift.add_column("members", justify="right")
    for reason, count in found.drift:
        drift.add_row(str(reason), str(count))
    if not found.drift:
        drift.add_row("(none)", "0")
    console.print(drift)

    seed_query = Table(title="The guide's check query (5 of 10 rows)")
    for column in ("member_name", "status", "activity_score", "last_active", "updated_at"):
        seed_query.add_column(column)
    for row in found.latest:
        seed_query.add_row(*(str(v) for v in row))
    console.print(seed_query)


def _print_recovery(console: Console, snapshot: Path, lost: list[str]) -> bool:
    """Whether every webhook of the outage is in the events table, and Whop's side of delivery health."""
    found = world.recovered(snapshot, lost)
    table = Table(title="Delivery health, Whop's side (webhook_delivery_health)")
    for column in ("hour", "attempts", "failed", "success %", "failures by status", "p95 s"):
        table.add_column(column)
    for row in found.health:
        table.add_row(*(str(v) for v in row))
    console.print(table)
    if found.back != found.lost:
        console.print(f"[red]outage: only {found.back} of the {found.lost} webhooks lost in the outage came back")
        return False
    console.print(
        f"outage: {found.lost} webhooks failed while the landing was down; all of them are in the events table, "
        "recovered from Whop's delivery log, so the scores equal a run without the outage."
    )
    return True


def _print_outro(
    console: Console, snapshot: Path, deliveries: list[world.Delivery], started: float, lost: list[str]
) -> bool:
    """What the demo found, how long it took, and how to look at the snapshot; False if the outage was not
    fully recovered."""
    _print_findings(console, snapshot)
    back = _print_recovery(console, snapshot, lost)
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
    return back
