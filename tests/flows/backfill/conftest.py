"""The backfill flow's tests use the Whop API tests' fixtures: the simulator on 127.0.0.1 and settings for it."""

from tests.flows.whop.conftest import population, settings, simulator  # noqa: F401 - fixtures, by name
