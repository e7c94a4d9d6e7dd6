"""Every error carries its exit code and its retry decision; the CLI and the task retry policy read them."""

from __future__ import annotations

import logging
import os
from typing import Any

import pytest

from memberpulse import cli, errors
from memberpulse.errors import ExitCode


class _State:  # what Prefect hands a retry condition: a state whose result is the exception
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def result(self, raise_on_failure: bool = True) -> Any:
        return self.exc


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.ConfigError("x", variable="WHOP_API_KEY"), ExitCode.CONFIG),
        (errors.WhopAuthError("401"), ExitCode.CONFIG),
        (errors.PublishError("constraint"), ExitCode.CONFIG),
        (errors.InvalidInput("bad"), ExitCode.CONFIG),
        (errors.StorageUnavailable("disk full"), ExitCode.TRANSIENT),
        (errors.WhopUnavailable("5xx"), ExitCode.TRANSIENT),
        (errors.WhopRateLimited("429"), ExitCode.TRANSIENT),
        (errors.PublishUnavailable("down"), ExitCode.TRANSIENT),
        (errors.WhopGaveUp("gave up", page=3, last_status=502), ExitCode.TRANSIENT),
        (errors.MemberpulseError("other"), ExitCode.FAILED),
    ],
)
def test_each_error_carries_its_exit_code_and_the_cli_uses_it(
    error: errors.MemberpulseError, code: ExitCode, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert error.exit_code == code

    def fail(args: object, settings: object) -> int:
        raise error

    monkeypatch.setattr(cli, "_dispatch", fail)
    assert cli.main(["migrate"]) == code
    assert capsys.readouterr().err.startswith(f"memberpulse migrate: {error}")


def test_whop_gave_up_is_transient_but_never_retried_by_a_task() -> None:
    from memberpulse.flows.retry_policy import retry_on_transient

    gave_up = errors.WhopGaveUp("gave up", page=2, last_status=500)
    assert isinstance(gave_up, errors.TransientError) and not isinstance(gave_up, errors.FatalError)
    assert retry_on_transient(None, None, _State(gave_up)) is False  # the client already spent its retries
    assert retry_on_transient(None, None, _State(errors.WhopUnavailable("5xx"))) is True
    assert retry_on_transient(None, None, _State(errors.StorageUnavailable("disk"))) is True
    assert retry_on_transient(None, None, _State(errors.WhopAuthError("401"))) is False
    assert retry_on_transient(None, None, _State(ValueError("bug"))) is False


def test_the_cli_quiets_prefect_without_overriding_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_LOGGING_LEVEL", raising=False)
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "true")
    prefect_logger = logging.getLogger("prefect")
    monkeypatch.setattr(prefect_logger, "level", prefect_logger.level)  # restored afterwards
    cli.quiet_prefect()
    assert os.environ["PREFECT_LOGGING_LEVEL"] == "WARNING"
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "true"  # the environment still wins
    assert prefect_logger.level == logging.WARNING
