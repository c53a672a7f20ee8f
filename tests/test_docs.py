"""Every "SPEC section N" the code, help texts and tests cite is a section of docs/SPEC.md, in the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CITATION = re.compile(r"SPEC(?:\.md)?,? (?:sections? )?(\d+(?:(?:, | and )\d+)*)(?:, Table (\d+))?")


def cited() -> set[tuple[str, str | None]]:
    found = set()
    for folder in ("anatomy", "space", "growth_models", "bench", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            for numbers, table in CITATION.findall(path.read_text(encoding="utf-8")):
                found.update((n, table or None) for n in re.findall(r"\d+", numbers))
    return found


def test_every_cited_spec_section_and_table_is_in_docs():
    spec = (ROOT / "docs" / "SPEC.md").read_text(encoding="utf-8")
    sections = set(re.findall(r"^## (\d+)\. ", spec, flags=re.M))
    citations = cited()
    assert {"1", "5", "8", "9"} <= {n for n, _ in citations}  # the pattern still finds the code's citations
    assert {n for n, _ in citations} <= sections
    assert {t for _, t in citations if t} <= set(re.findall(r"^Table (\d+),", spec, flags=re.M))


def test_the_readme_glossary_is_the_apps():
    from anatomy.glossary import glossary_markdown

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "### Glossary\n\n" + glossary_markdown() + "\n\n" in readme  # regenerate the section when a word changes
