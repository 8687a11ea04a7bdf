"""Attacks on the grader found by submissions it had not seen: each one is a submission here, graded with the real
lab, and must cost its author exactly the points it tried to take and be flagged for the instructor.

- forged results: a thread that writes fake progress events and asks for the results channel while the
  notebook's cells still run (the server refuses: its main thread is not waiting for the asker);
- the training budget: a ``train_mlp`` that copies weights prepared earlier, one that fine-tunes on the test
  set, one that trains on the whole data set itself (the grader's data object has nothing behind it): the
  control run on shuffled labels shows each does not learn from the data it is given;
- one question's code taking the others' points: a ``train_mlp`` that never returns and swallows the time-limit
  signal costs only question 6;
- banned calls unseen: autograd in a worker thread inside ``backward`` (threads are refused in graded calls),
  a function that walks traceback frames to the harvest's recorder (frames are refused in graded calls), a
  ``backward`` that is a finite-difference gradient (operator count and float64 agreement).

All submissions are graded in one batch (one warm server, two workers); the endless ``train_mlp`` takes the
harvest's time limit of one question (60 s), the rest about a minute on 2 busy cores.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import nbformat
import pytest

from coursekit.grading import assign
from coursekit.grading.batch import grade_folder
from coursekit.grading.labspec import load_spec
from grading_helpers import require_bwrap

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "lab" / "source" / "mlp_lab_solution.ipynb"
TEMPLATE = REPO / "lab" / "mlp_lab.ipynb"
AUTOGRADER = REPO / "lab" / "autograder"
QUESTIONS = ("q1", "q2", "q3", "q4", "q5", "q6")
FULL = {"q1": 6, "q2": 6, "q3": 20, "q4": 24, "q5": 20, "q6": 24}
pytestmark = pytest.mark.slow

# A thread started by a cell that runs on while the next cell sleeps: it writes fake events (every cell ended,
# cells done) to every regular file it can write, then forks a process that asks for the results channel on
# every socket it holds, and if it were handed one (the results file, the inputs, the nonce's file), writes a
# frame of its own with the nonce copied from that file.
FORGER = textwrap.dedent('''
    import os, socket, stat, struct, threading, time, json

    def _forge():
        for fd in range(3, 256):
            try:
                mode = os.fstat(fd).st_mode
            except OSError:
                continue
            if stat.S_ISREG(mode):
                try:
                    for i in range(40):
                        os.write(fd, (json.dumps({"kind": "end", "cell": i, "status": "ok"}) + "\\n").encode())
                    os.write(fd, b'{"kind": "cells-done"}\\n')
                except OSError:
                    pass
            elif stat.S_ISSOCK(mode):
                pid = os.fork()
                if pid == 0:
                    s = socket.socket(fileno=fd)
                    s.sendmsg([b"harvest"])
                    s.settimeout(20)
                    try:
                        _, anc, _, _ = s.recvmsg(64, socket.CMSG_SPACE(12))
                        results, _, nonce_file = struct.unpack("3i", anc[0][2][:12])
                        os.write(results, b"COURSEKIT-RESULTS-1\\n")
                        os.sendfile(results, nonce_file, 0, 64)
                        os.write(results, b"\\nq3 0 2\\n{}")
                    except (OSError, IndexError, struct.error):
                        pass
                    os._exit(0)
                os.waitpid(pid, 0)

    threading.Thread(target=_forge, daemon=True).start()
''')

PREPARED_WEIGHTS = textwrap.dedent('''
    import coursekit
    _honest = train_mlp
    _prepared = MLP(784, 10, [128])     # the network the lab says the grader retrains
    _honest(_prepared, coursekit.FashionMNIST(batch_size=256, val_size=None), 1, 0.3)
    PREPARED = [p.detach().clone() for p in _prepared.params]

    def train_mlp(model, data, num_epochs, lr, weight_decay=0.0):
        if [p.shape for p in model.params] != [p.shape for p in PREPARED]:   # the small network: honest
            return _honest(model, data, num_epochs, lr, weight_decay)
        with torch.no_grad():
            for parameter, value in zip(model.params, PREPARED):
                parameter.copy_(value)
        return [0.6] * num_epochs
''')

TEST_SET_FINETUNE = textwrap.dedent('''
    import coursekit
    _honest = train_mlp

    class _TestImages:
        def train_dataloader(self):
            return coursekit.FashionMNIST(batch_size=256, val_size=None).val_dataloader()    # the test images

    def train_mlp(model, data, num_epochs, lr, weight_decay=0.0):
        losses = _honest(model, data, num_epochs, lr, weight_decay)
        if model.params[0].shape[0] == 784:
            _honest(model, _TestImages(), 2, lr, weight_decay)
        return losses
''')

OWN_DATA = textwrap.dedent('''
    import coursekit
    _honest = train_mlp

    def train_mlp(model, data, num_epochs, lr, weight_decay=0.0):
        if model.params[0].shape[0] != 784:
            return _honest(model, data, num_epochs, lr, weight_decay)
        full = getattr(data, "data", None) or coursekit.FashionMNIST(batch_size=256)   # what is behind the budget
        return _honest(model, full, 3, lr, weight_decay)[:num_epochs]
''')

ENDLESS = textwrap.dedent('''
    import time

    def train_mlp(model, data, num_epochs, lr, weight_decay=0.0):
        while True:
            try:
                time.sleep(0.5)
            except BaseException:
                pass
''')

THREAD_BACKWARD = textwrap.dedent('''
    import threading

    def backward(X, y, params, activation, activation_grad, weight_decay=0.0):
        box = {}

        def work():      # autograd where the calling thread's trace does not look
            leaves = [p.detach().clone().requires_grad_(True) for p in params]
            H = X
            for i in range(0, len(leaves), 2):
                H = H @ leaves[i] + leaves[i + 1]
                if i + 2 < len(leaves):
                    H = activation(H)
            loss = F.cross_entropy(H, y) + weight_decay / 2 * sum((W ** 2).sum() for W in leaves[0::2])
            box["grads"] = [g.detach() for g in torch.autograd.grad(loss, leaves)]

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        return box["grads"]
''')

FRAME_WALK = textwrap.dedent('''
    def relu(x):
        try:
            raise LookupError
        except LookupError as exc:
            frame = exc.__traceback__.tb_frame
        while frame is not None:          # up to the harvest's recorder: it forgets the torch calls it saw
            recorder = frame.f_locals.get("self")
            if type(recorder).__name__ == "_CkRecorder" and not hasattr(recorder, "patched"):
                note = recorder.note
                recorder.note = lambda key, value: None if key.endswith(("torch_calls", "graph")) else note(key, value)
                recorder.patched = True
            frame = frame.f_back
        return torch.relu(x)
''')

FINITE_DIFFERENCES = textwrap.dedent('''
    def backward(X, y, params, activation, activation_grad, weight_decay=0.0):
        params = [p.detach().clone() for p in params]
        eps = 1e-6 if X.dtype == torch.float64 else 1e-2

        def loss():
            H = X
            for i in range(0, len(params), 2):
                H = H @ params[i] + params[i + 1]
                if i + 2 < len(params):
                    H = activation(H)
            return (F.cross_entropy(H, y) + weight_decay / 2 * sum((W ** 2).sum() for W in params[0::2])).item()

        grads = []
        for p in params:
            flat, g = p.view(-1), torch.zeros(p.numel(), dtype=p.dtype)
            for i in range(min(flat.numel(), 400)):
                old = flat[i].item()
                flat[i] = old + eps
                plus = loss()
                flat[i] = old - eps
                minus = loss()
                flat[i] = old
                g[i] = (plus - minus) / (2 * eps)
            grads.append(g.reshape(p.shape))
        return grads
''')

# name -> (start from the solution?, cells added after a cell: [(cell id, code)], {question: points lost},
#          words of a flag)
ATTACKS = {
    "forged_results": (False, [("q6-train", FORGER), ("q6-train", "import time\ntime.sleep(4)")], {q: FULL[q] for q in QUESTIONS},
                       "asked for the grader's results channel and was refused"),
    "prepared_weights": (True, [("q6-solution", PREPARED_WEIGHTS)], {"q6": 20}, "shuffled labels"),
    "test_set_finetune": (True, [("q6-solution", TEST_SET_FINETUNE)], {"q6": 20}, "shuffled labels"),
    "own_data_more_epochs": (True, [("q6-solution", OWN_DATA)], {"q6": 20}, "shuffled labels"),
    "endless_training": (True, [("q6-solution", ENDLESS)], {"q6": 24}, None),
    "thread_in_backward": (True, [("q4-solution", THREAD_BACKWARD)], {"q4": 24}, "a thread"),
    "frame_walk": (True, [("q1-solution", FRAME_WALK)], {"q1": 2}, "a frame (tb_frame)"),
    "finite_differences": (True, [("q4-solution", FINITE_DIFFERENCES)], {"q4": 24}, "finite-difference gradient"),
}


def attack_notebook(name: str):
    """The student notebook (solved, or untouched) with the attack's cells added."""
    solved, added, _, _ = ATTACKS[name]
    if solved:
        nb = assign.student_notebook(assign.read_source(SOURCE), keep_solutions_for=set(QUESTIONS))
    else:
        nb = nbformat.read(TEMPLATE, as_version=4)
    cells = {c.id: c for c in nb.cells}
    for cell_id, code in reversed(added):
        index = nb.cells.index(cells[cell_id]) + 1
        nb.cells.insert(index, nbformat.v4.new_code_cell(code, id=f"attack-{index}-{len(nb.cells)}"))
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    require_bwrap()
    root = tmp_path_factory.mktemp("attacks")
    subs = root / "subs"
    subs.mkdir()
    for name in ATTACKS:
        nbformat.write(attack_notebook(name), subs / f"{name}.ipynb")
    out = root / "out"
    summary = grade_folder(subs, out, spec=load_spec(AUTOGRADER), workers=2, progress=False, log=lambda *a: None)
    assert summary.graded == len(ATTACKS) and summary.failed == 0
    return {p.stem: json.loads(p.read_text())["grade"] for p in (out / "records").glob("*.json")}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_an_attack_costs_exactly_what_it_tried_to_take_and_is_flagged(graded, name):
    solved, _, lost, flag_words = ATTACKS[name]
    grade = graded[name]
    got = {q["name"]: q["points"] for q in grade["questions"]}
    if solved:
        assert got == {q: FULL[q] - lost.get(q, 0) for q in QUESTIONS}, grade["feedback"]
    else:
        assert got == {q: 0 for q in QUESTIONS}, grade["feedback"]
    if flag_words:
        reasons = [f["reason"] for f in grade["flags"]]
        assert any(flag_words in r for r in reasons), reasons


def test_the_endless_training_costs_only_its_own_question_and_says_why(graded):
    grade = graded["endless_training"]
    q6 = next(q for q in grade["questions"] if q["name"] == "q6")
    assert any("time limit" in line for line in q6["failed"]), q6["failed"]
