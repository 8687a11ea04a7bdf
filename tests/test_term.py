"""The term's deadline and late policy (coursekit.grading.term), and how the penalty reaches the student's result."""
from datetime import datetime, timedelta, timezone

import pytest

from coursekit.grading.results import StudentResult, parse_test_line
from coursekit.grading.term import LatePolicy, TermError, describe_delta, hand_in_times, load_term, parse_time

CET = timezone(timedelta(hours=1))
DEADLINE = datetime(2026, 12, 11, 23, 59, tzinfo=CET)
POLICY = LatePolicy(DEADLINE, timedelta(minutes=15), 10, 30)


def test_on_time_within_grace_and_late_by_started_days():
    assert POLICY.lateness(DEADLINE - timedelta(hours=1)).percent == 0
    at_grace = POLICY.lateness(DEADLINE + timedelta(minutes=15))
    assert not at_grace.late and at_grace.percent == 0
    after_grace = POLICY.lateness(DEADLINE + timedelta(minutes=16))      # late counted from the deadline
    assert after_grace.late and after_grace.days == 1 and after_grace.late_by == timedelta(minutes=16)
    assert after_grace.percent == 10
    assert POLICY.lateness(DEADLINE + timedelta(days=1)).days == 1
    assert POLICY.lateness(DEADLINE + timedelta(days=1, seconds=1)).percent == 20    # part of a day: a day
    assert POLICY.lateness(DEADLINE + timedelta(days=9)).percent == 30                # capped


def test_time_zones_compare_as_instants():
    same_instant = datetime(2026, 12, 11, 22, 59, tzinfo=timezone.utc)    # = the deadline in CET
    assert not POLICY.lateness(same_instant + timedelta(minutes=10)).late
    assert POLICY.lateness(same_instant + timedelta(minutes=20)).late


def test_penalty_is_a_share_of_the_maximum_and_never_below_zero():
    late = POLICY.lateness(DEADLINE + timedelta(hours=30))       # 2 days: 20 %
    assert late.penalty_points(80, 100) == 20
    assert late.penalty_points(5, 100) == 5                       # final 0, not -15


def test_naive_times_are_refused():
    with pytest.raises(TermError, match="no time zone"):
        LatePolicy(datetime(2026, 12, 11, 23, 59))
    with pytest.raises(TermError, match="no time zone"):
        POLICY.lateness(datetime(2026, 12, 12))
    with pytest.raises(TermError, match="no time zone offset"):
        parse_time("2026-12-11T23:59:00")
    assert parse_time("2026-12-11T22:59:00Z") == DEADLINE


def test_term_file(tmp_path):
    path = tmp_path / "term.toml"
    path.write_text("[lab]\ndeadline = 2026-12-11T23:59:00+01:00\ngrace_minutes = 15\n"
                    "penalty_percent_per_day = 10\nmax_penalty_percent = 30\n")
    assert load_term(path) == POLICY
    for text, words in (("[lab]\ndeadline = 2026-12-11T23:59:00\n", "has no time zone"),
                        ("[lab]\ndeadline = 2026-12-11T23:59:00Z\npenalty_percent_per_day = 150\n", "between 0 and 100"),
                        ("[lab]\ndeadline = 2026-12-11T23:59:00Z\npenalty = 1\n", "unknown key(s) penalty"),
                        ("[lab]\ndeadline = 2026-12-11T23:59:00Z\ngrace_minutes = -5\n", "cannot be negative"),
                        ("[lab]\ndeadline = 2026-12-11T23:59:00Z\ngrace_minutes = 'x'\n", "must be a number"),
                        ("[lab]\ndeadline = 'tomorrow'\n", "not an ISO 8601 time"),
                        ("[other]\ndeadline = 2026-12-11T23:59:00Z\n", "no [lab] table"),
                        ("[lab\n", "not valid TOML")):
        path.write_text(text)
        with pytest.raises(TermError, match=words.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            load_term(path)
    with pytest.raises(TermError, match="cannot read"):
        load_term(tmp_path / "missing.toml")


def test_manifest_times(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text("student,handed_in_at,sha256,late_by\nada,2026-12-11T22:00:00+00:00,ab,\n")
    assert hand_in_times(path) == {"ada": datetime(2026, 12, 11, 22, tzinfo=timezone.utc)}
    path.write_text("student,handed_in_at\nada,2026-12-11 22:00\n")
    with pytest.raises(TermError, match="line 2: the time .* has no time zone offset"):
        hand_in_times(path)


def test_describe_delta():
    assert describe_delta(timedelta(minutes=16)) == "16 min"
    assert describe_delta(timedelta(days=1, hours=2, seconds=1)) == "1 d 2 h 1 min"


RECORD = {"student": "ada", "file": "ada.ipynb", "grade": {
    "status": "ok", "cell_errors": [], "notes": [], "feedback": "MLP lab: 9 / 12 points (ada)\n\nq1 ...\n",
    "questions": [{"name": "q1", "title": "Activation functions", "points": 8, "max_points": 12,
                   "passed": ["relu (4/4)", "tanh (4/4)"],
                   "failed": ["sigmoid (0/4): sigmoid(x) is wrong at 3 of 12 positions; first at index (2,) at "
                              "input -30: expected 9.36e-14, got nan (tolerance 1e-06 + 1e-05*|expected|)"]}]}}


def test_the_result_carries_the_penalty_into_every_rendering():
    late = POLICY.lateness(DEADLINE + timedelta(hours=25))          # 2 days: 20 % of 12 = 2.4
    r = StudentResult.from_record(RECORD, lateness=late, policy=POLICY)
    assert (r.total, r.penalty, r.final) == (8, 2.4, 8 - 2.4)
    row = r.gradebook_row(["q1"])
    assert row[:6] == ["ada", "8", "8", "2.4", "5.6", "12"] and row[7] == "1 d 1 h" and row[-2:] == ["ok", "ada.ipynb"]
    text = r.feedback_text()
    assert text.splitlines()[0] == "MLP lab: 9 / 12 points (ada)"
    assert "1 d 1 h after the deadline, 2 days late" in text and "8 - 2.4 = 5.6 / 12" in text
    assert "8 - 2.4 = 5.6 / 12" in r.feedback_html()
    res = r.results_json()
    assert res["score"] == 8 and "2 days late" in res["output"]
    on_time = StudentResult.from_record(RECORD, lateness=POLICY.lateness(DEADLINE), policy=POLICY)
    assert on_time.final == 8 and "on time" in on_time.feedback_text()
    no_time = StudentResult.from_record(RECORD, lateness=POLICY.lateness(None), policy=POLICY)
    assert no_time.final == 8 and "No hand-in time is recorded" in no_time.feedback_text()
    no_term = StudentResult.from_record(RECORD)
    assert no_term.feedback_text() == RECORD["grade"]["feedback"] and no_term.gradebook_row(["q1"])[6:8] == ["", ""]


def test_test_lines_are_parsed_back():
    t = parse_test_line(RECORD["grade"]["questions"][0]["failed"][0], False)
    assert (t.name, t.points, t.max_points, t.expected, t.got) == ("sigmoid", 0, 4, "9.36e-14", "nan")
    t = parse_test_line("relu_grad (0/3): relu_grad(x) has dtype torch.float32, expected torch.float64 (the input's "
                        "dtype)", False)
    assert (t.expected, t.got) == ("torch.float64", "torch.float32")
    t = parse_test_line("add: missing", False)      # a line without points: the question's points count
    assert (t.name, t.points, t.message) == ("add", None, "missing")
