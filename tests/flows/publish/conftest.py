"""Fixtures for the publish tests (data helpers live in tests/support/publish_data.py)."""

from __future__ import annotations

import pytest

from tests.support.publish_data import SleepRecorder


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()
