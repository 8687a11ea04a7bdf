"""Grade one submitted lab notebook: per-question points with feedback, flags, and a total.

This module owns grading one submission. Four steps, and only the second runs the student's code (in the
sandbox, see ``coursekit.grading.runner``; its limits and protocol are ``coursekit.grading.protocol``)::

    spec = load_spec("lab/autograder")                                   # 1. grader: hidden tests, inputs
    result = execute_submission(path, spec.harvest_code, inputs, limits,  # 2. student's process: data back
                                template_cells=spec.template_cells)     #    (unchanged template cells: stand-ins)
    questions = spec.score(inputs, result)                                # 3. grader: verdicts from data
    flags = scan_cells(result.sources)                                    # 4. grader: lines to look at

``grade_notebook`` ties them together::

    grade = grade_notebook("submissions/ada.ipynb")
    print(grade.feedback_text)          # what the student reads
    grade.total, grade.max_total        # e.g. 85, 100
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from coursekit.grading.flags import scan_cells
from coursekit.grading.labspec import LabSpec, QuestionResult, load_spec
from coursekit.grading.protocol import Limits
from coursekit.grading.runner import execute_submission

__all__ = ["SubmissionGrade", "grade_notebook", "feedback_text"]


@dataclass
class SubmissionGrade:
    """The grade of one submission. ``status`` is the runner's ("ok", "timeout", "memory", ...)."""
    student: str
    questions: list[QuestionResult]
    total: float
    max_total: float
    status: str
    feedback_text: str
    cell_errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # for the instructor, not the student: lines that reach for grader internals or interpreter machinery,
    # each {"line": int | None, "code": str, "reason": str} (see coursekit.grading.flags)
    flags: list[dict] = field(default_factory=list)

    def points(self) -> dict[str, float]:
        """``{question: points}``."""
        return {q.name: q.points for q in self.questions}

    def as_dict(self) -> dict:
        return {"student": self.student, "total": self.total, "max_total": self.max_total, "status": self.status,
                "questions": [q.as_dict() for q in self.questions], "cell_errors": list(self.cell_errors),
                "notes": list(self.notes), "feedback": self.feedback_text, "flags": [dict(f) for f in self.flags]}


# Submissions recorded without running anything (see coursekit.grading.submissions and batch).
NOT_RUN_STATUSES = frozenset({"symlink", "no-notebook", "invalid-notebook"})


def _points(value: float) -> str:
    return f"{value:g}"


def feedback_text(student: str, questions: list[QuestionResult], status: str, cell_errors=(), notes=()) -> str:
    """The feedback a student reads: the total, then each question's points and one line per hidden test."""
    total = sum(q.points for q in questions)
    max_total = sum(q.max_points for q in questions)
    lines = [f"MLP lab: {_points(total)} / {_points(max_total)} points ({student})"]
    if status in NOT_RUN_STATUSES:
        lines.append(f"Note: the notebook was not run (status '{status}'): every question scored 0, with the reason "
                     "below.")
    elif status != "ok":
        lines.append(f"Note: running the notebook ended with status '{status}'; questions after that point may "
                     "have received no points.")
    for q in questions:
        title = f" {q.title}" if q.title else ""
        lines.append("")
        lines.append(f"{q.name}{title}: {_points(q.points)} / {_points(q.max_points)}")
        lines.extend(f"  passed  {line}" for line in q.passed)
        lines.extend(f"  FAILED  {line}" for line in q.failed)
    if cell_errors:
        lines.append("")
        lines.append("Cells that raised an error while grading (the notebook went on after each):")
        lines.extend(f"  {error.strip().splitlines()[0] if error.strip() else error}" for error in list(cell_errors)[:20])
    if notes:
        lines.append("")
        lines.extend(f"Note: {note}" for note in list(notes)[:20])
    return "\n".join(lines) + "\n"


def grade_notebook(path, spec: LabSpec | None = None, limits: Limits | None = None, seed: int = 0,
                   student: str | None = None) -> SubmissionGrade:
    """Run the notebook at ``path`` in the sandbox and grade it with the hidden tests of ``spec``.

    ``spec`` defaults to the repository's ``lab/autograder``; ``limits`` to ``protocol.Limits()``; ``seed``
    picks the hidden tests' random inputs; ``student`` defaults to the file's name.
    """
    path = Path(path)
    spec = spec or load_spec()
    inputs = spec.make_inputs(seed)
    result = execute_submission(path, spec.harvest_code, inputs, limits=limits, template_cells=spec.template_cells)
    questions = spec.score(inputs, result)
    student = student or path.stem
    return SubmissionGrade(
        student=student, questions=questions,
        total=sum(q.points for q in questions), max_total=sum(q.max_points for q in questions),
        status=result.status,
        feedback_text=feedback_text(student, questions, result.status, result.cell_errors, result.notes),
        cell_errors=list(result.cell_errors), notes=list(result.notes),
        flags=scan_cells(result.sources) + list(result.runtime_flags)
        + [{"line": None, "code": "", "reason": flag} for q in questions for flag in q.flags])
