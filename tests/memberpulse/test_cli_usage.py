"""``memberpulse COMMAND --help`` says what each option defaults to (argparse, in-process)."""

from __future__ import annotations

import argparse

import pytest

from memberpulse.cli import build_parser, handler, main


def _help(capsys: pytest.CaptureFixture[str], *command: str) -> str:
    with pytest.raises(SystemExit) as stopped:
        main([*command, "--help"])
    assert stopped.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines; compare words


def test_serve_help_gives_the_defaults_of_host_and_port(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys, "serve")
    assert "--host HOST" in text and "(default: 127.0.0.1)" in text
    assert "--port PORT" in text and "(default: 3000)" in text


def test_send_test_help_explains_cacert_and_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys, "send-test")
    assert "--cacert PATH" in text and "(default: SSL_CERT_FILE if set" in text
    assert "(default: http://localhost:3000/api/webhooks/whop)" in text


def test_every_command_has_a_module_of_its_own() -> None:
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) == {"serve", "send-test", "run", "backfill", "recover", "report", "sql", "migrate", "demo"}
    for name in commands:
        assert callable(handler(name)), name  # memberpulse.cli.<name>.command(args, settings)
