"""Grades the LMS takes: the gradebook in Canvas's and Moodle's grade-import CSV formats, students mapped through
a roster.

The roster is a CSV the instructor exports from the LMS and completes with each student's hand-in name (the
hub user name, which names the hand-in folder)::

    student,name,canvas_id,sis_user_id,sis_login_id,section,email
    ada,Ada Lovelace,1001,S1001,ada@uni.example,MLP-1,ada@uni.example

Only ``student`` is required; Canvas needs at least one of ``canvas_id``, ``sis_user_id`` or ``sis_login_id``, and
Moodle ``email`` (its import maps "Email address" to the user's email). Written into OUT:

* ``canvas.csv``: Canvas's gradebook import (Student, ID, SIS User ID, SIS Login ID, Section, then the assignment's
  column with its "Points Possible" row), imported with Grades > Import;
* ``moodle.csv``: Moodle's "Import grades from CSV" (Email address, the assignment's grade, Feedback); map
  "Email address" to "email" and the grade column to the grade item when importing;
* ``roster_grades.csv``: every roster student with the final total and a status: ``graded``, ``late``, or
  ``missing`` (no hand-in: 0 points).

Hand-ins from names not on the roster are left out of the exports and listed (summary, report) instead of being
put under someone's name. Every cell goes through the gradebook's rule against formula injection.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from coursekit.grading.outfiles import csv_text
from coursekit.grading.submissions import safe_name

__all__ = ["Roster", "RosterEntry", "RosterError", "load_roster", "write_exports"]

OPTIONAL = ("name", "canvas_id", "sis_user_id", "sis_login_id", "section", "email")


class RosterError(ValueError):
    """The roster cannot be used: the message says which line and why."""


@dataclass(frozen=True)
class RosterEntry:
    student: str
    name: str = ""
    canvas_id: str = ""
    sis_user_id: str = ""
    sis_login_id: str = ""
    section: str = ""
    email: str = ""


@dataclass(frozen=True)
class Roster:
    entries: tuple[RosterEntry, ...]

    def by_student(self) -> dict[str, RosterEntry]:
        return {e.student: e for e in self.entries}


def load_roster(path) -> Roster:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")         # Excel's CSV starts with a byte-order mark
    except OSError as exc:
        raise RosterError(f"cannot read the roster {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise RosterError(f"the roster {path} is not UTF-8 text (save it as CSV UTF-8)") from None
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if "student" not in header:
        raise RosterError(f"the roster {path} needs a 'student' column (the hand-in name); its columns: "
                          f"{', '.join(header) or 'none'}")
    entries, seen = [], {}
    for line, row in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if isinstance(v, str)}
        if not any(row.values()):
            continue
        if not row.get("student"):
            raise RosterError(f"{path} line {line}: the student column is empty")
        student = safe_name(row["student"])
        if student in seen:
            raise RosterError(f"{path} line {line}: student {row['student']!r} is already on line {seen[student]}")
        seen[student] = line
        entries.append(RosterEntry(student, **{k: row.get(k, "") for k in OPTIONAL}))
    if not entries:
        raise RosterError(f"the roster {path} has no students")
    return Roster(tuple(entries))


def _status(result) -> str:
    if result is None:
        return "missing"
    if result.lateness is not None and result.lateness.late:
        return "late"
    return "graded"


def write_exports(roster: Roster, results, assignment: str, write) -> list[str]:
    """Write canvas.csv, moodle.csv and roster_grades.csv through ``write(name, text)``; the summary's lines on
    what the exports left out or filled in."""
    by_student = {r.student: r for r in results}
    max_total = next((r.max_total for r in results), 0.0)
    rows = [(e, by_student.get(e.student)) for e in roster.entries]
    score = {e.student: (f"{r.final:g}" if r is not None else "0") for e, r in rows}

    canvas = [["Points Possible", "", "", "", "", f"{max_total:g}"]]
    canvas += [[e.name or e.student, e.canvas_id, e.sis_user_id, e.sis_login_id, e.section, score[e.student]]
               for e, _ in rows]
    write("canvas.csv", csv_text(["Student", "ID", "SIS User ID", "SIS Login ID", "Section", assignment], canvas))
    write("moodle.csv", csv_text(["Email address", assignment, "Feedback"],
                                 [[e.email, score[e.student],
                                   f"{_status(r)}: {score[e.student]} / {max_total:g}"] for e, r in rows]))
    write("roster_grades.csv", csv_text(
        ["student", "name", "final_total", "max_total", "status"],
        [[e.student, e.name, score[e.student], f"{max_total:g}", _status(r)] for e, r in rows]))

    lines = []
    missing = [e.student for e, r in rows if r is None]
    if missing:
        lines.append(f"on the roster with no hand-in ({len(missing)}, exported as 0, status missing): "
                     + ", ".join(missing))
    strangers = sorted(set(by_student) - set(score))
    if strangers:
        lines.append(f"hand-ins from names not on the roster ({len(strangers)}, graded but NOT exported): "
                     + ", ".join(strangers))
    no_canvas = [e.student for e, _ in rows if not (e.canvas_id or e.sis_user_id or e.sis_login_id)]
    if no_canvas:
        lines.append(f"no Canvas ID, SIS User ID or SIS Login ID on the roster (Canvas cannot match them): "
                     + ", ".join(no_canvas))
    no_email = [e.student for e, _ in rows if not e.email]
    if no_email:
        lines.append("no email on the roster (Moodle cannot match them): " + ", ".join(no_email))
    return lines
