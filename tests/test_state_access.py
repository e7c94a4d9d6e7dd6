"""Only the state codec opens state: no product module reads or writes a state document or a Parquet table by
itself (``memberpulse.flows.state_codec``, on top of ``memberpulse.flows.fsio``, does, with one format and one
damage policy for all).

An AST scan of the product (``memberpulse/``, ``flows/``, ``landing/``, ``transforms/``) lists every call that
reads or writes a file's data by itself: polars and pyarrow Parquet I/O, ``json.load``/``json.dump``,
``read_bytes``/``read_text``/``write_bytes``/``write_text`` (so ``json.loads(path.read_bytes())`` too),
``open(...)``, fsio's whole-file primitives, and DuckDB SQL reading Parquet. Each one outside the codec must be
on ``ALLOWED``, which says why that file is not state. ``python tests/test_state_access.py [ROOT]`` prints the
state entry points of a tree (every access not on the list).
"""

from __future__ import annotations

import ast
import os
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT_DIRS = ("memberpulse", "flows", "landing", "transforms")  # memberpulse/{flows,...} link to three of them

# Module (or folder, ending in "/") -> operation -> why it is not a state entry point. "*": every operation.
ALLOWED: dict[str, dict[str, str]] = {
    "flows/state_codec.py": {"*": "the codec: every state document and warehouse table goes through it"},
    "flows/fsio.py": {"*": "the crash-safe primitives the codec is built on (temporary sibling, fsync, rename)"},
    "flows/raw/reader.py": {"open": "the landing's raw segments: the raw store, which state is rebuilt from"},
    "flows/recover/_store.py": {
        "open": "recovered webhooks are streamed into a new raw segment (the raw store, not state), fsync'd under "
        "a name no reader globs, then renamed; unusable deliveries likewise into a quarantine file"
    },
    "landing/shipper.py": {"open": "reads the landing's own raw segments to ship them (the raw store, not state)"},
    "flows/reconcile/_lock.py": {"open": "the run lock: an flock on an empty file"},
    "flows/snapshot/_files.py": {"open": "the snapshot writer's lock: an flock on an empty file"},
    "memberpulse/cli/sql.py": {".open": "`memberpulse sql` output, copied from DuckDB's temporary export file"},
    "flows/snapshot/_writer.py": {
        "SQL read_parquet": "DuckDB loads the event log and history tables into the snapshot without passing them "
        "through Python; their names come from the reconcile store, which writes them through the codec"
    },
    "flows/publish/_migrations.py": {".read_text": "the SQL migrations shipped in the package: code, not state"},
    "flows/report/_build.py": {
        "atomic_write_bytes": "the HTML report: output for people, not state",
        ".write_bytes": "the HTML report to a file a person named (--out): output for people, not state",
    },
    "memberpulse/demo.py": {"open": "the log of the landing process the demo starts"},
    "flows/statestore/_analytics.py": {
        "atomic_write_bytes": "this machine's copy of the store's snapshot (a DuckDB file, cached by its ETag)"
    },
    "memberpulse/storage/object_store.py": {
        ".open": "the object-store client streams an object into a file its caller names (the caller's format)"
    },
}

_POLARS = {"read_parquet", "scan_parquet", "read_parquet_schema", "read_parquet_metadata"}
_PYARROW = {"ParquetFile", "ParquetWriter", "ParquetDataset", "read_table", "write_table", "read_metadata"}
_METHODS = {"write_parquet", "sink_parquet", "read_bytes", "read_text", "write_bytes", "write_text"}
_FSIO = {"read_parquet_checked", "atomic_write_parquet", "atomic_write_bytes"}


@dataclass(frozen=True, order=True)
class Access:
    module: str  # relative to the root, e.g. flows/reconcile/_store.py
    line: int
    operation: str  # e.g. "pl.read_parquet", ".write_bytes", "open"

    def __str__(self) -> str:
        return f"{self.module}:{self.line}: {self.operation}"


def accesses_in(source: str, module: str) -> list[Access]:
    """Every call in ``source`` that reads or writes a file's data by itself."""
    found = []
    for node in ast.walk(ast.parse(source)):
        operation = _operation(node)
        if operation is not None:
            found.append(Access(module, getattr(node, "lineno", 0), operation))
    return found


def _operation(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and "read_parquet(" in node.value:
        return "SQL read_parquet"
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    if isinstance(func, ast.Name):
        if func.id == "open" or func.id in _FSIO or func.id in _PYARROW - {"read_table", "write_table"}:
            return func.id
        return None
    if not isinstance(func, ast.Attribute):
        return None
    owner = func.value.id if isinstance(func.value, ast.Name) else None
    if owner in ("pl", "polars") and func.attr in _POLARS:
        return f"pl.{func.attr}"
    if owner in ("pq", "parquet") and func.attr in _PYARROW:
        return f"pq.{func.attr}"
    if owner == "json" and func.attr in ("load", "dump"):
        return f"json.{func.attr}"
    if owner == "io" and func.attr == "open":
        return "open"
    if func.attr in _FSIO:
        return func.attr
    if func.attr in _METHODS:
        return f".{func.attr}"
    if func.attr == "open" and owner != "os" and _has_mode(node):
        return ".open"  # Path.open("rb")
    return None


def _has_mode(call: ast.Call) -> bool:
    modes = [*call.args[:1], *(k.value for k in call.keywords if k.arg == "mode")]
    return any(
        isinstance(m, ast.Constant) and isinstance(m.value, str) and set(m.value) <= set("rwabx+t") for m in modes
    )


def product_modules(root: Path) -> list[Path]:
    """The product's Python files (os.walk does not follow memberpulse/flows etc., links to the other three)."""
    files = []
    for name in PRODUCT_DIRS:
        for folder, _, names in os.walk(root / name):
            files += [Path(folder) / n for n in names if n.endswith(".py")]
    return sorted(files)


def scan(root: Path) -> list[Access]:
    found = []
    for path in product_modules(root):
        found += accesses_in(path.read_text(), path.relative_to(root).as_posix())
    return sorted(found)


def allowance(access: Access) -> tuple[str, str] | None:
    """The ALLOWED entry (module key, operation key) covering ``access``, if any."""
    for key, operations in ALLOWED.items():
        if access.module == key or (key.endswith("/") and access.module.startswith(key)):
            for operation in (access.operation, "*"):
                if operation in operations:
                    return key, operation
    return None


def test_no_product_module_opens_state_outside_the_codec() -> None:
    entry_points = [str(a) for a in scan(ROOT) if allowance(a) is None]
    assert entry_points == [], "open state through memberpulse.flows.state_codec, or say on ALLOWED why it is not state"


def test_every_allowance_is_still_used() -> None:
    used = {allowance(a) for a in scan(ROOT)}
    stale = [(key, op) for key, operations in ALLOWED.items() for op in operations if (key, op) not in used]
    assert stale == [], "remove allow-list entries nothing needs any more"


def test_the_scan_sees_each_way_of_opening_a_file() -> None:
    source = """
import json, polars as pl, pyarrow.parquet as pq
from memberpulse.flows.fsio import atomic_write_bytes
manifest = json.loads(path.read_bytes())
state = json.loads(path.read_text())
with open(path) as fh:
    json.load(fh)
with path.open("w") as fh:
    json.dump({}, fh)
path.write_bytes(b"{}")
path.write_text("{}")
pl.read_parquet(path)
pl.scan_parquet(path).collect()
frame.write_parquet(path)
frame.lazy().sink_parquet(path)
pq.ParquetFile(path)
pq.ParquetWriter(path, schema)
atomic_write_bytes(path, b"{}")
con.execute("CREATE TABLE t AS SELECT * FROM read_parquet($files)")
os.open(path, os.O_RDONLY)
BackfillSnapshot.open(entry)
"""
    operations = [a.operation for a in accesses_in(source, "x.py")]
    assert sorted(operations) == sorted([
        ".read_bytes", ".read_text", "open", "json.load", ".open", "json.dump", ".write_bytes", ".write_text",
        "pl.read_parquet", "pl.scan_parquet", ".write_parquet", ".sink_parquet", "pq.ParquetFile",
        "pq.ParquetWriter", "atomic_write_bytes", "SQL read_parquet",
    ])  # fmt: skip


def test_the_scan_covers_the_whole_product() -> None:
    modules = {p.relative_to(ROOT).as_posix() for p in product_modules(ROOT)}
    assert {"flows/state_codec.py", "landing/raw_store.py", "transforms/_fold.py", "memberpulse/cli/run.py"} <= modules
    assert not any(
        m.startswith(("memberpulse/flows/", "memberpulse/landing/", "memberpulse/transforms/")) for m in modules
    )


if __name__ == "__main__":
    tree = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    points = [a for a in scan(tree) if allowance(a) is None]
    for access in points:
        print(access)
    print(f"{len(points)} state entry point(s) outside the codec in {tree}")
