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

This module only schedules: it lists the class (``submissions.find_submissions``: untrusted, links, FIFOs, several
notebooks in a folder), skips what its records show is graded, sends each other submission through
``grade.STEPS`` on a worker (read, run in the sandbox, score, flag, record, write its files), and writes what
belongs to the class: the gradebook, the similarity report (``similarity``), the class report and the summary.

Resumable: a submission whose record exists (same file content, same hidden tests, same seed) is not graded
again, so a run that was killed halfway, or stopped by a full disk, grades only what is missing when started
again. Every file is written atomically (``outfiles``), so nothing is ever half-written and the gradebook,
rebuilt from the records after each submission, never holds a row twice. One bad submission never stops the
batch; an error of the grader itself is reported for that submission, which the next run tries again; OUT that
cannot be written (read-only, full) stops it with ``outfiles.OutputError``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from coursekit.grading.grade import RECORD_VERSION, grade_submission, internal_paths
from coursekit.grading.outfiles import (ClassFolderOutput, OutputError, prepare_out_dir, remove_partial_writes,
                                        spreadsheet_safe, write_output)
from coursekit.grading.protocol import Limits
from coursekit.grading.results import RenderContext, self_check_hints
from coursekit.grading.submissions import (Submission, UnreadableSubmission, find_submissions, handed_in_fingerprint,
                                           lab_names, read_submission, template_code_cells)
from coursekit.grading.term import describe_delta

__all__ = ["BatchSummary", "grade_folder", "spec_key", "spreadsheet_safe", "OutputError"]

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


# --------------------------------------------------------------------------------------------- the class

def _code_cells(sub: Submission | None) -> list[str]:
    if sub is None or sub.status:
        return []
    try:
        return read_submission(sub).code_cells
    except UnreadableSubmission:
        return []


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


def _torch_threads(n: int | None) -> int | None:
    """Set this process's torch intra-op threads to ``n`` (None: leave them); returns the number before."""
    import torch
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    return before


def _load_record(path: Path) -> dict | None:
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("version") == RECORD_VERSION else None


def _similarity(subs: list[Submission], records: dict, template: list[str], out: Path, staging: Path, log) -> list:
    from coursekit.grading.similarity import solution_code, write_similarity
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
    remove_partial_writes(out)                        # left by a run that was killed while it wrote
    staging = out / STAGING
    shutil.rmtree(staging, ignore_errors=True)       # copies left by a run that was killed
    staging.mkdir(mode=0o700)
    _warn_if_readable(spec, out, log)
    limits = limits or Limits()
    subs, left_out = find_submissions(submissions_dir, lab_names(spec), out_dir=out, limits=limits)
    left_out = [line for line in left_out if line != f"{MANIFEST}: not a notebook"]   # the hand-in manifest
    for line in left_out:
        log(f"left out: {line}")
    template = template_code_cells(spec)
    context = RenderContext(policy, dict(hand_in_times or {}), self_check_hints(template))
    output = ClassFolderOutput(out)
    internal = internal_paths(out, Path(submissions_dir), subs[0].root if subs else None)
    key = spec_key(spec)
    question_names = [name for name, _ in spec.questions]
    summary = BatchSummary(total=len(subs), max_total=float(sum(p for _, p in spec.questions)), out_dir=out,
                           left_out=left_out, isolation=_isolation_in_words())

    records: dict[str, dict] = {}
    todo = []
    for sub in subs:
        rec = None if regrade else _load_record(out / "records" / f"{sub.student}.json")
        if rec and rec.get("sha256") == handed_in_fingerprint(sub) and rec.get("spec") == key \
                and rec.get("seed") == seed:
            records[sub.student] = rec
            summary.skipped += 1
        else:
            todo.append(sub)
    lock = threading.Lock()

    def gradebook() -> str:
        return context.gradebook(records.values(), question_names)

    def one(sub: Submission) -> dict:
        """One submission through ``grade.STEPS`` (its files and record written there), then the gradebook."""
        rec = grade_submission(sub, spec, limits, seed, staging, internal, spec_key=key, context=context,
                               output=output).record
        with lock:
            records[sub.student] = rec
            write_output(out / "gradebook.csv", gradebook())
        return rec["grade"]

    # the students graded before: their pages again (the late policy or the hand-in times may have changed)
    by_student = {sub.student: sub for sub in subs}
    for student, rec in records.items():
        output.write_student_files(context.result(rec, _code_cells(by_student.get(student))))
    write_output(out / "gradebook.csv", gradebook())
    workers = max(1, workers or os.cpu_count() or 1)
    bar = tqdm(total=len(todo), desc="grading", unit="nb", disable=not progress or not todo)
    stopped: OutputError | None = None
    # each worker scores with torch in this process while the jobs use every core: torch's own threads would only
    # spin (one correct submission's scoring: 0.12 CPU s on one thread, 0.3-0.6 on two, load 20)
    torch_threads = _torch_threads(max(1, (os.cpu_count() or 1) // workers))
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
        _torch_threads(torch_threads)
    if stopped is not None:
        shutil.rmtree(staging, ignore_errors=True)
        raise stopped
    for rec in records.values():
        summary.statuses[rec["grade"]["status"]] += 1
        summary.scores.append(rec["grade"]["total"])
        if rec["grade"].get("flags"):
            summary.flagged[rec["student"]] = rec["grade"]["flags"]
    pairs = _similarity(subs, records, template, out, staging, log)
    summary.similar = [p for p in pairs[:10] if p.similarity >= 0.5]
    shutil.rmtree(staging, ignore_errors=True)
    results = [context.result(rec) for rec in records.values()]
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
