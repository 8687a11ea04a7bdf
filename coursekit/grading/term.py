"""The term's deadline and late policy, in one place: a ``term.toml`` the instructor writes once.

::

    [lab]
    deadline = 2026-12-11T23:59:00+01:00    # TOML offset date-time: the offset is required
    grace_minutes = 15                       # hand-ins up to 15 minutes after the deadline are on time
    penalty_percent_per_day = 10             # per day late or part of one, of the lab's maximum points
    max_penalty_percent = 50                 # the penalty never exceeds this (and never takes a score below 0)

Lateness is counted from the deadline, not from the end of the grace period: a hand-in 20 minutes after the
deadline with 15 minutes of grace is late by 20 minutes, one (started) day, 10 %. The hand-in time comes from the
hand-in service's manifest (``coursekit.handin``), never from file times, which a student can set.
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

__all__ = ["LatePolicy", "Lateness", "TermError", "load_term", "parse_time"]

DAY = timedelta(days=1)


class TermError(ValueError):
    """The term file is missing, malformed or inconsistent: the message says what and where."""


@dataclass(frozen=True)
class Lateness:
    """How one hand-in stands against the policy: ``late_by`` is zero when on time (grace included)."""
    handed_in: datetime | None
    late_by: timedelta
    days: int                  # started days late (0 on time)
    percent: float             # penalty, percent of the maximum points (before capping at the raw score)

    @property
    def late(self) -> bool:
        return self.days > 0

    def penalty_points(self, raw: float, max_points: float) -> float:
        """The points taken off: ``percent`` of the maximum, never more than the raw score."""
        return min(raw, max_points * self.percent / 100.0)


@dataclass(frozen=True)
class LatePolicy:
    deadline: datetime
    grace: timedelta = timedelta(0)
    penalty_percent_per_day: float = 0.0
    max_penalty_percent: float = 100.0

    def __post_init__(self):
        if self.deadline.tzinfo is None or self.deadline.utcoffset() is None:
            raise TermError(f"the deadline {self.deadline.isoformat()} has no time zone: write it with its offset, "
                            "e.g. 2026-12-11T23:59:00+01:00 or 2026-12-11T22:59:00Z")
        if self.grace < timedelta(0):
            raise TermError("grace_minutes cannot be negative")
        if not 0 <= self.penalty_percent_per_day <= 100:
            raise TermError(f"penalty_percent_per_day must be between 0 and 100, got {self.penalty_percent_per_day}")
        if not 0 <= self.max_penalty_percent <= 100:
            raise TermError(f"max_penalty_percent must be between 0 and 100, got {self.max_penalty_percent}")

    def lateness(self, handed_in: datetime | None) -> Lateness:
        """Where ``handed_in`` (timezone-aware) stands; None (no recorded time): not late, no penalty."""
        if handed_in is None:
            return Lateness(None, timedelta(0), 0, 0.0)
        if handed_in.tzinfo is None or handed_in.utcoffset() is None:
            raise TermError(f"hand-in time {handed_in.isoformat()} has no time zone")
        late_by = handed_in - self.deadline
        if late_by <= self.grace or late_by <= timedelta(0):
            return Lateness(handed_in, timedelta(0), 0, 0.0)
        days = math.ceil(late_by / DAY)            # a part of a day counts as a day
        return Lateness(handed_in, late_by, days, min(self.max_penalty_percent, days * self.penalty_percent_per_day))

    def describe(self) -> str:
        text = f"deadline {self.deadline.isoformat()}"
        if self.grace:
            text += f" (with {_minutes(self.grace)} of grace)"
        if self.penalty_percent_per_day:
            text += (f"; late: {self.penalty_percent_per_day:g} % of the maximum points per day or part of a day, "
                     f"at most {self.max_penalty_percent:g} %")
        return text


def _minutes(delta: timedelta) -> str:
    minutes = delta.total_seconds() / 60
    return f"{minutes:g} minute" + ("" if minutes == 1 else "s")


def describe_delta(delta: timedelta) -> str:
    """'1 d 2 h 3 min' (seconds rounded up to the minute)."""
    minutes = math.ceil(delta.total_seconds() / 60)
    d, rest = divmod(minutes, 24 * 60)
    h, m = divmod(rest, 60)
    parts = [f"{d} d"] * bool(d) + [f"{h} h"] * bool(h) + [f"{m} min"] * bool(m or not (d or h))
    return " ".join(parts)


def parse_time(text: str) -> datetime:
    """An ISO 8601 time with its offset (``2026-12-11T23:59:00+01:00``, ``...Z``); a naive one is refused."""
    try:
        value = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        raise TermError(f"not an ISO 8601 time: {text!r}") from None
    if value.tzinfo is None:
        raise TermError(f"the time {text!r} has no time zone offset")
    return value


_KEYS = {"deadline", "grace_minutes", "penalty_percent_per_day", "max_penalty_percent"}


def load_term(path, assignment: str = "lab") -> LatePolicy:
    """The late policy of ``[assignment]`` in the TOML file at ``path``."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TermError(f"cannot read the term file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TermError(f"{path} is not valid TOML: {exc}") from None
    table = data.get(assignment)
    if not isinstance(table, dict):
        raise TermError(f"{path} has no [{assignment}] table (it has: {', '.join(sorted(data)) or 'nothing'})")
    unknown = set(table) - _KEYS
    if unknown:
        raise TermError(f"{path} [{assignment}]: unknown key(s) {', '.join(sorted(unknown))} "
                        f"(known: {', '.join(sorted(_KEYS))})")
    deadline = table.get("deadline")
    if isinstance(deadline, str):
        deadline = parse_time(deadline)
    if not isinstance(deadline, datetime):
        raise TermError(f"{path} [{assignment}]: deadline must be a date-time with its offset, "
                        "e.g. deadline = 2026-12-11T23:59:00+01:00")
    numbers = {}
    for key, default in (("grace_minutes", 0), ("penalty_percent_per_day", 0), ("max_penalty_percent", 100)):
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TermError(f"{path} [{assignment}]: {key} must be a number, got {value!r}")
        numbers[key] = float(value)
    try:
        return LatePolicy(deadline, timedelta(minutes=numbers["grace_minutes"]), numbers["penalty_percent_per_day"],
                          numbers["max_penalty_percent"])
    except TermError as exc:
        raise TermError(f"{path} [{assignment}]: {exc}") from None


MANIFEST_COLUMNS = ("student", "handed_in_at", "sha256", "late_by")


def hand_in_times(manifest_path) -> dict[str, datetime]:
    """``{student: hand-in time}`` from a hand-in manifest (``manifest.csv``: student, handed_in_at, ...)."""
    import csv
    path = Path(manifest_path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise TermError(f"cannot read the manifest {path}: {exc.strerror}") from None
    times = {}
    for i, row in enumerate(rows, start=2):
        student, when = (row.get("student") or "").strip(), (row.get("handed_in_at") or "").strip()
        if not student or not when:
            raise TermError(f"{path} line {i}: needs the columns student and handed_in_at")
        try:
            times[student] = parse_time(when)
        except TermError as exc:
            raise TermError(f"{path} line {i}: {exc}") from None
    return times
