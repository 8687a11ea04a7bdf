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
import re
import sys
import time
from pathlib import Path

import copy

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


def slide_type(cell, index: int) -> str:
    """RISE's slide type for ``cell``, the ``index``-th cell of its notebook: the rule every lecture follows."""
    if index == 0:
        return "slide"
    if cell.cell_type == "markdown":
        if SLIDE_HEADING.match(cell.source):
            return "slide"
        if SUBSLIDE_HEADING.match(cell.source):
            return "subslide"
    return "-"


def with_slide_metadata(nb):
    """``nb`` with ``metadata.slideshow.slide_type`` set on every cell by ``slide_type`` (other metadata kept)."""
    for index, cell in enumerate(nb.cells):
        cell.metadata["slideshow"] = {"slide_type": slide_type(cell, index)}
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
