"""Grade a whole class: a folder of submissions in, a gradebook, feedback, Gradescope results and a similarity
report out.

``grade_folder(submissions_dir, out_dir)`` (the ``coursekit grade`` command) writes::

    OUT/gradebook.csv                    student, points per question, total, max, status, file
    OUT/feedback/<student>.txt           what the student reads: per question, points, what passed and failed
    OUT/feedback/<student>.html          the same as a page: expected vs got, the failing function's code, hints
    OUT/gradescope/<student>/results.json   Gradescope's format (score, tests[])
    OUT/records/<student>.json           the grade as data: written last, it marks the submission as done
    OUT/similarity.csv, similarity.html  pairs of submissions ranked by shared solution code (copydetect)
    OUT/summary.txt                      the summary printed at the end (flagged submissions with their lines)
    OUT/report.html                      the class at a glance (``report``): distributions, failure rates, ...
    OUT/canvas.csv, moodle.csv           the LMS imports (``lms``), when a roster is given

With a late policy (``term``) and the hand-in times (a hand-in manifest), the gradebook has the raw total, the
penalty and the final total, and the feedback says why. The penalty is worked out from the records at every run,
so changing the policy needs no regrading. Every student's files are rendered from one ``results.StudentResult``.

The pipeline: ``submissions`` finds and reads each hand-in (untrusted: links, FIFOs, several notebooks in a
folder, huge outputs), ``grade.grade_notebook`` grades one notebook in the sandbox, this module writes what
comes back, and ``similarity`` compares the class.

Resumable: a submission whose record exists (same file content, same hidden tests, same seed) is not graded
again, so a run that was killed halfway, or stopped by a full disk, grades only what is missing when started
again. Every file is written atomically (``outfiles``), so nothing is ever half-written and the gradebook,
rebuilt from the records after each submission, never holds a row twice. One bad submission never stops the
batch; an error of the grader itself is reported for that submission, which the next run tries again; OUT that
cannot be written (read-only, full) stops it with ``outfiles.OutputError``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from coursekit.grading.gradescope import validate_results
from coursekit.paths import REPO
from coursekit.grading.outfiles import OutputError, csv_text, prepare_out_dir, spreadsheet_safe, write_output
from coursekit.grading.results import GRADEBOOK_TAIL, StudentResult, self_check_hints
from coursekit.grading.term import describe_delta
from coursekit.grading.submissions import (Submission, UnreadableSubmission, find_in_folder, find_submissions,
                                           lab_names, read_submission, strip_notebook, submission_sha256)

__all__ = ["BatchSummary", "grade_folder", "grade_submission", "grade_gradescope_submission", "spec_key",
           "spreadsheet_safe", "OutputError"]

RECORD_VERSION = 2
MANIFEST = "manifest.csv"      # the hand-in service's record, beside the hand-ins (not a submission)
STAGING = ".staging"          # OUT/.staging: the stripped copy being graded; emptied at every start


@dataclass
class BatchSummary:
    total: int = 0                 # submissions found
    graded: int = 0                # graded in this run
    skipped: int = 0               # already graded (records found)
    failed: int = 0                # the grader itself failed on them (tried again next run)
    statuses: Counter = field(default_factory=Counter)
    scores: list = field(default_factory=list)
    max_total: float = 0.0
    seconds: float = 0.0
    out_dir: Path | None = None
    left_out: list = field(default_factory=list)       # entries of the folder that are no submission, and why
    flagged: dict = field(default_factory=dict)        # student -> the grade's flags
    similar: list = field(default_factory=list)        # the most similar pairs (similarity.Pair)
    late: dict = field(default_factory=dict)           # student -> (late by, penalty points)
    exports: list = field(default_factory=list)        # lines on the LMS exports (missing, not on the roster)
    isolation: str = ""                                # the sandbox mode the jobs ran in, in words

    @property
    def per_minute(self) -> float:
        return 60.0 * self.graded / self.seconds if self.seconds > 0 else 0.0

    def text(self) -> str:
        lines = [f"{self.total} submissions: {self.graded} graded now, {self.skipped} already graded"
                 + (f", {self.failed} failed in the grader (run again to retry)" if self.failed else "")]
        if self.isolation:
            lines.append(f"isolation: {self.isolation}")
        if self.graded:
            lines.append(f"time: {self.seconds:.1f} s ({self.per_minute:.1f} submissions per minute)")
        if self.scores:
            lines.append(f"scores (all {len(self.scores)}): mean {statistics.mean(self.scores):.1f}, "
                         f"median {statistics.median(self.scores):g}, min {min(self.scores):g}, "
                         f"max {max(self.scores):g} of {self.max_total:g}")
        if self.statuses:
            lines.append("status: " + ", ".join(f"{k} {v}" for k, v in sorted(self.statuses.items())))
        if self.left_out:
            lines.append(f"left out of the folder ({len(self.left_out)}):")
            lines.extend(f"  {line}" for line in self.left_out)
        if self.flagged:
            lines.append(f"flagged for the instructor to read ({len(self.flagged)}): code that reaches for the "
                         "grader's internals or the interpreter's machinery")
            for student, flags in sorted(self.flagged.items()):
                lines.append(f"  {student}:")
                for flag in flags[:20]:
                    where = f"line {flag.get('line')}" if flag.get("line") is not None else "?"
                    code = " ".join(str(flag.get("code", "")).split())[:160]
                    lines.append(f"    {where}: {code}  ({flag.get('reason', '')})")
        if self.similar:
            lines.append("most similar pairs (similarity.html has the shared code):")
            lines.extend(f"  {p.a} ~ {p.b}: {p.similarity:.0%}" for p in self.similar)
        if self.late:
            lines.append(f"late hand-ins ({len(self.late)}):")
            lines.extend(f"  {student}: {by}, -{penalty:g} points" for student, (by, penalty) in sorted(self.late.items()))
        lines.extend(self.exports)
        if self.out_dir is not None:
            lines.append(f"gradebook: {self.out_dir / 'gradebook.csv'}; feedback: {self.out_dir / 'feedback'}; "
                         f"Gradescope: {self.out_dir / 'gradescope'}; similarity: {self.out_dir / 'similarity.html'}; "
                         f"report: {self.out_dir / 'report.html'}")
        return "\n".join(lines)


def spec_key(spec) -> str:
    """A fingerprint of the hidden tests: a record made with other tests is not reused."""
    h = hashlib.sha256()
    h.update(json.dumps(list(spec.questions)).encode())
    h.update(spec.harvest_code.encode())
    folder = getattr(spec, "autograder_dir", None)
    if folder is not None:
        for p in sorted(Path(folder).glob("*")):
            if p.is_file():
                h.update(p.name.encode())
                h.update(p.read_bytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------- one submission

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


def _internal_paths(*paths) -> list[str]:
    found = {str(p) for p in (*paths, REPO) if p is not None and len(str(p)) > 1}   # REPO: where coursekit is
    found |= {str(Path(p).resolve()) for p in found}
    return sorted(found, key=len, reverse=True)


def _with_feedback(data: dict) -> dict:
    """The grade with its feedback rendered (once, by ``grade.feedback_text``) from its questions and notes."""
    from coursekit.grading.grade import feedback_text
    from coursekit.grading.labspec import QuestionResult
    names = {f.name for f in dataclasses.fields(QuestionResult)}
    questions = [QuestionResult(**{k: v for k, v in q.items() if k in names}) for q in data["questions"]]
    data["feedback"] = feedback_text(data["student"], questions, data["status"], data.get("cell_errors") or [],
                                     data.get("notes") or [])
    return data


def _ungraded(sub: Submission, spec, status: str, why: str) -> dict:
    """The grade of a submission that is not run: 0 on every question, with the reason."""
    questions = [{"name": name, "title": (getattr(spec, "titles", None) or {}).get(name, ""), "points": 0,
                  "max_points": pts, "passed": [], "failed": [why]} for name, pts in spec.questions]
    return {"student": sub.student, "total": 0, "max_total": sum(q["max_points"] for q in questions),
            "status": status, "questions": questions, "cell_errors": [], "notes": list(sub.notes), "flags": []}


def grade_submission(sub: Submission, spec, limits, seed: int, staging: Path, internal=()) -> tuple[dict, str]:
    """Grade one submission: (its grade as a dict with the feedback, the fingerprint of what was graded).
    The notebook is read once (``submissions.read_submission``), and its stripped copy is what the sandbox
    gets, written in ``staging`` (a folder of the grader's) and removed after. Never raises for what the
    student handed in."""
    from coursekit.grading.grade import grade_notebook
    if sub.status:
        why = {"symlink": "the submission is a symbolic link, which is not followed: hand in the file itself",
               "no-notebook": "no notebook was submitted"}.get(sub.status, sub.status)
        return _with_feedback(_scrub(_ungraded(sub, spec, sub.status, why), list(internal))), sub.status
    try:
        handed_in = read_submission(sub)
    except UnreadableSubmission as exc:
        return _with_feedback(_scrub(_ungraded(sub, spec, "invalid-notebook", str(exc)), list(internal))), \
            "unreadable"
    folder = Path(tempfile.mkdtemp(prefix=f"{sub.student}.", dir=staging))
    staged = folder / sub.relpath.name
    try:
        write_output(staged, handed_in.data)
        grade = grade_notebook(staged, spec=spec, limits=limits, seed=seed, student=sub.student)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    data = grade.as_dict()
    data["notes"] = list(sub.notes) + list(data.get("notes") or [])
    flags = data.pop("flags", None) or []          # the instructor's: quoted as the student wrote them
    data = _scrub(data, list(internal) + [str(folder)])
    data["flags"] = flags
    return _with_feedback(data), handed_in.sha256


def _fingerprint(sub: Submission) -> str:
    return sub.status if sub.status else submission_sha256(sub)


# --------------------------------------------------------------------------------------------- the class

def _gradebook(results: list[StudentResult], question_names: list[str]) -> str:
    """student, points per question, total (raw), late_penalty, final_total, max_total, status, file, hand-in time,
    late by."""
    return csv_text(["student", *question_names, *GRADEBOOK_TAIL],
                    [r.gradebook_row(question_names) for r in sorted(results, key=lambda r: r.student)])


@dataclass
class _Term:
    """What turns a record into a ``StudentResult``: the late policy, the hand-in times, the self-check's hints."""
    policy: object = None                      # term.LatePolicy or None
    times: dict = field(default_factory=dict)  # student -> hand-in time
    hints: dict = field(default_factory=dict)  # question -> what the public tests check

    def result(self, rec: dict, code_cells=None) -> StudentResult:
        lateness = self.policy.lateness(self.times.get(rec["student"])) if self.policy is not None else None
        return StudentResult.from_record(rec, lateness=lateness, policy=self.policy, code_cells=code_cells,
                                         hints=self.hints)


def _code_cells(sub: Submission | None) -> list[str]:
    if sub is None or sub.status:
        return []
    try:
        return read_submission(sub).code_cells
    except UnreadableSubmission:
        return []


def _write_student_files(out: Path, result: StudentResult) -> None:
    """The student's feedback (text and HTML) and Gradescope results, from one ``StudentResult``."""
    write_output(out / "feedback" / f"{result.student}.txt", result.feedback_text())
    write_output(out / "feedback" / f"{result.student}.html", result.feedback_html())
    results = result.results_json()
    validate_results(results)
    write_output(out / "gradescope" / result.student / "results.json", json.dumps(results, indent=1))


def _warn_if_readable(spec, out: Path, log) -> None:
    """Without bubblewrap, student code sees the whole file system as an unprivileged uid: the hidden tests,
    the solution and the gradebook must then be unreadable to it (0700 folders). Say so if they are not."""
    import sys

    from coursekit.grading import sandbox
    if not sandbox.relies_on_permissions():
        return
    folder = getattr(spec, "autograder_dir", None)
    paths = [out] + ([Path(folder), Path(folder).parent / "source"] if folder else [])
    exposed = sandbox.check_unreadable(paths, sandbox.SANDBOX_UID_BASE)
    if sandbox.check_unreadable([Path(sys.base_prefix) / "lib"], sandbox.SANDBOX_UID_BASE) == []:
        log(f"WARNING: Python's standard library ({sys.base_prefix}) is not readable by the sandbox's uid: "
            "a notebook that imports a module the warm server did not load will fail")
    if exposed:
        log("WARNING: no bubblewrap, so student code runs as an unprivileged uid only, and it can read: "
            + ", ".join(exposed) + ". Make them unreadable (chmod 700 on a folder above) or install bubblewrap.")


def _load_record(path: Path) -> dict | None:
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("version") == RECORD_VERSION else None


def _template_cells(spec) -> list[str]:
    """The code cells of the notebook handed out to students (``<lab>.ipynb`` beside the autograder folder):
    boilerplate for the similarity report. None found: no cell is boilerplate."""
    folder, lab = getattr(spec, "autograder_dir", None), (getattr(spec, "spec", None) or {}).get("lab")
    if folder is None or not lab:
        return []
    path = Path(folder).parent / f"{lab}.ipynb"
    try:
        return strip_notebook(json.loads(path.read_text(encoding="utf-8")))[1]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _similarity(subs: list[Submission], records: dict, spec, out: Path, staging: Path, log) -> list:
    from coursekit.grading.similarity import solution_code, write_similarity
    template = _template_cells(spec)
    codes = {}
    for sub in subs:
        if sub.student in records and not sub.status:
            try:
                code = solution_code(read_submission(sub).code_cells, template)
            except UnreadableSubmission:
                continue
            if code.strip():
                codes[sub.student] = code
    try:
        return write_similarity(codes, "\n\n".join(template), lambda name, text: write_output(out / name, text),
                                sanitize=spreadsheet_safe, work_dir=staging)
    except OutputError:
        raise
    except Exception as exc:     # noqa: BLE001 (the report is an extra: the grades stand without it)
        log(f"similarity report failed: {type(exc).__name__}: {exc}")
        return []


def grade_folder(submissions_dir, out_dir, *, spec=None, autograder_dir=None, limits=None, seed: int = 0,
                 workers: int | None = None, progress: bool = True, regrade: bool = False,
                 policy=None, hand_in_times: dict | None = None, roster=None, assignment: str = "MLP lab",
                 log=print) -> BatchSummary:
    """Grade every submission in ``submissions_dir`` into ``out_dir`` (see the module docstring). Raises
    ``OutputError`` when OUT cannot be written (what was written stays valid: run again to resume).

    ``policy`` (``term.LatePolicy``) and ``hand_in_times`` ({student: aware datetime}, from the hand-in
    manifest) give the late penalties; ``roster`` (``lms.Roster``) the LMS exports, named ``assignment``."""
    from tqdm.auto import tqdm

    from coursekit.grading.labspec import load_spec
    started = time.monotonic()
    spec = spec or load_spec(autograder_dir)
    out = prepare_out_dir(out_dir, ("feedback", "gradescope", "records"))
    staging = out / STAGING
    shutil.rmtree(staging, ignore_errors=True)       # copies left by a run that was killed
    staging.mkdir(mode=0o700)
    _warn_if_readable(spec, out, log)
    subs, left_out = find_submissions(submissions_dir, lab_names(spec), out_dir=out)
    left_out = [line for line in left_out if line != f"{MANIFEST}: not a notebook"]   # the hand-in manifest
    for line in left_out:
        log(f"left out: {line}")
    term = _Term(policy, dict(hand_in_times or {}), self_check_hints(_template_cells(spec)))
    internal = _internal_paths(out, Path(submissions_dir), subs[0].root if subs else None)
    key = spec_key(spec)
    question_names = [name for name, _ in spec.questions]
    summary = BatchSummary(total=len(subs), max_total=float(sum(p for _, p in spec.questions)), out_dir=out,
                           left_out=left_out, isolation=_isolation_in_words())

    records: dict[str, dict] = {}
    todo = []
    for sub in subs:
        rec = None if regrade else _load_record(out / "records" / f"{sub.student}.json")
        if rec and rec.get("sha256") == _fingerprint(sub) and rec.get("spec") == key and rec.get("seed") == seed:
            records[sub.student] = rec
            summary.skipped += 1
        else:
            todo.append(sub)
    lock = threading.Lock()

    def gradebook() -> str:
        return _gradebook([term.result(rec) for rec in records.values()], question_names)

    def one(sub: Submission) -> dict:
        began = time.monotonic()
        data, fingerprint = grade_submission(sub, spec, limits, seed, staging, internal)
        if _fingerprint(sub) != fingerprint:
            raise RuntimeError("the file changed while it was graded")
        rec = {"version": RECORD_VERSION, "student": sub.student,
               "file": str(sub.relpath) if sub.relpath is not None else "", "sha256": fingerprint, "spec": key,
               "seed": seed, "grade": data, "graded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "seconds": round(time.monotonic() - began, 3)}
        _write_student_files(out, term.result(rec, _code_cells(sub)))
        write_output(out / "records" / f"{sub.student}.json", json.dumps(rec, indent=1))   # the commit point
        with lock:
            records[sub.student] = rec
            write_output(out / "gradebook.csv", gradebook())
        return data

    # the students graded before: their pages again (the late policy or the hand-in times may have changed)
    by_student = {sub.student: sub for sub in subs}
    for student, rec in records.items():
        _write_student_files(out, term.result(rec, _code_cells(by_student.get(student))))
    write_output(out / "gradebook.csv", gradebook())
    workers = max(1, workers or os.cpu_count() or 1)
    bar = tqdm(total=len(todo), desc="grading", unit="nb", disable=not progress or not todo)
    stopped: OutputError | None = None
    try:
        with ThreadPoolExecutor(workers) as pool:
            futures = {pool.submit(one, sub): sub for sub in todo}
            try:
                for fut in as_completed(futures):
                    sub = futures[fut]
                    try:
                        data = fut.result()
                        summary.graded += 1
                        bar.set_postfix_str(f"{sub.student}: {data['total']:g} ({data['status']})", refresh=False)
                    except OutputError as exc:      # OUT cannot be written: stop cleanly, resume next run
                        stopped = stopped or exc
                        for f in futures:
                            f.cancel()
                    except Exception as exc:   # noqa: BLE001 (the grader's own failure on this one; go on)
                        summary.failed += 1
                        log(f"grader error on {sub.student}: {type(exc).__name__}: {exc} (run again to retry)")
                    bar.update(1)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    finally:
        bar.close()
    if stopped is not None:
        shutil.rmtree(staging, ignore_errors=True)
        raise stopped
    for rec in records.values():
        summary.statuses[rec["grade"]["status"]] += 1
        summary.scores.append(rec["grade"]["total"])
        if rec["grade"].get("flags"):
            summary.flagged[rec["student"]] = rec["grade"]["flags"]
    pairs = _similarity(subs, records, spec, out, staging, log)
    summary.similar = [p for p in pairs[:10] if p.similarity >= 0.5]
    shutil.rmtree(staging, ignore_errors=True)
    results = [term.result(rec) for rec in records.values()]
    summary.late = {r.student: (describe_delta(r.lateness.late_by), r.penalty) for r in results
                    if r.lateness is not None and r.lateness.late}
    if roster is not None:
        from coursekit.grading.lms import write_exports
        summary.exports = write_exports(roster, results, assignment, lambda name, text: write_output(out / name, text))
    _write_report(out, results, spec, summary, pairs, records, log)
    summary.seconds = time.monotonic() - started
    write_output(out / "summary.txt", summary.text() + "\n")
    return summary


def _isolation_in_words() -> str:
    """The sandbox mode for the summary; grading itself refuses (in the runner) where there is none."""
    from coursekit.grading import sandbox     # lazily: importing batch must not probe the machine
    try:
        return sandbox.describe_isolation()
    except ValueError as exc:                 # a COURSEKIT_SANDBOX that cannot work here
        return f"unavailable ({exc})"


def _write_report(out: Path, results, spec, summary: BatchSummary, pairs, records: dict, log) -> None:
    from coursekit.grading.report import class_report
    seconds = {s: rec.get("seconds") for s, rec in records.items()}
    try:
        html = class_report(results, [(name, pts) for name, pts in spec.questions], flagged=summary.flagged,
                            pairs=pairs[:10], seconds=seconds, left_out=summary.left_out + summary.exports)
    except Exception as exc:     # noqa: BLE001 (the report is an extra: the grades stand without it)
        log(f"class report failed: {type(exc).__name__}: {exc}")
        return
    write_output(out / "report.html", html)


def grade_gradescope_submission(submission_dir, autograder_dir, results_path, limits=None, seed: int = 0) -> dict:
    """Grade the notebook in a Gradescope submission folder and write ``results.json`` (Gradescope runs this
    once per student, through the bundle's ``run_autograder``)."""
    from coursekit.grading.labspec import load_spec
    spec = load_spec(autograder_dir)
    sub = find_in_folder(submission_dir, lab_names(spec))
    with tempfile.TemporaryDirectory(prefix="coursekit-gradescope-") as staging:
        data, _ = grade_submission(sub, spec, limits, seed, Path(staging),
                                   _internal_paths(Path(submission_dir), Path(autograder_dir)))
    rec = {"student": sub.student, "file": str(sub.relpath) if sub.relpath is not None else "", "grade": data}
    results = _Term(hints=self_check_hints(_template_cells(spec))).result(rec, _code_cells(sub)).results_json()
    validate_results(results)
    write_output(Path(results_path), json.dumps(results, indent=1))
    return results
