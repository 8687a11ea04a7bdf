"""Run one submitted notebook in the sandbox and bring back the values to grade, as data only.

``execute_submission(notebook_path, harvest_code, inputs, limits=None)`` is step 2 of grading (see
``coursekit.grading.grade``): the only step that runs student code. It

1. reads the notebook in the grader (corrupt JSON, a missing ``cells`` list: status ``invalid-notebook``);
2. makes a fresh folder that holds only the submission, ``inputs.npz`` and the job description;
3. has the warm grading server (``coursekit.grading.sandbox.Zygote``, shared by every submission this
   process grades) fork a process for it, under a uid of its own, in the sandbox: every code cell in order,
   each with its own time limit, going on past a cell that fails; then ``harvest_code``, which writes
   ``outputs.npz`` and ``outputs.json``;
4. if a cell ends the process (``os._exit``, a time limit, memory, output), starts a fresh process that
   skips that cell, so what worked before and after still counts (at most ``limits.max_restarts`` times);
5. reads ``outputs.npz`` with ``allow_pickle=False`` and ``outputs.json`` size-capped, never following a
   link the student may have planted, and deletes the folder.

IPython magics (``%matplotlib``, ``!pip``) do not run: their lines are left out and the feedback says so.
"""
from __future__ import annotations

import atexit
import io
import json
import os
import shutil
import stat
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from coursekit.grading import sandbox
from coursekit.grading.sandbox import Limits

__all__ = ["ExecutionResult", "Limits", "execute_submission", "notebook_code_cells"]

MAX_NOTEBOOK_MB = 16
MAX_META_BYTES = 256 * 1024
MAX_OUTPUTS_MB = 64
MAX_ERROR_CHARS = 1500
STATUS_ORDER = ["ok", "timeout", "memory", "output-limit", "disk-limit", "killed", "kernel-died", "invalid-notebook"]


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
    cell_seconds: dict = field(default_factory=dict)    # cell index -> seconds it ran (last attempt)
    events: list = field(default_factory=list)         # the child's events (untrusted; for timing/debugging)
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
        self.seconds = {}
        self.raw = []
        self.out_at_harvest = 0
        self.ready = False          # the job's process started and read its job
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
            if len(self.raw) < 500:
                self.raw.append(ev)
            if kind == "ready":
                self.ready = True
            if kind == "start" and isinstance(ev.get("cell"), int):
                self.current, self.since = ev["cell"], elapsed
            elif kind == "end" and isinstance(ev.get("cell"), int):
                err = ev.get("error")
                self.ended[ev["cell"]] = (str(ev.get("status")), str(err)[:MAX_ERROR_CHARS] if err else None)
                self.seconds[ev["cell"]] = ev.get("seconds")
                self.current = None
            elif kind == "harvest-start":
                self.current, self.since = "harvest", elapsed
                out = ev.get("out")
                self.out_at_harvest = out if isinstance(out, int) else 0
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
    if killed_for == "disk":
        return "disk-limit", f"stopped: it wrote more than {limits.max_disk_mb} MiB (or 20000 files) to its folder"
    if killed_for == "output":
        return "output-limit", f"stopped: it printed more than {limits.max_output_total_mb} MiB of output"
    if returncode is not None and returncode < 0:
        sig = -returncode
        name = {9: "SIGKILL", 11: "SIGSEGV (crash)", 6: "SIGABRT", 24: "SIGXCPU (CPU time limit)",
                25: "SIGXFSZ (file too large)"}.get(sig, f"signal {sig}")
        return "killed", f"the Python process was killed by {name}"
    return "killed", f"the Python process ended (exit code {returncode}), e.g. by os._exit()"


_ZYGOTE = [None]
_ZYGOTE_LOCK = threading.Lock()


def warm_server() -> sandbox.Zygote:
    """The grading server shared by every submission this process grades (started on first use)."""
    with _ZYGOTE_LOCK:
        z = _ZYGOTE[0]
        if z is None or not z.alive():
            if z is not None:
                z.close()
            z = _ZYGOTE[0] = sandbox.Zygote()
            if not getattr(warm_server, "_registered", False):
                atexit.register(shutdown_server)
                warm_server._registered = True
        return z


def shutdown_server():
    """Stop the shared grading server (it is started again when needed)."""
    with _ZYGOTE_LOCK:
        if _ZYGOTE[0] is not None:
            _ZYGOTE[0].close()
            _ZYGOTE[0] = None


def execute_submission(notebook_path, harvest_code: str, inputs: dict, limits: Limits | None = None) -> ExecutionResult:
    """Run a notebook's cells and ``harvest_code`` in the sandbox; return the harvested data. Never raises for
    anything the submission does; a bad notebook file gives status ``invalid-notebook``. Raises
    ``sandbox.ZygoteError`` only if the grading server itself cannot start or dies (no grade then)."""
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
    with sandbox.UidSlot() as slot:
        _run_attempts(notebook_path, sources, harvest_code, inputs, limits, slot.uid, result, started)
    result.wall_s = time.monotonic() - started
    return result


def _make_file(path: Path, uid, data: bytes = b"", mode=0o600):
    path.write_bytes(data)
    if uid is not None:
        os.chown(path, uid, uid)
    path.chmod(mode)


def _read_head_tail(fd, keep: int) -> str:
    size = os.fstat(fd).st_size
    if size <= keep:
        return os.pread(fd, keep, 0).decode(errors="replace")
    head = os.pread(fd, keep // 2, 0).decode(errors="replace")
    tail = os.pread(fd, keep // 2, size - keep // 2).decode(errors="replace")
    return f"{head}\n[... {size - keep} bytes of output left out ...]\n{tail}"


class _EventReader:
    """Reads the job's events file through the grader's own descriptor (a replaced file is not followed)."""

    def __init__(self, fd):
        self.fd, self.buf, self.lines, self.read_bytes = fd, b"", [], 0

    def poll(self):
        while self.read_bytes < (1 << 20):
            data = os.read(self.fd, 65536)
            if not data:
                break
            self.read_bytes += len(data)
            self.buf += data
            *lines, self.buf = self.buf.split(b"\n")
            self.lines.extend(line.decode(errors="replace") for line in lines if line)
        return self.lines


def _run_job(z, uid, sources, notebook_path, harvest_code, inputs, limits, job, remaining, tracker):
    """One fresh process for the notebook. Returns (killed_for, exit code, output text, job folder)."""
    job_id, host, inside = z.new_job(uid)
    shutil.copyfile(notebook_path, host / "submission.ipynb")
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in inputs.items()})
    _make_file(host / "inputs.npz", uid, buf.getvalue(), 0o644)
    _make_file(host / "job.json", uid, json.dumps(job).encode(), 0o644)
    _make_file(host / "output.txt", uid)
    _make_file(host / "events.jsonl", uid)
    if uid is not None:
        os.chown(host / "submission.ipynb", uid, uid)
    out_fd = os.open(host / "output.txt", os.O_RDONLY | os.O_NOFOLLOW)
    ev_fd = os.open(host / "events.jsonl", os.O_RDONLY | os.O_NOFOLLOW)
    events = _EventReader(ev_fd)
    cmd = {"id": job_id, "dir": inside, "job": "job.json", "output": f"{inside}/output.txt",
           "events": f"{inside}/events.jsonl", "uid": uid if z.mode != "none" else None,
           "rlimits": sandbox.job_rlimits(limits, uid is not None and z.mode != "none"),
           "env": sandbox.job_env(inside)}
    job_uid = cmd["uid"]
    start = time.monotonic()
    killed_for, pid = None, None
    try:
        pid = z.start(cmd)
        last_mem = last_disk = 0.0
        while True:
            elapsed = time.monotonic() - start
            reason = tracker(events.poll(), elapsed)
            code = z.exit_code(job_id)
            if code is not None:
                break
            if reason is None:
                if elapsed > remaining:
                    reason = "timeout"
                elif not z.alive():
                    reason = "server"
                elif elapsed - last_mem >= 0.2:
                    last_mem = elapsed
                    if sandbox.job_memory_mb(job_uid, pid, limits.memory_mb) > limits.memory_mb:
                        reason = "memory"
                    elif elapsed - last_disk >= 0.5:
                        last_disk = elapsed
                        used, entries = sandbox.folder_usage(host)
                        if used > limits.max_disk_mb << 20 or entries > 20000:
                            reason = "disk"
            if reason is not None:
                killed_for = reason
                sandbox.kill_job(job_uid, pid)
                z.wait_exit(job_id, 10)
                break
            time.sleep(0.05)
    except sandbox.ZygoteError:
        killed_for = "server"
    finally:
        if pid is not None:
            sandbox.kill_job(job_uid, pid)      # strays: what the job left running
        tracker(events.poll(), time.monotonic() - start)
        code = z.exit_code(job_id)
        output = _read_head_tail(out_fd, limits.max_output_kb * 1024)
        os.close(out_fd)
        os.close(ev_fd)
        z.forget(job_id)
    return killed_for, code, output, host


def _run_attempts(notebook_path, sources, harvest_code, inputs, limits, uid, result, started):
    z = warm_server()       # ZygoteError if it cannot start: the grader's failure, not the student's
    skip: dict[int, str] = {}
    finished: dict[int, tuple] = {}
    worst = "ok"
    logs = []
    harvest_timeout = limits.harvest_timeout
    # one call of a student's function from the harvest (the lab may train with the student's train_mlp there)
    call_timeout = min(harvest_timeout / 2, max(limits.cell_timeout, 10.0))
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
               "kill_strays": z.mode != "none", "output_limit_bytes": limits.max_output_total_mb << 20,
               "memory_mb": limits.memory_mb}
        tracker = _Tracker(limits, harvest_timeout)
        killed_for, code, output, host = _run_job(z, uid, sources, notebook_path, harvest_code, inputs, limits,
                                                  job, remaining, tracker)
        try:
            logs.append(output)
            finished.update(tracker.ended)
            result.cell_seconds.update(tracker.seconds)
            result.events.extend(tracker.raw)
            if tracker.harvest_end is not None:
                h_status, h_error = tracker.harvest_end
                if h_status != "ok":
                    last = h_error.strip().splitlines()[-1] if h_error.strip() else "failed"
                    result.cell_errors.append(f"grading code: {last}")
                result.harvested = True
                outputs, meta, problems = _load_outputs(host)
                result.outputs, result.meta = outputs, meta
                result.cell_errors.extend(problems)
                break
            if killed_for == "server":
                # the grader's failure, not the student's: no grade (a batch tries it again on its next run)
                raise sandbox.ZygoteError("the grading server died while running this notebook")
            status, words = _reason_text(killed_for, code, limits)
            worst = max(worst, status, key=STATUS_ORDER.index)
            if isinstance(tracker.current, int):
                # that cell ended the process: start again without it
                skip[tracker.current] = words
                finished[tracker.current] = ("killed", words + "; the notebook was run again without this cell")
                continue
            if tracker.current == "harvest":
                result.cell_errors.append(f"grading the functions: {words}")
                break
            if killed_for == "timeout" and tracker.ended:
                result.cell_errors.append(
                    f"the submission ran out of its time ({limits.submission_timeout:g} s in all)")
                break
            if tracker.ready:       # e.g. a thread started by an earlier cell ended the process
                result.cell_errors.append(f"between two cells, {words}; the cells after it did not run")
                break
            worst = max(worst, "kernel-died", key=STATUS_ORDER.index)
            result.cell_errors.append(f"the notebook's process did not start ({words}): {output[-500:]}")
            break
        finally:
            shutil.rmtree(host, ignore_errors=True)
    else:
        result.cell_errors.append(f"gave up after {limits.max_restarts + 1} fresh starts")
    cell_msgs = []
    for i in sorted(finished):
        st, err = finished[i]
        if st in ("timeout", "output-limit", "memory"):
            worst = max(worst, st, key=STATUS_ORDER.index)
        if st != "ok":
            cell_msgs.append(f"cell {i + 1}: {err}")
    result.cell_errors = cell_msgs + result.cell_errors
    result.cells_run = sum(1 for st, _ in finished.values() if st != "killed")
    result.status = worst
    result.log = "\n".join(logs)[-(limits.max_output_kb * 1024):]
