"""The grading pipeline's structure: one list of steps (grade.STEPS), the feedback rendered in one place
(results.render_feedback), Gradescope's JSON by the one results object (results.StudentResult)."""
from __future__ import annotations

import dataclasses

from coursekit.grading import batch, grade, gradescope, results
from coursekit.grading.labspec import QuestionResult


def test_one_submission_is_graded_by_one_list_of_steps_and_only_one_runs_student_code():
    assert [step.name for step in grade.STEPS] == ["inputs", "run", "score", "flag"]
    assert [step.name for step in grade.STEPS if step.where != "grader"] == ["run"]


def test_the_runs_flags_come_through_the_flag_step():
    class Result:
        sources = ["import gc\nx = gc.get_objects()"]
        runtime_flags = [{"line": None, "code": "", "reason": "the job tried to fork"}]
    g = grade.Grading(path=None, spec=None, limits=None, seed=0, result=Result(),
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
    # the batch renders it once more only from the scrubbed data, by the same function
    data = GRADE.as_dict()
    data["notes"] = ["graded <grader>/ada.ipynb"]
    assert batch._with_feedback(dict(data))["feedback"] == results.render_feedback(data)


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
