"""An instructor without root grades a small class with ``coursekit grade``, isolated (mode ``userns``).

Run for real: an ordinary user (``coursekit-instructor``, created if missing) gets a copy of what it needs in a
folder of its own (0700): the repository's ``coursekit`` and ``lab`` (the hidden tests), a Python it may run
(the project's Python lives under /root, 0700: Debian's 3.11 in a venv that adds the project venv's packages,
as ``test_isolation_modes`` does) and the class's submissions. It runs ``coursekit grade`` under a process limit
of its own (``ulimit -u``, as on a shared server). What is checked: the mode is found by itself and named in
summary.txt, every score is what it should be, a hostile notebook gets nothing beyond its own points, the jobs
never hold the instructor's uid *inside* (they are uid 0 of a user namespace of their own, with no capability)
while the kernel counts them under the instructor's uid *outside* (README, "Isolation guarantees and their
limits"), a fork bomb and a thread bomb stop at the job's own process limit while its classmate and the
instructor's other processes still start processes, and where no user namespace can be made the grader
refuses with what to do.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import nbformat
import pytest

import test_bad_submissions as bad
from coursekit.grading.protocol import Limits
from grading_helpers import require_bwrap
from test_isolation_modes import _user_venv

pytestmark = pytest.mark.slow

REPO = bad.REPO
INSTRUCTOR = "coursekit-instructor"
JOB_NPROC = Limits().max_processes      # each job's own process limit (the grader's default)
# the instructor's own process limit (ulimit -u), as a shared server would set one: room for both jobs' own
# limits (2 workers) and the grader's and the server's tasks (about 15), with a margin for its other processes
NPROC = 2 * JOB_NPROC + 72
# small enough for a small class, large enough for the solution's training (seconds of a busy core)
GRADE_FLAGS = ["--workers", "2", "--no-progress", "--cell-timeout", "60", "--timeout", "150",
               "--harvest-timeout", "60"]


def _instructor() -> tuple[int, int]:
    """(uid, gid) of the ordinary user who grades: created the first time (no home, no login shell)."""
    try:
        entry = pwd.getpwnam(INSTRUCTOR)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group",
                        INSTRUCTOR], check=True, capture_output=True)
        entry = pwd.getpwnam(INSTRUCTOR)
    assert entry.pw_uid != 0 and entry.pw_uid < 60000
    return entry.pw_uid, entry.pw_gid


# --------------------------------------------------------------------------------------------- the hostile one

# Appended to the untouched template (0 points of its own): every attack below must leave it at 0. It reports
# what it saw by raising at the end (a failed cell's error reaches the feedback; the cell defines nothing).
HOSTILE = r'''
import gc, json, os, signal, socket, time
_seen = {"uid": os.getuid(), "euid": os.geteuid(), "uid_map": open("/proc/self/uid_map").read().split(),
         "cap_eff": [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0]}
# a fork bomb, first (the listener starts processes and threads meanwhile): bounded by the job's own process
# limit; its children (zombies, which count until reaped) are held a while, then reaped
import threading
_children, _end = [], time.time() + 25
try:
    while time.time() < _end:
        _pid = os.fork()
        if _pid == 0:
            os._exit(0)
        _children.append(_pid)
    _seen["fork"] = f"not refused in 25 s: {len(_children)}"
except OSError as _e:
    _seen["fork"] = f"{type(_e).__name__} after {len(_children)}"
time.sleep(8)
for _pid in _children:
    os.waitpid(_pid, 0)
# a thread bomb: threads that wait, held a while, then let go
_gate, _threads, _end = threading.Event(), [], time.time() + 25
try:
    while time.time() < _end:
        _threads.append(threading.Thread(target=_gate.wait))
        _threads[-1].start()
    _seen["threads"] = f"not refused in 25 s: {len(_threads)}"
except RuntimeError as _e:
    _threads.pop()
    _seen["threads"] = f"{type(_e).__name__} after {len(_threads)}"
time.sleep(8)
_gate.set()
for _thread in _threads:
    _thread.join()
# talk to another job graded at the same time (the listener): an abstract Unix socket, a loopback port
_reached = []
_end = time.time() + 8
while time.time() < _end and not _reached:
    for _family, _address in ((socket.AF_UNIX, "\0coursekit-rootless-talk"), (socket.AF_INET, ("127.0.0.1", 47392))):
        try:
            socket.socket(_family).connect(_address)
            _reached.append(str(_address))
        except OSError:
            pass
    time.sleep(0.2)
_seen["reached"] = _reached
# the hidden tests, the solution, the instructor's folder, the other jobs' folders
for _key, _p in [("hidden", HIDDEN), ("solution", SOLUTION), ("home", INSTRUCTOR_HOME),
                 ("repo", INSTRUCTOR_HOME + "/repo"), ("spool", "/spool")]:
    try:
        _seen[_key] = sorted(os.listdir(_p)) if os.path.isdir(_p) else "read " + str(len(open(_p).read()))
    except OSError as _e:
        _seen[_key] = type(_e).__name__
# the files of its own job the grader trusts (results, the server's decisions, events): opened for writing only,
# nothing written (a forged decision would hide this cell's own report)
for _name in ["results.bin", "server.jsonl", "events.jsonl", "inputs.npz", "job.json"]:
    try:
        os.close(os.open(os.path.join(os.path.dirname(os.getcwd()), _name), os.O_WRONLY | os.O_APPEND))
        _seen["write " + _name] = "OPENED"
    except OSError as _e:
        _seen["write " + _name] = type(_e).__name__
# the grader's nonce, if it were anywhere in this process's objects
_seen["nonce objects"] = sorted({type(_o).__name__ for _o in gc.get_objects()
                                 if "nonce" in (getattr(_o, "__dict__", None) or {}) and not isinstance(_o, type)})
# signal the grader: a process of the instructor's uid (its pid outside), and every pid this job can name
try:
    os.kill(SENTINEL_PID, signal.SIGKILL)
    _seen["kill sentinel"] = "sent"
except OSError as _e:
    _seen["kill sentinel"] = type(_e).__name__
_seen["signalled pids"] = 0
for _pid in range(2, 4096):
    try:
        os.kill(_pid, signal.SIGTERM)
        _seen["signalled pids"] += 1
    except OSError:
        pass
raise RuntimeError("HOSTILE-REPORT " + json.dumps(_seen, sort_keys=True))
'''

LISTENER = r'''
import os, socket, threading, time
_unix = socket.socket(socket.AF_UNIX)
_unix.bind("\0coursekit-rootless-talk")
_tcp = socket.socket()
_tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
_tcp.bind(("127.0.0.1", 47392))
_heard, _started, _refused = [], 0, []
for _s in (_unix, _tcp):
    _s.listen()
    _s.settimeout(0.1)
_end = time.time() + 40
while time.time() < _end:
    for _s in (_unix, _tcp):
        try:
            _heard.append(str(_s.accept()[1]))
        except OSError:
            pass
    # while the hostile job's bombs hold their processes and threads: this job still starts its own
    try:
        _thread = threading.Thread(target=time.sleep, args=(0.01,))
        _thread.start()
        _thread.join()
        _pid = os.fork()
        if _pid == 0:
            os._exit(0)
        os.waitpid(_pid, 0)
        _started += 1
    except (OSError, RuntimeError) as _e:
        _refused.append(repr(_e))
assert not _heard, f"LISTENER-HEARD {_heard}"
assert not _refused and _started > 50, f"LISTENER-REFUSED {_started} {_refused[:3]}"
'''


def _hostile(home: Path, sentinel_pid: int) -> nbformat.NotebookNode:
    nb = nbformat.read(bad.STUDENT_NB, as_version=4)
    code = HOSTILE
    for name, value in (("HIDDEN", str(home / "repo" / "lab" / "autograder" / "hidden_tests.py")),
                        ("SOLUTION", str(home / "repo" / "lab" / "source" / "mlp_lab_solution.ipynb")),
                        ("INSTRUCTOR_HOME", str(home)), ("SENTINEL_PID", str(sentinel_pid))):
        code = code.replace(name, repr(value) if name != "SENTINEL_PID" else value)
    nb.cells.insert(0, nbformat.v4.new_code_cell(code))     # first, as the listener's: they overlap
    return nb


def _listener() -> nbformat.NotebookNode:
    nb = bad.solved()
    nb.cells.insert(0, nbformat.v4.new_code_cell(LISTENER))     # first: it starts no process or thread
    return nb


# name -> (notebook, points per question, status). Graded in name order, two at a time: "a-*" together.
def _class(home: Path, sentinel_pid: int) -> dict:
    untouched = nbformat.read(bad.STUDENT_NB, as_version=4)
    return {
        "a-hostile": (_hostile(home, sentinel_pid), bad.points(*bad.LAB_TESTS), "ok"),
        "a-listener": (_listener(), bad.points(), "ok"),
        "b-solution": (bad.solved(), bad.points(), "ok"),
        "b-untouched": (untouched, bad.points(*bad.LAB_TESTS), "ok"),
        # the bad-submission suite's own expectations: the two suites cannot drift apart when the lab changes
        "c-exception": (bad.build("exception"), *bad.EXPECTED["exception"]),
        "d-test-files": (bad.build("test_files"), *bad.EXPECTED["test_files"]),
    }


# ------------------------------------------------------------------------------------------------ set-up


def _give(path: Path, uid: int, gid: int):
    for p in [path, *path.rglob("*")]:
        os.chown(p, uid, gid, follow_symlinks=False)


def _instructor_folder(uid: int, gid: int) -> tuple[Path, Path]:
    """The instructor's own folder (0700) under /tmp with a copy of the repository's coursekit and lab, and a
    Python that imports that copy (a .pth line ahead of the project venv's packages). (folder, python)."""
    home = Path(tempfile.mkdtemp(prefix="coursekit-rootless-"))     # pytest's tmp_path is root's, 0700
    repo = home / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "coursekit", repo / "coursekit", ignore=ignore)
    shutil.copytree(REPO / "lab", repo / "lab", ignore=ignore)
    python = _user_venv(home)
    site = next((home / "uvenv").glob("lib/python3*/site-packages"))
    # found by the path finder before the project venv's editable finder (which points at /work/main)
    (site / "00_coursekit_copy.pth").write_text(f"{repo}\n")
    _give(home, uid, gid)
    home.chmod(0o700)
    return home, python


def _as_instructor(uid: int, gid: int, *setpriv: str) -> list[str]:
    return ["prlimit", f"--nproc={NPROC}", "--", "setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
            *setpriv, "--"]


def _env(home: Path) -> dict:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    if os.environ.get("COURSEKIT_DATA"):
        env["COURSEKIT_DATA"] = os.environ["COURSEKIT_DATA"]
    return env


class _JobWatcher(threading.Thread):
    """Sees the grader's processes from outside while the class is graded: the jobs (two PID namespaces below
    this one: bwrap's, then the job's own) with their uid as the kernel has it here; the user namespaces of
    bwrap and the server; in each look, the user namespaces of the jobs' main processes (process 1 of their PID
    namespace) other than those (a job makes its own just after its fork): the most at once, and whether two
    were ever one; and the most tasks (threads) of the instructor's uid at once, with when that was."""

    def __init__(self, uid: int):
        super().__init__(daemon=True)
        self.uid, self.root, self.uids, self.peak_tasks, self.stop = uid, None, set(), 0, threading.Event()
        self.peak_at, self.server_userns, self.most_apart, self.shared_looks = 0.0, set(), 0, 0

    def run(self):
        while not self.stop.is_set():
            table = {}
            for name in os.listdir("/proc"):
                if name.isdigit():
                    try:
                        status = dict(line.split(":\t", 1) for line in
                                      open(f"/proc/{name}/status").read().splitlines() if ":\t" in line)
                        table[int(name)] = (int(status["Uid"].split()[0]), int(status["PPid"]),
                                            status["NSpid"].split(), int(status["Threads"]))
                    except (OSError, ValueError, KeyError):
                        pass
            tasks = sum(row[3] for row in table.values() if row[0] == self.uid)
            if tasks > self.peak_tasks:
                self.peak_tasks, self.peak_at = tasks, time.monotonic()
            job_mains = []
            for pid, (uid, _, nspid, _) in sorted(table.items(), key=lambda item: len(item[1][2])):
                ancestor, seen = pid, 0
                while ancestor in table and ancestor != self.root and seen < 64:
                    ancestor, seen = table[ancestor][1], seen + 1
                if ancestor != self.root or self.root is None or len(nspid) < 2:
                    continue
                if len(nspid) >= 3:
                    self.uids.add(uid)
                try:
                    user = os.readlink(f"/proc/{pid}/ns/user")
                except OSError:
                    continue
                if len(nspid) == 2:         # sorted by depth: seen before the jobs of this look
                    self.server_userns.add(user)
                elif nspid[-1] == "1" and user not in self.server_userns:
                    job_mains.append(user)
            self.most_apart = max(self.most_apart, len(job_mains))
            self.shared_looks += len(set(job_mains)) != len(job_mains)
            time.sleep(0.1)


class _ForkProber(threading.Thread):
    """Every half second, a process of the instructor's (under its process limit) that starts a child: what
    the instructor's other work needs while the class is graded. (time, exit code) of each."""

    def __init__(self, uid: int, gid: int):
        super().__init__(daemon=True)
        self.argv = [*_as_instructor(uid, gid), "sh", "-c", "true & wait $!"]
        self.runs, self.stop = [], threading.Event()

    def run(self):
        while not self.stop.wait(0.5):
            started = time.monotonic()
            code = subprocess.run(self.argv, capture_output=True).returncode
            self.runs.append((started, time.monotonic(), code))


@pytest.fixture(scope="module")
def graded_rootless():
    require_bwrap()
    uid, gid = _instructor()
    home, python = _instructor_folder(uid, gid)
    sentinel = subprocess.Popen([*_as_instructor(uid, gid), "sleep", "900"])
    watcher = _JobWatcher(uid)
    prober = _ForkProber(uid, gid)
    try:
        subs = home / "subs"
        subs.mkdir()
        expected = _class(home, sentinel.pid)
        for name, (nb, _, _) in expected.items():
            nbformat.write(nb, subs / f"{name}.ipynb")
        _give(home, uid, gid)
        out = home / "out"
        t0 = time.monotonic()
        proc = subprocess.Popen([*_as_instructor(uid, gid), str(python), "-m", "coursekit.cli", "grade", str(subs),
                                 "--out", str(out), *GRADE_FLAGS], env=_env(home), cwd=home,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        watcher.root = proc.pid         # prlimit and setpriv exec: this pid becomes the grader's
        watcher.start()
        prober.start()
        proc.stdout_text, proc.stderr_text = proc.communicate(timeout=1500)
        seconds = time.monotonic() - t0
        for thread in (watcher, prober):
            thread.stop.set()
            thread.join()
        assert proc.returncode == 0, (proc.stdout_text[-3000:], proc.stderr_text[-3000:])
        records = {p.stem: json.loads(p.read_text())["grade"] for p in (out / "records").glob("*.json")}
        feedback = {name: (out / "feedback" / f"{name}.txt").read_text() for name in records}
        yield {"uid": uid, "home": home, "stdout": proc.stdout_text, "summary": (out / "summary.txt").read_text(),
               "records": records, "feedback": feedback, "expected": expected, "seconds": seconds,
               "job_uids": watcher.uids, "peak_tasks": watcher.peak_tasks, "peak_at": watcher.peak_at,
               "most_apart": watcher.most_apart, "shared_looks": watcher.shared_looks,
               "server_userns": watcher.server_userns, "probes": prober.runs,
               "sentinel_alive": sentinel.poll() is None}
    finally:
        watcher.stop.set()
        prober.stop.set()
        sentinel.kill()
        sentinel.wait()
        shutil.rmtree(home, ignore_errors=True)


def _hostile_report(feedback: str) -> dict:
    line = next(line for line in feedback.splitlines() if "HOSTILE-REPORT " in line)
    text = line.split("HOSTILE-REPORT ", 1)[1]
    return json.loads(text[: text.rindex("}") + 1])


# ------------------------------------------------------------------------------------------------- the tests


def test_userns_is_found_by_itself_and_named_in_the_summary(graded_rootless):
    g = graded_rootless
    report = _hostile_report(g["feedback"]["a-hostile"])
    print(f"graded {len(g['records'])} submissions as {INSTRUCTOR} in {g['seconds']:.0f} s; at most "
          f"{g['peak_tasks']} tasks of its uid at once (its limit {NPROC}, a job's {JOB_NPROC}); the hostile fork "
          f"loop: {report.get('fork')}, thread loop: {report.get('threads')}; {len(g['probes'])} forks of the "
          f"instructor's meanwhile, {sum(code != 0 for _, _, code in g['probes'])} refused")
    assert g["stdout"].splitlines()[0].startswith("isolation: userns: bubblewrap in an unprivileged user namespace")
    assert "userns" in g["summary"], g["summary"]


def test_every_score_is_as_expected(graded_rootless):
    g = graded_rootless
    assert sorted(g["records"]) == sorted(g["expected"])
    for name, (_, points, status) in g["expected"].items():
        grade = g["records"][name]
        got = tuple(q["points"] for q in grade["questions"])
        assert (got, grade["status"]) == (points, status), (name, g["feedback"][name][-3000:])


def test_the_hostile_notebook_gets_nothing(graded_rootless):
    g = graded_rootless
    report = _hostile_report(g["feedback"]["a-hostile"])
    assert g["records"]["a-hostile"]["total"] == 0
    assert report["hidden"] == report["solution"] == "FileNotFoundError", report    # not in its world at all
    assert report["home"] == ["repo", "uvenv"] and report["repo"] == ["coursekit"], report  # what bwrap binds
    assert report["spool"] == ["data", report["spool"][1]] and report["spool"][1].startswith("job"), report
    assert report["kill sentinel"] == "ProcessLookupError" and g["sentinel_alive"], report
    assert report["signalled pids"] == 0, report        # its own PID namespace: no process but its own
    assert report["reached"] == [], report
    assert "LISTENER-HEARD" not in g["feedback"]["a-listener"]
    assert report["fork"].startswith("BlockingIOError after "), report
    # the files it would forge are gone by name before the job exists (the grader reads them through its own
    # descriptors), and the grader's nonce is in none of its objects (tests/test_nonce.py searches its memory)
    for name in ("results.bin", "server.jsonl", "inputs.npz", "job.json"):
        assert report[f"write {name}"] == "FileNotFoundError", report
    assert report["nonce objects"] == [], report


def test_no_job_holds_the_instructors_uid_inside_and_the_kernel_counts_them_as_the_instructor(graded_rootless):
    g = graded_rootless
    report = _hostile_report(g["feedback"]["a-hostile"])
    assert report["uid"] == report["euid"] == 0 and int(report["cap_eff"], 16) == 0, report
    # uid 0 of its own user namespace is the server's uid 0 (bwrap's namespace), the instructor outside
    assert report["uid_map"] == ["0", "0", "1"], report
    assert g["job_uids"] == {g["uid"]}, g["job_uids"]                   # never root, never anyone else


def test_each_job_has_a_user_namespace_and_a_process_limit_of_its_own(graded_rootless):
    """A fork bomb and a thread bomb stop at the job's own limit (its user namespace's RLIMIT_NPROC), far below
    the instructor's; the classmate graded beside it (the listener, solved: full points) and the instructor's
    other processes start processes and threads meanwhile."""
    g = graded_rootless
    report = _hostile_report(g["feedback"]["a-hostile"])
    assert g["server_userns"], g        # bwrap's and the server's (bwrap nests one to map uid 0)
    # two jobs at once (the workers), each in a user namespace of its own, never one shared; inside, its uid 0
    # is the server's (test above: uid_map "0 0 1"), not the instructor's as it would be in the server's
    assert g["most_apart"] >= 2 and g["shared_looks"] == 0, (g["most_apart"], g["shared_looks"])
    # the job's own tasks (its main thread, at most a few others) count too: refused just below its limit
    for what, error in (("fork", "BlockingIOError"), ("threads", "RuntimeError")):
        kind, _, count = report[what].partition(" after ")
        assert kind == error and JOB_NPROC - 8 <= int(count) < JOB_NPROC, report
    assert g["peak_tasks"] <= NPROC - 40, g["peak_tasks"]    # the instructor's own limit was far away
    assert "LISTENER-REFUSED" not in g["feedback"]["a-listener"], g["feedback"]["a-listener"][-2000:]
    assert g["records"]["a-listener"]["total"] == sum(bad.points())
    refused = [run for run in g["probes"] if run[2] != 0]
    assert not refused and len(g["probes"]) > 20, refused
    # one of them while the most tasks of the instructor's uid were alive (the bombs' at their height)
    assert any(start - 1.0 <= g["peak_at"] <= end + 1.0 for start, end, _ in g["probes"]), g["peak_at"]


def test_without_user_namespaces_grading_refuses_and_says_what_to_do():
    """As in a container with Docker's default seccomp profile, or a system with user namespaces turned off:
    the grader's own process may not make new namespaces (the jobs' seccomp filter, installed first)."""
    require_bwrap()
    uid, gid = _instructor()
    home, python = _instructor_folder(uid, gid)
    try:
        subs = home / "subs"
        subs.mkdir()
        nbformat.write(bad.solved(), subs / "solution.ipynb")
        _give(home, uid, gid)
        no_namespaces = ("import os, sys\n"
                         "from coursekit.grading import seccomp_filter\n"
                         "seccomp_filter.install(seccomp_filter.job_filter(block_network=False))\n"
                         "os.execv(sys.executable, [sys.executable, '-m', 'coursekit.cli', *sys.argv[1:]])\n")
        proc = subprocess.run([*_as_instructor(uid, gid, "--no-new-privs"), str(python), "-c", no_namespaces, "grade", str(subs),
                               "--out", str(home / "out"), *GRADE_FLAGS], env=_env(home), cwd=home,
                              capture_output=True, text=True, timeout=300)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text[-3000:]
    assert "isolation: unavailable: not root, and no unprivileged user namespace" in text, text[-3000:]
    for what_to_do in ("apt-get install bubblewrap", "kernel.unprivileged_userns_clone=1",
                       "user.max_user_namespaces", "grade as root"):
        assert what_to_do in text, text[-3000:]
    assert not (home / "out" / "gradebook.csv").exists()
