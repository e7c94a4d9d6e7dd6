"""Write docs/configuration.md's settings table from ``memberpulse.settings.Settings`` (names, descriptions,
defaults, allowed values), between the ``<!-- settings-table:start -->`` and ``<!-- settings-table:end -->`` markers.

    python scripts/settings_table.py          # rewrite docs/configuration.md
    python scripts/settings_table.py --check  # exit 1 when docs/configuration.md is stale (tests run this)
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path

import annotated_types
from pydantic.fields import FieldInfo

from memberpulse.settings import DATA_DIR_DEFAULT_TEXT, Settings, default_data_dir, env_names

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"
_BOUNDS = ((annotated_types.Ge, "ge", "≥"), (annotated_types.Gt, "gt", ">"), (annotated_types.Le, "le", "≤"))


def _default(field: FieldInfo) -> str:
    if field.default_factory is default_data_dir:
        return f"`{DATA_DIR_DEFAULT_TEXT}`"
    value = field.default
    if value is None:
        return "—"
    if isinstance(value, Path) and not value.is_absolute():
        return f"`./{value}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _allowed(field: FieldInfo) -> str:
    choices = typing.get_args(field.annotation) if typing.get_origin(field.annotation) is typing.Literal else ()
    if choices:
        return ", ".join(f"`{c}`" for c in choices)
    bounds = [f"{sign} {getattr(m, attr)}" for m in field.metadata for cls, attr, sign in _BOUNDS if isinstance(m, cls)]
    return ", ".join(bounds)


def render() -> str:
    rows = ["| variable | meaning | default | allowed |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        variables = " or ".join(f"`{env}`" for env in env_names(name))
        rows.append(f"| {variables} | {field.description} | {_default(field)} | {_allowed(field)} |")
    return "\n".join(rows)


def updated(doc: str) -> str:
    before, start, rest = doc.partition(START)
    _, end, after = rest.partition(END)
    if not start or not end:
        raise SystemExit(f"{DOC}: the {START} / {END} markers are missing")
    return f"{before}{START}\n{render()}\n{END}{after}"


def main(argv: list[str]) -> int:
    current = DOC.read_text()
    fresh = updated(current)
    if "--check" in argv:
        if fresh != current:
            print(f"{DOC.name}'s settings table is stale: run python scripts/settings_table.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
