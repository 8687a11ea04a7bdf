"""The harvest's nonce (the mark a results frame must carry to be accepted) is in no job's memory, nor in the
memory of the warm server that forks the jobs: only the grader holds it (issue 17 §2, "forged results").

In each mode the suite runs here (``bwrap``, ``namespaces`` and ``container`` as root, asked for with
``$COURSEKIT_SANDBOX``; ``userns`` as the ordinary user nobody), a script in a process of its own grades two
notebooks at the same time, its grader's nonces made known to the test (job k's nonce is ``TAG + TAILS[k]``).
Both notebooks search their own writable memory (``/proc/self/mem``) for any of those nonces, raw, hex or HEX:
in a cell, while the other job runs (a job forked later used to hold the nonces of the jobs in flight), and in
the harvest's call of their function (the question's process). A nonce-shaped value planted beside the search
is the control that it sees the process's objects. From outside, the script searches the warm server's memory
while both jobs run and after, and its own (the grader's, which holds the nonces: the control of that search).
Nothing may be found but the controls, the honest notebook scores full marks (frames still carry the nonce),
the other nothing.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from grading_helpers import require_bwrap
from test_isolation_modes import nobody_home

TESTS = Path(__file__).resolve().parent
pytestmark = pytest.mark.slow

# Defines the search, in a notebook's cell and in the grading script alike. The nonces are never built whole here.
SCAN = r"""
import hashlib as _hl

_TAG = _hl.sha256(b"coursekit-nonce-test-tag").digest()[:16]
_TAILS = [_hl.sha256(b"coursekit-nonce-test-%d" % _k).digest()[:16] for _k in range(16)]
_CONTROL = _hl.sha256(b"coursekit-nonce-test-control").digest()[:16]


def _scan_memory(pid="self", plant=True):
    '''Copies of a test nonce (``_TAG`` + a tail of ``_TAILS``), raw, hex and HEX, in the private writable memory
    of process ``pid``, and of the control (``_TAG + _CONTROL``, planted here when ``plant``); read through
    /proc/<pid>/mem, or where this process may not open its own (not dumpable: its /proc files are root's),
    with ctypes. ``{"nonces", "control", "mib", "route"}``; ``{"refused": ...}`` if neither route is open.'''
    import gc
    forms = [(_TAG, set(_TAILS), _CONTROL),
             (_TAG.hex().encode(), {t.hex().encode() for t in _TAILS}, _CONTROL.hex().encode()),
             (_TAG.hex().upper().encode(), {t.hex().upper().encode() for t in _TAILS}, _CONTROL.hex().upper().encode())]
    planted = [_TAG + _CONTROL, (_TAG + _CONTROL).hex(), (_TAG + _CONTROL).hex().upper()] if plant else []
    with open(f"/proc/{pid}/maps") as fh:
        regions = [line.split() for line in fh]
    overlap, size = 64, 1 << 24
    buf = bytearray(overlap + size)         # one buffer: the search allocates nothing large while it reads
    view = memoryview(buf)
    mem = route = None
    try:
        mem, route = open(f"/proc/{pid}/mem", "rb", buffering=0), "/proc/mem"
    except PermissionError as exc:
        if pid != "self":
            raise
        try:
            import ctypes
            target, route = (ctypes.c_char * len(buf)).from_buffer(buf), "ctypes"
        except Exception as exc2:       # the harvest's audit hook refuses ctypes
            return {"refused": f"{exc!r}; {exc2!r}"}
    found = control = scanned = 0
    gc.disable()        # nothing freed (no region unmapped) while ctypes reads
    try:
        for parts in regions:
            if parts[1] != "rw-p" or (len(parts) > 5 and parts[5].startswith("[v")):
                continue
            low, high = (int(x, 16) for x in parts[0].split("-"))
            pos, kept = low, 0
            while pos < high:
                n = min(high - pos, size)
                if mem is not None:
                    try:
                        mem.seek(pos)
                        n = mem.readinto(view[overlap:overlap + n]) or 0
                    except (OSError, OverflowError):
                        break
                    if not n:
                        break
                else:
                    ctypes.memmove(ctypes.addressof(target) + overlap, pos, n)
                start, end = overlap - kept, overlap + n
                for head, tails, control_tail in forms:
                    i = buf.find(head, start, end)
                    while i >= 0:
                        if i + 2 * len(head) > overlap:    # not wholly in the part searched with the last chunk
                            tail = bytes(view[i + len(head):i + 2 * len(head)])
                            if tail == control_tail:
                                control += 1
                            elif tail in tails:
                                found += 1
                        i = buf.find(head, i + 1, end)
                view[:overlap] = view[end - overlap:end]
                kept = min(overlap, kept + n)
                scanned += n
                pos += n
    finally:
        gc.enable()
        if mem is not None:
            mem.close()
    del planted
    return {"nonces": found, "control": control, "mib": scanned >> 20, "route": route}


def _wait_for(name, seconds):
    '''Until the test's grader has searched this process from outside (it leaves ``name`` in its cwd).'''
    import os, time
    end = time.monotonic() + seconds
    while time.monotonic() < end and not os.path.exists(name):
        time.sleep(0.05)
    return os.path.exists(name)
"""

# a cell: search its own memory while the other job runs, stay until searched from outside, report in the output
CELL_SCAN = r"""
import json, os
_wait_for("searched-job", 80)
_report = _scan_memory()
try:        # the nonce's file, by name (in mode userns the job owns the files of its folder)
    os.close(os.open("../nonce", os.O_RDONLY))
    _report["nonce file"] = "OPENED"
except OSError as _e:
    _report["nonce file"] = type(_e).__name__
print("NONCE-SCAN cell " + json.dumps(_report))
"""

# a cell: os.close that leaves regular files open (the harvest's question process must still lose the results and
# nonce files: it closes them as os.close was before any cell ran)
KEEP_FILES = r"""
import os, stat
_close = os.close

def _keep_files_open(fd):
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        _close(fd)

os.close = _keep_files_open
"""

PROBE = r"""
def probe():
    import os, stat
    unlinked = []       # the channel's files (results, nonce, inputs) are removed by name before the job exists
    for fd in range(3, 1024):
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_nlink == 0:
            unlinked.append(fd)
    return dict(_scan_memory(), searched=_wait_for("searched-question", 50), unlinked=unlinked)
"""

ADD_MUL = {"honest": "def add(a, b):\n    return a + b\n\ndef mul(a, b):\n    return a * b\n",
           "wrong": "def add(a, b):\n    return a - b\n\ndef mul(a, b):\n    return a + b\n"}

# The grading script (a process of its own: the mode is chosen once per process). argv: tests folder, work folder.
SCRIPT = r"""
import json, os, sys, threading, time, types
sys.path[:0] = [sys.argv[1], os.path.dirname(sys.argv[1])]     # the tests, and this repository's coursekit
from grading_helpers import TINY_HARVEST, TinySpec, make_notebook, run_many, tiny_inputs
import test_nonce
from coursekit.grading import runner
from coursekit.grading.protocol import Limits
from coursekit.grading.sandbox import isolation_mode

scan_ns = {}
exec(test_nonce.SCAN, scan_ns)
scan = scan_ns["_scan_memory"]
made = []

def token_bytes(n):     # the grader's nonces, made known to the test: job k's is TAG + TAILS[k]
    assert n == 32
    made.append(len(made))
    return scan_ns["_TAG"] + scan_ns["_TAILS"][made[-1]]

runner.secrets = types.SimpleNamespace(token_bytes=token_bytes)
work = sys.argv[2]
inputs = tiny_inputs()
harvest = TINY_HARVEST + "\n_ck_outcome = (_out, dict(_meta, probe=probe()))\n"
limits = Limits(cell_timeout=90, submission_timeout=180, harvest_timeout=120)     # a call: 60 s
notebooks = {name: make_notebook(f"{work}/{name}.ipynb", test_nonce.SCAN, test_nonce.KEEP_FILES, test_nonce.CELL_SCAN,
                                 test_nonce.PROBE,
                                 test_nonce.ADD_MUL[name]) for name in ("honest", "wrong")}
KINDS = ["server", "job", "harvest", "question"]     # by depth below the server: its fork, H, H's fork

def processes():
    '''{pid: kind} of the warm server (the top-most python running warm_server.py: not bwrap, which has it in
    its arguments) and every process below it.'''
    parent = {}
    for name in os.listdir("/proc"):
        try:
            status = open(f"/proc/{name}/status").read()
            parent[int(name)] = int(status.split("\nPPid:\t", 1)[1].split()[0])
        except (OSError, ValueError, IndexError):
            pass
    z = runner._WARM_SERVER[0]
    queue, server = [z.proc.pid] if z else [], None
    while queue and server is None:
        pid = queue.pop(0)
        try:
            argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if not argv[0].endswith(b"bwrap") and any(a.endswith(b"warm_server.py") for a in argv):
            server = pid
        queue += [p for p, pp in parent.items() if pp == pid]
    if server is None:
        return {}
    kinds, level = {server: "server"}, [server]
    for kind in KINDS[1:]:
        level = [p for p, pp in parent.items() if pp in level]
        kinds.update({p: kind for p in level})
    return kinds

outside = {kind: {"searches": 0, "nonces": 0, "max mib": 0} for kind in KINDS + ["grader"]}
done = threading.Event()

def note(kind, r):
    o = outside[kind]
    o["searches"] += 1
    o["nonces"] += r["nonces"]
    o["max mib"] = max(o["max mib"], r["mib"])

def watch():
    while not done.is_set():
        kinds = processes()
        both = sum(1 for k in kinds.values() if k == "job") >= 2
        # deepest first; a question's call is let go once its harvest is searched too (it ends with it), a job's
        # cells only in a round that searched the server while both jobs ran
        for kind in reversed(KINDS):
            if kind == "server" and not both:
                continue
            for pid in [p for p, k in kinds.items() if k == kind]:
                try:
                    note(kind, scan(pid, plant=False))
                except (OSError, ValueError):
                    continue            # gone meanwhile
            for done_kind in {"harvest": ["question"], "server": ["job"]}.get(kind, []):
                for pid in [p for p, k in kinds.items() if k == done_kind]:
                    try:
                        open(f"/proc/{pid}/cwd/searched-{done_kind}", "w").close()
                    except OSError:
                        pass
        if both and outside["grader"]["searches"] == 0:
            note("grader", scan(os.getpid(), plant=False))
        time.sleep(0.1)

watcher = threading.Thread(target=watch)
watcher.start()
try:
    results = run_many({name: (lambda p=p: runner.execute_submission(p, harvest, inputs, limits))
                        for name, p in notebooks.items()})
finally:
    done.set()
    watcher.join()
server = [p for p, k in processes().items() if k == "server"]
note("server", scan(server[0], plant=False))
report = {"mode": isolation_mode(), "nonces made": len(made), "outside": outside}
for name, r in results.items():
    cell = [l for l in r.log.splitlines() if l.startswith("NONCE-SCAN cell ")]
    report[name] = {"points": [q.points for q in TinySpec().score(inputs, r)], "harvested": r.harvested,
                    "errors": r.cell_errors, "flags": r.runtime_flags,
                    "cell": json.loads(cell[0].split(" ", 2)[2]) if cell else None,
                    "question process": r.meta.get("probe")}
print("NONCE-REPORT " + json.dumps(report))
"""


def _graded(env: dict, prefix=(), python=sys.executable, cwd=None) -> dict:
    work = Path(tempfile.mkdtemp(prefix="coursekit-nonce-test-"))
    try:
        if prefix:      # the ordinary user writes the notebooks there
            work.chmod(0o777)
        proc = subprocess.run([*prefix, str(python), "-c", SCRIPT, str(TESTS), str(work)], env=env,
                              capture_output=True, text=True, timeout=600, cwd=cwd or work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    line = [l for l in proc.stdout.splitlines() if l.startswith("NONCE-REPORT ")]
    assert proc.returncode == 0 and line, (proc.stdout[-3000:], proc.stderr[-3000:])
    return json.loads(line[0].split(" ", 1)[1])


def _check(report: dict, mode: str):
    assert report["mode"] == mode, report
    assert report["nonces made"] >= 2, report
    for name, full in (("honest", [2, 3]), ("wrong", [0, 0])):
        r = report[name]
        assert r["harvested"] and r["points"] == full, (name, r)
        cell, question = r["cell"], r["question process"]
        assert cell["mib"] > 50 and cell["control"] >= 3 and cell["nonces"] == 0, (name, cell)
        assert cell["nonce file"] == "FileNotFoundError", (name, cell)
        assert question["searched"] and question["unlinked"] == [], (name, question)
        if mode == "userns":    # uid 0 of its namespace: its /proc files are its own, so it reads its memory
            assert question["mib"] > 50 and question["control"] >= 3 and question["nonces"] == 0, (name, question)
        else:                   # not dumpable (/proc/self/mem is root's), ctypes refused: searched from outside only
            assert "refused" in question, (name, question)
    outside = report["outside"]
    assert outside["grader"]["nonces"] >= 1, outside        # the search from outside sees what is there
    for kind in ("server", "job", "harvest", "question"):
        assert outside[kind]["searches"] >= 1 and outside[kind]["max mib"] > 50, (kind, outside)
        assert outside[kind]["nonces"] == 0, (kind, outside)


@pytest.mark.parametrize("mode", ["bwrap", "namespaces", "container"])
def test_no_job_and_not_the_warm_server_holds_the_nonce_as_root(mode):
    require_bwrap()     # root with bubblewrap: every root mode can be asked for
    t0 = time.monotonic()
    report = _graded(dict(os.environ, COURSEKIT_SANDBOX=mode))
    print(f"mode {mode}: {time.monotonic() - t0:.0f} s; {json.dumps(report)[:1500]}")
    _check(report, mode)


def test_no_job_and_not_the_warm_server_holds_the_nonce_as_an_ordinary_user():
    """Mode userns (the ordinary user nobody): each job is uid 0 of the namespace, owner of its folder's files."""
    require_bwrap()
    with nobody_home("coursekit-nonce-userns-") as (home, python, env, as_nobody):
        t0 = time.monotonic()
        report = _graded(env, prefix=as_nobody, python=python, cwd=home)
        print(f"mode userns: {time.monotonic() - t0:.0f} s; {json.dumps(report)[:1500]}")
    _check(report, "userns")
