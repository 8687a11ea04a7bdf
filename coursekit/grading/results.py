"""One student's graded result, rendered four ways: the gradebook row, the text feedback, the HTML feedback and
Gradescope's ``results.json`` (as otter-grader's ``GradingResults`` does), so they never disagree.

``StudentResult.from_record(record, ...)`` takes a student's record (the grade as data, made by the ``record`` step
of ``grade.STEPS``), the
late policy's verdict (``term.Lateness``), the student's code cells (to quote the function a failing test
called) and the self-check's descriptions of its public tests (``self_check_hints``). Everything the student
wrote reaches the HTML only through Jinja2's autoescaping. ``RenderContext`` holds what the class adds (the late
policy, the hand-in times, the hints) and renders the gradebook from the records.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from coursekit.grading.outfiles import csv_text
from coursekit.grading.term import LatePolicy, Lateness, describe_delta

__all__ = ["TestResult", "QuestionView", "StudentResult", "RenderContext", "self_check_hints", "parse_test_line",
           "GRADEBOOK_TAIL", "render_feedback", "NOT_RUN_STATUSES"]

# "relu (0/4): relu(x) is wrong at 3 of 12 positions; ...: expected 0.5, got 0 (tolerance ...)"
_TEST_LINE = re.compile(r"^(?P<test>\S+) \((?P<points>[\d.]+)/(?P<max>[\d.]+)\)(?:: (?P<message>.*))?\Z", re.S)
_EXPECTED_GOT = re.compile(r"expected (?P<expected>.+?), got (?P<got>.+?)(?= \(tolerance|;|\Z)", re.S)
_GOT_EXPECTED = re.compile(r"has (?P<what>dtype|shape) (?P<got>.+?), expected (?P<expected>.+?)(?= \(|;|\Z)", re.S)
_PUBLIC_TEST = re.compile(r"^test_(q\d+)_\w+$")

GRADEBOOK_TAIL = ["total", "late_penalty", "final_total", "max_total", "handed_in_at", "late_by", "status", "file"]


@dataclass
class TestResult:
    """One hidden test: ``points`` is None when the grade line did not say (then the question's points count)."""
    name: str
    passed: bool
    points: float | None
    max_points: float | None
    message: str = ""
    expected: str = ""
    got: str = ""


def parse_test_line(line: str, passed: bool) -> TestResult:
    """A feedback line of ``labspec.LabSpec.score`` back into its parts (name, points, message, expected/got)."""
    m = _TEST_LINE.match(line)
    if not m:
        return TestResult(line.split(":", 1)[0].strip() or line, passed, None, None,
                          line.split(":", 1)[1].strip() if ":" in line else "")
    message = m.group("message") or ""
    result = TestResult(m.group("test"), passed, float(m.group("points")), float(m.group("max")), message)
    found = _EXPECTED_GOT.search(message) or _GOT_EXPECTED.search(message)
    if found:
        result.expected, result.got = found.group("expected").strip(), found.group("got").strip()
    return result


@dataclass
class QuestionView:
    name: str
    title: str
    points: float
    max_points: float
    tests: list[TestResult]
    code: dict[str, str] = field(default_factory=dict)      # the student's functions a failing test called
    hints: list[str] = field(default_factory=list)           # what the self-check's public tests check

    @property
    def label(self) -> str:
        return f"{self.name} {self.title}".strip()


# Submissions recorded without running anything (see coursekit.grading.submissions and batch).
NOT_RUN_STATUSES = frozenset({"symlink", "no-notebook", "invalid-notebook"})


def render_feedback(grade: dict) -> str:
    """The feedback a student reads, rendered once from the grade as data (``SubmissionGrade.as_dict()``, after
    the grader's paths are scrubbed): the total, then each question's points and one line per hidden test."""
    questions = grade["questions"]
    total = sum(q["points"] for q in questions)
    max_total = sum(q["max_points"] for q in questions)
    status, cell_errors, notes = grade["status"], grade.get("cell_errors") or [], grade.get("notes") or []
    lines = [f"MLP lab: {total:g} / {max_total:g} points ({grade['student']})"]
    if status in NOT_RUN_STATUSES:
        lines.append(f"Note: the notebook was not run (status '{status}'): every question scored 0, with the reason "
                     "below.")
    elif status != "ok":
        lines.append(f"Note: running the notebook ended with status '{status}'; questions after that point may "
                     "have received no points.")
    for q in questions:
        title = f" {q['title']}" if q.get("title") else ""
        lines.append("")
        lines.append(f"{q['name']}{title}: {q['points']:g} / {q['max_points']:g}")
        lines.extend(f"  passed  {line}" for line in q.get("passed", []))
        lines.extend(f"  FAILED  {line}" for line in q.get("failed", []))
    if cell_errors:
        lines.append("")
        lines.append("Cells that raised an error while grading (the notebook went on after each):")
        lines.extend(f"  {error.strip().splitlines()[0] if error.strip() else error}" for error in list(cell_errors)[:20])
    if notes:
        lines.append("")
        lines.extend(f"Note: {note}" for note in list(notes)[:20])
    return "\n".join(lines) + "\n"


def _definitions(code_cells: list[str]) -> dict[str, str]:
    """``{name: source}`` of every top-level function and class in the student's cells (unparsable cells skipped;
    a later definition replaces an earlier one, as in the kernel)."""
    found = {}
    for cell in code_cells or []:
        try:
            tree = ast.parse(cell)
        except (SyntaxError, ValueError):
            continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                source = ast.get_source_segment(cell, node)
                if source:
                    found[node.name] = source
    return found


def self_check_hints(template_cells: list[str]) -> dict[str, list[str]]:
    """``{question: [what each public test checks]}``: the docstrings of the template's ``test_qN_*`` functions
    (what ``check("qN")`` runs in the student's notebook)."""
    hints: dict[str, list[str]] = {}
    for cell in template_cells or []:
        try:
            tree = ast.parse(cell)
        except (SyntaxError, ValueError):
            continue
        for node in tree.body:
            m = _PUBLIC_TEST.match(getattr(node, "name", "") or "") if isinstance(node, ast.FunctionDef) else None
            doc = ast.get_docstring(node) if m else None
            if m and doc:
                hints.setdefault(m.group(1), []).append(" ".join(doc.split()))
    return hints


@dataclass
class RenderContext:
    """What the class adds to a record to make its ``StudentResult``: the late policy, the hand-in times and the
    self-check's hints."""
    policy: LatePolicy | None = None
    times: dict = field(default_factory=dict)   # student -> hand-in time
    hints: dict = field(default_factory=dict)   # question -> what the public tests check

    def result(self, record: dict, code_cells=None) -> "StudentResult":
        lateness = self.policy.lateness(self.times.get(record["student"])) if self.policy is not None else None
        return StudentResult.from_record(record, lateness=lateness, policy=self.policy, code_cells=code_cells,
                                         hints=self.hints)

    def gradebook(self, records, question_names: list[str]) -> str:
        """The gradebook CSV of these records, one row per student (``StudentResult.gradebook_row``): student,
        points per question, total (raw), late_penalty, final_total, max_total, hand-in time, late by, status,
        file."""
        rows = sorted((self.result(rec) for rec in records), key=lambda r: r.student)
        return csv_text(["student", *question_names, *GRADEBOOK_TAIL], [r.gradebook_row(question_names) for r in rows])


@dataclass
class StudentResult:
    student: str
    status: str
    questions: list[QuestionView]
    feedback: str                         # the grader's text feedback (render_feedback, stored in the record)
    file: str = ""
    cell_errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    lateness: Lateness | None = None
    policy: LatePolicy | None = None

    @classmethod
    def from_record(cls, record: dict, *, lateness: Lateness | None = None, policy: LatePolicy | None = None,
                    code_cells: list[str] | None = None, hints: dict[str, list[str]] | None = None):
        g = record["grade"]
        defs = _definitions(code_cells or [])
        questions = []
        for q in g["questions"]:
            tests = [parse_test_line(line, True) for line in q.get("passed", [])]
            tests += [parse_test_line(line, False) for line in q.get("failed", [])]
            failing = " ".join(f"{t.name} {t.message}" for t in tests if not t.passed)
            code = {name: src for name, src in defs.items() if failing and re.search(rf"\b{re.escape(name)}\b", failing)}
            questions.append(QuestionView(q["name"], q.get("title") or "", float(q["points"]), float(q["max_points"]),
                                          tests, code, list((hints or {}).get(q["name"], []))))
        return cls(record["student"], g["status"], questions, g.get("feedback") or "", record.get("file", ""),
                   list(g.get("cell_errors") or []), list(g.get("notes") or []), lateness, policy)

    # ------------------------------------------------------------------ numbers
    @property
    def total(self) -> float:
        return sum(q.points for q in self.questions)

    @property
    def max_total(self) -> float:
        return sum(q.max_points for q in self.questions)

    @property
    def penalty(self) -> float:
        return self.lateness.penalty_points(self.total, self.max_total) if self.lateness else 0.0

    @property
    def final(self) -> float:
        return self.total - self.penalty

    def late_text(self) -> str:
        """One sentence on the hand-in time and the penalty ('' without a term)."""
        if self.policy is None:
            return ""
        lt = self.lateness
        if lt is None or lt.handed_in is None:
            return f"No hand-in time is recorded, so no late penalty applies ({self.policy.describe()})."
        when = lt.handed_in.isoformat()
        if not lt.late:
            return f"Handed in at {when}: on time ({self.policy.describe()})."
        return (f"Handed in at {when}: {describe_delta(lt.late_by)} after the deadline, {lt.days} day"
                f"{'s' * (lt.days != 1)} late, so {lt.percent:g} % of the maximum points are taken off: "
                f"{self.total:g} - {self.penalty:g} = {self.final:g} / {self.max_total:g} ({self.policy.describe()}).")

    # ------------------------------------------------------------------ renderings
    def gradebook_row(self, question_names: list[str]) -> list[str]:
        points = {q.name: q.points for q in self.questions}
        lt = self.lateness
        return [self.student, *(f"{points.get(n, 0):g}" for n in question_names), f"{self.total:g}",
                f"{self.penalty:g}", f"{self.final:g}", f"{self.max_total:g}",
                lt.handed_in.isoformat() if lt and lt.handed_in else "",
                describe_delta(lt.late_by) if lt and lt.late else "", self.status, self.file]

    def feedback_text(self) -> str:
        late = self.late_text()
        if not late:
            return self.feedback
        head, _, rest = self.feedback.partition("\n")
        return f"{head}\n{late}\n{rest}"

    def feedback_html(self) -> str:
        return _env().get_template("feedback.html").render(r=self)

    def results_json(self, visibility: str | None = None) -> dict:
        """Gradescope's results: one entry per hidden test (per question where the grade's lines carry no
        points). The score is the raw score (Gradescope applies its own late policy to its own hand-ins); the
        penalty of this term, if any, is stated in the output. ``visibility``: default
        ``gradescope.visibility_setting()`` (after_published unless the bundle says otherwise)."""
        from coursekit.grading.gradescope import VISIBILITIES, visibility_setting
        visibility = visibility or visibility_setting()
        if visibility not in VISIBILITIES:
            raise ValueError(f"visibility must be one of {VISIBILITIES}, got {visibility!r}")
        tests = []
        for q in self.questions:
            if all(t.points is not None for t in q.tests) and q.tests:
                for t in q.tests:
                    tests.append({"name": f"{q.label}: {t.name}", "score": t.points, "max_score": t.max_points,
                                  "output": _test_output(t, q), "visibility": visibility})
            else:
                tests.append({"name": q.label, "score": q.points, "max_score": q.max_points,
                              "output": "\n".join(_test_output(t, q) for t in q.tests), "visibility": visibility})
        head = [f"status: {self.status}"]
        if self.late_text():
            head.append(self.late_text())
        head += [f"error: {e.strip().splitlines()[0] if e.strip() else e}" for e in self.cell_errors[:20]]
        head += [f"note: {n}" for n in self.notes[:20]]
        return {"score": float(self.total), "output": "\n".join(head), "tests": tests, "visibility": visibility,
                "stdout_visibility": "hidden"}


def _test_output(t: TestResult, q: QuestionView) -> str:
    lines = [("passed  " if t.passed else "FAILED  ") + t.name + (f": {t.message}" if t.message else "")]
    if not t.passed:
        if t.expected or t.got:
            lines.append(f"expected: {t.expected}\ngot: {t.got}")
        for name, src in q.code.items():
            if re.search(rf"\b{re.escape(name)}\b", f"{t.name} {t.message}"):
                lines.append(f"your {name}:\n{src}")
        if q.hints:
            lines.append(f'check("{q.name}") in your notebook tests: ' + "; ".join(q.hints))
    return "\n".join(lines)


def _env() -> jinja2.Environment:
    from coursekit.grading.html_pages import environment
    return environment()
