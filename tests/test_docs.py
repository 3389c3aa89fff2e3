"""The docs a newcomer reads: every relative link leads to a file of the repository."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", REPO / "benchmarks" / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_leads_somewhere(page):
    links = re.findall(r"\]\(([^)\s]+)\)", page.read_text())
    dead = [link for link in links if not re.match(r"[a-z]+:", link) and not link.startswith("#")
            and not (page.parent / link.split("#")[0]).exists()]
    assert not dead, dead
