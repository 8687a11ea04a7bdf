"""Grade one submission: its whole trip, from the hand-in to its record, is ``STEPS``, declared here and nowhere
else (as nbgrader's ``Autograde`` declares its preprocessors). Each step is a function of one
``SubmissionInFlight``, reading what the steps before it set; only ``run`` runs the student's code (in the sandbox,
see ``coursekit.grading.runner``; its limits and protocol are ``coursekit.grading.protocol``)::

    find     grader             the notebook in a student's folder, chosen by content (``submissions.find_in_folder``;
                                ``batch`` finds a class's when it lists the class)
    read     grader             the hand-in read once, safely, and stripped (``submissions.read_submission``); a link,
                                no notebook or an unreadable file: not run, 0 points with the reason
    stage    grader             the stripped copy written where the sandbox reads it (a folder of the grader's)
    inputs   grader             the hidden tests' random inputs (``spec.make_inputs(seed)``)
    run      student's process  the cells, then the harvest: arrays back (``runner.execute_submission``)
    score    grader             each hidden test's verdict from the arrays (``spec.score``)
    flag     grader             lines for the instructor to look at (``flags.scan_cells``, the runtime's flags)
    record   grader             the grade as data, the grader's paths scrubbed, its feedback rendered once
                                (``results.render_feedback``): the record
    render   grader             the student's ``results.StudentResult`` (gradebook row, feedback, Gradescope JSON)
    write    grader             its files (``outfiles.ClassFolderOutput`` or ``GradescopeOutput``), the record last

``grade_notebook`` runs them on a notebook file (no hand-in to read, nothing written)::

    grade = grade_notebook("submissions/ada.ipynb")
    print(grade.feedback_text)          # what the student reads (results.render_feedback)
    grade.total, grade.max_total        # e.g. 85, 100

``batch`` schedules a class's submissions through ``grade_submission``; Gradescope's ``run_autograder`` grades one
with ``grade_gradescope_submission``.
"""
from __future__ import annotations

import shutil
import tempfile
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from coursekit.grading.flags import scan_cells
from coursekit.grading.labspec import LabSpec, QuestionResult, load_spec
from coursekit.grading.outfiles import GradescopeOutput, write_output
from coursekit.grading.protocol import Limits
from coursekit.grading.results import RenderContext, StudentResult, render_feedback, self_check_hints
from coursekit.grading.runner import ExecutionResult, execute_submission
from coursekit.grading.submissions import (Submission, SubmissionFile, UnreadableSubmission, find_in_folder,
                                           handed_in_fingerprint, lab_names, read_submission, template_code_cells)
from coursekit.paths import REPO

__all__ = ["SubmissionGrade", "SubmissionInFlight", "grade_notebook", "grade_submission",
           "grade_gradescope_submission", "run_steps", "internal_paths", "STEPS", "Step", "RECORD_VERSION"]

RECORD_VERSION = 2
# CPython 3.11's ast.parse keeps its recursion depth in state that all threads share, so two workers parsing at
# once can fail with "SystemError: AST constructor recursion depth mismatch" (cpython gh-106905): the steps that
# parse the student's code take turns
PARSING = threading.Lock()
NOT_RUN_REASONS = {"symlink": "the submission is a symbolic link, which is not followed: hand in the file itself",
                   "no-notebook": "no notebook was submitted"}


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
        """The grade as data (what the ``record`` step stores, with the feedback it renders from this)."""
        return {"student": self.student, "total": self.total, "max_total": self.max_total, "status": self.status,
                "questions": [q.as_dict() for q in self.questions], "cell_errors": list(self.cell_errors),
                "notes": list(self.notes), "flags": [dict(f) for f in self.flags]}

    @property
    def feedback_text(self) -> str:
        """What the student reads (rendered by ``results.render_feedback``, as in the class's feedback files)."""
        return render_feedback(self.as_dict())


@dataclass
class SubmissionInFlight:
    """One submission on its way through ``STEPS``: what it starts with, then what each step sets."""
    spec: LabSpec
    limits: Limits | None
    seed: int
    submission: Submission | None = None   # the hand-in; None with ``folder`` (``find`` looks there) or ``path``
    folder: Path | None = None             # one student's files (Gradescope's submission folder)
    path: Path | None = None               # the notebook the sandbox runs (set by ``stage``, or given)
    student: str = ""
    staging: Path | None = None            # the grader's folder for the stripped copy (None: the system's)
    internal: list[str] = field(default_factory=list)   # the grader's paths, scrubbed from what the student reads
    spec_key: str = ""                     # the hidden tests' fingerprint, stored in the record (``batch.spec_key``)
    context: RenderContext = field(default_factory=RenderContext)   # late policy, hand-in times, hints
    output: object = None                  # where ``write`` writes (``outfiles``); None: nothing is written
    began: float = field(default_factory=time.monotonic)
    # set by the steps
    handed_in: SubmissionFile | None = None
    fingerprint: str = ""                  # of what was handed in: its sha256, or why it is not run
    not_run: str = ""                      # the status of a hand-in that is not run ("symlink", ...)
    not_run_reason: str = ""
    staged_folder: Path | None = None
    inputs: dict | None = None
    result: ExecutionResult | None = None
    questions: list[QuestionResult] = field(default_factory=list)
    flags: list[dict] = field(default_factory=list)
    grade: SubmissionGrade | None = None
    record: dict | None = None
    student_result: StudentResult | None = None


@dataclass(frozen=True)
class Step:
    name: str
    where: str          # "grader" or "student's process": only one step runs student code
    run: Callable[[SubmissionInFlight], None]
    parses_code: bool = False    # holds ``PARSING`` while it runs


def _find(flight: SubmissionInFlight) -> None:
    if flight.submission is None and flight.folder is not None:
        flight.submission = find_in_folder(flight.folder, lab_names(flight.spec), limits=flight.limits or Limits())


def _read(flight: SubmissionInFlight) -> None:
    sub = flight.submission
    if sub is None:                  # a notebook file given by path (grade_notebook): graded as it is
        flight.student = flight.student or flight.path.stem
        return
    flight.student = sub.student
    if sub.status:
        flight.not_run, flight.fingerprint = sub.status, sub.status
        flight.not_run_reason = NOT_RUN_REASONS.get(sub.status, sub.status)
        return
    try:
        flight.handed_in = read_submission(sub)
    except UnreadableSubmission as exc:
        flight.not_run, flight.not_run_reason, flight.fingerprint = "invalid-notebook", str(exc), "unreadable"
        return
    flight.fingerprint = flight.handed_in.sha256


def _stage(flight: SubmissionInFlight) -> None:
    if flight.handed_in is None:
        return
    flight.staged_folder = Path(tempfile.mkdtemp(prefix=f"{flight.student}.", dir=flight.staging))
    flight.path = flight.staged_folder / flight.submission.relpath.name
    write_output(flight.path, flight.handed_in.data)


def _make_inputs(flight: SubmissionInFlight) -> None:
    if not flight.not_run:
        flight.inputs = flight.spec.make_inputs(flight.seed)


def _run_in_sandbox(flight: SubmissionInFlight) -> None:
    if not flight.not_run:
        flight.result = execute_submission(flight.path, flight.spec.harvest_code, flight.inputs, limits=flight.limits,
                                           template_cells=flight.spec.template_cells)


def _score(flight: SubmissionInFlight) -> None:
    if not flight.not_run:
        flight.questions = flight.spec.score(flight.inputs, flight.result)


def _flag(flight: SubmissionInFlight) -> None:
    if not flight.not_run:
        flight.flags = (scan_cells(flight.result.sources) + list(flight.result.runtime_flags)
                        + [{"line": None, "code": "", "reason": flag} for q in flight.questions for flag in q.flags])


def _scrub(value, internal: list[str]):
    """``value`` with the grader's own paths (OUT, the submissions folder, the package) replaced."""
    if isinstance(value, str):
        for path in internal:
            value = value.replace(path, "<grader>")
        return value
    if isinstance(value, list):
        return [_scrub(v, internal) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v, internal) for k, v in value.items()}
    return value


def internal_paths(*paths) -> list[str]:
    """The grader's own paths (those given and the repository's), longest first, to scrub from the feedback."""
    found = {str(p) for p in (*paths, REPO) if p is not None and len(str(p)) > 1}   # REPO: where coursekit is
    found |= {str(Path(p).resolve()) for p in found}
    return sorted(found, key=len, reverse=True)


def _ungraded(flight: SubmissionInFlight) -> dict:
    """The grade of a hand-in that is not run: 0 on every question, with the reason."""
    titles = getattr(flight.spec, "titles", None) or {}
    questions = [{"name": name, "title": titles.get(name, ""), "points": 0, "max_points": pts, "passed": [],
                  "failed": [flight.not_run_reason]} for name, pts in flight.spec.questions]
    return {"student": flight.student, "total": 0, "max_total": sum(q["max_points"] for q in questions),
            "status": flight.not_run, "questions": questions, "cell_errors": [],
            "notes": list(flight.submission.notes), "flags": []}


def _record(flight: SubmissionInFlight) -> None:
    if flight.not_run:
        data = _scrub(_ungraded(flight), flight.internal)
    else:
        flight.grade = SubmissionGrade(
            student=flight.student, questions=flight.questions, total=sum(q.points for q in flight.questions),
            max_total=sum(q.max_points for q in flight.questions), status=flight.result.status,
            cell_errors=list(flight.result.cell_errors), notes=list(flight.result.notes), flags=flight.flags)
        data = flight.grade.as_dict()
        if flight.submission is not None:
            data["notes"] = list(flight.submission.notes) + data["notes"]
        flags = data.pop("flags")          # the instructor's: quoted as the student wrote them
        data = _scrub(data, flight.internal + ([str(flight.staged_folder)] if flight.staged_folder else []))
        data["flags"] = flags
    data["feedback"] = render_feedback(data)
    sub = flight.submission
    flight.record = {"version": RECORD_VERSION, "student": flight.student,
                     "file": str(sub.relpath) if sub is not None and sub.relpath is not None else "",
                     "sha256": flight.fingerprint, "spec": flight.spec_key, "seed": flight.seed, "grade": data,
                     "graded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "seconds": round(time.monotonic() - flight.began, 3)}


def _render(flight: SubmissionInFlight) -> None:
    if flight.output is not None:
        code_cells = flight.handed_in.code_cells if flight.handed_in else []    # to quote the failing functions
        flight.student_result = flight.context.result(flight.record, code_cells)


def _write(flight: SubmissionInFlight) -> None:
    if flight.output is None:
        return
    if flight.submission is not None and handed_in_fingerprint(flight.submission) != flight.fingerprint:
        raise RuntimeError("the file changed while it was graded")
    flight.output.write(flight.student_result, flight.record)


STEPS: tuple[Step, ...] = (
    Step("find", "grader", _find, parses_code=True),          # chosen by the functions it defines
    Step("read", "grader", _read),
    Step("stage", "grader", _stage),
    Step("inputs", "grader", _make_inputs),
    Step("run", "student's process", _run_in_sandbox),
    Step("score", "grader", _score),
    Step("flag", "grader", _flag, parses_code=True),          # flags.scan_cells
    Step("record", "grader", _record),
    Step("render", "grader", _render, parses_code=True),      # the failing functions' code, found by ast
    Step("write", "grader", _write),
)


def run_steps(flight: SubmissionInFlight) -> SubmissionInFlight:
    """``STEPS`` in order on ``flight``; the staged copy is removed whatever happens. Never raises for what the
    student handed in (an error here is the grader's own, or ``OutputError`` from ``write``)."""
    try:
        for step in STEPS:
            with PARSING if step.parses_code else nullcontext():
                step.run(flight)
    finally:
        if flight.staged_folder is not None:
            shutil.rmtree(flight.staged_folder, ignore_errors=True)
    return flight


def grade_submission(sub: Submission, spec, limits, seed: int, staging: Path, internal=(), *, spec_key: str = "",
                     context: RenderContext | None = None, output=None) -> SubmissionInFlight:
    """One submission of a class through ``STEPS``: its record is ``.record``, written by ``output``
    (``outfiles.ClassFolderOutput``) if given."""
    return run_steps(SubmissionInFlight(spec=spec, limits=limits, seed=seed, submission=sub, staging=staging,
                                        internal=list(internal), spec_key=spec_key,
                                        context=context or RenderContext(), output=output))


def grade_notebook(path, spec: LabSpec | None = None, limits: Limits | None = None, seed: int = 0,
                   student: str | None = None) -> SubmissionGrade:
    """Run ``STEPS`` on the notebook at ``path``: sandboxed, graded with the hidden tests of ``spec``.

    ``spec`` defaults to the repository's ``lab/autograder``; ``limits`` to ``protocol.Limits()``; ``seed``
    picks the hidden tests' random inputs; ``student`` defaults to the file's name.
    """
    path = Path(path)
    flight = run_steps(SubmissionInFlight(spec=spec or load_spec(), limits=limits, seed=seed, path=path,
                                          student=student or path.stem))
    return flight.grade


def grade_gradescope_submission(submission_dir, autograder_dir, results_path, limits=None, seed: int = 0) -> dict:
    """Grade the notebook in a Gradescope submission folder and write ``results.json`` (Gradescope runs this
    once per student, through the bundle's ``run_autograder``)."""
    spec = load_spec(autograder_dir)
    with tempfile.TemporaryDirectory(prefix="coursekit-gradescope-") as staging:
        flight = run_steps(SubmissionInFlight(
            spec=spec, limits=limits or Limits(), seed=seed, folder=Path(submission_dir), staging=Path(staging),
            internal=internal_paths(Path(submission_dir), Path(autograder_dir)),
            context=RenderContext(hints=self_check_hints(template_code_cells(spec))),
            output=GradescopeOutput(Path(results_path))))
    return flight.output.results
