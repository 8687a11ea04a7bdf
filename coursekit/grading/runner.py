"""Run one submitted notebook in the sandbox and bring back the values to grade, as data only.

``execute_submission(notebook_path, harvest_code, inputs, limits=None)`` is step 2 of grading (see
``coursekit.grading.grade``): the only step that runs student code. It

1. reads the notebook in the grader (corrupt JSON, a missing ``cells`` list: status ``invalid-notebook``);
2. makes a fresh folder that holds only the submission, ``inputs.npz`` and the job description;
3. runs ``coursekit/grading/child.py`` there in the sandbox (``coursekit.grading.sandbox``): every code cell
   in order, each with its own time limit, going on past a cell that fails; then ``harvest_code``, which
   writes ``outputs.npz`` and ``outputs.json``;
4. if a cell ends the process (``os._exit``, a time limit, memory, output), starts a fresh process that
   skips that cell, so what worked before and after still counts (at most ``limits.max_restarts`` times);
5. reads ``outputs.npz`` with ``allow_pickle=False`` and ``outputs.json`` size-capped, never following a
   link the student may have planted, and deletes the folder.

IPython magics (``%matplotlib``, ``!pip``) do not run: their lines are left out and the feedback says so.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import stat
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from coursekit.grading import sandbox
from coursekit.grading.sandbox import Limits

__all__ = ["ExecutionResult", "Limits", "execute_submission", "notebook_code_cells"]

CHILD = Path(__file__).resolve().parent / "child.py"
MAX_NOTEBOOK_MB = 16
MAX_META_BYTES = 256 * 1024
MAX_OUTPUTS_MB = 64
MAX_ERROR_CHARS = 1500
STATUS_ORDER = ["ok", "timeout", "memory", "output-limit", "killed", "kernel-died", "invalid-notebook"]


@dataclass
class ExecutionResult:
    """What came back from the student's process (data only) and how the run went."""
    outputs: dict = field(default_factory=dict)        # name -> np.ndarray (numeric)
    meta: dict = field(default_factory=dict)           # outputs.json, size-capped
    cell_errors: list = field(default_factory=list)    # "cell 3: ZeroDivisionError: ..." one per failed cell
    status: str = "ok"                                 # see STATUS_ORDER
    log: str = ""                                      # the notebook's output, capped
    notes: list = field(default_factory=list)          # things the student should know (magics left out, ...)
    cells_run: int = 0                                 # code cells that finished (with or without an error)
    cells_total: int = 0
    harvested: bool = False                            # the harvest code ran to its end
    attempts: int = 0
    wall_s: float = 0.0
    isolation: str = ""


class NotebookError(ValueError):
    """The file is not a notebook we can run."""


def notebook_code_cells(path) -> tuple[list[str], list[str]]:
    """The code cells' sources (magics left out) and notes about what was left out."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise NotebookError(f"cannot read {path.name}: {exc.strerror}") from None
    if size > MAX_NOTEBOOK_MB << 20:
        raise NotebookError(f"{path.name} is {size >> 20} MiB; a notebook may be at most {MAX_NOTEBOOK_MB} MiB")
    raw = path.read_bytes()
    try:
        nb = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise NotebookError(f"{path.name} is not UTF-8 text, so not a notebook") from None
    except json.JSONDecodeError as exc:
        raise NotebookError(f"{path.name} is not valid notebook JSON ({exc.msg} at line {exc.lineno}, "
                            f"column {exc.colno}); was it saved completely?") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise NotebookError(f"{path.name} is JSON but not a notebook (no list of cells); "
                            "notebooks of nbformat 4 are graded")
    sources, notes = [], []
    lang = (nb.get("metadata") or {}).get("kernelspec", {}) or {}
    if isinstance(lang, dict) and lang.get("language") not in (None, "python"):
        notes.append(f"the notebook's kernel is {lang.get('name')!r} ({lang.get('language')}); "
                     "its cells were run as Python 3")
    for cell in nb["cells"]:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        src = cell.get("source", "")
        if isinstance(src, list):
            src = "".join(s for s in src if isinstance(s, str))
        if not isinstance(src, str):
            src = ""
        src, cell_notes = strip_magics(src, len(sources) + 1)
        sources.append(src)
        notes.extend(cell_notes)
    return sources, notes


def strip_magics(src: str, number: int) -> tuple[str, list[str]]:
    """Leave out IPython-only lines (``%magic``, ``!shell``, ``%%cell magic``); keep line numbers."""
    lines = src.split("\n")
    notes = []
    first = lines[0].lstrip() if lines else ""
    if first.startswith("%%"):
        magic = first[2:].split()[0] if first[2:].split() else ""
        if magic in ("time", "timeit", "capture", "prun"):
            lines[0] = ""
            notes.append(f"cell {number}: %%{magic} left out, the cell itself ran")
        else:
            notes.append(f"cell {number}: %%{magic} cell magic is not run when grading")
            return "", notes
    out = []
    for k, line in enumerate(lines):
        stripped = line.lstrip()
        if stripped.startswith(("%", "!")) and not stripped.startswith("!="):
            indent = line[: len(line) - len(stripped)]
            out.append(indent + "pass")
            word = stripped.split()[0] if stripped.split() else stripped
            notes.append(f"cell {number}, line {k + 1}: {word} is IPython-only and was left out")
        else:
            out.append(line)
    return "\n".join(out), notes


def _read_regular(path: Path, max_bytes: int) -> bytes | None:
    """A file's bytes if it is a regular file (not a link, fifo, device) of at most max_bytes, else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes:
            return None
        with os.fdopen(os.dup(fd), "rb") as fh:
            return fh.read(max_bytes + 1)[:max_bytes]
    finally:
        os.close(fd)


def _load_outputs(workdir: Path) -> tuple[dict, dict, list[str]]:
    problems = []
    outputs, meta = {}, {}
    raw = _read_regular(workdir / "outputs.npz", MAX_OUTPUTS_MB << 20)
    if raw is not None:
        try:
            with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
                for name in npz.files[:1000]:
                    arr = npz[name]
                    if arr.dtype.kind in "biufc":
                        outputs[name] = np.array(arr)
                    else:
                        problems.append(f"output {name!r} is not numeric ({arr.dtype}); left out")
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            problems.append(f"outputs.npz could not be read as plain arrays: {exc}"[:300])
            outputs = {}
    raw = _read_regular(workdir / "outputs.json", MAX_META_BYTES)
    if raw is not None:
        try:
            meta = json.loads(raw.decode("utf-8"))
            if not isinstance(meta, dict):
                meta = {}
        except (ValueError, UnicodeDecodeError):
            problems.append("outputs.json could not be read")
    return outputs, meta, problems


class _Tracker:
    """Follows the child's events: which cell runs, since when; kills a cell that swallowed its timeout."""

    def __init__(self, limits: Limits, harvest_timeout: float):
        self.limits = limits
        self.harvest_timeout = harvest_timeout
        self.seen = 0
        self.current = None          # index of the cell running, "harvest", or None
        self.since = 0.0
        self.ended = {}              # cell -> (status, error)
        self.harvest_end = None
        # after the soft limit (SIGALRM in the cell) a little time to unwind before the process is killed
        self.grace = min(5.0, max(1.0, limits.cell_timeout / 2))

    def __call__(self, events, elapsed):
        for line in events[self.seen:]:
            self.seen += 1
            try:
                ev = json.loads(line)
                kind = ev.get("event")
            except (ValueError, AttributeError):
                continue
            if kind == "start" and isinstance(ev.get("cell"), int):
                self.current, self.since = ev["cell"], elapsed
            elif kind == "end" and isinstance(ev.get("cell"), int):
                err = ev.get("error")
                self.ended[ev["cell"]] = (str(ev.get("status")), str(err)[:MAX_ERROR_CHARS] if err else None)
                self.current = None
            elif kind == "harvest-start":
                self.current, self.since = "harvest", elapsed
            elif kind == "harvest-end":
                self.harvest_end = (str(ev.get("status")), str(ev.get("error") or "")[:MAX_ERROR_CHARS])
                self.current = None
        if self.current == "harvest" and elapsed - self.since > self.harvest_timeout:
            return "timeout"
        if isinstance(self.current, int) and elapsed - self.since > self.limits.cell_timeout + self.grace:
            return "timeout"
        return None


def _reason_text(killed_for, returncode, limits: Limits) -> tuple[str, str]:
    """(status, words for the student) for a process that ended in the middle of something."""
    if killed_for == "timeout":
        return "timeout", f"stopped: it ran past the time limit ({limits.cell_timeout:g} s for a cell)"
    if killed_for == "memory":
        return "memory", f"stopped: it used more than {limits.memory_mb} MiB of memory"
    if killed_for == "output":
        return "output-limit", f"stopped: it printed more than {limits.max_output_total_mb} MiB of output"
    if returncode is not None and returncode < 0:
        sig = -returncode
        name = {9: "SIGKILL", 11: "SIGSEGV (crash)", 6: "SIGABRT", 24: "SIGXCPU (CPU time limit)",
                25: "SIGXFSZ (file too large)"}.get(sig, f"signal {sig}")
        return "killed", f"the Python process was killed by {name}"
    return "killed", f"the Python process ended (exit code {returncode}), e.g. by os._exit()"


def execute_submission(notebook_path, harvest_code: str, inputs: dict, limits: Limits | None = None) -> ExecutionResult:
    """Run a notebook's cells and ``harvest_code`` in the sandbox; return the harvested data. Never raises for
    anything the submission does; a bad notebook file gives status ``invalid-notebook``."""
    limits = limits or Limits()
    started = time.monotonic()
    result = ExecutionResult(isolation=sandbox.isolation_mode())
    notebook_path = Path(notebook_path)
    try:
        sources, notes = notebook_code_cells(notebook_path)
    except NotebookError as exc:
        result.status = "invalid-notebook"
        result.cell_errors = [str(exc)]
        result.wall_s = time.monotonic() - started
        return result
    result.notes = notes
    result.cells_total = len(sources)
    base = Path(tempfile.mkdtemp(prefix="coursekit-grade-"))     # 0700, the grader's own
    try:
        with sandbox.UidSlot() as slot:
            _run_attempts(base, notebook_path, sources, harvest_code, inputs, limits, slot.uid, result, started)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    result.wall_s = time.monotonic() - started
    return result


def _prepare_workdir(base: Path, notebook_path: Path, job: dict, inputs: dict) -> Path:
    workdir = base / "w"
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(mode=0o700)
    shutil.copyfile(notebook_path, workdir / "submission.ipynb")
    np.savez(workdir / "inputs.npz", **{k: np.asarray(v) for k, v in inputs.items()})
    (workdir / "job.json").write_text(json.dumps(job))
    return workdir


def _run_attempts(base, notebook_path, sources, harvest_code, inputs, limits, uid, result, started):
    mode = sandbox.isolation_mode()
    ro = sandbox.readable_paths() if mode == "bwrap" else ()
    env = sandbox.sandbox_env()
    skip: dict[int, str] = {}
    finished: dict[int, tuple] = {}
    worst = "ok"
    logs = []
    harvest_timeout = limits.harvest_timeout
    call_timeout = min(10.0, harvest_timeout / 2)
    for attempt in range(limits.max_restarts + 1):
        result.attempts = attempt + 1
        remaining = limits.submission_timeout - (time.monotonic() - started)
        if remaining <= 1:
            worst = max(worst, "timeout", key=STATUS_ORDER.index)
            result.cell_errors.append(f"the submission ran out of its time ({limits.submission_timeout:g} s in all)")
            break
        job = {"cells": [{"index": i, "source": s} for i, s in enumerate(sources)],
               "skip": {str(k): v for k, v in skip.items()}, "harvest": harvest_code,
               "cell_timeout": limits.cell_timeout, "harvest_call_timeout": call_timeout,
               "kill_strays": mode != "none"}
        workdir = _prepare_workdir(base, notebook_path, job, inputs)
        tracker = _Tracker(limits, harvest_timeout)
        argv = [os.path.join(sys_prefix_bin(), "python"), "-I", "-B", str(CHILD), "job.json"]
        out = sandbox.run(argv, workdir, limits=limits, env=env, timeout=remaining, ro_paths=ro, watch=tracker, uid=uid)
        tracker(out.events, out.wall_s)        # the last events
        logs.append(out.output)
        finished.update(tracker.ended)
        if tracker.harvest_end is not None:
            h_status, h_error = tracker.harvest_end
            if h_status != "ok":
                result.cell_errors.append(f"grading code: {h_error.strip().splitlines()[-1] if h_error else 'failed'}")
            result.harvested = True
            outputs, meta, problems = _load_outputs(workdir)
            result.outputs, result.meta = outputs, meta
            result.cell_errors.extend(problems)
            break
        status, words = _reason_text(out.killed_for, out.returncode, limits)
        worst = max(worst, status, key=STATUS_ORDER.index)
        if isinstance(tracker.current, int):
            # that cell ended the process: start again without it
            skip[tracker.current] = words
            finished[tracker.current] = ("killed", words + "; the notebook was run again without this cell")
            continue
        if tracker.current == "harvest":
            result.cell_errors.append(f"grading the functions: {words}")
            # what was written before the end may still be read
            outputs, meta, problems = _load_outputs(workdir)
            result.outputs, result.meta = outputs, meta
            break
        if out.killed_for == "timeout" and tracker.current is None and tracker.ended:
            result.cell_errors.append(f"the submission ran out of its time ({limits.submission_timeout:g} s in all)")
            break
        worst = max(worst, "kernel-died", key=STATUS_ORDER.index)
        result.cell_errors.append(f"Python did not start in the sandbox ({words}): {out.output[-500:]}")
        break
    else:
        result.cell_errors.append(f"gave up after {limits.max_restarts + 1} fresh starts")
    cell_msgs = []
    for i in sorted(finished):
        st, err = finished[i]
        if st == "timeout":
            worst = max(worst, "timeout", key=STATUS_ORDER.index)
        if st != "ok":
            cell_msgs.append(f"cell {i + 1}: {err}")
    result.cell_errors = cell_msgs + result.cell_errors
    result.cells_run = sum(1 for st, _ in finished.values() if st in ("ok", "error"))
    result.status = worst
    result.log = "\n".join(logs)[-(limits.max_output_kb * 1024):]


def sys_prefix_bin() -> str:
    """The folder of the Python that grades: its venv's bin (the same path inside the sandbox)."""
    import sys
    return os.path.join(sys.prefix, "bin")
