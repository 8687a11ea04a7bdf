"""The sandbox and the runner on tiny notebooks (no real lab): isolation, limits, recovery, data-only results.

Every notebook runs once, two at a time, in a module fixture; each test then checks one result.
"""
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import coursekit
from coursekit.grading import sandbox
from coursekit.grading.runner import execute_submission, notebook_code_cells
from coursekit.grading.sandbox import Limits
from grading_helpers import GOOD_CELLS, TINY_HARVEST, make_notebook, require_bwrap, run_many, tiny_inputs

slow = pytest.mark.slow      # the fixture grades 15 notebooks, some of which run into their time limits
LIMITS = Limits(cell_timeout=4, submission_timeout=90, harvest_timeout=6, memory_mb=1536, max_processes=48,
                max_file_mb=8, max_disk_mb=64, max_output_kb=8, max_output_total_mb=2)
REPO = Path(coursekit.__file__).resolve().parent.parent
ADD, MUL = GOOD_CELLS[1], GOOD_CELLS[2]


def _secret_cells(secret: Path, port: int):
    probe = f'''
import os, socket
targets = [{str(secret)!r}, {str(REPO / "lab")!r}, {str(REPO / "README.md")!r}, {str(REPO / ".git")!r}, "/etc/shadow"]
seen = []
for p in targets:
    try:
        if os.path.isdir(p):
            os.listdir(p)
        else:
            open(p).read()
        seen.append(1.0)
    except Exception:
        seen.append(0.0)
for p in [{str(Path(coursekit.__file__).parent / "pwned.py")!r}, {str(secret.parent / "pwned")!r}]:
    try:
        open(p, "w").write("x")
        seen.append(1.0)
    except Exception:
        seen.append(0.0)
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
    seen.append(1.0)
except Exception:
    seen.append(0.0)
def add(a, b):
    return np.array(seen)
'''
    return ["import numpy as np", probe, MUL]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    require_bwrap()
    d = tmp_path_factory.mktemp("sandbox")
    secret = d / "grader-only" / "hidden_tests.py"
    secret.parent.mkdir()
    secret.write_text("SECRET = 42\n")
    secret.parent.chmod(0o700)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    nbs = {
        "good": ["import numpy as np\n%matplotlib inline\n!echo shell-escape-ran", ADD, MUL],
        "secrets": _secret_cells(secret, port),
        "os_exit": ["import numpy as np", ADD, "import os\nos._exit(0)", MUL],
        "errors": ["import numpy as np", "1/0", "import sys\nsys.exit(3)", "name = input('your name? ')",
                   "def broken(:\n    pass", ADD, MUL],
        "stubborn_loop": ["import numpy as np, time", ADD,
                          "while True:\n    try:\n        time.sleep(0.01)\n    except BaseException:\n        pass", MUL],
        "harvest_loop": ["import numpy as np", "def add(a, b):\n    while True:\n        pass", MUL],
        "fork_bomb": ["import numpy as np", ADD, "import os\nwhile True:\n    os.fork()", MUL],
        "memory_one": ["import numpy as np", ADD, "big = bytearray(8 * 2**30)", MUL],
        "memory_many": ["import numpy as np", ADD,
                        "import os, time\nfor _ in range(4):\n    if os.fork() == 0:\n"
                        "        x = np.ones(450 * 2**20 // 8)\n        time.sleep(30)\ntime.sleep(30)", MUL],
        "huge_output": ["import numpy as np", ADD, "while True:\n    print('spam' * 1000)", MUL],
        "huge_output_swallowed": ["import numpy as np", ADD,
                                  "while True:\n    try:\n        print('spam' * 1000)\n    except OSError:\n        pass",
                                  MUL],
        "big_file": ["import numpy as np", ADD, "open('big.bin', 'wb').write(b'0' * (20 * 2**20))", MUL],
        "many_files": ["import numpy as np", ADD,
                       "import time\nfor i in range(100):\n    open(f'f{i}.bin', 'wb').write(b'0' * (7 * 2**20))\n"
                       "    time.sleep(0.05)", MUL],
        "shm": ["import numpy as np", ADD,
                f"for i in range({LIMITS.shm_mb // 7 + 2}):\n    open(f'/dev/shm/x{{i}}', 'wb').write(b'0' * (7 * 2**20))",
                MUL],
        "symlink": ["import numpy as np, os, json",
                    f"os.symlink({str(secret)!r}, 'outputs.json')\nos.symlink('/etc/passwd', 'outputs.npz')\n"
                    "json.dump = lambda *a, **k: None\nnp.savez = lambda *a, **k: None", ADD, MUL],
        "pickle": ["import numpy as np", ADD, MUL,
                   "import pickle, os\n"
                   "class P:\n    def __reduce__(self):\n"
                   f"        return (os.system, ('touch {d}/pwned-by-pickle',))\n"
                   "np.save_real = np.savez\n"
                   "np.savez_real = np.savez\n"
                   "np.savez = lambda path, **kw: np.savez_real(path, add=np.array([P()], dtype=object))"],
    }
    paths = {name: make_notebook(d / f"{name}.ipynb", *cells) for name, cells in nbs.items()}
    inputs = tiny_inputs()
    try:
        # first touch of fresh memory is slow on this VM: the memory case gets time to reach its limit
        slow = {"memory_many": dataclasses.replace(LIMITS, cell_timeout=30)}
        out = run_many({name: (lambda p=p, name=name: execute_submission(p, TINY_HARVEST, inputs,
                                                                          slow.get(name, LIMITS)))
                        for name, p in paths.items()})
    finally:
        listener.close()
    out["_dir"] = d
    out["_inputs"] = inputs
    return out


def _sum(inputs):
    return inputs["a"] + inputs["b"]


def _prod(inputs):
    return inputs["a"] * inputs["b"]


def test_isolation_mode_is_bubblewrap_as_root():
    require_bwrap()
    assert sandbox.isolation_mode() == "bwrap"


@slow
def test_good_notebook_runs_unprivileged_and_sends_back_arrays(results):
    r = results["good"]
    assert r.status == "ok" and r.harvested and r.cell_errors == []
    np.testing.assert_allclose(r.outputs["add"], _sum(results["_inputs"]))
    np.testing.assert_allclose(r.outputs["mul"], _prod(results["_inputs"]))
    assert r.meta["uid"] >= sandbox.SANDBOX_UID_BASE
    assert "shell-escape-ran" in r.log        # IPython syntax runs as in JupyterLab


@slow
def test_student_cannot_read_grader_files_write_package_or_reach_network(results):
    r = results["secrets"]
    assert r.status == "ok"
    # secret, repo lab/, repo README, repo .git, /etc/shadow, write coursekit, write next to secret, network
    assert r.outputs["add"].tolist() == [0.0] * 8
    assert not (Path(coursekit.__file__).parent / "pwned.py").exists()


@slow
def test_os_exit_cell_is_skipped_and_the_rest_still_counts(results):
    r = results["os_exit"]
    assert r.status == "killed" and r.attempts == 2
    assert "mul" in r.outputs and "add" in r.outputs
    assert any(e.startswith("cell 3:") and "os._exit" in e for e in r.cell_errors)


@slow
def test_errors_in_cells_are_reported_per_cell_and_do_not_stop_the_notebook(results):
    r = results["errors"]
    assert r.status == "ok" and r.attempts == 1
    text = "\n".join(r.cell_errors)
    assert "cell 2: ZeroDivisionError" in text
    assert "cell 3: the cell called sys.exit(3)" in text
    assert "cell 4: EOFError" in text and "input()" in text
    assert "cell 5: SyntaxError: invalid syntax (line 1)" in text
    assert set(r.outputs) == {"add", "mul"}


@slow
def test_a_loop_that_swallows_the_timeout_is_killed_and_skipped(results):
    r = results["stubborn_loop"]
    assert r.status == "timeout" and r.attempts == 2
    assert any(e.startswith("cell 3:") and "time limit" in e for e in r.cell_errors)
    assert set(r.outputs) == {"add", "mul"}


@slow
def test_an_endless_function_loses_only_its_own_question(results):
    r = results["harvest_loop"]
    assert "TimeoutError" in r.meta["add"]["error"]
    assert "add" not in r.outputs
    np.testing.assert_allclose(r.outputs["mul"], _prod(results["_inputs"]))


@slow
def test_fork_bomb_is_contained(results):
    r = results["fork_bomb"]
    assert set(r.outputs) == {"add", "mul"}
    assert any(e.startswith("cell 3:") for e in r.cell_errors)


@slow
def test_memory_exhaustion_in_one_process_fails_the_cell(results):
    r = results["memory_one"]
    assert r.status == "memory" and r.attempts == 1
    assert any(e.startswith("cell 3: MemoryError") for e in r.cell_errors)
    assert set(r.outputs) == {"add", "mul"}


@slow
def test_memory_of_the_whole_sandbox_is_watched(results):
    r = results["memory_many"]
    assert r.status == "memory"
    assert any(e.startswith("cell 3:") and "memory" in e for e in r.cell_errors)
    assert set(r.outputs) == {"add", "mul"}


@slow
def test_huge_output_is_capped_and_stopped(results):
    r = results["huge_output"]
    assert r.status == "output-limit"
    assert any(e.startswith("cell 3: printed more than 2 MiB") for e in r.cell_errors), r.cell_errors
    assert len(r.log) <= LIMITS.max_output_kb * 1024
    assert set(r.outputs) == {"add", "mul"}


@slow
def test_printing_on_past_the_limit_is_an_endless_loop_stopped_by_time(results):
    r = results["huge_output_swallowed"]
    assert r.status == "timeout"
    assert any(e.startswith("cell 3: stopped after 4 s") for e in r.cell_errors), r.cell_errors
    assert set(r.outputs) == {"add", "mul"}


@slow
def test_file_size_is_limited(results):
    r = results["big_file"]
    assert any(e.startswith("cell 3:") and "File too large" in e for e in r.cell_errors)
    assert not (results["_dir"] / "big.bin").exists()


@slow
def test_disk_use_of_a_submission_is_limited(results):
    r = results["many_files"]
    assert r.status == "disk-limit"
    assert any(e.startswith("cell 3: stopped: it wrote more than 64 MiB") for e in r.cell_errors), r.cell_errors
    assert set(r.outputs) == {"add", "mul"}


@slow
def test_shared_memory_is_small(results):
    r = results["shm"]
    assert any(e.startswith("cell 3: OSError: [Errno 28] No space left") for e in r.cell_errors), r.cell_errors
    assert set(r.outputs) == {"add", "mul"}


@slow
def test_planted_links_and_patched_savez_change_nothing(results):
    r = results["symlink"]
    assert "SECRET" not in str(r.meta) and r.status == "ok"
    # the harvest saves with references taken before any cell ran: the patched np.savez/json.dump are not used
    np.testing.assert_allclose(r.outputs["add"], _sum(results["_inputs"]))
    np.testing.assert_allclose(r.outputs["mul"], _prod(results["_inputs"]))


@slow
def test_pickles_from_the_student_are_never_made_or_loaded(results):
    r = results["pickle"]
    np.testing.assert_allclose(r.outputs["add"], _sum(results["_inputs"]))
    assert not (results["_dir"] / "pwned-by-pickle").exists()


@slow
def test_no_sandbox_process_outlives_its_run(results):
    uids = {r.meta["uid"] for r in results.values() if isinstance(getattr(r, "meta", None), dict) and "uid" in r.meta}
    assert uids      # (other graders may run on this machine meanwhile: only this module's uids are checked)
    left = [pid for pid, row in sandbox._proc_table().items() if row[0] in uids]
    assert left == []


def test_corrupt_json_is_an_invalid_notebook_without_running_anything(tmp_path):
    p = tmp_path / "broken.ipynb"
    p.write_text('{"cells": [ {"cell_type": "code", "source": "x = 1"')
    r = execute_submission(p, TINY_HARVEST, tiny_inputs(), LIMITS)
    assert r.status == "invalid-notebook" and r.attempts == 0
    assert "not valid notebook JSON" in r.cell_errors[0]


def test_json_that_is_not_a_notebook(tmp_path):
    p = tmp_path / "list.ipynb"
    p.write_text("[1, 2, 3]")
    with pytest.raises(ValueError, match="not a notebook"):
        notebook_code_cells(p)


def test_limits_reject_nonsense():
    with pytest.raises(ValueError, match="cell_timeout"):
        Limits(cell_timeout=0)


def test_limits_derive_every_timeout():
    limits = Limits.from_times(5, 30, 2048)
    assert (limits.cell_timeout, limits.submission_timeout, limits.memory_mb) == (5, 30, 2048)
    assert limits.harvest_timeout == Limits().harvest_timeout
    assert limits.harvest_call_timeout == 10 and limits.cell_grace == 2.5
    assert limits.rlimits(True)["RLIMIT_CPU"] == 30 + 60 + 30 and "RLIMIT_NPROC" not in limits.rlimits(False)


def test_protocol_round_trips_and_rejects_what_is_not_its_own():
    from coursekit.grading import protocol
    spec = protocol.JobSpec(cells=["x = 1"], harvest="pass", cell_timeout=1, cells_deadline=2,
                            harvest_call_timeout=3, output_limit_bytes=4, memory_mb=5, harvest_question_timeout=6,
                            harvest_grant_timeout=7, max_results_bytes=8, harvest_max_elements=9,
                            harvest_error_chars=10, skip={2: "why"})
    assert protocol.JobSpec.from_json(spec.to_json()) == spec
    ev = protocol.Event(protocol.END, cell=3, status="ok", seconds=0.5)
    assert protocol.Event.parse(ev.to_line().decode()) == ev
    ev = protocol.Event(protocol.HARVEST_END, status="ok", seconds=2.5, cpu=1.75)
    assert protocol.Event.parse(ev.to_line().decode()) == ev
    assert protocol.Event.parse('{"kind": "harvest-end", "cpu": "lots"}').cpu is None
    for junk in ["", "[]", '{"kind": 1, "cell": "x"}', '{"cell": 1}', "not json"]:
        assert protocol.Event.parse(junk) is None or protocol.Event.parse(junk).cell is None
    nonce = bytes(range(32))
    frame = protocol.encode_results(nonce, b"NPZ", b"{}")
    assert protocol.decode_results(frame, nonce) == (b"NPZ", b"{}")
    assert protocol.decode_results(frame, bytes(32)) is None             # another nonce: not the grader's
    assert protocol.decode_results(frame[:-1], nonce) is None            # cut short




FALLBACK_PROBE = """
import json, sys
sys.path.insert(0, sys.argv[2])
from grading_helpers import GOOD_CELLS, TINY_HARVEST, make_notebook, tiny_inputs
from coursekit.grading.runner import execute_submission
from coursekit.grading.sandbox import Limits, isolation_mode
p = make_notebook(sys.argv[1], *GOOD_CELLS[:2], "import os\\nos._exit(3)", GOOD_CELLS[2])
r = execute_submission(p, TINY_HARVEST, tiny_inputs(), Limits(cell_timeout=5, submission_timeout=120))
print(json.dumps({"mode": isolation_mode(), "status": r.status, "outputs": sorted(r.outputs),
                  "uid": r.meta.get("uid"), "attempts": r.attempts}))
"""


@slow
def test_fallback_modes_still_grade(tmp_path):
    """Without bubblewrap (namespaces per job, host file system), and without namespaces (container: a uid
    per job only)."""
    require_bwrap()     # root is needed to switch uids; CI has both
    procs = {mode: subprocess.Popen([sys.executable, "-c", FALLBACK_PROBE, str(tmp_path / f"{mode}.ipynb"),
                                     str(Path(__file__).parent)],
                                    env=dict(os.environ, COURSEKIT_SANDBOX=mode), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for mode in ("namespaces", "container")}
    for mode, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        got = json.loads(out.strip().splitlines()[-1])
        assert got["mode"] == mode
        assert got["outputs"] == ["add", "mul"] and got["status"] == "killed" and got["attempts"] == 2
        assert sandbox.SANDBOX_UID_BASE <= got["uid"] < sandbox.SANDBOX_UID_BASE + sandbox.SANDBOX_UID_SLOTS


def test_an_unknown_sandbox_mode_is_refused(monkeypatch):
    monkeypatch.setenv("COURSEKIT_SANDBOX", "docker")
    monkeypatch.setattr(sandbox, "_MODE_CACHE", {})
    with pytest.raises(ValueError, match="must be one of bwrap, namespaces, container, userns"):
        sandbox.isolation_mode()


@slow
def test_a_dead_grading_server_is_the_graders_failure_and_is_restarted(tmp_path):
    require_bwrap()
    from concurrent.futures import ThreadPoolExecutor
    from coursekit.grading import runner
    loop = make_notebook(tmp_path / "loop.ipynb", "import time\nwhile True:\n    time.sleep(0.1)")
    server = runner.warm_server()
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(execute_submission, loop, TINY_HARVEST, tiny_inputs(), LIMITS)
        deadline = time.monotonic() + 60
        while not server._started and time.monotonic() < deadline:
            time.sleep(0.05)
        server.proc.kill()
        with pytest.raises(sandbox.WarmServerError, match="died"):
            fut.result(timeout=60)
    good = make_notebook(tmp_path / "good.ipynb", *GOOD_CELLS)
    r = execute_submission(good, TINY_HARVEST, tiny_inputs(), LIMITS)
    assert r.status == "ok" and set(r.outputs) == {"add", "mul"}
    assert runner.warm_server() is not server
