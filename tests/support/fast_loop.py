"""Keeps ``pytest -m "not slow"`` honest: a test not marked ``slow`` fails when it (or any fixture it sets up,
whatever the fixture's scope) asks for one of ``SLOW_FIXTURES``, starts a subprocess or a uvicorn server, or
runs a Prefect flow or task. Call the plain step functions (or ``flow.fn``) in fast tests instead.

The hooks are imported into tests/conftest.py.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager

import pytest

SLOW_FIXTURES = frozenset(
    {"postgres_server", "postgres_dsn", "migrated_postgres_dsn", "prefect_harness", "_prefect_session_harness"}
)
_MARK_IT = "mark it @pytest.mark.slow, or keep it in-process"
_CAUGHT = pytest.StashKey[list[str]]()


def _is_slow(item: pytest.Item) -> bool:
    return item.get_closest_marker("slow") is not None


@contextmanager
def _refusing(item: pytest.Item) -> Iterator[list[str]]:
    """While active, the item's own thread cannot start a process, a server or a Prefect run."""
    caught = item.stash.setdefault(_CAUGHT, [])
    test_thread = threading.current_thread()

    def refuse(what: str, original: Callable[..., object]) -> Callable[..., object]:
        def guarded(*args: object, **kwargs: object) -> object:
            if threading.current_thread() is not test_thread:  # a background thread of an earlier (slow) test
                return original(*args, **kwargs)
            caught.append(what)
            raise RuntimeError(f"{item.nodeid} {what} but is not marked slow: {_MARK_IT}")

        return guarded

    with pytest.MonkeyPatch.context() as patch:
        popen = subprocess.Popen
        patch.setattr(popen, "_execute_child", refuse("starts a subprocess", popen._execute_child))  # type: ignore[attr-defined]
        if "uvicorn" in sys.modules:
            server = sys.modules["uvicorn"].Server
            patch.setattr(server, "__init__", refuse("starts a uvicorn server", server.__init__))
        if "prefect.flows" in sys.modules:
            flow, task = sys.modules["prefect.flows"].Flow, sys.modules["prefect.tasks"].Task
            patch.setattr(flow, "__call__", refuse("runs a Prefect flow", flow.__call__))
            patch.setattr(task, "__call__", refuse("runs a Prefect task", task.__call__))
        yield caught


def _fail_if_caught(item: pytest.Item, caught: list[str]) -> None:
    if caught:  # also when the code under test swallowed the RuntimeError
        pytest.fail(f"{item.nodeid} {caught[0]} but is not marked slow: {_MARK_IT}", pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, object, object]:
    if _is_slow(item):
        return (yield)
    wanted = sorted(SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())))
    if wanted:
        pytest.fail(f"{item.nodeid} uses {', '.join(wanted)} but is not marked slow: {_MARK_IT}", pytrace=False)
    with _refusing(item) as caught:  # covers fixtures of every scope set up for this item
        result = yield
    _fail_if_caught(item, caught)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    if _is_slow(item):
        return (yield)
    with _refusing(item) as caught:
        result = yield
    _fail_if_caught(item, caught)
    return result
