"""Shared by the grader's tests: tiny notebooks and a tiny lab spec ("add(a, b)") that do not depend on the
real lab, so the grading engine is tested on its own."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import numpy as np
import pytest

from coursekit.grading import sandbox
from coursekit.grading.labspec import QuestionResult

REQUIRE_ALL = os.environ.get("COURSEKIT_REQUIRE_ALL") == "1"

# The harvest of the tiny spec: calls add() and mul() on the inputs (``_ck_inputs``, given by the job) and sends
# back what they return (``_ck_outcome``: arrays, description).
TINY_HARVEST = '''
import numpy as _np, os as _os
_inp = _ck_inputs
_out, _meta = {}, {"uid": _os.getuid()}
for _name in ["add", "mul"]:
    try:
        _v = globals()[_name](_inp["a"], _inp["b"])
        if type(_v) is not _np.ndarray or _v.dtype.kind not in "biuf":
            raise TypeError("not a numeric numpy array: " + type(_v).__name__)
        _out[_name] = _np.array(_v)
        _meta[_name] = {"ok": True}
    except BaseException as _e:
        _meta[_name] = {"error": type(_e).__name__ + ": " + str(_e)[:300]}
_ck_outcome = (_out, _meta)
'''

GOOD_CELLS = ["import numpy as np", "def add(a, b):\n    return a + b", "def mul(a, b):\n    return a * b"]


def make_notebook(path, *cells, kernel="python3", language="python", outputs=None) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": language}
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    if outputs:
        for cell, out in zip(nb.cells, outputs):
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=out)]
            cell.execution_count = 1
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def tiny_inputs(seed=0):
    rng = np.random.default_rng(seed)
    return {"a": rng.normal(size=5), "b": rng.normal(size=5)}


class TinySpec:
    """A two-question lab: add (2 points) and mul (3 points), graded from the harvested arrays only."""
    questions = [("add", 2), ("mul", 3)]
    titles = {"add": "Addition", "mul": "Multiplication"}
    harvest_code = TINY_HARVEST
    template_cells: dict = {}       # no cell of a template to stand in for (grade.grade_notebook reads it)

    def make_inputs(self, seed=0):
        return tiny_inputs(seed)

    def score(self, inputs, result):
        out = []
        for name, pts in self.questions:
            want = inputs["a"] + inputs["b"] if name == "add" else inputs["a"] * inputs["b"]
            got = result.outputs.get(name)
            err = (result.meta.get(name) or {}).get("error") if isinstance(result.meta.get(name), dict) else None
            if got is not None and got.shape == want.shape and np.isfinite(got).all() and np.allclose(got, want):
                out.append(QuestionResult(name, pts, pts, passed=[f"{name} matches the reference"],
                                          title=self.titles[name]))
            else:
                why = err or ("missing" if got is None else f"wrong values (shape {got.shape})")
                out.append(QuestionResult(name, 0, pts, failed=[f"{name}: {why}"], title=self.titles[name]))
        return out


def require_bwrap():
    """Skip where bubblewrap cannot isolate (not root / not installed) unless every tool is required."""
    mode = sandbox.isolation_mode()
    if mode != "bwrap":
        msg = f"bubblewrap isolation not available here (mode {mode!r}: {sandbox.describe_isolation()})"
        if REQUIRE_ALL:
            pytest.fail(msg + "; COURSEKIT_REQUIRE_ALL=1 needs it (apt-get install bubblewrap, run as root)")
        pytest.skip(msg)


def run_many(jobs: dict, workers=2) -> dict:
    """Run {name: zero-arg callable} two at a time; {name: result}."""
    with ThreadPoolExecutor(workers) as pool:
        futures = {name: pool.submit(fn) for name, fn in jobs.items()}
        return {name: f.result() for name, f in futures.items()}
