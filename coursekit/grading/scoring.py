"""Grader-side comparisons for the hidden tests: numbers in, a readable verdict out.

Everything here runs in the *grader's* process on the plain arrays and JSON the harvest sent back
(``outputs`` and ``meta``: from each question's results frame, an ``.npz`` read with ``allow_pickle=False`` and
its JSON description); no object of the student's ever reaches it. A value passes only if the array itself is
right: its dtype and shape match, it is finite, and ``|got - expected| <= atol + rtol * |expected|`` holds at
every position (nan fails).
"""
from __future__ import annotations

import numpy as np

# The tolerances the hidden tests state (and the notebook repeats), per dtype of the input.
TOLERANCES = {
    "float32": {"rtol": 1e-5, "atol": 1e-6},
    "float64": {"rtol": 1e-8, "atol": 1e-10},
}
TORCH_DTYPES = {"float16": "torch.float16", "float32": "torch.float32", "float64": "torch.float64",
                "int64": "torch.int64", "bool": "torch.bool"}


def fmt(value) -> str:
    """A number as the feedback shows it."""
    value = float(value)
    if np.isnan(value) or np.isinf(value):
        return str(value)
    return f"{value:.6g}"


def describe_input(array: np.ndarray) -> str:
    """'float32 input of shape (3, 4)' - how feedback names a test input."""
    return f"{array.dtype} input of shape {tuple(array.shape)}"


def call_problem(what: str, key: str, meta: dict) -> str | None:
    """Why the call behind ``key`` gave nothing usable (not defined, not attempted, raised), or None."""
    info = meta.get(key)
    if not isinstance(info, dict):
        harvest = meta.get(key.split(".")[0] + ".harvest_error")
        if isinstance(harvest, dict) and isinstance(harvest.get("error"), str):
            return f"{what}: grading stopped early ({harvest['error']})"
        return f"{what}: no result came back (the notebook stopped before it, or it was never called)"
    error = info.get("error")
    if isinstance(error, str):
        if error.startswith("NotImplementedError"):
            todo = error.split(":", 1)[1].strip() if ":" in error else error
            return f"not attempted yet ({todo or 'NotImplementedError'})"
        return f"{what} failed: {error}"
    return None


def tensor_problem(what: str, key: str, outputs: dict, meta: dict, expected: np.ndarray, *, dtype: str,
                   rtol: float, atol: float, device: str = "cpu", inputs: np.ndarray | None = None) -> str | None:
    """Compare the tensor sent back under ``key`` with ``expected`` (float64); None if it passes.

    ``dtype`` is the numpy name the result must have ("float32"); ``inputs``, when it has the same
    shape, is used to say at which input a value is wrong.
    """
    problem = call_problem(what, key, meta)
    if problem:
        return problem
    info = meta[key]
    if info.get("type") not in ("Tensor", "Parameter"):
        return f"{what} returned a {info.get('type')}, expected a torch.Tensor"
    if isinstance(info.get("problem"), str):
        return f"{what}: {info['problem']}"
    array = outputs.get(key)
    if type(array) is not np.ndarray or array.dtype.kind not in "biuf":
        return f"{what}: its value could not be read back as numbers"
    expected = np.asarray(expected, dtype=np.float64)
    if info.get("device") != device:
        return f"{what} is on device {info.get('device')}, expected {device} (the input's device)"
    if info.get("dtype") != TORCH_DTYPES.get(dtype, dtype) or array.dtype != np.dtype(dtype):
        return f"{what} has dtype {info.get('dtype')}, expected {TORCH_DTYPES.get(dtype, dtype)} (the input's dtype)"
    if array.shape != expected.shape or tuple(info.get("shape", ())) != expected.shape:
        return f"{what} has shape {tuple(array.shape)}, expected {tuple(expected.shape)}"
    if array.size == 0:
        return None
    got = array.astype(np.float64)
    bad = ~np.isfinite(got) & np.isfinite(expected)
    if bad.any():
        kinds = " and ".join(k for k, f in (("nan", np.isnan), ("inf", np.isinf)) if f(got[bad]).any())
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        at = f" (input {fmt(inputs[index])})" if inputs is not None and inputs.shape == array.shape else ""
        return f"{what} contains {kinds} at {int(bad.sum())} of {array.size} positions, first at index {index}{at}"
    with np.errstate(invalid="ignore"):
        ok = np.abs(got - expected) <= atol + rtol * np.abs(expected)
    ok |= (got == expected)  # equal infinities
    if not ok.all():
        index = tuple(int(i) for i in np.argwhere(~ok)[0])
        at = f" at input {fmt(inputs[index])}" if inputs is not None and inputs.shape == array.shape else ""
        return (f"{what} is wrong at {int((~ok).sum())} of {array.size} positions; first at index {index}{at}: "
                f"expected {fmt(expected[index])}, got {fmt(got[index])} (tolerance {atol:g} + {rtol:g}*|expected|)")
    return None


def first_problem(problems) -> str | None:
    """The first non-None message of an iterable (a test fails on its first problem)."""
    for problem in problems:
        if problem:
            return problem
    return None
