"""Where untrusted notebook code runs: a sandboxed warm server that forks one process per job.

``Zygote`` starts ``coursekit/grading/child.py --serve`` once (torch, d2l, the data set loaded), in the
sandbox; each job is a fork of it that drops to a uid of its own, in a folder of its own, with limits.

Isolation, the strongest this machine allows (``isolation_mode()`` says which):

``"bwrap"``  (root with bubblewrap) a mount namespace in which only the system (``/usr``, ``/etc``),
    Python, the virtual environment, the ``coursekit`` package and the dataset are visible, read-only,
    plus the job folders (each 0700, owned by its job's uid); no network, its own process namespace;
    each job runs as an unprivileged uid with no capabilities. The repository (solutions, hidden tests)
    and the grader's output folder do not exist in there.
``"uid"``    (root without bubblewrap) each job drops to an unprivileged uid; the grader's own folders
    must be unreadable to it (0700), which ``check_unreadable`` verifies.
``"none"``   (not root, no bubblewrap) a plain subprocess with limits only. Good for a student's own
    machine, not for grading untrusted code.

Limits on every run: wall-clock time, memory (``RLIMIT_DATA`` per process and a watchdog on the resident
memory of all the job's processes), number of processes (``RLIMIT_NPROC`` under the job's own uid), size
of any file written (``RLIMIT_FSIZE``, the output file included), output size (what is kept; a cell that
prints more than the ceiling fails). A job
that hits a limit is killed with every process it started (all processes of its uid).
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SANDBOX_UID_BASE = 61000    # uids SANDBOX_UID_BASE .. +255: one per sandbox running at the same time
SANDBOX_UID_SLOTS = 256
INSIDE_SPOOL = "/spool"
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
    max_disk_mb: int = 512              # all the files in its folder together
    max_output_kb: int = 64             # output kept for the feedback (head and tail)
    max_output_total_mb: int = 16       # a cell that prints more fails (printing past max_file_mb raises)
    max_restarts: int = 4               # fresh processes after a cell that killed its process

    def __post_init__(self):
        for name in ("cell_timeout", "submission_timeout", "harvest_timeout", "memory_mb", "max_processes",
                     "max_file_mb", "max_disk_mb", "max_output_kb", "max_output_total_mb"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Limits.{name} must be positive, got {getattr(self, name)!r}")
        if self.max_restarts < 0:
            raise ValueError(f"Limits.max_restarts must be >= 0, got {self.max_restarts!r}")


def is_root() -> bool:
    return os.geteuid() == 0


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


_MODE_CACHE: dict = {}


def isolation_mode() -> str:
    """``"bwrap"``, ``"uid"`` or ``"none"``: see the module's docstring. Checked once by running bwrap.
    ``$COURSEKIT_SANDBOX`` may ask for a weaker mode (to test the fallbacks)."""
    if "mode" in _MODE_CACHE:
        return _MODE_CACHE["mode"]
    forced = os.environ.get("COURSEKIT_SANDBOX", "")
    if forced:          # a weaker mode on purpose (tests of the fallbacks), never a stronger one than possible
        if forced not in ("bwrap", "uid", "none"):
            raise ValueError(f"COURSEKIT_SANDBOX must be bwrap, uid or none, got {forced!r}")
        if forced in ("bwrap", "uid") and not is_root():
            raise ValueError(f"COURSEKIT_SANDBOX={forced} needs root (to switch to an unprivileged uid)")
        if forced == "bwrap" and not bwrap_path():
            raise ValueError("COURSEKIT_SANDBOX=bwrap but bubblewrap is not installed (apt-get install bubblewrap)")
        _MODE_CACHE["mode"] = forced
        return forced
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
        if "\nState:\tZ" in text:      # a zombie holds no memory and cannot be killed: its parent reaps it
            continue
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
    pids = list(_tree_pids(table, root_pid, uid))
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


def bwrap_command(argv, spool: Path, ro_paths) -> list[str]:
    """bubblewrap around the warm server: read-only system, Python, venv, coursekit, dataset; the spool
    (job folders) read-write at /spool; a root-owned /tmp no job can write; no network; own pid namespace.
    The server keeps only CAP_SETUID and CAP_SETGID, to hand each job its own uid."""
    cmd = [bwrap_path(),
           "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc",
           "--proc", "/proc", "--dev", "/dev",
           # a small /dev/shm: files there live in memory and no process's RSS counts them
           "--perms", "1777", "--size", str(16 << 20), "--tmpfs", "/dev/shm",
           "--size", str(64 << 20), "--perms", "0755", "--tmpfs", "/tmp"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        p = Path("/") / name
        if p.is_symlink():
            cmd += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            cmd += ["--ro-bind", str(p), str(p)]
    made = {Path("/usr"), Path("/etc"), Path("/tmp"), Path("/proc"), Path("/dev")}
    for p in ro_paths:
        for a in _ancestors(p):
            if a not in made:      # bwrap would make them 0700, which the jobs' uids could not cross
                cmd += ["--perms", "0755", "--dir", str(a)]
                made.add(a)
        cmd += ["--ro-bind", str(p), str(p)]
        made.add(p)
    cmd += ["--bind", str(spool), INSIDE_SPOOL, "--chdir", INSIDE_SPOOL,
            "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session",
            "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--"]
    return cmd + list(argv)


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


def job_env(workdir_inside: str) -> dict:
    """A job's environment: nothing of the grader's leaks in, one thread, no GPU, a headless matplotlib."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir_inside,
        "LANG": "C.UTF-8",
        "TMPDIR": workdir_inside,
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": f"{workdir_inside}/.config/matplotlib",
        "XDG_CACHE_HOME": f"{workdir_inside}/.cache",
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
    }
    if os.environ.get("COURSEKIT_DATA"):
        env["COURSEKIT_DATA"] = os.environ["COURSEKIT_DATA"]
    return env


def job_rlimits(limits: Limits, with_uid: bool) -> dict:
    mb = 1 << 20
    # RLIMIT_AS would break a CUDA build of torch (it maps large virtual areas); DATA does not.
    out = {"RLIMIT_DATA": max(limits.memory_mb, 1536) * mb,
           "RLIMIT_FSIZE": limits.max_file_mb * mb,
           "RLIMIT_CORE": 0,
           "RLIMIT_CPU": int(limits.submission_timeout) + 30}
    if with_uid:      # NPROC counts per uid (root ignores it): it bites only under the job's own uid
        out["RLIMIT_NPROC"] = limits.max_processes
    return out


class ZygoteError(RuntimeError):
    """The warm server could not start or died."""


class Zygote:
    """The warm server (``child.py --serve``) in its sandbox, and the job folders ("spool") it works in.

    Thread-safe: several jobs may run at once, each in its own folder with its own uid.
    """

    def __init__(self, start_timeout: float = 600.0):
        import tempfile
        import threading
        self.mode = isolation_mode()
        self.spool = Path(tempfile.mkdtemp(prefix="coursekit-spool-"))     # 0700: the grader's
        if self.mode != "none":
            self.spool.chmod(0o711)     # jobs' uids cross it (bwrap: the bind point) to their own 0700 folder
        self.inside = INSIDE_SPOOL if self.mode == "bwrap" else str(self.spool)
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._started, self._exits = {}, {}
        self._counter = 0
        self.ready_seconds = None
        from coursekit.grading import child
        argv = [sys.executable, "-I", "-B", "-u", child.__file__, "--serve"]
        env = job_env("/tmp" if self.mode == "bwrap" else str(self.spool))
        env["MPLCONFIGDIR"] = "/tmp/mpl" if self.mode == "bwrap" else str(self.spool / ".mpl")
        if self.mode == "bwrap":
            argv = bwrap_command(argv, self.spool, readable_paths())
        self._log = open(self.spool / "server.log", "wb")
        # The server dies with the thread that started it (PR_SET_PDEATHSIG, bwrap --die-with-parent follow the
        # parent *thread*): a thread of its own starts it and lives until close(), not a short-lived worker.
        self._closed = threading.Event()
        spawned = {}

        def keeper():
            try:
                spawned["proc"] = subprocess.Popen(argv, cwd=self.spool, env=env, stdin=subprocess.PIPE,
                                                   stdout=subprocess.PIPE, stderr=self._log,
                                                   preexec_fn=_server_setup, close_fds=True)
            except OSError as exc:
                spawned["error"] = exc
            finally:
                started.set()
            self._closed.wait()

        started = threading.Event()
        self._keeper = threading.Thread(target=keeper, name="coursekit-grading-server", daemon=True)
        self._keeper.start()
        started.wait()
        if "error" in spawned:
            raise ZygoteError(f"the grading server could not be started: {spawned['error']}")
        self.proc = spawned["proc"]
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        with self._cond:
            if not self._cond.wait_for(lambda: self.ready_seconds is not None or self.proc.poll() is not None,
                                       timeout=start_timeout):
                self.close()
                raise ZygoteError(f"the grading server did not start within {start_timeout:g} s")
        if self.ready_seconds is None:
            log = (self.spool / "server.log").read_text(errors="replace")[-2000:]
            self.close()
            raise ZygoteError(f"the grading server failed to start: {log}")

    def _read(self):
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                if msg.get("ready"):
                    self.ready_seconds = msg.get("seconds", 0.0)
                elif "started" in msg:
                    self._started[msg["started"]] = msg.get("pid")
                elif "exit" in msg:
                    self._exits[msg["exit"]] = msg.get("code")
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def new_job(self, uid: int | None):
        """A fresh job folder owned by ``uid``: (job id, folder here, folder as the job sees it)."""
        with self._lock:
            self._counter += 1
            job_id = f"job{self._counter}"
        host = self.spool / job_id
        host.mkdir(mode=0o700)
        if uid is not None:
            os.chown(host, uid, uid)
        return job_id, host, f"{self.inside}/{job_id}"

    def start(self, cmd: dict, timeout: float = 30.0):
        """Fork the job described by ``cmd``; returns its pid (as the server sees it)."""
        if not self.alive():
            raise ZygoteError("the grading server is not running")
        with self._lock:
            self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
            self.proc.stdin.flush()
        with self._cond:
            if not self._cond.wait_for(lambda: cmd["id"] in self._started or not self.alive(), timeout=timeout):
                raise ZygoteError("the grading server did not start the job")
            if cmd["id"] not in self._started:
                raise ZygoteError("the grading server died")
            return self._started[cmd["id"]]

    def exit_code(self, job_id):
        """The job's exit code (negative: killed by that signal), or None while it runs."""
        with self._cond:
            return self._exits.get(job_id)

    def wait_exit(self, job_id, timeout: float):
        with self._cond:
            self._cond.wait_for(lambda: job_id in self._exits or not self.alive(), timeout=timeout)
            return self._exits.get(job_id)

    def forget(self, job_id):
        with self._cond:
            self._started.pop(job_id, None)
            self._exits.pop(job_id, None)

    def close(self):
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        self._closed.set()
        shutil.rmtree(self.spool, ignore_errors=True)


def _server_setup():
    os.setsid()
    try:        # die with the grader
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)      # PR_SET_PDEATHSIG
    except Exception:       # noqa: BLE001
        pass


def job_memory_mb(uid, pid, limit_mb) -> float:
    """Memory of a job's processes (by uid, or by process tree from ``pid`` without one)."""
    return _sandbox_memory_mb(pid if uid is None else -1, uid, limit_mb)


def folder_usage(folder: Path, max_entries: int = 20000) -> tuple[int, int]:
    """(bytes, entries) under a job's folder, without following links; stops counting past max_entries."""
    total = count = 0
    todo = [str(folder)]
    while todo and count <= max_entries:
        try:
            with os.scandir(todo.pop()) as it:
                for entry in it:
                    count += 1
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            todo.append(entry.path)
                        else:
                            total += entry.stat(follow_symlinks=False).st_blocks * 512
                    except OSError:
                        pass
        except OSError:
            pass
    return total, count


def kill_job(uid, pid):
    """SIGKILL every process of a job: all of its uid's, or its process group without a uid."""
    if uid is not None:
        _kill_uid(uid)
        return
    for target in (lambda: os.killpg(pid, signal.SIGKILL),):
        try:
            target()
        except (ProcessLookupError, PermissionError):
            pass
    for p in _tree_pids(_proc_table(), pid, None):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
