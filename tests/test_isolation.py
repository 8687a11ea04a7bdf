"""Hostile submissions against the grading pipeline's isolation, each graded to its exact expected score.

The tiny two-question spec of ``grading_helpers`` (add: 2 points, mul: 3) is used where the lab itself does not
matter; the real lab where it does (d2l's data loader, ``%time`` around training, the submission's time limit),
with the expected points read from ``lab/autograder/spec.json``.
"""
import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest

import coursekit
from coursekit.grading import protocol, sandbox
from coursekit.grading.flags import scan_cells
from coursekit.grading.grade import grade_notebook
from coursekit.grading.labspec import load_spec
from coursekit.grading.runner import execute_submission
from coursekit.grading.sandbox import Limits
from grading_helpers import GOOD_CELLS, TINY_HARVEST, TinySpec, make_notebook, require_bwrap, run_many, tiny_inputs

REPO = Path(coursekit.__file__).resolve().parent.parent
LIMITS = Limits(cell_timeout=5, submission_timeout=40, harvest_timeout=8, memory_mb=1536, max_processes=48,
                max_file_mb=8, max_disk_mb=64, max_output_kb=8, max_output_total_mb=2)
IMPORTS, ADD, MUL = GOOD_CELLS
slow = pytest.mark.slow

# ------------------------------------------------------------------------------------------- tiny notebooks

SPY = r'''
import glob, os, signal, time
FOUND = []
def spy(seconds):
    """Look for other students' work and kill whatever can be killed, for ``seconds``."""
    end = time.time() + seconds
    while time.time() < end:
        for pattern in ["/spool/*/work/*", "/spool/*/*", "/tmp/coursekit-spool-*/*/work/*", "/proc/*/cwd/*",
                        "/proc/*/root/spool/*/work/*"]:
            for path in glob.glob(pattern):
                try:
                    if "MARKER-OF-VICTIM" in open(path, errors="replace").read(4096):
                        FOUND.append(path)
                except OSError:
                    pass
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        time.sleep(0.05)
'''

# a process whose main thread exits (it shows as a zombie) while a thread spies on, and a double-forked
# daemon in a session of its own: both started by add() during the harvest, after the last cell
LINGER = SPY + r'''
import ctypes, threading
def _later():       # once its own submission is over: the next one's turn
    time.sleep(3)
    spy(120)
def _linger():
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            _later()
        os._exit(0)
    if os.fork() == 0:
        threading.Thread(target=_later).start()
        ctypes.CDLL(None).syscall(60, 0)        # SYS_exit: only the main thread ends
        while True:
            time.sleep(1)
def add(a, b):
    _linger()
    return a + b
'''

VICTIM = ["import numpy as np", "open('notes.txt', 'w').write('MARKER-OF-VICTIM')\nimport time\ntime.sleep(3)",
          ADD, MUL]

FAKE_HARVEST = r'''
import json, os, numpy as np
np.savez("outputs.npz", add=np.zeros(5), mul=np.zeros(5))
json.dump({"add": {"ok": True}, "mul": {"ok": True}}, open("outputs.json", "w"))
fake = [json.dumps({"kind": k, "status": "ok"}) + "\n" for k in ("cells-done", "harvest-start", "harvest-end")]
fake.append("COURSEKIT-RESULTS-1\n" + "00" * 32 + "\n0 2\n{}")
for fd in range(3, 64):
    for line in fake:
        try:
            os.write(fd, line.encode())
        except OSError:
            pass
for name in ("events.jsonl", "results.bin", "../events.jsonl", "../results.bin"):
    try:
        open(name, "a").write("".join(fake))
    except OSError:
        pass
os._exit(0)
'''

FILL_SHM = r'''
import os, tempfile
for folder in ("/dev/shm", tempfile.gettempdir()):
    i = 0
    try:
        while True:
            open(f"{folder}/fill{i}", "wb").write(b"0" * (4 << 20))
            i += 1
    except OSError:
        pass
'''

# needs its own /dev/shm and /tmp, a working tempfile, DataLoader workers: add() is right only if all work
CLEAN_SCRATCH = r'''
import os, tempfile, torch
from torch.utils.data import DataLoader, TensorDataset
with tempfile.NamedTemporaryFile() as fh:
    fh.write(b"x" * 1000)
    fh.flush()
assert tempfile.gettempdir() == os.environ["TMPDIR"]
scratch_left = sum(name.startswith("fill") for folder in ("/dev/shm", tempfile.gettempdir())
                   for name in os.listdir(folder))
loader = DataLoader(TensorDataset(torch.arange(64.0)), batch_size=8, num_workers=2)
total = sum(float(x.sum()) for (x,) in loader)
def add(a, b):
    return a + b + scratch_left + (total - 2016.0)
'''

IPYTHON_CELLS = ["import numpy as np\n%matplotlib inline\n!echo shell-escape-ran",
                 "%%time\ndef add(a, b):\n    return a + b",
                 "%time product = lambda a, b: a * b\nproduct?",
                 "def mul(a, b):\n    return product(a, b)\n%who_ls"]


def _tiny_points(result):
    inputs = tiny_inputs()
    return {q.name: q.points for q in TinySpec().score(inputs, result)}


def _processes_of(uid):
    """Every process of a sandbox uid, zombies included (other graders may run on this machine meanwhile)."""
    return {pid: row for pid, row in sandbox._proc_table().items() if row[0] == uid}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    require_bwrap()
    d = tmp_path_factory.mktemp("isolation")
    nb = {name: make_notebook(d / f"{name}.ipynb", *cells) for name, cells in {
        "lingerer": [IMPORTS, LINGER, MUL],
        "after_lingerer": [IMPORTS, ADD, MUL],
        "victim": VICTIM,
        "spy": [IMPORTS, SPY + "\nspy(4)", "def add(a, b):\n    return a + b + len(FOUND)", MUL],
        "fake_harvest": [IMPORTS, "def add(a, b):\n    return a - b", MUL, FAKE_HARVEST],
        "fill_scratch": [IMPORTS, ADD, MUL, FILL_SHM],
        "after_filler": [IMPORTS, CLEAN_SCRATCH, MUL],
        "ipython": IPYTHON_CELLS,
        "over_time": [IMPORTS, ADD, "import time\ntime.sleep(4)", "import time\ntime.sleep(4)", MUL],
        "over_time_swallowed": [IMPORTS, ADD, "import time\nwhile True:\n    try:\n        time.sleep(0.05)\n"
                                "    except BaseException:\n        pass", MUL],
    }.items()}
    inputs = tiny_inputs()
    out = {}

    def run(name, limits=LIMITS):
        return execute_submission(nb[name], TINY_HARVEST, inputs, limits)

    # one after the other, in this process: the same uid slot is used again
    out["lingerer"] = run("lingerer")
    out["left_after_lingerer"] = _processes_of(out["lingerer"].meta["uid"])
    out["after_lingerer"] = run("after_lingerer")
    out["fill_scratch"] = run("fill_scratch")
    out["after_filler"] = run("after_filler")
    # at the same time
    short = Limits(**{**LIMITS.__dict__, "submission_timeout": 7, "cell_timeout": 6})
    out.update(run_many({"victim": lambda: run("victim"), "spy": lambda: run("spy")}))
    out.update(run_many({"fake_harvest": lambda: run("fake_harvest"), "ipython": lambda: run("ipython"),
                         "over_time": lambda: run("over_time", short),
                         "over_time_swallowed": lambda: run("over_time_swallowed", short)}))
    out["left_at_end"] = {name: _processes_of(r.meta["uid"]) for name, r in out.items()
                          if hasattr(r, "meta") and "uid" in r.meta}
    return out


@slow
def test_no_process_of_a_submission_outlives_it_and_the_next_one_on_its_uid_gets_full_points(tiny):
    # add() forks during the harvest: refused there (a graded call may start no process), so add gets 0
    assert tiny["lingerer"].status == "ok" and _tiny_points(tiny["lingerer"]) == {"add": 0, "mul": 3}
    assert "a process" in tiny["lingerer"].meta.get("refused", []), tiny["lingerer"].meta
    assert tiny["left_after_lingerer"] == {}, "processes of a graded submission were left running"
    after = tiny["after_lingerer"]
    assert after.meta["uid"] == tiny["lingerer"].meta["uid"]        # its uid slot was used again
    assert after.status == "ok" and _tiny_points(after) == {"add": 2, "mul": 3}
    assert all(left == {} for left in tiny["left_at_end"].values()), tiny["left_at_end"]


@slow
def test_a_submission_running_at_the_same_time_cannot_see_or_kill_another(tiny):
    assert _tiny_points(tiny["victim"]) == {"add": 2, "mul": 3} and tiny["victim"].status == "ok"
    spy = tiny["spy"]
    assert spy.status == "ok" and spy.cell_errors == []
    assert _tiny_points(spy) == {"add": 2, "mul": 3}       # add() adds what it found: nothing


@slow
def test_fake_harvest_events_and_planted_outputs_are_not_results(tiny):
    r = tiny["fake_harvest"]
    # the cell that faked the end of the harvest and ended the process is skipped; the real harvest runs
    assert r.attempts == 2 and r.harvested and r.status == "killed"
    assert _tiny_points(r) == {"add": 0, "mul": 3}
    assert any(e.startswith("cell 4:") and "os._exit" in e for e in r.cell_errors)


@slow
def test_scratch_space_is_per_job_so_a_filled_dev_shm_breaks_nothing_next(tiny):
    assert _tiny_points(tiny["fill_scratch"]) == {"add": 2, "mul": 3}
    r = tiny["after_filler"]
    assert r.status == "ok" and r.cell_errors == [], r.cell_errors
    assert _tiny_points(r) == {"add": 2, "mul": 3}


@slow
def test_cells_run_through_ipython_as_in_jupyterlab(tiny):
    r = tiny["ipython"]
    assert r.status == "ok" and r.cell_errors == [], r.cell_errors
    assert _tiny_points(r) == {"add": 2, "mul": 3}
    assert "shell-escape-ran" in r.log and "Wall time" in r.log


@slow
def test_past_the_submission_time_the_functions_defined_so_far_still_count(tiny):
    r = tiny["over_time"]
    assert r.status == "timeout" and r.harvested
    assert _tiny_points(r) == {"add": 2, "mul": 0}
    assert any(e.startswith("cell 4:") and "time ran out" in e for e in r.cell_errors), r.cell_errors
    r = tiny["over_time_swallowed"]
    assert r.harvested and _tiny_points(r) == {"add": 2, "mul": 0}, r.cell_errors


# ----------------------------------------------------------------------------------------------- mechanisms

def test_a_zombie_whose_threads_run_on_is_killed_and_gone_before_its_uid_is_free():
    if os.geteuid() != 0:
        pytest.skip("needs root to switch uids")
    with sandbox.UidSlot() as slot:
        uid = slot.uid
        pid = os.fork()
        if pid == 0:
            try:
                os.setgid(uid)
                os.setuid(uid)
                threading.Thread(target=lambda: time.sleep(300), daemon=True).start()
                ctypes.CDLL(None).syscall(60, 0)     # main thread exits
            finally:
                os._exit(1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(row[3] for row in _processes_of(uid).values()):
            time.sleep(0.02)
        rows = list(_processes_of(uid).values())
        assert rows and rows[0][3], "the process should show as a zombie while its thread runs"
        killer = threading.Thread(target=lambda: os.waitpid(pid, 0))     # the parent reaps it once it is dead
        killer.start()
    killer.join(10)
    assert not killer.is_alive()
    assert _processes_of(uid) == {}


def test_without_root_or_user_namespaces_grading_is_refused_and_says_what_to_enable(monkeypatch):
    monkeypatch.delenv("COURSEKIT_SANDBOX", raising=False)
    monkeypatch.setattr(sandbox, "_MODE_CACHE", {})
    monkeypatch.setattr(sandbox, "is_root", lambda: False)
    monkeypatch.setattr(sandbox, "_bwrap_probe", lambda rootless: "setting up uid map: Permission denied")
    assert sandbox.isolation_mode() == "unavailable"
    words = sandbox.describe_isolation()
    assert "Permission denied" in words and "apt-get install bubblewrap" in words
    assert "unprivileged_userns_clone" in words
    with pytest.raises(sandbox.WarmServerError, match="no isolation available"):
        sandbox.WarmServer()


def test_there_is_no_unisolated_mode(monkeypatch):
    monkeypatch.setattr(sandbox, "_MODE_CACHE", {})
    monkeypatch.setenv("COURSEKIT_SANDBOX", "none")
    with pytest.raises(ValueError, match="no longer exists.*as root"):
        sandbox.isolation_mode()


def test_a_dead_graders_job_folders_are_removed_by_the_next_one(tmp_path):
    import fcntl
    dead = tmp_path / (sandbox.SPOOL_PREFIX + "dead")
    (dead / "job1" / "work").mkdir(parents=True)
    (dead / "job1" / protocol.JOB_FILE).write_text('{"cells": ["secret answer"]}')
    (dead / "owner.lock").write_text("")
    alive = tmp_path / (sandbox.SPOOL_PREFIX + "alive")
    alive.mkdir()
    fd = os.open(alive / "owner.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert sandbox.clean_stale_spools(tmp_path) == [dead]
        assert not dead.exists() and alive.is_dir()
    finally:
        os.close(fd)


@slow
def test_after_the_grader_is_killed_no_copy_of_a_notebook_stays_behind(tmp_path):
    """SIGKILL the grader in the middle of a job: its server and job die with it, and the next grader's start
    removes the job folder (where the student's code was), so nothing of the student's is left."""
    require_bwrap()
    nb = make_notebook(tmp_path / "slow.ipynb", "SECRET_CODE_MARKER = 1\nimport time\ntime.sleep(60)")
    probe = (f"import sys; sys.path.insert(0, {str(REPO / 'tests')!r})\n"
             "from grading_helpers import TINY_HARVEST, tiny_inputs\n"
             "from coursekit.grading.runner import execute_submission, warm_server\n"
             "print(warm_server().spool, flush=True)\n"
             f"execute_submission({str(nb)!r}, TINY_HARVEST, tiny_inputs())\n")
    proc = subprocess.Popen([sys.executable, "-c", probe], env=dict(os.environ, OMP_NUM_THREADS="1"),
                            stdout=subprocess.PIPE, text=True)
    try:
        spool = Path(proc.stdout.readline().strip())        # this grader's own job folders
        assert spool.name.startswith(sandbox.SPOOL_PREFIX), spool
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (spool / "job1" / protocol.WORK_DIR).is_dir():
            time.sleep(0.1)
        assert (spool / "job1" / protocol.WORK_DIR).is_dir(), "the grader did not start its job"
        uid = (spool / "job1" / protocol.WORK_DIR).stat().st_uid       # the job's own uid
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _processes_of(uid):
        time.sleep(0.1)
    assert _processes_of(uid) == {}
    sandbox.clean_stale_spools()
    assert not spool.exists()


def test_flags_name_the_lines_that_reach_for_grader_internals():
    cells = ["import numpy as np, json, torch",
             "np.savez = lambda *a, **k: None\njson.dump = print",
             "from torch.overrides import TorchFunctionMode",
             "import sys\nsys.modules['numpy'].array = None",
             "print(open('/proc/self/status').read())",
             "def relu(x):\n    return x.clamp(min=0)",
             "%time result = relu(torch.ones(2))"]
    flags = scan_cells(cells)
    lines = {(f["reason"].split(":")[0], f["line"], f["code"]) for f in flags}
    assert ("cell 2", 1, "np.savez = lambda *a, **k: None") in lines
    assert ("cell 2", 2, "json.dump = print") in lines
    assert ("cell 3", 1, "from torch.overrides import TorchFunctionMode") in lines
    assert ("cell 4", 2, "sys.modules['numpy'].array = None") in lines
    assert ("cell 5", 1, "print(open('/proc/self/status').read())") in lines
    assert not any(f["reason"].startswith(("cell 1:", "cell 6:", "cell 7:")) for f in flags), flags
    assert all(set(f) == {"line", "code", "reason"} for f in flags)


# ---------------------------------------------------------------------------------------------- the real lab

TODO_MARK = "# TODO: Question "


def _solved_lab():
    sys.path.insert(0, str(REPO / "tests"))
    from test_bad_submissions import solved
    return solved()


def _question_cell(nb, q):
    return next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith(f"{TODO_MARK}{q}"))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require_bwrap()
    d = tmp_path_factory.mktemp("lab")
    spec = load_spec(REPO / "lab" / "autograder")
    points = dict(spec.questions)
    # d2l's own loader (its ../data, 4 worker processes through /dev/shm) decides whether MLP is defined;
    # the training runs under %time; numpy.savez and json.dump are patched before the harvest
    nb = _solved_lab()
    q3 = _question_cell(nb, 3)
    q3.source = ("from d2l import torch as d2l\n"
                 "_X, _y = next(iter(d2l.FashionMNIST(batch_size=256).train_dataloader()))\n"
                 "if tuple(_X.shape) == (256, 1, 28, 28) and len(_y) == 256:\n"
                 + "\n".join("    " + line for line in q3.source.splitlines()))
    train = next(c for c in nb.cells if c.cell_type == "code" and "train_mlp(" in c.source
                 and not c.source.startswith(TODO_MARK))
    lines = train.source.splitlines()
    k = next(i for i, line in enumerate(lines) if re.match(r"\s*(\w+\s*=\s*)?train_mlp\(", line))
    indent = lines[k][: len(lines[k]) - len(lines[k].lstrip())]
    lines[k] = indent + "%time " + lines[k].lstrip()
    train.source = "\n".join(lines).replace(   # the validation table, one short row: within the cell's time
        "LR_CANDIDATES = (0.03, 0.1, 0.3, 1.0)\nMAX_EPOCHS, BUDGET_IMAGES, BATCH_SIZE = 3,",
        "LR_CANDIDATES = (0.3,)\nMAX_EPOCHS, BUDGET_IMAGES, BATCH_SIZE = 1,", 1)
    assert "LR_CANDIDATES = (0.3,)" in train.source
    nb.cells.insert(1, nbformat.v4.new_code_cell(
        "import numpy, json\nnumpy.savez = lambda *a, **k: None\njson.dump = lambda *a, **k: None\n"
        "json.dumps = lambda *a, **k: '{}'"))
    nbformat.write(nb, d / "jupyter_ways.ipynb")
    # cells that together run past the submission's time, before questions 4 and 5
    nb = _solved_lab()
    at = nb.cells.index(_question_cell(nb, 3)) + 1
    for _ in range(4):
        nb.cells.insert(at, nbformat.v4.new_code_cell("import time\ntime.sleep(5)"))
    nbformat.write(nb, d / "over_time.ipynb")
    limits = Limits(cell_timeout=20, submission_timeout=150, harvest_timeout=40, memory_mb=3072)
    over = Limits(cell_timeout=6, submission_timeout=14, harvest_timeout=40, memory_mb=3072)
    grades = run_many({"jupyter_ways": lambda: grade_notebook(d / "jupyter_ways.ipynb", spec=spec, limits=limits),
                       "over_time": lambda: grade_notebook(d / "over_time.ipynb", spec=spec, limits=over)})
    return grades, points


@slow
def test_lab_d2l_data_loader_time_magic_and_patched_savez_cost_nothing(lab):
    grades, points = lab
    g = grades["jupyter_ways"]
    assert g.points() == points, g.feedback_text
    assert g.status == "ok", g.feedback_text
    assert any("numpy.savez" in f["code"] and "replaces numpy.savez" in f["reason"] for f in g.flags), g.flags


@slow
def test_lab_past_the_time_limit_keeps_the_questions_defined_before_it(lab):
    grades, points = lab
    g = grades["over_time"]
    expected = {name: (p if int(name[1:]) <= 3 else 0) for name, p in points.items()}
    assert g.points() == expected, g.feedback_text
    assert g.status == "timeout"
    assert "time ran out" in g.feedback_text
