"""Gradescope: results.json format, the autograder bundle, and run_autograder in a local /autograder copy."""
import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import coursekit
from coursekit.grading.gradescope import build_bundle, results_json, validate_results
from grading_helpers import require_bwrap

REPO = Path(coursekit.__file__).resolve().parent.parent

GRADE = {"student": "ada", "total": 7, "max_total": 10, "status": "timeout",
         "questions": [{"name": "q1", "title": "Activation functions", "points": 7, "max_points": 7,
                        "passed": ["relu (7/7)"], "failed": []},
                       {"name": "q2", "title": "Derivatives", "points": 0, "max_points": 3,
                        "passed": [], "failed": ["relu_grad (0/3): wrong values"]}],
         "cell_errors": ["cell 4: stopped after 60 s (time limit of a cell)"], "notes": ["cell 1: %pip left out"],
         "feedback": "..."}


def test_results_json_follows_gradescope_format(monkeypatch):
    monkeypatch.delenv("COURSEKIT_GRADESCOPE_VISIBILITY", raising=False)
    res = results_json(GRADE)
    validate_results(res)
    assert res["score"] == 7.0
    assert res["tests"] == [
        {"name": "q1 Activation functions", "score": 7.0, "max_score": 7.0, "output": "passed  relu (7/7)",
         "visibility": "after_published"},
        {"name": "q2 Derivatives", "score": 0.0, "max_score": 3.0,
         "output": "FAILED  relu_grad (0/3): wrong values", "visibility": "after_published"}]
    assert "status: timeout" in res["output"] and "cell 4: stopped" in res["output"]
    assert results_json(GRADE, visibility="visible")["tests"][0]["visibility"] == "visible"
    with pytest.raises(ValueError, match="visibility"):
        results_json(GRADE, visibility="sometimes")


def test_hidden_tests_are_shown_after_publication_unless_the_bundle_says_otherwise(tmp_path, monkeypatch):
    from coursekit.grading import gradescope
    monkeypatch.delenv(gradescope.VISIBILITY_ENV, raising=False)
    assert gradescope.visibility_setting() == gradescope.DEFAULT_VISIBILITY == "after_published"
    monkeypatch.setenv(gradescope.VISIBILITY_ENV, "hidden")
    assert {t["visibility"] for t in results_json(GRADE)["tests"]} == {"hidden"}
    monkeypatch.setenv(gradescope.VISIBILITY_ENV, "sometimes")
    with pytest.raises(ValueError, match="COURSEKIT_GRADESCOPE_VISIBILITY must be one of"):
        results_json(GRADE)
    monkeypatch.delenv(gradescope.VISIBILITY_ENV)
    zipped = build_bundle(tmp_path / "visible.zip", visibility="visible")
    with zipfile.ZipFile(zipped) as zf:
        script = zf.read("run_autograder").decode()
    assert 'COURSEKIT_GRADESCOPE_VISIBILITY="${COURSEKIT_GRADESCOPE_VISIBILITY:-visible}"' in script
    with pytest.raises(ValueError, match="visibility must be one of"):
        build_bundle(tmp_path / "bad.zip", visibility="sometimes")


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(score="7"), "score must be a number"),
    (lambda r: r.update(score=9.0), "not the sum"),
    (lambda r: r["tests"][0].pop("max_score"), "max_score"),
    (lambda r: r["tests"][1].update(score=5.0), "outside"),
    (lambda r: r["tests"][0].update(visibility="maybe"), "visibility"),
    (lambda r: r.update(tests={}), "must be a list"),
])
def test_validate_results_rejects_what_gradescope_would(change, message):
    res = results_json(GRADE, visibility="visible")
    change(res)
    with pytest.raises(ValueError, match=message):
        validate_results(res)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_bundle(tmp_path_factory.mktemp("bundle") / "autograder.zip")


def test_bundle_holds_scripts_requirements_package_and_hidden_tests_only(bundle):
    with zipfile.ZipFile(bundle) as zf:
        names = set(zf.namelist())
        modes = {i.filename: (i.external_attr >> 16) for i in zf.infolist()}
        assert {"setup.sh", "run_autograder", "requirements.txt", "pyproject.toml", "coursekit/__init__.py",
                "coursekit/grading/warm_server.py", "autograder/spec.json", "autograder/hidden_tests.py"} <= names
        assert modes["run_autograder"] & stat.S_IXUSR and modes["setup.sh"] & stat.S_IXUSR
        assert zf.read("requirements.txt") == (REPO / "requirements.txt").read_bytes()
        assert not any(n.startswith(("lab/", "tests/", ".venv")) or "__pycache__" in n for n in names)
        assert not any("solution" in n for n in names)
    for script in ("setup.sh", "run_autograder"):
        with zipfile.ZipFile(bundle) as zf:
            text = zf.read(script).decode()
        check = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True)
        assert check.returncode == 0, check.stderr


def test_bundle_without_hidden_tests_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="coursekit assign"):
        build_bundle(tmp_path / "a.zip", autograder_dir=tmp_path / "missing")


def _autograder_root(tmp_path, bundle, notebook_name, notebook_bytes):
    root = tmp_path / "autograder"
    (root / "source").mkdir(parents=True)
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(root / "source")
    # Gradescope copies run_autograder to /autograder and runs it from there
    shutil.copy(root / "source" / "run_autograder", root / "run_autograder")
    (root / "run_autograder").chmod(0o755)
    (root / "submission").mkdir()
    (root / "submission" / notebook_name).write_bytes(notebook_bytes)
    return root


def _run(root):
    env = dict(os.environ, COURSEKIT_AUTOGRADER_ROOT=str(root), COURSEKIT_PYTHON=sys.executable)
    return subprocess.run([str(root / "run_autograder")], env=env, capture_output=True, text=True, timeout=400)


@pytest.mark.slow
def test_run_autograder_in_a_local_autograder_layout(tmp_path, bundle):
    require_bwrap()
    root = _autograder_root(tmp_path, bundle, "my_lab_final.ipynb",
                            (REPO / "lab" / "source" / "mlp_lab_solution.ipynb").read_bytes())
    done = _run(root)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    res = json.loads((root / "results" / "results.json").read_text())
    validate_results(res)
    assert res["score"] == 100.0
    questions = json.loads((REPO / "lab" / "autograder" / "spec.json").read_text())["questions"]
    # one entry per hidden test ("q1 Activation functions: relu"), from coursekit.grading.results
    assert [(t["name"].split()[0], t["name"].rsplit(": ", 1)[1]) for t in res["tests"]] == \
        [(q["name"], test) for q in questions for test, _ in q["tests"]]
    assert all(t["score"] == t["max_score"] for t in res["tests"])


def test_run_autograder_on_a_corrupt_notebook_writes_a_zero(tmp_path, bundle):
    root = _autograder_root(tmp_path, bundle, "lab.ipynb", b'{"cells": [')
    done = _run(root)
    assert done.returncode == 0, done.stderr[-3000:]
    res = json.loads((root / "results" / "results.json").read_text())
    validate_results(res)
    assert res["score"] == 0.0 and "invalid-notebook" in res["output"]
    # hidden tests and results are the grader's alone, even without bubblewrap
    assert stat.S_IMODE((root / "source" / "autograder").stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "results").stat().st_mode) == 0o700
    assert "not valid notebook JSON" in res["output"]
