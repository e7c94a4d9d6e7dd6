"""Write the data dictionary from its one definition (memberpulse/contracts: tables.py, views.py).

    .venv/bin/python scripts/data_dictionary.py          # write docs/data-dictionary.md and, when the text
                                                          # changed, a new supabase/migrations/*_column_comments.sql
    .venv/bin/python scripts/data_dictionary.py --check  # exit 1 when either is stale (what the tests check)

Migrations are append-only (a database records the versions it applied), so changed descriptions get a new
comments migration rather than an edited one; ``COMMENT ON`` replaces, so applying every one in order leaves
the newest text.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

from memberpulse.contracts.dictionary import COMMENTS_MIGRATION_NAME, markdown, postgres_comments_migration

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "data-dictionary.md"
MIGRATIONS = ROOT / "supabase" / "migrations"


def latest_comments_migration(directory: Path = MIGRATIONS) -> Path | None:
    found = sorted(directory.glob(f"*_{COMMENTS_MIGRATION_NAME}.sql"))
    return found[-1] if found else None


def stale() -> list[str]:
    """What is out of date (empty when everything matches the definitions)."""
    out = []
    if not DOC.is_file() or DOC.read_text(encoding="utf-8") != markdown():
        out.append(str(DOC.relative_to(ROOT)))
    latest = latest_comments_migration()
    if latest is None or latest.read_text(encoding="utf-8") != postgres_comments_migration():
        out.append(f"supabase/migrations/*_{COMMENTS_MIGRATION_NAME}.sql")
    return out


def write() -> list[Path]:
    written = []
    if not DOC.is_file() or DOC.read_text(encoding="utf-8") != markdown():
        DOC.write_text(markdown(), encoding="utf-8")
        written.append(DOC)
    latest = latest_comments_migration()
    if latest is None or latest.read_text(encoding="utf-8") != postgres_comments_migration():
        versions = [p.name.split("_", 1)[0] for p in MIGRATIONS.glob("*.sql")]
        version = max([datetime.now(UTC).strftime("%Y%m%d%H%M%S"), *(str(int(v) + 1) for v in versions)])
        path = MIGRATIONS / f"{version}_{COMMENTS_MIGRATION_NAME}.sql"
        path.write_text(postgres_comments_migration(), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        out = stale()
        for name in out:
            print(f"stale: {name} (run: .venv/bin/python scripts/data_dictionary.py)")
        return 1 if out else 0
    for path in write():
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
