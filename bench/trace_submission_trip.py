"""Trace one submission's trip through the grader and count its hops between files.

    .venv/bin/python bench/trace_submission_trip.py [-v]

Grades a class of one tiny notebook (tests/grading_helpers.TinySpec, the real sandbox, one worker) with
``threading.setprofile`` on the worker's thread, and prints the ``coursekit`` files the trip touches, its calls from
one file to another (all, and distinct caller -> callee pairs) and its re-entries into batch.py (a function of
another file returning to batch.py). ``runner.execute_submission`` counts as one call (what the sandbox does inside
is not the pipeline's shape). ``-v`` lists the edges.
"""
import json
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import coursekit  # noqa: E402
import coursekit.grading.grade  # noqa: E402,F401  (imported up front: a first import is no hop)
import coursekit.grading.html_pages  # noqa: E402,F401
from coursekit.grading.batch import grade_folder  # noqa: E402
from coursekit.grading.protocol import Limits  # noqa: E402
from grading_helpers import GOOD_CELLS, TinySpec, make_notebook  # noqa: E402

PACKAGE = str(Path(coursekit.__file__).parent) + "/"


def nearest_own_frame(frame):
    """The innermost frame of coursekit's code at or above ``frame`` (None: called from outside)."""
    while frame is not None and not frame.f_code.co_filename.startswith(PACKAGE):
        frame = frame.f_back
    return frame


def where(frame) -> tuple[str, str]:
    return frame.f_code.co_filename[len(PACKAGE):], frame.f_code.co_name


files, hops, returns_to_batch = set(), [], []
inside_sandbox = [0]


def profile(frame, event, arg):
    if event not in ("call", "return") or not frame.f_code.co_filename.startswith(PACKAGE):
        return
    callee = where(frame)
    is_sandbox = callee == ("grading/runner.py", "execute_submission")
    if inside_sandbox[0] and not is_sandbox:
        return
    caller_frame = nearest_own_frame(frame.f_back)
    caller = where(caller_frame) if caller_frame is not None else None
    if event == "call":
        files.add(callee[0])
        if caller and caller[0] != callee[0]:
            hops.append((caller, callee))
        inside_sandbox[0] += is_sandbox
    else:
        inside_sandbox[0] -= is_sandbox
        if caller and caller[0].endswith("batch.py") and not callee[0].endswith("batch.py"):
            returns_to_batch.append((callee, caller))


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="coursekit-trace-"))
    make_notebook(folder / "subs" / "ada.ipynb", *GOOD_CELLS)
    threading.setprofile(profile)       # the worker's thread: the class-level work runs in this one
    try:
        grade_folder(folder / "subs", folder / "out", spec=TinySpec(), workers=1, progress=False, log=lambda *a: None,
                     limits=Limits(cell_timeout=5, submission_timeout=60, harvest_timeout=6))
    finally:
        threading.setprofile(None)
    record = json.loads((folder / "out" / "records" / "ada.json").read_text())
    print(f"graded: {record['grade']['total']:g} of {record['grade']['max_total']:g} points")
    print(f"files touched: {len(files)}: {', '.join(sorted(files))}")
    print(f"calls from one file to another: {len(hops)} ({len(set(hops))} distinct)")
    print(f"re-entries into batch.py: {len(returns_to_batch)} ({len(set(returns_to_batch))} distinct)")
    if "-v" in sys.argv:
        for (a, b) in sorted(set(hops)):
            print(f"  {a[0]}:{a[1]} -> {b[0]}:{b[1]}")
        for (a, b) in sorted(set(returns_to_batch)):
            print(f"  back to {b[0]}:{b[1]} from {a[0]}:{a[1]}")


if __name__ == "__main__":
    main()
