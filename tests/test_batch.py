"""Class-wide grading: discovery, gradebook, feedback, Gradescope results, resuming, atomic writes."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import coursekit
from coursekit.grading.batch import grade_folder
from coursekit.grading.gradescope import validate_results
from coursekit.grading.sandbox import Limits
from coursekit.grading.submissions import find_submissions, lab_names, safe_name
from grading_helpers import GOOD_CELLS, TinySpec, make_notebook, require_bwrap

LIMITS = Limits(cell_timeout=5, submission_timeout=60, harvest_timeout=6)
REPO = Path(coursekit.__file__).resolve().parent.parent


def _class(root: Path) -> Path:
    subs = root / "subs"
    make_notebook(subs / "ada.ipynb", *GOOD_CELLS)                                   # 5/5
    make_notebook(subs / "bo.ipynb", GOOD_CELLS[0], GOOD_CELLS[1], "def mul(a, b):\n    return a - b")  # 2/5
    (subs / "cy.ipynb").write_text('{"cells": [')                                     # corrupt: 0
    make_notebook(subs / "dee" / "Untitled (3).ipynb", *GOOD_CELLS)                  # folder, any name: 5
    make_notebook(subs / "dee" / ".ipynb_checkpoints" / "x-checkpoint.ipynb", "raise SystemExit")
    make_notebook(subs / "eve" / "lab.txt", *GOOD_CELLS)                              # renamed: 5
    (subs / "fay").mkdir()                                                           # no notebook: 0
    (subs / "README.txt").write_text("not a submission")
    return subs


EXPECTED = {"ada": (2, 3, 5, "ok"), "bo": (2, 0, 2, "ok"), "cy": (0, 0, 0, "invalid-notebook"),
            "dee": (2, 3, 5, "ok"), "eve": (2, 3, 5, "ok"), "fay": (0, 0, 0, "no-notebook")}


def _rows(out: Path):
    with open(out / "gradebook.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_discovery_finds_files_folders_and_renamed_notebooks(tmp_path):
    subs = _class(tmp_path)
    found, ignored = find_submissions(subs, lab_names(TinySpec()))
    assert [s.student for s in found] == ["ada", "bo", "cy", "dee", "eve", "fay"]
    by = {s.student: s for s in found}
    assert by["dee"].path.name == "Untitled (3).ipynb"       # not the checkpoint, which defines nothing
    assert by["eve"].path.name == "lab.txt" and "another name" in by["eve"].notes[0]
    assert by["fay"].path is None and by["fay"].status == "no-notebook"
    assert ignored == ["README.txt: not a notebook"]
    with pytest.raises(NotADirectoryError, match="not found"):
        find_submissions(tmp_path / "nope")


def test_safe_names_and_duplicates(tmp_path):
    make_notebook(tmp_path / "s" / "a b.ipynb", "x = 1")
    make_notebook(tmp_path / "s" / "a_b" / "n.ipynb", "x = 1")
    found, _ = find_submissions(tmp_path / "s")
    assert sorted(s.student for s in found) == ["a_b", "a_b-2"]
    assert safe_name("../../etc/passwd") == "etc_passwd"


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    require_bwrap()
    root = tmp_path_factory.mktemp("batch")
    subs = _class(root)
    out = root / "out"
    summary = grade_folder(subs, out, spec=TinySpec(), limits=LIMITS, workers=2, progress=False, log=lambda *a: None)
    return subs, out, summary


@pytest.mark.slow
def test_gradebook_has_one_exact_row_per_student(graded):
    _, out, summary = graded
    rows = _rows(out)
    assert [r["student"] for r in rows] == sorted(EXPECTED)
    for r in rows:
        add, mul, total, status = EXPECTED[r["student"]]
        assert (float(r["add"]), float(r["mul"]), float(r["total"]), r["status"]) == (add, mul, total, status)
        assert float(r["max_total"]) == 5
    assert summary.graded == 6 and summary.skipped == 0 and summary.failed == 0
    assert summary.statuses == {"ok": 4, "invalid-notebook": 1, "no-notebook": 1}


@pytest.mark.slow
def test_feedback_says_per_question_what_passed_and_failed(graded):
    _, out, _ = graded
    text = (out / "feedback" / "bo.txt").read_text()
    assert "2 / 5" in text
    assert "add Addition: 2 / 2" in text and "mul Multiplication: 0 / 3" in text
    assert "passed  add matches the reference" in text and "FAILED  mul: wrong values" in text
    assert "not valid notebook JSON" in (out / "feedback" / "cy.txt").read_text()
    assert "another name" in (out / "feedback" / "eve.txt").read_text()


@pytest.mark.slow
def test_gradescope_results_are_valid_and_match_the_gradebook(graded):
    _, out, _ = graded
    for student, (add, mul, total, status) in EXPECTED.items():
        res = json.loads((out / "gradescope" / student / "results.json").read_text())
        validate_results(res)
        assert res["score"] == total
        assert [(t["name"], t["score"], t["max_score"]) for t in res["tests"]] == \
            [("add Addition", add, 2), ("mul Multiplication", mul, 3)]
        assert all(t["visibility"] == "after_published" for t in res["tests"])     # gradescope.DEFAULT_VISIBILITY


@pytest.mark.slow
def test_summary_is_written(graded):
    _, out, summary = graded
    text = (out / "summary.txt").read_text()
    assert text.startswith("6 submissions: 6 graded now, 0 already graded")
    assert "submissions per minute" in text and summary.per_minute > 0
    from coursekit.grading.sandbox import describe_isolation, isolation_mode
    assert text.splitlines()[1] == f"isolation: {describe_isolation()}"      # the mode the jobs ran in, named
    assert text.splitlines()[1].startswith(f"isolation: {isolation_mode()}: ")


@pytest.mark.slow
def test_rerun_grades_only_what_is_missing_or_changed(graded, tmp_path):
    subs, out, _ = graded
    work = tmp_path / "out"
    subprocess.run(["cp", "-a", str(out), str(work)], check=True)
    def records():  # name -> ((inode, mtime), content); every record is written atomically (a new inode)
        return {p.name: ((p.stat().st_ino, p.stat().st_mtime_ns), p.read_bytes())
                for p in (work / "records").iterdir()}

    before = records()
    (work / "records" / "bo.json").unlink()
    s = grade_folder(subs, work, spec=TinySpec(), limits=LIMITS, progress=False, log=lambda *a: None)
    assert (s.graded, s.skipped) == (1, 5)
    after = records()
    assert after.keys() == before.keys()                                            # bo.json written again
    # The others untouched. (Not checked on bo.json: a new file may well reuse the deleted one's inode.)
    assert all(after[name] == before[name] for name in before if name != "bo.json")
    # grading is deterministic: the same grade again
    assert json.loads(after["bo.json"][1])["grade"] == json.loads(before["bo.json"][1])["grade"]
    assert [r["student"] for r in _rows(work)] == sorted(EXPECTED)
    # a resubmission (the file changed) is graded again
    make_notebook(subs / "bo.ipynb", *GOOD_CELLS)
    try:
        s = grade_folder(subs, work, spec=TinySpec(), limits=LIMITS, progress=False, log=lambda *a: None)
        assert (s.graded, s.skipped) == (1, 5)
        assert {r["student"]: r["total"] for r in _rows(work)}["bo"] == "5"
    finally:
        make_notebook(subs / "bo.ipynb", GOOD_CELLS[0], GOOD_CELLS[1], "def mul(a, b):\n    return a - b")


class _Interrupting(TinySpec):
    """Stops the batch like Ctrl-C on the third submission it scores."""

    def __init__(self):
        self.calls = 0

    def score(self, inputs, result):
        self.calls += 1
        if self.calls == 3:
            raise KeyboardInterrupt
        return super().score(inputs, result)


class _Failing(TinySpec):
    def score(self, inputs, result):
        if result.outputs.get("mul") is not None and (result.outputs["mul"] != 0).any() and \
                abs(result.outputs["mul"] - inputs["a"] * inputs["b"]).max() > 0.1:
            raise RuntimeError("a bug in a hidden test")
        return super().score(inputs, result)


@pytest.mark.slow
def test_an_interrupted_batch_resumes_without_losing_or_repeating(graded, tmp_path):
    require_bwrap()
    subs, ref_out, _ = graded
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        grade_folder(subs, out, spec=_Interrupting(), limits=LIMITS, workers=1, progress=False,
                     log=lambda *a: None)
    done = sorted(p.stem for p in (out / "records").glob("*.json"))
    assert 1 <= len(done) < 6
    assert [r["student"] for r in _rows(out)] == done
    assert not list(out.rglob("*.tmp"))
    s = grade_folder(subs, out, spec=TinySpec(), limits=LIMITS, progress=False, log=lambda *a: None)
    assert s.skipped == len(done) and s.graded == 6 - len(done)
    assert _rows(out) == [dict(r, file=r["file"]) for r in _rows(ref_out)]


@pytest.mark.slow
def test_a_grader_error_on_one_submission_does_not_stop_the_batch(graded, tmp_path):
    subs, _, _ = graded
    out = tmp_path / "out"
    logs = []
    s = grade_folder(subs, out, spec=_Failing(), limits=LIMITS, progress=False, log=logs.append)
    assert s.failed == 1 and s.graded == 5
    assert any("grader error on bo" in line for line in logs)
    assert not (out / "records" / "bo.json").exists()
    s = grade_folder(subs, out, spec=TinySpec(), limits=LIMITS, progress=False, log=lambda *a: None)
    assert (s.graded, s.skipped, s.failed) == (1, 5, 0)


@pytest.mark.slow
def test_cli_killed_halfway_and_rerun_loses_and_repeats_nothing(tmp_path):
    """The real command on the real lab, run from a folder that is not the repository (its hidden tests found
    all the same), SIGKILLed after its first grade, then run again."""
    require_bwrap()
    subs = tmp_path / "subs"
    subs.mkdir()
    for i in range(5):
        (subs / f"s{i}.ipynb").write_bytes((REPO / "lab" / "mlp_lab.ipynb").read_bytes())
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "coursekit.cli", "grade", "subs", "--out", "out", "--workers", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            cwd=tmp_path)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not list((out / "records").glob("*.json")):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = {p.name: p.read_bytes() for p in (out / "records").glob("*.json")}
    assert 1 <= len(first) < 5
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{len(first)} already graded" in done.stdout
    rows = _rows(out)
    assert [r["student"] for r in rows] == [f"s{i}" for i in range(5)]
    assert all(r["total"] == "0" and r["status"] == "ok" for r in rows)
    assert all((out / "records" / name).read_bytes() == data for name, data in first.items())
    assert not list(out.rglob("*.tmp"))


def test_cli_says_what_is_wrong_and_builds_a_bundle(tmp_path, capsys):
    from coursekit.cli import main
    assert main(["grade", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "subs").mkdir()
    assert main(["grade", str(tmp_path / "subs"), "--out", str(tmp_path / "out"),
                 "--autograder-dir", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="cell_timeout"):
        main(["grade", str(tmp_path / "subs"), "--out", str(tmp_path / "out"), "--cell-timeout", "0"])
    assert main(["gradescope-bundle", "--out", str(tmp_path / "ag.zip")]) == 0
    assert (tmp_path / "ag.zip").is_file() and "upload it" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["assign", "--help"])
    assert exc.value.code == 0 and "--source" in capsys.readouterr().out
