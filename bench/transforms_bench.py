"""Transforms benchmark: parse + dedupe throughput, full fold + score, an incremental step, and the speedup over
the pure-Python reference (tests/support/transforms_reference.py), with peak RSS per phase.

    .venv/bin/python -m bench.transforms_bench              # 1M memberships, 10M events (+3% re-deliveries)
    .venv/bin/python -m bench.transforms_bench --scale 0.1  # quick: 100k memberships, 1M events

Synthetic raw records are generated once per size (vectorised polars, in a child process so the generator's
memory does not count) and cached under bench/out/ (gitignored) as parquet chunks of 1M webhooks. The raw
bodies of 10M events alone are ~3 GB, so parsing streams chunk by chunk, as the reconcile flow reads landing
segments; everything after parsing (dedupe, fold, score) runs on the whole 10M-event frame at once.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

ROOT = Path(__file__).resolve().parents[1]

from bench.transforms_synth import BASE, generate_raw, to_ndjson
from memberpulse import transforms

OUT = ROOT / "bench" / "out"
CHUNK = 1_000_000
AS_OF = BASE + timedelta(days=120)
PAGE = os.sysconf("SC_PAGE_SIZE")


class RssSampler:
    """Peak resident memory of this process, sampled every 10 ms (ru_maxrss cannot be reset per phase)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def current() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * PAGE

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(0.01)

    def reset(self) -> None:
        self.peak = self.current()


SAMPLER: RssSampler | None = None
RESULTS: list[dict[str, Any]] = []


@contextmanager
def phase(name: str, items: int | None = None, unit: str = "events") -> Iterator[dict[str, Any]]:
    assert SAMPLER is not None
    gc.collect()
    SAMPLER.reset()
    row: dict[str, Any] = {"phase": name, "items": items, "unit": unit}
    start, cpu = time.perf_counter(), time.process_time()
    yield row
    row["seconds"] = time.perf_counter() - start
    row["cpu_seconds"] = time.process_time() - cpu
    row["peak_rss_gib"] = max(SAMPLER.peak, SAMPLER.current()) / 2**30
    if row["items"]:
        row["per_second"] = row["items"] / row["seconds"]
    RESULTS.append(row)
    rate = f"  {row['per_second']:,.0f} {unit}/s" if row.get("per_second") else ""
    wall, cpu_s, peak = row["seconds"], row["cpu_seconds"], row["peak_rss_gib"]
    print(f"{name:<48} {wall:8.2f} s  cpu {cpu_s:7.2f} s  peak {peak:.2f} GiB{rate}", flush=True)


def cache_dir(members: int, events: int) -> Path:
    return OUT / f"transforms_raw_m{members}_e{events}"


def ensure_cache(members: int, events: int) -> list[Path]:
    folder = cache_dir(members, events)
    chunks = [folder / f"chunk_{i:03d}.parquet" for i in range(-(-events // CHUNK))]
    missing = [i for i, p in enumerate(chunks) if not p.exists()]
    if missing:
        print(f"generating {events:,} events for {members:,} memberships into {folder} …", flush=True)
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "bench.transforms_bench", "--generate", str(members), str(events)],
            cwd=ROOT,
            check=True,
        )
        print(f"  generated in {time.perf_counter() - t:.1f} s", flush=True)
    return chunks


def generate(members: int, events: int) -> None:
    folder = cache_dir(members, events)
    folder.mkdir(parents=True, exist_ok=True)
    for i, start in enumerate(range(0, events, CHUNK)):
        path = folder / f"chunk_{i:03d}.parquet"
        if not path.exists():
            part = generate_raw(members, events, start=start, count=min(CHUNK, events - start))
            part.write_parquet(path.with_suffix(".tmp"))
            path.with_suffix(".tmp").rename(path)


def to_reference_events(events: pl.DataFrame) -> list[Any]:
    from tests.support.transforms_reference import WebhookEvent

    t_us = events["event_at"].dt.epoch("us")
    return [
        WebhookEvent(
            webhook_id=w,
            membership_id=m,
            kind=k,
            shape="seed",
            t_us=t,
            name=n,
            email=e,
            status=s,
            user_id=u,
            company_id=c,
        )  # type: ignore[arg-type]
        for w, m, k, t, n, e, s, u, c in zip(
            events["webhook_id"],
            events["membership_id"],
            events["kind"],
            t_us,
            events["member_name"],
            events["email"],
            events["membership_status"],
            events["user_id"],
            events["company_id"],
            strict=True,
        )
    ]


def main() -> int:
    global SAMPLER
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 = 1M memberships, 10M events")
    parser.add_argument("--incremental-events", type=int, default=10_000)
    parser.add_argument("--reference-events", type=int, default=1_000_000)
    parser.add_argument("--generate", nargs=2, type=int, metavar=("MEMBERS", "EVENTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        generate(*args.generate)
        return 0

    members, n_events = int(1_000_000 * args.scale), int(10_000_000 * args.scale)
    chunks = ensure_cache(members, n_events)
    SAMPLER = RssSampler()
    print(
        f"polars {pl.__version__}, {pl.thread_pool_size()} threads, {os.cpu_count()} cpus, "
        f"load avg {os.getloadavg()[0]:.1f}",
        flush=True,
    )

    # parse_ndjson on one chunk's landing bytes (the flow's first step).
    first = pl.read_parquet(chunks[0])
    data = to_ndjson(first)
    with phase("parse_ndjson (1 chunk, NDJSON bytes → raw)", first.height, "records"):
        lines = transforms.parse_ndjson(data)
    assert lines.rejects.height == 0 and lines.records.height == first.height
    del data, lines, first

    # parse_raw, chunk by chunk; then dedupe over everything.
    parts: list[pl.DataFrame] = []
    parse_s, parse_cpu, raw_rows, load_s = 0.0, 0.0, 0, 0.0
    assert SAMPLER is not None
    gc.collect()
    SAMPLER.reset()
    for path in chunks:
        t = time.perf_counter()
        raw = pl.read_parquet(path)
        load_s += time.perf_counter() - t
        t, c = time.perf_counter(), time.process_time()
        parsed = transforms.parse_raw(raw)
        parse_s += time.perf_counter() - t
        parse_cpu += time.process_time() - c
        assert parsed.rejects.height == 0
        raw_rows += raw.height
        parts.append(parsed.events)
        del raw, parsed
    RESULTS.append(
        {
            "phase": "parse_raw (all chunks)",
            "items": raw_rows,
            "unit": "records",
            "seconds": parse_s,
            "cpu_seconds": parse_cpu,
            "per_second": raw_rows / parse_s,
            "peak_rss_gib": SAMPLER.peak / 2**30,
        }
    )
    peak_gib = SAMPLER.peak / 2**30
    print(
        f"{'parse_raw (all chunks)':<48} {parse_s:8.2f} s  cpu {parse_cpu:7.2f} s  peak {peak_gib:.2f} GiB  "
        f"{raw_rows / parse_s:,.0f} records/s  (parquet load {load_s:.1f} s not counted)",
        flush=True,
    )
    with phase("dedupe_events", raw_rows, "records"):
        events = pl.concat(parts, rechunk=True)
        del parts
        events = transforms.dedupe_events(events)
    print(f"  {raw_rows:,} raw records → {events.height:,} events", flush=True)

    with phase("full fold (10M-scale events → state)", events.height) as row:
        state = transforms.fold(None, events)
    with phase("score (all members)", state.height, "members"):
        scored = transforms.score(state, as_of=AS_OF, params=transforms.ScoringParams())
    fold_s, score_s = RESULTS[-2]["seconds"], RESULTS[-1]["seconds"]
    RESULTS.append(
        {
            "phase": "full fold + score",
            "items": events.height,
            "unit": "events",
            "seconds": fold_s + score_s,
            "cpu_seconds": RESULTS[-2]["cpu_seconds"] + RESULTS[-1]["cpu_seconds"],
            "per_second": events.height / (fold_s + score_s),
            "peak_rss_gib": max(RESULTS[-2]["peak_rss_gib"], RESULTS[-1]["peak_rss_gib"]),
        }
    )
    print(f"  {state.height:,} members; statuses {dict(scored.group_by('status').len().iter_rows())}", flush=True)
    del scored, row

    # Incremental: a batch of new webhooks for existing members, over the full state.
    batch_raw = generate_raw(members, n_events, start=n_events, count=args.incremental_events, dup_rate=0.0)
    with phase("incremental: parse + dedupe + fold 10k", batch_raw.height):
        batch = transforms.dedupe_events(transforms.parse_raw(batch_raw).events)
        state2 = transforms.fold(state, batch)
    with phase("incremental: re-score all members", state2.height, "members"):
        transforms.score(state2, as_of=AS_OF, params=transforms.ScoringParams())
    del state2, batch, batch_raw, state

    # The pure-Python reference on a slice, against polars on the same slice: every event of a random subset of
    # members sized to ~reference_events events (a member slice keeps the real events-per-member density).
    share = max(1, round(events.height / args.reference_events))
    sample = events.filter(pl.col("membership_id").hash(11) % share == 0)
    del events
    gc.collect()
    with phase("polars fold + score (reference slice)", sample.height):
        ref_state = transforms.fold(None, sample)
        polars_rows = transforms.score(ref_state, as_of=AS_OF, params=transforms.ScoringParams())
    from tests.support.transforms_reference import reference_scores, us_of

    ref_events = to_reference_events(sample)
    with phase("pure-Python reference (same slice)", sample.height):
        expected = reference_scores(ref_events, [], as_of_us=us_of(AS_OF))
    got = {r["membership_id"]: r for r in polars_rows.to_dicts()}
    agree = got == expected
    speedup = RESULTS[-1]["seconds"] / RESULTS[-2]["seconds"]
    print(f"  reference agrees with polars on {len(expected):,} members: {agree}; speedup {speedup:.0f}×")

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"process peak RSS (ru_maxrss, includes the reference run): {peak:.2f} GiB")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"transforms_results_scale{args.scale}.json").write_text(
        json.dumps(
            {
                "scale": args.scale,
                "members": members,
                "events": n_events,
                "phases": RESULTS,
                "reference_agrees": agree,
                "speedup": speedup,
                "ru_maxrss_gib": peak,
                "measured_at": datetime.now(UTC).isoformat(),
                "load_avg": os.getloadavg(),
            },
            indent=2,
            default=str,
        )
    )
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
