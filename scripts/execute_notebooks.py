"""Re-run lecture notebooks in place, so that their committed outputs are the ones a fresh run produces.

nbval (``make test``) compares every cell's output with the committed one, so after editing a notebook run::

    make notebooks                     # all of notebooks/*.ipynb
    .venv/bin/python scripts/execute_notebooks.py notebooks/05_training_mlp.ipynb

Each notebook runs top to bottom in a fresh kernel in its own folder; any error stops it and writes nothing.
Every cell also gets its slide metadata (``metadata.slideshow.slide_type``) by one rule, ``slide_type`` below, so
that lecturers can present any lecture with JupyterLab's RISE extension ("Render as slides") without anyone
tagging cells by hand. ``--slides-only`` sets that metadata without re-running (outputs untouched).
The lab's notebooks are generated instead: ``python -m coursekit.grading.assign``.
"""
import argparse
import re
import sys
import time
from pathlib import Path

import nbformat

from coursekit.grading.assign import dumps, execute

# A markdown cell that opens with a level-1 or level-2 heading starts a new slide; one that opens with a level-3
# heading starts a sub-slide (RISE shows it below its slide); every other cell continues the current slide.
SLIDE_HEADING = re.compile(r"\A\s*#{1,2}\s")
SUBSLIDE_HEADING = re.compile(r"\A\s*###\s")


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
        path.write_text(dumps(with_slide_metadata(nb)))
        print(f"{path}: {'slide metadata set' if args.slides_only else 'ran'} in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
