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
    expected = script.slide_types(nb)
    wrong = [(i, c.metadata.get("slideshow"), kind) for (i, c), kind in zip(enumerate(nb.cells), expected)
             if c.metadata.get("slideshow", {}).get("slide_type") != kind]
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


def _png_output(height: int, width: int = 400):
    """A display_data output of a retina PNG shown at ``height`` px (as matplotlib's inline backend writes it)."""
    return nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"},
                                  metadata={"image/png": {"height": height, "width": width}})


def test_cell_height_counts_code_lines_outputs_and_folding():
    script = load_script()
    code = nbformat.v4.new_code_cell("\n".join(f"x{i} = {i}" for i in range(10)))
    bare = script.cell_height(code)
    assert bare == script.CODE_PX["base"] + 10 * script.CODE_PX["line"]
    # Consecutive prints are one block in JupyterLab: one block's padding, one line each.
    code.outputs = [nbformat.v4.new_output("stream", text="a\n"), nbformat.v4.new_output("stream", text="b\nc\n")]
    assert script.cell_height(code) == bare + script.OUTPUT_PX["stream_base"] + 3 * script.OUTPUT_PX["text_line"]
    # A figure counts at its displayed height (the metadata's, not the retina PNG's pixels).
    code.outputs = [_png_output(300)]
    assert script.cell_height(code) == bare + 300 + script.OUTPUT_PX["image_extra"]
    code.metadata["jupyter"] = {"source_hidden": True}
    assert script.cell_height(code) == script.CODE_PX["folded"] + 300 + script.OUTPUT_PX["image_extra"]


def test_markdown_height_grows_with_headings_text_and_math():
    script = load_script()
    short = script.markdown_height("One line.")
    assert script.markdown_height("## A heading\n\nOne line.") > short
    assert script.markdown_height("# A title\n\nOne line.") > script.markdown_height("## A heading\n\nOne line.")
    long_paragraph = " ".join(["word"] * 400)  # ~2,000 characters: many wrapped lines
    assert script.markdown_height(long_paragraph) > short + 10 * script.MARKDOWN_PX["text_line"]
    # LaTeX renders shorter than its source; a display formula adds its lines.
    assert script.markdown_height("$\\mathbf{x}^\\top \\mathbf{w}$ " * 20) < script.markdown_height("x" * 20 * 22)
    assert script.markdown_height("Text\n$$\na = b\n$$") > script.markdown_height("Text")


def test_slide_types_start_a_subslide_where_a_heading_overflows():
    """Under one heading, the cell that would run past the budget starts a sub-slide, taking its lead-in text."""
    script = load_script()
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    figure = code("plot()", outputs=[_png_output(320)])
    nb = nbformat.v4.new_notebook()
    nb.cells = [md("# Title"), md("## Section\nsome text"), figure, md("The next figure:"), copy_cell(figure),
                md("### Part"), code("x = 1"), copy_cell(figure)]
    heights = [script.cell_height(c) for c in nb.cells]
    assert heights[1] + heights[2] < script.SLIDE_BUDGET_PX < heights[1] + heights[2] + heights[3] + heights[4]
    assert script.slide_types(nb) == ["slide", "slide", "-", "subslide", "-", "subslide", "-", "-"]
    # With room for everything, headings alone decide.
    assert script.slide_types(nb, budget=10_000) == [script.slide_type(c, i) for i, c in enumerate(nb.cells)]
    # A code cell without a lead-in starts the sub-slide itself; a cell taller than the budget gets one alone.
    nb.cells = [md("## Section"), copy_cell(figure), copy_cell(figure), code("y = 2"),
                code("big()", outputs=[_png_output(900)]), code("z = 3")]
    assert script.slide_types(nb) == ["slide", "-", "subslide", "-", "subslide", "subslide"]


def copy_cell(cell):
    import copy
    clone = copy.deepcopy(cell)
    clone.pop("id", None)
    return clone


def test_slide_types_are_deterministic_and_idempotent_on_a_lecture():
    """Setting the metadata twice changes nothing: the rule reads content, never the metadata it wrote."""
    script = load_script()
    nb = nbformat.read(LECTURES[0], as_version=4)
    first = script.slide_types(nb)
    script.with_slide_metadata(nb)
    assert script.slide_types(nb) == first
