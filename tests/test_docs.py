"""The docs hold together: every relative link and anchor in README.md and docs/ resolves, the README stays a
short overview, and its commands table matches what ``memberpulse --help`` lists (docs/development.md, "Docs")."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from memberpulse.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted([README, *(ROOT / "docs").glob("*.md")])
README_MAX_LINES = 150

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_CODE_SPAN = re.compile(r"`[^`]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _prose_lines(path: Path) -> list[str]:
    """The lines of a Markdown file outside fenced code blocks."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (``_`` and ``-`` kept), spaces to ``-``."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for line in _prose_lines(path):
        match = _HEADING.match(line)
        if not match:
            continue
        slug = _slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _links(path: Path) -> list[str]:
    return [target for line in _prose_lines(path) for target in _LINK.findall(_CODE_SPAN.sub("", line))]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(doc: Path) -> None:
    broken = []
    for target in _links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, file: — not ours to check
            continue
        file_part, _, anchor = target.partition("#")
        linked = (doc.parent / file_part).resolve() if file_part else doc
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target}: no such heading in {linked.relative_to(ROOT)}")
    assert not broken, f"{doc.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_readme_stays_a_short_overview() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move details to docs/"


def _help(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    with pytest.raises(SystemExit) as exited:
        main([*args, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def _readme_command_rows() -> list[str]:
    section = README.read_text(encoding="utf-8").split("## Commands", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `memberpulse ")]


def test_the_readme_commands_table_matches_memberpulse_help(capsys: pytest.CaptureFixture[str]) -> None:
    top = _help(capsys)
    commands = re.findall(r"^ {4}([a-z][\w-]*)(?:\s|$)", top, flags=re.MULTILINE)
    assert "run" in commands and "sql" in commands, top
    rows = _readme_command_rows()
    for command in commands:
        first_cells = [row.split(" | ", 1)[0] for row in rows if row.startswith(f"| `memberpulse {command} ")]
        first_cells += [row.split(" | ", 1)[0] for row in rows if row.startswith(f"| `memberpulse {command}`")]
        assert first_cells, f"README.md's commands table has no row for `memberpulse {command}`"
        options = set(re.findall(r"(--[a-z][\w-]*)", _help(capsys, command))) - {"--help"}
        missing = sorted(o for o in options if not any(o in cell for cell in first_cells))
        assert not missing, f"README.md's `memberpulse {command}` rows lack {missing} (`memberpulse {command} --help`)"
    epilog = top[top.index("exit codes:") :]
    for code in re.findall(r"(?:^|[:,]) ?(\d+) ", " ".join(epilog.split())):
        assert f"**{code}**" in README.read_text(encoding="utf-8"), f"exit code {code} is not in README.md"
