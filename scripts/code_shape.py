"""Print the product's longest functions and largest modules (the numbers behind ``tests/test_code_shape.py``).

.venv/bin/python scripts/code_shape.py [--limit 50]
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The product's source folders (``memberpulse/{flows,landing,transforms}`` are links to three of them).
PRODUCT_DIRS = ("memberpulse", "landing", "flows", "transforms")


def product_files() -> list[Path]:
    files: list[Path] = []
    for name in PRODUCT_DIRS:
        base = ROOT / name
        if base.is_symlink():
            continue
        files += sorted(p for p in base.rglob("*.py") if not any(part.is_symlink() for part in _parents(p)))
    return files


def _parents(path: Path) -> Iterator[Path]:
    for parent in path.relative_to(ROOT).parents:
        if str(parent) != ".":
            yield ROOT / parent


def function_lengths() -> list[tuple[int, str]]:
    """(lines, "path:qualified.name") for every function and method, docstring included."""
    found: list[tuple[int, str]] = []
    for path in product_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        found += _walk(tree, str(path.relative_to(ROOT)), "")
    return sorted(found, reverse=True)


def _walk(node: ast.AST, path: str, prefix: str) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            name = f"{prefix}{child.name}"
            assert child.end_lineno is not None
            found.append((child.end_lineno - child.lineno + 1, f"{path}:{name}"))
            found += _walk(child, path, f"{name}.")
        elif isinstance(child, ast.ClassDef):
            found += _walk(child, path, f"{prefix}{child.name}.")
    return found


def module_sizes() -> list[tuple[int, str]]:
    return sorted(((len(p.read_text().splitlines()), str(p.relative_to(ROOT))) for p in product_files()), reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=50, help="list functions longer than this many lines")
    parser.add_argument("--modules", type=int, default=10, help="how many of the largest modules to list")
    args = parser.parse_args()
    print(f"functions over {args.limit} lines:")
    for lines, name in function_lengths():
        if lines > args.limit:
            print(f"  {lines:4d}  {name}")
    print(f"largest {args.modules} modules:")
    for lines, name in module_sizes()[: args.modules]:
        print(f"  {lines:4d}  {name}")


if __name__ == "__main__":
    main()
