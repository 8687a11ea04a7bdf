"""Grade a whole class: a folder of submissions in, a gradebook, feedback and Gradescope results out.

``grade_folder(submissions_dir, out_dir)`` (the ``coursekit grade`` command) writes::

    OUT/gradebook.csv                    student, points per question, total, max, status, file
    OUT/feedback/<student>.txt           what the student reads: per question, points, what passed and failed
    OUT/gradescope/<student>/results.json   Gradescope's format (score, tests[])
    OUT/records/<student>.json           the grade as data: written last, it marks the submission as done
    OUT/summary.txt                      the summary printed at the end

Submissions: one notebook per file (``alice.ipynb``: student "alice"), or one folder per student (the
notebook inside, whatever its name). A file that is a notebook under another name is found by its content.

Resumable: a submission whose record exists (same file content, same hidden tests, same seed) is not graded
again, so a run that was killed halfway and started again grades only what is missing. Every file is written
atomically (a temporary file, then a rename), so nothing is ever half-written and the gradebook, rebuilt from
the records after each submission, never holds a row twice. One bad submission never stops the batch: each
one runs in the sandbox (``coursekit.grading.runner``), and an error of the grader itself is reported for that
submission, which the next run tries again.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import statistics
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Submission", "BatchSummary", "discover_submissions", "grade_folder", "atomic_write", "spec_key"]

NOTEBOOK_SNIFF_BYTES = 16 << 20
RECORD_VERSION = 1


@dataclass
class Submission:
    student: str          # a name safe as a file name
    path: Path | None     # the notebook to grade; None if the student's folder holds none
    note: str = ""        # how it was found, when that is worth saying


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

    @property
    def per_minute(self) -> float:
        return 60.0 * self.graded / self.seconds if self.seconds > 0 else 0.0

    def text(self) -> str:
        lines = [f"{self.total} submissions: {self.graded} graded now, {self.skipped} already graded"
                 + (f", {self.failed} failed in the grader (run again to retry)" if self.failed else "")]
        if self.graded:
            lines.append(f"time: {self.seconds:.1f} s ({self.per_minute:.1f} submissions per minute)")
        if self.scores:
            lines.append(f"scores (all {len(self.scores)}): mean {statistics.mean(self.scores):.1f}, "
                         f"median {statistics.median(self.scores):g}, min {min(self.scores):g}, "
                         f"max {max(self.scores):g} of {self.max_total:g}")
        if self.statuses:
            lines.append("status: " + ", ".join(f"{k} {v}" for k, v in sorted(self.statuses.items())))
        if self.out_dir is not None:
            lines.append(f"gradebook: {self.out_dir / 'gradebook.csv'}; feedback: {self.out_dir / 'feedback'}; "
                         f"Gradescope: {self.out_dir / 'gradescope'}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------- files

def atomic_write(path: Path, data: str | bytes) -> None:
    """Write ``path`` whole or not at all: a temporary file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def safe_name(name: str) -> str:
    """A student name usable as a file name (letters, digits, ``._-``; the rest becomes ``_``)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "student"
    return cleaned[:100]


def _looks_like_notebook(path: Path) -> bool:
    try:
        if path.stat().st_size > NOTEBOOK_SNIFF_BYTES:
            return False
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("cells"), list) and "nbformat" in data


def _notebook_in_folder(folder: Path) -> tuple[Path | None, str]:
    found = sorted(p for p in folder.rglob("*.ipynb")
                   if p.is_file() and ".ipynb_checkpoints" not in p.parts and not p.name.startswith("."))
    if found:
        note = "" if len(found) == 1 else \
            f"{len(found)} notebooks in the folder; graded {found[0].relative_to(folder)}"
        return found[0], note
    others = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    for p in others:
        if _looks_like_notebook(p):
            return p, f"graded {p.relative_to(folder)}, a notebook saved under another name"
    return None, "no notebook in the folder"


def discover_submissions(submissions_dir) -> tuple[list[Submission], list[str]]:
    """The submissions in a folder, sorted by student, and the files that were left out (with why)."""
    root = Path(submissions_dir)
    if not root.is_dir():
        raise NotADirectoryError(f"submissions folder not found: {root}")
    subs, ignored, seen = [], [], set()
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or entry.name == "__MACOSX":
            continue
        if entry.is_dir():
            path, note = _notebook_in_folder(entry)
            student = entry.name
        elif entry.suffix == ".ipynb":
            path, note, student = entry, "", entry.stem
        elif entry.is_file() and _looks_like_notebook(entry):
            path, note, student = entry, f"graded {entry.name}, a notebook saved under another name", entry.stem
        else:
            ignored.append(f"{entry.name}: not a notebook")
            continue
        name = safe_name(student)
        base, k = name, 2
        while name in seen:
            name, k = f"{base}-{k}", k + 1
        seen.add(name)
        subs.append(Submission(name, path, note))
    return subs, ignored


def file_sha256(path: Path | None) -> str:
    if path is None:
        return "none"
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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


# --------------------------------------------------------------------------------------------- grading

def _grade_dict(sub: Submission, spec, limits, seed) -> dict:
    """Grade one submission; a dict ready for the record (never raises for the student's doings)."""
    from coursekit.grading.grade import feedback_text, grade_notebook
    if sub.path is None:
        questions = [_zero_question(name, pts, spec, "no notebook was submitted") for name, pts in spec.questions]
        text = feedback_text(sub.student, questions, "no-notebook", [sub.note])
        return {"student": sub.student, "total": 0, "max_total": sum(q.max_points for q in questions),
                "status": "no-notebook", "questions": [q.as_dict() for q in questions],
                "cell_errors": [sub.note], "notes": [], "feedback": text}
    grade = grade_notebook(sub.path, spec=spec, limits=limits, seed=seed, student=sub.student)
    data = grade.as_dict()
    if sub.note:
        data["notes"] = [sub.note] + list(data.get("notes") or [])
        data["feedback"] = data["feedback"] + f"Note: {sub.note}\n"
    return data


def _zero_question(name, pts, spec, why):
    from coursekit.grading.labspec import QuestionResult
    title = getattr(spec, "titles", {}).get(name, "") if hasattr(spec, "titles") else ""
    return QuestionResult(name=name, points=0, max_points=pts, failed=[why], title=title)


def _gradebook(records: list[dict], question_names: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["student", *question_names, "total", "max_total", "status", "file"])
    for rec in sorted(records, key=lambda r: r["student"]):
        g = rec["grade"]
        points = {q["name"]: q["points"] for q in g["questions"]}
        w.writerow([rec["student"], *(f"{points.get(n, 0):g}" for n in question_names), f"{g['total']:g}",
                    f"{g['max_total']:g}", g["status"], rec.get("file", "")])
    return buf.getvalue()


def _warn_if_readable(spec, out: Path, log) -> None:
    """Without bubblewrap, student code sees the whole file system as an unprivileged uid: the hidden tests,
    the solution and the gradebook must then be unreadable to it (0700 folders). Say so if they are not."""
    from coursekit.grading import sandbox
    if sandbox.isolation_mode() != "uid":
        return
    folder = getattr(spec, "autograder_dir", None)
    paths = [out] + ([Path(folder), Path(folder).parent / "source"] if folder else [])
    exposed = sandbox.check_unreadable(paths, sandbox.SANDBOX_UID_BASE)
    import sys
    if sandbox.check_unreadable([Path(sys.base_prefix) / "lib"], sandbox.SANDBOX_UID_BASE) == []:
        log(f"WARNING: Python's standard library ({sys.base_prefix}) is not readable by the sandbox's uid: "
            "a notebook that imports a module the grading server did not load will fail")
    if exposed:
        log("WARNING: no bubblewrap, so student code runs as an unprivileged uid only, and it can read: "
            + ", ".join(exposed) + ". Make them unreadable (chmod 700 on a folder above) or install bubblewrap.")


def _load_record(path: Path) -> dict | None:
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("version") == RECORD_VERSION else None


def grade_folder(submissions_dir, out_dir, *, spec=None, autograder_dir=None, limits=None, seed: int = 0,
                 workers: int | None = None, progress: bool = True, regrade: bool = False,
                 log=print) -> BatchSummary:
    """Grade every submission in ``submissions_dir`` into ``out_dir`` (see the module docstring)."""
    from tqdm.auto import tqdm

    from coursekit.grading.gradescope import results_json
    from coursekit.grading.labspec import load_spec
    started = time.monotonic()
    spec = spec or load_spec(autograder_dir)
    out = Path(out_dir)
    for sub_dir in ("feedback", "gradescope", "records"):
        (out / sub_dir).mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)        # the gradebook is the grader's alone
    _warn_if_readable(spec, out, log)
    subs, ignored = discover_submissions(submissions_dir)
    for line in ignored:
        log(f"left out: {line}")
    key = spec_key(spec)
    question_names = [name for name, _ in spec.questions]
    summary = BatchSummary(total=len(subs), max_total=float(sum(p for _, p in spec.questions)), out_dir=out)

    records: dict[str, dict] = {}
    todo = []
    for sub in subs:
        rec = None if regrade else _load_record(out / "records" / f"{sub.student}.json")
        if rec and rec.get("sha256") == file_sha256(sub.path) and rec.get("spec") == key and rec.get("seed") == seed:
            records[sub.student] = rec
            summary.skipped += 1
        else:
            todo.append(sub)
    lock = threading.Lock()

    def finish(sub: Submission, data: dict):
        atomic_write(out / "feedback" / f"{sub.student}.txt", data["feedback"])
        atomic_write(out / "gradescope" / sub.student / "results.json",
                     json.dumps(results_json(data), indent=1))
        rec = {"version": RECORD_VERSION, "student": sub.student, "file": str(sub.path) if sub.path else "",
               "sha256": file_sha256(sub.path), "spec": key, "seed": seed, "grade": data,
               "graded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        atomic_write(out / "records" / f"{sub.student}.json", json.dumps(rec, indent=1))   # the commit point
        with lock:
            records[sub.student] = rec
            atomic_write(out / "gradebook.csv", _gradebook(list(records.values()), question_names))

    def one(sub: Submission):
        sha = file_sha256(sub.path)
        data = _grade_dict(sub, spec, limits, seed)
        if file_sha256(sub.path) != sha:
            raise RuntimeError("the file changed while it was graded")
        finish(sub, data)
        return data

    atomic_write(out / "gradebook.csv", _gradebook(list(records.values()), question_names))
    workers = max(1, workers or os.cpu_count() or 1)
    bar = tqdm(total=len(todo), desc="grading", unit="nb", disable=not progress or not todo)
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
    for rec in records.values():
        summary.statuses[rec["grade"]["status"]] += 1
        summary.scores.append(rec["grade"]["total"])
    summary.seconds = time.monotonic() - started
    atomic_write(out / "summary.txt", summary.text() + "\n")
    return summary
