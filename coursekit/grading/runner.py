"""Run one submitted notebook in the sandbox and bring back the values to grade, as data only.

``execute_submission(notebook_path, harvest_code, inputs, limits=None)`` is the ``run`` step of grading (see
``coursekit.grading.grade.STEPS``): the only step that runs student code. It

1. reads the notebook in the grader (corrupt JSON, a missing ``cells`` list: status ``invalid-notebook``);
2. makes a fresh job folder (``sandbox.WarmServer.new_job``) and puts the job in it for the job process alone
   (``protocol.JobSpec``, the inputs; root-only files the job reads and deletes before any cell runs);
3. has the warm server (shared by every submission this process grades) fork a process for it, under
   a uid of its own, in namespaces of its own: every code cell in order (through IPython's input
   transformation), each with its own time limit and the submission's deadline, going on past a cell that
   fails;
4. writes a fresh random nonce to a root-only file in the job's folder, which the server opens and unlinks
   before it forks the job, without reading it (no job has it in its memory); after the last cell the job's main
   thread forks the harvest process, which the server checks from outside (a single-threaded child of the job's
   process, whose main thread is waiting for it) before it hands it the results file, the hidden inputs and the
   nonce's file, and stops the job's own process; each question is harvested in a process of its own and written
   as a frame carrying the nonce (copied from its file by the kernel). The server's decisions come back in a
   file the job never holds (``server.jsonl``): a request the server refused is a flag on the grade;
5. if a cell ends the process (``os._exit``, a time limit, memory, output), starts a fresh process that
   skips that cell, so what worked before and after still counts (at most ``limits.max_restarts`` times); when
   the submission's time has run out, one more process runs only the cells that had finished and harvests;
6. kills every process of the job and checks that none is left (``sandbox.UidSlot``) before returning.
"""
from __future__ import annotations

import atexit
import io
import json
import os
import secrets
import shutil
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from coursekit.grading import protocol, sandbox
from coursekit.grading.labspec import normalized_source
from coursekit.grading.protocol import Event, JobSpec, Limits

__all__ = ["ExecutionResult", "Limits", "execute_submission", "notebook_code_cells"]

MAX_NOTEBOOK_MB = Limits().max_notebook_mb      # the defaults; execute_submission uses its Limits'
MAX_ERROR_CHARS = Limits.ERROR_TEXT_CHARS
STATUS_ORDER = ["ok", "timeout", "memory", "output-limit", "disk-limit", "killed", "kernel-died", "invalid-notebook"]


@dataclass
class ExecutionResult:
    """What came back from the student's process (data only) and how the run went."""
    outputs: dict = field(default_factory=dict)        # name -> np.ndarray (numeric)
    meta: dict = field(default_factory=dict)           # the harvest's JSON, size-capped
    cell_errors: list = field(default_factory=list)    # "cell 3: ZeroDivisionError: ..." one per failed cell
    status: str = "ok"                                 # see STATUS_ORDER
    log: str = ""                                      # the notebook's output, capped
    notes: list = field(default_factory=list)          # things the student should know
    cells_run: int = 0                                 # code cells that finished (with or without an error)
    cells_total: int = 0
    cell_seconds: dict = field(default_factory=dict)    # cell index -> seconds it ran (last attempt)
    events: list = field(default_factory=list)         # the job's events (untrusted; for timing/debugging)
    harvested: bool = False                            # a results frame with the grader's nonce came back
    attempts: int = 0
    wall_s: float = 0.0
    isolation: str = ""
    sources: list = field(default_factory=list)        # the code cells as read (for the static flags)
    runtime_flags: list = field(default_factory=list)  # what the grader saw the job attempt, as flags


class NotebookError(ValueError):
    """The file is not a notebook we can run."""


def notebook_code_cells(path, max_mb: int = MAX_NOTEBOOK_MB) -> tuple[list[str], list[str]]:
    """The code cells' sources, as written (IPython's transformation runs in the job), and notes."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise NotebookError(f"cannot read {path.name}: {exc.strerror}") from None
    if size > max_mb << 20:
        raise NotebookError(f"{path.name} is {size >> 20} MiB; a notebook may be at most {max_mb} MiB")
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
        sources.append(src)
    return sources, notes


def _load_outputs(npz_bytes: bytes, meta_bytes: bytes, max_meta_bytes: int) -> tuple[dict, dict, list[str]]:
    """The harvest's arrays (plain numeric only, never a pickle) and its JSON (capped)."""
    problems = []
    outputs, meta = {}, {}
    if npz_bytes:
        try:
            with np.load(io.BytesIO(npz_bytes), allow_pickle=False) as npz:
                for name in npz.files[:1000]:
                    arr = npz[name]
                    if arr.dtype.kind in "biufc":
                        outputs[name] = np.array(arr)
                    else:
                        problems.append(f"output {name!r} is not numeric ({arr.dtype}); left out")
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            problems.append(f"the harvested arrays could not be read as plain arrays: {exc}"[:300])
            outputs = {}
    if len(meta_bytes) > max_meta_bytes:
        problems.append("the harvest's description was too large; left out")
    elif meta_bytes:
        try:
            meta = json.loads(meta_bytes.decode("utf-8"))
            if not isinstance(meta, dict):
                meta = {}
        except (ValueError, UnicodeDecodeError):
            problems.append("the harvest's description could not be read")
    return outputs, meta, problems


class _Tracker:
    """Follows the job's events (untrusted hints) and the grader's own phases: which cell runs, since when;
    kills a cell that swallowed its timeout, a harvest that runs too long, a job past its deadline."""

    def __init__(self, limits: Limits, spec: JobSpec):
        self.limits = limits
        self.cells_deadline = spec.cells_deadline
        self.expected = set(range(len(spec.cells))) - set(spec.skip)   # cells that must end before the harvest
        self.seen = 0
        self.current = None          # index of the cell running, "harvest" (grader's word), or None
        self.since = 0.0
        self.ended = {}              # cell -> (status, error)
        self.seconds = {}
        self.raw = []
        self.ready = False           # the job's process started and read its job
        self.harvest_since = None    # when the server handed the results channel to the harvest process
        self.harvest_end = None      # (status, error) the job reported after that
        self.refused = []            # requests for the results channel the server refused: {"pid", "why"}

    def __call__(self, lines, elapsed):
        for line in lines[self.seen:]:
            self.seen += 1
            ev = Event.parse(line)
            if ev is None:
                continue
            if len(self.raw) < 500:
                self.raw.append({k: v for k, v in ev.__dict__.items() if v not in (None, "")})
            if ev.kind == protocol.READY:
                self.ready = True
            elif ev.kind == protocol.START and ev.cell is not None and self.harvest_since is None:
                self.current, self.since = ev.cell, elapsed
            elif ev.kind == protocol.END and ev.cell is not None and (
                    self.harvest_since is None or (ev.cell in self.expected and ev.cell not in self.ended)):
                # A cell's end read in the same poll as the server's grant (read first) still counts: the
                # main thread wrote it before it forked the harvest.
                self.ended[ev.cell] = (ev.status, (ev.error or "")[:MAX_ERROR_CHARS] or None)
                self.seconds[ev.cell] = ev.seconds
                if self.harvest_since is None:
                    self.current = None
            elif ev.kind == protocol.SKIP and ev.cell is not None and ev.error and "time ran out" in ev.error:
                self.ended.setdefault(ev.cell, ("skipped", ev.error))
            elif ev.kind == protocol.HARVEST_END and self.harvest_since is not None:
                self.harvest_end = (ev.status, (ev.error or "")[:MAX_ERROR_CHARS])
        limits = self.limits
        if self.harvest_since is not None:
            return "timeout" if elapsed - self.harvest_progress > limits.harvest_stall_timeout else None
        if self.cells_deadline_passed(elapsed):
            return "timeout"
        if isinstance(self.current, int) and elapsed - self.since > limits.cell_timeout + limits.cell_grace:
            return "timeout"
        return None

    def cells_deadline_passed(self, elapsed) -> bool:
        return elapsed > self.cells_deadline + self.limits.cell_grace + self.limits.job_start_grace

    def server(self, lines, elapsed):
        """The server's own decisions (trusted: the job never holds that file)."""
        for line in lines[self.server_seen:]:
            self.server_seen += 1
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if d.get("kind") == "harvest-granted" and self.harvest_since is None:
                self.current, self.since, self.harvest_since = "harvest", elapsed, elapsed
                self.harvest_progress = elapsed
            elif d.get("kind") == "harvest-refused" and len(self.refused) < 20:
                self.refused.append({"pid": d.get("pid"), "why": str(d.get("why"))[:300]})

    server_seen = 0
    harvest_progress = 0.0          # when the last question's frame came (the harvest's stall limit runs from it)
    results_size = 0

    def results_grew(self, size, elapsed):
        if size != self.results_size:
            self.results_size, self.harvest_progress = size, elapsed


def _reason_text(killed_for, returncode, limits: Limits) -> tuple[str, str]:
    """(status, words for the student) for a process that ended in the middle of something."""
    if killed_for == "timeout":
        return "timeout", (f"stopped: it ran past the time limit ({limits.cell_timeout:g} s for a cell, "
                           f"{limits.submission_timeout:g} s for all the cells)")
    if killed_for == "memory":
        return "memory", f"stopped: it used more than {limits.memory_mb} MiB of memory"
    if killed_for == "disk":
        return "disk-limit", (f"stopped: it wrote more than {limits.max_disk_mb} MiB (or {limits.max_files} files) "
                              "to its folder")
    if killed_for == "output":
        return "output-limit", f"stopped: it printed more than {limits.max_output_total_mb} MiB of output"
    if returncode is not None and returncode < 0:
        sig = -returncode
        name = {9: "SIGKILL", 11: "SIGSEGV (crash)", 6: "SIGABRT", 24: "SIGXCPU (CPU time limit)",
                25: "SIGXFSZ (file too large)"}.get(sig, f"signal {sig}")
        return "killed", f"the Python process was killed by {name}"
    return "killed", f"the Python process ended (exit code {returncode}), e.g. by os._exit()"


_WARM_SERVER = [None]
_WARM_SERVER_LOCK = threading.Lock()


def warm_server() -> sandbox.WarmServer:
    """The warm server shared by every submission this process grades (started on first use)."""
    with _WARM_SERVER_LOCK:
        z = _WARM_SERVER[0]
        if z is None or not z.alive():
            if z is not None:
                z.close()
            z = _WARM_SERVER[0] = sandbox.WarmServer()
            if not getattr(warm_server, "_registered", False):
                atexit.register(shutdown_server)
                warm_server._registered = True
        return z


def shutdown_server():
    """Stop the shared grading server (it is started again when needed)."""
    with _WARM_SERVER_LOCK:
        if _WARM_SERVER[0] is not None:
            _WARM_SERVER[0].close()
            _WARM_SERVER[0] = None


def execute_submission(notebook_path, harvest_code: str, inputs: dict, limits: Limits | None = None,
                       template_cells: dict[str, str] | None = None) -> ExecutionResult:
    """Run a notebook's cells and ``harvest_code`` in the sandbox; return the harvested data. Never raises for
    anything the submission does; a bad notebook file gives status ``invalid-notebook``. Raises
    ``sandbox.WarmServerError`` only if the warm server itself cannot start or dies (no grade then).

    ``template_cells``: ``{normalized source: stand-in}`` (``LabSpec.template_cells``): a cell whose source,
    trailing whitespace aside, is still such a template cell runs as its stand-in instead (a self-check's output
    or the notebook's own training run is never graded; the harvest retrains with the student's code)."""
    limits = limits or Limits()
    started = time.monotonic()
    result = ExecutionResult(isolation=sandbox.isolation_mode())
    notebook_path = Path(notebook_path)
    try:
        sources, notes = notebook_code_cells(notebook_path, limits.max_notebook_mb)
    except NotebookError as exc:
        result.status = "invalid-notebook"
        result.cell_errors = [str(exc)]
        result.wall_s = time.monotonic() - started
        return result
    result.notes = notes
    result.sources = sources
    result.cells_total = len(sources)
    run_sources, replaced = _with_stand_ins(sources, template_cells or {})
    if replaced:
        result.notes.append(f"{len(replaced)} cell(s) left exactly as in the template (the check(...) self-checks, "
                            "the training run) were not run by the grader: their output is never graded, and the "
                            "grader trains with your train_mlp itself. An edited cell runs as you wrote it.")
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in inputs.items()})
    with sandbox.UidSlot() as slot:     # on leaving: every process of the job killed and gone, or an error
        _run_attempts(run_sources, harvest_code, buf.getvalue(), limits, slot.uid, result)
    result.wall_s = time.monotonic() - started
    return result


def _with_stand_ins(sources: list[str], template_cells: dict[str, str]) -> tuple[list[str], list[int]]:
    """The sources to run (unchanged template cells replaced by their stand-ins) and the replaced indices."""
    if not template_cells:
        return list(sources), []
    run, replaced = [], []
    for i, source in enumerate(sources):
        stand_in = template_cells.get(normalized_source(source))
        run.append(source if stand_in is None else stand_in)
        if stand_in is not None:
            replaced.append(i)
    return run, replaced


def _make_root_file(path: Path, data: bytes = b""):
    """A protocol file: the grader's (the server, root in the sandbox, opens it for the job), 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _read_head_tail(fd, keep: int) -> str:
    size = os.fstat(fd).st_size
    if size <= keep:
        return os.pread(fd, keep, 0).decode(errors="replace")
    head = os.pread(fd, keep // 2, 0).decode(errors="replace")
    tail = os.pread(fd, keep // 2, size - keep // 2).decode(errors="replace")
    return f"{head}\n[... {size - keep} bytes of output left out ...]\n{tail}"


class _EventReader:
    """Reads the job's events file through the grader's own descriptor."""

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


def _run_job(z, uid, spec: JobSpec, inputs_bytes: bytes, limits: Limits, tracker: _Tracker):
    """One fresh process for the notebook. Returns (killed_for, exit code, output text, results or None,
    folder usage problem)."""
    job_id, host, inside = z.new_job(uid)
    try:
        _make_root_file(host / protocol.JOB_FILE, spec.to_json().encode())
        _make_root_file(host / protocol.INPUTS_FILE, inputs_bytes)
        nonce = secrets.token_bytes(protocol.NONCE_BYTES)
        _make_root_file(host / protocol.NONCE_FILE, nonce.hex().encode())      # only the checked harvest gets it
        for name in (protocol.OUTPUT_FILE, protocol.EVENTS_FILE, protocol.RESULTS_FILE, protocol.SERVER_EVENTS_FILE):
            _make_root_file(host / name)
        out_fd = os.open(host / protocol.OUTPUT_FILE, os.O_RDONLY | os.O_NOFOLLOW)
        ev_fd = os.open(host / protocol.EVENTS_FILE, os.O_RDONLY | os.O_NOFOLLOW)
        srv_fd = os.open(host / protocol.SERVER_EVENTS_FILE, os.O_RDONLY | os.O_NOFOLLOW)
        # read through this descriptor only: the server unlinks the file before the job exists (in mode userns
        # the job is the file's owner and could otherwise open it by name)
        res_fd = os.open(host / protocol.RESULTS_FILE, os.O_RDONLY | os.O_NOFOLLOW)
        events, server_events = _EventReader(ev_fd), _EventReader(srv_fd)
        cmd = z.command(job_id, inside, uid, limits)
        cmd.grant_check_s = limits.harvest_grant_check
        job_uid = cmd.uid
        start = time.monotonic()
        killed_for, pid = None, None
        try:
            pid = z.start(cmd)
            last_mem = last_disk = 0.0
            while True:
                elapsed = time.monotonic() - start
                tracker.server(server_events.poll(), elapsed)
                if tracker.harvest_since is not None:
                    tracker.results_grew(os.fstat(res_fd).st_size, elapsed)
                reason = tracker(events.poll(), elapsed)
                if z.exit_code(job_id) is not None:
                    break
                if reason is None:
                    if not z.alive():
                        reason = "server"
                    elif elapsed - last_mem >= 0.2:
                        last_mem = elapsed
                        if z.job_memory_mb(job_uid, pid, limits.memory_mb) > limits.memory_mb:
                            reason = "memory"
                        elif elapsed - last_disk >= 0.5:
                            last_disk = elapsed
                            used, entries = sandbox.folder_usage(host / protocol.WORK_DIR, limits.max_files)
                            if used > limits.max_disk_mb << 20 or entries > limits.max_files:
                                reason = "disk"
                if reason is not None:
                    killed_for = reason
                    z.kill_job(job_id, job_uid)
                    z.wait_exit(job_id, limits.kill_wait)
                    break
                z.wait_exit(job_id, 0.05)      # wakes at once when the server reports the job's end
        except sandbox.WarmServerError:
            killed_for = "server"
        finally:
            if pid is not None:
                z.kill_job(job_id, job_uid)      # strays: what the job left running
                z.wait_exit(job_id, limits.kill_wait)
            tracker.server(server_events.poll(), time.monotonic() - start)
            tracker(events.poll(), time.monotonic() - start)
            code = z.exit_code(job_id)
            output = _read_head_tail(out_fd, limits.max_output_kb * 1024)
            results = None
            if tracker.harvest_since is not None:
                size = os.fstat(res_fd).st_size
                data = os.pread(res_fd, size, 0) if size <= limits.max_results_file_bytes else None
                results = protocol.decode_frames(data or b"", nonce)
            for fd in (out_fd, ev_fd, srv_fd, res_fd):
                os.close(fd)
            z.forget(job_id)
        return killed_for, code, output, results
    finally:
        shutil.rmtree(host, ignore_errors=True)


# what Python says when RLIMIT_NPROC refuses a new thread or process (the question's process has it at 0)
REFUSED_THREAD_TEXTS = ("can't start new thread", "Resource temporarily unavailable")


def _merge_frames(result: ExecutionResult, results, limits: Limits):
    """The questions' frames into ``result.outputs``/``meta``: each frame may only hold its own question's keys
    (its code ran in a process of its own; a key of another question is a flag, and dropped)."""
    frames, intact = results
    seen = set()
    for question, npz, js in frames:
        if question in seen:
            continue
        seen.add(question)
        outputs, meta, problems = _load_outputs(npz, js, limits.max_meta_kb << 10)
        prefix = question + "."
        foreign = sorted(k for k in list(outputs) + list(meta) if question and not k.startswith(prefix))
        if foreign:
            result.runtime_flags.append({"line": None, "code": "", "reason": (
                f"while the grader harvested {question}, the notebook's code sent back values for other keys "
                f"({', '.join(foreign[:3])}): code that tried to hand in results of its own")})
        result.outputs.update({k: v for k, v in outputs.items() if k.startswith(prefix) or not question})
        result.meta.update({k: v for k, v in meta.items() if k.startswith(prefix) or not question})
        result.cell_errors.extend(problems)
        refused = sorted(k for k, v in meta.items() if isinstance(v, dict) and isinstance(v.get("error"), str)
                         and any(text in v["error"] for text in REFUSED_THREAD_TEXTS))
        if refused:
            result.runtime_flags.append({"line": None, "code": "", "reason": (
                f"the notebook's code tried to start a thread or a process while the grader called it ({refused[0]}; "
                "refused: a graded call runs alone, so that what the grader traces is all that runs)")})
        blocked = meta.get(prefix + "refused") if question else meta.get("refused")
        if isinstance(blocked, list) and blocked:
            result.runtime_flags.append({"line": None, "code": "", "reason": (
                f"while the grader called its functions for {question or 'grading'}, the notebook's code reached for "
                f"{', '.join(str(b)[:80] for b in blocked[:5])} (refused; the call that did it failed)")})
        error = meta.get(prefix + "harvest_error")
        if isinstance(error, dict) and isinstance(error.get("error"), str):
            result.cell_errors.append(f"grading {question}: {error['error'][:300]}")
    if not intact:
        result.cell_errors.append("grading the functions: the last question's values were cut off")


def _run_attempts(sources, harvest_code, inputs_bytes, limits: Limits, uid, result: ExecutionResult):
    z = warm_server()       # WarmServerError if it cannot start: the grader's failure, not the student's
    skip: dict[int, str] = {}
    finished: dict[int, tuple] = {}
    worst = "ok"
    logs = []
    used = 0.0              # seconds the cells have had, every attempt together
    replay = False
    for attempt in range(limits.max_restarts + 1):
        result.attempts = attempt + 1
        remaining = limits.submission_timeout - used
        if remaining <= 1:
            ran = [i for i, (st, _) in finished.items() if st not in ("killed", "skipped")]
            if replay or not ran:
                break
            # the time ran out: run once more only the cells that had finished (their time again), then harvest
            replay = True
            for i in range(len(sources)):
                if i not in ran:
                    skip.setdefault(i, "not run: the submission's time ran out before this cell")
            remaining = limits.replay_deadline(sum(float(result.cell_seconds.get(i) or 0) for i in ran))
        spec = limits.job_spec(sources, harvest_code, cells_deadline=remaining, skip=skip)
        tracker = _Tracker(limits, spec)
        t0 = time.monotonic()
        killed_for, code, output, results = _run_job(z, uid, spec, inputs_bytes, limits, tracker)
        used += (tracker.harvest_since if tracker.harvest_since is not None else time.monotonic() - t0)
        logs.append(output)
        for i, value in tracker.ended.items():
            if not (value[0] == "skipped" and i in finished):
                finished[i] = value
        result.cell_seconds.update({k: v for k, v in tracker.seconds.items() if isinstance(v, (int, float))})
        result.events.extend(tracker.raw)
        for refused in tracker.refused:
            result.runtime_flags.append({"line": None, "code": "", "reason": (
                "a process of the notebook asked for the grader's results channel and was refused ("
                f"{refused['why']}): code that tried to hand in results of its own")})
        if results is not None:
            h_status, h_error = tracker.harvest_end or ("ok", "")
            if h_status != "ok":
                last = h_error.strip().splitlines()[-1] if h_error.strip() else "failed"
                result.cell_errors.append(f"grading code: {last}")
            result.harvested = True
            _merge_frames(result, results, limits)
            if killed_for == "timeout" and tracker.current == "harvest":
                result.cell_errors.append(f"grading the functions: stopped after {limits.harvest_stall_timeout:g} s "
                                          "without a question's values; the questions not harvested by then get 0")
            break
        if killed_for == "server":
            # the grader's failure, not the student's: no grade (a batch tries it again on its next run)
            raise sandbox.WarmServerError("the warm server died while running this notebook")
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
        if tracker.ready and killed_for == "timeout":
            continue        # past the deadline between cells: the next attempt replays what finished
        if tracker.ready:       # e.g. a thread started by an earlier cell ended the process
            result.cell_errors.append(f"between two cells, {words}; the cells after it did not run")
            break
        worst = max(worst, "kernel-died", key=STATUS_ORDER.index)
        result.cell_errors.append(f"the notebook's process did not start ({words}): {output[-500:]}")
        break
    else:
        result.cell_errors.append(f"gave up after {limits.max_restarts + 1} fresh starts")
    if not result.harvested and used >= limits.submission_timeout - 1:
        result.cell_errors.append(f"the submission ran out of its time ({limits.submission_timeout:g} s in all)")
    cell_msgs = []
    for i in sorted(finished):
        st, err = finished[i]
        if st in ("timeout", "output-limit", "memory"):
            worst = max(worst, st, key=STATUS_ORDER.index)
        if st == "skipped":
            worst = max(worst, "timeout", key=STATUS_ORDER.index)
        if st != "ok":
            cell_msgs.append(f"cell {i + 1}: {err}")
    result.cell_errors = cell_msgs + result.cell_errors
    result.cells_run = sum(1 for st, _ in finished.values() if st not in ("killed", "skipped"))
    result.status = worst
    result.log = "\n".join(logs)[-(limits.max_output_kb * 1024):]
