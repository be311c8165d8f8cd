"""The method is documented inside the repository: every citation of docs/method.md (and docs/performance.md)
points at a section that exists, and nothing cites a document outside the repository."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CITING = [ROOT / "README.md", *(ROOT / folder for folder in ("ktg", "experiments", "tests", "notebooks", "docs"))]


def cited_files() -> list[Path]:
    files = []
    for place in CITING:
        files += [place] if place.is_file() else [p for p in place.rglob("*") if p.suffix in (".py", ".md", ".json",
                                                                                              ".ipynb", ".sh")]
    return files


def anchor(heading: str) -> str:
    """The anchor a Markdown renderer gives a heading: lower case, spaces to hyphens, punctuation dropped."""
    return re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")


@pytest.mark.parametrize("document, least", [("method", 11), ("performance", 1), ("results", 5)])
def test_every_cited_section_exists(document, least):
    headings = re.findall(r"^#+ (.+)$", (ROOT / "docs" / f"{document}.md").read_text(encoding="utf-8"), flags=re.M)
    sections = {anchor(heading) for heading in headings}
    cited = {(path.relative_to(ROOT), name) for path in cited_files()
             for name in re.findall(rf"{document}\.md#([a-z0-9-]+)", path.read_text(encoding="utf-8"))}
    assert len(cited) >= least  # the code really cites it
    assert [(str(path), name) for path, name in sorted(cited) if name not in sections] == []


def test_nothing_cites_a_document_outside_the_repository():
    # Built from parts so that this file does not match itself.
    outside = re.compile("|".join(["SP" + "EC", "seed " + "00", r"\.\./" + "shared"]))
    found = [f"{path.relative_to(ROOT)}:{number}" for path in cited_files()
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
             if outside.search(line)]
    assert found == []
