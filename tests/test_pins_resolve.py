"""The student edition's pins on the Pythons and platforms that cannot be run here, asked of PyPI with
`pip install --dry-run` (nothing is installed): on Linux x86_64 the whole set resolves, dependencies included, for
Python 3.12 and 3.13; on Windows and Apple-silicon macOS every pin has a wheel (pip evaluates the dependencies'
platform markers for this machine, so only the pins themselves are asked there); an Intel Mac has no torch 2.14.1,
which is why start.py refuses it. Needs PyPI (CI has it)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from conftest import REPO, skip_or_fail
from coursekit import release

LINUX = ["manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64"] + \
    [f"manylinux_2_{minor}_x86_64" for minor in range(5, 40)]
WINDOWS = ["win_amd64"]
MAC_ARM = [f"macosx_{major}_0_{arch}" for major in range(11, 16) for arch in ("arm64", "universal2")]
MAC_INTEL = [f"macosx_{major}_0_x86_64" for major in (10, 11, 12, 13, 14)] + ["macosx_10_9_x86_64"]


def requirements_for(python: str) -> list[str]:
    """The student edition's pins whose markers hold on ``python``, plus d2l (installed with --no-deps)."""
    lines = []
    text = release.student_requirements((REPO / "requirements.txt").read_text())
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"python_version": python}):
                lines.append(f"{requirement.name}{requirement.specifier}")
    return lines + ([] if any(line.startswith("d2l==") for line in lines) else ["d2l==1.0.3"])


def dry_run(python: str, platforms: list[str], tmp_path: Path, no_deps: bool,
            only: list[str] | None = None) -> subprocess.CompletedProcess:
    wanted = requirements_for(python) if only is None else only
    if not no_deps:
        wanted = [r for r in wanted if not r.startswith("d2l==")]   # its 2023 pins are not ours
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:",
               "--python-version", python, "--target", str(tmp_path / "target"), "--quiet", *wanted]
    command += [arg for platform in platforms for arg in ("--platform", platform)]
    if no_deps:
        command.append("--no-deps")
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


def _needs_pypi(done: subprocess.CompletedProcess):
    if "NewConnectionError" in done.stderr or "Could not fetch URL" in done.stderr:
        skip_or_fail(f"PyPI is not reachable: {done.stderr[-300:]}")


@pytest.mark.slow
@pytest.mark.parametrize("python", ["3.12", "3.13"])
def test_the_whole_set_resolves_on_linux(python, tmp_path):
    done = dry_run(python, LINUX, tmp_path, no_deps=False)
    _needs_pypi(done)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("python", ["3.11", "3.12", "3.13"])
@pytest.mark.parametrize("platforms", [WINDOWS, MAC_ARM], ids=["windows", "macos-arm64"])
def test_every_pin_has_a_wheel_on_windows_and_apple_silicon(python, platforms, tmp_path):
    done = dry_run(python, platforms, tmp_path, no_deps=True)
    _needs_pypi(done)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_intel_macs_have_no_torch_of_the_pinned_version(tmp_path):
    torch = next(r for r in requirements_for("3.13") if r.startswith("torch=="))
    done = dry_run("3.13", MAC_INTEL, tmp_path, no_deps=True, only=[torch])
    _needs_pypi(done)
    # pip words it "No matching distribution found" or, with this machine's pip constraint, "Cannot install".
    assert done.returncode != 0 and re.search(r"(No matching distribution found for|Cannot install) torch==2\.14\.1",
                                              done.stderr), done.stderr
    # The same question is answered yes for an Apple-silicon Mac and for the last Intel-Mac torch (2.2.2).
    assert dry_run("3.13", MAC_ARM, tmp_path, no_deps=True, only=[torch]).returncode == 0
    older = dry_run("3.12", MAC_INTEL, tmp_path, no_deps=True, only=["torch==2.2.2"])
    assert older.returncode == 0, older.stderr[-2000:]
