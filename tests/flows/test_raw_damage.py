"""Raw records damaged after they landed, through real runs (``reconcile``, the plain-call path of
``memberpulse run``): event times far in the future are rejects, not facts."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import duckdb

from memberpulse.flows.reconcile import reconcile
from memberpulse.landing import mock_events as mock
from tests.flows.reconcile_testkit import AS_OF, append_raw, make_settings, member, raw_record, scenario

RUN_AT = AS_OF + timedelta(hours=1)


def test_an_event_dated_year_9999_is_a_reject_and_never_a_members_latest_activity(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    far = mock.accessed(member(1), accessed_at=AS_OF.replace(year=9999))
    append_raw(tmp_path, [*scenario(), raw_record(far, webhook_id="msg_year_9999")])

    first = reconcile(settings, as_of=RUN_AT, full_refresh=False)
    assert (first.status, first.events_ingested, first.rejects) == ("completed", 7, 1)
    with duckdb.connect(str(settings.snapshots_dir / "latest.duckdb"), read_only=True) as con:
        failures = con.execute("SELECT webhook_id, reason FROM webhook_failures").fetchall()
        last_active = con.execute("SELECT last_active FROM member_activity WHERE membership_id = 'mem_0001'").fetchone()
        future_events = con.execute("SELECT count(*) FROM events WHERE event_at > ?", [RUN_AT]).fetchone()
    assert [(w, r.split(":")[0]) for w, r in failures] == [("msg_year_9999", "event time in the future")]
    assert last_active == (AS_OF - timedelta(days=3.5),)  # its real last visit, not the year 9999
    assert future_events == (0,)
