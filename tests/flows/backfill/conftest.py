"""The backfill flow's tests use the Whop API tests' fixtures (the simulator on 127.0.0.1 and settings for it),
and three companies behind one simulator (``tests.support.whop_testkit.serve_companies``)."""

from collections.abc import Iterator

import pytest

from tests.flows.whop.conftest import population, settings, simulator  # noqa: F401 - fixtures, by name
from tests.support.whop_testkit import Companies, serve_companies


@pytest.fixture
def companies() -> Iterator[Companies]:
    with serve_companies() as served:
        yield served
