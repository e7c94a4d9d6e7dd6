"""What a person sees when running a flow from the terminal: quiet Prefect, then one readable summary."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def quiet_prefect() -> None:
    """Keep Prefect's own chatter (engine start-up, ephemeral server) out of a CLI run; our lines stay.

    Prefect reads its settings from the environment when it is first imported, so the CLI calls this before
    importing any flow. Each value is only a default: the environment still wins.
    """
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The ephemeral API starts in a subprocess and migrates its SQLite database on first use; on a busy
    # 2-core machine that can take longer than Prefect's default 20 s.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    logging.getLogger("prefect").setLevel(logging.WARNING)


def print_run_summary(result: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    table = Table(
        title=f"reconcile run {str(result['run_id'])[:8]} · as of {result['as_of']}", show_lines=False
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("raw records read", result["records_read"]),
        ("events ingested", result["events_ingested"]),
        ("rejects (unparseable)", result["rejects"]),
        ("refused by the landing", result["landing_rejections"]),
        ("unknown event types", result["unknown_events"]),
        ("members", result["members"]),
        *((f"  {status}", n) for status, n in sorted(result["members_by_status"].items())),
        ("published to", result["publish_target"] or "nowhere (no Supabase target set)"),
        *(
            [("inserted / updated / unchanged", f"{result['inserted']} / {result['updated']} / {result['unchanged']}")]
            if result["publish_target"]
            else []
        ),
        ("drift (API vs webhooks)", result["drift_count"]),
        ("newly at risk", result["newly_at_risk_count"]),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)
    console.print(f"snapshot: [bold]{result['snapshot_path']}[/bold]")
    if result.get("analyst_report"):
        console.print(f"analyst report: [bold]{result['analyst_report']}[/bold]")


def run_sql(snapshots_dir: Path, sql: str, *, fmt: str, out: Path | None, console: Console | None = None) -> int:
    """``memberpulse sql``: print the rows as a table, or export them all with ``--format ... --out FILE``."""
    from memberpulse.errors import ConfigError
    from memberpulse.flows.snapshot._query import EXPORT_FORMATS, export, query

    console = console or Console()
    if out is not None:
        fmt = fmt if fmt != "table" else out.suffix.lstrip(".").lower()
        if fmt not in EXPORT_FORMATS:
            raise ConfigError(f"cannot tell the export format of {out}", hint="add --format csv|json|parquet")
        rows = export(snapshots_dir, sql, fmt=fmt, out=out)
        console.print(f"{rows} rows written to {out}", highlight=False)
        return 0
    if fmt != "table":
        raise ConfigError(f"--format {fmt} writes a file", hint="add --out FILE")
    columns, found, more = query(snapshots_dir, sql)
    table = Table(*columns, show_lines=False, header_style="bold")
    for row in found:
        table.add_row(*("NULL" if v is None else str(v) for v in row))
    console.print(table)
    if more:
        console.print(f"(first {len(found)} rows shown; export them all with --format csv --out FILE)")
    return 0
