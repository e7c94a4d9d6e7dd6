"""Landing throughput: durable webhooks/s and latency, group commit vs. an inline-fsync baseline.

    .venv/bin/python -m bench.landing_throughput            # needs wrk: apt-get install -y wrk

For each configuration it starts a server on 127.0.0.1 (a real ``serve`` process, data in a temp dir),
warms it up, then runs ``wrk -t2 -c32 -d10s --latency`` with a Lua script that cycles through pre-generated,
correctly signed, unique ~1 KB webhooks (Standard Webhooks headers, fresh timestamps), and reads requests/s and
p50/p99 from wrk. Afterwards it counts the lines in the raw store to check every 200 was stored.

Configurations (same run, one after the other, never concurrently):
  landing  — the real app: group commit, fsync on the store's thread;
  baseline — the same app, same verification and record, but one write+fsync inline per request;
  stored   — the real app with MEMBERPULSE_STORAGE_URL set (``--kinds landing,stored``): its shipper uploads
             what the segments gained every second to moto's S3 server (the named S3 stand-in, a process of its
             own on the same 2 cores); after the run the script waits until everything is shipped and checks
             the chunks hold every stored line.
each with 1 and 2 worker processes. The load generator shares the 2 cores with the server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent

from memberpulse.landing.mock_events import MockMember, activated, encode, standard_headers

SECRET = "ws_bench_secret_0123456789abcdef"
PATH = "/api/webhooks/whop"

LUA = r"""
local reqs = {}
local idx = 0
wrapped = 0
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(args[1] .. "/requests_" .. id .. ".bin", "rb"))
  while true do
    local header = f:read("*l")
    if not header then break end
    reqs[#reqs + 1] = f:read(tonumber(header))
  end
  f:close()
end

function request()
  idx = idx + 1
  if idx > #reqs then idx = 1; wrapped = wrapped + 1 end
  return reqs[idx]
end

function done(summary, latency, requests)
  local w = 0
  for _, t in ipairs(threads) do w = w + t:get("wrapped") end
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "non2xx": %d, "socket_errors": %d, "p50_us": %d, ' ..
    '"p90_us": %d, "p99_us": %d, "max_us": %d, "wrapped": %d}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, w))
end
"""


# --- server side (run in a child process: `--serve KIND`) ----------------------------------------------------


class InlineFsyncStore:
    """The baseline: the naive durable store. Each request writes its line and fsyncs, inline, on the loop."""

    def __init__(self, root: Path, writer: str) -> None:
        self.root = root
        self.writer = writer
        self.fd: int | None = None
        self.day: date | None = None

    async def append(self, webhook_id: str, line: bytes, *, day: date) -> bool:
        if self.fd is None or day != self.day:
            directory = self.root / f"dt={day.isoformat()}"
            directory.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(directory / f"{self.writer}-baseline.ndjson", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            self.day = day
        os.write(self.fd, line)
        os.fsync(self.fd)
        return True

    async def aclose(self) -> None:
        if self.fd is not None:
            os.close(self.fd)


def baseline_factory(settings):  # type: ignore[no-untyped-def]
    from memberpulse.landing.server import _app_factory

    app = _app_factory(settings)
    landing = app.state.landing
    landing.endpoint.store = InlineFsyncStore(settings.landing_dir, landing.store.writer)
    return app


def serve_child(kind: str, port: int) -> None:
    from memberpulse.landing.server import _app_factory, run_server
    from memberpulse.settings import Settings

    settings = Settings()
    factory = baseline_factory if kind == "baseline" else _app_factory  # "stored": the real app, storage set
    run_server(factory, settings, host="127.0.0.1", port=port)


# --- load side -----------------------------------------------------------------------------------------------


def make_requests(directory: Path, count: int, threads: int, port: int, id_prefix: str) -> int:
    """Write ``count`` signed requests, split over per-thread files; returns the mean body size."""
    rng = random.Random(7)
    now = int(time.time())
    at = datetime.now(UTC)
    directory.mkdir(parents=True, exist_ok=True)
    files = [open(directory / f"requests_{i}.bin", "wb") for i in range(threads)]  # noqa: SIM115
    total = 0
    for n in range(count):
        member = MockMember(
            membership_id=f"mem_{n:08d}{rng.getrandbits(32):08x}",
            user_id=f"user_{rng.getrandbits(48):012x}",
            company_id="biz_bench000001",
            email=f"member{n}@example.com",
            username=f"member{n}",
            name=f"Bench Member {n}",
        )
        payload = activated(member, at=at - timedelta(seconds=n % 3600))
        payload["data"]["metadata"] = {"note": "x" * 150}  # bring the body to ~1 KB, like a real delivery
        body = encode(payload)
        total += len(body)
        headers = standard_headers(body, secret=SECRET, webhook_id=f"msg_{id_prefix}_{n:09d}", timestamp=now)
        head = f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        raw = head.encode() + body
        out = files[n % threads]
        out.write(f"{len(raw)}\n".encode() + raw)
    for f in files:
        f.close()
    return total // count


def wait_ready(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}{PATH}", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server on port {port} did not come up")


def tree_cpu_seconds(pid: int) -> float:
    """utime+stime of ``pid`` and its children (the worker processes), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        proc_pid, ppid = int(stat.parent.name), int(fields[1])
        if proc_pid == pid or ppid == pid:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def mean_fsync_batch(port: int) -> float:
    """Mean records per write+fsync, from /metrics (with several workers: the one that answered)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    values = {}
    for line in text.splitlines():
        if line.startswith(("landing_fsync_batch_records_sum", "landing_fsync_batch_records_count")):
            values[line.split("{")[0]] = float(line.rsplit(" ", 1)[1])
    count = values.get("landing_fsync_batch_records_count", 0.0)
    return values.get("landing_fsync_batch_records_sum", 0.0) / count if count else 0.0


def shipped_lines(args: argparse.Namespace, data: Path, port: int) -> int:
    """Wait until the shipper caught up (its lag under 2 s after the run), then count the lines a worker with an
    empty cache pulls from the store; they must be every line on the landing's disk."""
    from memberpulse.flows.raw.remote import pull_raw
    from memberpulse.storage import ObjectStore, StorageUrl

    load_ended = time.monotonic()
    deadline = load_ended + 120
    stored = count_lines(data / "landing")
    while time.monotonic() < deadline:
        answer = httpx.get(f"http://127.0.0.1:{port}{PATH}", timeout=5).json()
        # A pass that finished and started after the load ended: everything stored was shipped.
        if answer.get("shipping", {}).get("lag_seconds", 1e9) < time.monotonic() - load_ended - 0.05:
            break
        time.sleep(0.5)
    caught_up = time.monotonic() - load_ended
    store = ObjectStore.open(StorageUrl.parse(args.storage_env["MEMBERPULSE_STORAGE_URL"]))
    cache = data.parent / f"cache-{data.name}"
    pull_raw(store, cache / "landing")
    pulled = count_lines(cache / "landing")
    if pulled != stored:
        raise SystemExit(f"the store holds {pulled} lines, the landing's disk {stored}")
    print(f"shipping caught up {caught_up:.1f} s after the load ended; the store holds all {pulled} lines")
    return pulled


def count_lines(root: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in root.rglob("*.ndjson"))


def run_one(kind: str, workers: int, args: argparse.Namespace, work: Path, port: int) -> dict[str, object]:
    data = work / f"data-{kind}-{workers}"
    env = {
        **os.environ,
        "WHOP_WEBHOOK_SECRET": SECRET,
        "MEMBERPULSE_DATA_DIR": str(data),
        "MEMBERPULSE_LANDING_WORKERS": str(workers),
        "MEMBERPULSE_LOG_LEVEL": args.log_level,
    }
    if kind == "stored":
        env.update(args.storage_env)
    log = open(work / f"server-{kind}-{workers}.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.landing_throughput", "--serve", kind, "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        wait_ready(port)
        wrk = [
            "wrk",
            f"-t{args.threads}",
            f"-c{args.connections}",
            f"-d{args.duration}s",
            "--latency",
            "-s",
            str(work / "bench.lua"),
            f"http://127.0.0.1:{port}{PATH}",
            "--",
            str(work / "run"),
        ]
        if args.warmup:  # its own unique requests, so the measured run sends no duplicates
            warm = [*wrk[:3], f"-d{args.warmup}s", *wrk[4:-1], str(work / "warm")]
            subprocess.run(warm, capture_output=True, check=True)
        time.sleep(0.5)  # let the warm-up's last requests land before counting
        before = count_lines(data / "landing")
        cpu_before = tree_cpu_seconds(server.pid)
        out = subprocess.run(wrk, capture_output=True, text=True, check=True).stdout
        server_cpu = tree_cpu_seconds(server.pid) - cpu_before
        batch_mean = mean_fsync_batch(port) if kind != "baseline" else 1.0
        shipped = shipped_lines(args, data, port) if kind == "stored" else None
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    stored = count_lines(data / "landing") - before
    seconds = result["duration_us"] / 1e6
    ok = result["requests"] - result["non2xx"]
    return {
        "kind": kind,
        "workers": workers,
        "requests_per_s": result["requests"] / seconds,
        "durable_per_s": stored / seconds,
        "p50_ms": result["p50_us"] / 1000,
        "p90_ms": result["p90_us"] / 1000,
        "p99_ms": result["p99_us"] / 1000,
        "max_ms": result["max_us"] / 1000,
        "non2xx": result["non2xx"],
        "socket_errors": result["socket_errors"],
        "ok": ok,
        "stored": stored,
        "wrapped": result["wrapped"],
        "server_cpu_us_per_req": server_cpu / max(1, result["requests"]) * 1e6,
        "records_per_fsync": batch_mean,
        "shipped_lines": shipped,
        "load_avg": os.getloadavg()[0],  # 1-minute load right after the run: how busy the 2 cores were
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--serve", choices=["landing", "baseline", "stored"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=38711)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--requests", type=int, default=240_000, help="pre-generated unique requests")
    parser.add_argument("--workers", default="1,2", help="worker counts to measure, e.g. 1,2")
    parser.add_argument("--kinds", default="landing,baseline")
    parser.add_argument("--log-level", default="INFO", help="landing log level (INFO = one guide-style line per hook)")
    args = parser.parse_args()
    if args.serve:
        serve_child(args.serve, args.port)
        return 0
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="landing-bench-"))
    with contextlib.ExitStack() as stack:
        args.storage_env = {}
        if "stored" in args.kinds.split(","):
            from tests.support.object_store import s3_server

            s3 = stack.enter_context(s3_server())
            args.storage_env = {**s3.environment(), "MEMBERPULSE_STORAGE_URL": f"s3://{s3.new_bucket()}/bench"}
            os.environ.update(s3.environment())  # this process pulls from it afterwards
        return measure_all(args, work)


def measure_all(args: argparse.Namespace, work: Path) -> int:
    try:
        (work / "bench.lua").write_text(LUA)
        size = make_requests(work / "run", args.requests, args.threads, args.port, "run")
        make_requests(work / "warm", args.requests // 6, args.threads, args.port, "warm")
        print(
            f"{args.requests} signed requests, mean body {size} bytes; wrk -t{args.threads} "
            f"-c{args.connections} -d{args.duration}s --latency; log level {args.log_level}; "
            f"load avg before: {os.getloadavg()[0]:.2f}"
        )
        rows = []
        for workers in [int(w) for w in args.workers.split(",")]:
            for kind in args.kinds.split(","):
                row = run_one(kind, workers, args, work, args.port)
                rows.append(row)
                print(json.dumps(row), flush=True)
        print()
        print(
            "| app | workers | requests/s | durable/s | p50 ms | p90 ms | p99 ms | max ms | non-2xx "
            "| server CPU µs/req | records/fsync | load avg |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['kind']} | {r['workers']} | {r['requests_per_s']:,.0f} | {r['durable_per_s']:,.0f} | "
                f"{r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.1f} | {r['non2xx']} | "
                f"{r['server_cpu_us_per_req']:.0f} | {r['records_per_fsync']:.1f} | {r['load_avg']:.1f} |"
            )
        for workers in sorted({int(r["workers"]) for r in rows}):  # type: ignore[call-overload]
            pair = {r["kind"]: r for r in rows if r["workers"] == workers}
            if {"landing", "baseline"} <= pair.keys():
                ratio = float(pair["landing"]["durable_per_s"]) / float(pair["baseline"]["durable_per_s"])  # type: ignore[arg-type]
                print(f"{workers} worker(s): landing / baseline = {ratio:.2f}x")
            if {"landing", "stored"} <= pair.keys():
                ratio = float(pair["stored"]["durable_per_s"]) / float(pair["landing"]["durable_per_s"])  # type: ignore[arg-type]
                print(f"{workers} worker(s): storage set / unset = {ratio:.2f}x")
        print(f"load avg after: {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
