"""The MLP lab: one source, two outputs; public self-check; hidden tests that judge data, not objects.

Fast tests run the harvest in this process on hand-made namespaces (the verdict logic is the same as in
the sandbox). The slow ones grade real notebooks through the sandboxed runner: the solution scores full
marks, the untouched student notebook zero on every question, and a notebook with one question solved
exactly that question's points.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import nbformat
import numpy as np
import pytest
import torch

from coursekit.grading import assign
from coursekit.selfcheck import check, run_public_tests
from coursekit.grading.grade import grade_notebook
from coursekit.grading.labspec import load_spec

REPO = Path(__file__).resolve().parent.parent
LAB = REPO / "lab"
SOURCE = LAB / "source" / "mlp_lab_solution.ipynb"
STUDENT = LAB / "mlp_lab.ipynb"
# question 6's text: "LR = 0.3 ... (medians of 3 seeds: 0.75 to 0.79)"; the grader's seeds for the solution
CLAIMED_MEDIAN = 0.75
POINTS = {"q1": 6, "q2": 6, "q3": 20, "q4": 24, "q5": 20, "q6": 24}


@pytest.fixture(scope="module")
def spec():
    return load_spec(LAB / "autograder")


@pytest.fixture(scope="module")
def source_nb():
    return assign.read_source(SOURCE)


# ------------------------------------------------------------------------------------ one source, two outputs
def test_questions_and_points(spec):
    assert spec.questions == list(POINTS.items())
    assert spec.max_total == 100


def test_autograder_files_and_student_cells_match_a_fresh_regeneration(source_nb):
    files = assign.generate(SOURCE, run=False)
    for rel in ("autograder/hidden_tests.py", "autograder/spec.json"):
        assert (LAB / rel).read_text(encoding="utf-8") == files[rel], f"lab/{rel} is stale: run assign"
    fresh = nbformat.reads(files["mlp_lab.ipynb"], as_version=4)
    committed = nbformat.read(STUDENT, as_version=4)
    assert [(c.id, c.cell_type, c.source, c.metadata) for c in committed.cells] == \
           [(c.id, c.cell_type, c.source, c.metadata) for c in fresh.cells]
    assert assign.main(["--check", "--no-run"]) == 0


@pytest.mark.slow
def test_committed_student_notebook_is_exactly_what_assign_produces():
    assert assign.main(["--check"]) == 0, "lab/ differs from `python -m coursekit.grading.assign` output"


def test_student_notebook_has_stubs_and_no_solutions_or_hidden_tests(source_nb):
    text = STUDENT.read_text(encoding="utf-8")
    for leaked in ("BEGIN SOLUTION", "END SOLUTION", "hidden-tests", "def score_q", "def harvest_q",
                   "torch.exp(-torch.abs(x))", "* scale_of(fan_in, fan_out)", "optimizer.step()", "dW1, db1 = X.T @ dZ",
                   "grad_flat[i] = (plus - minus)"):
        assert leaked not in text
    nb = nbformat.reads(text, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    for name in ("relu", "sigmoid", "tanh", "relu_grad", "sigmoid_grad", "tanh_grad", "MLP.__init__",
                 "MLP.forward", "hidden_rms", "backward", "numerical_gradient", "max_relative_error",
                 "find_wrong_gradient",
                 "train_mlp"):
        assert f'raise NotImplementedError("TODO: implement {name}")' in code
    for q in POINTS:
        assert f'check("{q}")' in code and f"def test_{q}_" in code
    headings = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for q, points in POINTS.items():
        assert f"Question {q[1:]}:" in headings and f"({points} points)" in headings
    assert all(c.outputs == [] or c.execution_count for c in nb.cells if c.cell_type == "code")


Q6_TRAIN_STAND_IN = "LR_CANDIDATES = (0.03, 0.1, 0.3, 1.0)\n"  # the cell's literal assignments (not the unpacking one)


def test_template_cells_the_grader_replaces_are_the_self_checks_and_the_training_run(spec, source_nb):
    cells = spec.template_cells
    student = nbformat.read(STUDENT, as_version=4)
    by_id = {c.id: c.source for c in student.cells}
    assert cells == {**{by_id[f"{q}-check"]: "" for q in POINTS}, by_id["q3-experiment"]: "rms_by_init = {}\n",
                     by_id["q6-train"]: Q6_TRAIN_STAND_IN}
    assert "grader-skip" not in STUDENT.read_text(encoding="utf-8")     # the student notebook is unchanged
    # nothing the harvest needs is defined only there: no def/class, no solution
    bad = nbformat.reads(nbformat.writes(source_nb), as_version=4)
    cell = next(c for c in bad.cells if c.id == "q6-train")
    cell.source += "\n\ndef helper():\n    pass\n"
    with pytest.raises(assign.AssignError, match="cannot define functions"):
        assign.grader_skip_cells(bad)


def test_strip_solutions_keeps_signature_and_names_the_method():
    src = ("class M:\n    def f(self, x):\n        y = 1\n        ### BEGIN SOLUTION\n        return x + y\n"
           "        ### END SOLUTION\n\n\ndef g(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION")
    out = assign.strip_solutions(src)
    assert 'def f(self, x):\n        y = 1\n        raise NotImplementedError("TODO: implement M.f")' in out
    assert 'def g(x):\n    raise NotImplementedError("TODO: implement g")' in out
    assert "return x" not in out
    with pytest.raises(assign.AssignError, match="not closed"):
        assign.strip_solutions("def f():\n    ### BEGIN SOLUTION\n    return 1\n")
    with pytest.raises(assign.AssignError, match="without a BEGIN"):
        assign.strip_solutions("def f():\n    return 1\n    ### END SOLUTION\n")


def test_assign_rejects_points_that_do_not_add_up(source_nb):
    nb = nbformat.reads(nbformat.writes(source_nb), as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "markdown" and "## Question 3:" in c.source)
    cell.source = cell.source.replace("(20 points)", "(21 points)")
    with pytest.raises(assign.AssignError, match="q3: the heading says 21 points"):
        assign.spec_dict(nb, assign.hidden_tests_source(nb))


# ----------------------------------------------------------------------------- harvest + score, in process
def _namespace(solved) -> dict:
    """The notebook namespace after running every cell but the training one, with ``solved`` questions solved."""
    nb = assign.student_notebook(assign.read_source(SOURCE), keep_solutions_for=solved)
    ns = {"__name__": "__main__"}
    with contextlib.redirect_stdout(io.StringIO()):
        for cell in nb.cells:
            if cell.cell_type == "code" and cell.id != "q6-train":
                exec(compile(cell.source, f"<cell {cell.id}>", "exec"), ns)
    return ns


def _harvest(spec, ns, tmp_path, seed=0):
    """Run the harvest code in ``ns`` (as the runner does, minus the sandbox) and read back the data."""
    inputs = spec.make_inputs(seed)
    np.savez(tmp_path / "inputs.npz", **inputs)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(spec.harvest_code, "<harvest>", "exec"), ns)
    finally:
        os.chdir(cwd)
    with np.load(tmp_path / "outputs.npz", allow_pickle=False) as f:
        outputs = {k: f[k] for k in f.files}
    meta = json.loads((tmp_path / "outputs.json").read_text())
    return inputs, SimpleNamespace(outputs=outputs, meta=meta, status="ok")


def _grade(spec, ns, tmp_path) -> dict:
    inputs, result = _harvest(spec, ns, tmp_path)
    return {q.name: q for q in spec.score(inputs, result)}


def _stub_train(*args, **kwargs):  # keeps q5 out of the fast tests (it would train)
    raise NotImplementedError("TODO: implement train_mlp")


def test_solutions_of_q1_to_q5_score_full_marks_in_process(spec, tmp_path):
    ns = _namespace({"q1", "q2", "q3", "q4", "q5"})
    ns["train_mlp"] = _stub_train
    graded = _grade(spec, ns, tmp_path)
    assert {q: graded[q].points for q in POINTS} == dict(POINTS, q6=0), {q: graded[q].failed for q in graded}
    assert graded["q6"].failed == [f"{test} ({0}/{points}): not attempted yet (TODO: implement train_mlp)"
                                   for test, points in spec.module.Q6["points"].items()]


def test_stubs_score_zero_and_say_not_attempted(spec, tmp_path):
    graded = _grade(spec, _namespace(set()), tmp_path)
    for q in POINTS:
        assert graded[q].points == 0 and graded[q].passed == []
        assert all("not attempted yet" in line for line in graded[q].failed), graded[q].failed


def test_questions_are_graded_on_their_own(spec, tmp_path):
    """q2, q3 and q5 use relu/sigmoid/tanh (q5 also their derivatives): with questions 1 and 2 unfinished they
    still get their points."""
    ns = _namespace({"q2", "q3"})
    ns["train_mlp"] = _stub_train
    graded = _grade(spec, ns, tmp_path)
    assert {q: graded[q].points for q in POINTS} == {q: POINTS[q] if q in ("q2", "q3") else 0 for q in POINTS}
    for alone in ("q4", "q5"):     # q4 without q1/q2; q5's find_wrong_gradient without q4's backward
        ns = _namespace({alone})
        ns["train_mlp"] = _stub_train
        graded = _grade(spec, ns, tmp_path)
        assert {q: graded[q].points for q in POINTS} == {q: POINTS[q] if q == alone else 0 for q in POINTS}, alone


class SneakyTensor(torch.Tensor):
    """Compares equal to anything."""

    def __eq__(self, other):
        return torch.ones_like(torch.Tensor(self), dtype=torch.bool)

    __hash__ = torch.Tensor.__hash__


CHEATS = {
    "builtin": ("sigmoid", lambda x: torch.sigmoid(x), "torch.sigmoid is not allowed"),
    "builtin alias": ("tanh", lambda x, f=torch.nn.functional.tanh: f(x), "torch.tanh is not allowed"),
    "tensor method": ("relu", lambda x: x.relu(), "torch.relu is not allowed"),
    "hidden by a TorchFunctionMode": ("sigmoid", lambda x: _through_own_mode(torch.sigmoid, x),
                                      "torch.sigmoid is not allowed"),
    "naive tanh": ("tanh", lambda x: (1 - torch.exp(-2 * x)) / (1 + torch.exp(-2 * x)), "contains nan"),
    "nan": ("sigmoid", lambda x: torch.full_like(x, float("nan")), "contains nan"),
    "eq trick": ("relu", lambda x: torch.zeros_like(x).as_subclass(SneakyTensor), "returned a SneakyTensor"),
    "numpy": ("relu", lambda x: np.maximum(x.numpy(), 0), "returned a ndarray"),
    "float64 out": ("relu", lambda x: torch.clamp(x.double(), min=0), "has dtype torch.float64, expected torch.float32"),
    "wrong shape": ("sigmoid", lambda x: (1 / (1 + torch.exp(-x))).reshape(-1), "has shape"),
    "off by 1e-3": ("tanh", lambda x: torch.clamp(x, -1, 1) * 0 + 1e-3, "is wrong at"),
}


def _through_own_mode(fn, x):
    """fn(x) called through a TorchFunctionMode of the notebook's own that disables torch functions."""
    from torch.overrides import TorchFunctionMode

    class Hide(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            with torch._C.DisableTorchFunction():
                return func(*args, **(kwargs or {}))

    with Hide():
        return fn(x)


@pytest.mark.parametrize("case", sorted(CHEATS))
def test_hidden_tests_reject_wrong_or_tricky_values(spec, tmp_path, case):
    name, fn, message = CHEATS[case]
    ns = _namespace({"q1"})
    ns[name] = fn
    ns["train_mlp"] = _stub_train
    graded = _grade(spec, ns, tmp_path)["q1"]
    failed = [line for line in graded.failed if line.startswith(name + " ")]
    assert len(failed) == 1 and message in failed[0], graded.failed
    assert graded.points == POINTS["q1"] - spec.module.Q1["points"][name]


def test_hidden_tests_reject_autograd_bool_and_wrong_shapes(spec, tmp_path):
    ns = _namespace({"q1", "q2", "q3"})
    ns["train_mlp"] = _stub_train

    def sigmoid_grad(x):
        x = x.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(ns["sigmoid"](x).sum(), x)
        return g

    ns["sigmoid_grad"] = sigmoid_grad
    ns["relu_grad"] = lambda x: x > 0
    graded = _grade(spec, ns, tmp_path)
    q2 = "\n".join(graded["q2"].failed)
    assert "the grader will not count this: sigmoid_grad uses autograd" in q2 and "has dtype torch.bool" in q2
    assert graded["q2"].points == spec.module.Q2["points"]["tanh_grad"]


def test_verdict_comes_from_the_arrays_not_from_what_meta_claims(spec, tmp_path):
    inputs, result = _harvest(spec, _namespace({"q1"}), tmp_path)
    key = next(k for k in result.outputs if k.startswith("q1.sigmoid."))
    result.outputs[key] = np.zeros_like(result.outputs[key]) + 0.5   # meta still says: fine, finite
    result.outputs["q1.relu.x_special32"] = result.outputs["q1.relu.x_special32"].astype(object)
    q1 = {q.name: q for q in spec.score(inputs, result)}["q1"]
    assert q1.points == spec.module.Q1["points"]["tanh"] and any(line.startswith("sigmoid") for line in q1.failed)
    assert any("could not be read back" in line for line in q1.failed)


def test_make_inputs_is_seeded_and_covers_the_edge_cases(spec):
    a, b, c = spec.make_inputs(0), spec.make_inputs(0), spec.make_inputs(1)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a)
    xs = [v for k, v in a.items() if k.startswith("q1.x_")]
    assert {str(x.dtype) for x in xs} == {"float32", "float64"}
    assert any(x.size == 0 for x in xs) and any(x.size == 1 for x in xs)
    assert any(np.isin([-100, 100], x).all() for x in xs)
    with pytest.raises(ValueError, match="seed"):
        spec.make_inputs(-1)


# ------------------------------------------------------------------------------------------ public check()
def test_check_prints_pass_for_the_solution_and_todo_for_stubs():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        check("q1", _namespace({"q1"}))
        check("q1", _namespace(set()))
    text = out.getvalue()
    assert "q1: 6/6 public tests passed" in text and "q1: not attempted yet" in text
    assert "TODO  relu keeps positive values and zeroes the others -- not attempted yet (implement relu)" in text
    assert "Traceback" not in text


def test_check_says_what_was_expected_and_what_came_back():
    ns = _namespace({"q1", "q3"})
    ns["tanh"] = lambda x: (1 - torch.exp(-2 * x)) / (1 + torch.exp(-2 * x))
    ns["relu"] = lambda x: x.double().clamp(min=0)
    ns["hidden_rms"] = lambda model, X: [][1]
    outcomes = {o.name: o for o in run_public_tests("q1", ns) + run_public_tests("q3", ns)}
    stable = outcomes["sigmoid and tanh stay finite at x = -100 and x = 100"]
    assert stable.status == "fail" and "tanh(x) contains nan" in stable.message
    relu = outcomes["relu keeps positive values and zeroes the others"]
    assert relu.status == "fail" and "should have dtype float32" in relu.message and "float64" in relu.message
    rms = outcomes["hidden_rms gives one Python float per hidden layer: the root mean square of its output, after the "
                   "activation"]
    assert rms.status == "fail" and rms.message.startswith("your code raised IndexError")
    assert "Traceback" not in rms.message


# ---------------------------------------------------------------------- whole notebooks through the sandbox
@pytest.fixture(scope="module")
def graded_notebooks(tmp_path_factory):
    """Solution, untouched student notebook, and one notebook per question with only that question solved."""
    from grading_helpers import run_many

    folder = tmp_path_factory.mktemp("lab-submissions")
    source = assign.read_source(SOURCE)
    paths = {"solution": SOURCE, "student": STUDENT}
    for q in POINTS:
        paths[f"only-{q}"] = folder / f"only_{q}.ipynb"
        paths[f"only-{q}"].write_text(assign.dumps(assign.student_notebook(source, keep_solutions_for={q})))
    for name, edited in (("template-cells", False), ("edited-training-cell", True)):
        paths[name] = folder / f"{name}.ipynb"
        paths[name].write_text(assign.dumps(_recording_notebook(source, edited)))
    spec = load_spec(LAB / "autograder")
    return run_many({name: (lambda p=p: grade_notebook(p, spec=spec)) for name, p in paths.items()})


def _recording_notebook(source, edit_training_cell: bool):
    """The solved student notebook whose check() and train_mlp record that a notebook cell called them, and whose
    MLP then fails (q3's points): what the grader runs shows in the points. Its template cells carry
    trailing whitespace (still unchanged); with ``edit_training_cell``, the training cell trains 0 epochs."""
    nb = assign.student_notebook(source, keep_solutions_for=set(POINTS))
    cells = {c.id: c for c in nb.cells}
    cells["setup"].source += ("\n\nRAN_BY_A_CELL = []\n_check = check\n\n\ndef check(question):\n"
                              "    RAN_BY_A_CELL.append(question)\n    return _check(question)\n")
    first_line = "    epoch_means = []\n"
    assert cells["q6-solution"].source.count(first_line) == 1
    cells["q6-solution"].source = cells["q6-solution"].source.replace(
        first_line, '    if type(model).__name__ == "MLP":  # the notebook\'s model, not the grader\'s\n'
                    '        RAN_BY_A_CELL.append("training")\n' + first_line)
    first_line = '        if init == "he":\n'
    assert cells["q3-solution"].source.count(first_line) == 1
    cells["q3-solution"].source = cells["q3-solution"].source.replace(
        first_line, "        if RAN_BY_A_CELL:\n            raise RuntimeError(f'a notebook cell ran: {RAN_BY_A_CELL}')\n"
        + first_line)
    for cell_id in ("q1-check", "q6-train"):
        cells[cell_id].source = cells[cell_id].source.replace("\n", "   \n") + " \t\n\n"
    if edit_training_cell:
        # one short row of the validation table (the cell's lines carry trailing whitespace by now)
        cells["q6-train"].source = cells["q6-train"].source.replace(
            "LR_CANDIDATES = (0.03, 0.1, 0.3, 1.0)", "LR_CANDIDATES = (0.3,)", 1).replace(
            "MAX_EPOCHS, BUDGET_IMAGES, BATCH_SIZE = 3,", "MAX_EPOCHS, BUDGET_IMAGES, BATCH_SIZE = 1,", 1)
        assert "LR_CANDIDATES = (0.3,)" in cells["q6-train"].source
    return nb


@pytest.mark.slow
def test_solution_scores_full_marks(graded_notebooks):
    grade = graded_notebooks["solution"]
    assert grade.status == "ok" and grade.cell_errors == [], grade.feedback_text
    assert grade.points() == POINTS and grade.total == grade.max_total == 100, grade.feedback_text
    # the text's claim: the solution's choice (LR = 0.3, 3 epochs) has a median test accuracy of 0.77 or more
    median = float(re.search(r"median test accuracy (0\.\d+) over 3 seeds", grade.feedback_text).group(1))
    assert median >= CLAIMED_MEDIAN, median


@pytest.mark.slow
def test_student_notebook_scores_zero_and_runs_without_crashing(graded_notebooks, spec):
    grade = graded_notebooks["student"]
    assert grade.status == "ok" and grade.cell_errors == [], grade.feedback_text
    assert grade.points() == {q: 0 for q in POINTS}, grade.feedback_text
    assert grade.feedback_text.count("not attempted yet") == sum(len(q["tests"]) for q in spec.spec["questions"])


@pytest.mark.slow
@pytest.mark.parametrize("question", sorted(POINTS))
def test_one_question_solved_scores_exactly_its_points(graded_notebooks, question):
    grade = graded_notebooks[f"only-{question}"]
    assert grade.status == "ok" and grade.cell_errors == [], grade.feedback_text
    assert grade.points() == {q: (POINTS[q] if q == question else 0) for q in POINTS}, grade.feedback_text


@pytest.mark.slow
def test_grader_runs_stand_ins_for_unchanged_template_cells_and_edited_cells_as_written(graded_notebooks):
    """The check() cells and the training cell, unchanged (trailing whitespace aside), are not run by the grader
    (the harvest still trains with the notebook's train_mlp: q6's points); an edited training cell is."""
    grade = graded_notebooks["template-cells"]
    assert grade.points() == POINTS and grade.cell_errors == [], grade.feedback_text
    assert "were not run by the grader" in grade.feedback_text
    grade = graded_notebooks["edited-training-cell"]
    # every q3 test that builds an MLP fails; hidden_rms (4 points) is tested on the grader's own model
    assert grade.points() == dict(POINTS, q3=4), grade.feedback_text
    assert "a notebook cell ran: ['training']" in grade.feedback_text


def test_harvest_reads_real_data_even_if_the_notebook_patched_torch(spec, tmp_path):
    """A notebook that makes every tensor look right (patched Tensor methods) still sends back its real values."""
    ns = _namespace({"q3"})
    ns["train_mlp"] = _stub_train
    saved = {name: torch.Tensor.__dict__[name] for name in ("numpy", "detach") if name in torch.Tensor.__dict__}
    exec("import torch\n"
         "class ZeroMLP(MLP):\n"
         "    def forward(self, X):\n"
         "        return torch.zeros(X.reshape(-1, self.num_inputs).shape[0], self.params[-1].shape[0],\n"
         "                           dtype=self.params[-1].dtype)\n"
         "MLP = ZeroMLP\n"
         "_real = torch.Tensor.numpy\n"
         "torch.Tensor.numpy = lambda self, *a, **k: _real(self) + 1\n"
         "torch.Tensor.detach = lambda self: self\n", ns)
    try:
        graded = _grade(spec, ns, tmp_path)["q3"]
    finally:
        for name in ("numpy", "detach"):
            if name in saved:
                setattr(torch.Tensor, name, saved[name])
            else:
                delattr(torch.Tensor, name)
    assert graded.points == POINTS["q3"] - spec.module.Q3["points"]["forward"], graded.failed
    (line,) = graded.failed
    assert line.startswith("forward (0/") and "is wrong at" in line, line


# -------------------------------------------------------- the one rule for torch's activations (banned_calls)
class _PassThroughSubclass(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **(kwargs or {}))


class _HiddenRelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        with torch._C.DisableTorchFunction(), torch._C._DisableTorchDispatch():
            return torch.relu(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


def _scripted_tanh(x):
    return torch.tanh(x)


def _evasions():
    """name -> (function, what the rule must report). Each hides torch's own activation a different way."""
    scripted = torch.jit.script(_scripted_tanh)
    traced = torch.jit.trace(lambda x: torch.sigmoid(x), torch.randn(3))
    fx_module = torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.ReLU()))

    def disabled_torch_function(x):
        with torch._C.DisableTorchFunction():
            return torch.relu(x)

    def disabled_everything(x):
        with torch._C.DisableTorchFunction(), torch._C._DisableTorchDispatch():
            return torch.relu(x)

    def disabled_and_no_grad(x):
        with torch._C.DisableTorchFunction(), torch._C._DisableTorchDispatch(), torch.no_grad():
            return torch.relu(x)

    def in_place(x):
        y = x.clone()
        y.sigmoid_()
        return y

    return {
        "own TorchFunctionMode": (lambda x: _through_own_mode(torch.tanh, x), "torch.tanh"),
        "DisableTorchFunction": (disabled_torch_function, "torch.relu"),
        "__torch_function__ subclass": (lambda x: torch.relu(x.as_subclass(_PassThroughSubclass))
                                        .as_subclass(torch.Tensor), "torch.relu"),
        "torch.fx": (fx_module, "torch.relu"),
        "torch.jit.script": (scripted, "torch.tanh"),
        "torch.jit.trace": (traced, "torch.sigmoid"),
        "torch.ops.aten": (lambda x: torch.ops.aten.relu(x), "torch.relu"),
        "getattr": (lambda x: getattr(torch, "sig" + "moid")(x), "torch.sigmoid"),
        "vmap": (lambda x: torch.vmap(torch.sigmoid)(x), "torch.sigmoid"),
        "nn.Module": (lambda x: torch.nn.Tanh()(x), "torch.tanh"),
        "in-place method": (in_place, "torch.sigmoid"),
        "special.expit": (lambda x: torch.special.expit(x), "torch.special.expit"),
        "relative": (lambda x: torch.nn.functional.hardtanh(x), "torch.hardtanh"),
        "python dispatch off": (disabled_everything, "torch.relu"),
        "python dispatch off, no grad": (disabled_and_no_grad, "detached from autograd"),
        "custom autograd.Function": (lambda x: _HiddenRelu.apply(x), "custom torch.autograd.Function"),
        "numpy": (lambda x: torch.from_numpy(np.tanh(x.detach().numpy())), "Tensor.numpy"),
    }


@pytest.mark.parametrize("case", sorted(_evasions()))
def test_banned_calls_see_through_indirection(case):
    from coursekit import banned_calls
    fn, expected = _evasions()[case]
    used = banned_calls.banned_calls_of(fn, (torch.linspace(-2, 2, 5),))
    assert any(expected in name for name in used), used


ALLOWED = {
    "where": lambda x: torch.where(x > 0, x, torch.zeros_like(x)),
    "torch.max": lambda x: torch.max(x, torch.zeros_like(x)),
    "torch.maximum": lambda x: torch.maximum(x, torch.zeros_like(x)),
    "clamp": lambda x: torch.clamp(x, min=0),
    "in-place on a copy": lambda x: (lambda y: (y.__setitem__(y < 0, 0), y)[1])(x.clone()),
    "stable sigmoid": lambda x: torch.where(x >= 0, 1 / (1 + torch.exp(-x.abs())),
                                            torch.exp(-x.abs()) / (1 + torch.exp(-x.abs()))),
}


@pytest.mark.parametrize("case", sorted(ALLOWED))
def test_banned_calls_allow_elementary_operations(case):
    from coursekit import banned_calls
    assert banned_calls.banned_calls_of(ALLOWED[case], (torch.linspace(-2, 2, 5),)) == []


class _HiddenTanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        with torch._C.DisableTorchFunction(), torch._C._DisableTorchDispatch():
            return torch.tanh(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


def _tanh_dispatch_off(x):
    with torch._C.DisableTorchFunction(), torch._C._DisableTorchDispatch():
        return torch.tanh(x)


TANH_EVASIONS = {  # right values, wrong means
    "own TorchFunctionMode": (lambda x: _through_own_mode(torch.tanh, x), "torch.tanh is not allowed"),
    "python dispatch off": (_tanh_dispatch_off, "torch.tanh is not allowed"),
    "custom autograd.Function": (lambda x: _HiddenTanh.apply(x), "custom torch.autograd.Function is not allowed"),
}


@pytest.mark.parametrize("case", sorted(TANH_EVASIONS))
def test_grader_and_public_check_apply_the_same_rule(spec, tmp_path, case):
    """Hidden through indirection, torch's tanh costs q1's tanh points and check("q1") says so in the same words."""
    fn, expected = TANH_EVASIONS[case]
    ns = _namespace({"q1"})
    ns["tanh"] = fn
    ns["train_mlp"] = _stub_train
    q1 = _grade(spec, ns, tmp_path)["q1"]
    assert q1.points == POINTS["q1"] - spec.module.Q1["points"]["tanh"], q1.failed
    (line,) = q1.failed
    assert line.startswith("tanh (0/") and "the grader will not count this: " in line and expected in line, line
    outcome = next(o for o in run_public_tests("q1", ns) if o.name.startswith("relu, sigmoid and tanh use only"))
    assert outcome.status == "fail" and outcome.message in line, (outcome, line)


# ------------------------------------------------------------------ the lab's text states what is true
TEXTBOOK = {  # correct, stable solutions written the ways textbooks and the hint write them
    "relu": {"clamp": lambda x: torch.clamp(x, min=0), "maximum": lambda x: torch.maximum(x, torch.zeros_like(x)),
             "max": lambda x: torch.max(x, torch.zeros_like(x)), "mask": lambda x: x * (x > 0)},
    "sigmoid": {"hint": lambda x: torch.where(x >= 0, 1 / (1 + torch.exp(-torch.clamp(x, min=0))),
                                              torch.exp(torch.clamp(x, max=0)) / (1 + torch.exp(torch.clamp(x, max=0))))},
    "tanh": {"via sigmoid": lambda x: 2 * torch.where(2 * x >= 0, 1 / (1 + torch.exp(-torch.abs(2 * x))),
                                                      torch.exp(-torch.abs(2 * x)) / (1 + torch.exp(-torch.abs(2 * x)))) - 1,
             "odd symmetry": lambda x: torch.sign(x) * (1 - torch.exp(-2 * x.abs())) / (1 + torch.exp(-2 * x.abs()))},
}


@pytest.mark.parametrize("name,variant", [(n, v) for n in TEXTBOOK for v in TEXTBOOK[n]])
def test_textbook_activations_meet_the_tolerances(spec, tmp_path, name, variant):
    ns = _namespace({"q1"})
    ns[name] = TEXTBOOK[name][variant]
    ns["train_mlp"] = _stub_train
    q1 = _grade(spec, ns, tmp_path)["q1"]
    assert q1.points == POINTS["q1"], q1.failed


def _markdown(source_nb, question):
    return next(c.source for c in source_nb.cells if c.cell_type == "markdown" and f"## Question {question[1:]}:" in c.source)


def _tol(tol):
    """'rtol=1e-5, atol=1e-6' as the text writes a tolerance."""
    return ", ".join(f"{k}={tol[k]:.0e}".replace("e-0", "e-") for k in ("rtol", "atol"))


def test_numbers_in_the_text_are_the_graders(spec, source_nb):
    from coursekit.grading import scoring
    q1, q2, q4, q5, q6 = (_markdown(source_nb, q) for q in ("q1", "q2", "q4", "q5", "q6"))
    for dtype, tol in scoring.TOLERANCES.items():
        assert f"`{_tol(tol)}` for {dtype}" in q1
    assert "same tolerances" in q2
    q4, q5 = (" ".join(text.split()) for text in (q4, q5))     # line breaks as spaces
    for dtype, tol in spec.module.Q4_TOLERANCES.items():
        assert f"{dtype} (`{_tol(tol)}`)" in q4
    assert f"(to `{_tol(spec.module.NUMERICAL_TOLERANCE)}`, which centred differences reach in float64" in q5
    q4_points, q5_points = spec.module.Q4["points"], spec.module.Q5["points"]
    assert ("the output layer's gradients (6), all layers' (10), with weight decay (6), float32 (2)" in q4
            and list(q4_points.values()) == [6, 10, 6, 2])
    assert "(it must return `None`: 3 points)" in q5 and q5_points["correct_backward"] == 3
    for bug, words in (("missing_mean", "a missing $1/n$ (2 points)"), ("transposed_weight", "transpose (2)"),
                       ("derivative_at_wrong_tensor", "wrong tensor (2)"), ("missing_weight_decay", "term (1)"),
                       ("wrong_layer_input", "wrong layer input (1)")):
        assert words in q5 and f"({q5_points[bug]}" in words, bug
    module = spec.module
    steps = module.ACCURACY_STEPS
    assert (f"5 points for each of median test accuracy $\\ge$ {steps[0]:.2f}, {steps[1]:.2f}, {steps[2]:.2f} and "
            f"{steps[3]:.2f}") in q6
    assert module.Q6["points"] == {"loop": 4, **{f"accuracy_{round(100 * s)}": 5 for s in steps}}
    assert f"**{module.GRADER_SEEDS} seeds of its own**" in q6 and f"median of the {module.GRADER_SEEDS} seeds" in q6
    assert f"`NUM_EPOCHS` (at most {module.MAX_EPOCHS})" in q6 and f"{module.BUDGET_IMAGES:,} training images" in q6
    assert f"minibatches of {module.BUDGET_BATCH_SIZE}" in q6
    assert f"{module.CONTROL_IMAGES:,} training images with shuffled labels" in q6
    assert f"reaches {module.CONTROL_MAX_ACCURACY:.2f}" in q6
    train_cell = next(c.source for c in source_nb.cells if c.id == "q6-train")
    assert (f"MAX_EPOCHS, BUDGET_IMAGES, BATCH_SIZE = {module.MAX_EPOCHS}, {module.BUDGET_IMAGES:_}, "
            f"{module.BUDGET_BATCH_SIZE}") in train_cell
    public = next(c.source for c in source_nb.cells if c.id == "q6-public")
    assert (f"Q6_LOOP_LR, Q6_LOOP_WEIGHT_DECAY, Q6_FULL_POINTS_ACCURACY = {module.LOOP_LR}, "
            f"{module.LOOP_WEIGHT_DECAY}, {steps[-1]}") in public
    solution = next(c.source for c in source_nb.cells if c.id == "q6-solution")
    assert "momentum" not in solution, "the claim is about plain SGD: the reference must use plain SGD"


def _q5_network(module, seed):
    """find_wrong_gradient's network for the grader's seed: X, y, params (tensors), activation, derivative, lambda."""
    inputs = module.inputs_q5(np.random.default_rng(seed))
    X, y, params, name = module.q5_network(inputs)
    activation = {"sigmoid": torch.sigmoid, "tanh": torch.tanh}[name]
    derivative = {"sigmoid": lambda z: torch.sigmoid(z) * (1 - torch.sigmoid(z)),
                  "tanh": lambda z: 1 - torch.tanh(z) ** 2}[name]
    return (torch.from_numpy(X), torch.from_numpy(y), [torch.from_numpy(p) for p in params], activation, derivative,
            float(inputs["q5.net.weight_decay"]))


def test_each_broken_backward_has_the_answer_the_grader_expects(spec):
    """On 60 of the grader's networks, against autograd: the correct backward is right to rounding; each bug's
    expected name is the wrong gradient nearest the output, wrong by more than 1e-2, with every gradient after it
    right to rounding; and a correct gradient's finite-difference error stays below 1e-5 (the text's numbers)."""
    module = spec.module
    ns = _namespace({"q4", "q5"})
    worst_correct, least_wrong = 0.0, float("inf")
    for seed in range(60):
        X, y, params, activation, derivative, weight_decay = _q5_network(module, seed)
        truth = ns["autograd_gradients"](X, y, params, activation, weight_decay)
        for bug, expected in [("correct", None)] + [(bug, name) for bug, (_, name) in module.Q5_BUGS.items()]:
            grads = module.harvest_q5_broken_backward(bug)(X, y, params, activation, derivative, weight_decay)
            errors = [ns["max_relative_error"](g, t) for g, t in zip(grads, truth)]
            wrong = [i for i, error in enumerate(errors) if error > 1e-10]
            assert (ns["parameter_names"](params)[wrong[-1]] if wrong else None) == expected, (seed, bug, errors)
            if wrong:
                assert all(error < 1e-10 for error in errors[wrong[-1] + 1:]), (seed, bug, errors)
                least_wrong = min(least_wrong, errors[wrong[-1]])
        for i, p in enumerate(params):
            def loss(value, i=i):
                values = params[:i] + [value] + params[i + 1:]
                out = activation(activation(X @ values[0] + values[1]) @ values[2] + values[3]) @ values[4] + values[5]
                penalty = sum((W ** 2).sum() for W in values[0::2])
                return (torch.nn.functional.cross_entropy(out, y) + weight_decay / 2 * penalty).item()
            worst_correct = max(worst_correct, ns["max_relative_error"](truth[i], ns["numerical_gradient"](loss, p.clone())))
    assert worst_correct < 1e-5 and least_wrong > 1e-2, (worst_correct, least_wrong)


def test_solution_finds_each_bug_with_any_threshold_the_text_allows(spec):
    """The solution's find_wrong_gradient names each bug, and so does the same check with thresholds 1e-5 and 1e-2
    (the text: any threshold in between works)."""
    module = spec.module
    ns = _namespace({"q5"})
    code = next(c.source for c in assign.read_source(SOURCE).cells if c.id == "q5-solution")
    assert code.count("> 1e-4:") == 1
    for threshold in (1e-5, 1e-4, 1e-2):
        exec(compile(code.replace("> 1e-4:", f"> {threshold!r}:"), "<q5-solution>", "exec"), ns)
        for seed in range(8):
            X, y, params, activation, derivative, weight_decay = _q5_network(module, seed)
            for bug, expected in [("correct", None)] + [(bug, name) for bug, (_, name) in module.Q5_BUGS.items()]:
                got = ns["find_wrong_gradient"](module.harvest_q5_broken_backward(bug), X, y, params, activation,
                                                derivative, weight_decay)
                assert got == expected, (threshold, seed, bug, got)


def test_kink_cell_says_what_its_text_says():
    """3e-7 from ReLU's kink with h = 1e-6 the check reports errors above 0.1 for a correct backward; 1e-3 away,
    below 1e-7; with h = 1e-8, below 1e-5."""
    ns = _namespace({"q4", "q5"})
    errors = ns["kink_errors"]
    assert min(errors["3e-7 from the kink, h=1e-6"].values()) > 0.1, errors
    assert max(errors["1e-3 from the kink, h=1e-6"].values()) < 1e-7, errors
    assert max(errors["3e-7 from the kink, h=1e-8"].values()) < 1e-5, errors
    text = next(c.source for c in assign.read_source(SOURCE).cells if c.id == "q5-kink-answer")
    for words in ("above 0.1", "errors below $10^{-7}$", "(below $10^{-5}$"):
        assert words in text


FINITE_DIFFERENCE_BACKWARD = """
def backward(X, y, params, activation, activation_grad, weight_decay=0.0):
    def loss():
        out = X
        for i in range(0, len(params), 2):
            out = out @ params[i] + params[i + 1]
            out = activation(out) if i + 2 < len(params) else out
        return (F.cross_entropy(out, y) + weight_decay / 2 * sum((W ** 2).sum() for W in params[0::2])).item()

    grads = []
    for p in params:
        flat, g = p.view(-1), torch.zeros(p.numel(), dtype=p.dtype)
        for i in range(min(flat.numel(), 400)):     # enough to count its operators, in less time
            old = flat[i].item()
            flat[i] = old + 1e-6
            plus = loss()
            flat[i] = old - 1e-6
            minus = loss()
            flat[i] = old
            g[i] = (plus - minus) / 2e-6
        grads.append(g.reshape(p.shape))
    return grads
"""

AUTOGRAD_BACKWARD = """
def backward(X, y, params, activation, activation_grad, weight_decay=0.0):
    leaves = [p.detach().clone().requires_grad_(True) for p in params]
    out = X
    for i in range(0, len(leaves), 2):
        out = out @ leaves[i] + leaves[i + 1]
        out = activation(out) if i + 2 < len(leaves) else out
    loss = F.cross_entropy(out, y) + weight_decay / 2 * sum((W ** 2).sum() for W in leaves[0::2])
    return list(torch.autograd.grad(loss, leaves))
"""


@pytest.mark.parametrize("code, words, flag", [
    (FINITE_DIFFERENCE_BACKWARD, "that is a finite-difference gradient", "backward is a finite-difference gradient"),
    (AUTOGRAD_BACKWARD, "the grader will not count this: backward uses autograd", None)])
def test_backward_by_finite_differences_or_autograd_gets_no_points(spec, tmp_path, code, words, flag):
    """q4's policy (README): a backward that is a finite difference (operator count) or uses autograd (torch calls
    traced) gets none of q4's points, with the reason, and the finite difference is flagged; the public check
    says so too."""
    ns = _namespace({"q4"})
    exec(compile(code, "<backward>", "exec"), ns)
    ns["train_mlp"] = _stub_train
    graded = _grade(spec, ns, tmp_path)["q4"]
    assert graded.points == 0, graded.failed
    if flag:     # its values are close (the float64 tests fail first), and the instructor sees the flag
        assert all(flag in line for line in graded.flags) and len(graded.flags) == 4, graded.flags
    else:
        assert all(words in line for line in graded.failed), graded.failed
    outcomes = [o for o in run_public_tests("q4", ns) if o.status == "fail"]
    assert outcomes and all("the grader will not count this" in o.message for o in outcomes), outcomes
