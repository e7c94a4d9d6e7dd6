"""The backfill test here uses the Whop API tests' fixtures: the simulator on 127.0.0.1 and its population."""

from tests.flows.whop.conftest import population, simulator  # noqa: F401 - fixtures, by name
