"""A deterministic, mutable population of one company's users, members and memberships.

Records are plain dataclasses in plain lists: the demo signs webhooks for the same membership ids and flips
statuses to create drift, and a running simulator app reads the lists on every request, so it sees that.
One user has one member record and one membership (1:1:1), so ``n`` memberships means ``n`` members.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from memberpulse.contracts.events import VALID_STATUSES

# Whop's membership statuses; the first four keep access (memberpulse.contracts.events.VALID_STATUSES).
_STATUS_WEIGHTS = (
    ("active", 70),
    ("trialing", 5),
    ("past_due", 5),
    ("completed", 3),
    ("canceled", 10),
    ("expired", 7),
)
_MOST_RECENT_ACTION = {
    "active": "paid_subscriber",
    "trialing": "trialing",
    "past_due": "past_due",
    "completed": "paid_once",
    "canceled": "churned",
    "expired": "churned",
    "canceling": "canceling",
}
_FIRST = (
    "ada",
    "bo",
    "cy",
    "dee",
    "eli",
    "fay",
    "gus",
    "hana",
    "ivo",
    "jun",
    "kai",
    "lea",
    "mo",
    "nia",
    "oz",
    "pia",
    "quin",
    "rae",
    "sol",
    "tam",
    "uma",
    "vik",
    "wen",
    "xan",
    "yara",
    "zed",
)
_LAST = (
    "stone",
    "rivers",
    "hale",
    "north",
    "vale",
    "marsh",
    "reed",
    "frost",
    "lane",
    "wolfe",
    "park",
    "shaw",
    "moss",
    "grey",
    "bloom",
    "cross",
)
_R = TypeVar("_R", "SimMembership", "SimMember")
_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _ms(value: datetime) -> datetime:
    """Whop's timestamps carry milliseconds; keeping ours at that precision makes round trips exact."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


@dataclass
class SimUser:
    id: str
    username: str
    name: str | None
    email: str | None


@dataclass
class SimMembership:
    id: str
    company_id: str
    user: SimUser
    member_id: str
    product_id: str
    plan_id: str
    status: str
    created_at: datetime
    updated_at: datetime
    canceled_at: datetime | None = None
    cancel_at_period_end: bool = False

    @property
    def user_id(self) -> str:
        return self.user.id

    @property
    def valid(self) -> bool:
        return self.status in VALID_STATUSES


@dataclass
class SimMember:
    id: str
    company_id: str
    user: SimUser
    status: str  # "joined" | "left"
    joined_at: datetime
    created_at: datetime
    last_accessed_at: datetime | None
    most_recent_action: str | None
    most_recent_action_at: datetime | None
    usd_total_spent: str = "0.00"


@dataclass
class Population:
    """One company's records. Mutate through the helpers (they keep member and membership consistent) or
    directly; the simulator app serves whatever the lists hold at request time."""

    company_id: str
    now: datetime
    memberships: list[SimMembership] = field(default_factory=list)
    members: list[SimMember] = field(default_factory=list)
    # id -> list position; rebuilt when the lists were changed behind our back
    _membership_index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    _member_index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def generate(
        cls, seed: int, n: int, company_id: str = "biz_memberpulse_demo", now: datetime | None = None
    ) -> Population:
        """``n`` memberships (and as many members and users), the same for the same arguments."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        now = _ms((now or datetime.now(UTC)).astimezone(UTC))
        rng = random.Random(seed)
        statuses = [s for s, _ in _STATUS_WEIGHTS]
        weights = [w for _, w in _STATUS_WEIGHTS]
        products = [f"prod_{_rand_id(rng)}" for _ in range(3)]
        plans = [f"plan_{_rand_id(rng)}" for _ in range(3)]
        population = cls(company_id=company_id, now=now)
        catalogue = _Catalogue(statuses, weights, products, plans)
        for i in range(n):
            member, membership = _one_member(rng, i, now=now, company_id=company_id, catalogue=catalogue)
            population.members.append(member)
            population.memberships.append(membership)
        return population

    # --- lookups -------------------------------------------------------------------------------------------
    def membership(self, membership_id: str) -> SimMembership:
        return _lookup(self.memberships, self._membership_index, membership_id)

    def member(self, member_id: str) -> SimMember:
        return _lookup(self.members, self._member_index, member_id)

    # --- mutations -----------------------------------------------------------------------------------------
    def set_status(self, membership_id: str, status: str, *, at: datetime) -> SimMembership:
        """Change a membership's status as Whop would: ``updated_at`` moves, cancellation is stamped, and the
        member joins or leaves with it."""
        at = _ms(at.astimezone(UTC))
        membership = self.membership(membership_id)
        membership.status = status
        membership.updated_at = at
        membership.canceled_at = at if status in ("canceled", "expired") else None
        membership.cancel_at_period_end = status == "canceling"
        member = self.member(membership.member_id)
        member.status = "joined" if status in VALID_STATUSES or status == "canceling" else "left"
        member.most_recent_action = _MOST_RECENT_ACTION.get(status, member.most_recent_action)
        member.most_recent_action_at = at
        return membership

    def record_access(self, membership_id: str, *, at: datetime) -> SimMember:
        """The member behind ``membership_id`` opened the company's content at ``at``."""
        member = self.member(self.membership(membership_id).member_id)
        member.last_accessed_at = _ms(at.astimezone(UTC))
        return member


@dataclass(frozen=True)
class _Catalogue:
    """What every generated membership draws from: statuses with their weights, products and their plans."""

    statuses: list[str]
    weights: list[int]
    products: list[str]
    plans: list[str]


def _one_member(
    rng: random.Random, i: int, *, now: datetime, company_id: str, catalogue: _Catalogue
) -> tuple[SimMember, SimMembership]:
    """The ``i``-th member and membership; draws from ``rng`` in a fixed order, so seeds keep their populations."""
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    username = f"{first}{last}{i}"
    user = SimUser(
        id=f"user_{_rand_id(rng)}",
        username=username,
        name=f"{first.title()} {last.title()}",
        email=f"{username}@example.com",
    )
    status = rng.choices(catalogue.statuses, catalogue.weights)[0]
    created_at = _ms(now - timedelta(seconds=rng.uniform(3600, 365 * 86400)))
    age = (now - created_at).total_seconds()
    updated_at = _ms(created_at + timedelta(seconds=rng.uniform(0, age)))
    canceled_at = updated_at if status in ("canceled", "expired") else None
    # Activity decays: valid members mostly visited in the last weeks, some never opened anything.
    last_accessed_at: datetime | None = None
    if rng.random() >= 0.1:
        back = rng.expovariate(1 / (5 * 86400 if status in VALID_STATUSES else 40 * 86400))
        last_accessed_at = _ms(max(created_at, now - timedelta(seconds=min(back, age))))
    product = rng.randrange(len(catalogue.products))
    member = SimMember(
        id=f"mber_{_rand_id(rng)}",
        company_id=company_id,
        user=user,
        status="joined" if status in VALID_STATUSES else "left",
        joined_at=created_at,
        created_at=created_at,
        last_accessed_at=last_accessed_at,
        most_recent_action=_MOST_RECENT_ACTION.get(status),
        most_recent_action_at=updated_at,
        usd_total_spent=f"{rng.randrange(0, 50000) / 100:.2f}",
    )
    membership = SimMembership(
        id=f"mem_{_rand_id(rng)}",
        company_id=company_id,
        user=user,
        member_id=member.id,
        product_id=catalogue.products[product],
        plan_id=catalogue.plans[product],
        status=status,
        created_at=created_at,
        updated_at=updated_at,
        canceled_at=canceled_at,
    )
    return member, membership


def _lookup(records: list[_R], index: dict[str, int], record_id: str) -> _R:
    pos = index.get(record_id)
    if pos is None or pos >= len(records) or records[pos].id != record_id:
        index.clear()
        index.update((r.id, i) for i, r in enumerate(records))
        pos = index.get(record_id)
        if pos is None:
            raise KeyError(record_id)
    return records[pos]


def _rand_id(rng: random.Random) -> str:
    return "".join(rng.choice(_ID_ALPHABET) for _ in range(14))
