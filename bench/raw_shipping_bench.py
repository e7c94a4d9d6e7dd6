"""Object-store requests per day of a landing replica and a worker with MEMBERPULSE_STORAGE_URL set, counted.

    .venv/bin/python -m bench.raw_shipping_bench                      # defaults: --rates 1,10,100 --seconds 120
    .venv/bin/python -m bench.raw_shipping_bench --rates 10 --seconds 60 --ship-interval 5

For each rate it starts moto's S3 server (the named S3 stand-in, its own process) and one real ``memberpulse
serve`` with the storage URL set, sends unique signed webhooks at that rate for ``--seconds``, and reads the
landing's own request counters (``landing_object_store_requests_total`` on /metrics) before and after the window.
Meanwhile a worker pulls the raw store into its cache every ``--run-every`` seconds (as reconcile runs would),
counted by its client's ``ObjectStore.requests``. Both are scaled to 86,400 s. Nothing is estimated: a request
the code does not make is not counted, and one it makes is.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx

from memberpulse.flows.raw.remote import pull_raw
from memberpulse.landing import mock_events as mock
from memberpulse.storage import ObjectStore, StorageUrl
from tests.support.landing_process import SECRET, LandingProcess, landing_process
from tests.support.object_store import s3_server

DAY = 86_400


def landing_requests(landing: LandingProcess) -> Counter[str]:
    text = httpx.get(landing.url.replace("/api/webhooks/whop", "/metrics"), timeout=5).text
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        if line.startswith("landing_object_store_requests_total{"):
            operation = line.split('operation="', 1)[1].split('"', 1)[0]
            counts[operation] = int(float(line.rsplit(" ", 1)[1]))
    return counts


def warm_up(landing: LandingProcess) -> None:
    who = mock.MockMember(membership_id="mem_warm", user_id="user_warm", company_id="biz_bench")
    body, headers = mock.signed_delivery(mock.accessed(who, accessed_at=datetime.now(UTC)), secret=SECRET)
    assert httpx.post(landing.url, content=body, headers=headers, timeout=30).status_code == 200


def send_for(landing: LandingProcess, worker: ObjectStore, cache: Path, args: argparse.Namespace, rate: int) -> int:
    """Webhooks at ``rate``/s for ``args.seconds``, a worker pull every ``args.run_every`` s; returns how many."""
    who = mock.MockMember(membership_id="mem_bench", user_id="user_bench", company_id="biz_bench")
    sent, started = 0, time.monotonic()
    next_pull = started + args.run_every
    with httpx.Client(timeout=30) as client:
        while (now := time.monotonic()) < started + args.seconds:
            due = int((now - started) * rate) + 1
            while sent < due:
                payload = mock.accessed(who, accessed_at=datetime.now(UTC))
                body, headers = mock.signed_delivery(payload, secret=SECRET, webhook_id=f"msg_{rate}_{sent:09d}")
                assert client.post(landing.url, content=body, headers=headers).status_code == 200
                sent += 1
            if now >= next_pull:
                pull_raw(worker, cache / "landing", cache / "quarantine")
                next_pull += args.run_every
            time.sleep(max(0.0, started + sent / rate - time.monotonic()))
    return sent


def measure(rate: int, args: argparse.Namespace, work: Path) -> dict[str, object]:
    with s3_server() as s3:
        bucket = s3.new_bucket()
        env = {
            **s3.environment(),
            "MEMBERPULSE_STORAGE_URL": f"s3://{bucket}/memberpulse",
            "MEMBERPULSE_SHIP_INTERVAL_SECONDS": str(args.ship_interval),
            "MEMBERPULSE_LOG_LEVEL": "WARNING",
        }
        os.environ.update(s3.environment())
        worker = ObjectStore.open(StorageUrl.parse(env["MEMBERPULSE_STORAGE_URL"]))
        with landing_process(work / f"landing-{rate}", **env) as landing:
            warm_up(landing)  # the once-per-process requests (its writer's marker and listing) are not counted
            time.sleep(2 * args.ship_interval)
            before = landing_requests(landing)
            load_before = os.getloadavg()[0]
            sent = send_for(landing, worker, work / f"worker-{rate}", args, rate)
            time.sleep(2 * args.ship_interval)  # the last webhooks shipped
            shipped = landing_requests(landing) - before
        pull_raw(worker, work / f"worker-{rate}" / "landing", work / f"worker-{rate}" / "quarantine")  # the rest
    scale = DAY / args.seconds
    return {
        "rate": rate,
        "sent": sent,
        "landing": {op: round(n * scale) for op, n in sorted(shipped.items())},
        "worker": {op: round(n * scale) for op, n in sorted(worker.requests.items())},
        "load": (load_before, os.getloadavg()[0]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rates", default="1,10,100")
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--ship-interval", type=float, default=1.0)
    parser.add_argument("--run-every", type=float, default=60.0, help="seconds between the worker's pulls")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="raw-shipping-bench-") as tmp:
        for rate in (int(r) for r in args.rates.split(",")):
            rows.append(measure(rate, args, Path(tmp)))
            print(rows[-1], flush=True)
    print(f"\nship interval {args.ship_interval} s, a worker pull every {args.run_every} s, {args.seconds} s per rate")
    print("| webhooks/s | landing PUT/day | landing LIST/day | landing other/day | worker LIST/day | worker GET/day "
          "| load avg (before, after) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        land, work = row["landing"], row["worker"]
        assert isinstance(land, dict) and isinstance(work, dict)
        other = sum(n for op, n in land.items() if op not in ("put", "list"))
        load = row["load"]
        assert isinstance(load, tuple)
        print(f"| {row['rate']} | {land.get('put', 0):,} | {land.get('list', 0):,} | {other:,} | "
              f"{work.get('list', 0):,} | {work.get('get', 0):,} | {load[0]:.1f}, {load[1]:.1f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
