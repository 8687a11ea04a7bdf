"""The program that runs *inside* the sandbox: a notebook's code cells one by one, then the harvest code.

Started by ``coursekit.grading.runner`` as ``python -I -B child.py job.json`` in the submission's folder.
It only reports; nothing it says is trusted for points (the grader recomputes everything from the data
that the harvest code writes). Events go, one JSON object per line, to the file descriptor named by
``$COURSEKIT_EVENT_FD``.

Each cell: compiled on its own (a syntax error fails that cell only), run with a soft time limit (SIGALRM
raises ``CellTimeout``; the grader kills the process if the cell swallows it), every exception caught,
``sys.exit()`` included, so the next cells still run. ``input()`` reads from /dev/null and gets EOF.
"""
import builtins
import json
import os
import signal
import sys
import traceback
import types

MAIN_PID = os.getpid()
_EVENT_FD = os.dup(int(os.environ.pop("COURSEKIT_EVENT_FD")))
_MAX_TEXT = 1500


def emit(**event):
    line = json.dumps(event)[:8000] + "\n"
    try:
        os.write(_EVENT_FD, line.encode())
    except OSError:
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
    import numpy  # noqa: F401  (the harvest needs it; loaded before any student code runs)
    try:        # loaded here, outside the cells' time limits: every lab notebook imports it first thing
        import torch  # noqa: F401
    except ImportError:
        pass
    ns = {"__name__": "__main__", "__builtins__": builtins, "display": _display,
          "get_ipython": lambda: _FakeIPython()}
    skip = {int(k): v for k, v in job.get("skip", {}).items()}
    cell_timeout = float(job["cell_timeout"])
    for cell in job["cells"]:
        i = cell["index"]
        if i in skip:
            emit(event="skip", cell=i, reason=skip[i])
            continue
        emit(event="start", cell=i)
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
                status, error = "error", _short_traceback(exc) + "\n  (input() gets no answer when grading)"
            except SystemExit as exc:
                status, error = "error", f"the cell called sys.exit({exc.code!r}); the notebook went on without it"
            except BaseException as exc:     # noqa: BLE001 (KeyboardInterrupt, GeneratorExit... all of them)
                status, error = "error", _short_traceback(exc)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        if os.getpid() != MAIN_PID:        # a forked copy of this process: it must not go on
            os._exit(1)
        if job.get("kill_strays"):
            _kill_strays()
        emit(event="end", cell=i, status=status, error=error)
        sys.stdout.flush()
        sys.stderr.flush()

    emit(event="harvest-start")
    _HARVEST_CALL_S = float(job.get("harvest_call_timeout", 10.0))
    for name, value in list(ns.items()):
        code = getattr(value, "__code__", None)
        if isinstance(value, types.FunctionType) and code is not None and code.co_filename.startswith("<cell"):
            ns[name] = _wrap_with_timeout(value, _HARVEST_CALL_S)
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
    emit(event="harvest-end", status=status, error=error)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)      # skip interpreter teardown: atexit hooks and __del__ of student objects


if __name__ == "__main__":
    main(sys.argv[1])
