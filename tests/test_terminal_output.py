"""The CLI owns the terminal: outside ``memberpulse/cli/`` no product module prints, writes to standard output
or error, draws with rich, or chooses an exit code; and the CLI imports only the public names of the stages
(no ``_private`` module). ``.importlinter`` forbids ``rich`` below the CLI as well."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("memberpulse.flows", "memberpulse.landing", "memberpulse.transforms")
# Not product: the CLI itself, the test aids, and the Whop API simulator (a stand-in for api.whop.com).
NOT_CHECKED = ("memberpulse/cli/", "memberpulse/testing/", "memberpulse/whop_simulator/")
# (file, what it uses): why it may.
ALLOWED = {
    ("landing/server.py", "sys.stderr"): "the landing's own [Webhook] log lines (a service log, not a terminal)",
    ("memberpulse/__main__.py", "sys.exit"): "`python -m memberpulse` hands the CLI's exit code to the shell",
    ("memberpulse/errors.py", "ExitCode"): "the codes each error carries; the CLI alone exits with them",
}
CALLS = {"print", "input", "breakpoint"}
SYS = {"stdout", "stderr", "stdin", "__stdout__", "__stderr__", "exit"}
NAMES = {"Console", "SystemExit", "ExitCode", "rich"}


def _product_files() -> list[Path]:
    files = [p for base in ("flows", "landing", "transforms") for p in sorted((ROOT / base).rglob("*.py"))]
    files += sorted(p for p in (ROOT / "memberpulse").rglob("*.py") if not any(part.is_symlink() for part in p.parents))
    return [p for p in files if not str(p.relative_to(ROOT)).startswith(NOT_CHECKED)]


def terminal_uses(tree: ast.AST) -> set[str]:
    """What in ``tree`` writes to the terminal or decides an exit code: ``print``, ``sys.stdout`` ..."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in CALLS:
            found.add(f"{node.func.id}()")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "sys":
            found |= {f"sys.{node.attr}"} & {f"sys.{a}" for a in SYS}
        elif isinstance(node, ast.Name) and node.id in NAMES:
            found.add(node.id)
        elif isinstance(node, ast.ImportFrom | ast.Import):
            modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            names = [a.asname or a.name for a in node.names]
            found |= {"rich" for m in modules if m.split(".")[0] == "rich"} | (set(names) & NAMES)
    return found


def test_no_product_module_outside_the_cli_writes_to_the_terminal() -> None:
    files = _product_files()
    assert {"flows/reconcile/_flow.py", "landing/send_test.py", "memberpulse/demo.py"} <= {
        str(p.relative_to(ROOT)) for p in files
    }
    found = {
        (str(path.relative_to(ROOT)), use)
        for path in files
        for use in terminal_uses(ast.parse(path.read_text(), filename=str(path)))
    }
    assert found - set(ALLOWED) == set(), sorted(found - set(ALLOWED))
    assert set(ALLOWED) <= found, "an allow-list entry no longer needed: remove it"


def test_the_check_sees_what_it_looks_for() -> None:
    sample = "import sys\nfrom rich.console import Console\nprint('x')\nsys.stdout.write('x')\nraise SystemExit(2)\n"
    assert terminal_uses(ast.parse(sample)) == {"print()", "sys.stdout", "Console", "SystemExit", "rich"}


def test_the_cli_imports_only_public_names_of_the_stages() -> None:
    private = []
    for path in sorted((ROOT / "memberpulse" / "cli").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            modules += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for module in modules:
                parts = module.split(".")
                if module.startswith(STAGES) and any(part.startswith("_") for part in parts):
                    private.append(f"{path.relative_to(ROOT)}: {module}")
    assert private == []
