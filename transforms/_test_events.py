"""``send-test``'s mock webhooks: recognised by the ``test_`` prefix on their webhook or membership id
(``memberpulse.contracts.events.TEST_ID_PREFIX``; Whop's own ids never carry it)."""

from __future__ import annotations

import polars as pl

from memberpulse.contracts.events import TEST_ID_PREFIX

_IS_TEST = pl.col("webhook_id").str.starts_with(TEST_ID_PREFIX).fill_null(False) | pl.col(
    "membership_id"
).str.starts_with(TEST_ID_PREFIX).fill_null(False)


def count_test_events(events: pl.DataFrame) -> int:
    """How many of ``events`` (``EVENT_SCHEMA``) are test webhooks."""
    return int(events.select(_IS_TEST.sum()).item()) if events.height else 0


def drop_test_events(events: pl.DataFrame) -> pl.DataFrame:
    """``events`` without the test webhooks, so a ``send-test`` never becomes a member."""
    return events.filter(~_IS_TEST)
