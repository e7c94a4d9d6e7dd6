"""The snapshot built from the previous one plus a run's changes equals one built from scratch from the same
inputs — every table and view — over random runs of the real reconcile flow (new members, accesses,
redeliveries, invalidations; as-of steps from none to days, so history runs are added and thinned away)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from memberpulse.contracts.tables import WHOP_MEMBER_ACCESS
from memberpulse.flows.reconcile import _steps, reconcile, reconcile_flow
from memberpulse.flows.snapshot import SNAPSHOT_TABLES, SNAPSHOT_VIEWS, VIEW_COLUMNS, _writer
from memberpulse.flows.snapshot import write_snapshot as real_write_snapshot
from memberpulse.landing import mock_events as mock
from tests.support.reconcile_testkit import AS_OF, append_raw, make_settings, member, raw_record

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]  # runs the real flow

STEPS = [timedelta(0), timedelta(minutes=20), timedelta(hours=3), timedelta(days=1), timedelta(days=2, hours=5)]


def _contents(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with duckdb.connect(str(path), read_only=True) as con:
        out = {}
        for name in (*SNAPSHOT_TABLES, *SNAPSHOT_VIEWS):
            columns = [r[0] for r in con.execute(f"DESCRIBE {name}").fetchall() if r[0] != "written_at"]
            out[name] = con.execute(f"SELECT {', '.join(columns)} FROM {name} ORDER BY ALL").fetchall()
        return out


@st.composite
def batches(draw: st.DrawFn, run: int) -> list[bytes]:
    lines = []
    for i in range(draw(st.integers(0, 6))):
        who = member(draw(st.integers(1, 8)))
        at = AS_OF + timedelta(hours=run * 6 - draw(st.integers(0, 200)))
        kind = draw(st.sampled_from(["valid", "access", "access", "invalid", "redelivery"]))
        if kind == "valid":
            lines.append(raw_record(mock.went_valid(who, created_at=at)))
        elif kind == "invalid":
            lines.append(raw_record(mock.went_invalid(who, expired_at=at)))
        else:
            webhook_id = f"msg_{who.membership_id}_{run}_{i}" if kind == "access" else "msg_again"
            lines.append(raw_record(mock.accessed(who, accessed_at=at), webhook_id=webhook_id, received_at=at))
    return lines


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), phases=[Phase.generate])
@given(st.data())
def test_incremental_snapshot_equals_a_build_from_scratch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: st.DataObject
) -> None:
    work = tmp_path / uuid.uuid4().hex
    config = make_settings(work)
    updates: list[bool] = []
    real_update = _writer._update_and_swap

    def spy_update(*args: Any, **kwargs: Any) -> bool:
        updates.append(real_update(*args, **kwargs))
        return updates[-1]

    def write_both(**kwargs: Any) -> Path:
        written = real_write_snapshot(**kwargs)
        scratch = real_write_snapshot(**{**kwargs, "snapshots_dir": work / "scratch", "lineage": None})
        assert _contents(written) == _contents(scratch)
        return written

    monkeypatch.setattr(_writer, "_update_and_swap", spy_update)
    monkeypatch.setattr(_steps, "write_snapshot", write_both)
    as_of = AS_OF
    for run in range(data.draw(st.integers(2, 5))):
        append_raw(work, data.draw(batches(run)))
        as_of += data.draw(st.sampled_from(STEPS))
        reconcile_flow(as_of=as_of, settings=config)
    assert any(updates), "the incremental path was never taken"


def test_a_previous_snapshot_in_an_older_layout_is_built_anew_in_the_current_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upgrade never leaves a snapshot patched in the layout of the release before: a previous file that
    lacks a column this release declares (here ``whop_member_access.company_id``) is not patched but rebuilt,
    and every update writes this release's views."""
    config = make_settings(tmp_path)
    append_raw(tmp_path, [raw_record(mock.went_valid(member(1), created_at=AS_OF - timedelta(days=2)))])
    reconcile(config, as_of=AS_OF, full_refresh=False)
    latest = config.snapshots_dir / "latest.duckdb"
    latest.chmod(0o644)  # the file of an older release, as it wrote it
    with duckdb.connect(str(latest)) as con:
        con.execute("ALTER TABLE whop_member_access DROP COLUMN company_id")
        con.execute("CREATE OR REPLACE VIEW members_at_risk_now AS SELECT 1 AS older_view")
    latest.chmod(0o444)
    updates: list[bool] = []
    real_update = _writer._update_and_swap

    def spy_update(*args: Any, **kwargs: Any) -> bool:
        updates.append(real_update(*args, **kwargs))
        return updates[-1]

    monkeypatch.setattr(_writer, "_update_and_swap", spy_update)

    append_raw(tmp_path, [raw_record(mock.accessed(member(1), accessed_at=AS_OF))], writer="later")
    reconcile(config, as_of=AS_OF + timedelta(hours=1), full_refresh=False)

    assert updates == [False]  # found the older layout: built from scratch
    with duckdb.connect(str(latest), read_only=True) as con:
        access = [r[0] for r in con.execute("DESCRIBE whop_member_access").fetchall()]
        at_risk = [r[0] for r in con.execute("DESCRIBE members_at_risk_now").fetchall()]
    assert access == list(WHOP_MEMBER_ACCESS.names) and at_risk == list(VIEW_COLUMNS["members_at_risk_now"])
