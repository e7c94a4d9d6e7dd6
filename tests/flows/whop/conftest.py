"""Fixtures for the backfill tests: the Whop API simulator (a stand-in for Whop, named as such) served on
127.0.0.1, settings pointing at it, and Prefect's test harness (session-scoped, started only when asked)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from memberpulse.settings import Settings
from memberpulse.testing.whop_faults import Faults
from memberpulse.whop_simulator import Population, create_app, serve_in_thread
from tests.support.whop_testkit import API_KEY, COMPANY_ID, NOW, POPULATION_SIZE, Simulator, make_settings


@pytest.fixture
def population() -> Population:
    return Population.generate(seed=11, n=POPULATION_SIZE, company_id=COMPANY_ID, now=NOW)


@pytest.fixture
def simulator(population: Population) -> Iterator[Simulator]:
    faults = Faults()
    app = create_app(population, api_key=API_KEY, intercept=faults, rewrite=faults.rewrite)
    with serve_in_thread(app) as base_url:
        yield Simulator(base_url, population, faults, app.state.whop_simulator)


@pytest.fixture
def settings(tmp_path: Path, simulator: Simulator) -> Settings:
    return make_settings(tmp_path / "data", simulator.base_url)
