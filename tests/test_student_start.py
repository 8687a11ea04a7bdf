"""The student edition's start: `make setup` and `python start.py` (Windows, no make) do the same steps, choose
PyTorch's CPU wheels with one word, and refuse a Python or machine that cannot work with one clear line, before
pip runs. (The full install through start.py is tested on Python 3.13 in tests/test_python313.py.)"""
from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

EDITION = REPO / "edition"


# A student runs make at the top level: under the instructor's `make test` the inherited MAKELEVEL/MAKEFLAGS would
# make the edition's make a sub-make ("make[1]: ..." lines, directory messages).
STUDENT_ENV = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}


def load_start():
    spec = importlib.util.spec_from_file_location("edition_start", EDITION / "start.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


start = load_start()


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> Path:
    """The edition's own files beside the requirements.txt and pyproject.toml a release gives it."""
    from coursekit import release
    folder = tmp_path_factory.mktemp("edition")
    for name in ("Makefile", "start.py", "selfcheck.py"):
        shutil.copy(EDITION / name, folder / name)
    (folder / "requirements.txt").write_text(release.student_requirements((REPO / "requirements.txt").read_text()))
    (folder / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    return folder


@pytest.mark.parametrize("version, system, machine, bits64, says", [
    ((3, 10, 12), "Linux", "x86_64", True, "Python 3.10 cannot run this course: it needs Python 3.11, 3.12 or 3.13"),
    ((3, 14, 0), "Windows", "AMD64", True, "Python 3.14 cannot run this course"),
    ((3, 9, 1), "Darwin", "arm64", True, "Python 3.9 cannot run this course"),
    ((3, 12, 3), "Windows", "x86", False, "this is a 32-bit Python, and PyTorch is built for 64-bit only"),
    ((3, 13, 1), "Darwin", "x86_64", True, "PyTorch stopped building for Intel Macs after 2.2"),
    ((3, 13, 1), "FreeBSD", "amd64", True, "PyTorch has no wheels for FreeBSD"),
])
def test_a_python_or_machine_that_cannot_work_gets_one_line(version, system, machine, bits64, says):
    why = start.problem(version, system, machine, bits64)
    assert why is not None and why.startswith(says) and "\n" not in why
    assert "Colab" in why or "python.org" in why


@pytest.mark.parametrize("version, system, machine", [
    ((3, 11, 7), "Linux", "x86_64"), ((3, 12, 3), "Linux", "aarch64"), ((3, 13, 5), "Windows", "AMD64"),
    ((3, 13, 5), "Darwin", "arm64"), ((3, 11, 9), "Darwin", "arm64"),
])
def test_supported_pythons_and_machines_pass(version, system, machine):
    assert start.problem(version, system, machine, True) is None


FAKE = """import sys, runpy, platform
sys.version_info = {version!r}
platform.system = lambda: {system!r}
platform.machine = lambda: {machine!r}
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def fake_python(folder: Path, version=(3, 10, 12, "final", 0), system="Linux", machine="x86_64") -> Path:
    """A python3 that says it is another version or machine (only start.py's checks see the difference)."""
    (folder / "fake.py").write_text(FAKE.format(version=version, system=system, machine=machine))
    path = folder / "fake-python"
    path.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(folder / 'fake.py'))} \"$@\"\n")
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("version, system, machine, says", [
    ((3, 10, 12, "final", 0), "Linux", "x86_64", "Python 3.10 cannot run this course"),
    ((3, 14, 0, "final", 0), "Linux", "x86_64", "Python 3.14 cannot run this course"),
    ((3, 13, 1, "final", 0), "Darwin", "x86_64", "PyTorch stopped building for Intel Macs"),
])
def test_make_and_start_py_stop_with_that_line_before_pip(student, tmp_path, version, system, machine, says):
    python = fake_python(tmp_path, version, system, machine)
    made = subprocess.run(["make", "setup", f"PYTHON={python}"], cwd=student, capture_output=True, text=True,
                          env=STUDENT_ENV)
    assert made.returncode != 0
    lines = [line for line in made.stderr.splitlines() if not line.startswith("make:")]
    assert len(lines) == 1 and lines[0].startswith("start.py: " + says), made.stderr
    assert "Traceback" not in made.stdout + made.stderr and "pip" not in made.stdout
    assert not (student / ".venv").exists()
    started = subprocess.run([str(python), "start.py", "lab"], cwd=student, capture_output=True, text=True)
    assert started.returncode == 1 and started.stdout == ""
    assert started.stderr.strip().splitlines() == [lines[0]]
    assert not (student / ".venv").exists()


def _make_pip_lines(student: Path, *args: str) -> list[list[str]]:
    dry = subprocess.run(["make", "-n", "setup", "PYTHON=python3", *args], cwd=student, capture_output=True,
                         text=True, check=True, env=STUDENT_ENV)
    return [shlex.split(line) for line in dry.stdout.splitlines() if " -m pip install" in line]


@pytest.mark.parametrize("torch", ["default", "cpu"])
def test_start_py_runs_the_makefiles_pip_steps(student, torch):
    made = _make_pip_lines(student, f"TORCH={torch}")
    ours = start.install_commands(Path(".venv/bin/python"), torch, student)
    assert made == ours
    assert ours[-2][-2:] == ["--no-deps", "d2l==1.0.3"]
    assert ours[-1][-4:] == ["--no-deps", "--no-build-isolation", "-e", "."]
    if torch == "cpu":
        # Only torch and torchvision come from PyTorch's CPU index, at the pinned versions; the rest from PyPI.
        assert ours[0][-4:] == ["--index-url", "https://download.pytorch.org/whl/cpu", "torch==2.14.1",
                                "torchvision==0.29.1"]
        assert len(ours) == 4 and all("--index-url" not in c for c in ours[1:])
    else:
        assert len(ours) == 3 and not any("download.pytorch.org" in " ".join(c) for c in ours)


def test_start_py_and_make_share_the_stamp(student):
    dry = subprocess.run(["make", "-n", "setup", "PYTHON=python3"], cwd=student, capture_output=True, text=True,
                         check=True, env=STUDENT_ENV).stdout
    assert f"touch .venv/{start.stamp(student)}" in dry


def test_venv_paths_on_windows_and_elsewhere():
    assert start.venv_python(Path("v"), windows=True) == Path("v/Scripts/python.exe")
    assert start.venv_python(Path("v"), windows=False) == Path("v/bin/python")
    assert start.venv_script(Path("v"), "jupyter", windows=True) == Path("v/Scripts/jupyter.exe")
    assert start.venv_script(Path("v"), "jupyter", windows=False) == Path("v/bin/jupyter")


def test_makefile_prefers_the_newest_supported_python(student, tmp_path):
    for name in ("python3.11", "python3.13"):
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    dry = subprocess.run(["make", "-n", "setup"], cwd=student, capture_output=True, text=True, check=True,
                         env={"PATH": f"{tmp_path}:/usr/bin:/bin"}).stdout
    assert dry.splitlines()[0].startswith(f"{tmp_path}/python3.13 start.py preflight"), dry


def test_makefile_skips_a_python_name_that_does_not_run(student, tmp_path):
    """A version manager's shim (pyenv's python3.13 with no 3.13 installed) is on PATH but fails: the next
    Python that runs is taken."""
    (tmp_path / "python3.13").write_text("#!/bin/sh\necho 'pyenv: python3.13: command not found' >&2\nexit 127\n")
    (tmp_path / "python3.12").write_text("#!/bin/sh\n")
    for name in ("python3.13", "python3.12"):
        (tmp_path / name).chmod(0o755)
    dry = subprocess.run(["make", "-n", "setup"], cwd=student, capture_output=True, text=True, check=True,
                         env={"PATH": f"{tmp_path}:/usr/bin:/bin"}).stdout
    assert dry.splitlines()[0].startswith(f"{tmp_path}/python3.12 start.py preflight"), dry
