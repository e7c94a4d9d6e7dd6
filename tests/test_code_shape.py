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


def test_tests_and_benches_are_packages_that_never_edit_sys_path() -> None:
    """tests/ mirrors the source as one package tree (pytest puts the checkout on sys.path; helpers live in
    tests/support/), and benches run as ``python -m bench.<name>``: no file reaches for sys.path itself."""
    for folder in [ROOT / "tests", ROOT / "bench", *(ROOT / "tests").rglob("*")]:
        if folder.is_dir() and folder.name != "__pycache__" and any(folder.glob("*.py")):
            assert (folder / "__init__.py").is_file(), f"{folder.relative_to(ROOT)} is not a package"
    edits = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in [*(ROOT / "tests").rglob("*.py"), *(ROOT / "bench").glob("*.py")]
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if "sys.path." in line and not line.lstrip().startswith("#") and path.name != "test_code_shape.py"
    ]
    assert edits == [], edits
