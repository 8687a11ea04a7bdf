"""Where untrusted notebook code runs: a sandboxed warm server that forks one process per job.

``WarmServer`` starts ``coursekit/grading/warm_server.py --serve`` once (torch, d2l, IPython, the data set loaded), in
the sandbox; each job is a fork of it, with limits (``protocol.Limits``). The job/event protocol is
``coursekit.grading.protocol``. Student code never runs as root, nor with any capability.

Isolation: the strongest the place the grader runs in allows, detected at start (``isolation_mode()``; the
summary, the gradebook's records, the feedback and Gradescope's results name it):

``"bwrap"``       root with bubblewrap (a machine or VM of the instructor's): a mount namespace in which only
    the system (``/usr``, ``/etc``), Python, the virtual environment, the ``coursekit`` package and the data
    set are visible, read-only, plus the job folders; the repository (solutions, hidden tests) and the
    grader's output do not exist in there. Each job: its own uid, PID, mount, network, IPC namespaces.
``"namespaces"``  root without bubblewrap: the same per-job uid and namespaces, but the host's file system,
    protected by permissions only (the grader's folders must be 0700: ``check_unreadable``).
``"container"``   root without ``CAP_SYS_ADMIN`` (Gradescope, ``docker run``, a Kubernetes Job: Docker's
    default capabilities and seccomp profile, no new namespaces): each job under an unprivileged uid of its
    own (``CAP_SETUID``/``CAP_SETGID`` are kept there), ``no_new_privs``, its scratch in its own folder; the
    hidden tests, the grader's files and the results unreadable to that uid (0700; ``check_unreadable``).
``"userns"``      not root (an instructor's laptop or a shared server): bubblewrap in an unprivileged user
    namespace, as in mode "bwrap", and each job in PID, mount, network and IPC namespaces of its own, with
    every capability dropped (bounding set included) and ``no_new_privs``. The kernel sees the jobs under
    the instructor's uid (one uid is all an unprivileged user namespace maps), but a job sees none of the
    instructor's files or processes. Each job is in a user namespace of its own too, where its processes
    and threads count against its own ``RLIMIT_NPROC`` (Linux 5.14 or later; the server checks at start).
    Where user namespaces are disabled, the grader refuses and says what to enable or install
    (``describe_isolation``).

There is no unisolated mode: ``COURSEKIT_SANDBOX=none`` is refused (it ran student code with the grader's
rights, as root under root). ``$COURSEKIT_SANDBOX`` may ask for a weaker mode than detected, to test it.

In every mode but "container" a job is process 1 of a PID namespace of its own: when it ends, or is killed,
the kernel kills every process it started. It has its own /proc, /dev/shm and /tmp (tmpfs, gone with it),
its own network (a loopback only) and IPC namespace; the other jobs' folders are hidden. Jobs are killed by
the server, which signals its own unreaped child (never a recycled pid); processes of a sandbox uid are
killed through a pidfd opened before their uid is checked (``_kill_uid``). Before a job's uid is used again
every process of that uid is gone (``UidSlot``). Sandbox uids are 60600-60855: above regular users
(<= 60000) and systemd-homed's, below systemd's DynamicUser range (61184-65519) and 65536.

Limits on every run: wall-clock time, memory (``RLIMIT_DATA`` per process and a watchdog on the resident
memory of all the job's processes), number of processes (``RLIMIT_NPROC`` under the job's own uid, in
mode "userns" in the job's own user namespace), size of any file written (``RLIMIT_FSIZE``, the output file
included), disk use of its folder, output size.
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
from coursekit.paths import PACKAGE, WARM_SERVER_PROGRAM
from coursekit.grading.protocol import Limits, ServerCommand, ServerReply

__all__ = ["Limits", "WarmServer", "WarmServerError", "UidSlot", "isolation_mode", "describe_isolation", "MODES",
           "relies_on_permissions", "cgroup_memory_limit_mb", "default_memory_mb"]

MODES = ("bwrap", "namespaces", "container", "userns")      # strongest first
NAMESPACE_MODES = ("bwrap", "namespaces", "userns")

SANDBOX_UID_BASE = 60600    # uids SANDBOX_UID_BASE .. +255, one per job running at the same time (see above)
SANDBOX_UID_SLOTS = 256
INSIDE_SPOOL = "/spool"
LOCK_DIR = Path("/run/coursekit-sandbox") if os.geteuid() == 0 else None
SPOOL_PREFIX = "coursekit-spool-"


def is_root() -> bool:
    return os.geteuid() == 0


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


_MODE_CACHE: dict = {}

NO_NONE_MODE = ("COURSEKIT_SANDBOX=none no longer exists: it ran student code with the grader's own rights (as "
                "root: as root). Without root the grader isolates jobs in an unprivileged user namespace (mode "
                "userns); see `coursekit grade`'s first line for what this machine allows")

# unshare() of every namespace a job gets, in a throw-away process: 0 if this process may make them
_NAMESPACE_PROBE = ("import ctypes, os, sys\n"
                    "libc = ctypes.CDLL(None, use_errno=True)\n"
                    "if libc.unshare(0x20000000 | 0x00020000 | 0x40000000 | 0x08000000) != 0:\n"
                    "    sys.exit('unshare: ' + os.strerror(ctypes.get_errno()))\n")


def _bwrap_probe(rootless: bool) -> str:
    """'' if bubblewrap can make the server's sandbox here (in a user namespace of its own if ``rootless``),
    else why not."""
    bw = bwrap_path()
    if not bw:
        return "bubblewrap is not installed"
    user = ["--unshare-user", "--uid", "0", "--gid", "0", "--cap-add", "CAP_SETFCAP"] if rootless else []
    probe = subprocess.run([bw, *user, "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--unshare-pid",
                            "--unshare-net", "--unshare-ipc", "--die-with-parent",
                            "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SYS_ADMIN", "--cap-add", "CAP_NET_ADMIN",
                            "--", sys.executable, "-I", "-S", "-c", _NAMESPACE_PROBE],
                           capture_output=True, timeout=Limits.ISOLATION_PROBE_TIMEOUT)
    return "" if probe.returncode == 0 else (probe.stderr.decode(errors="replace").strip() or "bwrap failed")


def _namespaces_probe() -> str:
    probe = subprocess.run([sys.executable, "-I", "-S", "-c", _NAMESPACE_PROBE], capture_output=True,
                           timeout=Limits.ISOLATION_PROBE_TIMEOUT)
    return "" if probe.returncode == 0 else (probe.stderr.decode(errors="replace").strip() or "unshare failed")


def _effective_capabilities() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def can_switch_uid() -> bool:
    """Root with CAP_SETUID and CAP_SETGID (kept by Docker's default capabilities)."""
    caps = _effective_capabilities()
    return is_root() and bool(caps & (1 << 6)) and bool(caps & (1 << 7))


def isolation_mode() -> str:
    """One of ``MODES`` (see the module's docstring), or ``"unavailable"`` (the grader refuses to run; see
    ``describe_isolation``). Detected once, by trying. ``$COURSEKIT_SANDBOX`` may ask for a weaker mode than
    the one detected (to test it); never for none."""
    if "mode" in _MODE_CACHE:
        return _MODE_CACHE["mode"]
    forced = os.environ.get("COURSEKIT_SANDBOX", "")
    if forced:
        if forced == "none":
            raise ValueError(NO_NONE_MODE)
        if forced not in MODES:
            raise ValueError(f"COURSEKIT_SANDBOX must be one of {', '.join(MODES)}, got {forced!r}")
        if forced == "userns" and is_root():
            raise ValueError("COURSEKIT_SANDBOX=userns is for a user without root: as root its jobs would be "
                             "root outside the namespace")
        if forced != "userns" and not can_switch_uid():
            raise ValueError(f"COURSEKIT_SANDBOX={forced} needs root with CAP_SETUID and CAP_SETGID (to give "
                             "each job an unprivileged uid)")
        why = {"bwrap": lambda: _bwrap_probe(False), "namespaces": _namespaces_probe,
               "userns": lambda: _bwrap_probe(True)}.get(forced, lambda: "")()
        if why:
            raise ValueError(f"COURSEKIT_SANDBOX={forced} does not work here: {why}")
        _MODE_CACHE["mode"] = forced
        return forced
    mode = "unavailable"
    if is_root():
        why = _MODE_CACHE["why_not_bwrap"] = _bwrap_probe(False)
        if not why:
            mode = "bwrap"
        else:
            why = _MODE_CACHE["why_not_namespaces"] = _namespaces_probe()
            if not why:
                mode = "namespaces"
            elif can_switch_uid():
                mode = "container"
    else:
        why = _MODE_CACHE["why_not_userns"] = _bwrap_probe(True)
        if not why:
            mode = "userns"
    _MODE_CACHE["mode"] = mode
    return mode


def relies_on_permissions() -> bool:
    """True where jobs see the host's file system (the grader's folders must then be unreadable to them)."""
    return isolation_mode() in ("namespaces", "container")


def describe_isolation() -> str:
    """The isolation in words, for the summary, the records and the feedback."""
    mode = isolation_mode()
    if mode == "bwrap":
        return ("bwrap: bubblewrap sandbox, each job under an unprivileged uid in its own PID, mount, network "
                "and IPC namespaces")
    if mode == "namespaces":
        why = _MODE_CACHE.get("why_not_bwrap") or "bubblewrap not used"
        return (f"namespaces: each job under an unprivileged uid in its own PID, mount, network and IPC "
                f"namespaces, on the host's file system ({why}); the grader's folders must be 0700")
    if mode == "container":
        return ("container: each job under an unprivileged uid with no_new_privs, no new namespaces (no "
                "CAP_SYS_ADMIN here); the hidden tests and the results are unreadable to it (0700)")
    if mode == "userns":
        return ("userns: bubblewrap in an unprivileged user namespace, each job in its own PID, mount, network "
                "and IPC namespaces with no capabilities")
    if is_root():
        return ("unavailable: root, but without CAP_SETUID/CAP_SETGID no job can get an unprivileged uid; run "
                "the container with Docker's default capabilities (not --cap-drop ALL)")
    why = _MODE_CACHE.get("why_not_userns", "")
    return ("unavailable: not root, and no unprivileged user namespace (" + why + "). Install bubblewrap "
            "(apt-get install bubblewrap) and allow user namespaces (sysctl kernel.unprivileged_userns_clone=1 "
            "and user.max_user_namespaces > 0; on Ubuntu 24.04 also kernel.apparmor_restrict_unprivileged_userns=0"
            " or an AppArmor profile for bwrap), or grade as root, or grade in a container: docker run or podman "
            "run with Docker's default capabilities (not --cap-drop ALL) runs the grader as root inside and gives mode "
            "container, as on Gradescope")


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

def _read_status(pid: str) -> bytes | None:
    try:
        fd = os.open(f"/proc/{pid}/status", os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 16384)      # the whole file (about 1.5 KiB) in one read
    except OSError:
        return None
    finally:
        os.close(fd)


def _proc_table(only_uid: int | None = None):
    """pid -> (uid, ppid, rss_kib, zombie, ns_init, nspid) for every process (with ``only_uid``: every process
    of that real uid), read from /proc (to measure and to find; a process is only ever signalled through a
    pidfd, see ``_kill_through_pidfd``).

    Zombies are listed: a process whose main thread exited shows as one while its other threads run on.
    With ``only_uid``, only the status of a process whose /proc folder that uid owns is read (the memory
    watchdog runs this five times a second for each job, on a machine that may have hundreds of processes): the
    folder is owned by the process's effective uid even when it is not dumpable (then only the files in it are
    root's), and a job's processes cannot make their effective uid differ from their real one."""
    wanted = None if only_uid is None else b"\nUid:\t%d\t" % only_uid
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        if only_uid is not None:
            try:
                if os.stat(f"/proc/{name}").st_uid != only_uid:
                    continue
            except OSError:
                continue
        data = _read_status(name)
        if data is None or (wanted is not None and wanted not in data):
            continue
        text = data.decode(errors="replace")
        uid = ppid = rss = 0
        zombie = ns_init = False
        nspid = ()
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
                nspid = tuple(line.split()[1:])
                ns_init = nspid[-1:] == ("1",) and len(nspid) > 1
        table[int(name)] = (uid, ppid, rss, zombie, ns_init, nspid)
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


def _sandbox_memory_mb(root_pid, uid, limit_mb, table=None) -> float:
    """Memory of the sandbox's processes in MiB: the resident size, or the proportional size when the
    resident sum is over the limit (forked copies share most of their pages). ``table``: a ``_proc_table()``
    just read."""
    table = _proc_table(uid) if table is None else table
    pids = [p for p in _tree_pids(table, root_pid, uid) if not table[p][3]]
    rss = sum(table[p][2] for p in pids) / 1024
    if rss <= limit_mb or len(pids) <= 1:
        return rss
    return sum(_pss_kib(p) for p in pids) / 1024


def _status_uid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _kill_through_pidfd(pid: int, uid: int) -> None:
    """SIGKILL process ``pid`` if it runs under ``uid``. The pidfd is opened first, the uid read after, and the
    process is checked to be alive after that: so the uid read was its own (a pid that was recycled in between
    fails the check), and the signal reaches that process, never another that got its pid."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        if _status_uid(pid) == uid:
            signal.pidfd_send_signal(fd, 0)          # ProcessLookupError if it is gone: then nothing is sent
            signal.pidfd_send_signal(fd, signal.SIGKILL)
    except OSError:
        pass
    finally:
        os.close(fd)


def _kill_uid(uid, timeout: float = Limits.KILL_TIMEOUT) -> bool:
    """SIGKILL every process of a sandbox uid, zombies included (a signal to a zombie leader kills the
    threads that run on), a job's namespace init first (its death takes its whole namespace); True once no
    process of the uid is left, not even a zombie waiting to be reaped."""
    if uid is None or not SANDBOX_UID_BASE <= uid < SANDBOX_UID_BASE + SANDBOX_UID_SLOTS:
        return True
    deadline = time.monotonic() + timeout
    while True:
        rows = _proc_table(uid)
        if not rows:
            return True
        if time.monotonic() > deadline:
            return False
        for pid in sorted(rows, key=lambda p: not rows[p][4]):
            _kill_through_pidfd(pid, uid)
        time.sleep(0.02)


# ---------------------------------------------------------------- building the command

def _ancestors(path: Path):
    parts = path.parts
    return [Path(*parts[:i]) for i in range(2, len(parts))]


def readable_paths(extra=()) -> list[Path]:
    """What the sandbox must see read-only: Python, the venv, the coursekit package, the dataset."""
    paths = [Path(sys.base_prefix), Path(sys.prefix), Path(sys.executable).resolve().parent.parent, PACKAGE]
    try:
        from coursekit.data import find_data_dir
        data_dir = find_data_dir()
        if data_dir is not None:
            paths.append(Path(data_dir).resolve())
    except Exception:       # no data is fine: the questions that need it fail with a clear error
        pass
    # package folders added by a .pth file (a venv that reuses another one's packages); never any other
    # sys.path entry: that may be the repository, with the solutions
    paths.extend(Path(p) for p in sys.path if p and Path(p).name in ("site-packages", "dist-packages"))
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


def bwrap_command(argv, spool: Path, ro_paths, rootless: bool = False) -> list[str]:
    """bubblewrap around the warm server: read-only system, Python, venv, coursekit, dataset; the spool
    (job folders) read-write at /spool; a root-owned /tmp no job can write; no network; own pid namespace.
    The server keeps only CAP_SETUID and CAP_SETGID, to hand each job its own uid, and CAP_SYS_ADMIN, to give
    each job its own PID and mount namespaces; a job drops them all with its uid. ``rootless``: in a user
    namespace of its own, as its uid 0 (the only uid it maps), keeping CAP_SETFCAP too: a job has no other
    uid to drop to, so it makes a user namespace of its own (its own process count; mapping the server's
    uid 0 into it needs CAP_SETFCAP), then drops every capability and the bounding set."""
    cmd = [bwrap_path()]
    if rootless:
        cmd += ["--unshare-user", "--uid", "0", "--gid", "0", "--cap-add", "CAP_SETFCAP"]
    cmd += [
           "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc",
           "--proc", "/proc", "--dev", "/dev",
           # a small /dev/shm: files there live in memory and no process's RSS counts them
           "--perms", "1777", "--size", str(Limits.SERVER_SHM_MB << 20), "--tmpfs", "/dev/shm",
           "--size", str(Limits.SERVER_TMP_MB << 20), "--perms", "0755", "--tmpfs", "/tmp"]
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
            "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SYS_ADMIN",
            "--cap-add", "CAP_NET_ADMIN", "--"]  # NET_ADMIN: to bring up each job's loopback
    return cmd + list(argv)


def check_unreadable(paths, uid: int) -> list[str]:
    """Paths among ``paths`` that user ``uid`` could read (modes "namespaces" and "container" rely on permissions)."""
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
        # torch.compile: no precompiled header (160 MB, past RLIMIT_FSIZE, so "CppCompileError")
        "TORCHINDUCTOR_CPP_CACHE_PRECOMPILE_HEADERS": "0",
    }
    if os.environ.get("COURSEKIT_DATA"):
        env["COURSEKIT_DATA"] = os.environ["COURSEKIT_DATA"]
    return env


class WarmServerError(RuntimeError):
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
        except FileNotFoundError:       # a grader from before the lock, or one about to take it: left alone a while
            fd = None
            try:
                if time.time() - spool.stat().st_mtime < Limits.UNLOCKED_SPOOL_AGE_S:
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


class WarmServer:
    """The warm server (``warm_server.py --serve``) in its sandbox, and the job folders ("spool") it works in.

    Thread-safe: several jobs may run at once, each in its own folder with its own uid.
    """

    def __init__(self, start_timeout: float = Limits.SERVER_START_TIMEOUT):
        self.mode = isolation_mode()
        if self.mode == "unavailable":
            raise WarmServerError("no isolation available, so no grading (student code never runs unisolated): "
                              + describe_isolation())
        clean_stale_spools()
        self.spool = Path(tempfile.mkdtemp(prefix=SPOOL_PREFIX))     # 0700: the grader's
        self._owner_lock = os.open(self.spool / "owner.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._owner_lock, fcntl.LOCK_EX)
        self.isolated = True        # every mode isolates (there is no "none")
        self.namespaces = self.mode in NAMESPACE_MODES
        self.bwrapped = self.mode in ("bwrap", "userns")
        self.spool.chmod(0o711)     # jobs' uids cross it (bwrap: the bind point) to their own folder
        self.inside = INSIDE_SPOOL if self.bwrapped else str(self.spool)
        self.has_data = _prepare_data(self.spool / "data")
        # what the jobs read that lives under /tmp (hidden by each job's own /tmp): bound back read-only
        self.readable_under_tmp = [str(p) for p in readable_paths() if Path("/tmp") in p.parents]
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._started, self._exits = {}, {}
        self._counter = 0
        self.ready_seconds = None
        self.failure = None
        argv = [sys.executable, "-I", "-B", "-u", str(WARM_SERVER_PROGRAM), "--serve"]
        env = job_env("/tmp" if self.bwrapped else str(self.spool), "/tmp" if self.bwrapped else str(self.spool))
        if self.namespaces:
            env["COURSEKIT_SANDBOX_ISOLATE"] = "1"
        if self.mode == "userns":       # no uid per job: a user namespace per job, for its own process limit
            env["COURSEKIT_JOB_USERNS"] = "1"
        if self.bwrapped:
            argv = bwrap_command(argv, self.spool, readable_paths(), rootless=self.mode == "userns")
        else:       # the server dies with this process (bwrap's --die-with-parent does it in the bwrap modes)
            env["COURSEKIT_GRADER_PID"] = str(os.getpid())
        self._log = open(self.spool / "server.log", "wb")
        # The server dies with the thread that started it (PR_SET_PDEATHSIG, bwrap --die-with-parent follow the
        # parent *thread*): a thread of its own starts it and lives until close(), not a short-lived worker.
        self._closed = threading.Event()
        spawned = {}
        started = threading.Event()

        def keeper():
            try:
                # no preexec_fn in this threaded process: the server sets its own parent-death signal
                spawned["proc"] = subprocess.Popen(argv, cwd=self.spool, env=env, stdin=subprocess.PIPE,
                                                   stdout=subprocess.PIPE, stderr=self._log,
                                                   start_new_session=True, close_fds=True)
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
            raise WarmServerError(f"the warm server could not be started: {spawned['error']}")
        self.proc = spawned["proc"]
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        with self._cond:
            if not self._cond.wait_for(lambda: self.ready_seconds is not None or self.failure is not None
                                       or self.proc.poll() is not None, timeout=start_timeout):
                self.close()
                raise WarmServerError(f"the warm server did not start within {start_timeout:g} s")
        if self.ready_seconds is None:
            log = (self.spool / "server.log").read_text(errors="replace")[-2000:]
            self.close()
            if self.failure:
                raise WarmServerError(f"the warm server cannot isolate jobs ({self.failure}); refusing to grade "
                                  f"unisolated (mode {self.mode}: {describe_isolation()})")
            raise WarmServerError(f"the warm server failed to start: {log}")

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
        host.mkdir(mode=0o711)
        work = host / protocol.WORK_DIR
        work.mkdir(mode=0o700)
        if uid is not None:
            os.chown(work, uid, uid)
        if self.has_data:
            os.symlink(f"{self.inside}/data", host / protocol.DATA_LINK)
        return job_id, host, f"{self.inside}/{job_id}"

    def command(self, job_id: str, inside: str, uid: int | None, limits: Limits) -> ServerCommand:
        """The server's instructions for one job."""
        # without namespaces (container) there is no private /tmp: the job's scratch is its own folder
        tmp = "/tmp" if self.namespaces else f"{inside}/{protocol.WORK_DIR}"
        return ServerCommand(job_id=job_id, folder=inside, uid=uid,
                             rlimits=limits.rlimits(uid is not None or self.mode == "userns"),
                             env=job_env(f"{inside}/{protocol.WORK_DIR}", tmp), shm_mb=limits.shm_mb,
                             tmp_mb=limits.tmp_mb, hide=self.inside if self.isolated else "",
                             keep=[inside] + ([f"{self.inside}/data"] if self.has_data else []),
                             keep_ro=self.readable_under_tmp if self.isolated else [])

    def start(self, cmd: ServerCommand, timeout: float = Limits.JOB_START_TIMEOUT):
        """Fork the job described by ``cmd``; returns its pid (as the server sees it)."""
        if not self.alive():
            raise WarmServerError("the warm server is not running")
        with self._lock:
            self.proc.stdin.write(cmd.to_line())
            self.proc.stdin.flush()
        with self._cond:
            if not self._cond.wait_for(lambda: cmd.job_id in self._started or not self.alive(), timeout=timeout):
                raise WarmServerError("the warm server did not start the job")
            if cmd.job_id not in self._started:
                raise WarmServerError("the warm server died")
            return self._started[cmd.job_id]

    def exit_code(self, job_id):
        """The job's exit code (negative: killed by that signal), or None while it runs."""
        with self._cond:
            return self._exits.get(job_id)

    def wait_exit(self, job_id, timeout: float):
        with self._cond:
            self._cond.wait_for(lambda: job_id in self._exits or not self.alive(), timeout=timeout)
            return self._exits.get(job_id)

    def kill_job(self, job_id, uid):
        """SIGKILL a job: the server kills its own child (in the namespace modes the whole PID namespace dies
        with it); then every process of the job's uid, if it has one, until none is left."""
        if self.alive():
            try:
                with self._lock:
                    self.proc.stdin.write(protocol.kill_line(job_id))
                    self.proc.stdin.flush()
            except (OSError, ValueError):
                pass
        if uid is not None:
            _kill_uid(uid)

    def job_memory_mb(self, uid, pid, limit_mb) -> float:
        """Memory of a job's processes: those of its uid; without one (userns), the tree under the job's
        process, found by its pid in the server's namespace (``pid``, as the server reported it)."""
        if uid is not None:
            return _sandbox_memory_mb(-1, uid, limit_mb)
        table = _proc_table()
        inside = _tree_pids(table, self.proc.pid, None)
        root = [p for p in inside if table[p][5][-2:] == (str(pid), "1")]
        return _sandbox_memory_mb(root[0], None, limit_mb, table) if root else 0.0

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
            self.proc.wait(timeout=Limits.SERVER_EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        self._closed.set()
        self._remove_spool()


def folder_usage(folder: Path, max_entries: int) -> tuple[int, int]:
    """(bytes, entries) under a job's folder, without following links; stops counting past ``max_entries`` (the
    job's ``Limits.max_files``)."""
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


def cgroup_memory_limit_mb() -> int | None:
    """The memory limit of the cgroup this process runs in (a container's ``--memory``), in MiB, or None."""
    candidates = [Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")]
    try:        # cgroup v2: this process's own group (a container sees its own as /)
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                candidates.insert(0, Path("/sys/fs/cgroup") / line[3:].lstrip("/") / "memory.max")
    except OSError:
        pass
    for path in candidates:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 50:      # v1 says "no limit" with a huge number, v2 with "max"
            return int(text) >> 20
    return None


def default_memory_mb() -> int:
    """The jobs' memory limit: ``Limits``'s default, or less in a container whose own limit is smaller (the
    grader and the warm server need ``Limits.GRADER_RESERVE_MB`` of it)."""
    default = Limits().memory_mb
    limit = cgroup_memory_limit_mb()
    if limit is None or limit - Limits.GRADER_RESERVE_MB >= default:
        return default
    return max(Limits.MIN_MEMORY_MB, limit - Limits.GRADER_RESERVE_MB)
