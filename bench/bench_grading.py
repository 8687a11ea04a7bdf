"""Benchmark: grade a generated class of 100 submissions with `coursekit grade`'s engine; submissions/minute.

    .venv/bin/python bench/bench_grading.py [--n 100] [--workers 2]

The class mixes correct (40%), partly correct (35%) and broken (25%) notebooks, built like the bad-submission
tests (tests/test_bad_submissions.py) from the real lab, among them one endless loop that costs a full cell
time limit. Limits are the defaults (60 s per cell). Every grade is checked against its expected score.
The clock includes starting the warm grading server and the similarity report. The floor (issue #10): 100
submissions in under 3 minutes on 2 quiet cores, all isolation on. Not a timed test: the README quotes its
figure, with the load average it was measured under (printed here, before and after).
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from coursekit.grading.batch import grade_folder  # noqa: E402
from coursekit.grading.labspec import load_spec  # noqa: E402
from coursekit.grading.sandbox import describe_isolation  # noqa: E402
from test_bad_submissions import EXPECTED, write_submission  # noqa: E402

FLOOR_SECONDS = 180      # for 100 submissions
PARTLY = ["monkeypatch", "nan_inf", "wrong_shape", "wrong_dtype", "wrong_device", "missing_functions",
          "exception", "syntax_error", "eq_always_true", "stale_outputs_other_kernel", "test_files"]
BROKEN = ["corrupt_json", "empty", "os_exit", "sys_exit", "memory", "fork_bomb", "huge_output", "input",
          "stderr_warnings", "renamed", "infinite_loop"]


def make_plan(n: int) -> dict:
    """{student: kind} for a class of n (bench_grading_cpu.py sums its CPU seconds per kind over it)."""
    n_correct, n_partly = round(0.40 * n), round(0.35 * n)
    kinds = ["correct"] * n_correct + [PARTLY[i % len(PARTLY)] for i in range(n_partly)]
    broken = [k for k in BROKEN if k != "infinite_loop"]
    kinds += [broken[i % len(broken)] for i in range(n - len(kinds) - 1)] + ["infinite_loop"]
    return {f"student{i:03d}": kind for i, kind in enumerate(kinds)}


def make_class(folder: Path, n: int) -> dict:
    """Write n submissions; {student: kind}."""
    plan = make_plan(n)
    for student, kind in plan.items():
        write_submission(folder, student, kind, tag=student)   # every file is different
    return plan


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="coursekit-bench-"))
    try:
        subs = root / "subs"
        subs.mkdir()
        plan = make_class(subs, args.n)
        spec = load_spec(REPO / "lab" / "autograder")
        load_before = os.getloadavg()
        start = time.monotonic()
        summary = grade_folder(subs, root / "out", spec=spec, workers=args.workers, progress=True,
                               log=lambda *a: None)
        seconds = time.monotonic() - start
        wrong = []
        for student, kind in plan.items():
            grade = json.loads((root / "out" / "records" / f"{student}.json").read_text())["grade"]
            if grade["total"] != sum(EXPECTED[kind][0]):
                wrong.append(f"{student} ({kind}): {grade['total']} != {sum(EXPECTED[kind][0])}")
        result = {"submissions": args.n, "workers": args.workers, "cpu_cores": os.cpu_count(),
                  "seconds": round(seconds, 1), "per_minute": round(60 * args.n / seconds, 1),
                  "floor_met": args.n >= 100 and seconds < FLOOR_SECONDS * args.n / 100, "wrong_scores": wrong,
                  "isolation": describe_isolation(), "statuses": dict(summary.statuses),
                  "load_average_before": [round(x, 2) for x in load_before],
                  "load_average_after": [round(x, 2) for x in os.getloadavg()]}
        print(summary.text())
        print(json.dumps(result, indent=1))
        return 0 if not wrong else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
