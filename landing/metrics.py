"""Prometheus metrics for the landing endpoint, in the text exposition format, one set per app.

Hand-rolled rather than prometheus-client: the hot path does an int increment and a ``bisect`` per request,
without locks (everything runs on the event loop thread). Every series carries one label, ``host``: the same
across restarts, so a restart resets counters (which Prometheus' ``rate`` handles) instead of starting new
series; ``landing_process_start_time_seconds`` says when the process started. With several worker processes
each has its own counters and a scrape reaches one of them.
"""

from __future__ import annotations

import re
import socket
import time
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

Outcome = Literal[
    "stored",
    "duplicate",
    "bad_signature",
    "bad_body",
    "too_large",
    "method_not_allowed",
    "storage_unavailable",
]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.015, 0.03, 0.06, 0.125, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0)
FSYNC_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.015, 0.03, 0.06, 0.125, 0.25, 1.0)


class Histogram:
    """Cumulative-on-render histogram: ``observe`` bumps one bucket (``le`` upper bounds, inclusive)."""

    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...]) -> None:
        self.name = name
        self.help_text = help_text
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def render(self, labels: str) -> list[str]:
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} histogram"]
        running = 0
        for bound, n in zip((*(_num(b) for b in self.buckets), "+Inf"), self.counts, strict=True):
            running += n
            lines.append(f'{self.name}_bucket{{{labels},le="{bound}"}} {running}')
        lines.append(f"{self.name}_sum{{{labels}}} {_num(self.total)}")
        lines.append(f"{self.name}_count{{{labels}}} {running}")
        return lines


class LandingMetrics:
    def __init__(self, *, host: str | None = None) -> None:
        self._labels = f'host="{_escape(host or host_label())}"'
        self.started_at = time.time()
        self.requests: dict[Outcome, int] = dict.fromkeys(OUTCOMES, 0)
        self.quarantine: dict[str, int] = {"kept": 0, "dropped": 0}
        self.latency = Histogram(
            "landing_webhook_request_seconds", "Time from request start to response, webhook POSTs.", LATENCY_BUCKETS
        )
        self.batch = Histogram(
            "landing_fsync_batch_records",
            "Records made durable per write+fsync (group commit batch size).",
            BATCH_BUCKETS,
        )
        self.flush = Histogram("landing_fsync_batch_seconds", "Time to write and fsync one batch.", FSYNC_BUCKETS)

    def observe_request(self, outcome: Outcome, seconds: float) -> None:
        self.requests[outcome] += 1
        self.latency.observe(seconds)

    def observe_flush(self, records: int, seconds: float) -> None:
        self.batch.observe(records)
        self.flush.observe(seconds)

    def observe_quarantine(self, kept: bool) -> None:
        self.quarantine["kept" if kept else "dropped"] += 1

    def render(
        self,
        *,
        free_bytes: int | None = None,
        storage_ok: bool | None = None,
        refusals: Mapping[str, int] | None = None,
        shipping: ShippingFigures | None = None,
    ) -> bytes:
        """The text exposition; ``free_bytes``/``storage_ok`` come from the storage health at scrape time,
        ``refusals`` (per reason) from the quarantine, ``shipping`` from the shipper (storage URL set)."""
        labels = self._labels
        lines = [
            "# HELP landing_process_start_time_seconds Start time of this landing process, Unix seconds.",
            "# TYPE landing_process_start_time_seconds gauge",
            f"landing_process_start_time_seconds{{{labels}}} {_num(self.started_at)}",
        ]
        if free_bytes is not None:
            lines += [
                "# HELP landing_data_free_bytes Free bytes on the data volume (MEMBERPULSE_DATA_DIR).",
                "# TYPE landing_data_free_bytes gauge",
                f"landing_data_free_bytes{{{labels}}} {free_bytes}",
            ]
        if storage_ok is not None:
            lines += [
                "# HELP landing_storage_ok 1 when webhooks can be stored (the health answer is 200), else 0.",
                "# TYPE landing_storage_ok gauge",
                f"landing_storage_ok{{{labels}}} {int(storage_ok)}",
            ]
        lines += [
            "# HELP landing_webhook_requests_total Webhook deliveries by outcome.",
            "# TYPE landing_webhook_requests_total counter",
        ]
        lines += [f'landing_webhook_requests_total{{{labels},outcome="{o}"}} {n}' for o, n in self.requests.items()]
        lines += [
            "# HELP landing_quarantine_records_total Rejections offered to the quarantine log, by whether they "
            "fit under its size cap.",
            "# TYPE landing_quarantine_records_total counter",
        ]
        lines += [f'landing_quarantine_records_total{{{labels},result="{r}"}} {n}' for r, n in self.quarantine.items()]
        if refusals is not None:
            lines += [
                "# HELP landing_refusals_total Refused webhooks by status and reason, whether or not their entry was "
                "kept in the quarantine.",
                "# TYPE landing_refusals_total counter",
            ]
            lines += [f'landing_refusals_total{{{labels},reason="{_escape(r)}"}} {n}' for r, n in refusals.items()]
        lines += shipping.render(labels) if shipping is not None else []
        for histogram in (self.latency, self.batch, self.flush):
            lines += histogram.render(labels)
        return ("\n".join(lines) + "\n").encode()


@dataclass(frozen=True)
class ShippingFigures:
    """The shipper's figures at scrape time (``MEMBERPULSE_STORAGE_URL`` set)."""

    lag_seconds: float
    ok: bool
    chunks: int
    bytes: int
    requests: Mapping[str, int]

    def render(self, labels: str) -> list[str]:
        lines = [
            "# HELP landing_ship_lag_seconds Acknowledged webhooks older than this are in the object store; younger "
            "ones may be only on this host's disk.",
            "# TYPE landing_ship_lag_seconds gauge",
            f"landing_ship_lag_seconds{{{labels}}} {_num(self.lag_seconds)}",
            "# HELP landing_ship_ok 1 when the last ship to the object store succeeded, else 0.",
            "# TYPE landing_ship_ok gauge",
            f"landing_ship_ok{{{labels}}} {int(self.ok)}",
            "# HELP landing_shipped_chunks_total Chunk objects uploaded to the object store.",
            "# TYPE landing_shipped_chunks_total counter",
            f"landing_shipped_chunks_total{{{labels}}} {self.chunks}",
            "# HELP landing_shipped_bytes_total Raw bytes uploaded to the object store.",
            "# TYPE landing_shipped_bytes_total counter",
            f"landing_shipped_bytes_total{{{labels}}} {self.bytes}",
            "# HELP landing_object_store_requests_total Requests to the object store, by operation.",
            "# TYPE landing_object_store_requests_total counter",
        ]
        name = "landing_object_store_requests_total"
        lines += [f'{name}{{{labels},operation="{op}"}} {n}' for op, n in self.requests.items()]
        return lines


def host_label() -> str:
    return re.sub(r"[^A-Za-z0-9.\-]", "_", socket.gethostname()) or "host"


def _num(value: float) -> str:
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
