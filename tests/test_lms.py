"""LMS exports (coursekit.grading.lms): Canvas's and Moodle's grade-import CSVs from a roster."""
import csv
import io
from datetime import datetime, timedelta, timezone

import pytest

from coursekit.grading.lms import RosterError, load_roster, write_exports
from coursekit.grading.results import StudentResult
from coursekit.grading.term import LatePolicy

POLICY = LatePolicy(datetime(2026, 12, 11, 22, tzinfo=timezone.utc), timedelta(0), 10, 50)


def _result(student, points, handed_in=None):
    rec = {"student": student, "grade": {"status": "ok", "feedback": "", "questions": [
        {"name": "q1", "title": "", "points": points, "max_points": 10, "passed": [], "failed": []}]}}
    return StudentResult.from_record(rec, policy=POLICY, lateness=POLICY.lateness(handed_in))


ROSTER = ("student,name,canvas_id,sis_user_id,sis_login_id,section,email\n"
          "ada,Ada Lovelace,1001,S1,ada@uni.example,MLP-1,ada@uni.example\n"
          "bo,=HYPERLINK(\"http://evil\"),1002,S2,bo@uni.example,MLP-1,bo@uni.example\n"
          "cy,Cy Young,1003,S3,cy@uni.example,MLP-2,\n")


def _csv(text):
    return list(csv.reader(io.StringIO(text)))


def test_exports_follow_the_roster(tmp_path):
    (tmp_path / "roster.csv").write_text("\ufeff" + ROSTER)        # as Excel saves CSV UTF-8
    roster = load_roster(tmp_path / "roster.csv")
    results = [_result("ada", 9), _result("bo", 10, POLICY.deadline + timedelta(hours=3)), _result("zed", 7)]
    written = {}
    lines = write_exports(roster, results, "MLP lab", lambda name, text: written.__setitem__(name, text))
    canvas = _csv(written["canvas.csv"])
    assert canvas[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "MLP lab"]
    assert canvas[1] == ["Points Possible", "", "", "", "", "10"]
    assert canvas[2] == ["Ada Lovelace", "1001", "S1", "ada@uni.example", "MLP-1", "9"]
    assert canvas[3][0] == "'=HYPERLINK(\"http://evil\")" and canvas[3][5] == "9"   # late: 10 - 10 % of 10
    assert canvas[4][0] == "Cy Young" and canvas[4][5] == "0"                       # missing: 0
    assert len(canvas) == 5                                                          # zed is not exported
    moodle = _csv(written["moodle.csv"])
    assert moodle[0] == ["Email address", "MLP lab", "Feedback"]
    assert moodle[1:] == [["ada@uni.example", "9", "graded: 9 / 10"], ["bo@uni.example", "9", "late: 9 / 10"],
                          ["", "0", "missing: 0 / 10"]]
    status = {row[0]: row[4] for row in _csv(written["roster_grades.csv"])[1:]}
    assert status == {"ada": "graded", "bo": "late", "cy": "missing"}
    text = "\n".join(lines)
    assert "no hand-in (1, exported as 0, status missing): cy" in text
    assert "not on the roster (1, graded but NOT exported): zed" in text
    assert "no email on the roster (Moodle cannot match them): cy" in text


def test_every_export_cell_is_formula_safe(tmp_path):
    (tmp_path / "r.csv").write_text("student,name,email\n@x,+1,-2@x\n")
    written = {}
    write_exports(load_roster(tmp_path / "r.csv"), [], "=A1", lambda n, t: written.__setitem__(n, t))
    for text in written.values():
        for row in _csv(text):
            assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row), row


def test_bad_rosters_are_refused_with_the_line(tmp_path):
    path = tmp_path / "r.csv"
    for text, words in (("name,email\nAda,a@x\n", "needs a 'student' column"),
                        ("student,name\nada,A\nada,B\n", "line 3: student 'ada' is already on line 2"),
                        ("student,name\n,A\n", "line 2: the student column is empty"),
                        ("student\n", "has no students")):
        path.write_text(text)
        with pytest.raises(RosterError, match=words):
            load_roster(path)
    path.write_bytes(b"student\n\xff\xfe\n")
    with pytest.raises(RosterError, match="not UTF-8"):
        load_roster(path)
    with pytest.raises(RosterError, match="cannot read"):
        load_roster(tmp_path / "nope.csv")
