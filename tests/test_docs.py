"""The README and docs/ point at files that exist: every result file, benchmark script, config
and docs page they name (a moved or renamed file otherwise leaves a dead reference)."""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# A repository path as the pages write it: in backticks or plain text, ending before
# punctuation. Patterns name families, not files: wildcards, brackets and braces
# ("results/table2[_quick].json", "seed{1,2}") and capitalised placeholders ("seedS", "NAME").
PATH = re.compile(r"\b(?:results|benchmarks|configs|docs)/[\w./*\[\]{},<>-]*[\w*\]}>]")

TEMPLATE = re.compile(r"[A-Z*\[\]{}<>]")


def named_paths(text: str) -> set[str]:
    return {p for p in PATH.findall(text) if not TEMPLATE.search(p)}


def test_pages_exist():
    assert (REPO / "docs").is_dir() and len(PAGES) > 1


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_named_files_exist(page):
    missing = sorted(p for p in named_paths(page.read_text()) if not (REPO / p).exists())
    assert not missing, f"{page.name} names files that do not exist: {missing}"


def test_named_paths_parsing():
    text = (
        "see `results/cgn_quality.json`, results/table2[_quick].json, `results/x_seed{1,2}.json`, "
        "results/y_seedS.json and docs/speed.md."
    )
    assert named_paths(text) == {"results/cgn_quality.json", "docs/speed.md"}
