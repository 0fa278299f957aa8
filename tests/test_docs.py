"""The README and docs/: links that lead somewhere, the set-up commands CI relies on, and
a README short enough to read in five minutes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.unit

README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
SET_UP = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e . "
    "&& pairs-tui btcusdt ethusdt --demo",
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' && pytest",
)
MAX_README_LINES = 160

FENCE = re.compile(r"^```.*?^```[ \t]*$", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *#* *$", re.MULTILINE)


def prose(path: Path) -> str:
    """The page without its fenced code blocks (a `# comment` there is no heading)."""
    return FENCE.sub("", path.read_text())


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(h) for h in HEADING.findall(prose(path))}


def relative_links(path: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(prose(path))
        if not re.match(r"[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto:
    ]


def test_there_are_docs_to_check():
    assert len(PAGES) >= 5
    assert all(relative_links(page) for page in PAGES[:1])


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(REPO).as_posix() for p in PAGES])
def test_every_relative_link_leads_somewhere(page):
    broken = []
    for target in relative_links(page):
        file, _, anchor = target.partition("#")
        where = (page.parent / file).resolve() if file else page
        if not where.exists():
            broken.append(f"{target}: no file {where}")
        elif anchor and where.suffix == ".md" and anchor not in anchors(where):
            broken.append(f"{target}: no heading #{anchor} in {where.name}")
    assert broken == []


def test_every_page_of_docs_is_linked_from_the_readme():
    linked = {(REPO / t.partition("#")[0]).resolve() for t in relative_links(README)}
    assert [p.name for p in PAGES[1:] if p.resolve() not in linked] == []


@pytest.mark.parametrize("command", SET_UP, ids=["demo", "tests"])
def test_the_readme_keeps_the_set_up_commands_verbatim(command):
    assert f"```sh\n{command}\n```" in README.read_text()


def test_the_readme_reads_in_five_minutes():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"{len(lines)} lines"


def test_the_slug_is_githubs():
    assert slug("The cockpit: `pairs-tui [SYMBOL_A SYMBOL_B] [options]`") == (
        "the-cockpit-pairs-tui-symbol_a-symbol_b-options"
    )
    assert slug("Bad input") == "bad-input"
