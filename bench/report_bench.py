"""Cost of the analysts' report (flows.report.write_report) over a big snapshot: time and file size.

    .venv/bin/python -m bench.report_bench [--members 1000000] [--events 2000000] [--history-days 7]

The snapshot is synthesized as in bench/snapshot_write.py (same member and event shapes), with one history run
per day for ``--history-days`` days, a tenth of the events "left" (churn), drift rows of several kinds and a
run log. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import polars as pl
from snapshot_write import T0, events, members  # bench/ is the script's folder

from memberpulse.flows.report import write_report
from memberpulse.flows.snapshot import write_snapshot

TS = pl.Datetime("us", "UTC")


def run_log(n: int) -> pl.DataFrame:
    k = pl.int_range(0, n, dtype=pl.Int64)
    return pl.select(
        run_id="run_" + k.cast(pl.Utf8),
        flow=pl.lit("reconcile"),
        started_at=pl.lit(T0) - pl.duration(minutes=5 * (n - k)),
        status=pl.when(k.mod(17) == 0).then(pl.lit("failed")).otherwise(pl.lit("completed")),
        finished_at=pl.lit(T0) - pl.duration(minutes=5 * (n - k)) + pl.duration(seconds=20 + k.mod(30)),
        events_ingested=k.mod(500),
        rejects=k.mod(7),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--history-days", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="memberpulse-bench-") as tmp:
        root = Path(tmp)
        current = members(args.members, T0)
        churned = events(args.events, 0, args.members).with_columns(
            kind=pl.when(pl.int_range(pl.len()).mod(10) == 0).then(pl.lit("left")).otherwise(pl.col("kind"))
        )
        events_path = root / "events.parquet"
        churned.write_parquet(events_path)
        history = []
        for day in range(args.history_days):
            run_at = T0 - timedelta(days=args.history_days - 1 - day)
            path = root / "history" / f"{run_at:%Y%m%dT%H%M%S%fZ}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            (current if day == args.history_days - 1 else members(args.members, run_at)).write_parquet(path)
            history.append(path)
        reasons = ["status", "validity", "api_only", "webhook_only", "validity,status"]
        drift = current.head(5000).select("membership_id", reason=pl.int_range(pl.len()).mod(5).replace_strict(
            dict(enumerate(reasons)), return_dtype=pl.Utf8))  # fmt: skip
        write_snapshot(root / "snapshots", run_id="bench", run_at=T0, member_activity=current,
                       events_parquet=[events_path], history_parquet=history, drift=drift,
                       pipeline_runs=run_log(500), keep=1)  # fmt: skip

        timings = []
        for attempt in range(2):
            started = time.perf_counter()
            report = write_report(root / "snapshots")
            timings.append((f"write_report #{attempt + 1}", time.perf_counter() - started))
        size_mb = report.stat().st_size / 1e6

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"members {args.members:,}, events {args.events:,}, history {args.history_days} daily runs "
        f"({args.members * args.history_days:,} rows); report {size_mb:.2f} MB; peak RSS {peak_mb:,.0f} MiB\n"
    )
    print("| step | seconds |\n|---|---|")
    for label, seconds in timings:
        print(f"| {label} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
