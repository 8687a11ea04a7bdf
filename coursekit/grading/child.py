"""The program that runs *inside* the sandbox: a warm server that forks one process per submission.

``python -I -B -u child.py --serve`` (started by ``coursekit.grading.sandbox.Zygote``) imports torch,
coursekit, d2l, matplotlib and IPython and loads Fashion-MNIST once, then reads one ``ServerCommand`` per line
on stdin (see ``coursekit.grading.protocol``). For each job it forks; the fork

1. reads the job (``job.json``, ``inputs.npz``) while it is still root, and unlinks both: no copy of the
   student's code or of the hidden inputs stays on disk, and the cells cannot read them;
2. opens its output, events and results files and the control FIFO (all root-owned: the job cannot replace
   them, only write through the descriptors it holds);
3. enters a PID namespace and a mount namespace of its own (``unshare``): the job is process 1 there, so when
   it dies the kernel kills every process it started, whatever their state; it gets its own ``/proc``, its own
   ``/dev/shm`` and ``/tmp`` (tmpfs, gone with the namespace), and the other jobs' folders are hidden;
4. drops to the job's unprivileged uid with the job's resource limits;
5. runs the code cells through IPython's own input transformation (as JupyterLab does: ``%time f()`` runs
   ``f()``, ``!ls`` runs ``ls``), each with its own time limit and the submission's deadline;
6. after the last cell, waits for the grader's nonce on the control FIFO, runs the harvest with references
   to numpy, json and io taken before any cell ran, and writes the results frame carrying that nonce.

Forking a warm process instead of starting Python, torch and d2l for each submission is what makes a class
fast to grade. Nothing a job says is trusted for points: the grader recomputes everything from the arrays.
"""
import builtins
import io
import json
import os
import select
import signal
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
_MAX_TEXT = 1500

# The harvest's references, taken at import (before any job, so before any student code ran): a notebook
# that replaces os.write or json.dumps changes nothing the harvest itself uses here.
_OS_WRITE, _OS_PWRITE, _OS_FTRUNCATE, _OS_READ = os.write, os.pwrite, os.ftruncate, os.read
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


_HARVEST_CALL_S = 10.0


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


def _wait_for_nonce(ctl_fd, timeout: float) -> bytes | None:
    """The grader's nonce (hex line) from the control FIFO, or None if none came."""
    want = protocol.NONCE_BYTES * 2 + 1
    buf, deadline = b"", time.monotonic() + timeout
    while len(buf) < want:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([ctl_fd], [], [], left)
        if not ready:
            return None
        data = _OS_READ(ctl_fd, want - len(buf))
        if not data:
            time.sleep(0.01)        # no writer yet
            continue
        buf += data
    try:
        return bytes.fromhex(buf.decode().strip())
    except ValueError:
        return None


def run_job(spec: JobSpec, inputs_bytes: bytes, results_fd: int, ctl_fd: int, kill_strays: bool):
    """Run the cells, then the harvest; never returns."""
    global _HARVEST_CALL_S
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
    nonce = _wait_for_nonce(ctl_fd, 60.0)
    if nonce is None:
        os._exit(3)
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
    ns.pop("_ck_outcome", None)
    signal.signal(signal.SIGALRM, _on_harvest_alarm)
    signal.setitimer(signal.ITIMER_REAL, _HARVEST_CALL_S)
    status, error, arrays, meta = "ok", None, {}, {}
    try:
        exec(compile(spec.harvest, "<harvest>", "exec"), ns)
        arrays, meta = ns["_ck_outcome"]
    except BaseException as exc:      # noqa: BLE001
        status, error = "error", "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-_MAX_TEXT:]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if os.getpid() != MAIN_PID:
        os._exit(1)
    try:
        buf = _BYTES_IO()
        refs.np_savez(buf, **{str(k): v for k, v in dict(arrays).items()})
        frame = protocol.encode_results(nonce, buf.getvalue(), _JSON_DUMPS(dict(meta), sort_keys=True).encode())
    except BaseException as exc:      # noqa: BLE001
        status, error = "error", f"the harvest's values could not be saved: {exc!r}"[:_MAX_TEXT]
        frame = protocol.encode_results(nonce, b"", b"{}")
    _OS_FTRUNCATE(results_fd, 0)
    _OS_PWRITE(results_fd, frame, 0)
    emit(protocol.HARVEST_END, status=status, error=error, seconds=round(time.monotonic() - T_START, 3),
         cpu=_cpu_seconds())
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)      # skip interpreter teardown: atexit hooks and __del__ of student objects


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
    for cap in range(last + 1):         # needs CAP_SETPCAP, which the rootless server keeps for this
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


def _job_process(cmd: ServerCommand, isolate: bool):
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
        # read as root (the files are root's, 0600), then gone: the cells can read neither
        with open(f"{folder}/{protocol.JOB_FILE}") as fh:
            spec = JobSpec.from_json(fh.read())
        with open(f"{folder}/{protocol.INPUTS_FILE}", "rb") as fh:
            inputs_bytes = fh.read()
        for name in (protocol.JOB_FILE, protocol.INPUTS_FILE):
            os.unlink(f"{folder}/{name}")
        flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW
        out = os.open(f"{folder}/{protocol.OUTPUT_FILE}", flags)
        ev = os.open(f"{folder}/{protocol.EVENTS_FILE}", flags)
        results = os.open(f"{folder}/{protocol.RESULTS_FILE}", os.O_WRONLY | os.O_NOFOLLOW)
        ctl = os.open(f"{folder}/{protocol.CONTROL_FIFO}", os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        if isolate:
            _enter_mount_namespace()
            _private_mounts(cmd)
        for name, value in cmd.rlimits.items():
            resource.setrlimit(getattr(resource, name), (value, value))
        if cmd.uid is not None:
            os.setgroups([])
            os.setgid(cmd.uid)
            os.setuid(cmd.uid)      # drops every capability: from here on the process is an ordinary user
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
        run_job(spec, inputs_bytes, results, ctl, kill_strays=cmd.uid is not None)
    except BaseException as exc:        # noqa: BLE001
        try:
            os.write(2, f"grading process failed to start: {exc!r}\n".encode())
        finally:
            os._exit(70)
    os._exit(0)


def _namespaces_work(namespaces: PidNamespaces) -> str:
    """'' if a forked child can be process 1 of its own PID namespace, with its own mounts, here."""
    try:
        pid = namespaces.fork()
    except OSError as exc:
        return str(exc)
    if pid == 0:
        try:
            _enter_mount_namespace()
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            os._exit(0 if os.getpid() == 1 else 2)
        except BaseException as exc:        # noqa: BLE001
            os.write(2, f"{exc}\n".encode())
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return "" if os.waitstatus_to_exitcode(status) == 0 else "a job cannot have its own PID and mount namespaces"


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
    _preload()
    out = os.dup(1)
    os.dup2(2, 1)       # stray prints from the server go to its stderr, not into the job protocol

    def report(reply: ServerReply):
        os.write(out, reply.to_line())

    namespaces = None
    if isolate:
        try:
            namespaces = PidNamespaces()
            why = _namespaces_work(namespaces)
        except OSError as exc:
            why = str(exc)
        if why:
            report(ServerReply("failed", job_id=why))
            return
    jobs = {}
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
            if job is not None:
                report(ServerReply("exit", job_id=job, code=os.waitstatus_to_exitcode(status)))
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
            doomed = protocol.parse_kill_line(line)
            if doomed is not None:      # its pid is an unreaped child of this process: never a recycled one
                for pid, job in jobs.items():
                    if job == doomed:
                        os.kill(pid, signal.SIGKILL)
                continue
            cmd = ServerCommand.from_line(line)
            pid = namespaces.fork() if namespaces else os.fork()
            if pid == 0:
                os.close(out)
                _job_process(cmd, isolate)
            jobs[pid] = cmd.job_id
            report(ServerReply("started", job_id=cmd.job_id, pid=pid))


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        sys.exit("usage: child.py --serve   (started by coursekit.grading.sandbox.Zygote)")
