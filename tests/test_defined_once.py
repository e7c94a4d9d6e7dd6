"""Each contract and each default is written once, so two copies cannot drift apart.

A frame schema is defined in ``memberpulse/contracts`` and derived everywhere else. (The defaults' half of this
rule is tested in ``tests/memberpulse/test_config_objects.py``.)
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from memberpulse.contracts.failures import FAILURE_RECORD_SCHEMA, REJECT_SCHEMA
from memberpulse.contracts.raw_record import RAW_ARCHIVE_SCHEMA, RAW_RECORD_SCHEMA
from memberpulse.contracts.tables import PUBLISHED_TABLES, SNAPSHOT_TABLES

ROOT = Path(__file__).resolve().parent.parent
CONTRACT_SCHEMAS: dict[str, pl.Schema] = {
    "the raw record": RAW_RECORD_SCHEMA,
    "the raw archive": RAW_ARCHIVE_SCHEMA,
    "a failure as found": REJECT_SCHEMA,
    "a failure as logged": FAILURE_RECORD_SCHEMA,
    **{f"table {t.name}": t.schema for t in (*PUBLISHED_TABLES, *SNAPSHOT_TABLES)},
}


def _product_files() -> list[Path]:
    spec = importlib.util.spec_from_file_location("code_shape", ROOT / "scripts" / "code_shape.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    files: list[Path] = module.product_files()
    return files


def _is_dtype(node: ast.expr) -> bool:
    """``pl.String()``, ``pl.Utf8``, ``pa.int64()``, ``UTC_US``: what a schema literal maps its columns to."""
    target = node.func if isinstance(node, ast.Call) else node
    if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
        return target.value.id in ("pl", "pa")
    return isinstance(target, ast.Name) and target.id == "UTC_US"


def schema_literals(source: str) -> Iterator[tuple[int, list[str]]]:
    """(line, column names) of every schema spelled out in ``source``: a dict of names to dtypes, or the
    ``[(name, type), ...]`` list of a ``pa.schema`` call."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Dict) and node.values and all(_is_dtype(v) for v in node.values):
            yield node.lineno, [k.value for k in node.keys if isinstance(k, ast.Constant)]
        elif _is_schema_call(node):
            assert isinstance(node, ast.Call) and isinstance(node.args[0], ast.List)
            pairs = [e.elts for e in node.args[0].elts if isinstance(e, ast.Tuple)]
            yield node.lineno, [pair[0].value for pair in pairs if isinstance(pair[0], ast.Constant)]


def _is_schema_call(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "schema"
        and bool(node.args)
        and isinstance(node.args[0], ast.List)
    )


def restated_contracts(source: str) -> list[str]:
    """The contracts whose columns a schema literal in ``source`` restates (two or more of them, nothing else)."""
    found = []
    for line, columns in schema_literals(source):
        for name, schema in CONTRACT_SCHEMAS.items():
            if len(columns) >= 2 and set(columns) <= set(schema):
                found.append(f"line {line} restates {name}: {columns}")
    return found


def test_the_check_finds_a_restated_contract() -> None:
    """The scan below would see the copies this rule replaced (they were spelled exactly like these)."""
    archive = 'pa.schema([("source_file", pa.string()), ("source_offset", pa.int64()), ("line", pa.large_binary())])'
    failure_log = '{"webhook_id": pl.Utf8(), "reason": pl.Utf8(), "received_at": UTC_US, "body_prefix": pl.Utf8}'
    assert restated_contracts(archive) == [f"line 1 restates the raw archive: {list(RAW_ARCHIVE_SCHEMA)}"]
    assert any("a failure as logged" in found for found in restated_contracts(failure_log))
    assert restated_contracts('{"webhook_id": pl.String(), "landed": pl.Boolean()}') == []  # a schema of its own


def test_no_schema_outside_the_contracts_restates_one() -> None:
    restated = {
        str(path.relative_to(ROOT)): found
        for path in _product_files()
        if not path.is_relative_to(ROOT / "memberpulse" / "contracts")
        and (found := restated_contracts(path.read_text()))
    }
    assert restated == {}, "derive these from memberpulse.contracts instead of spelling the columns again"
