"""scripts/execute_notebooks.py: the slide-metadata rule, and every lecture carrying it (so RISE can present it)."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "execute_notebooks.py"
LECTURES = sorted((REPO / "notebooks").glob("*.ipynb"))
RISE_TYPES = {"slide", "subslide", "fragment", "skip", "notes", "-"}


def load_script():
    spec = importlib.util.spec_from_file_location("execute_notebooks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_slide_rule():
    script = load_script()
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    cells = [md("intro text"), md("# Title"), md("## Section\ntext"), md("### Part"), md("#### Detail"),
             md("text with # a hash"), code("# a comment, not a heading"), md("#hashtag")]
    assert [script.slide_type(c, i) for i, c in enumerate(cells)] == \
        ["slide", "slide", "slide", "subslide", "subslide", "-", "-", "-"]


def test_split_at_headings_puts_every_heading_at_the_top_of_a_cell():
    script = load_script()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("Some text.\n\n## 2. Next\nmore\n### Part\nlast", metadata={"tags": ["t"]}),
                nbformat.v4.new_markdown_cell("```\n# a comment in fenced code\n```\nno heading"),
                nbformat.v4.new_code_cell("x = 1\n# not a heading"),
                nbformat.v4.new_markdown_cell("\n## Already on top\ntext")]
    first_id = nb.cells[0]["id"]
    assert script.split_at_headings(nb) == 2
    assert [c.source for c in nb.cells] == ["Some text.", "## 2. Next\nmore", "### Part\nlast",
                                           "```\n# a comment in fenced code\n```\nno heading",
                                           "x = 1\n# not a heading", "\n## Already on top\ntext"]
    assert nb.cells[0]["id"] == first_id and nb.cells[1]["id"] == f"{first_id}-h1"
    assert nb.cells[2].metadata["tags"] == ["t"]
    nbformat.validate(nb)
    assert script.split_at_headings(nb) == 0  # idempotent
    types = [script.slide_type(c, i) for i, c in enumerate(script.with_slide_metadata(nb).cells)]
    assert types == ["slide", "slide", "subslide", "-", "-", "slide"]


def test_slides_only_sets_metadata_and_keeps_outputs(tmp_path):
    nb = nbformat.v4.new_notebook()
    output = nbformat.v4.new_output("stream", text="kept\n")
    nb.cells = [nbformat.v4.new_markdown_cell("# A"), nbformat.v4.new_code_cell("print(1)", outputs=[output]),
                nbformat.v4.new_markdown_cell("text\n## B", metadata={"tags": ["mine"]})]
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, path)
    subprocess.run([sys.executable, str(SCRIPT), "--slides-only", str(path)], check=True, cwd=REPO,
                   capture_output=True)
    after = nbformat.read(path, as_version=4)
    assert [c.metadata["slideshow"]["slide_type"] for c in after.cells] == ["slide", "-", "-", "slide"]
    assert after.cells[1].outputs[0]["text"] == "kept\n"
    assert after.cells[3].source == "## B" and after.cells[3].metadata["tags"] == ["mine"]


@pytest.mark.parametrize("path", LECTURES, ids=[p.name for p in LECTURES])
def test_lecture_has_slide_metadata_by_rule(path):
    """Every cell of every lecture carries the rule's slide type: re-run it with scripts/execute_notebooks.py."""
    script = load_script()
    nb = nbformat.read(path, as_version=4)
    wrong = [(i, c.metadata.get("slideshow"), script.slide_type(c, i)) for i, c in enumerate(nb.cells)
             if c.metadata.get("slideshow", {}).get("slide_type") != script.slide_type(c, i)]
    assert not wrong, (f"{path.name}: cells without the rule's slide metadata (index, found, expected) {wrong[:5]}; "
                       f"run scripts/execute_notebooks.py on it")
    assert {c.metadata["slideshow"]["slide_type"] for c in nb.cells} <= RISE_TYPES
    assert sum(c.metadata["slideshow"]["slide_type"] == "slide" for c in nb.cells) >= 2, "a lecture of one slide"


def test_fold_long_code_hides_only_long_cells():
    script = load_script()
    nb = nbformat.v4.new_notebook()
    long_code = "\n".join(f"x{i} = {i}" for i in range(script.MAX_SHOWN_CODE_LINES + 1))
    nb.cells = [nbformat.v4.new_code_cell(long_code), nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_markdown_cell(long_code),
                nbformat.v4.new_code_cell("y = 2", metadata={"jupyter": {"source_hidden": True}})]
    assert script.fold_long_code(nb) == 1
    assert [c.metadata.get("jupyter", {}).get("source_hidden", False) for c in nb.cells] == [True, False, False, True]
    assert script.fold_long_code(nb) == 0


@pytest.mark.parametrize("path", LECTURES, ids=[p.name for p in LECTURES])
def test_long_code_is_folded(path):
    """A code cell longer than a slide holds is folded (its source hidden until clicked): run the script on it."""
    script = load_script()
    nb = nbformat.read(path, as_version=4)
    unfolded = [(i, len(c.source.splitlines())) for i, c in enumerate(nb.cells) if c.cell_type == "code"
                and len(c.source.splitlines()) > script.MAX_SHOWN_CODE_LINES
                and not c.metadata.get("jupyter", {}).get("source_hidden")]
    assert not unfolded, f"{path.name}: long code cells shown in full (cell, lines) {unfolded}"


@pytest.mark.parametrize("path", LECTURES, ids=[p.name for p in LECTURES])
def test_every_heading_starts_a_slide(path):
    """No markdown cell hides a heading below its first line (it would not start a slide): the split is applied."""
    script = load_script()
    nb = nbformat.read(path, as_version=4)
    buried = [(i, c.source.split("\n")[n][:50]) for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
              for n in script.heading_line_numbers(c.source) if n > 0]
    assert not buried, f"{path.name}: headings inside a cell (cell, heading) {buried}; run scripts/execute_notebooks.py"
