"""Backfill benchmark: 100k memberships + 100k members from the Whop API simulator.

    .venv/bin/python -m bench.backfill_bench [--n 100000] [--page-size 100] [--skip-cli]

The simulator runs in its own process (as Whop would be: another machine), so the client and the server do not
share a GIL. Measured in one run, same pages, same connection reuse:

1. the simulator's own serving rate: a plain httpx loop following cursors, no SDK (the ceiling);
2. the same loop plus whop-sdk's response models (what the SDK's parsing costs on its own);
3. the backfill core (flows.whop client → Parquet snapshot), resources one after the other, in a fresh
   process, with its peak RSS;
4. the same with both resources concurrently (what the Prefect flow does);
5. ``memberpulse backfill`` end to end (Prefect ephemeral mode included), peak RSS of the CLI process.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

API_KEY = "sim_bench_key"
COMPANY_ID = "biz_bench"


def _serve(n: int, ready: Any, stop: Any) -> None:
    from memberpulse.whop_simulator import Population, create_app, serve_in_thread

    population = Population.generate(seed=1, n=n, company_id=COMPANY_ID, now=datetime(2026, 11, 27, tzinfo=UTC))
    with serve_in_thread(create_app(population, api_key=API_KEY)) as url:
        ready.put(url)
        stop.wait()


def _plain_loop_concurrent(base_url: str, page_size: int) -> tuple[int, int, float]:
    """Both resources at once, one connection each: the serving ceiling for the flow's access pattern."""
    results: list[tuple[int, int, float]] = []
    started = time.perf_counter()
    threads = [
        threading.Thread(target=lambda r=r: results.append(_plain_loop(base_url, page_size, False, (r,))))
        for r in ("memberships", "members")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(r[0] for r in results), sum(r[1] for r in results), time.perf_counter() - started


def _plain_loop(
    base_url: str,
    page_size: int,
    parse_models: bool,
    resources: tuple[str, ...] = ("memberships", "members"),
) -> tuple[int, int, float]:
    import httpx
    import orjson

    if parse_models:
        from whop_sdk.members.types.list_members_response import ListMembersResponse
        from whop_sdk.memberships.types.list_memberships_response import ListMembershipsResponse

        models: dict[str, Any] = {"memberships": ListMembershipsResponse, "members": ListMembersResponse}
    records = pages = 0
    started = time.perf_counter()
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as http:
        for resource_name in resources:
            after = None
            while True:
                params: dict[str, Any] = {"account_id": COMPANY_ID, "first": page_size}
                if after:
                    params["after"] = after
                response = http.get(f"/{resource_name}", params=params)
                response.raise_for_status()
                if parse_models:
                    page = models[resource_name].model_validate(response.json())
                    records += len(page.data)
                    after = page.page_info.end_cursor
                else:
                    body = orjson.loads(response.content)
                    records += len(body["data"])
                    after = body["page_info"]["end_cursor"]
                pages += 1
                if not after:
                    break
    return records, pages, time.perf_counter() - started


def _backfill_core(base_url: str, data_dir: str, page_size: int, concurrent: bool, out: Any) -> None:
    from memberpulse.flows.backfill import fetch_resource
    from memberpulse.flows.whop import SnapshotWriter
    from memberpulse.settings import Settings

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        WHOP_API_KEY=API_KEY,
        WHOP_COMPANY_ID=COMPANY_ID,
        WHOP_API_BASE_URL=base_url,
        MEMBERPULSE_WHOP_PAGE_SIZE=page_size,
        MEMBERPULSE_DATA_DIR=data_dir,
    )
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fetched_at = datetime.now(UTC)
    started, cpu_started = time.perf_counter(), time.process_time()
    with SnapshotWriter(settings.warehouse_dir, fetched_at=fetched_at, company_id=COMPANY_ID) as writer:
        if concurrent:
            results: list[Any] = []
            threads = [
                threading.Thread(
                    target=lambda r=r: results.append(fetch_resource(r, settings, writer.tmp_dir, fetched_at))
                )
                for r in ("memberships", "members")
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        else:
            results = [fetch_resource(r, settings, writer.tmp_dir, fetched_at) for r in ("memberships", "members")]
        snapshot = writer.commit()
    seconds = time.perf_counter() - started
    out.put(
        {
            "records": sum(r.records for r in results),
            "pages": sum(r.pages for r in results),
            "seconds": seconds,
            "cpu": time.process_time() - cpu_started,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "baseline_mb": baseline / 1024,
            "counts": dict(snapshot.counts),
        }
    )


def _cli(base_url: str, data_dir: str, page_size: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WHOP_", "MEMBERPULSE_"))}
    env.update(
        WHOP_API_KEY=API_KEY,
        WHOP_COMPANY_ID=COMPANY_ID,
        WHOP_API_BASE_URL=base_url,
        MEMBERPULSE_WHOP_PAGE_SIZE=str(page_size),
        MEMBERPULSE_DATA_DIR=data_dir,
    )
    code = (
        "import resource, sys\n"
        "from memberpulse.cli import main\n"
        "rc = main(['backfill'])\n"
        "u = resource.getrusage(resource.RUSAGE_SELF)\n"
        "print('RSS_KB', u.ru_maxrss, u.ru_utime + u.ru_stime, file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"memberpulse backfill failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    usage = next(line.split() for line in done.stderr.splitlines() if line.startswith("RSS_KB"))
    summary = next(line for line in done.stdout.splitlines() if "wrote" in line)
    return {"seconds": seconds, "rss_mb": int(usage[1]) / 1024, "cpu": float(usage[2]), "summary": summary}


@dataclass
class Row:
    label: str
    records: int
    seconds: float
    client_cpu: float  # CPU seconds of the fetching process
    server_cpu: float  # CPU seconds the simulator process spent meanwhile
    rss: str = "—"


def _proc_cpu(pid: int) -> float:
    """utime + stime of a process, in seconds (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=100_000, help="memberships (and members) in the simulator")
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--skip-cli", action="store_true")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Queue(), ctx.Event()
    started = time.perf_counter()
    server = ctx.Process(target=_serve, args=(args.n, ready, stop), daemon=True)
    server.start()
    base_url = ready.get(timeout=300)
    assert server.pid is not None
    print(
        f"simulator: {args.n:,} memberships + {args.n:,} members at {base_url} "
        f"(generated in {time.perf_counter() - started:.1f} s); page size {args.page_size}"
    )
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    rows: list[Row] = []

    def in_process(label: str, run: Any) -> None:
        server_before, cpu_before = _proc_cpu(server.pid), time.process_time()  # type: ignore[arg-type]
        records, _, seconds = run()
        cpu = time.process_time() - cpu_before
        rows.append(Row(label, records, seconds, cpu, _proc_cpu(server.pid) - server_before))  # type: ignore[arg-type]

    try:
        in_process(
            "simulator serving: plain httpx loop, no SDK, sequential",
            lambda: _plain_loop(base_url, args.page_size, parse_models=False),
        )
        in_process(
            "simulator serving: plain httpx loops, both resources at once",
            lambda: _plain_loop_concurrent(base_url, args.page_size),
        )
        in_process(
            "plain httpx loop + whop-sdk response models, sequential",
            lambda: _plain_loop(base_url, args.page_size, parse_models=True),
        )
        for concurrent in (False, True):
            out = ctx.Queue()
            server_before = _proc_cpu(server.pid)
            with tempfile.TemporaryDirectory(prefix="mp-bench-") as data_dir:
                child = ctx.Process(target=_backfill_core, args=(base_url, data_dir, args.page_size, concurrent, out))
                child.start()
                result = out.get(timeout=1800)
                child.join()
            label = "backfill core (client → Parquet), " + ("both resources at once" if concurrent else "sequential")
            rss = f"{result['rss_mb']:.0f} MiB (after imports {result['baseline_mb']:.0f})"
            rows.append(
                Row(
                    label,
                    result["records"],
                    result["seconds"],
                    result["cpu"],
                    _proc_cpu(server.pid) - server_before,
                    rss,
                )
            )
        if not args.skip_cli:
            server_before = _proc_cpu(server.pid)
            with tempfile.TemporaryDirectory(prefix="mp-bench-") as data_dir:
                cli = _cli(base_url, data_dir, args.page_size)
            rows.append(
                Row(
                    "`memberpulse backfill` end to end (Prefect ephemeral mode)",
                    2 * args.n,
                    cli["seconds"],
                    cli["cpu"],
                    _proc_cpu(server.pid) - server_before,
                    f"{cli['rss_mb']:.0f} MiB",
                )
            )
            print(cli["summary"])
    finally:
        stop.set()
        server.join(timeout=10)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print()
    print("| measurement | records | wall s | records/s | client CPU µs/record | simulator CPU µs/record | peak RSS |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r.label} | {r.records:,} | {r.seconds:.1f} | {r.records / r.seconds:,.0f} | "
            f"{r.client_cpu / r.records * 1e6:.0f} | {r.server_cpu / r.records * 1e6:.0f} | {r.rss} |"
        )


if __name__ == "__main__":
    main()
