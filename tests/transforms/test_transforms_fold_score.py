"""Fold, API facts, score and drift on small hand-made histories whose answers are worked out in the comments."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from memberpulse import transforms
from memberpulse.errors import InvalidInput
from tests.support.transforms_reference import (
    ApiMember,
    ApiMembership,
    Snapshot,
    WebhookEvent,
    raw_frame,
    raw_record,
    snapshot_frames,
    us_of,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
PARAMS = transforms.ScoringParams()


def ev(i: int, kind: str, at: datetime, mid: str = "mem_1", **kw: Any) -> WebhookEvent:
    return WebhookEvent(
        webhook_id=f"wh_{i}",
        membership_id=mid,
        kind=kind,
        shape=kw.pop("shape", "seed"),
        t_us=us_of(at),
        user_id="user_1",
        company_id=kw.pop("company_id", "biz_1"),
        **kw,
    )


def events(*evs: WebhookEvent) -> pl.DataFrame:
    parsed = transforms.parse_raw(raw_frame([raw_record(e) for e in evs]))
    assert parsed.rejects.height == 0
    return transforms.dedupe_events(parsed.events)


def facts(snap: Snapshot) -> pl.DataFrame:
    return transforms.api_facts(*snapshot_frames(snap))


def scored(state: pl.DataFrame, at: datetime, params: transforms.ScoringParams = PARAMS) -> dict[str, Any]:
    rows = transforms.score(state, as_of=at, params=params).to_dicts()
    return {r["membership_id"]: r for r in rows}


def test_score_formula_and_status_thresholds() -> None:
    state = transforms.fold(None, events(ev(1, "joined", T0)))
    # days = 0 → 100; 7 days (one half-life) → 50, still active; 7 days + 1 µs → at_risk; 30 d → 5; > 30 d inactive.
    cases = [
        (T0, 100, "active"),
        (T0 + 7 * DAY, 50, "active"),
        (T0 + 7 * DAY + timedelta(microseconds=1), 50, "at_risk"),
        (T0 + 14 * DAY, 25, "at_risk"),
        (T0 + 30 * DAY, 5, "at_risk"),
        (T0 + 31 * DAY, 5, "inactive"),
        (T0 + 70 * DAY, 0, "inactive"),
    ]
    for at, score, status in cases:
        row = scored(state, at)["mem_1"]
        assert (row["engagement_score"], row["activity_score"], row["status"]) == (score, score, status), at
    # A real number of days: 3.5 days → floor(100 · 0.5^0.5 + 0.5) = floor(71.21) = 71.
    assert scored(state, T0 + timedelta(days=3.5))["mem_1"]["engagement_score"] == 71
    custom = transforms.ScoringParams(half_life_days=14, active_days=1, at_risk_days=10)
    row = scored(state, T0 + 2 * DAY, custom)["mem_1"]
    assert (row["engagement_score"], row["status"]) == (91, "at_risk")  # floor(100·0.5^(1/7)+0.5) = 91


def test_left_scores_zero_but_the_row_is_kept() -> None:
    state = transforms.fold(None, events(ev(1, "joined", T0), ev(2, "accessed", T0 + DAY), ev(3, "left", T0 + 2 * DAY)))
    row = scored(state, T0 + 2 * DAY)["mem_1"]
    assert (row["valid"], row["engagement_score"], row["status"]) == (False, 0, "inactive")
    assert row["last_active"] == T0 + DAY and row["joined_at"] == T0 and row["total_sessions"] == 1


def test_equal_times_left_beats_joined_and_webhook_beats_api() -> None:
    state = transforms.fold(None, events(ev(1, "joined", T0), ev(2, "left", T0)))
    assert scored(state, T0)["mem_1"]["valid"] is False
    snap = Snapshot(
        fetched_us=us_of(T0), memberships=(ApiMembership("mem_1", "user_1", "biz_1", "active", us_of(T0 - DAY)),)
    )
    # API says valid at T0, webhook says left at T0: the webhook wins.
    state = transforms.fold(None, events(ev(1, "left", T0)), facts(snap))
    row = state.row(0, named=True)
    assert (row["valid"], row["valid_source"], row["webhook_valid"]) == (False, "webhook", False)
    # A later API fact wins over an older webhook.
    later = Snapshot(fetched_us=us_of(T0 + DAY), memberships=snap.memberships)
    state = transforms.fold(state, None, facts(later))
    assert (state["valid"].item(), state["valid_source"].item(), state["webhook_valid"].item()) == (True, "api", False)


def test_no_validity_fact_counts_as_not_valid() -> None:
    state = transforms.fold(None, events(ev(1, "accessed", T0)))
    assert state["valid"].item() is None
    row = scored(state, T0)["mem_1"]
    assert (row["valid"], row["engagement_score"], row["status"], row["total_sessions"]) == (False, 0, "inactive", 1)


def test_distinct_access_instants_across_webhooks_and_api() -> None:
    # Two accesses at the same instant (different webhooks), one more, and the API's last_accessed_at equal to
    # one of them: 2 distinct instants. Re-folding the same snapshot later must not count again.
    snap = Snapshot(
        fetched_us=us_of(T0 + 5 * DAY),
        memberships=(ApiMembership("mem_1", "user_1", "biz_1", "active", us_of(T0)),),
        members=(ApiMember("user_1", us_of(T0 + 2 * DAY)),),
    )
    evs = events(
        ev(1, "joined", T0), ev(2, "accessed", T0 + DAY), ev(3, "accessed", T0 + DAY), ev(4, "accessed", T0 + 2 * DAY)
    )
    state = transforms.fold(None, evs, facts(snap))
    assert state["total_sessions"].item() == 2
    again = transforms.fold(state, None, facts(snap))
    assert again.equals(state)
    assert transforms.fold(again, evs).equals(state)


def test_api_only_member_from_snapshot() -> None:
    snap = Snapshot(
        fetched_us=us_of(T0 + 3 * DAY),
        memberships=(
            ApiMembership("mem_9", "user_9", "biz_1", "past_due", us_of(T0), name=None, username="nine", email=None),
            ApiMembership("mem_8", "user_8", "biz_1", "canceled", us_of(T0)),
        ),
        members=(ApiMember("user_9", us_of(T0 + 2 * DAY), name="Nine Nines", email="n@x.io"),),
    )
    f = facts(snap)
    assert f.schema == transforms.FACT_SCHEMA
    state = transforms.fold(None, None, f)
    rows = scored(state, T0 + 3 * DAY)
    nine = rows["mem_9"]
    assert (nine["valid"], nine["membership_status"], nine["member_name"], nine["email"]) == (
        True,
        "past_due",
        "Nine Nines",
        "n@x.io",
    )
    assert (nine["last_active"], nine["joined_at"], nine["total_sessions"]) == (T0 + 2 * DAY, T0, 1)
    assert nine["engagement_score"] == 91  # 1 day: floor(100·0.5^(1/7)+0.5)
    assert (rows["mem_8"]["valid"], rows["mem_8"]["engagement_score"]) == (False, 0)


def test_latest_name_email_status_by_time() -> None:
    evs = events(
        ev(1, "joined", T0, name="old", email="old@x.io"),
        ev(2, "joined", T0 + 2 * DAY, name="new", email=None, shape="v1u", status="active"),
        ev(3, "left", T0 + DAY, name="mid", email="mid@x.io", shape="v1u", status="canceled"),
    )
    row = scored(transforms.fold(None, evs), T0 + 2 * DAY)["mem_1"]
    assert (row["member_name"], row["email"], row["membership_status"], row["valid"]) == (
        "new",
        "mid@x.io",
        "active",
        True,
    )


def test_as_of_ignores_later_facts_and_drops_members_without_earlier_ones() -> None:
    evs = events(ev(1, "joined", T0), ev(2, "left", T0 + 3 * DAY), ev(3, "joined", T0 + 5 * DAY, mid="mem_2"))
    full = transforms.fold(None, evs)
    assert transforms.needs_rebuild(full, T0 + DAY)
    assert not transforms.needs_rebuild(full, T0 + 5 * DAY)
    back = transforms.fold(None, evs, as_of=T0 + DAY)
    assert not transforms.needs_rebuild(back, T0 + DAY)
    rows = scored(back, T0 + DAY)
    assert set(rows) == {"mem_1"}
    assert (rows["mem_1"]["valid"], rows["mem_1"]["engagement_score"]) == (True, 91)
    assert set(scored(full, T0 + DAY)) == {"mem_1"}  # first fact after T: not scored
    assert transforms.restrict_as_of(evs, None, T0)[0].height == 1  # type: ignore[union-attr]


def test_incremental_step_touches_only_the_batch_members() -> None:
    base = transforms.fold(None, events(*(ev(i, "joined", T0, mid=f"mem_{i}") for i in range(50))))
    step = transforms.fold(base, events(ev(100, "accessed", T0 + DAY, mid="mem_7")))
    untouched = step.filter(pl.col("membership_id") != "mem_7").sort("membership_id")
    assert untouched.equals(base.filter(pl.col("membership_id") != "mem_7").sort("membership_id"))
    assert step.filter(pl.col("membership_id") == "mem_7")["total_sessions"].item() == 1
    assert step.schema == transforms.STATE_SCHEMA and step.height == 50


def test_empty_inputs() -> None:
    empty = transforms.empty_state()
    assert empty.schema == transforms.STATE_SCHEMA
    assert transforms.fold(None, None).equals(empty)
    assert transforms.fold(empty, transforms.dedupe_events(None)).equals(empty)
    assert transforms.score(empty, as_of=T0, params=PARAMS).schema == transforms.SCORE_SCHEMA
    assert not transforms.needs_rebuild(empty, T0)


def test_a_naive_as_of_is_refused_with_a_hint() -> None:
    # Bad scoring parameters are refused by Settings: tests/memberpulse/test_settings.py
    with pytest.raises(InvalidInput, match="timezone"):
        transforms.score(transforms.empty_state(), as_of=datetime(2026, 1, 1), params=PARAMS)


# --- drift ----------------------------------------------------------------------------------------------


def test_drift_reasons() -> None:
    fetched = T0 + 10 * DAY
    evs = events(
        ev(1, "joined", T0, mid="mem_same", shape="v1u", status="active"),
        ev(2, "left", T0, mid="mem_missed_join", shape="v1u", status="canceled"),  # API: active again later
        ev(3, "joined", T0, mid="mem_status", shape="v1p", status="trialing"),  # API: active
        ev(4, "joined", T0, mid="mem_wh_only"),
        ev(5, "joined", fetched + DAY, mid="mem_after_snapshot"),  # joined after the snapshot: not drift
        ev(6, "joined", T0, mid="mem_late", shape="v1u", status="active"),
        ev(7, "left", fetched + DAY, mid="mem_late", shape="v1u", status="canceled"),  # newer than snapshot
    )

    def ms(mid: str, status: str) -> ApiMembership:
        return ApiMembership(mid, "user_1", "biz_1", status, us_of(T0))

    snap = Snapshot(
        fetched_us=us_of(fetched),
        memberships=(
            ms("mem_same", "active"),
            ms("mem_missed_join", "active"),
            ms("mem_status", "active"),
            ms("mem_api_only", "expired"),
            ms("mem_late", "active"),
        ),
    )
    state = transforms.fold(None, evs, facts(snap))
    out = transforms.drift(state, *snapshot_frames(snap))
    assert out.schema == transforms.DRIFT_SCHEMA
    reasons = dict(zip(out["membership_id"], out["reason"], strict=True))
    assert reasons == {
        "mem_api_only": "api_only",
        "mem_missed_join": "validity,status",
        "mem_status": "status",
        "mem_wh_only": "webhook_only",
    }
    row = out.filter(pl.col("membership_id") == "mem_missed_join").row(0, named=True)
    assert (row["webhook_valid"], row["api_valid"], row["webhook_status"], row["api_status"]) == (
        False,
        True,
        "canceled",
        "active",
    )
    # The merged state follows the later API fact, the webhook-only columns keep the webhook's view.
    merged = state.filter(pl.col("membership_id") == "mem_missed_join").row(0, named=True)
    assert (merged["valid"], merged["webhook_valid"]) == (True, False)
    assert transforms.drift(state, None, None).height == 0


def test_each_company_is_judged_by_its_own_snapshot_and_a_company_without_one_not_at_all() -> None:
    """Company 1 was fetched on day 10, company 2 on day 3 (its later fetches failed), company 3 never. A
    membership of 2 that joined on day 5 is newer than 2's snapshot (no drift), however much later 1's is."""
    evs = events(
        ev(1, "joined", T0 + 5 * DAY, mid="mem_2_joined_since", company_id="biz_2"),
        ev(2, "joined", T0, mid="mem_2_missed", company_id="biz_2"),
        ev(3, "joined", T0, mid="mem_3_never_fetched", company_id="biz_3"),
        ev(4, "joined", T0, mid="mem_1_missed"),
    )
    one, two = (
        Snapshot(us_of(T0 + days * DAY), (ApiMembership(f"mem_{n}_listed", "user_1", f"biz_{n}", "active", us_of(T0)),),
                 (ApiMember("user_1", us_of(T0 + n * DAY)),))
        for n, days in ((1, 10), (2, 3))
    )  # fmt: skip
    frames = [snapshot_frames(one), snapshot_frames(two)]
    memberships = pl.concat([ms.with_columns(snapshot=pl.lit(f"s{n}")) for n, (ms, _) in enumerate(frames, 1)])
    members = pl.concat([m.with_columns(snapshot=pl.lit(f"s{n}")) for n, (_, m) in enumerate(frames, 1)])
    state = transforms.fold(None, evs, transforms.api_facts(memberships, members))
    out = transforms.drift(state, memberships, members)

    assert dict(zip(out["membership_id"], out["reason"], strict=True)) == {
        "mem_1_listed": "api_only", "mem_2_listed": "api_only", "mem_1_missed": "webhook_only",
        "mem_2_missed": "webhook_only",
    }  # fmt: skip
    # One user in two companies is two members: each membership takes its own company's last access.
    access = dict(zip(state["membership_id"], state["last_active"], strict=True))
    assert (access["mem_1_listed"], access["mem_2_listed"]) == (T0 + DAY, T0 + 2 * DAY)


def test_a_hash_collision_between_membership_ids_falls_back_to_grouping_on_the_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import memberpulse.transforms._fold as fold_module

    evs = events(
        ev(1, "joined", T0, mid="mem_a", name="A"),
        ev(2, "accessed", T0 + DAY, mid="mem_b"),
        ev(3, "left", T0 + DAY, mid="mem_a"),
    )
    expected = transforms.fold(None, evs)
    # Every id "hashes" to the same group: the second hash must notice and the ids decide.
    monkeypatch.setattr(fold_module, "_groupings", lambda: (pl.lit(0, dtype=pl.UInt64), pl.col("membership_id")))
    collided = transforms.fold(None, evs)
    assert collided.height == 2
    key = ["membership_id"]
    assert (
        collided.with_columns(pl.col("access_instants").list.sort())
        .sort(key)
        .equals(expected.with_columns(pl.col("access_instants").list.sort()).sort(key))
    )
