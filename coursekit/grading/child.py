"""The program that runs *inside* the sandbox: a warm server that forks one process per submission.

``python -I -B -u child.py --serve`` (started by ``coursekit.grading.sandbox.Zygote``) imports torch,
coursekit, d2l and matplotlib and loads Fashion-MNIST once, then reads one job per line on stdin. For each
job it forks a process that drops to the job's own unprivileged uid (with the job's limits), sends its
output to ``output.txt`` and its events to ``events.jsonl`` in the job's folder, and runs the notebook's
code cells one by one, then the harvest code. The server reports ``{"started": job, "pid": ...}`` and
``{"exit": job, "status": ...}`` on stdout. Forking a warm process instead of starting Python, torch and
d2l for each submission is what makes a class fast to grade.

Nothing a job says is trusted for points (the grader recomputes everything from the data that the
harvest code writes); its events only tell the grader which cell runs, for time limits and feedback.

Each cell: compiled on its own (a syntax error fails that cell only), run with a soft time limit (SIGALRM
raises ``CellTimeout``; the grader kills the process if the cell swallows it), every exception caught,
``sys.exit()`` included, so the next cells still run. ``input()`` reads from /dev/null and gets EOF.
"""
import builtins
import json
import os
import signal
import sys
import time
import traceback
import types

MAIN_PID = os.getpid()
T_START = time.monotonic()
_EVENT_FD = [None]
_MAX_TEXT = 1500


def emit(**event):
    line = json.dumps(event)[:8000] + "\n"
    try:
        os.write(_EVENT_FD[0], line.encode())
    except (OSError, TypeError):
        pass


class CellTimeout(BaseException):
    """The cell ran past its time limit."""


def _on_cell_alarm(signum, frame):
    raise CellTimeout()


def _on_harvest_alarm(signum, frame):
    # An Exception (not BaseException): the harvest's per-call try/except moves on to the next call,
    # and the next call gets its own time.
    signal.setitimer(signal.ITIMER_REAL, _HARVEST_CALL_S)
    raise TimeoutError(f"the call ran past its time limit ({_HARVEST_CALL_S:g} s)")


_HARVEST_CALL_S = 10.0


def _short_traceback(exc: BaseException) -> str:
    """The exception, then where it happened in the student's cells (not in this driver)."""
    if isinstance(exc, SyntaxError):
        line = (exc.text or "").strip()
        return f"{type(exc).__name__}: {exc.msg} (line {exc.lineno})" + (f"\n    {line[:200]}" if line else "")
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith("<cell")]
    head = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    where = [f"  at {f.filename[1:-1]}, line {f.lineno}, in {f.name}" + (f": {f.line.strip()}" if f.line else "")
             for f in frames[-3:]]
    return "\n".join([head[:_MAX_TEXT]] + where)


def _display(*objs, **kwargs):
    for obj in objs:
        print(repr(obj))


class _FakeIPython:
    """Enough of ``get_ipython()`` for notebooks that call it; magics do nothing outside Jupyter."""

    def run_line_magic(self, *args, **kwargs):
        return None

    def run_cell_magic(self, *args, **kwargs):
        return None

    def system(self, *args, **kwargs):
        return None

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _output_size() -> int:
    try:
        return os.fstat(1).st_size
    except OSError:
        return 0


def _silence_output():
    sys.stdout.flush()
    sys.stderr.flush()
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)


def _kill_strays():
    """Kill processes a cell left behind (a fork bomb's children); only with a uid of our own."""
    try:
        os.kill(-1, signal.SIGKILL)     # every process this uid may signal, except this one
    except (ProcessLookupError, PermissionError):
        pass


_DEPTH = [0]


def _wrap_with_timeout(fn, seconds):
    """Each call from the harvest gets ``seconds`` of its own (calls between student functions do not)."""
    def wrapper(*args, **kwargs):
        if _DEPTH[0]:
            return fn(*args, **kwargs)
        _DEPTH[0] += 1
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            return fn(*args, **kwargs)
        finally:
            signal.setitimer(signal.ITIMER_REAL, seconds)
            _DEPTH[0] -= 1
    wrapper.__name__ = getattr(fn, "__name__", "f")
    wrapper.__doc__ = getattr(fn, "__doc__", None)
    wrapper.__wrapped__ = fn
    return wrapper


def main(job_path):
    global _HARVEST_CALL_S
    with open(job_path) as fh:
        job = json.load(fh)
    sys.path.insert(0, os.getcwd())
    # past RLIMIT_FSIZE a write fails with an OSError in the cell instead of killing the process
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    sys.argv = ["notebook"]
    ns = {"__name__": "__main__", "__builtins__": builtins, "display": _display,
          "get_ipython": lambda: _FakeIPython()}
    emit(event="ready", seconds=round(time.monotonic() - T_START, 3))
    skip = {int(k): v for k, v in job.get("skip", {}).items()}
    cell_timeout = float(job["cell_timeout"])
    for cell in job["cells"]:
        i = cell["index"]
        if i in skip:
            emit(event="skip", cell=i, reason=skip[i])
            continue
        emit(event="start", cell=i)
        t0 = time.monotonic()
        out_before = _output_size()
        status, error = "ok", None
        try:
            code = compile(cell["source"], f"<cell {i + 1}>", "exec")
        except (SyntaxError, ValueError) as exc:
            status, error = "error", _short_traceback(exc)
        else:
            signal.signal(signal.SIGALRM, _on_cell_alarm)
            signal.setitimer(signal.ITIMER_REAL, cell_timeout)
            try:
                exec(code, ns)
            except CellTimeout:
                status, error = "timeout", f"stopped after {cell_timeout:g} s (time limit of a cell)"
            except EOFError as exc:
                first, _, rest = _short_traceback(exc).partition("\n")
                status, error = "error", f"{first} (input() gets no answer when grading)\n{rest}".rstrip()
            except SystemExit as exc:
                status, error = "error", f"the cell called sys.exit({exc.code!r}); the notebook went on without it"
            except BaseException as exc:     # noqa: BLE001 (KeyboardInterrupt, GeneratorExit... all of them)
                status, error = "error", _short_traceback(exc)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        if os.getpid() != MAIN_PID:        # a forked copy of this process: it must not go on
            os._exit(1)
        out_limit = job.get("output_limit_bytes")
        if out_limit and out_before < out_limit <= _output_size():
            if status != "timeout":
                status, error = "output-limit", (f"printed more than {out_limit / 2**20:g} MiB of output; "
                                                 "what came after was cut off")
            _silence_output()       # the next cells' prints must not fail on a full output file
        if error and ("Cannot allocate memory" in error or error.startswith("MemoryError")):
            status = "memory"
            first, _, rest = error.partition("\n")
            error = f"{first} (the memory limit is {job.get('memory_mb', '?')} MiB)\n{rest}".rstrip()
        if job.get("kill_strays"):
            _kill_strays()
        emit(event="end", cell=i, status=status, error=error, seconds=round(time.monotonic() - t0, 3))
        sys.stdout.flush()
        sys.stderr.flush()

    emit(event="harvest-start", seconds=round(time.monotonic() - T_START, 3), out=_output_size())
    _HARVEST_CALL_S = float(job.get("harvest_call_timeout", 10.0))
    for name, value in list(ns.items()):
        code = getattr(value, "__code__", None)
        if isinstance(value, types.FunctionType) and code is not None and code.co_filename.startswith("<cell"):
            ns[name] = _wrap_with_timeout(value, _HARVEST_CALL_S)
    for name in ("outputs.npz", "outputs.json"):    # whatever the notebook planted there goes
        try:
            os.unlink(name)
        except OSError:
            pass
    signal.signal(signal.SIGALRM, _on_harvest_alarm)
    signal.setitimer(signal.ITIMER_REAL, _HARVEST_CALL_S)
    status, error = "ok", None
    try:
        exec(compile(job["harvest"], "<harvest>", "exec"), ns)
    except BaseException as exc:      # noqa: BLE001
        status, error = "error", "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-_MAX_TEXT:]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if os.getpid() != MAIN_PID:
        os._exit(1)
    emit(event="harvest-end", status=status, error=error, seconds=round(time.monotonic() - T_START, 3))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)      # skip interpreter teardown: atexit hooks and __del__ of student objects


# ----------------------------------------------------------------------------------------- the server

# zipfile and cp437: the harvest's np.savez needs them, and (mode "uid") a job may be unable to read the stdlib
PRELOAD = ["numpy", "torch", "matplotlib.pyplot", "d2l.torch", "coursekit", "zipfile", "encodings.cp437"]


def _preload():
    """Import what every lab notebook imports, and load the data set, once for all jobs."""
    import importlib
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as exc:       # noqa: BLE001 (a missing optional package: the job imports it or fails)
            print(f"preload of {name} failed: {exc}", file=sys.stderr)
    try:
        import torch
        torch.set_num_threads(1)
    except Exception:      # noqa: BLE001
        pass
    try:
        import coursekit
        coursekit.load_fashion_mnist(download=False)
    except Exception as exc:      # noqa: BLE001
        print(f"Fashion-MNIST not preloaded: {exc}", file=sys.stderr)


def _reseed():
    import random
    random.seed(0)
    try:
        import numpy
        numpy.random.seed(0)
        import torch
        torch.manual_seed(0)
    except Exception:       # noqa: BLE001
        pass


def _run_job(cmd):
    """In the forked process: become the job (its uid, limits, folder, output), run it, never return."""
    global MAIN_PID, T_START
    try:
        import resource
        os.setsid()
        try:        # if memory runs out, the kernel kills a job, never the server or the grader
            with open("/proc/self/oom_score_adj", "w") as fh:
                fh.write("1000")
        except OSError:
            pass
        lim = cmd["rlimits"]
        for name, value in lim.items():
            resource.setrlimit(getattr(resource, name), (value, value))
        uid = cmd.get("uid")
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)      # drops every capability: from here on the process is an ordinary user
        # opened as the job's uid, which owns them (the server has no right to its folder)
        out = os.open(cmd["output"], os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
        ev = os.open(cmd["events"], os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        for fd in (null, out):
            os.close(fd)
        _EVENT_FD[0] = ev
        os.chdir(cmd["dir"])
        os.environ.clear()
        os.environ.update(cmd["env"])
        MAIN_PID, T_START = os.getpid(), time.monotonic()
        _reseed()
        main(cmd["job"])
    except BaseException as exc:        # noqa: BLE001
        try:
            os.write(2, f"grading process failed to start: {exc!r}\n".encode())
        finally:
            os._exit(70)
    os._exit(0)


def serve():
    import select
    # coursekit from where the grader has it (an editable install may point elsewhere): the folder above
    # the package, in which the sandbox shows nothing but the package itself
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    _preload()
    out = os.dup(1)
    os.dup2(2, 1)       # stray prints from the server go to its stderr, not into the job protocol

    def report(**msg):
        os.write(out, (json.dumps(msg) + "\n").encode())

    jobs = {}
    report(ready=True, seconds=round(time.monotonic() - T_START, 3))
    buf = b""
    while True:
        while jobs:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            job = jobs.pop(pid, None)
            if job is not None:
                code = os.waitstatus_to_exitcode(status)
                report(exit=job, code=code)
        ready, _, _ = select.select([0], [], [], 0.05)
        if not ready:
            continue
        data = os.read(0, 65536)
        if not data:
            return
        buf += data
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            cmd = json.loads(line)
            pid = os.fork()
            if pid == 0:
                os.close(out)
                _run_job(cmd)
            jobs[pid] = cmd["id"]
            report(started=cmd["id"], pid=pid)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        sys.exit("usage: child.py --serve   (started by coursekit.grading.sandbox.Zygote)")
