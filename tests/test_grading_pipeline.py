"""The grading pipeline's structure: one list of steps (grade.STEPS), the feedback rendered in one place
(results.render_feedback), Gradescope's JSON by the one results object (results.StudentResult)."""
from __future__ import annotations

import dataclasses
import json

from coursekit.grading import grade, gradescope, results
from coursekit.grading.labspec import QuestionResult


def test_one_submission_is_graded_by_one_list_of_steps_and_only_one_runs_student_code():
    assert [step.name for step in grade.STEPS] == ["find", "read", "stage", "inputs", "run", "score", "flag",
                                                   "record", "render", "write"]
    assert [step.name for step in grade.STEPS if step.where != "grader"] == ["run"]


def test_the_runs_flags_come_through_the_flag_step():
    class Result:
        sources = ["import gc\nx = gc.get_objects()"]
        runtime_flags = [{"line": None, "code": "", "reason": "the job tried to fork"}]
    g = grade.SubmissionInFlight(spec=None, limits=None, seed=0, result=Result(),
                                 questions=[QuestionResult("q1", 0, 4, flags=["a question's own flag"])])
    (step,) = [s for s in grade.STEPS if s.name == "flag"]
    step.run(g)
    reasons = [f["reason"] for f in g.flags]
    assert any("garbage collector" in r for r in reasons)
    assert reasons[-2:] == ["the job tried to fork", "a question's own flag"]


GRADE = grade.SubmissionGrade(
    student="ada", status="timeout", total=4, max_total=10,
    questions=[QuestionResult("q1", 4, 4, passed=["relu (4/4)"], title="Activation functions"),
               QuestionResult("q2", 0, 6, failed=["relu_grad (0/6): wrong values"], title="Derivatives")],
    cell_errors=["cell 4: stopped after 60 s (time limit of a cell)"], notes=["cell 1: %pip left out"])


def test_the_feedback_is_rendered_in_one_place_from_the_grade_as_data():
    assert "feedback_text" not in {f.name for f in dataclasses.fields(grade.SubmissionGrade)}   # not stored twice
    text = GRADE.feedback_text
    assert text == results.render_feedback(GRADE.as_dict())
    assert text.splitlines()[0] == "MLP lab: 4 / 10 points (ada)"
    assert "  FAILED  relu_grad (0/6): wrong values" in text and "Note: cell 1: %pip left out" in text


def test_gradescope_json_comes_from_the_results_object_only():
    assert not hasattr(gradescope, "results_json")
    data = dict(GRADE.as_dict(), feedback=GRADE.feedback_text)
    r = results.StudentResult.from_record({"student": "ada", "grade": data})
    res = r.results_json("visible")
    gradescope.validate_results(res)
    assert res["score"] == 4.0 and [t["name"] for t in res["tests"]] == [
        "q1 Activation functions: relu", "q2 Derivatives: relu_grad"]
    assert r.gradebook_row(["q1", "q2"])[:4] == ["ada", "4", "0", "4"]
    assert r.feedback_text() == GRADE.feedback_text


def test_a_submissions_trip_is_the_steps_in_order_and_batch_only_schedules_it(tmp_path, monkeypatch):
    """The worker thread that grades one submission of a class, traced (the sandbox faked): the steps' functions
    run in ``STEPS``' order, of batch.py only the scheduler's ``one`` and the gradebook it rewrites run, and every
    ``ast.parse`` runs in a step that holds ``grade.PARSING`` (CPython 3.11's is not thread-safe)."""
    import threading
    from pathlib import Path

    import coursekit
    from coursekit.grading.batch import grade_folder
    from coursekit.grading.runner import ExecutionResult
    from grading_helpers import GOOD_CELLS, TinySpec, make_notebook

    def run(path, harvest_code, inputs, limits=None, template_cells=None):
        return ExecutionResult(outputs={"add": inputs["a"] + inputs["b"], "mul": inputs["a"] * inputs["b"]},
                               sources=list(GOOD_CELLS))
    monkeypatch.setattr(grade, "execute_submission", run)
    make_notebook(tmp_path / "subs" / "ada" / "lab.ipynb", *GOOD_CELLS)
    package = str(Path(coursekit.__file__).parent / "grading")
    step_functions = {step.run.__code__: step.name for step in grade.STEPS}
    called_in_batch, steps_run, parsed_holding_the_lock = set(), [], []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_name == "parse" and frame.f_code.co_filename.endswith("/ast.py"):
            parsed_holding_the_lock.append((steps_run[-1], grade.PARSING.locked()))
        if event == "call" and frame.f_code.co_filename.startswith(package):
            if frame.f_code.co_filename.endswith("batch.py"):
                called_in_batch.add(frame.f_code.co_name)
            if frame.f_code in step_functions:
                steps_run.append(step_functions[frame.f_code])
    threading.setprofile(profile)     # the workers' threads only: the class-level work runs in this one
    try:
        summary = grade_folder(tmp_path / "subs", tmp_path / "out", spec=TinySpec(), workers=1, progress=False,
                               log=lambda *a: None)
    finally:
        threading.setprofile(None)
    assert summary.graded == 1 and summary.scores == [5]
    assert steps_run == [step.name for step in grade.STEPS]
    assert called_in_batch == {"one", "gradebook"}
    assert {step for step, _ in parsed_holding_the_lock} == {"flag", "render"}
    assert all(locked for _, locked in parsed_holding_the_lock)
    out = tmp_path / "out"
    record = json.loads((out / "records" / "ada.json").read_text())
    assert record["grade"]["notes"] == ["graded lab.ipynb"] and record["file"] == "ada/lab.ipynb"
    assert record["grade"]["feedback"] == results.render_feedback(record["grade"])
    assert (out / "feedback" / "ada.txt").read_text() == record["grade"]["feedback"]
    gradescope.validate_results(json.loads((out / "gradescope" / "ada" / "results.json").read_text()))
    assert (out / "gradebook.csv").read_text().splitlines()[1].startswith("ada,2,3,5,0,5,5,")
