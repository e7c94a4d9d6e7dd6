"""A slow, obviously correct pure-Python reading of the scoring rules (docs/architecture.md), and raw-record
builders for the tests.

Nothing here imports the code under test's internals: the reference works from abstract webhook events and
API snapshots (what really happened), the builders render those as the raw records Whop + the landing would
produce, in every payload shape, and the tests check that the polars pipeline recovers the reference's answer.

Tie-break rules the reference shares with transforms (the rules say only "deterministic"): among attribute facts
at the same time, webhook beats API, then left > joined > accessed, then the greatest value.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
VALID = {"trialing", "active", "past_due", "completed"}
US_PER_DAY = 86_400_000_000
RANK = {"accessed": 0, "joined": 1, "left": 2}
SEED_TYPES = {"joined": "membership.went_valid", "accessed": "membership.accessed", "left": "membership.went_invalid"}
V1_TYPES = {"joined": "membership.activated", "accessed": "membership.accessed", "left": "membership.deactivated"}
KIND_FIELD = {"joined": "created_at", "accessed": "accessed_at", "left": "expired_at"}


def dt(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def us_of(moment: datetime) -> int:
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def iso(us: int, style: str = "Z") -> str:
    """ISO text for a µs instant: style ``Z``, ``+00:00``, ``+02:00`` (local time shifted) or ``naive``."""
    shift = timedelta(hours=2) if style == "+02:00" else timedelta(0)
    local = dt(us) + shift
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    if local.microsecond:
        text += f".{local.microsecond:06d}"
    return text + ("" if style == "naive" else style)


def epoch_text(us: int) -> str:
    seconds, micro = divmod(us, 1_000_000)
    return str(seconds) if micro == 0 else f"{seconds}.{micro:06d}"


# --- abstract inputs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookEvent:
    webhook_id: str
    membership_id: str
    kind: str  # joined | accessed | left | other
    shape: str  # seed | v5 | v1u | v1p
    t_us: int  # the event's time
    time_mode: str = "body"  # body: in the payload; signed: only signed_at; received: only received_at
    iso_style: str = "Z"
    name: str | None = None  # seed (username) and v1 unpinned (user.name) only
    email: str | None = None  # seed and v1 unpinned only
    status: str | None = None  # v5 and v1 only
    user_id: str = "user_x"
    company_id: str = "biz_1"
    other_type: str = "payment.succeeded"


@dataclass(frozen=True)
class ApiMembership:
    membership_id: str
    user_id: str
    company_id: str
    status: str
    created_us: int
    name: str | None = None
    username: str | None = None
    email: str | None = None


@dataclass(frozen=True)
class ApiMember:
    user_id: str
    last_accessed_us: int | None
    name: str | None = None
    email: str | None = None


@dataclass(frozen=True)
class Snapshot:
    fetched_us: int
    memberships: tuple[ApiMembership, ...]
    members: tuple[ApiMember, ...] = field(default=())


# --- rendering: abstract → what the landing stores ---------------------------------------------------------


def body_of(ev: WebhookEvent) -> str:
    in_body = ev.time_mode == "body"
    if ev.kind == "other":
        if ev.shape.startswith("v1"):
            return json.dumps(
                {
                    "id": "msg_" + ev.webhook_id,
                    "type": ev.other_type,
                    "api_version": "v1",
                    "timestamp": iso(ev.t_us),
                    "data": {"id": "pay_1"},
                }
            )
        return json.dumps({"action": ev.other_type, "data": {"id": "pay_1", "membership_id": ev.membership_id}})
    data: dict[str, Any] = {"id": ev.membership_id}
    if ev.shape == "seed":
        data.update(user_id=ev.user_id, company_id=ev.company_id)
        if ev.email is not None:
            data["email"] = ev.email
        if ev.name is not None:
            data["username"] = ev.name
        if in_body:
            data[KIND_FIELD[ev.kind]] = iso(ev.t_us, ev.iso_style)
        return json.dumps({"action": SEED_TYPES[ev.kind], "data": data})
    if ev.shape == "v5":
        data.update(
            user_id=ev.user_id,
            product_id="prod_1",
            plan_id="plan_1",
            valid=ev.kind != "left",
            cancel_at_period_end=False,
            metadata={"k": [1, 2]},
            expires_at=None,
        )
        if ev.status is not None:
            data["status"] = ev.status
        if in_body:
            t = int(epoch_text(ev.t_us)) if ev.t_us % 1_000_000 == 0 else float(epoch_text(ev.t_us))
            data[KIND_FIELD[ev.kind]] = t
        return json.dumps({"action": SEED_TYPES[ev.kind], "api_version": "v5", "data": data})
    # v1: the envelope's timestamp is the event time; data.created_at is the membership's (older) creation.
    if in_body:  # with no envelope timestamp, DESIGN would take a joined event's time from data.created_at
        data["created_at"] = iso(ev.t_us - 10 * US_PER_DAY)
    if ev.status is not None:
        data["status"] = ev.status
    if ev.shape == "v1u":
        data["company"] = {"id": ev.company_id, "title": "Co"}
        data["user"] = {"id": ev.user_id, "username": None, "name": ev.name, "email": ev.email}
    else:
        data.update(
            user_id=ev.user_id,
            member_id="mber_" + ev.user_id,
            company_id=ev.company_id,
            product_id="prod_1",
            updated_at=iso(ev.t_us),
        )
    envelope: dict[str, Any] = {
        "id": "msg_" + ev.webhook_id,
        "api_version": "v1",
        "type": V1_TYPES[ev.kind],
        "data": data,
        "account_id": ev.company_id,
    }
    if in_body:
        envelope["timestamp"] = iso(ev.t_us, ev.iso_style)
    return json.dumps(envelope)


def raw_record(ev: WebhookEvent, *, delivery: int = 0) -> dict[str, Any]:
    """The landing's raw record for one delivery (re-deliveries arrive later, same id and body)."""
    body = body_of(ev)
    signed = ev.t_us // 1_000_000 + 3 + 20 * delivery
    if ev.time_mode == "signed":
        signed = ev.t_us // 1_000_000
    received = signed * 1_000_000 + 250_000
    if ev.time_mode == "received":
        received = ev.t_us
    doc = json.loads(body)
    return {
        "webhook_id": ev.webhook_id,
        "received_at": iso(received),
        "signed_at": None if ev.time_mode == "received" else signed,
        "scheme": "legacy" if ev.shape == "v5" else "standard",
        "event_type": doc.get("type") or doc.get("action"),
        "body": body,
    }


def memberships_rows(snap: Snapshot) -> list[dict[str, Any]]:
    return [
        {
            "membership_id": m.membership_id,
            "company_id": m.company_id,
            "user_id": m.user_id,
            "member_id": "mber_" + m.user_id,
            "product_id": "prod_1",
            "status": m.status,
            "created_at": dt(m.created_us),
            "updated_at": None,
            "canceled_at": None,
            "username": m.username,
            "name": m.name,
            "email": m.email,
            "fetched_at": dt(snap.fetched_us),
        }
        for m in snap.memberships
    ]


def members_rows(snap: Snapshot) -> list[dict[str, Any]]:
    return [
        {
            "member_id": "mber_" + m.user_id,
            "user_id": m.user_id,
            "username": None,
            "name": m.name,
            "email": m.email,
            "status": "joined",
            "joined_at": None,
            "last_accessed_at": None if m.last_accessed_us is None else dt(m.last_accessed_us),
            "most_recent_action_at": None,
            "fetched_at": dt(snap.fetched_us),
        }
        for m in snap.members
    ]


# --- the reference --------------------------------------------------------------------------------------


def reference_scores(
    events: list[WebhookEvent],
    snapshots: list[Snapshot],
    *,
    as_of_us: int,
    half_life: float = 7.0,
    active_days: float = 7.0,
    at_risk_days: float = 30.0,
) -> dict[str, dict[str, Any]]:
    """membership_id → the published row (minus updated_at), straight from the rules' sentences."""
    # Facts per membership: (time, source, kind, fields). Source 1 = webhook, 0 = API.
    facts: dict[str, list[dict[str, Any]]] = {}
    seen_ids: set[str] = set()
    for ev in events:
        if ev.webhook_id in seen_ids:  # a re-delivery: the same fact
            continue
        seen_ids.add(ev.webhook_id)
        if ev.kind == "other" or ev.t_us > as_of_us:
            continue
        facts.setdefault(ev.membership_id, []).append(
            {
                "t": ev.t_us,
                "src": 1,
                "kind": ev.kind,
                "name": ev.name,
                "email": ev.email,
                "status": ev.status,
                "user_id": ev.user_id,
                "company_id": None if ev.shape == "v5" else ev.company_id,
            }
        )
    for snap in snapshots:
        if snap.fetched_us > as_of_us:
            continue
        members = {m.user_id: m for m in snap.members}
        for ms in snap.memberships:
            mem = members.get(ms.user_id)
            username = ms.username
            facts.setdefault(ms.membership_id, []).append(
                {
                    "t": snap.fetched_us,
                    "src": 0,
                    "kind": "api",
                    "status": ms.status,
                    "valid": ms.status in VALID,
                    "created": ms.created_us,
                    "last_accessed": mem.last_accessed_us if mem else None,
                    "name": ms.name or (mem.name if mem else None) or username,
                    "email": ms.email or (mem.email if mem else None),
                    "user_id": ms.user_id,
                    "company_id": ms.company_id,
                }
            )

    rows: dict[str, dict[str, Any]] = {}
    for mid, fs in facts.items():
        # valid: the latest validity fact; equal times: webhook beats API, left (invalid) beats joined (valid).
        validity = []
        for f in fs:
            if f["kind"] == "joined":
                validity.append((f["t"], 1, 0, True))
            elif f["kind"] == "left":
                validity.append((f["t"], 1, 1, False))
            elif f["kind"] == "api":
                validity.append((f["t"], 0, 0 if f["valid"] else 1, f["valid"]))
        valid = max(validity)[3] if validity else False  # no validity fact yet: not valid

        joined_times = [f["t"] for f in fs if f["kind"] == "joined"] + [f["created"] for f in fs if f["kind"] == "api"]
        instants = {f["t"] for f in fs if f["kind"] == "accessed"}
        instants |= {f["last_accessed"] for f in fs if f["kind"] == "api" and f["last_accessed"] is not None}
        joined_at = min(joined_times) if joined_times else None
        actives = joined_times + list(instants)
        last_active = max(actives) if actives else None

        def latest(attr: str, fs: list[dict[str, Any]] = fs, webhook_only: bool = False) -> Any:
            cands = [
                (f["t"], f["src"], RANK.get(f["kind"], 0), f[attr])
                for f in fs
                if f.get(attr) is not None and (f["src"] == 1 or not webhook_only)
            ]
            return max(cands)[3] if cands else None

        if valid and last_active is not None:
            days = max(0, as_of_us - last_active) / US_PER_DAY
            score = math.floor(100 * 0.5 ** (days / half_life) + 0.5)
            status = "active" if days <= active_days else "at_risk" if days <= at_risk_days else "inactive"
        else:
            score, status = 0, "inactive"
        companies = [f["company_id"] for f in fs if f.get("company_id")]
        users = [f["user_id"] for f in fs if f.get("user_id")]
        rows[mid] = {
            "membership_id": mid,
            "company_id": max(companies) if companies else None,
            "user_id": max(users) if users else None,
            "member_name": latest("name"),
            "email": latest("email"),
            "status": status,
            "engagement_score": score,
            "activity_score": score,
            "last_active": None if last_active is None else dt(last_active),
            "joined_at": None if joined_at is None else dt(joined_at),
            "total_sessions": len(instants),
            "membership_status": latest("status"),
            "valid": valid,
        }
    return rows


# --- frames for the code under test ----------------------------------------------------------------------


def raw_frame(records: list[dict[str, Any]]) -> Any:
    import polars as pl

    from memberpulse import transforms

    return pl.DataFrame(records, schema=transforms.RAW_SCHEMA)


def snapshot_frames(snap: Snapshot) -> tuple[Any, Any]:
    import polars as pl

    utc = pl.Datetime("us", "UTC")
    ms_schema = {
        "membership_id": pl.Utf8,
        "company_id": pl.Utf8,
        "user_id": pl.Utf8,
        "member_id": pl.Utf8,
        "product_id": pl.Utf8,
        "status": pl.Utf8,
        "created_at": utc,
        "updated_at": utc,
        "canceled_at": utc,
        "username": pl.Utf8,
        "name": pl.Utf8,
        "email": pl.Utf8,
        "fetched_at": utc,
    }
    mem_schema = {
        "member_id": pl.Utf8,
        "user_id": pl.Utf8,
        "username": pl.Utf8,
        "name": pl.Utf8,
        "email": pl.Utf8,
        "status": pl.Utf8,
        "joined_at": utc,
        "last_accessed_at": utc,
        "most_recent_action_at": utc,
        "fetched_at": utc,
    }
    return (pl.DataFrame(memberships_rows(snap), schema=ms_schema), pl.DataFrame(members_rows(snap), schema=mem_schema))
