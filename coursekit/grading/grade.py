"""Grade one submitted lab notebook: per-question points, flags, and a total.

This module owns grading one submission. Its steps are ``STEPS``, in order, declared here and nowhere else (as
nbgrader's ``Autograde`` declares its preprocessors); only the ``run`` step runs the student's code (in the
sandbox, see ``coursekit.grading.runner``; its limits and protocol are ``coursekit.grading.protocol``)::

    inputs   grader             the hidden tests' random inputs (``spec.make_inputs(seed)``)
    run      student's process  the cells, then the harvest: arrays back (``runner.execute_submission``)
    score    grader             each hidden test's verdict from the arrays (``spec.score``)
    flag     grader             lines for the instructor to look at (``flags.scan_cells``, the runtime's flags)

``grade_notebook`` runs them::

    grade = grade_notebook("submissions/ada.ipynb")
    print(grade.feedback_text)          # what the student reads (results.render_feedback)
    grade.total, grade.max_total        # e.g. 85, 100

A class is graded by ``batch`` (read each hand-in, grade it here, scrub the grader's paths, render once with
``results.StudentResult``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from coursekit.grading.flags import scan_cells
from coursekit.grading.labspec import LabSpec, QuestionResult, load_spec
from coursekit.grading.protocol import Limits
from coursekit.grading.results import render_feedback
from coursekit.grading.runner import ExecutionResult, execute_submission

__all__ = ["SubmissionGrade", "grade_notebook", "STEPS", "Step"]


@dataclass
class SubmissionGrade:
    """The grade of one submission. ``status`` is the runner's ("ok", "timeout", "memory", ...)."""
    student: str
    questions: list[QuestionResult]
    total: float
    max_total: float
    status: str
    cell_errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # for the instructor, not the student: lines that reach for grader internals or interpreter machinery,
    # each {"line": int | None, "code": str, "reason": str} (see coursekit.grading.flags)
    flags: list[dict] = field(default_factory=list)

    def points(self) -> dict[str, float]:
        """``{question: points}``."""
        return {q.name: q.points for q in self.questions}

    def as_dict(self) -> dict:
        """The grade as data (what ``batch`` records, with the feedback it renders from this)."""
        return {"student": self.student, "total": self.total, "max_total": self.max_total, "status": self.status,
                "questions": [q.as_dict() for q in self.questions], "cell_errors": list(self.cell_errors),
                "notes": list(self.notes), "flags": [dict(f) for f in self.flags]}

    @property
    def feedback_text(self) -> str:
        """What the student reads (rendered by ``results.render_feedback``, as in the class's feedback files)."""
        return render_feedback(self.as_dict())


@dataclass
class Grading:
    """What the steps hand on: each step reads what the ones before it set."""
    path: Path
    spec: LabSpec
    limits: Limits | None
    seed: int
    inputs: dict | None = None
    result: ExecutionResult | None = None
    questions: list[QuestionResult] = field(default_factory=list)
    flags: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class Step:
    name: str
    where: str          # "grader" or "student's process": only one step runs student code
    run: Callable[[Grading], None]


def _make_inputs(g: Grading) -> None:
    g.inputs = g.spec.make_inputs(g.seed)


def _run_in_sandbox(g: Grading) -> None:
    g.result = execute_submission(g.path, g.spec.harvest_code, g.inputs, limits=g.limits,
                                  template_cells=g.spec.template_cells)


def _score(g: Grading) -> None:
    g.questions = g.spec.score(g.inputs, g.result)


def _flag(g: Grading) -> None:
    g.flags = (scan_cells(g.result.sources) + list(g.result.runtime_flags)
               + [{"line": None, "code": "", "reason": flag} for q in g.questions for flag in q.flags])


STEPS: tuple[Step, ...] = (
    Step("inputs", "grader", _make_inputs),
    Step("run", "student's process", _run_in_sandbox),
    Step("score", "grader", _score),
    Step("flag", "grader", _flag),
)


def grade_notebook(path, spec: LabSpec | None = None, limits: Limits | None = None, seed: int = 0,
                   student: str | None = None) -> SubmissionGrade:
    """Run ``STEPS`` on the notebook at ``path``: sandboxed, graded with the hidden tests of ``spec``.

    ``spec`` defaults to the repository's ``lab/autograder``; ``limits`` to ``protocol.Limits()``; ``seed``
    picks the hidden tests' random inputs; ``student`` defaults to the file's name.
    """
    path = Path(path)
    g = Grading(path=path, spec=spec or load_spec(), limits=limits, seed=seed)
    for step in STEPS:
        step.run(g)
    return SubmissionGrade(
        student=student or path.stem, questions=g.questions,
        total=sum(q.points for q in g.questions), max_total=sum(q.max_points for q in g.questions),
        status=g.result.status, cell_errors=list(g.result.cell_errors), notes=list(g.result.notes), flags=g.flags)
