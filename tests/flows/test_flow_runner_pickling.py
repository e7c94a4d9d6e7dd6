"""A runner (``flow.serve()``, Prefect's subprocess runs) cloudpickles a flow by value; its parameters must still
validate there, or every served run fails before it starts."""

from __future__ import annotations

from datetime import UTC, datetime

import cloudpickle
import pytest

from memberpulse.flows.backfill import backfill_flow
from memberpulse.flows.reconcile import reconcile_flow


@pytest.mark.parametrize(
    ("flow", "parameters"),
    [
        (reconcile_flow, {}),
        (reconcile_flow, {"as_of": datetime(2026, 11, 27, tzinfo=UTC), "only_new": True, "catch_up_seconds": 5}),
        (backfill_flow, {}),
    ],
)
def test_a_flow_pickled_by_value_still_validates_its_parameters(flow: object, parameters: dict[str, object]) -> None:
    copy = cloudpickle.loads(cloudpickle.dumps(flow))
    validated = copy.validate_parameters(parameters)
    assert set(parameters) <= set(validated)
    for name, value in parameters.items():
        assert validated[name] == value
