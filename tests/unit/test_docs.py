"""The docs cite tests as evidence; a citation that no longer resolves is a false claim. Every `tests/...` path the
architecture document (and the README) names exists, and every `::test_name` names a test in the file cited last."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ["docs/ARCHITECTURE.md", "docs/API.md", "docs/DEPLOY.md", "README.md"]
CITATION = re.compile(r"(tests/[A-Za-z0-9_/.-]*[A-Za-z0-9_/])?(?:::([A-Za-z_][A-Za-z0-9_]*))?")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)}
    return {n for n in names if n.startswith(("test", "Test"))}


def citations(text: str) -> list[tuple[str, str | None]]:
    """(file, test or None) in the order the text cites them; a bare `::name` belongs to the file cited last."""
    found: list[tuple[str, str | None]] = []
    last: str | None = None
    for m in CITATION.finditer(text):
        path, test = m.group(1), m.group(2)
        if path:
            last = path
        if path or (test and last):
            found.append((path or last or "", test))
    return found


@pytest.mark.parametrize("doc", DOCS)
def test_every_cited_test_exists(doc: str) -> None:
    text = (ROOT / doc).read_text()
    missing = []
    for path, test in citations(text):
        target = ROOT / path
        if not target.exists():
            missing.append(path)
        elif test is not None and (target.suffix != ".py" or test not in _tests_in(target)):
            missing.append(f"{path}::{test}")
    assert missing == [], f"{doc} cites what is not there: {sorted(set(missing))}"


def test_the_citation_reader_reads_both_forms() -> None:
    text = "see `tests/a/test_x.py::test_one`, `::test_two` and tests/b/ for more"
    assert citations(text) == [("tests/a/test_x.py", "test_one"), ("tests/a/test_x.py", "test_two"), ("tests/b/", None)]
