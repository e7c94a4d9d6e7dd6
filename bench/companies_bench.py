"""Many companies: the backfill's fan-out against the time Whop's rate limit allows, and an incremental reconcile
run over 1,000 companies of 1,000 members against one company of 1M.

    .venv/bin/python -m bench.companies_bench fanout                  # 1,000 × 1,000, one app key, 4,000/min
    .venv/bin/python -m bench.companies_bench fanout --companies 100 --concurrency 1    # a serial loop, to compare
    .venv/bin/python -m bench.companies_bench fanout --companies 100 --prefect          # the deployed flow
    .venv/bin/python -m bench.companies_bench incremental             # 1,000 × 1,000 vs 1 × 1M, 10k new events

``fanout``: the Whop API simulator (a stand-in for Whop) serves ``--companies`` × ``--members`` from a process of
its own (so it does not share the backfill's interpreter), answers every request after ``--latency`` seconds
(Whop's own answer time) and enforces ``--per-minute`` requests a minute per key with Whop's 429; ``memberpulse
backfill``'s plain calls fetch every company with the app's key, the budget set to that limit. Prints the wall
time, the requests, the time the budget allows them (nine tenths of the limit: (requests − burst) ÷ rate), the
most requests the simulator saw in any minute, its 429s, and the time the same requests take at Whop's real
600 a minute (the budget's floor, which the scaled run shows the fan-out reaches). Whop's real limit is scaled
up, not the window down, so the run stays within what two cores serve while the limit still binds.

``incremental``: two data dirs built the same way (synthetic webhooks of the transforms benchmark, each
membership's company from ``company_of``, and Whop snapshots of every company as a backfill writes them), one
of 1,000 companies and one of one company, each given a first run, then ``--repeat`` runs each with ``--new``
new events, timed (plain calls, as ``memberpulse run``); the target is the many-company run within 1.2× of the
one-company run.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import polars as pl
import pyarrow as pa

from bench.reconcile_bench import write_segments
from bench.transforms_synth import BASE, SPAN_S

KEY = "sim_bench_app_key"


def company_ids(companies: int) -> list[str]:
    return [f"biz_c{i:04d}" for i in range(companies)]


# --- fanout: the simulator in its own process -------------------------------------------------------------------


def _serve(conn: Any, companies: int, members: int, per_minute: int, latency: float) -> None:
    """The child: the simulator until told to stop, then what it saw (requests, 429s, the most in any minute)."""
    from memberpulse.whop_simulator import Population, create_app, serve_in_thread
    from tests.support.whop_testkit import most_in_any_window

    now = datetime(2026, 12, 1, tzinfo=UTC)
    populations = [
        Population.generate(seed=n, n=members, company_id=c, now=now) for n, c in enumerate(company_ids(companies))
    ]

    async def answer_time(endpoint: str, company_id: str | None) -> None:
        await asyncio.sleep(latency)

    app = create_app(populations, api_key=KEY, intercept=answer_time, rate_limit=(per_minute, 60.0))
    with serve_in_thread(app) as base_url:
        conn.send(base_url)
        conn.recv()
        served = app.state.whop_simulator.served()
    ok = [r.at for r in served if r.status == 200]
    conn.send({"requests": len(served), "throttled": sum(r.status == 429 for r in served),
               "most_in_a_minute": most_in_any_window(ok, 60.0)})  # fmt: skip


def fanout(args: argparse.Namespace) -> None:
    from memberpulse.flows.backfill import backfill
    from memberpulse.flows.whop import RateBudget
    from memberpulse.settings import Settings

    parent, child = mp.get_context("spawn").Pipe()
    server = mp.get_context("spawn").Process(
        target=_serve, args=(child, args.companies, args.members, args.per_minute, args.latency)
    )
    server.start()
    base_url = parent.recv()
    with tempfile.TemporaryDirectory(prefix="fanout-bench-") as tmp:
        settings = Settings(
            MEMBERPULSE_DATA_DIR=tmp, WHOP_API_KEY=KEY, WHOP_COMPANY_IDS=",".join(company_ids(args.companies)),
            WHOP_API_BASE_URL=base_url, MEMBERPULSE_WHOP_RATE_LIMIT_REQUESTS=args.per_minute,
            MEMBERPULSE_BACKFILL_CONCURRENCY=args.concurrency, MEMBERPULSE_WHOP_MAX_RATE_LIMIT_WAIT_SECONDS=600,
        )  # type: ignore[call-arg]  # fmt: skip
        load = os.getloadavg()[0]
        started = time.perf_counter()
        result = _deployed(settings) if args.prefect else backfill(settings)
        wall = time.perf_counter() - started
    parent.send("stop")
    seen = parent.recv()
    server.join()
    budget = RateBudget.from_settings(settings)
    whop = RateBudget.from_settings(Settings(MEMBERPULSE_WHOP_RATE_LIMIT_REQUESTS=600))  # type: ignore[call-arg]
    floor = (seen["requests"] - budget.burst) / budget.per_second
    print(f"{args.companies} companies × {args.members} members, concurrency {args.concurrency}, latency "
          f"{args.latency} s, limit {args.per_minute}/min (budget {budget.per_window:.0f}/min)")  # fmt: skip
    print(f"written {len(result.written)}, failed {len(result.failures)}; {seen['requests']} requests, "
          f"{seen['throttled']} answered 429, at most {seen['most_in_a_minute']} in any minute")  # fmt: skip
    print(f"wall {wall:.1f} s; the budget allows {floor:.1f} s ({wall / floor:.2f}×); at Whop's 600/min the same "
          f"requests take ≥ {(seen['requests'] - whop.burst) / whop.per_second / 60:.1f} min; "
          f"load average {load:.2f} → {os.getloadavg()[0]:.2f}")  # fmt: skip


def _deployed(settings: Any) -> Any:
    """The deployed flow (a Prefect task per company, the key's global concurrency limit) on Prefect's test
    harness: a temporary API server of its own, started before the clock runs."""
    from prefect.testing.utilities import prefect_test_harness

    from memberpulse.flows.backfill import backfill_flow

    with prefect_test_harness(server_startup_timeout=180):
        started = time.perf_counter()
        result = backfill_flow(settings)
        print(f"(the flow itself: {time.perf_counter() - started:.1f} s)")
        return result


# --- incremental: 1,000 × 1,000 against 1 × 1M ---------------------------------------------------------------


def write_snapshots(settings: Any, members: int, companies: int, fetched_at: datetime) -> None:
    """Each company's snapshot as a backfill writes it: every membership (valid, mostly), every member with a
    last access in the history's span."""
    from memberpulse.flows.whop import MEMBERS_SCHEMA, MEMBERSHIPS_SCHEMA, ParquetSink, SnapshotWriter

    per = -(-members // companies)
    for n, company in enumerate(company_ids(companies) if companies > 1 else ["biz_demo"]):
        rows = pl.select(i=pl.int_range(n * per, min(members, (n + 1) * per))).with_columns(
            key=pl.col("i").cast(pl.Utf8),
            created_at=pl.lit(BASE, pl.Datetime("us", "UTC")),
            fetched_at=pl.lit(fetched_at, pl.Datetime("us", "UTC")),
        )
        memberships = rows.select(
            membership_id="mem_" + pl.col("key"), company_id=pl.lit(company), user_id="user_" + pl.col("key"),
            member_id="mber_" + pl.col("key"), product_id=pl.lit("prod_1"),
            status=pl.when(pl.col("i") % 10 == 0).then(pl.lit("canceled")).otherwise(pl.lit("active")),
            created_at="created_at", username="member" + pl.col("key"), fetched_at="fetched_at",
        )  # fmt: skip
        people = rows.select(
            member_id="mber_" + pl.col("key"), user_id="user_" + pl.col("key"),
            last_accessed_at=pl.col("created_at") + pl.duration(seconds=(pl.col("i") * 7919) % SPAN_S),
            fetched_at="fetched_at",
        )  # fmt: skip
        with SnapshotWriter(settings.warehouse_dir, fetched_at=fetched_at, company_id=company) as writer:
            for resource, frame, schema in (
                ("memberships", memberships, MEMBERSHIPS_SCHEMA), ("members", people, MEMBERS_SCHEMA)
            ):  # fmt: skip
                sink = ParquetSink(writer.path_for(resource), schema)
                sink.write(_batch(frame, schema))
                sink.close()
            writer.commit(pages={"memberships": 1, "members": 1})


def _batch(frame: pl.DataFrame, schema: pa.Schema) -> pa.RecordBatch:
    table = frame.to_arrow()
    columns = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type)
               for f in schema]  # fmt: skip
    return pa.RecordBatch.from_arrays([c.combine_chunks() if hasattr(c, "combine_chunks") else c for c in columns],
                                      schema=schema)  # fmt: skip


def incremental_runs(args: argparse.Namespace, companies: int) -> dict[str, Any]:
    from memberpulse.flows.reconcile import reconcile
    from memberpulse.settings import Settings

    as_of = BASE + timedelta(seconds=SPAN_S + SPAN_S // 3 + 86_400)
    with tempfile.TemporaryDirectory(prefix="companies-bench-") as tmp:
        data_dir = Path(tmp)
        settings = Settings(MEMBERPULSE_DATA_DIR=str(data_dir), MEMBERPULSE_SNAPSHOTS_KEEP=2)  # type: ignore[call-arg]
        write_segments(data_dir, members=args.members, start=0, count=args.events, name="history", companies=companies)
        write_snapshots(settings, args.members, companies, as_of - timedelta(hours=1))
        t = time.perf_counter()
        reconcile(settings, as_of=as_of, full_refresh=False)
        first = time.perf_counter() - t
        runs, steps = [], []
        for n in range(1, args.repeat + 1):
            write_segments(data_dir, members=args.members, start=args.events + (n - 1) * args.new, count=args.new,
                           name=f"new-{n}", companies=companies)  # fmt: skip
            t = time.perf_counter()
            report = reconcile(settings, as_of=as_of + timedelta(minutes=5 * n), full_refresh=False)
            runs.append(time.perf_counter() - t)
            steps.append(report.seconds)
    return {"first": first, "runs": runs, "steps": steps[len(steps) // 2]}


def incremental(args: argparse.Namespace) -> None:
    results = {}
    for companies in (args.companies, 1):
        load = os.getloadavg()[0]
        results[companies] = incremental_runs(args, companies)
        got = results[companies]
        print(f"{companies} company(ies): first run {got['first']:.1f} s; +{args.new:,} events: "
              f"{', '.join(f'{r:.2f}' for r in got['runs'])} s (median {statistics.median(got['runs']):.2f}); "
              f"load {load:.2f} → {os.getloadavg()[0]:.2f}")  # fmt: skip
        print("   median run's steps: " + ", ".join(f"{k} {v:.2f}" for k, v in got["steps"].items()))
    many, one = (statistics.median(results[c]["runs"]) for c in (args.companies, 1))
    print(f"many / one = {many / one:.2f} (target ≤ 1.2)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="bench", required=True)
    fan = sub.add_parser("fanout")
    fan.add_argument("--companies", type=int, default=1000)
    fan.add_argument("--members", type=int, default=1000)
    fan.add_argument("--per-minute", type=int, default=4000, help="the simulator's limit per key, and the budget's")
    fan.add_argument("--concurrency", type=int, default=8)
    fan.add_argument("--latency", type=float, default=0.1, help="seconds the simulator takes to answer")
    fan.add_argument("--prefect", action="store_true", help="the deployed flow, on Prefect's test harness")
    inc = sub.add_parser("incremental")
    inc.add_argument("--companies", type=int, default=1000)
    inc.add_argument("--members", type=int, default=1_000_000)
    inc.add_argument("--events", type=int, default=2_000_000, help="history events (one join per member first)")
    inc.add_argument("--new", type=int, default=10_000)
    inc.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    fanout(args) if args.bench == "fanout" else incremental(args)


if __name__ == "__main__":
    main()
