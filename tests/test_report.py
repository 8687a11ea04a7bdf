"""The class report, the students' HTML feedback and the LMS exports of `coursekit grade`.

The unit tests feed hostile text (markup, scripts, formula cells) through the report and the feedback page. The
slow test grades a small real class (the lab's solution with typical mistakes, tests/test_lab_mistakes.py) with a
late policy, hand-in times and a roster, then opens report.html and a feedback page in Chromium offline: every
request other than the page itself is refused and counted, and a screenshot of the report goes to
test-artifacts/class-report.png (docs/class-report.png is a copy of one).
"""
import csv
import json
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from coursekit.grading.report import class_report, failure_table, mistake_pattern
from coursekit.grading.results import StudentResult, self_check_hints
from coursekit.grading.similarity import Pair

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
EVIL = '<script>alert("x")</script><img src=http://evil.example/x.png>'


SAFE_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "b", "br", "code", "pre", "table",
             "tr", "th", "td", "a", "ul", "li", "figure", "section", "span"}


class _Tags(HTMLParser):
    def __init__(self, html):
        super().__init__()
        self.tags, self.refs, self.in_svg = set(), [], 0
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.in_svg += tag == "svg"
        if not self.in_svg:
            self.tags.add(tag)
        self.refs += [v for k, v in attrs if k in ("src", "href", "xlink:href") and v and not v.startswith("#")]

    def handle_endtag(self, tag):
        self.in_svg -= tag == "svg"


def _tags(html):
    return _Tags(html).tags


def _external_references(html):
    return _Tags(html).refs


def _rec(student, q1, failed_message="relu(x) is wrong: expected 0.5, got 0"):
    return {"student": student, "file": f"{student}.ipynb", "grade": {
        "status": "ok", "cell_errors": [f"ValueError: {EVIL}"], "notes": [EVIL], "feedback": "MLP lab\n",
        "questions": [{"name": "q1", "title": "Activations", "points": q1, "max_points": 4,
                       "passed": ["relu (4/4)"] if q1 else [],
                       "failed": [] if q1 else [f"relu (0/4): {failed_message}"]}]}}


def test_mistakes_are_grouped_with_numbers_masked():
    assert mistake_pattern("expected 0.5, got -1e-07 at index (2, 3)") == "expected #, got # at index (#, #)"
    results = [StudentResult.from_record(_rec("a", 0, "expected 0.5, got 0")),
               StudentResult.from_record(_rec("b", 0, "expected 0.7, got 0")),
               StudentResult.from_record(_rec("c", 4))]
    (row,) = failure_table(results)
    assert (row["test"], row["failed"], row["of"], row["messages"]) == ("relu", 2, 3, [("expected #, got #", 2)])


def test_the_report_escapes_what_students_wrote():
    code = "def relu(x):\n    s = '" + EVIL + "'\n    return x"
    results = [StudentResult.from_record(_rec(EVIL, 0, EVIL), code_cells=[code]),
               StudentResult.from_record(_rec("=cmd|' /C calc'!A0", 4))]
    html = class_report(results, [("q1", 4)], flagged={EVIL: [{"line": 1, "code": EVIL, "reason": "x"}]},
                        pairs=[Pair(EVIL, "b", 0.9, 0.9, 100)], seconds={EVIL: 3.0}, left_out=[EVIL])
    assert "<script>alert" not in html and "<img src=http" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert _external_references(html) == [] and _tags(html) <= SAFE_TAGS       # nothing loaded, nothing run
    assert html.count("<svg") == 2                                      # the two plots, inline
    page = results[0].feedback_html()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "s = &#39;&lt;script&gt;alert" in page.split('<pre class="code">')[1]   # the function's code, escaped


def test_feedback_quotes_the_failing_function_and_the_self_check():
    cells = ["import torch", "def relu(x):\n    return x", "def sigmoid(x):\n    return 1 / (1 + torch.exp(-x))"]
    template = ['def test_q1_relu():\n    """relu keeps positive values and zeroes the others"""\n    pass\n',
                'def helper():\n    """not a test"""\n']
    r = StudentResult.from_record(_rec("ada", 0), code_cells=cells, hints=self_check_hints(template))
    (q,) = r.questions
    assert list(q.code) == ["relu"] and q.hints == ["relu keeps positive values and zeroes the others"]
    page = r.feedback_html()
    for words in ("def relu(x):\n    return x", "expected:</b> <code>0.5</code>", "got:</b> <code>0</code>",
                  'check("q1")', "relu keeps positive values"):
        assert words in page, words
    assert "def sigmoid" not in page                                    # only what failed
    (test,) = r.results_json()["tests"]
    assert test["name"] == "q1 Activations: relu" and test["max_score"] == 4
    assert "expected: 0.5\ngot: 0" in test["output"] and "your relu:\ndef relu(x)" in test["output"]


# ------------------------------------------------------------------------------------ a real class, in Chromium

CLASS = {"correct": "2026-12-11T21:00:00+00:00", "torch_relu": "2026-12-11T21:30:00+00:00",
         "rms_as_tensors": "2026-12-12T09:00:00+00:00",          # late: 11 h -> 1 day, 10 %
         "relu_grad_at_zero": "2026-12-11T22:10:00+00:00",         # within the 15 minutes of grace
         "random_biases": "2026-12-11T20:00:00+00:00"}
TERM = ("[lab]\ndeadline = 2026-12-11T23:00:00+01:00\ngrace_minutes = 15\npenalty_percent_per_day = 10\n"
        "max_penalty_percent = 50\n")


@pytest.fixture(scope="module")
def real_class(tmp_path_factory):
    from grading_helpers import require_bwrap
    from test_lab_mistakes import mistake_notebook

    from coursekit.cli import main
    require_bwrap()
    root = tmp_path_factory.mktemp("term")
    subs = root / "subs"
    subs.mkdir()
    for name in CLASS:
        nbformat.write(mistake_notebook(name), subs / f"{name}.ipynb")
    nb = mistake_notebook("correct")                  # a hostile name, not on the roster
    nbformat.write(nb, subs / "=1+1 <i>x.ipynb")
    with open(subs / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["student", "handed_in_at", "sha256", "late_by"])
        w.writerows([name, when, "", ""] for name, when in CLASS.items())
    (root / "term.toml").write_text(TERM)
    roster = ["student,name,canvas_id,sis_user_id,sis_login_id,section,email"]
    roster += [f"{n},Student {n},{1000 + i},S{i},{n}@uni.example,MLP-1,{n}@uni.example" for i, n in enumerate(CLASS)]
    roster.append("absent,Absent Student,1999,S99,absent@uni.example,MLP-1,absent@uni.example")
    (root / "roster.csv").write_text("\n".join(roster) + "\n")
    out = root / "out"
    rc = main(["grade", str(subs), "--out", str(out), "--term", str(root / "term.toml"), "--roster",
               str(root / "roster.csv"), "--workers", "2", "--no-progress"])
    assert rc == 0
    return out


def _gradebook(out):
    with open(out / "gradebook.csv", newline="") as fh:
        return {row["student"]: row for row in csv.DictReader(fh)}


@pytest.mark.slow
def test_the_late_hand_in_is_penalised_in_the_gradebook_and_feedback(real_class):
    rows = _gradebook(real_class)
    late = rows["rms_as_tensors"]
    assert (late["total"], late["late_penalty"], late["final_total"]) == ("96", "10", "86")
    assert late["handed_in_at"] == "2026-12-12T09:00:00+00:00" and late["late_by"] == "11 h"
    grace = rows["relu_grad_at_zero"]
    assert grace["late_penalty"] == "0" and grace["final_total"] == grace["total"] == "98"
    assert rows["correct"]["final_total"] == "100"
    text = (real_class / "feedback" / "rms_as_tensors.txt").read_text()
    assert "11 h after the deadline, 1 day late, so 10 % of the maximum points are taken off: 96 - 10 = 86" in text


@pytest.mark.slow
def test_html_feedback_shows_expected_got_code_and_hint(real_class):
    page = (real_class / "feedback" / "rms_as_tensors.html").read_text()
    assert "def hidden_rms(" in page and "values.append(H.square().mean().sqrt())" in page
    assert 'check("q3")' in page
    results = json.loads((real_class / "gradescope" / "rms_as_tensors" / "results.json").read_text())
    q3 = [t for t in results["tests"] if t["name"].startswith("q3")]
    lost = [t for t in q3 if t["score"] == 0]
    assert len(lost) == 1 and "hidden_rms" in lost[0]["name"] and "your hidden_rms:" in lost[0]["output"], lost
    assert all(t["score"] == t["max_score"] for t in q3 if t is not lost[0])
    assert sum(t["score"] for t in results["tests"]) == results["score"] == 96


@pytest.mark.slow
def test_lms_exports_list_the_missing_and_the_unknown(real_class):
    canvas = list(csv.reader((real_class / "canvas.csv").open()))
    scores = {row[0]: row[5] for row in canvas[2:]}
    assert scores["Student rms_as_tensors"] == "86" and scores["Absent Student"] == "0"
    assert len(canvas) == 2 + len(CLASS) + 1
    summary = (real_class / "summary.txt").read_text()
    assert "no hand-in (1, exported as 0, status missing): absent" in summary
    assert "not on the roster (1, graded but NOT exported): '=1+1__b_x__b_" in summary or \
        "not on the roster (1, graded but NOT exported)" in summary
    assert "rms_as_tensors: 11 h, -10 points" in summary


@pytest.mark.slow
def test_report_in_chromium_offline(real_class, playwright):
    from browser_support import launch_chromium
    report = (real_class / "report.html").read_text()
    assert "<i>x" not in report
    browser = launch_chromium(playwright)
    try:
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        outside = []
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file://")
                   else (outside.append(route.request.url), route.abort()))
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto((real_class / "report.html").as_uri())
        failures = page.locator("#failures tr")
        assert failures.count() > 10                          # a row per hidden test (header included)
        rows = failures.all_inner_texts()
        assert "1 of 6" in rows[1], rows[1]                   # each mistake is one student's: 1 of 6 at most
        assert any(r.startswith("q3") and "1 of 6" in r and "hidden_rms" in r for r in rows), rows
        assert page.locator("#totals-plot svg").bounding_box()["width"] > 300
        assert page.locator("#late tr").count() == 2 and "rms_as_tensors" in page.locator("#late").inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "class-report.png"), full_page=True)
        page.goto((real_class / "feedback" / "rms_as_tensors.html").as_uri())
        assert "86 / 100" in page.locator("h1").inner_text()
        assert "values.append(H.square().mean().sqrt())" in page.locator("#q3 pre").inner_text()
        page.screenshot(path=str(ARTIFACTS / "feedback-page.png"), full_page=True)
        assert outside == [] and errors == []
    finally:
        browser.close()
    assert (ARTIFACTS / "class-report.png").stat().st_size > 20_000
