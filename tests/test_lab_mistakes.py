"""Every typical mistake of the lab: what the public check() says about it, and exactly what the grader takes away.

Each mistake is the solution notebook (the student notebook with every answer filled in) broken in one way.
For each, ``check("qN")`` is run in this process on the notebook's namespace and must say what the grader will
do ("the grader will not count this: ...", or a targeted hint); then all of them are graded together by
``grade_folder`` (one warm server) and each must get its exact points per question.

Speed: these notebooks set NUM_EPOCHS = 0, so their own training cell trains nothing. That is the lab's budget
policy at work: the grader ignores the notebook's budget constants and trains the reference MLP with the
notebook's ``train_mlp`` itself, so the points do not change (the ``budget_constants`` case, which trains 3
epochs of 128, and ``correct`` show it).
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import nbformat
import pytest

from coursekit.grading import assign
from coursekit.grading.batch import grade_folder
from coursekit.selfcheck import run_public_tests
from coursekit.grading.labspec import load_spec
from grading_helpers import require_bwrap

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "lab" / "source" / "mlp_lab_solution.ipynb"
AUTOGRADER = REPO / "lab" / "autograder"
QUESTIONS = ("q1", "q2", "q3", "q4", "q5", "q6")
FAST = ("NUM_EPOCHS = 2\n", "NUM_EPOCHS = 0  # this test's speed-up; the grader ignores it\n")
pytestmark = pytest.mark.slow   # one batch of real submissions, each trained once by the grader (~2-3 min)

# name -> (edits: [(cell id, old text, new text)], cells added after a cell: [(cell id, code)],
#          the public check that must flag it: (question, words), or None)
MISTAKES = {
    "correct": ([], [], None),
    "torch_relu": ([("q1-solution", "return torch.where(x > 0, x, torch.zeros_like(x))", "return torch.relu(x)")], [],
                   ("q1", "the grader will not count this: torch.relu is not allowed in relu")),
    "derivative_by_autograd": ([("q2-solution", "    s = sigmoid(x)\n    return s * (1 - s)",
                                 "    x = x.detach().clone().requires_grad_(True)\n    sigmoid(x).sum().backward()\n"
                                 "    return x.grad")], [],
                               ("q2", "the grader will not count this: sigmoid_grad uses autograd")),
    "derivative_in_float32": ([("q2-solution", "return (x > 0).to(x.dtype)", "return (x > 0).float()")], [],
                              ("q2", "the grader will not count this: relu_grad(x) should have dtype float64")),
    "relu_grad_at_zero": ([("q2-solution", "return (x > 0).to(x.dtype)", "return (x >= 0).to(x.dtype)")], [],
                          ("q2", "relu_grad(0) should be 0")),
    "collapse_b_is_b2": ([("q3-solution", "return W1 @ W2, b1 @ W2 + b2", "return W1 @ W2, b2")], [],
                         ("q3", "b equals b2: the first layer's bias b1 also reaches the output")),
    "initial_scale_fixed": ([("q4-solution", "torch.randn(num_inputs, num_hiddens) * sigma",
                              "torch.randn(num_inputs, num_hiddens) * 0.01")], [],
                            ("q4", "with sigma=0.1, W1 should have standard deviation about 0.1")),
    "nn_linear": ([("q4-solution", "        self.W1 = nn.Parameter(torch.randn(num_inputs, num_hiddens) * sigma)\n"
                                   "        self.b1 = nn.Parameter(torch.zeros(num_hiddens))\n"
                                   "        self.W2 = nn.Parameter(torch.randn(num_hiddens, num_outputs) * sigma)\n"
                                   "        self.b2 = nn.Parameter(torch.zeros(num_outputs))",
                   "        self.hidden = nn.Linear(num_inputs, num_hiddens)\n"
                   "        self.output = nn.Linear(num_hiddens, num_outputs)"),
                   ("q4-solution", "        H = relu(X @ self.W1 + self.b1)\n        return H @ self.W2 + self.b2",
                    "        return self.output(relu(self.hidden(X)))")], [],
                  ("q4", "nn.Linear holds its own weight and bias: use nn.Parameter tensors instead")),
    "hard_coded_784": ([("q4-solution", "X = X.reshape(-1, self.num_inputs)", "X = X.reshape(-1, 784)")], [],
                       ("q4", "not a hard-coded 784")),
    "relu_on_output": ([("q4-solution", "return H @ self.W2 + self.b2", "return relu(H @ self.W2 + self.b2)")], [],
                       ("q4", "apply relu to the hidden layer only, not to the output layer")),
    "backward_by_autograd": ([("q5-solution", "    Z = X @ W1 + b1\n    H = activation(Z)\n",
                               "    params = [p.detach().clone().requires_grad_(True) for p in (W1, b1, W2, b2)]\n"
                               "    O = activation(X @ params[0] + params[1]) @ params[2] + params[3]\n"
                               "    return tuple(torch.autograd.grad(F.cross_entropy(O, y), params))\n"
                               "    Z = X @ W1 + b1\n    H = activation(Z)\n")], [],
                             ("q5", "the grader will not count this: backward uses autograd")),
    "softmax_before_loss": ([("q6-solution", "loss = F.cross_entropy(model(X), y)",
                              "loss = F.cross_entropy(F.softmax(model(X), dim=1), y)")], [],
                            ("q6", "train_mlp applies a softmax: F.cross_entropy takes the logits")),
    "gradients_not_zeroed": ([("q6-solution", "            optimizer.zero_grad()\n", "")], [],
                             ("q6", "the gradients are not set to zero between minibatches")),
    "losses_as_tensors": ([("q6-solution", "total += loss.item() * len(y)", "total += loss * len(y)")], [],
                          ("q6", "should return a list of 2 Python floats, one mean loss per epoch")),
    "training_crashes": ([("q6-solution", "for X, y in data.train_dataloader():", "for X, y in data.train_dataloader:")],
                         [], ("q6", "the training cell failed: TypeError")),
    "stale_trained_model": ([], [("q6-train", "def train_mlp(model, data, num_epochs, lr):\n"
                                              "    raise NotImplementedError('rewriting it')")],
                            ("q6", "trained_model is stale: MLPScratch or train_mlp was redefined")),
    "ignores_num_epochs": ([("q6-solution", "for epoch in range(num_epochs):", "for epoch in range(3):")], [],
                           ("q6", "should return a list of 2 Python floats")),
    "budget_constants": ([("q6-train", "NUM_EPOCHS = 2\nBATCH_SIZE = 256", "NUM_EPOCHS = 3\nBATCH_SIZE = 128")], [],
                         None),
}

# Their notebooks keep NUM_EPOCHS = 2 (the crash happens in the first epoch; the budget case sets its own).
FULL_TRAINING_CELL = {"training_crashes", "budget_constants"}
# The public check of these needs the training cell to have run (in this process: fast, it crashes or trains 0 epochs).
RUN_TRAINING_CELL = {"training_crashes", "stale_trained_model"}
FULL = {"q1": 12, "q2": 9, "q3": 8, "q4": 20, "q5": 25, "q6": 26}
# name -> what the grader takes away: {question: points lost}, and words of the grader's feedback
LOSSES = {
    "correct": ({}, None),
    "torch_relu": ({"q1": 4}, "the grader will not count this: torch.relu is not allowed in relu"),
    "derivative_by_autograd": ({"q2": 3}, "the grader will not count this: sigmoid_grad uses autograd"),
    "derivative_in_float32": ({"q2": 3}, "has dtype torch.float32, expected torch.float64"),
    "relu_grad_at_zero": ({"q2": 3}, "relu_grad(x) for a float32 input"),
    "collapse_b_is_b2": ({"q3": 8}, "b of collapse"),
    "initial_scale_fixed": ({"q4": 5}, "should be drawn from a normal distribution with mean 0 and standard deviation "
                                       "sigma=0.1"),
    "nn_linear": ({"q4": 20}, "expected exactly ['W1', 'b1', 'W2', 'b2']"),
    "hard_coded_784": ({"q4": 9}, "the forward pass of MLPScratch(12, 3, 5, 0.1)"),
    "relu_on_output": ({"q4": 9}, "the forward pass of MLPScratch(784, 10, 256, 0.1)"),
    "backward_by_autograd": ({"q5": 17}, "the grader will not count this: backward uses autograd"),
    "softmax_before_loss": ({"q6": 20}, "at least 0.75 is needed"),
    "gradients_not_zeroed": ({"q6": 20}, "at least 0.75 is needed"),
    "losses_as_tensors": ({"q6": 6}, "train_mlp should return Python floats (loss.item())"),
    "training_crashes": ({"q6": 26}, "train_mlp failed: TypeError"),
    "stale_trained_model": ({"q6": 26}, "not attempted yet (rewriting it)"),
    "ignores_num_epochs": ({"q6": 26}, "the training budget is 2 epochs of minibatches of 256"),
    "budget_constants": ({}, None),
}
assert LOSSES.keys() == MISTAKES.keys()


def mistake_notebook(name: str):
    """The solved student notebook with mistake ``name`` made in it."""
    nb = assign.student_notebook(assign.read_source(SOURCE), keep_solutions_for=set(QUESTIONS))
    edits, added, _ = MISTAKES[name]
    cells = {c.id: c for c in nb.cells}
    for cell_id, old, new in ([] if name in FULL_TRAINING_CELL else [("q6-train", *FAST)]) + edits:
        assert cells[cell_id].source.count(old) == 1, (name, cell_id, old)
        cells[cell_id].source = cells[cell_id].source.replace(old, new)
    for cell_id, code in added:
        index = nb.cells.index(cells[cell_id]) + 1
        nb.cells.insert(index, nbformat.v4.new_code_cell(code, id=f"added-{index}"))
    return nb


def public_check(nb, question: str, training_cell: bool = False):
    """Run the notebook's cells in this process (the training cell only if ``training_cell``), then the public
    tests of ``question``; returns their outcomes."""
    ns = {"__name__": "__main__"}
    with contextlib.redirect_stdout(io.StringIO()):
        for cell in nb.cells:
            if cell.cell_type != "code" or (cell.id == "q6-train" and not training_cell):
                continue
            exec(compile(cell.source, f"<cell {cell.id}>", "exec"), ns)
    return run_public_tests(question, ns)


@pytest.mark.parametrize("name", [n for n in MISTAKES if MISTAKES[n][2]])
def test_public_check_says_what_the_grader_will_do(name):
    question, words = MISTAKES[name][2]
    outcomes = public_check(mistake_notebook(name), question, training_cell=name in RUN_TRAINING_CELL)
    failed = [o for o in outcomes if o.status == "fail"]
    assert any(words in o.message for o in failed), [(o.name, o.status, o.message) for o in outcomes]
    assert not any(o.status == "todo" for o in outcomes if name == "training_crashes"), outcomes


def test_public_check_passes_the_solution():
    nb = mistake_notebook("correct")
    for question in QUESTIONS[:5]:
        assert all(o.status == "pass" for o in public_check(nb, question)), question


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    require_bwrap()
    root = tmp_path_factory.mktemp("mistakes")
    subs = root / "subs"
    subs.mkdir()
    for name in MISTAKES:
        nbformat.write(mistake_notebook(name), subs / f"{name}.ipynb")
    out = root / "out"
    summary = grade_folder(subs, out, spec=load_spec(AUTOGRADER), workers=2, progress=False, log=lambda *a: None)
    assert summary.graded == len(MISTAKES) and summary.failed == 0
    return {p.stem: json.loads(p.read_text())["grade"] for p in (out / "records").glob("*.json")}


@pytest.mark.parametrize("name", list(MISTAKES))
def test_grader_takes_away_exactly_the_mistakes_points(graded, name):
    grade = graded[name]
    lost, words = LOSSES[name]
    expected = {q: FULL[q] - lost.get(q, 0) for q in QUESTIONS}
    got = {q["name"]: q["points"] for q in grade["questions"]}
    assert got == expected, grade["feedback"]
    assert grade["status"] == "ok", grade["feedback"]
    if words:
        failed = [line for q in grade["questions"] for line in q["failed"]]
        assert any(words in line for line in failed), failed


def test_full_marks_are_the_spec(graded):
    spec = load_spec(AUTOGRADER)
    assert dict(spec.questions) == FULL and spec.max_total == 100
