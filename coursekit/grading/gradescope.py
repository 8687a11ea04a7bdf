"""Gradescope: the autograder bundle that grades there, and what its ``results.json`` must be.

The results themselves are rendered by ``results.StudentResult.results_json`` (with the gradebook row and the
feedback, from the same object). Imports nothing of the grading pipeline: ``outfiles`` uses it, never the other way
round.

Gradescope unpacks the bundle (a zip) into ``/autograder/source``, runs ``setup.sh`` once to build the
image, then for each submission runs ``/autograder/run_autograder`` with the student's files in
``/autograder/submission`` and reads ``/autograder/results/results.json``::

    coursekit gradescope-bundle --out mlp_lab_autograder.zip      # upload it as the autograder

The bundle holds ``setup.sh`` (installs the pinned requirements, bubblewrap and the data set),
``run_autograder`` (runs ``coursekit gradescope-run``: ``grade.grade_gradescope_submission``, the same steps,
``grade.STEPS``, as ``coursekit grade``),
``requirements.txt``, the ``coursekit`` package and the hidden tests (``autograder/``). ``run_autograder``
reads ``$COURSEKIT_AUTOGRADER_ROOT`` (default ``/autograder``), so a test can run it in a local copy.
"""
from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

from coursekit.paths import AUTOGRADER, REPO

__all__ = ["validate_results", "build_bundle", "SETUP_SH", "RUN_AUTOGRADER", "DEFAULT_VISIBILITY",
           "visibility_setting"]

VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")
# hidden tests: students see their results once the instructor publishes the grades, not at submission (where
# they could probe the hidden tests by resubmitting); `coursekit gradescope-bundle --visibility` changes it
DEFAULT_VISIBILITY = "after_published"
VISIBILITY_ENV = "COURSEKIT_GRADESCOPE_VISIBILITY"


def visibility_setting() -> str:
    """The hidden tests' visibility: ``$COURSEKIT_GRADESCOPE_VISIBILITY`` (the bundle's ``run_autograder`` sets it
    to what the bundle was built with), else ``DEFAULT_VISIBILITY``."""
    value = os.environ.get(VISIBILITY_ENV) or DEFAULT_VISIBILITY
    if value not in VISIBILITIES:
        raise ValueError(f"{VISIBILITY_ENV} must be one of {', '.join(VISIBILITIES)}, got {value!r}")
    return value

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, to build the autograder image (it has internet access then).
set -euo pipefail
cd /autograder/source
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Gradescope's containers give root without CAP_SYS_ADMIN: the grader runs each job under an unprivileged uid
# (mode "container"); bubblewrap is used where the container allows it (a privileged one, a local test).
apt-get install -y -qq bubblewrap python3 python3-venv ca-certificates
# Debian's package of Fashion-MNIST, where the distribution has it; otherwise coursekit downloads it below.
apt-get install -y -qq dataset-fashion-mnist || true
# The pins need Python 3.11: the system's if it is 3.11, else one installed by uv.
if command -v python3.11 >/dev/null; then
    python3.11 -m venv /autograder/venv
else
    python3 -m venv /autograder/uv && /autograder/uv/bin/pip install --quiet uv
    /autograder/uv/bin/uv python install 3.11
    /autograder/uv/bin/uv venv --seed --python 3.11 /autograder/venv
    chmod -R a+rX "$(/autograder/uv/bin/uv python dir)"     # the sandbox's uid must read Python's stdlib
fi
/autograder/venv/bin/python -m pip install --quiet --upgrade pip
/autograder/venv/bin/python -m pip install --quiet -r requirements.txt
/autograder/venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
/autograder/venv/bin/python -c "import coursekit; coursekit.load_fashion_mnist()"
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for each submission; it writes results/results.json under the autograder root.
set -uo pipefail
ROOT="${COURSEKIT_AUTOGRADER_ROOT:-/autograder}"
PY="${COURSEKIT_PYTHON:-$ROOT/venv/bin/python}"
mkdir -p "$ROOT/results"
# In Gradescope's container student code runs under an unprivileged uid on this file system: the hidden
# tests and the results must be unreadable to it (the venv and the coursekit package stay readable).
chmod 700 "$ROOT/source/autograder" "$ROOT/results"
export COURSEKIT_GRADESCOPE_VISIBILITY="${COURSEKIT_GRADESCOPE_VISIBILITY:-@VISIBILITY@}"
cd "$ROOT/source"
# the bundle's own coursekit comes first on the path
export PYTHONPATH="$ROOT/source${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m coursekit.cli gradescope-run --submission "$ROOT/submission" \\
    --autograder-dir "$ROOT/source/autograder" --results "$ROOT/results/results.json"
"""


def validate_results(results: dict) -> None:
    """Raise ValueError naming what is wrong if ``results`` is not what Gradescope accepts."""
    if not isinstance(results, dict):
        raise ValueError("results must be a JSON object")
    if not isinstance(results.get("score"), (int, float)) or isinstance(results.get("score"), bool):
        raise ValueError("results.score must be a number")
    tests = results.get("tests")
    if not isinstance(tests, list):
        raise ValueError("results.tests must be a list")
    for i, t in enumerate(tests):
        for key, kind in (("name", str), ("score", (int, float)), ("max_score", (int, float)), ("output", str)):
            if not isinstance(t.get(key), kind) or isinstance(t.get(key), bool):
                raise ValueError(f"tests[{i}].{key} must be a {kind}")
        if not 0 <= t["score"] <= t["max_score"]:
            raise ValueError(f"tests[{i}].score {t['score']} is outside 0..{t['max_score']}")
        if t.get("visibility", "visible") not in VISIBILITIES:
            raise ValueError(f"tests[{i}].visibility must be one of {VISIBILITIES}")
    total = sum(t["score"] for t in tests)
    if tests and abs(total - results["score"]) > 1e-6:
        raise ValueError(f"results.score {results['score']} is not the sum of the tests' scores {total}")


def build_bundle(out_zip, autograder_dir=None, visibility: str = DEFAULT_VISIBILITY) -> Path:
    """Write the Gradescope autograder zip: setup.sh, run_autograder, requirements, coursekit, hidden tests.
    ``visibility``: when students see the hidden tests' results (Gradescope's ``visibility`` of each test)."""
    if visibility not in VISIBILITIES:
        raise ValueError(f"visibility must be one of {', '.join(VISIBILITIES)}, got {visibility!r}")
    repo = REPO
    hidden = Path(autograder_dir) if autograder_dir else AUTOGRADER
    for needed in (hidden / "spec.json", hidden / "hidden_tests.py", repo / "requirements.txt",
                   repo / "pyproject.toml", repo / "coursekit" / "__init__.py"):
        if not needed.is_file():
            raise FileNotFoundError(f"cannot build the bundle: {needed} is missing"
                                    + (" (run `coursekit assign` first)" if hidden in needed.parents else ""))
    out_zip = Path(out_zip)
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_zip.with_name(f".{out_zip.name}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in (("setup.sh", SETUP_SH), ("run_autograder", RUN_AUTOGRADER.replace("@VISIBILITY@", visibility))):
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFREG | 0o755) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, text)
        zf.write(repo / "requirements.txt", "requirements.txt")
        zf.write(repo / "pyproject.toml", "pyproject.toml")
        if (repo / "README.md").is_file():
            zf.write(repo / "README.md", "README.md")    # pyproject names it as the readme
        for p in sorted((repo / "coursekit").rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc":
                zf.write(p, str(Path("coursekit") / p.relative_to(repo / "coursekit")))
        for p in sorted(hidden.iterdir()):
            if p.is_file():
                zf.write(p, f"autograder/{p.name}")
    tmp.replace(out_zip)
    return out_zip
