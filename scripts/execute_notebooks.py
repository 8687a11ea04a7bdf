"""Re-run lecture notebooks in place, so that their committed outputs are the ones a fresh run produces.

nbval (``make test``) compares every cell's output with the committed one, so after editing a notebook run::

    make notebooks                     # all of notebooks/*.ipynb
    .venv/bin/python scripts/execute_notebooks.py notebooks/05_training_mlp.ipynb

Each notebook runs top to bottom in a fresh kernel in its own folder; any error stops it and writes nothing.
The lab's notebooks are generated instead: ``python -m coursekit.grading.assign``.
"""
import argparse
import sys
import time
from pathlib import Path

import nbformat

from coursekit.grading.assign import dumps, execute


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        start = time.perf_counter()
        executed = execute(nbformat.read(path, as_version=4), cwd=path.resolve().parent, timeout=args.timeout)
        path.write_text(dumps(executed))
        print(f"{path}: ran in {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
