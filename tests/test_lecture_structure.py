"""Every lecture in notebooks/ has the shape of a lecture: learning goals at the top, a summary at the end that
answers them, and alt text on every markdown image.

The convention (every notebook, whoever wrote it):
* a markdown cell among the first three opens with ``## Learning goals`` and lists 2 to 4 goals (``1.`` or ``*``);
* a markdown cell opens with ``## Summary``; after it only an ``## Exercises`` section may follow;
* the summary has at least one point per goal (a goal nobody sums up was not met, or not a goal);
* every ``![alt](src)`` / ``<img>`` in markdown has a non-empty alt text.
"""
import re
from pathlib import Path

import nbformat
import pytest

LECTURES = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
LIST_ITEM = re.compile(r"^\s{0,3}(?:[*+-]|\d+[.)])\s+\S", re.M)
HEADING = re.compile(r"^#{1,6}\s+(.*)$", re.M)


def sections(nb):
    """(cell index, heading text) of every markdown heading, in order."""
    return [(i, m.group(1).strip()) for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
            for m in HEADING.finditer(c.source)]


def section_text(nb, title: str) -> str:
    """The markdown text from the heading ``## title`` to the next level-1/2 heading."""
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    match = re.search(rf"^##\s+{re.escape(title)}\s*$(.*?)(?=^#{{1,2}}\s|\Z)", text, re.M | re.S)
    return match.group(1) if match else ""


def test_conventions_are_checked_on_a_bad_notebook():
    md = nbformat.v4.new_markdown_cell
    nb = nbformat.v4.new_notebook(cells=[md("# T"), md("## Learning goals\n\n1. one goal"), md("## Summary\n* a"),
                                         md("## More after the summary"), md("![](x.png)")])
    assert len(LIST_ITEM.findall(section_text(nb, "Learning goals"))) == 1   # too few goals: caught below
    assert [t for _, t in sections(nb)][-1] == "More after the summary"     # not the end: caught below
    assert missing_alt_text(nb) == ["![](x.png)"]


def missing_alt_text(nb) -> list[str]:
    bad = []
    for c in nb.cells:
        if c.cell_type != "markdown":
            continue
        bad += [m.group(0) for m in re.finditer(r"!\[\s*\]\([^)]*\)", c.source)]
        bad += [m.group(0) for m in re.finditer(r"<img\b[^>]*>", c.source, re.I)
                if not re.search(r'\balt\s*=\s*"[^"]+"', m.group(0), re.I)]
    return bad


@pytest.mark.parametrize("path", LECTURES, ids=[p.name for p in LECTURES])
def test_lecture_opens_with_goals_and_ends_with_a_summary(path):
    nb = nbformat.read(path, as_version=4)
    heads = sections(nb)
    goal_cells = [i for i, t in heads if t == "Learning goals"]
    assert goal_cells and goal_cells[0] <= 2, f"{path.name}: no '## Learning goals' cell among the first three cells"
    goals = LIST_ITEM.findall(section_text(nb, "Learning goals"))
    assert 2 <= len(goals) <= 4, f"{path.name}: {len(goals)} learning goals (want 2 to 4 list items)"
    titles = [t for _, t in heads]
    assert "Summary" in titles, f"{path.name}: no '## Summary' section"
    after = titles[len(titles) - 1 - titles[::-1].index("Summary") + 1:]
    assert all(t.startswith("Exercises") for t in after[:1]) and not [t for t in after[1:] if not re.match(
        r"\d+\.|Exercise", t)], f"{path.name}: sections after the summary other than Exercises: {after}"
    points = LIST_ITEM.findall(section_text(nb, "Summary"))
    assert len(points) >= len(goals), f"{path.name}: {len(goals)} goals but {len(points)} summary points"


@pytest.mark.parametrize("path", LECTURES, ids=[p.name for p in LECTURES])
def test_every_markdown_image_has_alt_text(path):
    assert not missing_alt_text(nbformat.read(path, as_version=4)), path.name
