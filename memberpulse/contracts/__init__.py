"""The contracts between stages, each defined once: the raw record and its segment files, the quarantine entry,
the event vocabulary, the tables, the time conventions. Writers and readers both import them from here.
"""

from memberpulse.contracts.events import EVENT_KINDS, MEMBER_STATUSES, SUPPORTED_EVENTS, VALID_STATUSES
from memberpulse.contracts.frames import conform
from memberpulse.contracts.times import UTC_US, file_time, find_file_time, require_aware

__all__ = [
    "EVENT_KINDS",
    "MEMBER_STATUSES",
    "SUPPORTED_EVENTS",
    "UTC_US",
    "VALID_STATUSES",
    "conform",
    "file_time",
    "find_file_time",
    "require_aware",
]
