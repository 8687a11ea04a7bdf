"""Run an untrusted command in a sandbox: a process tree of its own, a folder of its own, limits.

Isolation, the strongest this machine allows (``isolation_mode()`` says which):

``"bwrap"``  (root with bubblewrap) a mount namespace in which only the system (``/usr``, ``/etc``),
    Python, the virtual environment, the ``coursekit`` package and the dataset are visible, read-only,
    plus the work folder (read-write) and a small private ``/tmp``; no network, its own process
    namespace; the command runs as an unprivileged uid with no capabilities. The repository (solutions,
    hidden tests) and the grader's output folder do not exist in there.
``"uid"``    (root without bubblewrap) the command drops to an unprivileged uid; the grader's own folders
    must be unreadable to it (0700), which ``check_unreadable`` verifies.
``"none"``   (not root, no bubblewrap) a plain subprocess with limits only. Good for a student's own
    machine, not for grading untrusted code.

Limits on every run: wall-clock time, memory (``RLIMIT_DATA`` per process and a watchdog on the resident
memory of the whole sandbox), number of processes (``RLIMIT_NPROC`` under the sandbox's own uid), size of
any file written (``RLIMIT_FSIZE``), output size (what is kept, and a ceiling that ends the run). A run
that hits a limit is killed with every process it started.
"""
from __future__ import annotations

import fcntl
import os
import pwd
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

SANDBOX_UID_BASE = 61000    # uids SANDBOX_UID_BASE .. +255: one per sandbox running at the same time
SANDBOX_UID_SLOTS = 256
INSIDE_WORKDIR = "/submission"
LOCK_DIR = Path("/run/coursekit-sandbox") if os.geteuid() == 0 else None


@dataclass(frozen=True)
class Limits:
    """What one submission may use. Times in seconds, sizes in MiB (KiB for the kept output)."""
    cell_timeout: float = 60.0          # one notebook cell
    submission_timeout: float = 300.0   # the whole submission, every attempt together
    harvest_timeout: float = 60.0       # the calls that collect the values to grade
    memory_mb: int = 3072               # resident memory of the whole sandbox; also RLIMIT_DATA
    max_processes: int = 64             # processes and threads of the sandbox's uid
    max_file_mb: int = 64               # largest file it may write
    max_output_kb: int = 64             # output kept for the feedback (head and tail)
    max_output_total_mb: int = 16       # output beyond this ends the run
    max_restarts: int = 4               # fresh processes after a cell that killed its process

    def __post_init__(self):
        for name in ("cell_timeout", "submission_timeout", "harvest_timeout", "memory_mb", "max_processes",
                     "max_file_mb", "max_output_kb", "max_output_total_mb"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Limits.{name} must be positive, got {getattr(self, name)!r}")
        if self.max_restarts < 0:
            raise ValueError(f"Limits.max_restarts must be >= 0, got {self.max_restarts!r}")


@dataclass
class RunOutcome:
    """How a sandboxed run ended."""
    returncode: int | None
    killed_for: str | None          # "timeout", "memory", "output" or a reason given by ``watch``; None if it ended
    output: str                     # stdout+stderr, head and tail kept
    output_bytes: int               # how much it wrote in all
    events: list = field(default_factory=list)   # raw lines from the event channel (untrusted)
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0


def is_root() -> bool:
    return os.geteuid() == 0


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


_MODE_CACHE: dict = {}


def isolation_mode() -> str:
    """``"bwrap"``, ``"uid"`` or ``"none"``: see the module's docstring. Checked once by running bwrap."""
    if "mode" in _MODE_CACHE:
        return _MODE_CACHE["mode"]
    mode = "none"
    if is_root():
        mode = "uid"
        bw = bwrap_path()
        if bw:
            probe = subprocess.run([bw, "--ro-bind", "/", "/", "--unshare-pid", "--unshare-net", "--die-with-parent",
                                    "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--", "true"],
                                   capture_output=True, timeout=30)
            if probe.returncode == 0:
                mode = "bwrap"
            else:
                _MODE_CACHE["why_not_bwrap"] = probe.stderr.decode(errors="replace").strip()
    elif bwrap_path():
        mode = "none"
    _MODE_CACHE["mode"] = mode
    return mode


def describe_isolation() -> str:
    mode = isolation_mode()
    if mode == "bwrap":
        return "bubblewrap namespace, unprivileged uid, no network"
    if mode == "uid":
        why = _MODE_CACHE.get("why_not_bwrap") or "bwrap is not installed"
        return f"unprivileged uid only ({why}); grader folders must be 0700"
    return "none: not root and no bubblewrap; student code can read what this user can read"


class UidSlot:
    """An unprivileged uid that no other running sandbox uses (a lock file per uid, held while in use)."""

    def __init__(self):
        self.uid = None
        self._fd = None

    def __enter__(self):
        if not is_root():
            return self
        LOCK_DIR.mkdir(mode=0o700, exist_ok=True)
        start = os.getpid() % SANDBOX_UID_SLOTS
        for k in range(SANDBOX_UID_SLOTS):
            uid = SANDBOX_UID_BASE + (start + k) % SANDBOX_UID_SLOTS
            fd = os.open(LOCK_DIR / f"uid-{uid}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.uid, self._fd = uid, fd
            _kill_uid(uid)      # leftovers of a grader that was killed
            return self
        raise RuntimeError("no free sandbox uid: 256 sandboxes are running already")

    def __exit__(self, *exc):
        if self._fd is not None:
            _kill_uid(self.uid)
            os.close(self._fd)
            self._fd = None


# ---------------------------------------------------------------- processes seen from outside

def _proc_table():
    """pid -> (uid, ppid, rss_kib) for every process, read from /proc."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as fh:
                text = fh.read().decode(errors="replace")
        except OSError:
            continue
        uid = ppid = rss = 0
        for line in text.splitlines():
            if line.startswith("Uid:"):
                uid = int(line.split()[1])
            elif line.startswith("PPid:"):
                ppid = int(line.split()[1])
            elif line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        table[int(name)] = (uid, ppid, rss)
    return table


def _tree_pids(table, root_pid, uid):
    """The sandbox's processes: those of its uid (if it has one), else the descendants of root_pid."""
    if uid is not None:
        return {pid for pid, (u, _, _) in table.items() if u == uid}
    children = {}
    for pid, (_, ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root_pid]
    while todo:
        pid = todo.pop()
        if pid in table and pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def _pss_kib(pid) -> int:
    """Proportional set size: pages shared by forked copies count once in all, not once per copy."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh.read().decode(errors="replace").splitlines():
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _sandbox_memory_mb(root_pid, uid, limit_mb) -> float:
    """Memory of the sandbox's processes in MiB: the resident size, or the proportional size when the
    resident sum is over the limit (forked copies share most of their pages)."""
    table = _proc_table()
    pids = [p for p in _tree_pids(table, root_pid, uid) if p != root_pid]
    rss = sum(table[p][2] for p in pids) / 1024
    if rss <= limit_mb or len(pids) <= 1:
        return rss
    return sum(_pss_kib(p) for p in pids) / 1024


def _kill_uid(uid):
    """SIGKILL every process of a sandbox uid, until none is left (a fork bomb keeps forking meanwhile)."""
    if uid is None or uid < SANDBOX_UID_BASE:
        return
    for _ in range(50):
        pids = _tree_pids(_proc_table(), None, uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)


# ---------------------------------------------------------------- building the command

def _ancestors(path: Path):
    parts = path.parts
    return [Path(*parts[:i]) for i in range(2, len(parts))]


def readable_paths(extra=()) -> list[Path]:
    """What the sandbox must see read-only: Python, the venv, the coursekit package, the dataset."""
    import coursekit
    paths = [Path(sys.base_prefix), Path(sys.prefix), Path(sys.executable).resolve().parent.parent,
             Path(coursekit.__file__).resolve().parent]
    try:
        from coursekit.data import find_data_dir
        data_dir = find_data_dir()
        if data_dir is not None:
            paths.append(Path(data_dir).resolve())
    except Exception:       # no data is fine: the questions that need it fail with a clear error
        pass
    paths.extend(Path(p).resolve() for p in extra)
    system = (Path("/usr"), Path("/etc"))
    out = []
    for p in paths:
        p = p.resolve()
        if not p.exists() or any(p == s or s in p.parents for s in system) or p == Path("/"):
            continue
        if p not in out:
            out.append(p)
    # a path inside another one is bound with it
    return [p for p in out if not any(q != p and q in p.parents for q in out)]


def bwrap_command(argv, workdir: Path, uid: int, limits: Limits, ro_paths) -> list[str]:
    cmd = [bwrap_path(),
           "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc",
           "--proc", "/proc", "--dev", "/dev",
           "--size", str(256 << 20), "--perms", "1777", "--tmpfs", "/tmp"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        p = Path("/") / name
        if p.is_symlink():
            cmd += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            cmd += ["--ro-bind", str(p), str(p)]
    made = {Path("/usr"), Path("/etc"), Path("/tmp"), Path("/proc"), Path("/dev")}
    for p in ro_paths:
        for a in _ancestors(p):
            if a not in made:      # bwrap would make them 0700, which the uid could not cross
                cmd += ["--perms", "0755", "--dir", str(a)]
                made.add(a)
        cmd += ["--ro-bind", str(p), str(p)]
        made.add(p)
    cmd += ["--bind", str(workdir), INSIDE_WORKDIR, "--chdir", INSIDE_WORKDIR,
            "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session",
            "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--",
            shutil.which("setpriv") or "/usr/bin/setpriv",
            f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all",
            "--"]
    return cmd + list(argv)


def _child_setup(limits: Limits, uid: int | None, mode: str):
    """Runs in the forked child before exec: limits, then (mode "uid") the unprivileged uid."""
    def setup():
        os.setsid()
        mb = 1 << 20
        # RLIMIT_AS would break importing a CUDA build of torch (it maps large virtual areas); DATA does not.
        data = max(limits.memory_mb, 1536) * mb
        resource.setrlimit(resource.RLIMIT_DATA, (data, data))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.max_file_mb * mb, limits.max_file_mb * mb))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        cpu = int(limits.submission_timeout) + 30
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
        if uid is not None:
            # NPROC counts per uid; root ignores it, so it bites only after the uid switch
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))
        if mode == "uid":
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        try:        # die with the grader
            import ctypes
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)      # PR_SET_PDEATHSIG
        except Exception:
            pass
    return setup


def check_unreadable(paths, uid: int) -> list[str]:
    """Paths among ``paths`` that user ``uid`` could read (mode "uid" relies on permissions)."""
    readable = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            continue
        probe = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "ls", str(p)],
                               capture_output=True)
        if probe.returncode == 0:
            readable.append(str(p))
    return readable


def sandbox_env(extra: dict | None = None, workdir_inside: str = INSIDE_WORKDIR) -> dict:
    """A clean environment: nothing of the grader's leaks in, one thread, no GPU, a headless matplotlib."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir_inside,
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp" if isolation_mode() == "bwrap" else workdir_inside,
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": f"{workdir_inside}/.config/matplotlib",
        "XDG_CACHE_HOME": f"{workdir_inside}/.cache",
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONHASHSEED": "0",
    }
    if os.environ.get("COURSEKIT_DATA"):
        env["COURSEKIT_DATA"] = os.environ["COURSEKIT_DATA"]
    env.update(extra or {})
    return env


def run(argv, workdir, *, limits: Limits, env: dict, timeout: float, ro_paths=(),
        watch: Callable[[list, float], str | None] | None = None, uid: int | None = None) -> RunOutcome:
    """Run ``argv`` in the sandbox with ``workdir`` as its folder and current directory.

    ``argv[0]`` is a path that exists inside the sandbox too (e.g. the venv's python). The child gets a pipe
    for events as the file descriptor named by ``$COURSEKIT_EVENT_FD``; ``watch(events, elapsed)`` is called
    as they come and may return a reason to kill the run. Every process of the run is gone when this returns.
    """
    workdir = Path(workdir)
    mode = isolation_mode()
    if mode in ("bwrap", "uid") and uid is None:
        raise ValueError("a sandbox uid is needed as root (use UidSlot)")
    if mode != "none":
        os.chown(workdir, uid, uid)
        workdir.chmod(0o700)
    ev_r, ev_w = os.pipe()
    env = dict(env, COURSEKIT_EVENT_FD=str(ev_w))
    if mode == "bwrap":
        cmd = bwrap_command(argv, workdir, uid, limits, ro_paths)
    else:
        cmd = list(argv)
        env = {k: (v.replace(INSIDE_WORKDIR, str(workdir)) if isinstance(v, str) else v) for k, v in env.items()}
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, pass_fds=(ev_w,),
                            preexec_fn=_child_setup(limits, uid if mode != "none" else None, mode))
    os.close(ev_w)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, "out")
    sel.register(ev_r, selectors.EVENT_READ, "ev")
    keep = limits.max_output_kb * 1024
    head, tail, total = bytearray(), bytearray(), 0
    ev_buf, events = b"", []
    killed_for, peak = None, 0.0
    open_streams = 2
    last_mem_check = 0.0
    while True:
        for key, _ in sel.select(timeout=0.1):
            data = os.read(key.fd, 65536)
            if not data:
                sel.unregister(key.fileobj)
                open_streams -= 1
                continue
            if key.data == "out":
                total += len(data)
                if len(head) < keep // 2:
                    head += data[: keep // 2 - len(head)]
                else:
                    tail = (tail + data)[-(keep // 2):]
            else:
                ev_buf += data
                if len(ev_buf) > (1 << 20):      # a flood on the event channel is not ours
                    ev_buf = b""
                *lines, ev_buf = ev_buf.split(b"\n")
                events.extend(line.decode(errors="replace") for line in lines[:1000] if line)
        elapsed = time.monotonic() - start
        if killed_for is None:
            if elapsed > timeout:
                killed_for = "timeout"
            elif total > limits.max_output_total_mb << 20:
                killed_for = "output"
            elif watch is not None:
                killed_for = watch(events, elapsed)
            if killed_for is None and elapsed - last_mem_check >= 0.2:
                last_mem_check = elapsed
                rss = _sandbox_memory_mb(proc.pid, uid if mode != "none" else None, limits.memory_mb)
                peak = max(peak, rss)
                if rss > limits.memory_mb:
                    killed_for = "memory"
            if killed_for is not None:
                _kill_all(proc, uid if mode != "none" else None)
        if proc.poll() is not None and (open_streams == 0 or killed_for is not None):
            break
        if proc.poll() is not None and time.monotonic() - start > timeout + 5:
            break      # a grandchild holds the pipes open: it dies below
    _kill_all(proc, uid if mode != "none" else None)
    proc.wait()
    sel.close()
    os.close(ev_r)
    proc.stdout.close()
    text = head.decode(errors="replace")
    if tail:
        text += f"\n[... {total - len(head) - len(tail)} bytes of output left out ...]\n" + tail.decode(errors="replace")
    return RunOutcome(returncode=proc.returncode, killed_for=killed_for, output=text, output_bytes=total,
                      events=events, wall_s=time.monotonic() - start, peak_rss_mb=peak)


def _kill_all(proc, uid):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if uid is not None:
        _kill_uid(uid)
    else:
        for pid in _tree_pids(_proc_table(), proc.pid, None):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
