"""The webhook vocabulary: which Whop events the product understands and what each means for a member."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

#: The legacy ``action`` envelope (the payloads of the TypeScript webhook guide this project started from).
#: ``membership.accessed`` is not a real Whop event; that guide's tooling sends it, so the product accepts it.
ACTION_EVENTS: Final = ("membership.went_valid", "membership.accessed", "membership.went_invalid")
#: Whop's current v1 ``type`` envelope.
V1_EVENTS: Final = ("membership.activated", "membership.deactivated")

#: Event type → kind. Any other type is kind ``other``: stored, counted, never folded into a member.
EVENT_KINDS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "membership.went_valid": "joined",
        "membership.accessed": "accessed",
        "membership.went_invalid": "left",
        "membership.activated": "joined",
        "membership.deactivated": "left",
    }
)
SUPPORTED_EVENTS: Final[tuple[str, ...]] = ACTION_EVENTS + V1_EVENTS

#: ``memberpulse send-test``'s mock webhooks carry this prefix on their webhook id and membership id. Whop's own
#: ids never do (``msg_…``, ``evt_…``, ``mem_…``), so a test webhook is recognisable in the raw store forever,
#: and reconcile keeps it out of the members unless ``MEMBERPULSE_INCLUDE_TEST_WEBHOOKS`` is set.
TEST_ID_PREFIX: Final = "test_"

#: Whop membership statuses that keep access: an API fact with one of these means "valid".
VALID_STATUSES: Final[frozenset[str]] = frozenset({"trialing", "active", "past_due", "completed"})

#: A scored member's status, as published.
MEMBER_STATUSES: Final[frozenset[str]] = frozenset({"active", "at_risk", "inactive"})
