"""Pure polars transforms: raw records and API snapshots in, member state and scores out. No I/O, no clock.

The reconcile flow's path::

    records, bad_lines = parse_ndjson(data)          # landing NDJSON bytes → raw frame + rejects
    batch = parse_raw(records)                       # → ParsedBatch(events, rejects)
    events = dedupe_events(batch.events)             # one per webhook id, by event time
    events = drop_test_events(events)                # send-test's mock webhooks (test_ ids) stay out
    facts = api_facts(memberships, members)          # one backfill snapshot → API facts
    state = fold(state, events, facts)               # incremental == full
    scored = score(state, as_of=T, params=ScoringParams())
    gaps = drift(state, memberships, members)        # API vs webhook disagreements

Frame schemas are the ``*_SCHEMA`` constants (documented column by column in ``memberpulse.transforms._schema``).
"""

if __name__ != "memberpulse.transforms":  # transforms/ is installed only under the memberpulse namespace
    raise ImportError(f"import memberpulse.transforms, not {__name__}")


from memberpulse.contracts.events import EVENT_KINDS, SUPPORTED_EVENTS, VALID_STATUSES
from memberpulse.transforms._drift import drift
from memberpulse.transforms._facts import api_facts
from memberpulse.transforms._fold import empty_state, fold, restrict_as_of
from memberpulse.transforms._parse import ParsedBatch, RawLines, dedupe_events, parse_ndjson, parse_raw
from memberpulse.transforms._schema import (
    DRIFT_SCHEMA,
    EVENT_SCHEMA,
    FACT_SCHEMA,
    RAW_SCHEMA,
    REJECT_SCHEMA,
    SCORE_SCHEMA,
    STATE_SCHEMA,
)
from memberpulse.transforms._score import ScoringParams, moved_between, needs_rebuild, score
from memberpulse.transforms._test_events import count_test_events, drop_test_events

__all__ = [
    "DRIFT_SCHEMA",
    "EVENT_KINDS",
    "EVENT_SCHEMA",
    "FACT_SCHEMA",
    "RAW_SCHEMA",
    "REJECT_SCHEMA",
    "SCORE_SCHEMA",
    "STATE_SCHEMA",
    "SUPPORTED_EVENTS",
    "VALID_STATUSES",
    "ParsedBatch",
    "RawLines",
    "ScoringParams",
    "api_facts",
    "count_test_events",
    "dedupe_events",
    "drift",
    "drop_test_events",
    "empty_state",
    "fold",
    "moved_between",
    "needs_rebuild",
    "parse_ndjson",
    "parse_raw",
    "restrict_as_of",
    "score",
]
