"""``coursekit collect``: the hand-in service's store turned into a submissions folder ``coursekit grade`` takes.

::

    coursekit collect --store /srv/handin --out submissions/ [--term term.toml]

writes ``submissions/<student>.ipynb`` (each student's latest hand-in) and ``submissions/manifest.csv``
(student, handed_in_at, sha256, late_by), which ``coursekit grade`` reads for the late policy. The store is read
as untrusted: no symbolic link is followed (files opened with ``O_NOFOLLOW``), a notebook whose SHA-256 is not
the receipt's is left out with the reason, and so is anything that is not a student's folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote

from coursekit.grading.outfiles import csv_text, write_output
from coursekit.grading.submissions import safe_name
from coursekit.grading.term import LatePolicy, describe_delta, parse_time

__all__ = ["collect", "MAX_MB"]

MAX_MB = 64
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _read(path: Path, limit: int) -> bytes:
    fd = os.open(path, _OPEN)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path.name} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise OSError(f"{path.name} is larger than {limit // 2**20} MiB")
    return data


def collect(store, out, policy: LatePolicy | None = None) -> tuple[list[dict], list[str]]:
    """Copy each student's latest hand-in from ``store`` into ``out`` with a manifest; (manifest rows, what was
    left out and why)."""
    store, out = Path(store), Path(out)
    if not store.is_dir():
        raise NotADirectoryError(f"no hand-in store at {store}")
    rows, left_out, taken = [], [], set()
    for entry in sorted(store.iterdir()):
        st = entry.lstat()
        if not stat.S_ISDIR(st.st_mode):
            left_out.append(f"{entry.name}: not a student's folder")
            continue
        student = safe_name(unquote(entry.name))
        if student in taken:            # two hub names with the same file-safe form: neither overwrites the other
            student = next(f"{student}-{i}" for i in range(2, 10**6) if f"{student}-{i}" not in taken)
        try:
            receipt = json.loads(_read(entry / "receipt.json", 2**20))
            raw = _read(entry / "handin.ipynb", MAX_MB * 2**20)
        except (OSError, ValueError) as exc:
            left_out.append(f"{entry.name}: unreadable hand-in ({exc})")
            continue
        digest = hashlib.sha256(raw).hexdigest()
        if not isinstance(receipt, dict) or receipt.get("sha256") != digest:
            left_out.append(f"{entry.name}: the notebook's SHA-256 is not the receipt's: left out")
            continue
        when = parse_time(receipt["handed_in_at"])
        if policy is not None:
            lateness = policy.lateness(when)
            late_by = describe_delta(lateness.late_by) if lateness.late else ""
        else:
            seconds = int(receipt.get("late_by_seconds") or 0)
            late_by = describe_delta(timedelta(seconds=seconds)) if seconds > 0 else ""
        write_output(out / f"{student}.ipynb", raw)
        taken.add(student)
        rows.append({"student": student, "handed_in_at": when.isoformat(), "sha256": digest, "late_by": late_by})
    write_output(out / "manifest.csv", csv_text(["student", "handed_in_at", "sha256", "late_by"],
                                                [list(r.values()) for r in rows]))
    return rows, left_out
