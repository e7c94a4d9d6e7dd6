"""The polars pipeline against the pure-Python reference, and the folding laws, on random event streams.

Streams mix every payload shape, all three time encodings (in the body, only signed_at, only received_at),
unknown events, API snapshots (with members matched by user id), few members and few distinct instants (so
ties on time are common), duplicate deliveries, shuffled arrival and arbitrary batch splits.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memberpulse import transforms
from tests.support.transforms_reference import (
    US_PER_DAY,
    ApiMember,
    ApiMembership,
    Snapshot,
    WebhookEvent,
    dt,
    raw_frame,
    raw_record,
    reference_scores,
    snapshot_frames,
    us_of,
)

MIDS = ("mem_a", "mem_b", "mem_c", "mem_d")
USER = {m: "user_" + m[-1] for m in MIDS}
COMPANY = {m: "biz_1" if m in ("mem_a", "mem_b") else "biz_2" for m in MIDS}
BASE_US = us_of(datetime(2026, 1, 1, tzinfo=UTC))
PARAMS = transforms.ScoringParams()

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

times = st.builds(
    lambda half_days, frac: BASE_US + half_days * US_PER_DAY // 2 + frac,
    st.integers(0, 40),
    st.sampled_from([0, 0, 0, 500_000, 123_456]),
)
names = st.sampled_from([None, "Ann", "Bob"])
emails = st.sampled_from([None, "a@x.io", "b@x.io"])
statuses = st.sampled_from(["active", "canceled", "trialing", "expired", "past_due"])


@st.composite
def webhook_events(draw: st.DrawFn, index: int) -> WebhookEvent:
    kind = draw(st.sampled_from(["joined", "accessed", "accessed", "left", "other"]))
    shape = draw(st.sampled_from(["seed", "v5", "v1u", "v1p"]))
    mode = draw(st.sampled_from(["body", "body", "body", "signed", "received"]))
    t = draw(times)
    if mode == "signed":
        t -= t % 1_000_000
    mid = draw(st.sampled_from(MIDS))
    carries_person = shape in ("seed", "v1u")
    return WebhookEvent(
        webhook_id=f"wh_{index:04d}",
        membership_id=mid,
        kind=kind,
        shape=shape,
        t_us=t,
        time_mode=mode,
        iso_style=draw(st.sampled_from(["Z", "+00:00", "+02:00", "naive"])),
        name=draw(names) if carries_person else None,
        email=draw(emails) if carries_person else None,
        status=draw(st.one_of(st.none(), statuses)) if shape != "seed" else None,
        user_id=USER[mid],
        company_id=COMPANY[mid],
        other_type=draw(st.sampled_from(["payment.succeeded", "membership.updated", "member.created"])),
    )


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    fetched = draw(times)
    listed = draw(st.lists(st.sampled_from(MIDS), unique=True, max_size=4))
    memberships = tuple(
        ApiMembership(
            membership_id=m,
            user_id=USER[m],
            company_id=COMPANY[m],
            status=draw(statuses),
            created_us=draw(times),
            name=draw(names),
            username=draw(st.sampled_from([None, "ann_u"])),
            email=draw(emails),
        )
        for m in listed
    )
    members = (
        tuple(
            ApiMember(
                user_id=USER[m],
                last_accessed_us=draw(st.one_of(st.none(), times)),
                name=draw(names),
                email=draw(emails),
            )
            for m in draw(st.lists(st.sampled_from(listed), unique=True))
            if listed
        )
        if listed
        else ()
    )
    return Snapshot(fetched_us=fetched, memberships=memberships, members=members)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[WebhookEvent], list[Snapshot]]:
    n = draw(st.integers(0, 24))
    events = [draw(webhook_events(i)) for i in range(n)]
    return events, draw(st.lists(snapshots(), max_size=3))


def facts_of(snaps: list[Snapshot]) -> pl.DataFrame | None:
    frames = [transforms.api_facts(*snapshot_frames(s)) for s in snaps]
    return pl.concat(frames) if frames else None


def events_of(records: list[dict[str, Any]]) -> pl.DataFrame:
    parsed = transforms.parse_raw(raw_frame(records))
    assert parsed.rejects.height == 0, parsed.rejects.to_dicts()
    return transforms.dedupe_events(parsed.events)


def canonical(state: pl.DataFrame) -> pl.DataFrame:
    return state.with_columns(pl.col("access_instants").list.sort()).sort("membership_id")


def score_rows(state: pl.DataFrame, as_of_us: int) -> list[dict[str, Any]]:
    return transforms.score(state, as_of=dt(as_of_us), params=PARAMS).sort("membership_id").to_dicts()


@SETTINGS
@given(scenarios(), times, st.integers(0, 60))
def test_polars_matches_the_reference(
    scenario: tuple[list[WebhookEvent], list[Snapshot]], base: int, extra_days: int
) -> None:
    events, snaps = scenario
    as_of_us = base + extra_days * US_PER_DAY // 3
    state = transforms.fold(None, events_of([raw_record(e) for e in events]), facts_of(snaps), as_of=dt(as_of_us))
    expected = reference_scores(events, snaps, as_of_us=as_of_us)
    assert score_rows(state, as_of_us) == [expected[k] for k in sorted(expected)]


@SETTINGS
@given(scenarios(), st.data())
def test_order_duplicates_and_batches_do_not_matter(
    scenario: tuple[list[WebhookEvent], list[Snapshot]], data: st.DataObject
) -> None:
    events, snaps = scenario
    records = [raw_record(e) for e in events]
    # Re-deliveries (same id and body, later) and API snapshots folded more than once.
    if events:
        records += [raw_record(e, delivery=1) for e in data.draw(st.lists(st.sampled_from(events)))]
    records = data.draw(st.permutations(records))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(records)), max_size=4)))
    batches = [records[a:b] for a, b in zip([0, *cuts], [*cuts, len(records)], strict=True)]
    snap_batches: dict[int, list[Snapshot]] = {}
    repeats = data.draw(st.lists(st.sampled_from(snaps))) if snaps else []
    for snap in snaps + repeats:
        snap_batches.setdefault(data.draw(st.integers(0, len(batches) - 1)), []).append(snap)

    full = transforms.fold(None, events_of(records), facts_of(snaps))
    state: pl.DataFrame | None = None
    for i, batch in enumerate(batches):
        state = transforms.fold(state, events_of(batch), facts_of(snap_batches.get(i, [])))
    assert state is not None
    assert canonical(state).equals(canonical(full))
    as_of_us = BASE_US + 25 * US_PER_DAY
    assert score_rows(state, as_of_us) == score_rows(full, as_of_us)


@SETTINGS
@given(scenarios(), times, st.integers(0, 90), st.integers(0, 90))
def test_scores_stay_in_range_and_never_rise_without_new_events(
    scenario: tuple[list[WebhookEvent], list[Snapshot]], base: int, d1: int, d2: int
) -> None:
    events, snaps = scenario
    state = transforms.fold(None, events_of([raw_record(e) for e in events]), facts_of(snaps))
    early_us = base + min(d1, d2) * US_PER_DAY // 3
    late_us = base + max(d1, d2) * US_PER_DAY // 3
    early = {r["membership_id"]: r for r in score_rows(state, early_us)}
    late = {r["membership_id"]: r for r in score_rows(state, late_us)}
    assert set(early) <= set(late)
    for mid, row in late.items():
        assert 0 <= row["engagement_score"] <= 100
        assert row["activity_score"] == row["engagement_score"]
        assert row["status"] in ("active", "at_risk", "inactive")
        if mid in early:
            assert row["engagement_score"] <= early[mid]["engagement_score"]


@SETTINGS
@given(scenarios(), times, st.integers(0, 90), st.integers(0, 90))
def test_moved_between_names_exactly_the_rows_time_changes(
    scenario: tuple[list[WebhookEvent], list[Snapshot]], base: int, d1: int, d2: int
) -> None:
    events, snaps = scenario
    state = transforms.fold(None, events_of([raw_record(e) for e in events]), facts_of(snaps))
    early_us = base + min(d1, d2) * US_PER_DAY // 5
    late_us = base + max(d1, d2) * US_PER_DAY // 5
    early = {r["membership_id"]: r for r in score_rows(state, early_us)}
    late = {r["membership_id"]: r for r in score_rows(state, late_us)}
    differ = {mid for mid, row in late.items() if early.get(mid) != row}
    moved = transforms.moved_between(state, earlier=dt(early_us), later=dt(late_us), params=PARAMS)
    assert set(moved.to_list()) == differ
