"""Re-run lecture notebooks in place, so that their committed outputs are the ones a fresh run produces.

nbval (``make test``) compares every cell's output with the committed one, so after editing a notebook run::

    make notebooks                     # all of notebooks/*.ipynb
    .venv/bin/python scripts/execute_notebooks.py notebooks/05_training_mlp.ipynb

Each notebook runs top to bottom in a fresh kernel in its own folder; any error stops it and writes nothing.
Every heading starts a slide wherever it stands: a markdown cell with a heading after its first line is split there
(``split_at_headings``), code cells longer than ``MAX_SHOWN_CODE_LINES`` are folded (``fold_long_code``: the source is
hidden until clicked, so a slide shows the lesson, not the plumbing), then every cell gets its slide metadata (``metadata.slideshow.slide_type``) by one rule,
``slide_type`` below, so that lecturers can present any lecture with JupyterLab's RISE extension ("Render as
slides") without anyone tagging cells by hand. ``--slides-only`` splits and sets that metadata without re-running
(outputs untouched).
The lab's notebooks are generated instead: ``python -m coursekit.grading.assign``.
"""
import argparse
import copy
import math
import re
import sys
import time
from pathlib import Path

import nbformat

from coursekit.grading.assign import dumps, execute

# A markdown cell that opens with a level-1 or level-2 heading starts a new slide; one that opens with a level-3 to
# level-6 heading starts a sub-slide (RISE shows it below its slide); every other cell continues the current slide.
SLIDE_HEADING = re.compile(r"\A\s*#{1,2}\s")
SUBSLIDE_HEADING = re.compile(r"\A\s*#{3,6}\s")
# A markdown heading line (ATX style, as the lectures write them); fenced code is skipped by split_at_headings.
HEADING_LINE = re.compile(r"^#{1,6}\s")
FENCE = re.compile(r"^\s*(```|~~~)")


def heading_line_numbers(source: str) -> list[int]:
    """Indices of the lines of a markdown ``source`` that are headings, outside fenced code blocks."""
    found, in_fence = [], False
    for number, line in enumerate(source.split("\n")):
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and HEADING_LINE.match(line):
            found.append(number)
    return found


def split_at_headings(nb):
    """``nb`` with every markdown cell that has a heading below its first line split so each heading opens a cell.

    The first part keeps the cell's id and metadata; each new part gets a copy of the metadata and the id
    ``<id>-h<k>``. Blank lines at the cut are dropped. Returns the number of cells added.
    """
    cells, added = [], 0
    for cell in nb.cells:
        lines = cell.source.split("\n")
        cuts = [n for n in heading_line_numbers(cell.source) if n > 0] if cell.cell_type == "markdown" else []
        bounds = [0, *cuts, len(lines)]
        parts = [text for start, end in zip(bounds[:-1], bounds[1:])
                 if (text := "\n".join(lines[start:end]).strip("\n")).strip()]
        if len(parts) < 2:
            cells.append(cell)
            continue
        cell.source = parts[0]
        cells.append(cell)
        for k, text in enumerate(parts[1:], start=1):
            part = nbformat.v4.new_markdown_cell(text, metadata=copy.deepcopy(dict(cell.metadata)))
            if "id" in cell:
                part["id"] = f"{cell['id'][:60]}-h{k}"
            else:
                part.pop("id", None)
            cells.append(part)
            added += 1
    nb.cells = cells
    return added


# About what fits on a 1280x720 slide under a heading at JupyterLab's default code font (13 px, ~17 px per line).
MAX_SHOWN_CODE_LINES = 30


def fold_long_code(nb, max_lines: int = MAX_SHOWN_CODE_LINES) -> int:
    """Fold (``metadata.jupyter.source_hidden``) every code cell longer than ``max_lines`` lines; return how many.

    Cells an author folded by hand stay folded; nothing is unfolded.
    """
    folded = 0
    for cell in nb.cells:
        if cell.cell_type == "code" and len(cell.source.splitlines()) > max_lines:
            if not cell.metadata.get("jupyter", {}).get("source_hidden"):
                cell.metadata.setdefault("jupyter", {})["source_hidden"] = True
                folded += 1
    return folded


# ---------------------------------------------------------------------------------------------- slide heights
# RISE shows a slide on the whole window and stacks its cells; a slide taller than the window runs off the screen.
# These are the heights (px) JupyterLab's default theme gives a cell in RISE at 1280x720, fitted to what
# tests/test_browser.py measured on the lectures (mean error about 10 px a cell); the browser test is the judge.
SLIDE_HEIGHT_PX = 720
# What the rule aims for: the estimate errs by up to ~40 px a cell, so a slide is planned well below the window.
SLIDE_BUDGET_PX = 620
MARKDOWN_PX = {"base": 44, "h1": 105, "h2": 26, "h3": 12, "text_line": 16, "blank": 30, "math_line": 6, "item": 8}
MARKDOWN_CHARS_PER_LINE = 145  # rendered characters of 14 px text across a 1280 px slide
CODE_PX = {"base": 22, "line": 18.5, "folded": 40}  # folded: one placeholder line (notebooks/rise.css)
OUTPUT_PX = {"stream_base": 6, "text_line": 18.2, "result_base": 13, "image_extra": 68, "other": 40}
INLINE_MATH = re.compile(r"\$\$.*?\$\$|\$[^$]*\$")
MARKUP = re.compile(r"[*`]")
LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
LIST_ITEM = re.compile(r"([-*+]|\d+\.)\s")


def _rendered_length(text: str) -> int:
    """About how many characters ``text`` shows once rendered (LaTeX shrinks to a third, markup and URLs vanish)."""
    text = INLINE_MATH.sub(lambda m: "x" * max(3, len(m.group(0)) // 3), text)
    return len(MARKUP.sub("", LINK.sub(r"\1", text)))


def markdown_height(source: str) -> float:
    """Estimated height of a rendered markdown cell: headings, wrapped paragraphs, list items, display math."""
    px = MARKDOWN_PX
    height, paragraph, in_math = px["base"], "", False

    def wrapped_lines(text: str) -> int:
        return math.ceil(_rendered_length(text) / MARKDOWN_CHARS_PER_LINE) if text else 0

    for line in source.split("\n"):
        stripped = line.strip()
        if stripped.startswith("$$") or in_math:
            height += px["text_line"] * wrapped_lines(paragraph) + px["math_line"]
            paragraph = ""
            if stripped.count("$$") == 1:
                in_math = not in_math
            continue
        if not stripped or stripped.startswith("#") or LIST_ITEM.match(stripped):
            height += px["text_line"] * wrapped_lines(paragraph)
            paragraph = ""
        heading = re.match(r"(#{1,6})\s", stripped)
        if heading:
            height += px[{1: "h1", 2: "h2"}.get(len(heading.group(1)), "h3")]
        elif not stripped:
            height += px["blank"]
        else:
            height += px["item"] * bool(LIST_ITEM.match(stripped))
            paragraph += " " + stripped
    return height + px["text_line"] * wrapped_lines(paragraph)


def _text_lines(text) -> int:
    text = "".join(text) if isinstance(text, list) else text
    return len(text.rstrip("\n").split("\n"))


def outputs_height(outputs) -> float:
    """Estimated height of a code cell's outputs (JupyterLab merges consecutive prints to one stream block)."""
    px, height, previous_stream = OUTPUT_PX, 0.0, None
    for output in outputs:
        kind = output.get("output_type")
        if kind == "stream":
            lines = _text_lines(output.get("text", ""))
            height += px["text_line"] * lines + (px["stream_base"] if output.get("name") != previous_stream else 0)
            previous_stream = output.get("name")
            continue
        previous_stream = None
        data = output.get("data", {})
        image = next((m for m in ("image/png", "image/jpeg", "image/svg+xml") if m in data), None)
        if image:
            height += image_height(output, image) + px["image_extra"]
        elif kind in ("execute_result", "display_data") and "text/plain" in data and "text/html" not in data \
                and "application/vnd.jupyter.widget-view+json" not in data:
            height += px["result_base"] + px["text_line"] * _text_lines(data["text/plain"])
        elif kind == "error":
            height += px["result_base"] + px["text_line"] * len(output.get("traceback", []))
        else:  # HTML, widgets (RISE draws them only once the cell has run live), anything else
            height += px["other"]
    return height


def image_height(output, mime: str) -> float:
    """The displayed height of an image output: its metadata's height (retina PNGs), else its pixel height."""
    size = output.get("metadata", {}).get(mime, {})
    if isinstance(size, dict) and size.get("height"):
        return float(size["height"])
    if mime == "image/png":
        import base64
        import struct
        header = base64.b64decode(output["data"][mime][:64])
        return float(struct.unpack(">II", header[16:24])[1])
    return 400.0  # unknown size: a typical course figure


def cell_height(cell) -> float:
    """Estimated height (px) of ``cell`` on a RISE slide at 1280x720 with JupyterLab's default fonts."""
    if cell.cell_type == "markdown":
        return markdown_height(cell.source)
    if cell.cell_type != "code":
        return CODE_PX["base"] + CODE_PX["line"] * len(cell.source.splitlines())
    if cell.metadata.get("jupyter", {}).get("source_hidden"):
        shown = CODE_PX["folded"]
    else:
        shown = CODE_PX["base"] + CODE_PX["line"] * max(1, len(cell.source.splitlines()))
    if cell.metadata.get("jupyter", {}).get("outputs_hidden"):
        return shown
    return shown + outputs_height(cell.get("outputs", []))


def slide_type(cell, index: int) -> str:
    """RISE's slide type for ``cell``, the ``index``-th cell of its notebook, from its heading alone."""
    if index == 0:
        return "slide"
    if cell.cell_type == "markdown":
        if SLIDE_HEADING.match(cell.source):
            return "slide"
        if SUBSLIDE_HEADING.match(cell.source):
            return "subslide"
    return "-"


def slide_types(nb, budget: float = SLIDE_BUDGET_PX) -> list[str]:
    """The slide type of every cell: a heading starts a slide or sub-slide (``slide_type``); where a heading's
    content would run past ``budget`` px, the cell that does not fit starts a sub-slide of its own, taking along the
    markdown cell just before it when that cell introduces it (text directly above a code cell).

    A single cell taller than the budget still gets a slide of its own: folding it or shrinking its figure is the
    author's job, and the browser test reports it.
    """
    types, heights = [], [cell_height(cell) for cell in nb.cells]
    used = 0.0
    for index, cell in enumerate(nb.cells):
        kind = slide_type(cell, index)
        if kind == "-" and used > 0 and used + heights[index] > budget:
            previous = index - 1
            leads_in = (cell.cell_type == "code" and nb.cells[previous].cell_type == "markdown"
                        and types[previous] == "-" and heights[previous] + heights[index] <= budget)
            if leads_in:
                types[previous] = "subslide"
                used = heights[previous]
            else:
                kind = "subslide"
                used = 0.0
        elif kind != "-":
            used = 0.0
        types.append(kind)
        used += heights[index]
    return types


def with_slide_metadata(nb):
    """``nb`` with ``metadata.slideshow.slide_type`` set on every cell by ``slide_types`` (other metadata kept)."""
    for cell, kind in zip(nb.cells, slide_types(nb)):
        cell.metadata["slideshow"] = {"slide_type": kind}
    return nb


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    parser.add_argument("--slides-only", action="store_true",
                        help="only set the slide metadata; do not re-run (outputs are left as they are)")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        start = time.perf_counter()
        nb = nbformat.read(path, as_version=4)
        if not args.slides_only:
            nb = execute(nb, cwd=path.resolve().parent, timeout=args.timeout)
        split_at_headings(nb)
        fold_long_code(nb)
        path.write_text(dumps(with_slide_metadata(nb)))
        print(f"{path}: {'slide metadata set' if args.slides_only else 'ran'} in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
