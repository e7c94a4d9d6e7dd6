"""Recovery from Whop's delivery log, end to end: the real whop-sdk against the Whop API simulator (a stand-in for
api.whop.com) on 127.0.0.1, which signs and POSTs webhooks to a real ``memberpulse serve``; the real reconcile
flow; ``memberpulse recover`` / ``send-test --via-whop`` as subprocesses where the exit code matters."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
from whop_sdk import Whop
from whop_sdk.environment import WhopEnvironment

from memberpulse.contracts.raw_record import SCHEME_DELIVERY_LOG
from memberpulse.demo import landing_process
from memberpulse.flows.reconcile import reconcile, reconcile_flow
from memberpulse.flows.recover import RecoveryStore, recover
from memberpulse.landing import mock_events as mock
from memberpulse.settings import Settings
from memberpulse.testing.whop_faults import Faults
from memberpulse.whop_simulator import Population, SimWebhook, WebhookHub, create_app, serve_in_thread
from tests.support.landing_testkit import read_records
from tests.support.net import free_port
from tests.support.reconcile_testkit import COMPARED

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

AS_OF = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
COMPANY = "biz_recover"
KEY = "sim_key_recover"
SECRET = "ws_recover_test_secret_0123456789abcdef"


def stream() -> list[dict[str, Any]]:
    """A fixed stream for 9 members (joins, visits, departures), each message with its own envelope id."""
    day = timedelta(days=1)
    payloads: list[dict[str, Any]] = []
    for n in range(1, 10):
        who = mock.MockMember(membership_id=f"mem_{n:03d}", user_id=f"user_{n:03d}", company_id=COMPANY,
                              email=f"m{n}@example.com", username=f"member{n}", name=f"Member {n}")  # fmt: skip
        joined = AS_OF - (10 + 3 * n) * day
        kind = [mock.went_valid(who, created_at=joined)] if n % 2 else [mock.activated(who, at=joined)]
        visits = [mock.accessed(who, accessed_at=AS_OF - (n + k) * day / 2) for k in range(n % 4)]
        left = [mock.went_invalid(who, expired_at=AS_OF - day)] if n % 3 == 0 else []
        for i, payload in enumerate([*kind, *visits, *left]):
            payloads.append({**payload, "id": f"msg_stream_{n:03d}_{i}"})
    return payloads


@dataclass
class World:
    root: Path
    api: str
    hub: WebhookHub
    hook: SimWebhook
    faults: Faults
    port: int

    @property
    def settings(self) -> Settings:
        return Settings(
            MEMBERPULSE_DATA_DIR=str(self.root), WHOP_API_KEY=KEY, WHOP_COMPANY_ID=COMPANY, WHOP_API_BASE_URL=self.api,
            WHOP_WEBHOOK_ID=self.hook.id, WHOP_WEBHOOK_SECRET=SECRET, MEMBERPULSE_WHOP_BACKOFF_BASE_SECONDS=0.05,
        )  # fmt: skip

    @contextmanager
    def landing(self) -> Iterator[str]:
        with landing_process(self.root, SECRET, port=self.port) as url:
            yield url

    def env(self, **extra: str) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("WHOP_", "MEMBERPULSE_", "SUPABASE_"))}
        return {**keep, "MEMBERPULSE_DATA_DIR": str(self.root), "WHOP_API_KEY": KEY, "WHOP_COMPANY_ID": COMPANY,
                "WHOP_API_BASE_URL": self.api, "WHOP_WEBHOOK_ID": self.hook.id, "WHOP_WEBHOOK_SECRET": SECRET,
                "MEMBERPULSE_WHOP_BACKOFF_BASE_SECONDS": "0.05", **extra}  # fmt: skip

    def cli(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "memberpulse", *args], env=self.env(**extra), cwd=self.root,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip


@contextmanager
def world(root: Path) -> Iterator[World]:
    root.mkdir(parents=True)
    population = Population.generate(seed=3, n=3, company_id=COMPANY, now=AS_OF)
    hub = WebhookHub(COMPANY, timeout=2.0)
    faults = Faults()
    port = free_port()
    hook = hub.register(f"http://127.0.0.1:{port}/api/webhooks/whop", secret=SECRET)
    app = create_app(population, api_key=KEY, webhooks=hub, intercept=faults, rewrite=faults.rewrite)
    with serve_in_thread(app) as api:
        yield World(root, api, hub, hook, faults, port)


def send_with_outage(w: World, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first and last thirds land; the landing is stopped for the middle third. Returns the middle."""
    third = len(payloads) // 3
    with w.landing():
        assert all(a.success for a in w.hub.send_many(w.hook.id, payloads[:third]))
    lost = payloads[third : 2 * third]
    assert not any(a.success for a in w.hub.send_many(w.hook.id, lost))
    with w.landing():
        assert all(a.success for a in w.hub.send_many(w.hook.id, payloads[2 * third :]))
    return lost


def members(settings: Settings) -> pl.DataFrame:
    with duckdb.connect(str(settings.snapshots_dir / "latest.duckdb"), read_only=True) as con:
        table = con.sql(f"SELECT {', '.join(COMPARED)} FROM member_activity ORDER BY membership_id").pl()
        events = con.execute("SELECT count(*) FROM events").fetchone()
    assert events is not None
    return table.with_columns(pl.lit(events[0]).alias("events_in_snapshot"))


def test_outage_then_recover_gives_the_member_table_of_the_same_stream_without_outage(tmp_path: Path) -> None:
    payloads = stream()
    with world(tmp_path / "calm") as calm:
        with calm.landing():
            assert all(a.success for a in calm.hub.send_many(calm.hook.id, payloads))
        reconcile_flow(as_of=AS_OF, settings=calm.settings)
        expected = members(calm.settings)

    with world(tmp_path / "outage") as w:
        lost = send_with_outage(w, payloads)
        result = recover(w.settings)
        assert result.recovered == len(lost) and result.failed_attempts == len(lost)
        assert result.unlogged_failures == len(lost) and result.already_stored == len(payloads) - len(lost)
        report = reconcile_flow(as_of=AS_OF, settings=w.settings)
        assert report["whop_unlogged_failures"] == len(lost)
        got = members(w.settings)
        recovered = [r for r in read_records(w.settings.landing_dir) if r["scheme"] == SCHEME_DELIVERY_LOG]
        with duckdb.connect(str(w.settings.snapshots_dir / "latest.duckdb"), read_only=True) as con:
            health = con.execute("SELECT sum(attempts), sum(failed), string_agg(failures_by_status) "
                             "FROM webhook_delivery_health").fetchone()  # fmt: skip
            companies = con.execute("SELECT DISTINCT company_id FROM webhook_deliveries").fetchall()

    assert got.height == 9 and got.equals(expected)
    assert sorted(r["webhook_id"] for r in recovered) == sorted(p["id"] for p in lost)
    assert all(r["signed_at"] is None for r in recovered)
    assert health == (len(payloads), len(lost), f"0: {len(lost)}")
    assert companies == [(COMPANY,)]  # each attempt carries the company its body names


def test_recover_twice_then_a_replay_through_the_endpoint_counts_each_event_once(tmp_path: Path) -> None:
    payloads = stream()
    with world(tmp_path / "w") as w:
        lost = send_with_outage(w, payloads)
        first = recover(w.settings)
        again = recover(w.settings)
        with w.landing():
            replay = w.cli("recover", "--replay")
        records = read_records(w.settings.landing_dir)
        report = reconcile_flow(as_of=AS_OF, settings=w.settings)
        replays = [a for a in w.hub.deliveries(w.hook.id) if a.replayed_from is not None]

    assert (first.recovered, again.recovered, again.already_stored) == (len(lost), 0, len(payloads))
    assert replay.returncode == 0, replay.stderr
    # --replay re-sent exactly the failed messages, under their original ids, and they landed signed.
    assert sorted(a.webhook_id for a in replays) == sorted(p["id"] for p in lost)
    assert all(a.success for a in replays)
    signed = {r["webhook_id"] for r in records if r["scheme"] == "standard"}
    assert {p["id"] for p in lost} <= signed
    # Each lost event is now in the raw store twice (recovered, then replayed); the reconcile counts it once.
    assert report["events_ingested"] == len(payloads)
    assert report["records_read"] == len(payloads) + len(lost)


def test_replay_resends_only_failed_deliveries_and_they_land_signed(tmp_path: Path) -> None:
    payloads = stream()
    with world(tmp_path / "w") as w:
        lost = send_with_outage(w, payloads)
        with w.landing():
            done = w.cli("recover", "--replay")
        records = read_records(w.settings.landing_dir)
        replays = [a for a in w.hub.deliveries(w.hook.id) if a.replayed_from is not None]

    assert done.returncode == 0, done.stderr
    assert "replay" in done.stdout
    assert sorted(a.webhook_id for a in replays) == sorted(p["id"] for p in lost)
    assert sorted(r["webhook_id"] for r in records) == sorted(p["id"] for p in payloads)
    assert {r["scheme"] for r in records} == {"standard"}


def test_rate_limit_storm_and_dead_api_are_bounded_exit_3_and_write_nothing(tmp_path: Path) -> None:
    with world(tmp_path / "w") as w:
        send_with_outage(w, stream())
        w.faults.rate_limit(None, retry_after=0.3, endpoint="deliveries")
        started = time.monotonic()
        storm = w.cli("recover", MEMBERPULSE_WHOP_MAX_RATE_LIMIT_WAIT_SECONDS="1")
        storm_seconds = time.monotonic() - started
        dead = w.cli("recover", WHOP_API_BASE_URL=f"http://127.0.0.1:{free_port()}/api/v1",
                     MEMBERPULSE_WHOP_MAX_ATTEMPTS="2")  # fmt: skip
        store = RecoveryStore(w.settings.warehouse_dir, w.settings.landing_dir, w.settings.quarantine_dir)
        written = [r for r in read_records(w.settings.landing_dir) if r["scheme"] == SCHEME_DELIVERY_LOG]

    assert storm.returncode == 3, storm.stderr
    assert "rate limited" in storm.stderr and "nothing written" in storm.stderr
    assert storm_seconds < 30
    assert dead.returncode == 3, dead.stderr
    assert "connection error" in dead.stderr
    assert written == [] and not store.state_path.exists() and not store.deliveries_path.exists()


def test_a_short_rate_limit_is_waited_out(tmp_path: Path) -> None:
    with world(tmp_path / "w") as w:
        lost = send_with_outage(w, stream())
        w.faults.rate_limit(2, retry_after=0.1, endpoint="deliveries")
        result = recover(w.settings)
    assert result.recovered == len(lost)


def test_missing_or_wrong_webhook_id_is_exit_2_naming_it(tmp_path: Path) -> None:
    with world(tmp_path / "w") as w:
        unset = w.cli("recover", WHOP_WEBHOOK_ID="")
        unknown = w.cli("recover", WHOP_WEBHOOK_ID="hook_doesnotexist")
        malformed = w.cli("recover", WHOP_WEBHOOK_ID="my-webhook")
        by_url = w.cli("recover", WHOP_WEBHOOK_ID="", MEMBERPULSE_PUBLIC_WEBHOOK_URL=w.hook.url + "/")
        wrong_url = w.cli("recover", WHOP_WEBHOOK_ID="", MEMBERPULSE_PUBLIC_WEBHOOK_URL="https://elsewhere.example/x")

    for done in (unset, unknown, malformed):
        assert done.returncode == 2, done.stderr
        assert "WHOP_WEBHOOK_ID" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert "hook_doesnotexist" in unknown.stderr
    assert by_url.returncode == 0, by_url.stderr
    assert wrong_url.returncode == 2 and "MEMBERPULSE_PUBLIC_WEBHOOK_URL" in wrong_url.stderr


def test_send_test_via_whop_reports_whether_whops_sample_landed(tmp_path: Path) -> None:
    with world(tmp_path / "w") as w:
        with w.landing():
            landed = w.cli("send-test", "--via-whop", "membership.activated")
        down = w.cli("send-test", "--via-whop", "membership.activated")
        records = read_records(w.settings.landing_dir)

    assert landed.returncode == 0, landed.stdout + landed.stderr
    assert "landed" in landed.stdout
    assert [r["event_type"] for r in records] == ["membership.activated"]
    assert down.returncode == 1 and "not reached" in down.stdout


def test_simulator_delivery_log_reads_in_whop_sdk_newest_first_with_cursors(tmp_path: Path) -> None:
    with world(tmp_path / "w") as w:
        lost = send_with_outage(w, stream()[:9])
        client = Whop(token=KEY, environment=WhopEnvironment(api=w.api, vault=w.api), max_retries=0)
        seen = list(client.webhooks.list_deliveries(w.hook.id, first=2))  # the SDK's pager follows the cursors
        hooks = list(client.webhooks.list(account_id=COMPANY))
        queued = client.webhooks.replay(w.hook.id, sent_after=(datetime.now(UTC) - timedelta(hours=1)).isoformat(),
                                        failed_only=True)  # fmt: skip

    assert [d.id for d in seen] == [a.id for a in w.hub.log[:9]][::-1]
    assert [d.success for d in seen].count(False) == len(lost)
    assert {d.response_code for d in seen if not d.success} == {0}
    assert seen[-1].request_body["id"] == "msg_stream_001_0" and seen[-1].sent_at.endswith("Z")
    assert [h.id for h in hooks] == [w.hook.id] and hooks[0].last_failure_at is not None
    assert queued.queued is True


def test_a_crash_after_the_records_before_the_state_repeats_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payloads = stream()
    with world(tmp_path / "w") as w:
        lost = send_with_outage(w, payloads)

        def crash(*args: object, **kwargs: object) -> None:
            raise OSError("killed before the state was written")

        with monkeypatch.context() as patched:
            patched.setattr(RecoveryStore, "commit", crash)
            with pytest.raises(OSError):
                recover(w.settings)
        after_crash = [r for r in read_records(w.settings.landing_dir) if r["scheme"] == SCHEME_DELIVERY_LOG]
        rerun = recover(w.settings)
        report = reconcile_flow(as_of=AS_OF, settings=w.settings)

    assert len(after_crash) == len(lost)  # the records were durable before the crash
    assert rerun.recovered == 0 and rerun.already_stored == len(payloads)
    assert report["events_ingested"] == len(payloads) and report["records_read"] == len(payloads)


# --- an API that cannot be trusted: endless or cycling cursors, unusable deliveries, other companies --------


def _delivery_log_records(settings: Settings) -> list[dict[str, Any]]:
    return [r for r in read_records(settings.landing_dir) if r["scheme"] == SCHEME_DELIVERY_LOG]


def test_a_delivery_log_that_pages_without_end_is_bounded_exit_3_and_writes_nothing(tmp_path: Path) -> None:
    with world(tmp_path / "w") as w:
        send_with_outage(w, stream())
        w.faults.endless_delivery_log()  # fresh attempts on every page, forever
        endless = w.cli("recover", MEMBERPULSE_RECOVER_MAX_DELIVERIES="300")
        w.faults.clear()
        w.faults.cycling_cursor("deliveries")  # A → B → A
        cycling = w.cli("recover", MEMBERPULSE_WHOP_PAGE_SIZE="5")
        w.faults.clear()
        w.faults.endless_cursor("deliveries")  # a new cursor every page, the same attempts
        runaway = w.cli("recover", MEMBERPULSE_WHOP_PAGE_SIZE="5", MEMBERPULSE_WHOP_MAX_PAGES="30")
        store = RecoveryStore(w.settings.warehouse_dir, w.settings.landing_dir, w.settings.quarantine_dir)
        written = _delivery_log_records(w.settings)

    for done in (endless, cycling, runaway):
        assert done.returncode == 3, done.stdout + done.stderr
        assert "Traceback" not in done.stderr and "nothing written" in done.stderr
    assert "more than 300 attempts" in endless.stderr.splitlines()[0]
    first = cycling.stderr.splitlines()[0]
    assert "deliveries" in first and "cursor" in first and "first by page 1): it cycles" in first
    assert "deliveries" in runaway.stderr and "still has a next page after 30 pages" in runaway.stderr
    assert written == [] and not store.state_path.exists() and not list(w.settings.landing_dir.rglob("*.partial"))


def test_unusable_deliveries_are_recorded_failures_and_every_other_event_is_recovered(tmp_path: Path) -> None:
    payloads = stream()
    newest_lost = len(payloads) - 2 * (len(payloads) // 3)  # the log is newest first: the lost third follows
    with world(tmp_path / "w") as w:
        lost = send_with_outage(w, payloads)
        w.faults.malformed_delivery("nested", index=newest_lost)  # 300 levels: no JSON encoder of ours takes it
        w.faults.malformed_delivery("sent_at", index=newest_lost + 1)  # "yesterday"
        first = recover(w.settings)
        second = recover(w.settings)  # nothing blocks a later recovery
        run = reconcile(w.settings, as_of=AS_OF, full_refresh=False)
        recovered = _delivery_log_records(w.settings)
        with duckdb.connect(str(w.settings.snapshots_dir / "latest.duckdb"), read_only=True) as con:
            failures = dict(con.execute("SELECT webhook_id, reason FROM webhook_failures").fetchall())

    unusable = {lost[-1]["id"], lost[-2]["id"]}  # the newest two lost messages
    assert (first.recovered, first.unusable, second.recovered) == (len(lost) - 2, 2, 0)
    assert {r["webhook_id"] for r in recovered} == {p["id"] for p in lost} - unusable
    assert run.status == "completed" and set(failures) == unusable
    assert "sent_at 'yesterday' is not a time" in failures[lost[-2]["id"]]
    assert "request_body cannot be stored as JSON" in failures[lost[-1]["id"]]


def test_an_event_of_another_company_is_neither_recovered_nor_published(tmp_path: Path) -> None:
    payloads = stream()
    newest_lost = len(payloads) - 2 * (len(payloads) // 3)
    with world(tmp_path / "w") as w:
        lost = send_with_outage(w, payloads)
        w.faults.other_company_delivery("biz_someone_else", index=newest_lost)
        result = recover(w.settings)
        reconcile(w.settings, as_of=AS_OF, full_refresh=False)
        recovered = _delivery_log_records(w.settings)
        with duckdb.connect(str(w.settings.snapshots_dir / "latest.duckdb"), read_only=True) as con:
            events = {row[0] for row in con.execute("SELECT webhook_id FROM events").fetchall()}

    foreign = lost[-1]["id"]
    assert (result.other_company, result.recovered) == (1, len(lost) - 1)
    assert foreign not in {r["webhook_id"] for r in recovered} and foreign not in events
    assert len(events) == len(payloads) - 1
