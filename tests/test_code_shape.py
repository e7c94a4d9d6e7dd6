"""No product function over ~50 lines (``scripts/code_shape.py`` prints the figures)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 50


def _code_shape():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("code_shape", ROOT / "scripts" / "code_shape.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_product_function_is_over_the_limit() -> None:
    long = {name: lines for lines, name in _code_shape().function_lengths() if lines > LIMIT}
    assert long == {}, f"functions over {LIMIT} lines (split them): {long}"


def test_the_checker_sees_the_whole_product() -> None:
    files = {str(p.relative_to(ROOT)) for p in _code_shape().product_files()}
    assert {
        "landing/endpoint.py",
        "flows/reconcile/_flow.py",
        "transforms/_fold.py",
        "memberpulse/cli/__init__.py",
    } <= files
    assert not any(
        f.startswith(("memberpulse/flows/", "memberpulse/landing/", "memberpulse/transforms/")) for f in files
    )
