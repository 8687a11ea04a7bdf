"""Bad submissions of the real lab, graded as one class: each gets exactly the score it deserves.

Every submission is built from the student notebook (lab/mlp_lab.ipynb) with the solution's answers filled in
(from lab/source/mlp_lab_solution.ipynb), then broken in one way. They are graded together, two at a time,
by ``grade_folder`` (the ``coursekit grade`` command's engine); each test checks one row.

The points of each hidden test come from the lab's spec (lab/autograder/spec.json): an expectation names the
tests a submission fails (``points("q1.tanh")``). Each question is graded on its own: while q2 is tested, the
notebook's sigmoid and tanh are swapped for the reference ones, so a wrong tanh costs q1's tanh points only.
"""
import json
import os
import re
from pathlib import Path

import nbformat
import pytest

import coursekit
from coursekit.grading.batch import grade_folder
from coursekit.grading.gradescope import validate_results
from coursekit.grading.labspec import load_spec
from coursekit.grading.sandbox import Limits
from grading_helpers import require_bwrap

REPO = Path(coursekit.__file__).resolve().parent.parent
STUDENT_NB = REPO / "lab" / "mlp_lab.ipynb"
SOLUTION_NB = REPO / "lab" / "source" / "mlp_lab_solution.ipynb"
HIDDEN = REPO / "lab" / "autograder" / "hidden_tests.py"
LIMITS = Limits(cell_timeout=15, submission_timeout=150, harvest_timeout=40, memory_mb=3072, max_processes=64,
                max_file_mb=16, max_output_kb=32, max_output_total_mb=4)
TODO = re.compile(r"^# TODO: Question (\d+)")
pytestmark = pytest.mark.slow       # one batch of 24 real submissions (about a minute on 2 cores)


def solved() -> nbformat.NotebookNode:
    """The student notebook with every TODO cell replaced by the solution's cell of the same id (a question may
    have several, as question 6's train_mlp and choice)."""
    student = nbformat.read(STUDENT_NB, as_version=4)
    answers = {cell.id: cell.source for cell in nbformat.read(SOLUTION_NB, as_version=4).cells
               if cell.cell_type == "code" and TODO.match(cell.source)}
    for cell in student.cells:
        if cell.cell_type == "code" and TODO.match(cell.source):
            cell.source = answers[cell.id]
    assert {TODO.match(source).group(1) for source in answers.values()} == {q[1:] for q in LAB_TESTS}
    return student


def _question_cell(nb, q: int):
    return next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith(f"# TODO: Question {q}"))


def _replace_def(source: str, name: str, new_def: str) -> str:
    """Replace the top-level ``def name(...)`` block in a cell by ``new_def``."""
    pattern = re.compile(rf"^def {name}\(.*?(?=^def |^class |\Z)", re.S | re.M)
    assert pattern.search(source), name
    return pattern.sub(new_def.rstrip() + "\n\n\n", source, count=1)


def _insert_after(nb, q: int, code: str):
    cell = _question_cell(nb, q)
    nb.cells.insert(nb.cells.index(cell) + 1, nbformat.v4.new_code_cell(code))


def build(name: str):
    """The notebook of one bad submission (or raw bytes for a file that is not a notebook)."""
    nb = solved()
    if name == "correct":
        pass
    elif name == "infinite_loop":
        _insert_after(nb, 2, "while True:\n    pass")
    elif name == "os_exit":
        _insert_after(nb, 1, "import os\nos._exit(0)")
    elif name == "sys_exit":
        _insert_after(nb, 1, "import sys\nsys.exit()")
    elif name == "exception":
        cell = _question_cell(nb, 3)
        cell.source = cell.source.replace("class MLP", "raise ValueError('not today')\n\n\nclass MLP", 1)
    elif name == "syntax_error":
        cell = _question_cell(nb, 3)
        cell.source = cell.source.replace("H = X.reshape(-1, self.num_inputs)", "H = X.reshape(-1, (self.num_inputs)", 1)
    elif name == "memory":
        # 1 GiB blocks, never touched: the per-process limit is hit at once, however loaded the machine
        _insert_after(nb, 2, "hog = []\nwhile True:\n    hog.append(torch.empty(2**28))")
    elif name == "fork_bomb":
        _insert_after(nb, 2, "import os\nwhile True:\n    os.fork()")
    elif name == "huge_output":
        _insert_after(nb, 2, "for i in range(10**9):\n    print('spam' * 100, i)")
    elif name == "monkeypatch":
        # wrong tanh, and every comparison the tests might use made to say "equal"
        cell = _question_cell(nb, 1)
        cell.source = _replace_def(cell.source, "tanh", "def tanh(x):\n    return x")
        _insert_after(nb, 1, "import numpy as np\n"
                             "torch.allclose = lambda *a, **k: True\n"
                             "torch.equal = lambda *a, **k: True\n"
                             "torch.isclose = lambda a, b, *x, **k: torch.ones_like(a, dtype=torch.bool)\n"
                             "torch.testing.assert_close = lambda *a, **k: None\n"
                             "np.allclose = lambda *a, **k: True\n"
                             "np.testing.assert_allclose = lambda *a, **k: None\n"
                             "torch.Tensor.__eq__ = lambda self, other: True")
    elif name == "test_files":
        # wrong hidden_rms; tries to read the hidden tests, overwrite the grading code, plant perfect outputs
        cell = _question_cell(nb, 3)
        cell.source = _replace_def(cell.source, "hidden_rms", "def hidden_rms(model, X):\n    return [1.0]")
        _insert_after(nb, 3, f"import json, os\n"
                             f"stolen = []\n"
                             f"for path in [{str(HIDDEN)!r}, {str(REPO / 'lab' / 'source')!r}]:\n"
                             f"    try:\n        stolen.append(open(path).read())\n"
                             f"    except OSError as e:\n        print('cannot read', path, e)\n"
                             f"import coursekit.grading.harvest_driver as hd\n"
                             f"try:\n    open(hd.__file__, 'w').write('')\n"
                             f"except OSError as e:\n    print('cannot write', e)\n"
                             f"json.dump({{'q3': {{'verdict': 'pass'}}}}, open('outputs.json', 'w'))\n"
                             f"os.chmod('outputs.json', 0o444)")
    elif name == "eq_always_true":
        cell = _question_cell(nb, 3)
        cell.source = _replace_def(cell.source, "hidden_rms", (
            "class Yes(float):\n    def __eq__(self, other):\n        return True\n\n    __hash__ = float.__hash__\n\n\n"
            "def hidden_rms(model, X):\n    return [Yes(0.0) for _ in model.params[0:-2:2]]"))
    elif name == "nan_inf":
        cell = _question_cell(nb, 1)
        cell.source = _replace_def(cell.source, "sigmoid", "def sigmoid(x):\n    return x * float('nan')")
    elif name == "inf":
        cell = _question_cell(nb, 2)
        cell.source = _replace_def(cell.source, "relu_grad", "def relu_grad(x):\n    return (x > 0).to(x.dtype) / 0.0")
    elif name == "wrong_shape":
        cell = _question_cell(nb, 3)
        assert cell.source.count("    return values\n") == 1
        cell.source = cell.source.replace("    return values\n", "    return values + [1.0]\n", 1)
    elif name == "wrong_dtype":
        cell = _question_cell(nb, 2)
        cell.source = _replace_def(cell.source, "relu_grad", "def relu_grad(x):\n    return (x > 0).double()")
    elif name == "wrong_device":
        cell = _question_cell(nb, 1)
        cell.source = _replace_def(cell.source, "tanh", (
            "def tanh(x):\n    z = torch.exp(-2 * torch.abs(x))\n    return (torch.sign(x) * (1 - z) / (1 + z)).cuda()"))
    elif name == "missing_functions":
        nb.cells.remove(_question_cell(nb, 2))
    elif name == "empty":
        nb.cells = []
    elif name == "stale_outputs_other_kernel":
        # wrong tanh, a "PASS" left from another run, another kernel's name
        cell = _question_cell(nb, 1)
        cell.source = _replace_def(cell.source, "tanh", "def tanh(x):\n    return x")
        for c in nb.cells:
            if c.cell_type == "code" and c.source.startswith("check("):
                c.outputs = [nbformat.v4.new_output("stream", name="stdout", text="PASS  every test\n")]
                c.execution_count = 7
        nb.metadata["kernelspec"] = {"name": "conda-env-mlp-py", "display_name": "Python [conda env:mlp]",
                                     "language": "python"}
    elif name == "stderr_warnings":
        _insert_after(nb, 1, "import sys, warnings\nwarnings.warn('this API is deprecated')\n"
                             "print('a message on stderr', file=sys.stderr)")
    elif name == "input":
        _insert_after(nb, 1, "name = input('Your name: ')")
    else:
        raise KeyError(name)
    return nb


def _with_big_outputs(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """24 MiB of embedded image in a cell's output and 8 MiB of widget state in the metadata."""
    cell = next(c for c in nb.cells if c.cell_type == "code")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo" + "A" * (24 << 20)})]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {"w": "B" * (8 << 20)}}}
    return nb


def write_submission(folder: Path, student: str, kind: str, tag: str | None = None) -> None:
    """Hand in ``student``'s submission of ``kind`` in ``folder`` as a class would: one ``.ipynb`` file, or for
    ``renamed`` a folder of their own holding the notebook under another name. ``tag`` is written into the
    notebook's metadata, so that otherwise identical submissions are different files."""
    if kind in HOSTILE_FOLDER:
        write_hostile(folder, student, kind)
    elif kind == "corrupt_json":
        text = nbformat.writes(solved())
        (folder / f"{student}.ipynb").write_text(text[: len(text) // 2])
    elif kind == "renamed":
        (folder / student).mkdir()
        nbformat.write(solved(), folder / student / "mlp_lab (copy).txt")
    else:
        nb = build(kind)
        if tag is not None:
            nb.metadata["student"] = tag
        nbformat.write(nb, folder / f"{student}.ipynb")


def write_hostile(folder: Path, student: str, kind: str) -> None:
    """The hand-ins that attack the submissions folder itself rather than the grader."""
    if kind == "symlink_solution":
        (folder / f"{student}.ipynb").symlink_to(SOLUTION_NB)
    elif kind == "symlink_shadow":
        (folder / f"{student}.ipynb").symlink_to("/etc/shadow")
    elif kind == "symlink_other_student":          # another student's (solved) folder
        other = folder / f"{student}-victim"
        other.mkdir()
        nbformat.write(solved(), other / "mlp_lab.ipynb")
        (folder / student).symlink_to(other)
    elif kind == "symlink_inside_folder":          # a folder whose notebook is a link to the solution
        (folder / student).mkdir()
        (folder / student / "mlp_lab.ipynb").symlink_to(SOLUTION_NB)
    elif kind == "untitled_and_checkpoint":        # solved lab + scratch notebook + checkpoint of the template
        (folder / student / ".ipynb_checkpoints").mkdir(parents=True)
        nbformat.write(solved(), folder / student / "zz_my_lab.ipynb")
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1\nprint(x)")]),
                       folder / student / "Untitled.ipynb")
        nbformat.write(nbformat.read(STUDENT_NB, as_version=4),
                       folder / student / ".ipynb_checkpoints" / "zz_my_lab-checkpoint.ipynb")
    elif kind == "big_outputs":
        nbformat.write(_with_big_outputs(solved()), folder / f"{student}.ipynb")
    else:
        raise KeyError(kind)


# The lab's points per question, from its spec: a hostile case below wins or loses whole questions.
QUESTION_POINTS = tuple(q["max_points"] for q in json.loads((REPO / "lab" / "autograder" / "spec.json")
                                                                  .read_text())["questions"])
ALL_POINTS, NO_POINTS = QUESTION_POINTS, (0,) * len(QUESTION_POINTS)
HOSTILE_FOLDER = {
    "symlink_solution": (NO_POINTS, "symlink"),
    "symlink_shadow": (NO_POINTS, "symlink"),
    "symlink_other_student": (NO_POINTS, "symlink"),
    "symlink_inside_folder": (NO_POINTS, "symlink"),
    "untitled_and_checkpoint": (ALL_POINTS, "ok"),
    "big_outputs": (ALL_POINTS, "ok"),
}

# The lab's hidden tests and their points, from its spec (lab/autograder/spec.json): the expectations below name
# what a submission loses, so they follow the lab when its points change.
LAB_TESTS = {q["name"]: dict(q["tests"]) for q in json.loads((REPO / "lab" / "autograder" / "spec.json")
                                                              .read_text())["questions"]}


def points(*lost: str) -> tuple:
    """Points per question (in order) when the hidden tests in ``lost`` fail: "q3" is all of question 3,
    "q1.tanh" one test of question 1."""
    return tuple(sum(p for test, p in tests.items() if q not in lost and f"{q}.{test}" not in lost)
                 for q, tests in LAB_TESTS.items())


# name -> (points per question, status). Exact.
EXPECTED = {
    "correct": (points(), "ok"),
    "infinite_loop": (points(), "timeout"),
    "os_exit": (points(), "killed"),
    "sys_exit": (points(), "ok"),
    "exception": (points("q3"), "ok"),
    "syntax_error": (points("q3"), "ok"),
    "memory": (points(), "memory"),
    "fork_bomb": (points(), "ok"),
    "huge_output": (points(), "output-limit"),
    "monkeypatch": (points("q1.tanh"), "ok"),
    "test_files": (points("q3.hidden_rms"), "ok"),
    "eq_always_true": (points("q3.hidden_rms"), "ok"),
    "nan_inf": (points("q1.sigmoid"), "ok"),
    "inf": (points("q2.relu_grad"), "ok"),
    "wrong_shape": (points("q3.hidden_rms"), "ok"),
    "wrong_dtype": (points("q2.relu_grad"), "ok"),
    "wrong_device": (points("q1.tanh"), "ok"),
    "missing_functions": (points("q2"), "ok"),
    "empty": (points(*LAB_TESTS), "ok"),
    "stale_outputs_other_kernel": (points("q1.tanh"), "ok"),
    "stderr_warnings": (points(), "ok"),
    "input": (points(), "ok"),
    "corrupt_json": (points(*LAB_TESTS), "invalid-notebook"),
    "renamed": (points(), "ok"),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    require_bwrap()
    root = tmp_path_factory.mktemp("class")
    subs = root / "subs"
    subs.mkdir()
    for name in {**EXPECTED, **HOSTILE_FOLDER}:
        write_submission(subs, name, name)
    os.mkfifo(subs / "fifo.ipynb")                # never opened: it would block the batch
    out = root / "out"
    summary = grade_folder(subs, out, spec=load_spec(REPO / "lab" / "autograder"), limits=LIMITS, workers=2,
                           progress=False, log=lambda *a: None)
    records = {p.stem: json.loads(p.read_text())["grade"] for p in (out / "records").glob("*.json")}
    return summary, records, out


@pytest.mark.parametrize("name", list({**EXPECTED, **HOSTILE_FOLDER}))
def test_bad_submission_gets_its_exact_score(graded, name):
    _, records, out = graded
    grade = records[name]
    points = tuple(q["points"] for q in grade["questions"])
    expected_points, expected_status = {**EXPECTED, **HOSTILE_FOLDER}[name]
    assert (points, grade["status"]) == (expected_points, expected_status), grade["feedback"]
    assert grade["total"] == sum(expected_points)
    validate_results(json.loads((out / "gradescope" / name / "results.json").read_text()))


def test_the_whole_class_was_graded_in_one_batch(graded):
    summary, records, out = graded
    assert summary.graded == len(EXPECTED) + len(HOSTILE_FOLDER) + 1 and summary.failed == 0
    assert sorted(records) == sorted([*EXPECTED, *HOSTILE_FOLDER, "symlink_other_student-victim"])
    assert "fifo.ipynb: a named pipe (FIFO), not a file: skipped" in summary.left_out
    assert records["symlink_other_student-victim"]["total"] == sum(ALL_POINTS)   # graded as its own owner's


def test_feedback_says_why(graded):
    _, records, out = graded
    fb = {name: (out / "feedback" / f"{name}.txt").read_text() for name in EXPECTED}
    assert "time limit" in fb["infinite_loop"]
    assert "os._exit" in fb["os_exit"]
    assert "sys.exit" in fb["sys_exit"]
    assert "PASS" not in fb["stale_outputs_other_kernel"]
    assert "ValueError: not today" in fb["exception"]
    assert "SyntaxError" in fb["syntax_error"]
    assert "input()" in fb["input"]
    assert "printed more than 4 MiB" in fb["huge_output"]
    assert "File too large" not in fb["huge_output"]        # later cells print on without failing
    assert "the memory limit is 3072 MiB" in fb["memory"]
    assert "not valid notebook JSON" in fb["corrupt_json"]
    assert "another name" in fb["renamed"]
    assert "graded zz_my_lab.ipynb" in (out / "feedback" / "untitled_and_checkpoint.txt").read_text()
    for name in ("symlink_solution", "symlink_shadow", "symlink_other_student"):
        feedback = (out / "feedback" / f"{name}.txt").read_text()
        assert "is a symbolic link" in feedback and "the notebook was not run" in feedback
        assert "ended with status" not in feedback           # nothing ran, so nothing "ended"
    assert "the notebook was not run" in fb["corrupt_json"]


def test_nan_and_inf_are_named_in_the_feedback(graded):
    _, records, out = graded
    q1 = next(q for q in records["nan_inf"]["questions"] if q["name"] == "q1")
    q2 = next(q for q in records["inf"]["questions"] if q["name"] == "q2")
    assert any("nan" in line.lower() for line in q1["failed"]), q1["failed"]
    assert any("inf" in line.lower() for line in q2["failed"]), q2["failed"]


def test_no_secret_reached_the_student(graded):
    _, records, out = graded
    hidden = HIDDEN.read_text()
    marker = next(line for line in hidden.splitlines() if line.startswith("Q1 = "))
    for path in out.rglob("*"):
        if path.is_file():
            assert marker not in path.read_text(errors="replace")
    # no host path of the grader's in what the students read (the notebooks' own text aside)
    for name in records:
        for path in (out / "feedback" / f"{name}.txt", out / "gradescope" / name / "results.json"):
            text = path.read_text()
            assert str(out) not in text and str(out.parent / "subs") not in text, name
            if name != "test_files":          # that notebook prints the repository's paths itself
                assert str(REPO) not in text, name
    assert "harvest" in (REPO / "coursekit" / "grading" / "harvest_driver.py").read_text()
