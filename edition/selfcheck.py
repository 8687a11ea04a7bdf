"""Run the lab's self-checks: every check("qN") cell of your lab notebook, in a fresh kernel, as Run All would.

    python selfcheck.py                    # lab/mlp_lab.ipynb
    python selfcheck.py my_copy.ipynb      # another copy of it

Prints each question's PASS / FAIL / TODO lines. Your notebook is only read, never changed. Exit status 1 if a
check failed or a cell raised an error other than a TODO stub's NotImplementedError.
"""
import argparse
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebook", nargs="?", default="lab/mlp_lab.ipynb")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell (%(default)s)")
    args = parser.parse_args(argv)
    path = Path(args.notebook)
    if not path.is_file():
        print(f"selfcheck: no such notebook: {path}", file=sys.stderr)
        return 2
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=args.timeout, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(path.resolve().parent)}}).execute()
    failed = False
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error" and output.get("ename") != "NotImplementedError":
                failed = True
                print(f"error in a cell starting {cell.source.strip().splitlines()[0][:60]!r}: "
                      f"{output['ename']}: {output['evalue']}")
        if cell.source.strip().startswith("check("):
            text = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")
            print(f"--- {cell.source.strip()}\n{text.rstrip()}")
            failed = failed or any(line.lstrip().startswith("FAIL") for line in text.splitlines())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
