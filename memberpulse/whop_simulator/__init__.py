"""A simulator of Whop's v1 REST API list endpoints, for tests, benchmarks and ``memberpulse demo``.

It is a stand-in for Whop (named as such everywhere): never point it at real data. Typical use::

    population = Population.generate(seed=7, n=300, company_id="biz_demo", now=now)
    app = create_app(population, api_key="sim_key", max_page_size=100)
    with serve_in_thread(app) as base_url:          # http://127.0.0.1:<port>/api/v1
        population.set_status(population.memberships[0].id, "canceled", at=now)   # drift for reconcile
        ...

Served: ``GET {base}/memberships`` and ``GET {base}/members`` (bearer auth: 401 on a wrong key, 403 on an
unknown ``company_id``/``account_id``), cursor pagination with ``first``/``after``. With a :class:`WebhookHub`
(``create_app(..., webhooks=hub)``) it also sends: signed webhooks POSTed to a URL, every attempt in a delivery
log, served at ``/webhooks`` (list, retrieve, deliveries, replay, replay one delivery, test) as whop-sdk 2.6.0
reads them. An ``intercept`` hook runs
before each request is served (tests inject rate limits and outages with it: ``memberpulse.testing.whop_faults``),
and a ``rewrite`` hook alters list answers (cursors that never end or cycle, odd deliveries).
"""

from memberpulse.contracts.events import VALID_STATUSES
from memberpulse.whop_simulator._app import (
    Endpoint,
    Intercept,
    LoggedRequest,
    Rewrite,
    SimulatedAnswer,
    SimulatorState,
    create_app,
    simulator_state,
)
from memberpulse.whop_simulator._population import (
    Population,
    SimMember,
    SimMembership,
    SimUser,
)
from memberpulse.whop_simulator._server import serve_in_thread
from memberpulse.whop_simulator._webhooks import DeliveryAttempt, SimWebhook, WebhookHub, standard_webhook_headers

__all__ = [
    "VALID_STATUSES",
    "DeliveryAttempt",
    "Endpoint",
    "Intercept",
    "LoggedRequest",
    "Population",
    "Rewrite",
    "SimMember",
    "SimMembership",
    "SimUser",
    "SimWebhook",
    "SimulatedAnswer",
    "SimulatorState",
    "WebhookHub",
    "create_app",
    "serve_in_thread",
    "simulator_state",
    "standard_webhook_headers",
]
