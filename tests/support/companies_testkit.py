"""A data dir of several Whop companies (an app's webhooks carry every installed company's events), built with
the product's own writers and two real reconcile runs: webhooks of three companies (joins, visits, departures),
a record the parser refuses whose signed body names a company, a landing refusal whose forged body claims one,
a backfill listing every company's memberships (one of each that no webhook mentions: drift), and a delivery
log read by recovery. Every table and view of the snapshot then holds rows of each company."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pyarrow as pa

from memberpulse.contracts.quarantine import encode_quarantine_entry, quarantine_path
from memberpulse.contracts.tables import WEBHOOK_DELIVERIES
from memberpulse.flows.reconcile import RunReport, reconcile
from memberpulse.flows.recover import RecoveryState, RecoveryStore
from memberpulse.flows.whop import ParquetSink, SnapshotWriter
from memberpulse.flows.whop._records import Resource
from memberpulse.flows.whop._snapshot import SCHEMAS
from memberpulse.landing import mock_events as mock
from memberpulse.settings import Settings
from tests.support.reconcile_testkit import AS_OF, append_raw, make_settings, raw_record

#: Members per company: unequal, so no count is right by accident.
SIZES = {"biz_alpha": 5, "biz_beta": 3, "biz_gamma": 2}
COMPANIES = tuple(SIZES)
FIRST_RUN = AS_OF - timedelta(days=1)
DAY = timedelta(days=1)


def company_member(company: str, n: int) -> mock.MockMember:
    short = company.removeprefix("biz_")
    return mock.MockMember(
        membership_id=f"mem_{short}_{n}", user_id=f"user_{short}_{n}", company_id=company,
        email=f"{short}{n}@example.com", username=f"{short}{n}", name=f"{short.title()} {n}",
    )  # fmt: skip


def company_webhooks(company: str, *, as_of: datetime = FIRST_RUN) -> list[bytes]:
    """Every member joins (weeks apart), visits, and every third one leaves the day before ``as_of``."""
    lines = []
    for n in range(1, SIZES[company] + 1):
        who = company_member(company, n)
        lines.append(raw_record(mock.went_valid(who, created_at=as_of - (3 + 8 * n) * DAY)))
        lines.append(raw_record(mock.accessed(who, accessed_at=as_of - 4 * n * DAY)))
        if n % 3 == 0:
            lines.append(raw_record(mock.went_invalid(who, expired_at=as_of - DAY)))
    return lines


def refused_by_the_parser(company: str) -> bytes:
    """A signed webhook (stored by the landing) without a membership id: a reject whose body names ``company``."""
    return raw_record({"action": "membership.went_valid", "data": {"company_id": company, "user_id": "user_x"}})


def write_landing_refusal(settings: Settings, claimed_company: str) -> None:
    """A webhook the landing refused (bad signature) whose body claims ``claimed_company``: unverified."""
    body = orjson.dumps(
        {"action": "membership.went_valid", "data": {"id": "mem_forged", "company_id": claimed_company}}
    )
    path = quarantine_path(settings.quarantine_dir, "test-landing")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_quarantine_entry(
        received_at=FIRST_RUN - timedelta(hours=2), status=403, reason="no matching signature found",
        remote="203.0.113.9", headers={"webhook-id": "msg_forged"}, body_bytes=len(body), body_prefix=body,
    ))  # fmt: skip


def write_backfill(settings: Settings, fetched_at: datetime) -> None:
    """Whop's API lists every company's members (as the webhooks have them) plus one membership of each that no
    webhook mentioned (drift: api_only)."""
    memberships, members = [], []
    for company in COMPANIES:
        for n in range(1, SIZES[company] + 2):
            who = company_member(company, n)
            left = n % 3 == 0
            memberships.append({
                "membership_id": who.membership_id, "company_id": company, "user_id": who.user_id,
                "member_id": f"mber_{who.user_id}", "status": "expired" if left else "active",
                "created_at": fetched_at - (3 + 8 * n) * DAY, "fetched_at": fetched_at,
            })  # fmt: skip
            members.append({"member_id": f"mber_{who.user_id}", "user_id": who.user_id,
                            "last_accessed_at": fetched_at - 4 * n * DAY, "fetched_at": fetched_at})  # fmt: skip
    with SnapshotWriter(settings.warehouse_dir, fetched_at=fetched_at, company_id=COMPANIES[0]) as writer:
        resources: tuple[tuple[Resource, list[dict[str, Any]]], ...] = (
            ("memberships", memberships),
            ("members", members),
        )
        for resource, rows in resources:
            sink = ParquetSink(writer.path_for(resource), SCHEMAS[resource])
            sink.write(pa.RecordBatch.from_pylist(rows, schema=SCHEMAS[resource]))
            sink.close()
        writer.commit(pages={"memberships": 1, "members": 1})


def write_delivery_log(settings: Settings) -> None:
    """Whop's delivery attempts as a recovery read them: two per company (one failed), one naming no company."""
    now = datetime.now(UTC).replace(microsecond=0)
    rows = []
    for i, company in enumerate((*COMPANIES, None)):
        for ok in (True, False):
            rows.append({"delivery_id": f"whdel_{i}_{ok}", "company_id": company, "event": "membership.activated",
                         "webhook_id": f"msg_d{i}", "sent_at": now - timedelta(hours=i + 1),
                         "response_code": 200 if ok else 503, "success": ok, "total_time": 0.2 + i,
                         "replayed_from": None})  # fmt: skip
    store = RecoveryStore(settings.warehouse_dir, settings.landing_dir, settings.quarantine_dir)
    state = RecoveryState(stopped_at=now.isoformat(), recovered_at=now.isoformat(), failed_attempts=len(rows) // 2)
    known = pl.DataFrame(schema={"webhook_id": pl.String(), "landed": pl.Boolean()})
    store.commit(state, known, [], pl.DataFrame(rows, schema=WEBHOOK_DELIVERIES.schema))


@dataclass(frozen=True)
class SeveralCompanies:
    settings: Settings
    runs: list[RunReport]  # the two runs' reports, in order


def several_companies(data_dir: Path, **overrides: Any) -> SeveralCompanies:
    """The data dir described above after two runs (settings ``overrides``, e.g. a publish target): the first,
    a day before ``AS_OF``, over everything; the second, at ``AS_OF``, over a visit of an alpha member and a
    departure of a beta one."""
    settings = make_settings(data_dir, **overrides)
    append_raw(data_dir, [line for company in COMPANIES for line in company_webhooks(company)])
    append_raw(data_dir, [refused_by_the_parser("biz_beta")], writer="refused")
    write_landing_refusal(settings, claimed_company="biz_alpha")
    write_backfill(settings, FIRST_RUN - timedelta(hours=1))
    write_delivery_log(settings)
    first = reconcile(settings, as_of=FIRST_RUN, full_refresh=False)
    later = [
        raw_record(mock.accessed(company_member("biz_alpha", 1), accessed_at=AS_OF - timedelta(hours=1))),
        raw_record(mock.went_invalid(company_member("biz_beta", 2), expired_at=AS_OF - timedelta(hours=2))),
    ]
    append_raw(data_dir, later, writer="second")
    second = reconcile(settings, as_of=AS_OF, full_refresh=False)
    return SeveralCompanies(settings, [first, second])
