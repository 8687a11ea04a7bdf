"""Python 3.13 (Debian 13, trixie) in a container: a student edition installed fresh, as a student would
(`python3 start.py setup`, the no-make path that Windows uses; pip fetches torch 2.14.1 cp313 and the 3.13 pins from
PyPI), then `python3 start.py check` (the lab's self-checks) and `make test-lectures` (every lecture under nbval,
with the edition's sanitize rules). The edition is released with a class repository URL, so every notebook also
carries the Colab badge and setup cell, which must do nothing off Colab.

Downloads go through a wheelhouse kept on the host (tests/containers.py): the first run fetches a few GB, later
runs install from it without the network.
"""
from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import nbformat
import pytest

import containers
from conftest import REPO
from coursekit import release

CLASS_REPO = "https://github.com/example-university/mlp-course"
STEPS = r"""
set -euo pipefail
cd /course
stamp() { echo "@@ $1 $(date +%s)"; }
python3 -c 'import sys; print("@@ python", sys.version.split()[0])'
stamp start
# The wheelhouse on the host keeps what PyPI gave the first run (the proxy defeats pip's HTTP cache).
python3 -m pip download --quiet --dest "$COURSEKIT_WHEELHOUSE" -r requirements.txt
python3 -m pip download --quiet --dest "$COURSEKIT_WHEELHOUSE" --no-deps "$(grep -o '^d2l==[^;[:space:]]*' requirements.txt)"
stamp downloaded
export PIP_NO_INDEX=1 PIP_FIND_LINKS="$COURSEKIT_WHEELHOUSE"
python3 start.py setup
stamp installed
echo "@@ venv-mb $(du -sm .venv | cut -f1)"
.venv/bin/python -c 'import numpy, matplotlib, pandas, scipy, torch, d2l, IPython; print("@@ versions", numpy.__version__, matplotlib.__version__, pandas.__version__, scipy.__version__, torch.__version__, IPython.__version__)'
python3 start.py check || echo "@@ check-exit $?"
stamp checked
make test-lectures || echo "@@ lectures-exit $?"
stamp lectures
"""


@pytest.fixture(scope="module")
def trixie_image() -> str:
    containers.require_podman()
    return containers.base_image("trixie")


@pytest.mark.slow
@pytest.mark.timeout(5400)
def test_fresh_student_edition_on_python_313_runs_every_lecture_and_the_self_checks(trixie_image, real_data_dir,
                                                                                    tmp_path):
    course = tmp_path / "course"
    release.write_release(course, colab_repo=CLASS_REPO)
    shutil.rmtree(course / ".git")            # what a student downloads; nothing here needs the history
    uid = 1000                                # a student, not root
    for path in [course, *course.rglob("*")]:
        shutil.chown(path, uid, uid)
    started = time.monotonic()
    try:
        done = containers.podman_run(
            trixie_image, ["bash", "-c", STEPS], user=f"{uid}:{uid}", pip=True, timeout=5000, check=False,
            mounts=[(str(course), "/course", "rw"), (str(real_data_dir), "/data", "ro")],
            env={"HOME": "/tmp", "COURSEKIT_DATA": "/data"})
    finally:
        shutil.rmtree(course / ".venv", ignore_errors=True)   # several GB (torch's CUDA build)
    out = done.stdout
    (tmp_path / "container-output.txt").write_text(out + "\n--- stderr\n" + done.stderr)
    marks = dict(re.findall(r"^@@ (\S+) ?(.*)$", out, flags=re.M))
    print(f"the container's output: {tmp_path / 'container-output.txt'}; marks: {marks}")
    assert done.returncode == 0 and "lectures" in marks, out[-5000:] + done.stderr[-3000:]
    assert marks["python"].startswith("3.13."), marks
    times = {k: int(marks[k]) for k in ("start", "downloaded", "installed", "checked", "lectures")}
    print(f"Python {marks['python']} in Debian trixie, as uid {uid}: download {times['downloaded'] - times['start']} s, "
          f"install {times['installed'] - times['downloaded']} s (.venv {marks['venv-mb']} MB), self-checks "
          f"{times['checked'] - times['installed']} s, lectures {times['lectures'] - times['checked']} s; "
          f"{time.monotonic() - started:.0f} s in all; versions {marks['versions']}")
    numpy, matplotlib, pandas, scipy, torch, ipython = marks["versions"].split()
    assert (numpy, matplotlib, pandas, scipy, torch.split("+")[0], ipython) == \
        ("2.3.5", "3.10.9", "2.3.3", "1.16.3", "2.14.1", "8.39.0")

    # The self-checks (what `start.py check` printed): every check("qN") of the untouched lab ran, each a TODO.
    checks = out.split("@@ versions", 1)[1].split("@@ checked", 1)[0]
    assert "check-exit" not in marks, checks[-5000:]
    lab = nbformat.read(course / "lab" / "mlp_lab.ipynb", as_version=4)
    expected = sum(c.cell_type == "code" and c.source.strip().startswith("check(") for c in lab.cells)
    questions = [line for line in checks.splitlines() if line.startswith("--- check(")]
    results = [line.strip() for line in checks.splitlines() if line.startswith("  ")]
    assert expected >= 5 and len(questions) == expected and len(results) >= 2 * expected, checks[-5000:]
    assert all(line.startswith("TODO") for line in results), checks[-5000:]

    # Every lecture under nbval, strict, with the edition's own sanitize rules.
    lectures = out.split("@@ checked", 1)[1]
    assert "lectures-exit" not in marks, lectures[-8000:]
    count = len(list((course / "notebooks").glob("*.ipynb")))
    summary = [line for line in lectures.splitlines() if re.search(r"\d+ passed", line)][-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed[1]) >= 3 * count and not re.search(r"failed|error", summary), summary
