"""send-test's mock webhooks (``test_`` ids) are counted and left out; real Whop ids never match."""

from __future__ import annotations

import polars as pl

from memberpulse import transforms
from memberpulse.landing import mock_events as mock
from tests.support.reconcile_testkit import AS_OF, member, raw_record


def _events(lines: list[bytes]) -> pl.DataFrame:
    batch = transforms.parse_raw(transforms.parse_ndjson(b"".join(lines)).records)
    return transforms.dedupe_events(batch.events)


def test_test_webhooks_are_counted_and_dropped() -> None:
    real = member(1)
    events = _events(
        [
            raw_record(mock.went_valid(real, created_at=AS_OF)),  # real: msg_ id, mem_ id
            raw_record(mock.went_valid(mock.TEST_MEMBER, created_at=AS_OF)),  # test membership id
            raw_record(mock.accessed(real, accessed_at=AS_OF), webhook_id=mock.new_test_webhook_id()),  # test id
            raw_record(mock.activated(mock.TEST_MEMBER, at=AS_OF, event_id=mock.new_test_webhook_id())),
        ]
    )
    assert events.height == 4
    assert transforms.count_test_events(events) == 3
    kept = transforms.drop_test_events(events)
    assert kept["membership_id"].to_list() == [real.membership_id]
    assert not kept["webhook_id"].str.starts_with("test_").any()


def test_no_events_no_test_webhooks() -> None:
    empty = transforms.dedupe_events(None)
    assert transforms.count_test_events(empty) == 0
    assert transforms.drop_test_events(empty).height == 0
