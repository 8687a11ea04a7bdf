"""The grader's output files: each written whole or not at all, and one clear error when OUT cannot be written.

``atomic_write`` writes a temporary file in the same folder, fsyncs it and renames it over the target, so a
crash, a kill or a full disk leaves the previous version (or nothing), never half a file. ``OutputError`` is what
the grade commands turn into one line and exit status 2: OUT on a read-only file system, a full disk, a path that
cannot be created.

Where one graded submission's files go (the ``write`` step of ``grade.STEPS``): ``ClassFolderOutput`` (``coursekit
grade``: feedback, Gradescope results and the record under OUT) or ``GradescopeOutput`` (Gradescope's
``results.json``). Both write what one ``results.StudentResult`` renders.
"""
from __future__ import annotations

import csv
import errno
import io
import json
import os
import tempfile
from pathlib import Path

from coursekit.grading.gradescope import validate_results

__all__ = ["OutputError", "atomic_write", "write_output", "prepare_out_dir", "spreadsheet_safe", "csv_text",
           "remove_partial_writes", "ClassFolderOutput", "GradescopeOutput"]

SPREADSHEET_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")

_HINTS = {errno.EROFS: "the file system is read-only", errno.ENOSPC: "the disk is full",
          errno.EDQUOT: "the disk quota is used up", errno.EACCES: "permission denied",
          errno.EPERM: "permission denied", errno.ENOTDIR: "a part of the path is a file, not a folder",
          errno.EEXIST: "a part of the path is a file, not a folder", errno.ENAMETOOLONG: "the path is too long"}


class OutputError(Exception):
    """OUT cannot be written. What was written before stays valid; run again when it can be written."""


def describe(exc: OSError, path) -> str:
    why = _HINTS.get(exc.errno) or exc.strerror or type(exc).__name__
    return f"cannot write {path}: {why}"


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


def write_output(path: Path, data: str | bytes) -> None:
    """``atomic_write``, with a failure to write turned into ``OutputError``."""
    try:
        atomic_write(path, data)
    except OSError as exc:
        raise OutputError(describe(exc, path)) from exc


def prepare_out_dir(out_dir, subfolders=()) -> Path:
    """Create OUT (mode 0700: the grader's alone) and its subfolders, and prove a file can be written there."""
    out = Path(out_dir)
    where = out
    try:
        for sub in ("", *subfolders):
            where = out / sub
            where.mkdir(parents=True, exist_ok=True)
        where = out
        out.chmod(0o700)
        where = out / ".write-test"
        atomic_write(where, b"ok\n" * 1024)
        where.unlink()
    except OSError as exc:
        raise OutputError(describe(exc, where)) from exc
    return out


def remove_partial_writes(out: Path) -> list[Path]:
    """Remove the temporary files that ``atomic_write`` leaves in OUT when the grader is killed mid-write
    (``.<name>.<random>.tmp``; the file they were to replace is intact); returns them."""
    removed = []
    for folder, _, names in os.walk(out):
        for name in names:
            if name.startswith(".") and name.endswith(".tmp"):
                path = Path(folder) / name
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
                removed.append(path)
    return removed


def spreadsheet_safe(cell) -> str:
    """A CSV cell no spreadsheet runs as a formula (OWASP's CSV-injection rule: a leading ``'``)."""
    text = str(cell)
    return "'" + text if text.startswith(SPREADSHEET_TRIGGERS) else text


def csv_text(header: list[str], rows) -> str:
    """CSV with every cell made safe from formula injection (``spreadsheet_safe``): every export goes through it."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([spreadsheet_safe(cell) for cell in header])
    for row in rows:
        w.writerow([spreadsheet_safe(cell) for cell in row])
    return buf.getvalue()


class ClassFolderOutput:
    """A class's OUT: ``feedback/<student>.txt`` and ``.html``, ``gradescope/<student>/results.json``, and
    ``records/<student>.json``, written last: the record marks the submission as done."""

    def __init__(self, out: Path):
        self.out = Path(out)

    def write_student_files(self, result) -> None:
        """The student's feedback (text and HTML) and Gradescope results, from one ``results.StudentResult``."""
        write_output(self.out / "feedback" / f"{result.student}.txt", result.feedback_text())
        write_output(self.out / "feedback" / f"{result.student}.html", result.feedback_html())
        results = result.results_json()
        validate_results(results)
        write_output(self.out / "gradescope" / result.student / "results.json", json.dumps(results, indent=1))

    def write(self, result, record: dict) -> None:
        self.write_student_files(result)
        write_output(self.out / "records" / f"{record['student']}.json", json.dumps(record, indent=1))


class GradescopeOutput:
    """Gradescope's ``results.json`` of one submission (``results`` keeps what was written)."""

    def __init__(self, path: Path):
        self.path, self.results = Path(path), None

    def write(self, result, record: dict) -> None:
        self.results = result.results_json()
        validate_results(self.results)
        write_output(self.path, json.dumps(self.results, indent=1))
