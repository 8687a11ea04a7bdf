"""Every typical mistake of the lab: what the public check() says about it, and exactly what the grader takes away.

Each mistake is the solution notebook (the student notebook with every answer filled in) broken in one way.
For each, ``check("qN")`` is run in this process on the notebook's namespace and must say what the grader will
do ("the grader will not count this: ...", or a targeted hint); then all of them are graded together by
``grade_folder`` (one warm server) and each must get its exact points per question.

Speed: question 6's training cell (the validation table) is a ``grader-skip`` cell: left as the template has it,
the grader runs its stand-in (its literal assignments) instead, and retrains with the notebook's ``train_mlp`` and
``chosen_hyperparameters()`` itself; the in-process checks skip it too, except for the mistakes that need it.
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
    "params_in_a_list": ([("q3-solution", "self.params = nn.ParameterList()", "self.params = []")], [],
                         ("q3", "is a list, not an nn.ParameterList: the grader will not count this")),
    "weights_transposed": ([("q3-solution", "torch.randn(fan_in, fan_out)", "torch.randn(fan_out, fan_in)"),
                            ("q3-solution", "H = H @ self.params[2 * layer] +", "H = H @ self.params[2 * layer].T +")],
                           [], ("q3", "the lectures' layer is X @ W + b (nn.Linear stores the transpose")),
    "kaiming_normal_on_fan_in_fan_out": ([("q3-solution",
                                           "nn.Parameter(torch.randn(fan_in, fan_out) * scale_of(fan_in, fan_out))",
                                           "nn.Parameter(nn.init.kaiming_normal_(torch.empty(fan_in, fan_out)) "
                                           "if init == 'he' else torch.randn(fan_in, fan_out) * scale_of(fan_in, fan_out))")],
                                         [], ("q3", "is sqrt(2/fan_out), the fan of the other dimension")),
    "random_biases": ([("q3-solution", "nn.Parameter(torch.zeros(fan_out))", "nn.Parameter(torch.randn(fan_out) * 0.01)")],
                      [], ("q3", "the grader will not count this: b1 of MLP(784, 10, [256, 64], init='he') should "
                                 "start at zero")),
    "unknown_init_accepted": ([("q3-solution", 'raise ValueError(f"init should be \'he\', \'xavier\' or a float sigma > 0, '
                                               'not {init!r}")', "scale_of = lambda fan_in, fan_out: (2 / fan_in) ** 0.5")],
                              [], ("q3", "MLP(4, 2, [3], init='xavir') was accepted: the grader expects a ValueError")),
    "activation_on_output": ([("q3-solution", "            if layer < num_layers - 1:\n                H = self.activation(H)",
                               "            H = self.activation(H)")], [],
                             ("q3", "applies the activation to the logits: the grader will not count this")),
    "rms_as_tensors": ([("q3-solution", "values.append(H.square().mean().sqrt().item())",
                         "values.append(H.square().mean().sqrt())")], [],
                       ("q3", "the grader will not count this: hidden_rms should return Python floats (.item())")),
    "bias_decayed": ([("q4-solution", "grads[2 * depth + 1] = delta.sum(dim=0)",
                       "grads[2 * depth + 1] = delta.sum(dim=0) + weight_decay * biases[depth]")], [],
                     ("q4", "includes weight decay: the penalty is on the weights only, not on the biases")),
    "mean_forgotten": ([("q4-solution", "delta = (torch.softmax(logits, dim=1) - targets) / X.shape[0]",
                         "delta = torch.softmax(logits, dim=1) - targets")], [],
                       ("q4", "dW1 of backward with 2 layers (5, 4, 3), tanh, weight_decay=0.0 is wrong at 20 of 20")),
    "derivative_at_activation_output": ([("q4-solution", "activation_grad(pre_activations[depth - 1])",
                                          "activation_grad(layer_inputs[depth])")], [],
                                        ("q4", "dW1 of backward with 2 layers (5, 4, 3), tanh, weight_decay=0.0 is "
                                               "wrong at 20 of 20")),
    "backward_by_autograd": ([("q4-solution", "    tensors = [p.detach() for p in params]\n",
                               "    leaves = [p.detach().clone().requires_grad_(True) for p in params]\n"
                               "    out = X\n    for i in range(0, len(leaves), 2):\n"
                               "        out = out @ leaves[i] + leaves[i + 1]\n"
                               "        out = activation(out) if i + 2 < len(leaves) else out\n"
                               "    decay = weight_decay / 2 * sum((W ** 2).sum() for W in leaves[0::2])\n"
                               "    return list(torch.autograd.grad(F.cross_entropy(out, y) + decay, leaves))\n"
                               "    tensors = [p.detach() for p in params]\n")], [],
                             ("q4", "the grader will not count this: backward uses autograd")),
    "forward_difference": ([("q5-solution", "        entries[i] = original - h\n        below = float(f(x))",
                             "        entries[i] = original\n        below = float(f(x))"),
                            ("q5-solution", "(above - below) / (2 * h)", "(above - below) / h")], [],
                           ("q5", "numerical_gradient(f, x) is accurate only to about 9e-06: the grader asks for "
                                  "rtol=1e-7, atol=2e-8")),
    "norm_relative_error": ([("q5-solution", "return ((a - b).abs() / scale).max().item()",
                              "return (torch.linalg.norm(a - b) / torch.clamp(torch.linalg.norm(a) + "
                              "torch.linalg.norm(b), min=1e-12)).item()")], [],
                            ("q5", "expected 0.5, got 0.0496305")),
    "first_wrong_gradient": ([("q5-solution", '            suspect = ("W", "b")[i % 2] + str(i // 2 + 1)',
                               '            return ("W", "b")[i % 2] + str(i // 2 + 1)')], [],
                             ("q5", "find_wrong_gradient on a backward without 1/n (every gradient n times too large), "
                                    "3 layers, tanh, weight_decay=0.0: expected 'b3', got 'W1'")),
    "threshold_too_tight": ([("q5-solution", "> 1e-4:", "> 1e-9:")], [],
                            ("q5", "find_wrong_gradient on a correct backward, 3 layers, tanh, weight_decay=0.0: "
                                   "expected None, got 'W2'")),
    "training_by_autograd": ([("q6-solution",
                               "            with torch.no_grad():\n"
                               "                minibatch_losses.append(F.cross_entropy(model(X), y).item())\n"
                               "                gradients = backward(X, y, list(model.params), model.activation, "
                               "derivative_of, weight_decay)\n",
                               "            loss = F.cross_entropy(model(X), y)\n"
                               "            minibatch_losses.append(loss.item())\n"
                               "            gradients = torch.autograd.grad(loss, list(model.params))\n"
                               "            with torch.no_grad():\n")], [],
                             ("q6", "the grader will not count this: train_mlp uses autograd (loss.backward())")),
    "weight_decay_not_passed": ([("q6-solution", "derivative_of, weight_decay)", "derivative_of, 0.0)")], [],
                                ("q6", "W1 is not what SGD with backward's gradients gives")),
    "relu_grad_for_any_activation": ([("q6-solution",
                                       "derivative_of = {relu: relu_grad, sigmoid: sigmoid_grad, tanh: tanh_grad}"
                                       "[model.activation]", "derivative_of = relu_grad")], [],
                                     ("q6", "and the derivative of model.activation")),
    "losses_as_tensors": ([("q6-solution", "F.cross_entropy(model(X), y).item())", "F.cross_entropy(model(X), y))")],
                          [], ("q6", "should return a list of 2 Python floats, one mean loss per epoch")),
    "ignores_num_epochs": ([("q6-solution", "for _ in range(num_epochs):", "for _ in range(3):")], [],
                           ("q6", "the training budget is 2 epochs: train_mlp asked for more")),
    "epochs_beyond_budget": ([("q6-choice", "return 0.3, 3, 0.0", "return 0.3, 5, 0.0")], [],
                             ("q6", "NUM_EPOCHS should be a whole number from 1 to 3 (the budget)")),
    "training_crashes": ([("q6-solution", "for X, y in data.train_dataloader():", "for X, y in data.train_dataloader:")],
                         [], ("q6", "the training cell failed: TypeError")),
}

# The public check of these needs the training cell to have run (in this process: fast, it crashes at once).
RUN_TRAINING_CELL = {"training_crashes"}
FULL = {"q1": 6, "q2": 6, "q3": 20, "q4": 24, "q5": 20, "q6": 24}
# name -> what the grader takes away: {question: points lost}, and words of the grader's feedback
LOSSES = {
    "correct": ({}, None),
    "torch_relu": ({"q1": 2}, "the grader will not count this: torch.relu is not allowed in relu"),
    "derivative_by_autograd": ({"q2": 2}, "the grader will not count this: sigmoid_grad uses autograd"),
    "derivative_in_float32": ({"q2": 2}, "has dtype torch.float32, expected torch.float64"),
    "relu_grad_at_zero": ({"q2": 2}, "relu_grad(x) for a float32 input"),
    "params_in_a_list": ({"q3": 11}, "is a list, not an nn.ParameterList (tensors in a plain list are invisible"),
    "weights_transposed": ({"q3": 16}, "expected (fan_in, fan_out) = "),
    "kaiming_normal_on_fan_in_fan_out": ({"q3": 5}, "is sqrt(2/fan_out), the fan of the other dimension "
                                                    "(nn.init.kaiming_normal_ reads a 2-d weight as nn.Linear's"),
    "random_biases": ({"q3": 5}, "should start at zero"),
    "unknown_init_accepted": ({"q3": 5}, "MLP(4, 2, [3], init='xavir') was accepted: an init other than 'he', "
                                         "'xavier' or a float sigma should raise a ValueError"),
    "activation_on_output": ({"q3": 6}, "it matches the activation applied to the logits"),
    "rms_as_tensors": ({"q3": 4}, "hidden_rms should return Python floats (.item())"),
    "bias_decayed": ({"q4": 8}, "db1 of backward for float64 inputs, n=4, layer widths (4, 6, 5), tanh, "
                                "weight_decay=0.483 is wrong"),
    "mean_forgotten": ({"q4": 24}, "dW1 of backward for float64 inputs, n=4, layer widths (5, 8), tanh, "
                                   "weight_decay=0 is wrong at 40 of 40 positions"),
    "derivative_at_activation_output": ({"q4": 18}, "dW1 of backward for float64 inputs, n=6, layer widths "
                                                    "(6, 3, 8, 8, 4, 5), tanh, weight_decay=0 is wrong"),
    "backward_by_autograd": ({"q4": 24}, "the grader will not count this: backward uses autograd"),
    "forward_difference": ({"q5": 5}, "numerical_gradient(f, x) for a float64 input of shape (7,) is wrong"),
    "norm_relative_error": ({"q5": 4}, "max_relative_error(a, b) for (3,) tensors: expected 9.60147e-05, got "
                                       "1.4519e-05"),
    "first_wrong_gradient": ({"q5": 6}, "find_wrong_gradient on a backward that takes the activation's derivative "
                                        "at H2 instead of Z2 (3 layers, float64, weight_decay=0.1): expected 'b2', "
                                        "got 'W1'"),
    "threshold_too_tight": ({"q5": 11}, "a bug's name counts only when find_wrong_gradient returns None for the "
                                        "correct backward"),
    "training_by_autograd": ({"q6": 24}, "train_mlp uses autograd (loss.backward()), and the grader runs it with "
                                         "autograd off"),
    "weight_decay_not_passed": ({"q6": 4}, "W1 is not what SGD with backward's gradients gives"),
    "relu_grad_for_any_activation": ({"q6": 4}, "and the derivative of model.activation"),
    "losses_as_tensors": ({"q6": 4}, "train_mlp should return Python floats (loss.item())"),
    "ignores_num_epochs": ({"q6": 4}, "the training budget is 2 epochs: train_mlp asked for more"),
    "epochs_beyond_budget": ({"q6": 20}, "NUM_EPOCHS a whole number from 1 to 3"),
    "training_crashes": ({"q6": 24}, "train_mlp on the small network failed: TypeError"),
}
assert LOSSES.keys() == MISTAKES.keys()


def mistake_notebook(name: str):
    """The solved student notebook with mistake ``name`` made in it."""
    nb = assign.student_notebook(assign.read_source(SOURCE), keep_solutions_for=set(QUESTIONS))
    edits, added, _ = MISTAKES[name]
    cells = {c.id: c for c in nb.cells}
    for cell_id, old, new in edits:
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
