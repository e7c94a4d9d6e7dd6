"""``memberpulse serve``: the landing endpoint until SIGINT/SIGTERM (its own ``[Webhook]`` log lines on stderr)."""

from __future__ import annotations

import argparse

from memberpulse.errors import ExitCode
from memberpulse.landing import serve
from memberpulse.settings import Settings


def command(args: argparse.Namespace, settings: Settings) -> int:
    serve(settings, host=args.host, port=args.port)
    return ExitCode.OK
