"""Where untrusted notebook code runs: a sandboxed warm server that forks one process per job.

``Zygote`` starts ``coursekit/grading/child.py --serve`` once (torch, d2l, IPython, the data set loaded), in
the sandbox; each job is a fork of it in PID and mount namespaces of its own, under a uid of its own, in a
folder of its own, with limits (``protocol.Limits``). The job/event protocol is ``coursekit.grading.protocol``.

Isolation, the strongest this machine allows (``isolation_mode()`` says which):

``"bwrap"``  (root with bubblewrap) a mount namespace in which only the system (``/usr``, ``/etc``),
    Python, the virtual environment, the ``coursekit`` package and the dataset are visible, read-only,
    plus the job folders; no network. The repository (solutions, hidden tests) and the grader's output
    folder do not exist in there.
``"uid"``    (root without bubblewrap) the host's file system, protected by permissions only: the grader's
    own folders must be unreadable to the jobs' uids (0700), which ``check_unreadable`` verifies.
``"none"``   (only when asked for with ``COURSEKIT_SANDBOX=none``) a plain subprocess with limits only: for
    a student's own machine, never for grading untrusted code.

In modes "bwrap" and "uid" every job is process 1 of a PID namespace of its own: when it ends, or is
killed, the kernel kills every process it started (whatever their state: daemons that left its session,
a zombie whose threads run on). Its own mount namespace gives it its own /proc (it sees only its own
processes), /dev/shm and /tmp (tmpfs, gone with it), and hides the other jobs' folders. Before a job's uid is
used again every process of that uid is killed and gone (``UidSlot``). Without root (so without namespaces)
the grader refuses to run unless mode "none" was asked for.

Limits on every run: wall-clock time, memory (``RLIMIT_DATA`` per process and a watchdog on the resident
memory of all the job's processes), number of processes (``RLIMIT_NPROC`` under the job's own uid), size
of any file written (``RLIMIT_FSIZE``, the output file included), disk use of its folder, output size.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from coursekit.grading import protocol
from coursekit.grading.paths import CHILD_PROGRAM
from coursekit.grading.protocol import Limits, ServerCommand, ServerReply

__all__ = ["Limits", "Zygote", "ZygoteError", "UidSlot", "isolation_mode", "describe_isolation"]

SANDBOX_UID_BASE = 61000    # uids SANDBOX_UID_BASE .. +255: one per sandbox running at the same time
SANDBOX_UID_SLOTS = 256
INSIDE_SPOOL = "/spool"
LOCK_DIR = Path("/run/coursekit-sandbox") if os.geteuid() == 0 else None
SPOOL_PREFIX = "coursekit-spool-"


def is_root() -> bool:
    return os.geteuid() == 0


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


_MODE_CACHE: dict = {}


def isolation_mode() -> str:
    """``"bwrap"``, ``"uid"``, ``"none"`` (see the module's docstring) or ``"unavailable"`` (not root: the
    grader refuses to run). Checked once by running bwrap. ``$COURSEKIT_SANDBOX`` may ask for a weaker mode
    (to test the fallbacks, or ``none`` to run unisolated on purpose)."""
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
    mode = "unavailable"
    if is_root():
        mode = "uid"
        bw = bwrap_path()
        if bw:
            probe = subprocess.run([bw, "--ro-bind", "/", "/", "--unshare-pid", "--unshare-net", "--die-with-parent",
                                    "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
                                    "--cap-add", "CAP_SYS_ADMIN", "--", "true"],
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
    if mode == "none":
        return "none (COURSEKIT_SANDBOX=none): student code can read and kill what this user can"
    return "unavailable: not root, so no PID namespace and no uid per job; run as root (with bubblewrap)"


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
            if not _kill_uid(uid):       # leftovers of a grader that was killed, unkillable: not this uid
                continue
            self.uid, self._fd = uid, fd
            return self
        raise RuntimeError("no free sandbox uid: 256 sandboxes are running already")

    def __exit__(self, *exc):
        if self._fd is not None:
            gone = _kill_uid(self.uid)
            if gone:        # a uid with a process left is never handed out again by this grader
                os.close(self._fd)
            self._fd = None
            if not gone:
                raise RuntimeError(f"a process of sandbox uid {self.uid} survived SIGKILL; nothing of this "
                                   "submission is recorded")


# ---------------------------------------------------------------- processes seen from outside

def _proc_table():
    """pid -> (uid, ppid, rss_kib, zombie, ns_init) for every process, read from /proc.

    Zombies are listed: a process whose main thread exited shows as one while its other threads run on."""
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
        zombie = ns_init = False
        for line in text.splitlines():
            if line.startswith("Uid:"):
                uid = int(line.split()[1])
            elif line.startswith("PPid:"):
                ppid = int(line.split()[1])
            elif line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("State:"):
                zombie = line.split()[1:2] == ["Z"]
            elif line.startswith("NSpid:"):
                ns_init = line.split()[-1] == "1" and len(line.split()) > 2
        table[int(name)] = (uid, ppid, rss, zombie, ns_init)
    return table


def _tree_pids(table, root_pid, uid):
    """The sandbox's processes: those of its uid (if it has one), else the descendants of root_pid."""
    if uid is not None:
        return {pid for pid, row in table.items() if row[0] == uid}
    children = {}
    for pid, row in table.items():
        ppid = row[1]
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
    pids = [p for p in _tree_pids(table, root_pid, uid) if not table[p][3]]
    rss = sum(table[p][2] for p in pids) / 1024
    if rss <= limit_mb or len(pids) <= 1:
        return rss
    return sum(_pss_kib(p) for p in pids) / 1024


def _kill_uid(uid, timeout: float = 10.0) -> bool:
    """SIGKILL every process of a sandbox uid, zombies included (a signal to a zombie leader kills the
    threads that run on), a job's namespace init first (its death takes its whole namespace); True once no
    process of the uid is left, not even a zombie waiting to be reaped."""
    if uid is None or uid < SANDBOX_UID_BASE:
        return True
    deadline = time.monotonic() + timeout
    while True:
        table = _proc_table()
        rows = {pid: row for pid, row in table.items() if row[0] == uid}
        if not rows:
            return True
        if time.monotonic() > deadline:
            return False
        for pid in sorted(rows, key=lambda p: not rows[p][4]):
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
    The server keeps only CAP_SETUID and CAP_SETGID, to hand each job its own uid, and CAP_SYS_ADMIN, to give
    each job its own PID and mount namespaces; a job drops them all with its uid."""
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
            "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SYS_ADMIN", "--"]
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


def job_env(home: str, tmp: str) -> dict:
    """A job's environment: nothing of the grader's leaks in, one thread, no GPU, a headless matplotlib."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "LANG": "C.UTF-8",
        "TMPDIR": tmp,
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": f"{tmp}/matplotlib",
        "IPYTHONDIR": f"{tmp}/ipython",
        "XDG_CACHE_HOME": f"{tmp}/cache",
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
    }
    if os.environ.get("COURSEKIT_DATA"):
        env["COURSEKIT_DATA"] = os.environ["COURSEKIT_DATA"]
    return env


class ZygoteError(RuntimeError):
    """The warm server could not start or died."""


def clean_stale_spools(tmp: Path | None = None) -> list[Path]:
    """Remove the job folders of graders that are no longer running (killed mid-batch): copies of students'
    work must not stay behind. A running grader holds a lock on its spool's ``owner.lock``."""
    removed = []
    for spool in Path(tmp or tempfile.gettempdir()).glob(SPOOL_PREFIX + "*"):
        if spool.is_symlink() or not spool.is_dir():
            continue
        try:
            fd = os.open(spool / "owner.lock", os.O_RDWR | os.O_NOFOLLOW)
        except FileNotFoundError:       # a grader from before the lock: left alone for an hour
            fd = None
            try:
                if time.time() - spool.stat().st_mtime < 3600:
                    continue
            except OSError:
                continue
        except OSError:
            continue
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue            # its grader runs
        finally:
            if fd is not None:
                os.close(fd)
        shutil.rmtree(spool, ignore_errors=True)
        removed.append(spool)
    return removed


def _prepare_data(folder: Path) -> bool:
    """Fashion-MNIST in the layout torchvision (so ``d2l.FashionMNIST(root="../data")``) reads offline:
    ``folder/FashionMNIST/raw/<idx files>``, uncompressed, read-only to the jobs."""
    try:
        from coursekit import data
        source = data.find_data_dir()
        if source is None:
            return False
        raw = folder / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        for spec in data.FILES.values():
            (raw / spec.name).write_bytes(data.idx_payload(source, spec))
    except Exception:       # noqa: BLE001 (no data: the questions that need it fail with a clear error)
        return False
    for path in [folder, folder / "FashionMNIST", raw, *raw.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return True


class Zygote:
    """The warm server (``child.py --serve``) in its sandbox, and the job folders ("spool") it works in.

    Thread-safe: several jobs may run at once, each in its own folder with its own uid.
    """

    def __init__(self, start_timeout: float = 600.0):
        self.mode = isolation_mode()
        if self.mode == "unavailable":
            raise ZygoteError("no isolation available: " + describe_isolation()
                              + "; or set COURSEKIT_SANDBOX=none to run without isolation, for your own code only")
        clean_stale_spools()
        self.spool = Path(tempfile.mkdtemp(prefix=SPOOL_PREFIX))     # 0700: the grader's
        self._owner_lock = os.open(self.spool / "owner.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._owner_lock, fcntl.LOCK_EX)
        self.isolated = self.mode != "none"
        if self.isolated:
            self.spool.chmod(0o711)     # jobs' uids cross it (bwrap: the bind point) to their own folder
        self.inside = INSIDE_SPOOL if self.mode == "bwrap" else str(self.spool)
        self.has_data = _prepare_data(self.spool / "data")
        # what the jobs read that lives under /tmp (hidden by each job's own /tmp): bound back read-only
        self.readable_under_tmp = [str(p) for p in readable_paths() if Path("/tmp") in p.parents]
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._started, self._exits = {}, {}
        self._counter = 0
        self.ready_seconds = None
        self.failure = None
        argv = [sys.executable, "-I", "-B", "-u", str(CHILD_PROGRAM), "--serve"]
        env = job_env("/tmp" if self.mode == "bwrap" else str(self.spool),
                      "/tmp" if self.mode == "bwrap" else str(self.spool))
        if self.isolated:
            env["COURSEKIT_SANDBOX_ISOLATE"] = "1"
        if self.mode == "bwrap":
            argv = bwrap_command(argv, self.spool, readable_paths())
        self._log = open(self.spool / "server.log", "wb")
        # The server dies with the thread that started it (PR_SET_PDEATHSIG, bwrap --die-with-parent follow the
        # parent *thread*): a thread of its own starts it and lives until close(), not a short-lived worker.
        self._closed = threading.Event()
        spawned = {}
        started = threading.Event()

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

        self._keeper = threading.Thread(target=keeper, name="coursekit-grading-server", daemon=True)
        self._keeper.start()
        started.wait()
        if "error" in spawned:
            self._remove_spool()
            raise ZygoteError(f"the grading server could not be started: {spawned['error']}")
        self.proc = spawned["proc"]
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        with self._cond:
            if not self._cond.wait_for(lambda: self.ready_seconds is not None or self.failure is not None
                                       or self.proc.poll() is not None, timeout=start_timeout):
                self.close()
                raise ZygoteError(f"the grading server did not start within {start_timeout:g} s")
        if self.ready_seconds is None:
            log = (self.spool / "server.log").read_text(errors="replace")[-2000:]
            self.close()
            if self.failure:
                raise ZygoteError(f"the grading server cannot isolate jobs ({self.failure}); refusing to grade "
                                  "unisolated (COURSEKIT_SANDBOX=none runs without isolation on purpose)")
            raise ZygoteError(f"the grading server failed to start: {log}")

    def _read(self):
        for line in self.proc.stdout:
            reply = ServerReply.from_line(line)
            if reply is None:
                continue
            with self._cond:
                if reply.kind == "ready":
                    self.ready_seconds = reply.seconds
                elif reply.kind == "failed":
                    self.failure = reply.job_id or "unknown reason"
                elif reply.kind == "started":
                    self._started[reply.job_id] = reply.pid
                elif reply.kind == "exit":
                    self._exits[reply.job_id] = reply.code
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def new_job(self, uid: int | None) -> tuple[str, Path, str]:
        """A fresh job folder: (job id, folder here, folder as the job sees it). The folder is root's (0711);
        in it ``work/`` is the job's (its uid, 0700), ``data`` leads to the data set, the protocol files are
        made by the runner."""
        with self._lock:
            self._counter += 1
            job_id = f"job{self._counter}"
        host = self.spool / job_id
        host.mkdir(mode=0o711 if self.isolated else 0o700)
        work = host / protocol.WORK_DIR
        work.mkdir(mode=0o700)
        if uid is not None:
            os.chown(work, uid, uid)
        if self.has_data:
            os.symlink(f"{self.inside}/data", host / protocol.DATA_LINK)
        return job_id, host, f"{self.inside}/{job_id}"

    def command(self, job_id: str, inside: str, uid: int | None, limits: Limits) -> ServerCommand:
        """The server's instructions for one job."""
        uid = uid if self.isolated else None
        tmp = "/tmp" if self.isolated else f"{inside}/{protocol.WORK_DIR}"
        return ServerCommand(job_id=job_id, folder=inside, uid=uid, rlimits=limits.rlimits(uid is not None),
                             env=job_env(f"{inside}/{protocol.WORK_DIR}", tmp), shm_mb=limits.shm_mb,
                             tmp_mb=limits.tmp_mb, hide=self.inside if self.isolated else "",
                             keep=[inside] + ([f"{self.inside}/data"] if self.has_data else []),
                             keep_ro=self.readable_under_tmp if self.isolated else [])

    def start(self, cmd: ServerCommand, timeout: float = 30.0):
        """Fork the job described by ``cmd``; returns its pid (as the server sees it)."""
        if not self.alive():
            raise ZygoteError("the grading server is not running")
        with self._lock:
            self.proc.stdin.write(cmd.to_line())
            self.proc.stdin.flush()
        with self._cond:
            if not self._cond.wait_for(lambda: cmd.job_id in self._started or not self.alive(), timeout=timeout):
                raise ZygoteError("the grading server did not start the job")
            if cmd.job_id not in self._started:
                raise ZygoteError("the grading server died")
            return self._started[cmd.job_id]

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

    def _remove_spool(self):
        shutil.rmtree(self.spool, ignore_errors=True)
        os.close(self._owner_lock)

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
        self._remove_spool()


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
