"""The student edition (`coursekit release`): one reproducible commit, the student side complete, and no
instructor-only content in it, proven by content: no line of a solution, a hidden test or a file under
instructor/ occurs anywhere in it (notebook JSON and outputs included).

The slow tests build a virtual environment from the release alone (its own requirements, its own Makefile),
run every lecture under nbval and the lab's self-checks in it, and grade a notebook completed from the release
with the instructor's `coursekit grade`.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import nbformat
import pytest
from d2l import torch as d2l

from conftest import REPO, skip_or_fail
from coursekit import release
from coursekit.grading.assign import BEGIN, END, HIDDEN_TAG, read_source

MIN_LINE = 20   # shorter lines ("return x", "import torch") are not secrets
SOURCE = REPO / "lab" / "source" / "mlp_lab_solution.ipynb"
HIDDEN = REPO / "lab" / "autograder" / "hidden_tests.py"
INSTRUCTOR = REPO / "instructor"


# ------------------------------------------------------------------------------------------ the secrets
def _tags(cell) -> list:
    return list(cell.get("metadata", {}).get("tags", []))


def _forms(line: str) -> set[str]:
    """A line as a corpus knows it: stripped, and also without a trailing comment (``x = f()  # why``)."""
    return {line.strip(), line.split("#")[0].strip()}


def commonplace_lines() -> set[str]:
    """Lines of the code the course builds on and students read anyway: the d2l library and Python's standard
    library (``optimizer.zero_grad()``, ``except Exception as exc:``). No secret can be one of them."""
    roots = [Path(d2l.__file__).parent, Path(sysconfig.get_paths()["stdlib"])]
    lines = set()
    for root in roots:
        for path in root.rglob("*.py"):
            if not {"test", "tests", "site-packages", "dist-packages", "idlelib"} & set(path.relative_to(root).parts):
                for line in path.read_text(encoding="utf-8", errors="replace").split("\n"):
                    lines |= _forms(line)
    return lines


def lecture_code_lines() -> dict[str, str]:
    """{line: the lecture notebook} for every line of the lectures' code cells, in each of its ``_forms``
    (tests/test_lab_transcription.py checks the lab's solutions against these)."""
    lines = {}
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                for line in cell.source.split("\n"):
                    for form in _forms(line):
                        lines.setdefault(form, path.name)
    return lines


def solution_lines(nb) -> dict[str, str]:
    """{stripped line: "solution in cell <id>"} for every line between the solution markers of the lab source."""
    found = {}
    for cell in nb.cells:
        if cell.cell_type == "code" and HIDDEN_TAG not in _tags(cell):
            inside = False
            for line in cell.source.split("\n"):
                if BEGIN.match(line) or END.match(line):
                    inside = BEGIN.match(line) is not None
                elif inside:
                    found[line.strip()] = f"solution in cell {cell.id}"
    return found


def taught_lines() -> set[str]:
    """Lines the course shows students in the open: the lectures' code cells (LAYOUT.md: nothing instructor-only
    sits in notebooks/) and the modules of coursekit that the student side imports (the package's own code and
    documented examples). Outputs are not counted: an output is where a leak would show."""
    lines = set(lecture_code_lines())
    roots = [code for path in sorted((REPO / "notebooks").glob("*.ipynb")) + [REPO / "lab" / "mlp_lab.ipynb"]
             for code in release.notebook_code(path)]
    for module in release.student_modules(roots):
        path = release._module_file(REPO, module)
        for line in path.read_text(encoding="utf-8").split("\n"):
            lines |= _forms(line)
    return lines


def secret_lines() -> tuple[dict[str, str], dict[str, str]]:
    """({stripped line: where it comes from}, {line taught in a lecture: where}) for every line of at least
    MIN_LINE characters that students must never see: solution lines (between the markers), hidden tests (the
    tagged cells and the generated file) and every file under instructor/.

    Not secret: a line that the lab source shows students outside those regions (a public test's
    ``with torch.no_grad():``), and a line of d2l or Python's standard library. A line that a lecture's code also
    shows (lecture 05 builds d2l's MLPScratch, which lab question 4 asks for) is returned apart: the lecture
    teaches it in the open, so it is allowed there, and the test prints it; so is a line of coursekit's own code
    or docstrings that a hidden test repeats, like ``data = coursekit.FashionMNIST(batch_size=256)``."""
    nb = read_source(SOURCE)
    secret, public = {}, set()
    for cell in nb.cells:
        lines = cell.source.split("\n")
        if cell.cell_type != "code":
            public.update(line.strip() for line in lines)
        elif HIDDEN_TAG in _tags(cell):
            secret.update((line.strip(), f"hidden-test cell {cell.id}") for line in lines)
        else:
            inside = False
            for line in lines:
                if BEGIN.match(line) or END.match(line):
                    inside = BEGIN.match(line) is not None
                elif not inside:
                    public.add(line.strip())
    secret.update(solution_lines(nb))
    for line in HIDDEN.read_text(encoding="utf-8").split("\n"):
        secret.setdefault(line.strip(), "lab/autograder/hidden_tests.py")
    if INSTRUCTOR.is_dir():
        for path in sorted(p for p in INSTRUCTOR.rglob("*") if p.is_file()):
            for line in path.read_text(encoding="utf-8", errors="replace").split("\n"):
                stripped = line.strip()
                # Headings and quotes restate the exercise the notebook asks: not the answer.
                if not stripped.startswith(("#", ">")):
                    secret.setdefault(stripped, str(path.relative_to(REPO)))
    public |= commonplace_lines()
    secret = {line: where for line, where in secret.items() if len(line) >= MIN_LINE and line not in public}
    taught = taught_lines()
    return ({line: where for line, where in secret.items() if line not in taught},
            {line: where for line, where in secret.items() if line in taught})


def _strings(value, skip_images: bool = True):
    """Every string inside a notebook's JSON (sources, outputs, metadata), images' base64 left out."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not (skip_images and key.startswith("image/") and key != "image/svg+xml"):
                yield from _strings(item)


def searchable_text(path: Path) -> str:
    """The file as text; for a notebook also its decoded JSON strings (a source line is one JSON string with
    its quotes escaped in the raw file, an output's text is a list of them)."""
    raw = path.read_bytes().decode("utf-8", errors="replace")
    if path.suffix == ".ipynb":
        return raw + "\n" + "".join(_strings(json.loads(raw)))
    return raw


def _without_code_sources(path: Path) -> str:
    """A notebook's decoded strings except its code cells' sources (markdown, outputs and metadata stay)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["source"] = ""
    return "".join(_strings(nb))


def leaks(folder: Path, secrets: dict[str, str], taught: dict[str, str] | None = None) -> list[str]:
    """Each secret line found in a file of ``folder`` (.git aside); a ``taught`` line is allowed only in the code of
    a lecture notebook (notebooks/*.ipynb) and in the course's package (which the lectures import and document),
    nowhere else: not in a lecture's outputs, not in the lab."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and ".git" not in p.relative_to(folder).parts):
        rel = path.relative_to(folder)
        text = searchable_text(path)
        found += [f"{rel}: {line!r} ({where})" for line, where in secrets.items() if line in text]
        if taught and not (rel.parts[0] == "coursekit" and path.suffix == ".py"):
            if rel.parts[0] == "notebooks" and path.suffix == ".ipynb":
                text = _without_code_sources(path)
            found += [f"{rel}: {line!r} ({where}; a lecture may show it in its code only)"
                      for line, where in taught.items() if line in text]
    return found


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def secret_and_taught() -> tuple[dict[str, str], dict[str, str]]:
    return secret_lines()


@pytest.fixture(scope="module")
def secrets(secret_and_taught) -> dict[str, str]:
    found, taught = secret_and_taught
    if taught:
        print("lines of the lab's solutions or hidden tests that a lecture teaches in its code:\n  "
              + "\n  ".join(f"{line!r} ({where})" for line, where in sorted(taught.items())))
    kinds = {where.split(" ")[0] for where in found.values()}
    # The check must have something to find: dozens of solution and hidden-test lines.
    assert sum(w.startswith("solution") for w in found.values()) >= 10, found
    assert sum("hidden" in w for w in found.values()) >= 30, kinds
    return found


@pytest.fixture(scope="module")
def edition(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("release") / "mlp-course"
    release.write_release(out)
    return out


def _git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True, text=True).stdout


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and ".git" not in p.relative_to(folder).parts}


# ------------------------------------------------------------------------------------------ fast tests
def test_release_is_one_reproducible_commit(edition, tmp_path):
    assert _git(edition, "rev-list", "--count", "HEAD").strip() == "1"
    log = _git(edition, "log", "-1", "--format=%an|%ae|%ad|%cn|%ce|%cd", "--date=raw")
    assert log.strip() == f"{release.AUTHOR_NAME}|{release.AUTHOR_EMAIL}|{release.DEFAULT_EPOCH} +0000|" \
                          f"{release.AUTHOR_NAME}|{release.AUTHOR_EMAIL}|{release.DEFAULT_EPOCH} +0000"
    # What is committed is exactly what is on disk, nothing else in the folder, nothing uncommitted.
    assert _git(edition, "status", "--porcelain", "--ignored") == ""
    assert sorted(_git(edition, "ls-files").split()) == sorted(_tree_bytes(edition))
    again = tmp_path / "again"
    commit = release.write_release(again)
    assert commit == _git(edition, "rev-parse", "HEAD").strip()
    assert _tree_bytes(again) == _tree_bytes(edition)
    # Only postBuild is executable.
    modes = {line.split()[3]: line.split()[0] for line in _git(edition, "ls-files", "-s").splitlines()}
    assert {path for path, mode in modes.items() if mode == "100755"} == {".binder/postBuild"}


def test_release_has_the_whole_student_side(edition):
    files = _tree_bytes(edition)
    lectures = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "notebooks").glob("*.ipynb"))
    assert len(lectures) >= 4
    for rel in lectures + ["lab/mlp_lab.ipynb"]:
        assert files[rel] == (REPO / rel).read_bytes(), f"{rel} differs from the course's (outputs kept)"
    for rel in ("README.md", "Makefile", "selfcheck.py", "requirements.txt", "environment.yml", "pyproject.toml",
                ".binder/environment.yml", ".binder/postBuild", "nbval_sanitize.cfg",
                "coursekit/__init__.py", "coursekit/selfcheck.py", "coursekit/banned_calls.py"):
        assert rel in files, rel
    # Every module of the package that the release has is the repository's, byte for byte.
    for rel in (r for r in files if r.startswith("coursekit/")):
        assert files[rel] == (REPO / rel).read_bytes(), rel
    # No pin of the student edition differs from the course's; the instructor's tools are left out.
    course_pins = {release._pin_name(l): l for l in (REPO / "requirements.txt").read_text().splitlines()
                   if release._pin_name(l)}
    student_pins = {release._pin_name(l): l for l in files["requirements.txt"].decode().splitlines()
                    if release._pin_name(l)}
    assert all(course_pins[name] == line for name, line in student_pins.items())
    assert set(course_pins) - set(student_pins) == set(course_pins) & release.INSTRUCTOR_ONLY_PINS
    assert {"torch", "d2l", "jupyterlab", "nbval", "ipywidgets"} <= set(student_pins)


def test_grading_internals_and_instructor_folders_stay_out(edition):
    files = _tree_bytes(edition)
    tops = {rel.split("/")[0] for rel in files}
    assert not tops & {"tests", "bench", "deploy", "instructor", "scripts", "edition"}, tops
    assert not any(rel.startswith(("lab/source", "lab/autograder")) for rel in files)
    # What the student side imports: the import closure, never the grader (none of coursekit.grading: what
    # students import, the self-check and the banned-calls rule, lives outside it) or the instructor's CLI.
    assert not [rel for rel in files if rel.startswith("coursekit/grading/")]
    assert "coursekit/cli.py" not in files and "coursekit/release.py" not in files
    assert b"[project.scripts]" not in files["pyproject.toml"]


def test_no_line_of_a_solution_hidden_test_or_instructor_file_is_in_the_release(edition, secrets,
                                                                                 secret_and_taught):
    assert leaks(edition, secrets, taught=secret_and_taught[1]) == []


def test_the_leak_check_finds_planted_leaks(edition, secrets, secret_and_taught, tmp_path):
    """The content check is able to fail: a solution notebook, hidden tests, or a solution line inside a
    notebook's output are each found, whatever the file is called."""
    planted = tmp_path / "planted"
    shutil.copytree(edition, planted, ignore=shutil.ignore_patterns(".git"))
    shutil.copy(SOURCE, planted / "notebooks" / "extra_reading.ipynb")
    (planted / "coursekit" / "data.txt").write_text(HIDDEN.read_text())
    found = leaks(planted, secrets)
    assert any(f.startswith("notebooks/extra_reading.ipynb") and "solution" in f for f in found)
    assert any(f.startswith("coursekit/data.txt") and "hidden" in f for f in found)
    solution_line = next(line for line, where in secrets.items() if where.startswith("solution"))
    nb = nbformat.read(planted / "lab" / "mlp_lab.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f'he said "{solution_line}"\n')]
    nbformat.write(nb, planted / "lab" / "mlp_lab.ipynb")
    shutil.rmtree(planted / "notebooks")
    (planted / "coursekit" / "data.txt").unlink()
    assert [f for f in leaks(planted, secrets)] == [f"lab/mlp_lab.ipynb: {solution_line!r} ({secrets[solution_line]})"]
    taught = secret_and_taught[1]
    if taught:   # a line a lecture may show in its code is still found in an output
        line = sorted(taught)[0]
        (planted / "lab" / "mlp_lab.ipynb").unlink()
        (planted / "notebooks").mkdir()
        lecture = nbformat.read(edition / "notebooks" / "01_hidden_layers.ipynb", as_version=4)
        code = [c for c in lecture.cells if c.cell_type == "code"]
        code[0].source += "\n" + line
        nbformat.write(lecture, planted / "notebooks" / "01_hidden_layers.ipynb")
        assert leaks(planted, secrets, taught) == []
        code[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text=line + "\n")]
        nbformat.write(lecture, planted / "notebooks" / "01_hidden_layers.ipynb")
        assert [f.split(":")[0] for f in leaks(planted, secrets, taught)] == ["notebooks/01_hidden_layers.ipynb"]


def test_strip_outputs_clears_only_the_lectures_outputs(tmp_path):
    out = tmp_path / "stripped"
    release.write_release(out, keep_outputs=False)
    for path in sorted((out / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(c.outputs == [] and c.execution_count is None for c in code), path.name
        original = nbformat.read(REPO / "notebooks" / path.name, as_version=4)
        assert [c.source for c in nb.cells] == [c.source for c in original.cells]
    assert (out / "lab" / "mlp_lab.ipynb").read_bytes() == (REPO / "lab" / "mlp_lab.ipynb").read_bytes()


def course_copy(where: Path) -> Path:
    """A minimal copy of the instructor's repository that release reads (to change a lecture safely)."""
    for rel in ("notebooks", "coursekit", "lab/mlp_lab.ipynb", "requirements.txt", "environment.yml",
                "pyproject.toml", "tests/nbval_sanitize.cfg"):
        src, dst = REPO / rel, where / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
        else:
            shutil.copy(src, dst)
    return where


def test_release_again_adds_one_commit_only_when_something_changed(tmp_path):
    course = course_copy(tmp_path / "course")
    out = tmp_path / "edition"
    first = release.write_release(out, repo=course)
    assert release.write_release(out, repo=course) == first          # nothing changed: no new commit
    lecture = course / "notebooks" / "01_hidden_layers.ipynb"
    nb = json.loads(lecture.read_text())
    nb["cells"].append({"cell_type": "markdown", "id": "erratum", "metadata": {}, "source": "Erratum: see above."})
    lecture.write_text(json.dumps(nb, indent=1) + "\n")
    (course / "notebooks" / "figure.txt").write_text("a helper file the lectures read\n")
    second = release.write_release(out, repo=course)
    assert second != first
    assert _git(out, "rev-list", "HEAD").split() == [second, first]
    assert _git(out, "diff", "--name-only", first, second).split() == ["notebooks/01_hidden_layers.ipynb",
                                                                        "notebooks/figure.txt"]


def test_release_refuses_a_folder_that_is_not_a_release(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(release.ReleaseError, match="not empty and not an earlier release"):
        release.write_release(tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
    with pytest.raises(release.ReleaseError, match="inside the instructor's repository"):
        release.write_release(REPO / "notebooks" / "out")


def test_cli_release(tmp_path, capsys):
    from coursekit.cli import main
    # A new history only when asked: a lost build/ folder must not silently start one (tests/test_hub.py has the
    # release built on the class repository instead).
    assert main(["release", "--out", str(tmp_path / "ed")]) == 2
    assert "--class-repo URL" in capsys.readouterr().err and not (tmp_path / "ed").exists()
    assert main(["release", "--out", str(tmp_path / "ed"), "--new-history"]) == 0
    assert (tmp_path / "ed" / "lab" / "mlp_lab.ipynb").is_file()
    assert main(["release", "--out", str(tmp_path / "ed")]) == 0      # an earlier release: one more commit, or none
    assert main(["release", "--out", str(tmp_path / "copy"), "--class-repo", (tmp_path / "ed").as_uri()]) == 0
    assert _git(tmp_path / "copy", "rev-parse", "HEAD") == _git(tmp_path / "ed", "rev-parse", "HEAD")
    assert main(["release", "--out", str(REPO)]) == 2


# ------------------------------------------------------------------------------------------ slow tests
def _fresh_env(data_dir: Path) -> dict[str, str]:
    # A student runs make at the top level: none of the instructor's make (make test) leaks in, or the
    # release's make would print "Leaving directory" lines after pytest's summary.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    env.update(OMP_NUM_THREADS="1", COURSEKIT_DATA=str(data_dir))
    env.pop("MPLBACKEND", None)   # the kernels use the inline backend, as in JupyterLab
    return env


@pytest.mark.slow
def test_fresh_environment_from_the_release_alone_runs_lectures_and_self_checks(edition, real_data_dir, tmp_path):
    """`make setup` of the release (python3.11 -m venv, its requirements, its package), then every lecture under
    nbval and `make check` (the lab's self-checks: TODO everywhere on the untouched notebook)."""
    if shutil.which("python3.11") is None or shutil.which("make") is None:
        skip_or_fail("python3.11 and make are needed to build the release's own environment")
    student = tmp_path / "student"
    shutil.copytree(edition, student)
    try:
        _build_and_run(student, tmp_path, _fresh_env(real_data_dir))
    finally:
        shutil.rmtree(student / ".venv", ignore_errors=True)   # several GB (torch's CUDA build)


def _build_and_run(student: Path, tmp_path: Path, env: dict) -> None:
    started = time.monotonic()
    setup = subprocess.run(["make", "setup"], cwd=student, env=env, capture_output=True, text=True)
    assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-3000:]
    print(f"release environment built in {time.monotonic() - started:.0f} s")
    python = student / ".venv" / "bin" / "python"
    where = subprocess.run([str(python), "-c", "import coursekit, coursekit.selfcheck as c, sys;"
                            "print(coursekit.__file__); print(c.__file__); print(sys.prefix)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert all(Path(p).is_relative_to(student) for p in where), where
    missing = subprocess.run([str(python), "-c", "import coursekit.grading"], cwd=tmp_path, env=env,
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "ModuleNotFoundError" in missing.stderr

    started = time.monotonic()
    lectures = subprocess.run(["make", "test-lectures"], cwd=student, env=env, capture_output=True, text=True)
    assert lectures.returncode == 0, lectures.stdout[-5000:] + lectures.stderr[-2000:]
    count = len(list((student / "notebooks").glob("*.ipynb")))
    summary = lectures.stdout.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed[1]) >= 3 * count and not re.search(r"failed|error", summary), summary
    print(f"{count} lectures under nbval in the release's environment ({summary.strip('= ')}): "
          f"{time.monotonic() - started:.0f} s")

    checks = subprocess.run(["make", "check"], cwd=student, env=env, capture_output=True, text=True)
    assert checks.returncode == 0, checks.stdout[-3000:] + checks.stderr[-2000:]
    results = [line.strip() for line in checks.stdout.splitlines() if line.startswith("  ")]
    questions = [line for line in checks.stdout.splitlines() if line.startswith("--- check(")]
    lab = nbformat.read(student / "lab" / "mlp_lab.ipynb", as_version=4)
    expected = sum(c.cell_type == "code" and c.source.strip().startswith("check(") for c in lab.cells)
    assert expected >= 5 and len(questions) == expected and len(results) >= 2 * expected, checks.stdout
    assert all(line.startswith("TODO") for line in results), checks.stdout
    assert checks.stdout.count(": not attempted yet") == expected, checks.stdout


def completed_from_release(edition: Path, out: Path) -> Path:
    """The release's student notebook with every TODO stub replaced by the instructor's solution (cells matched by
    id), as a student who solved everything would hand it in."""
    student = nbformat.read(edition / "lab" / "mlp_lab.ipynb", as_version=4)
    solutions = {c.id: c for c in read_source(SOURCE).cells}
    filled = 0
    for cell in student.cells:
        if cell.cell_type == "code" and "NotImplementedError(\"TODO" in cell.source:
            source = solutions[cell.id].source.split("\n")
            cell.source = "\n".join(line for line in source if not (BEGIN.match(line) or END.match(line)))
            filled += 1
    assert filled >= 5
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(student, out)
    return out


@pytest.mark.slow
def test_a_notebook_completed_from_the_release_gets_full_marks_from_coursekit_grade(edition, tmp_path):
    spec = json.loads((REPO / "lab" / "autograder" / "spec.json").read_text())
    completed_from_release(edition, tmp_path / "submissions" / "ada.ipynb")
    coursekit = Path(sys.executable).parent / "coursekit"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([str(coursekit), "grade", str(tmp_path / "submissions"), "--out", str(tmp_path / "grades"),
                           "--no-progress", "--workers", "1"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "grades" / "gradebook.csv", newline="")))
    assert len(rows) == 1, rows
    assert float(rows[0]["total"]) == spec["total"] == 100, rows


# ------------------------------------------------------------------------------------------ Binder
REPO2DOCKER = "jupyter-repo2docker==2026.4.0"


def test_binder_files_install_the_pins_first_and_the_package_after_the_copy(edition):
    """repo2docker installs .binder/environment.yml before it copies the repository (jupyterhub/repo2docker#1265),
    so that file holds the pins without `-e .`, and postBuild installs the package, as `make setup` does."""
    binder = (edition / ".binder" / "environment.yml").read_text()
    assert "-e ." not in binder
    pins = lambda text: {release._pin_name(l): l.strip().lstrip("- ") for l in text.splitlines() if release._pin_name(l)}
    assert pins(binder) == pins((edition / "requirements.txt").read_text())
    assert "python=3.11" in binder
    post_build = (edition / ".binder" / "postBuild").read_text()
    assert post_build.startswith("#!/bin/bash") and os.access(edition / ".binder" / "postBuild", os.X_OK)
    assert "pip install --no-deps --no-build-isolation -e ." in post_build
    assert "pip install --quiet --no-deps --no-build-isolation -e ." in (edition / "Makefile").read_text()


@pytest.mark.slow
def test_repo2docker_builds_the_edition_in_the_right_order(edition, tmp_path):
    """repo2docker (in a throwaway venv, not the course's) prints the Dockerfile it would build for the edition,
    without Docker: the environment from .binder/environment.yml on Python 3.11, then the repository, then
    postBuild."""
    venv = tmp_path / "r2d"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    installed = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", REPO2DOCKER], capture_output=True, text=True)
    if installed.returncode:
        skip_or_fail(f"could not install {REPO2DOCKER} from the package index: {installed.stderr[-500:]}")
    done = subprocess.run([str(venv / "bin" / "repo2docker"), "--no-build", "--debug", str(edition)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    dockerfile = done.stdout + done.stderr
    lines = dockerfile.splitlines()

    def first(pattern: str) -> int:
        found = [i for i, line in enumerate(lines) if pattern in line]
        assert found, f"{pattern!r} not in repo2docker's Dockerfile:\n{dockerfile[-3000:]}"
        return found[0]

    assert "Building conda environment for python=3.11" in dockerfile
    env_copy = first("COPY --chown=0:0 src/.binder/environment.yml")
    env_install = first('env update -p ${NB_PYTHON_PREFIX} --file ".binder/environment.yml"')
    repo_copy = first("COPY --chown=0:0 src/ ${REPO_DIR}/")
    post_build = first("RUN ./.binder/postBuild")
    assert env_copy < env_install < repo_copy < post_build
    # Nothing of the repository's root configuration is used instead (.binder/ takes precedence).
    assert "src/environment.yml" not in dockerfile and "src/requirements.txt" not in dockerfile
