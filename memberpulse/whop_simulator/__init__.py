"""A simulator of Whop's v1 REST API list endpoints, for tests, benchmarks and ``memberpulse demo``.

It is a stand-in for Whop (named as such everywhere): never point it at real data. Typical use::

    population = Population.generate(seed=7, n=300, company_id="biz_demo", now=now)
    faults = Faults()
    app = create_app(population, api_key="sim_key", faults=faults)
    with serve_in_thread(app) as base_url:          # http://127.0.0.1:<port>/api/v1
        faults.rate_limit(3, retry_after=0.1)        # the next 3 requests answer 429
        population.set_status(population.memberships[0].id, "canceled", at=now)   # drift for reconcile
        ...

Served: ``GET {base}/memberships`` and ``GET {base}/members`` (bearer auth: 401 on a wrong key, 403 on an
unknown ``company_id``/``account_id``), cursor pagination with ``first``/``after``.
"""

from memberpulse.contracts.events import VALID_STATUSES
from memberpulse.whop_simulator._app import LoggedRequest, SimulatorState, create_app, simulator_state
from memberpulse.whop_simulator._faults import FaultRule, Faults
from memberpulse.whop_simulator._population import (
    Population,
    SimMember,
    SimMembership,
    SimUser,
)
from memberpulse.whop_simulator._server import serve_in_thread

__all__ = [
    "VALID_STATUSES",
    "FaultRule",
    "Faults",
    "LoggedRequest",
    "Population",
    "SimMember",
    "SimMembership",
    "SimUser",
    "SimulatorState",
    "create_app",
    "serve_in_thread",
    "simulator_state",
]
