"""The program that runs *inside* the sandbox: a warm server that forks one process per submission.

``python -I -B -u warm_server.py --serve`` (started by ``coursekit.grading.sandbox.WarmServer``) imports torch,
coursekit, d2l, matplotlib and IPython and loads Fashion-MNIST once, then reads one ``ServerCommand`` per line
on stdin (see ``coursekit.grading.protocol``). For each job it forks; the fork

1. reads the job (``job.json``) while it is still root, and unlinks it: no copy of the student's code stays
   on disk. The hidden inputs and the results file are opened by the server, never by the job's process;
2. opens its output and events files (root-owned: the job cannot replace them, only write through the
   descriptors it holds) and keeps one end of a socket to the server;
3. enters a PID namespace and a mount namespace of its own (``unshare``): the job is process 1 there, so when
   it dies the kernel kills every process it started, whatever their state; it gets its own ``/proc``, its own
   ``/dev/shm`` and ``/tmp`` (tmpfs, gone with the namespace), and the other jobs' folders are hidden;
4. drops to the job's unprivileged uid with the job's resource limits;
5. runs the code cells through IPython's own input transformation (as JupyterLab does: ``%time f()`` runs
   ``f()``, ``!ls`` runs ``ls``), each with its own time limit and the submission's deadline;
6. after the last cell, forks the harvest from its main thread (see "the harvest" below): the server checks
   that process from outside before it hands it the results file, the inputs and the grader's nonce file (the
   nonce is copied from it into each frame by the kernel: it is in no process's memory here, the server's
   included); each question is harvested in a process of its own, and its frame is written with references to
   numpy, json, io and os taken before any cell ran.

Forking a warm process instead of starting Python, torch and d2l for each submission is what makes a class
fast to grade. Nothing a job says is trusted for points: the grader recomputes everything from the arrays.
"""
import _socket
import builtins
import gc
import io
import json
import os
import resource
import select
import signal
import struct
import sys
import time
import traceback
import types

# coursekit from where the grader has it (an editable install may point elsewhere): the folder above the
# package, in which the sandbox shows nothing but the package itself
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from coursekit.grading import protocol  # noqa: E402
from coursekit.grading.protocol import Event, JobSpec, ServerCommand, ServerReply  # noqa: E402

MAIN_PID = os.getpid()
T_START = time.monotonic()
_EVENT_FD = [None]
_MAX_TEXT = protocol.Limits.ERROR_TEXT_CHARS

# The harvest's references, taken at import (before any job, so before any student code ran): a notebook
# that replaces os.write or json.dumps changes nothing the harvest itself uses here.
_OS_WRITE, _OS_PWRITE, _OS_FTRUNCATE, _OS_READ = os.write, os.pwrite, os.ftruncate, os.read
_OS_CLOSE, _OS_LSEEK, _OS_SENDFILE = os.close, os.lseek, os.sendfile
_SOCKET = _socket.socket        # the C type (immutable): a notebook cannot patch its methods
_UNPACK = struct.unpack
_JSON_DUMPS = json.dumps
_BYTES_IO = io.BytesIO
_REFS = None        # numpy's and torch's, set by _preload() in the server


def emit(kind, **fields):
    try:
        _OS_WRITE(_EVENT_FD[0], Event(kind, **fields).to_line())
    except (OSError, TypeError):
        pass


class CellTimeout(BaseException):
    """The cell ran past its time limit."""


def _on_cell_alarm(signum, frame):
    raise CellTimeout()


_HARVEST_CALL_S = None      # the job's Limits.harvest_call_timeout, set from its JobSpec before the harvest runs


def _on_harvest_alarm(signum, frame):
    # An Exception (not BaseException): the harvest's per-call try/except moves on to the next call,
    # and the next call gets its own time.
    signal.setitimer(signal.ITIMER_REAL, _HARVEST_CALL_S)
    raise TimeoutError(f"the call ran past its time limit ({_HARVEST_CALL_S:g} s)")


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


def _cpu_seconds() -> float:
    """CPU time of this job's process since its fork (a forked process starts from zero), its waited-for
    children's included."""
    t = os.times()
    return round(t.user + t.system + t.children_user + t.children_system, 3)


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
    """Kill processes a cell left behind (a fork bomb's children): every process this uid may signal. Only
    ever called under a job's own uid (as root, kill(-1) would kill the whole machine)."""
    if os.getuid() == 0 or os.geteuid() == 0:
        return
    try:
        os.kill(-1, signal.SIGKILL)
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


def _make_shell():
    """An IPython shell (no history, no colours, no GUI): the namespace the cells run in, and the input
    transformation and magics JupyterLab's kernel applies."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    class GradingShell(InteractiveShell):
        def enable_gui(self, gui=None):       # no event loop to hook: figures are drawn off-screen
            return None

    config = Config()
    config.HistoryManager.enabled = False
    config.InteractiveShell.colors = "NoColor"
    config.InteractiveShell.autocall = 0
    return GradingShell.instance(config=config)


_SHELL = [None]     # made once in the server (never runs a cell there): each job's fork starts from a fresh one


def run_job(spec: JobSpec, job_fd: int, kill_strays: bool):
    """Run the cells, then the harvest (in a fork); never returns."""
    sys.path.insert(0, os.getcwd())
    # past RLIMIT_FSIZE a write fails with an OSError in the cell instead of killing the process
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    sys.argv = ["notebook"]
    shell = _SHELL[0] or _make_shell()
    from IPython.display import display
    ns = shell.user_ns
    ns.update({"__name__": "__main__", "__builtins__": builtins, "display": display})
    emit(protocol.READY, seconds=round(time.monotonic() - T_START, 3))
    for i, source in enumerate(spec.cells):
        if i in spec.skip:
            emit(protocol.SKIP, cell=i, error=spec.skip[i])
            continue
        left = spec.cells_deadline - (time.monotonic() - T_START)
        if left <= 0.05:
            emit(protocol.SKIP, cell=i, error="not run: the submission's time ran out before this cell")
            continue
        emit(protocol.START, cell=i)
        t0 = time.monotonic()
        out_before = _output_size()
        status, error = "ok", None
        alarm = min(spec.cell_timeout, left)
        try:
            code = compile(shell.transform_cell(source), f"<cell {i + 1}>", "exec")
        except (SyntaxError, ValueError) as exc:
            status, error = "error", _short_traceback(exc)
        except Exception as exc:        # noqa: BLE001 (IPython could not transform the cell)
            status, error = "error", _short_traceback(exc)
        else:
            signal.signal(signal.SIGALRM, _on_cell_alarm)
            signal.setitimer(signal.ITIMER_REAL, alarm)
            try:
                exec(code, ns)
            except CellTimeout:
                if alarm < spec.cell_timeout:
                    status, error = "timeout", "stopped: the submission's time ran out during this cell"
                else:
                    status, error = "timeout", f"stopped after {spec.cell_timeout:g} s (time limit of a cell)"
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
        if out_before < spec.output_limit_bytes <= _output_size():
            if status != "timeout":
                status, error = "output-limit", (f"printed more than {spec.output_limit_bytes / 2**20:g} MiB of "
                                                 "output; what came after was cut off")
            _silence_output()       # the next cells' prints must not fail on a full output file
        if error and ("Cannot allocate memory" in error or error.startswith("MemoryError")):
            status = "memory"
            first, _, rest = error.partition("\n")
            error = f"{first} (the memory limit is {spec.memory_mb} MiB)\n{rest}".rstrip()
        if kill_strays:
            _kill_strays()
        emit(protocol.END, cell=i, status=status, error=error, seconds=round(time.monotonic() - t0, 3))
        sys.stdout.flush()
        sys.stderr.flush()

    emit(protocol.CELLS_DONE, seconds=round(time.monotonic() - T_START, 3), cpu=_cpu_seconds())
    _harvest_in_fork(spec, ns, job_fd)


# ------------------------------------------------------------------------------------------------ the harvest
#
# The harvest runs in a process forked from this one's main thread after its last cell (H): fork keeps only
# the calling thread, so threads a cell left running are not in it. H asks the server for the results channel
# over the job's socket; the server hands it over (SCM_RIGHTS) only after checking, from outside, that the
# asker is a single-threaded child of the job's process whose main thread is waiting for exactly it, and
# after stopping the job's process (its threads with it) and killing every other process of the job. The
# job's process never holds the results file, the hidden inputs or the nonce's file. The nonce itself is in no
# process's memory here: the grader writes it to a root-only file that the server opens and unlinks before the
# job exists but never reads; H copies it from that file into each frame with sendfile (kernel to kernel).
# Each question is then harvested in a process of its own (C), forked from H: no new threads or processes there
# (RLIMIT_NPROC 0), no frames, object lists or ctypes (an audit hook), no results or nonce descriptor, its own
# time limit, and what it sends back is only its own question's frame (H writes it).

def _harvest_in_fork(spec: JobSpec, ns: dict, job_fd: int):
    """In the job's main thread after its last cell: fork the harvest, wait for it, end the job."""
    pid = None
    for attempt in range(50):
        _reap_children()        # killed strays (a fork bomb's) count against the uid's processes until reaped
        try:
            pid = os.fork()
            break
        except BlockingIOError:     # RLIMIT_NPROC: strays not gone yet
            time.sleep(0.1)
    if pid is None:
        os._exit(4)
    if pid == 0:
        try:
            _harvest_process(spec, ns, job_fd)
        finally:
            os._exit(1)
    while True:
        try:
            os.waitpid(pid, 0)      # the server checks that this thread waits here, for exactly that pid
            break
        except ChildProcessError:
            break
        except InterruptedError:
            continue
    os._exit(0)


def _reap_children():
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return


_GRANTED = b"granted"     # the server's message with the channel's descriptors (nothing secret in it)


def _receive_channel(job_fd: int, wait: float):
    """Ask the server for the results channel; ``(results fd, inputs fd, nonce fd)`` or None if refused."""
    sock = _SOCKET(fileno=job_fd)
    try:
        sock.sendmsg([b"harvest"])
        ready, _, _ = select.select([job_fd], [], [], wait)
        if not ready:
            return None
        message, ancillary, _, _ = sock.recvmsg(len(_GRANTED), _socket.CMSG_SPACE(12))
        fds = []
        for level, kind, data in ancillary:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                fds.extend(_UNPACK(f"{len(data) // 4}i", data[:len(data) - len(data) % 4]))
        if message != _GRANTED or len(fds) != 3:
            return None
        return fds[0], fds[1], fds[2]
    finally:
        sock.close()


def _read_fd(fd: int) -> bytes:
    chunks, offset = [], 0
    while True:
        data = os.pread(fd, 1 << 20, offset)
        if not data:
            return b"".join(chunks)
        chunks.append(data)
        offset += len(data)


def _harvest_process(spec: JobSpec, ns: dict, job_fd: int):
    """H: the only thread of a fork of the job's main thread. Never returns."""
    global _HARVEST_CALL_S
    signal.setitimer(signal.ITIMER_REAL, 0)
    for sig in (signal.SIGALRM, signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)      # the cells' handlers are not the harvest's
    try:
        _libc().prctl(4, 0, 0, 0, 0)            # PR_SET_DUMPABLE 0: no ptrace, no /proc/<pid>/fd from the job's uid
    except Exception:       # noqa: BLE001
        pass
    channel = _receive_channel(job_fd, spec.harvest_grant_timeout)
    if channel is None:
        os._exit(3)
    results_fd, inputs_fd, nonce_fd = channel
    inputs_bytes = _read_fd(inputs_fd)
    _OS_CLOSE(inputs_fd)
    emit(protocol.HARVEST_START, seconds=round(time.monotonic() - T_START, 3), out=_output_size())
    _HARVEST_CALL_S = float(spec.harvest_call_timeout)
    for name, value in list(ns.items()):
        code = getattr(value, "__code__", None)
        if isinstance(value, types.FunctionType) and code is not None and code.co_filename.startswith("<cell"):
            ns[name] = _wrap_with_timeout(value, _HARVEST_CALL_S)
    refs = _REFS
    with refs.np_load(_BYTES_IO(inputs_bytes), allow_pickle=False) as f:
        ns["_ck_inputs"] = {k: refs.np_array(f[k], copy=True) for k in f.files}
    ns["_ck_refs"] = refs
    ns["_ck_caps"] = {"max_elements": spec.harvest_max_elements, "error_chars": spec.harvest_error_chars}
    ns["_ck_per_question"] = lambda plan: _run_questions(plan, spec, nonce_fd, results_fd)
    ns.pop("_ck_outcome", None)
    status, error = "ok", None
    try:
        harvest = compile(spec.harvest, "<harvest>", "exec")
        if "_ck_harvest_main(" in spec.harvest:      # the lab's: H runs each question in a process of its own
            exec(harvest, ns)
        else:       # a harvest of its own (``_ck_outcome = (arrays, meta)``): all of it in one process
            def run_all():
                exec(harvest, ns)
                return ns["_ck_outcome"]
            _run_questions([("", run_all)], spec, nonce_fd, results_fd)
    except BaseException as exc:      # noqa: BLE001
        status, error = "error", "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-_MAX_TEXT:]
    emit(protocol.HARVEST_END, status=status, error=error, seconds=round(time.monotonic() - T_START, 3),
         cpu=_cpu_seconds())
    os._exit(0)      # skip interpreter teardown: atexit hooks and __del__ of student objects


# What graded code may not do (a question's calls; enforced by an audit hook, which cannot be removed): reach
# frames (the harvest's own objects are a frame away), the garbage collector's object lists, raw memory and C
# calls (ctypes), descriptors by number, sockets, threads, trace functions, more audit hooks. Each attempt
# raises in the call that made it (its key fails) and is reported under ``<question>.refused``.
_FRAME_ATTRIBUTES = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame"})
_REFUSED_EVENTS = {"sys._current_frames": "the frames of every thread", "sys.settrace": "a trace function",
                   "sys.setprofile": "a profile function", "sys.addaudithook": "an audit hook",
                   "gc.get_objects": "the garbage collector's object lists",
                   "gc.get_referrers": "the garbage collector's object lists",
                   "gc.get_referents": "the garbage collector's object lists",
                   "_thread.start_new_thread": "a thread", "socket.__new__": "a socket",
                   "os.fork": "a process", "os.forkpty": "a process", "os.posix_spawn": "a process",
                   "subprocess.Popen": "a process", "os.system": "a process"}


def _guard_graded_calls(refused: list):
    def hook(event, args):
        what = _REFUSED_EVENTS.get(event)
        if what is None:
            if event == "object.__getattr__" and len(args) == 2 and args[1] in _FRAME_ATTRIBUTES:
                what = f"a frame ({args[1]})"
            elif event == "sys._getframe" and args and \
                    str(getattr(getattr(args[0], "f_code", None), "co_filename", "<")).startswith("<"):
                what = "a frame (sys._getframe)"
            elif event.startswith("ctypes."):
                what = f"raw memory or C calls ({event})"
            elif event == "open" and args and isinstance(args[0], int):
                what = "a file descriptor by number"
            else:
                return
        if len(refused) < 20:
            refused.append(what)
        raise RuntimeError(f"the grader does not allow {what} in graded calls")
    sys.addaudithook(hook)


def _question_process(question: str, run, results_fd: int, nonce_fd: int, out_fd: int):
    """C: one question's calls of the student's code. Never returns."""
    status = 0
    try:
        _OS_CLOSE(results_fd)       # the reference taken at import: a cell may have replaced os.close
        _OS_CLOSE(nonce_fd)
        if os.getuid() != 0:        # no thread, no process: what the grader traces is all that runs
            resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
        refused = []
        signal.signal(signal.SIGALRM, _on_harvest_alarm)
        _guard_graded_calls(refused)
        signal.setitimer(signal.ITIMER_REAL, _HARVEST_CALL_S)
        arrays, meta = run()
        signal.setitimer(signal.ITIMER_REAL, 0)
        meta = dict(meta)
        if refused:
            meta[f"{question}.refused" if question else "refused"] = sorted(set(refused))
        buf = _BYTES_IO()
        _REFS.np_savez(buf, **{str(k): v for k, v in dict(arrays).items()})
        npz, js = buf.getvalue(), _JSON_DUMPS(dict(meta), sort_keys=True).encode()
    except BaseException as exc:      # noqa: BLE001
        signal.setitimer(signal.ITIMER_REAL, 0)
        npz = b""
        js = _JSON_DUMPS({f"{question}.harvest_error": {"error": f"the harvest's values could not be saved: "
                                                                  f"{exc!r}"[:_MAX_TEXT]}}).encode()
        status = 1
    data = f"{len(npz)} {len(js)}\n".encode() + npz + js
    while data:
        try:
            data = data[_OS_WRITE(out_fd, data):]
        except OSError:
            break
    os._exit(status)


def _read_pipe(fd: int, deadline: float, cap: int) -> tuple[bytes, str]:
    """What comes through ``fd`` until EOF: ``(data, "")``, or ``(data so far, why it stopped)``."""
    chunks, size = [], 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return b"".join(chunks), "time"
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        data = _OS_READ(fd, 1 << 20)
        if not data:
            return b"".join(chunks), ""
        chunks.append(data)
        size += len(data)
        if size > cap:
            return b"", "size"


_NONCE_AT = len(protocol.RESULTS_MAGIC)       # where a frame holds the nonce (hex) ...
_NONCE_HEX = 2 * protocol.NONCE_BYTES           # ... and its length


def _pwrite_all(fd: int, data, offset: int):
    done = 0
    while done < len(data):
        done += _OS_PWRITE(fd, data[done:], offset + done)


def _write_frame(results_fd: int, nonce_fd: int, offset: int, question: str, npz: bytes, js: bytes) -> int:
    """Write one question's frame (``protocol.encode_results``) at ``offset`` of the results file; its length.
    The frame is encoded around a stand-in nonce of zeros, and the grader's nonce (hex) is copied in its place
    from the nonce file by the kernel (sendfile): it never passes through this process's memory, so it is not
    in the memory of the question processes forked from it either."""
    frame = memoryview(protocol.encode_results(bytes(protocol.NONCE_BYTES), npz, js, question))
    if frame[_NONCE_AT:_NONCE_AT + _NONCE_HEX] != b"0" * _NONCE_HEX:
        raise ValueError("the results frame's layout is not the one this harvest writes the nonce into")
    _pwrite_all(results_fd, frame[:_NONCE_AT], offset)
    _OS_LSEEK(results_fd, offset + _NONCE_AT, os.SEEK_SET)
    copied = 0
    while copied < _NONCE_HEX:
        n = _OS_SENDFILE(results_fd, nonce_fd, copied, _NONCE_HEX - copied)
        if n <= 0:
            raise OSError("the grader's nonce file is shorter than a nonce")
        copied += n
    _pwrite_all(results_fd, frame[_NONCE_AT + _NONCE_HEX:], offset + _NONCE_AT + _NONCE_HEX)
    return len(frame)


def _run_questions(plan, spec: JobSpec, nonce_fd: int, results_fd: int):
    """In H: each ``(question, run)`` in a process of its own, its frame appended to the results file."""
    offset = 0
    gc.freeze()     # the collector in each question's process leaves H's objects alone: far fewer copied pages
    for question, run in plan:
        question = str(question)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            _question_process(question, run, results_fd, nonce_fd, w)
        os.close(w)
        data, stopped = _read_pipe(r, time.monotonic() + spec.harvest_question_timeout, spec.max_results_bytes)
        os.close(r)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        header, _, body = data.partition(b"\n")
        try:
            n_npz, n_json = (int(x) for x in header.split())
            ok = not stopped and n_npz >= 0 and n_json >= 0 and len(body) == n_npz + n_json
        except ValueError:
            ok = False
        if ok:
            npz, js = body[:n_npz], body[n_npz:]
        else:
            why = {"time": f"stopped after {spec.harvest_question_timeout:g} s (the time limit of one question's "
                           "calls)",
                   "size": "its values were too large to send back"}.get(stopped, "its values did not come back "
                                                                              "(the process ended)")
            npz, js = b"", _JSON_DUMPS({f"{question}.harvest_error": {"error": why}}).encode()
        offset += _write_frame(results_fd, nonce_fd, offset, question, npz, js)
    return {}, {}


# ----------------------------------------------------------------------------------------- the server

# zipfile and cp437: the harvest's np.savez needs them; IPython: the cells run through it; the rest: what
# DataLoader workers import lazily (a job's uid may be unable to read the standard library)
PRELOAD = ["numpy", "torch", "torch.utils.data", "matplotlib.pyplot", "d2l.torch", "coursekit", "zipfile",
           "encodings.cp437", "IPython", "IPython.core.interactiveshell", "IPython.display", "traitlets.config",
           "matplotlib_inline.backend_inline", "multiprocessing", "multiprocessing.resource_sharer",
           "multiprocessing.popen_fork", "multiprocessing.queues", "multiprocessing.synchronize", "ctypes",
           "torchvision.datasets", "tempfile"]


def _preload():
    """Import what every lab notebook imports, load the data set, take the harvest's references, once."""
    global _REFS
    import importlib
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as exc:       # noqa: BLE001 (a missing optional package: the job imports it or fails)
            print(f"preload of {name} failed: {exc}", file=sys.stderr)
    import numpy
    _REFS = types.SimpleNamespace(np_array=numpy.array, np_asarray=numpy.asarray, np_ndarray=numpy.ndarray,
                                  np_isfinite=numpy.isfinite, np_isnan=numpy.isnan, np_load=numpy.load,
                                  np_savez=numpy.savez, json_dumps=json.dumps)
    try:
        import torch
        torch.set_num_threads(1)
        _REFS.torch_from_numpy = torch.from_numpy
    except Exception:      # noqa: BLE001
        pass
    try:
        _SHELL[0] = _make_shell()
    except Exception as exc:      # noqa: BLE001 (each job then makes its own)
        print(f"IPython shell not preloaded: {exc}", file=sys.stderr)
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


# ------------------------------------------------------------------------- namespaces (Linux, needs root)

CLONE_NEWNS, CLONE_NEWPID = 0x00020000, 0x20000000
CLONE_NEWNET, CLONE_NEWIPC, CLONE_NEWUTS = 0x40000000, 0x08000000, 0x04000000
CLONE_NEWUSER = 0x10000000
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP = 1, 38, 24
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18


def _libc():
    import ctypes
    return ctypes.CDLL(None, use_errno=True)


def _check(ret, what):
    if ret != 0:
        import ctypes
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(src, target, fstype, flags, data=None):
    libc = _libc()
    _check(libc.mount(src.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                      data.encode() if data else None), f"mount {target}")


class PidNamespaces:
    """A new PID namespace for each job, made by the server itself: ``unshare(CLONE_NEWPID)`` before the fork
    (the child is process 1 of the new namespace), then ``setns`` back to its own for the next job. No extra
    process between the server and the job: forking the warm server is the expensive part of a job."""

    def __init__(self):
        self.own = os.open("/proc/self/ns/pid", os.O_RDONLY)

    def fork(self) -> int:
        libc = _libc()
        _check(libc.unshare(CLONE_NEWPID), "unshare(CLONE_NEWPID)")
        pid = -1
        try:
            pid = os.fork()
        finally:
            if pid != 0:        # the server: back to its own namespace, so that the next job gets a new one
                _check(libc.setns(self.own, CLONE_NEWPID), "setns")
        return pid


def _enter_mount_namespace():
    """The job's own mount, network, IPC and host-name namespaces: two jobs share no socket, loopback port,
    abstract Unix socket, System V or POSIX IPC object; a job has no network but its own loopback."""
    _check(_libc().unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS),
           "unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)")
    _mount("none", "/", None, MS_REC | MS_PRIVATE)      # nothing mounted here shows outside
    _loopback_up()


def _enter_user_namespace():
    """Mode userns: a user namespace of the job's own, in which it is uid 0 as it was in the server's
    (``0 0 1``). The kernel (Linux 5.14 and later) counts ``RLIMIT_NPROC`` per user namespace level, so the
    job's processes and threads count against its own limit, not only against the instructor's uid, which
    the grader, the server and every job share. Called after the job's other namespaces are made, so that
    they belong to the server's user namespace (the job has no capability over them, even before it drops
    its own), and before ``RLIMIT_NPROC`` is lowered: the new namespace takes its creator's limit as the
    bound of the level above, where every job's processes count together."""
    _check(_libc().unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
    # its own uid and gid only: what a process without privilege over the server's namespace may map (the
    # gid once setgroups is denied); mapping the server's uid 0 needs CAP_SETFCAP, kept by the server for this
    for name, text in (("setgroups", b"deny"), ("uid_map", b"0 0 1"), ("gid_map", b"0 0 1")):
        fd = os.open(f"/proc/self/{name}", os.O_WRONLY)
        try:
            os.write(fd, text)
        finally:
            os.close(fd)


def _nproc_counted_apart() -> bool:
    """In a fresh user namespace: whether ``RLIMIT_NPROC`` counts only this namespace's tasks (Linux >= 5.14).
    With a limit of 2 a child is allowed only if the count is this process alone, not the uid's every process."""
    resource.setrlimit(resource.RLIMIT_NPROC, (2, 2))
    try:
        pid = os.fork()
    except BlockingIOError:
        return False
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return True


def _loopback_up():
    """Bring up the new network namespace's loopback (down when made): code that talks to itself over
    127.0.0.1 works, within this job only."""
    import fcntl
    import socket
    import struct
    siocsifflags, iff_up, iff_loopback, iff_running = 0x8914, 0x1, 0x8, 0x40
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sh22x", b"lo", iff_up | iff_loopback | iff_running))


def _no_new_privileges(drop_capabilities: bool):
    """``no_new_privs``: no setuid program or file capability gives the job back what it dropped. With
    ``drop_capabilities`` (a job that keeps uid 0 of an unprivileged user namespace, the rootless mode): every
    capability dropped, the bounding set too, so that no program it runs gets one back."""
    libc = _libc()
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    if not drop_capabilities:
        return
    import ctypes
    with open("/proc/sys/kernel/cap_last_cap") as fh:
        last = int(fh.read())
    for cap in range(last + 1):         # needs CAP_SETPCAP, which the job has in its own user namespace
        _check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"prctl(PR_CAPBSET_DROP, {cap})")
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)       # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()                      # effective, permitted, inheritable: all empty
    _check(libc.capset(header, data), "capset")


def _private_mounts(cmd: ServerCommand):
    """This job's own /proc, /dev/shm and /tmp; a tmpfs over the folder it must not see (the other jobs'),
    its own folders bound back into it, and what it must read under /tmp (Python, the venv, coursekit, when
    they live there) bound back read-only."""
    keep = [(path, os.open(path, os.O_PATH | os.O_DIRECTORY), False) for path in cmd.keep]
    keep += [(path, os.open(path, os.O_PATH | os.O_DIRECTORY), True) for path in cmd.keep_ro]
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"size={cmd.shm_mb}m,mode=1777")
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={cmd.tmp_mb}m,mode=1777")
    if cmd.hide:
        os.makedirs(cmd.hide, mode=0o711, exist_ok=True)
        _mount("tmpfs", cmd.hide, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0711")
    for path, fd, read_only in keep:
        os.makedirs(path, mode=0o755 if read_only else 0o711, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        if read_only:
            _mount("none", path, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
        os.close(fd)


def _job_process(cmd: ServerCommand, isolate: bool, own_userns: bool, job_fd: int):
    """In the forked process: become the job (namespaces, uid, limits, folder, output), run it, never return."""
    global MAIN_PID, T_START
    try:
        import resource
        os.setsid()
        try:        # if memory runs out, the kernel kills a job, never the server or the grader
            with open("/proc/self/oom_score_adj", "w") as fh:
                fh.write("1000")
        except OSError:
            pass
        folder = cmd.folder
        # read as root (the file is root's, 0600), then gone: the cells cannot read it. The hidden inputs and
        # the results file are the server's: only the harvest process gets them (see _HarvestChannel)
        with open(f"{folder}/{protocol.JOB_FILE}") as fh:
            spec = JobSpec.from_json(fh.read())
        os.unlink(f"{folder}/{protocol.JOB_FILE}")
        flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW
        out = os.open(f"{folder}/{protocol.OUTPUT_FILE}", flags)
        ev = os.open(f"{folder}/{protocol.EVENTS_FILE}", flags)
        if isolate:
            _enter_mount_namespace()
            _private_mounts(cmd)
            if own_userns:
                _enter_user_namespace()
        for name, value in cmd.rlimits.items():
            which = getattr(resource, name)
            hard = resource.getrlimit(which)[1]
            if hard != resource.RLIM_INFINITY:      # not raised (only root may): a lower limit inherited holds
                value = min(value, hard)
            resource.setrlimit(which, (value, value))
        if cmd.uid is not None:
            os.setgroups([])
            os.setgid(cmd.uid)
            os.setuid(cmd.uid)      # drops every capability: from here on the process is an ordinary user
            if not isolate:
                # Without CAP_SYS_PTRACE (a container's root) the server reads this process's
                # /proc/<pid>/task/<pid>/syscall (is the main thread waiting for its harvest?) only as a
                # same-uid parent of a dumpable process. The harvest itself makes itself undumpable again.
                _libc().prctl(4, 1, 0, 0, 0)    # PR_SET_DUMPABLE 1
        _no_new_privileges(drop_capabilities=cmd.uid is None and isolate)
        from coursekit.grading import seccomp_filter
        program = seccomp_filter.job_filter(block_network=not isolate)     # no network namespace: no network
        if program is not None:
            seccomp_filter.install(program)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        for fd in (null, out):
            os.close(fd)
        _EVENT_FD[0] = ev
        os.chdir(f"{folder}/{protocol.WORK_DIR}")
        os.environ.clear()
        os.environ.update(cmd.env)
        import tempfile
        tempfile.tempdir = None         # the server's cached choice; this job's is its own /tmp ($TMPDIR)
        MAIN_PID, T_START = os.getpid(), time.monotonic()
        _reseed()
        run_job(spec, job_fd, kill_strays=cmd.uid is not None)
    except BaseException as exc:        # noqa: BLE001
        try:
            os.write(2, f"grading process failed to start: {exc!r}\n".encode())
        finally:
            os._exit(70)
    os._exit(0)


_PROBE_FAILURES = {2: "a job cannot have its own PID and mount namespaces",
                   3: "a job's own user namespace does not give it a process limit of its own (the kernel counts "
                      "RLIMIT_NPROC over every process of the instructor's uid; Linux 5.14 or later counts it "
                      "per user namespace)"}


def _namespaces_work(namespaces: PidNamespaces, own_userns: bool) -> str:
    """'' if a forked child can be process 1 of its own PID namespace, with its own mounts (and with
    ``own_userns``, a user namespace in which its process limit counts only its own tasks), here; else why not."""
    why_r, why_w = os.pipe()
    try:
        pid = namespaces.fork()
    except OSError as exc:
        os.close(why_r)
        os.close(why_w)
        return str(exc)
    if pid == 0:
        os.close(why_r)
        try:
            _enter_mount_namespace()
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            if os.getpid() != 1:
                os._exit(2)
            if own_userns:
                _enter_user_namespace()
                if not _nproc_counted_apart():
                    os._exit(3)
            os._exit(0)
        except BaseException as exc:        # noqa: BLE001
            os.write(why_w, str(exc).encode())
            os._exit(1)
    os.close(why_w)
    with os.fdopen(why_r, "rb") as fh:
        said = fh.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return "" if code == 0 else _PROBE_FAILURES.get(code, said or "a job cannot have its own namespaces")


WAIT4 = {"x86_64": 61, "aarch64": 260, "ppc64le": 114, "s390x": 114}.get(os.uname().machine)


def _proc_status(pid: int) -> dict:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return dict(line.rstrip("\n").split(":\t", 1) for line in fh if ":\t" in line)
    except (OSError, ValueError):
        return {}


class _HarvestChannel:
    """The server's side of one job's harvest: the socket its harvest process asks on (the job holds the other
    end), the results file, the hidden inputs and the grader's nonce file (opened here, never by the job's
    process; the nonce file is never read here either: no job forked from this process has the nonce in its
    memory), and a log of what the server decided (``protocol.SERVER_EVENTS_FILE``, which the grader reads)."""

    def __init__(self, cmd: ServerCommand):
        self.cmd, self.job_pid, self.harvester, self.pidfd, self.pending = cmd, None, None, None, {}
        self.job_pidfd = None       # readable when the job's process ends: the server reaps it at once
        self.closed = False
        self.sock, self.job_end = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        self.sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_PASSCRED, 1)
        folder = cmd.folder
        self.results = os.open(f"{folder}/{protocol.RESULTS_FILE}", os.O_WRONLY | os.O_NOFOLLOW)
        self.inputs = os.open(f"{folder}/{protocol.INPUTS_FILE}", os.O_RDONLY | os.O_NOFOLLOW)
        os.unlink(f"{folder}/{protocol.INPUTS_FILE}")
        self.nonce_fd = os.open(f"{folder}/{protocol.NONCE_FILE}", os.O_RDONLY | os.O_NOFOLLOW)
        os.unlink(f"{folder}/{protocol.NONCE_FILE}")
        self.log_fd = os.open(f"{folder}/{protocol.SERVER_EVENTS_FILE}", os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
        # gone by name before the job exists (the grader reads both through descriptors of its own): in mode
        # userns the job is their owner (uid 0 of the namespace) and could otherwise open them to forge
        os.unlink(f"{folder}/{protocol.RESULTS_FILE}")
        os.unlink(f"{folder}/{protocol.SERVER_EVENTS_FILE}")

    def server_fds(self):
        return [self.sock.fileno(), self.results, self.inputs, self.nonce_fd, self.log_fd] + \
            [fd for fd in (self.pidfd, self.job_pidfd) if fd is not None]

    def log(self, kind, **fields):
        try:
            os.write(self.log_fd, (json.dumps(dict(kind=kind, **fields)) + "\n").encode())
        except OSError:
            pass

    def close(self):
        for fd in self.server_fds():
            try:
                os.close(fd)
            except OSError:
                pass
        self.sock.detach()

    def on_request(self):
        """A message on the socket: who sent it (the kernel says, SO_PASSCRED) is checked in ``check``."""
        try:
            message, ancillary, _, _ = self.sock.recvmsg(64, _socket.CMSG_SPACE(12))
        except OSError:
            message, ancillary = b"", []
        pid = None
        for level, kind, data in ancillary:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_CREDENTIALS and len(data) >= 12:
                pid = struct.unpack("3i", data[:12])[0]
        if not message and pid is None:     # every end the job held is closed: nothing more will come
            self.closed = True
            return
        if pid is None or self.harvester is not None or len(self.pending) >= 16:
            self.refuse(pid, "a request after the harvest was handed its channel" if self.harvester
                        else "a request without credentials, or too many")
            return
        self.pending.setdefault(pid, time.monotonic())
        self.check()

    def refuse(self, pid, why):
        self.log("harvest-refused", pid=pid, why=why)
        if pid and pid != self.job_pid and self.cmd.uid is not None and \
                _proc_status(pid).get("Uid", "").split()[:1] == [str(self.cmd.uid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def why_not(self, pid) -> str:
        """'' if ``pid`` is the job's harvest: a single-threaded child of the job's process, whose main thread
        is blocked waiting for exactly that child (what ``_harvest_in_fork`` does after the last cell)."""
        status = _proc_status(pid)
        if status.get("PPid") != str(self.job_pid):
            return "the asker is not a child of the job's main process"
        if status.get("Threads") != "1":
            return "the asker has more than one thread"
        if self.cmd.uid is not None and status.get("Uid", "").split()[:1] != [str(self.cmd.uid)]:
            return "the asker runs under another uid"
        inner = (status.get("NSpid") or str(pid)).split()[-1]
        call = _main_thread_syscall(self.job_pid, self.cmd.uid)
        if WAIT4 is None:
            return ""
        if len(call) < 2 or call[0] != str(WAIT4) or int(call[1], 16) != int(inner):
            return "the job's main thread is not waiting for the asker: its cells had not ended"
        return ""

    def check(self):
        """Grant the pending request that checks out; refuse one that has not for ``grant_check_s`` seconds
        (the main thread may not be in waitpid yet), and every other one once one is granted."""
        for pid, since in list(self.pending.items()):
            if self.harvester is not None:
                break
            why = self.why_not(pid)
            if why and time.monotonic() - since < self.cmd.grant_check_s:
                continue
            del self.pending[pid]
            if why:
                self.refuse(pid, why)
            else:
                self.grant(pid)
        if self.harvester is not None:
            for pid in list(self.pending):
                del self.pending[pid]
                self.refuse(pid, "another process was the harvest")

    def grant(self, pid):
        try:
            os.kill(self.job_pid, signal.SIGSTOP)       # the job's process, every thread of it, stops
        except OSError:
            pass
        killed = _kill_uid_except(self.cmd.uid, (self.job_pid, pid)) if self.cmd.uid is not None else []
        # no thread or process of the job left to take the message
        _wait_settled(self.job_pid, killed, protocol.Limits.HARVEST_GRANT_SETTLE_TIMEOUT)
        try:
            self.pidfd = os.pidfd_open(pid)
            self.sock.sendmsg([_GRANTED], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                                            struct.pack("3i", self.results, self.inputs, self.nonce_fd))])
        except OSError as exc:
            self.log("harvest-refused", pid=pid, why=f"the channel could not be handed over: {exc}")
            return
        self.harvester = pid
        self.log("harvest-granted", pid=pid)

    def on_harvest_exit(self):
        """The harvest ended: the job is over (its stopped process and what is left of it are killed)."""
        self.log("harvest-exit", pid=self.harvester)
        os.close(self.pidfd)
        self.pidfd = None
        try:
            os.kill(self.job_pid, signal.SIGKILL)
        except OSError:
            pass


def _main_thread_syscall(job_pid: int, uid) -> list:
    """The fields of /proc/<job>/task/<job>/syscall ([] where unreadable). That file needs ptrace access: root
    has it through CAP_SYS_PTRACE, a container's root (Docker's default capabilities) has not, and then reads it
    as the job's own uid (setfsuid/setfsgid, this thread only, restored at once) from the job's parent."""
    path = f"/proc/{job_pid}/task/{job_pid}/syscall"
    try:
        with open(path) as fh:
            return fh.read().split()
    except PermissionError:
        if uid is None:
            return []
    except OSError:
        return []
    libc = _libc()
    old_gid, old_uid = libc.setfsgid(uid), libc.setfsuid(uid)
    try:
        with open(path) as fh:
            return fh.read().split()
    except OSError:
        return []
    finally:
        libc.setfsuid(old_uid)
        libc.setfsgid(old_gid)


def _kill_uid_except(uid: int, keep) -> list:
    killed = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in keep:
            if _proc_status(int(name)).get("Uid", "").split()[:1] == [str(uid)]:
                try:
                    os.kill(int(name), signal.SIGKILL)
                    killed.append(int(name))
                except OSError:
                    pass
    return killed


def _wait_settled(stopped_pid: int, killed, timeout: float):
    """Until every thread of ``stopped_pid`` is stopped and every pid of ``killed`` dead (or ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [_proc_status(pid).get("State", "Z")[:1] for pid in killed]
        try:
            tasks = os.listdir(f"/proc/{stopped_pid}/task")
        except OSError:
            tasks = []
        states += [_proc_status(f"{stopped_pid}/task/{tid}").get("State", "T")[:1] for tid in tasks]
        if all(state in "ZXTt" for state in states):
            return
        time.sleep(0.005)


def _die_with_the_grader():
    """SIGKILL when the process that started this one (the grader's thread, or bwrap) ends: set here, not in a
    ``preexec_fn`` (which is unsafe in the grader's threaded process)."""
    _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    started_by = os.environ.get("COURSEKIT_GRADER_PID", "")
    if started_by.isdigit() and os.getppid() != int(started_by):
        os._exit(1)         # it ended before the line above: nothing to serve


def serve():
    _die_with_the_grader()
    isolate = os.geteuid() == 0 and os.environ.get("COURSEKIT_SANDBOX_ISOLATE") == "1"
    own_userns = isolate and os.environ.get("COURSEKIT_JOB_USERNS") == "1"     # mode userns
    _preload()
    out = os.dup(1)
    os.dup2(2, 1)       # stray prints from the server go to its stderr, not into the job protocol

    def report(reply: ServerReply):
        os.write(out, reply.to_line())

    namespaces = None
    if isolate:
        try:
            namespaces = PidNamespaces()
            why = _namespaces_work(namespaces, own_userns)
        except OSError as exc:
            why = str(exc)
        if why:
            report(ServerReply("failed", job_id=why))
            return
    jobs = {}
    channels = {}       # job pid -> _HarvestChannel
    report(ServerReply("ready", seconds=round(time.monotonic() - T_START, 3)))
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
            channel = channels.pop(pid, None)
            if channel is not None:
                channel.close()
            if job is not None:
                report(ServerReply("exit", job_id=job, code=os.waitstatus_to_exitcode(status)))
        watched = {0: None}
        for channel in channels.values():
            channel.check()
            if not channel.closed:
                watched[channel.sock.fileno()] = (channel, channel.on_request)
            if channel.pidfd is not None:
                watched[channel.pidfd] = (channel, channel.on_harvest_exit)
            if channel.job_pidfd is not None:      # the job ended: reaped and reported at the loop's top
                watched[channel.job_pidfd] = (channel, lambda: None)
        # a request for the results channel that does not check out yet (the job's main thread is on its way
        # to waiting for its harvest) is checked again soon; otherwise only a descriptor wakes the server
        waiting = any(channel.pending for channel in channels.values())
        ready, _, _ = select.select(list(watched), [], [], 0.005 if waiting else 0.05)
        for fd in ready:
            if fd and watched.get(fd):
                watched[fd][1]()
        if 0 not in ready:
            continue
        data = os.read(0, 65536)
        if not data:
            return
        buf += data
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            doomed = protocol.parse_kill_line(line)
            if doomed is not None:      # its pid is an unreaped child of this process: never a recycled one
                for pid, job in jobs.items():
                    if job == doomed:
                        os.kill(pid, signal.SIGKILL)
                continue
            cmd = ServerCommand.from_line(line)
            try:
                channel = _HarvestChannel(cmd)
            except OSError as exc:
                print(f"job {cmd.job_id}: its files could not be opened: {exc}", file=sys.stderr)
                report(ServerReply("exit", job_id=cmd.job_id, code=70))
                continue
            pid = namespaces.fork() if namespaces else os.fork()
            if pid == 0:
                os.close(out)
                job_fd = channel.job_end.detach()
                for other in list(channels.values()) + [channel]:     # the server's descriptors, every job's
                    other.close()
                _job_process(cmd, isolate, own_userns, job_fd)
            channel.job_end.close()
            channel.job_pid = pid
            try:
                channel.job_pidfd = os.pidfd_open(pid)
            except OSError:         # no pidfds (Linux < 5.3): the job's end is seen within the select's timeout
                pass
            channels[pid] = channel
            jobs[pid] = cmd.job_id
            report(ServerReply("started", job_id=cmd.job_id, pid=pid))


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        sys.exit("usage: warm_server.py --serve   (started by coursekit.grading.sandbox.WarmServer)")
