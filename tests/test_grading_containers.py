"""The Gradescope bundle run as Gradescope runs it: an image built by the bundle's ``setup.sh``, then
``run_autograder`` once per submission in a fresh container, as root with Docker's default capabilities and
seccomp profile (no CAP_SYS_ADMIN: no namespaces), under a memory limit. The grader must find mode "container"
by itself, give the solution 100 and the untouched lab 0, and keep a hostile notebook from reading the hidden
tests or writing the results.

Slow: the image is built once per change of setup.sh/requirements (minutes), each submission is a container.
"""
import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import nbformat
import pytest

import containers
import coursekit
from coursekit.grading import gradescope
from coursekit.grading.gradescope import build_bundle, validate_results

pytestmark = pytest.mark.slow

REPO = Path(coursekit.__file__).resolve().parent.parent
MEMORY = "3g"       # the container's limit (Gradescope's default container is smaller: see the README)

DOCKERFILE = """\
ARG BASE
FROM ${BASE}
COPY autograder.zip /tmp/autograder.zip
RUN mkdir -p /autograder/source && cd /autograder/source \\
 && python3 -c "import zipfile; zipfile.ZipFile('/tmp/autograder.zip').extractall('.')" \\
 && chmod +x setup.sh run_autograder && bash setup.sh && rm /tmp/autograder.zip
"""

# tries what a student must not be able to do on Gradescope; says what happened on one line (the feedback shows
# the first line of a cell's error)
HOSTILE = r'''
import glob, json, os
_tries = {}
for _name, _try in {
    "read-hidden": lambda: open("/autograder/source/autograder/hidden_tests.py").read(100),
    "list-hidden": lambda: os.listdir("/autograder/source/autograder"),
    "write-results": lambda: open("/autograder/results/results.json", "w").write(json.dumps({"score": 1000})),
    "list-results": lambda: os.listdir("/autograder/results"),
    "read-staging": lambda: [open(p).read(10) for p in glob.glob("/tmp/coursekit-gradescope-*/**/*", recursive=True)
                             if os.path.isfile(p)],
}.items():
    try:
        _tries[_name] = "DONE " + repr(_try())[:40]
    except Exception as _e:
        _tries[_name] = type(_e).__name__
raise RuntimeError("HOSTILE " + json.dumps(_tries))
'''


def _image_key() -> str:
    h = hashlib.sha256()
    for part in (gradescope.SETUP_SH.encode(), (REPO / "requirements.txt").read_bytes(),
                 (REPO / "pyproject.toml").read_bytes()):
        h.update(part)
    return h.hexdigest()[:12]


@pytest.fixture(scope="module")
def gradescope_image(tmp_path_factory):
    """The autograder image, as Gradescope builds it from the bundle (cached by setup.sh and requirements)."""
    containers.require_podman()
    tag = f"localhost/coursekit-gradescope:{_image_key()}"
    if not containers.image_exists(tag):
        context = tmp_path_factory.mktemp("gradescope-image")
        build_bundle(context / "autograder.zip")
        (context / "Dockerfile").write_text(DOCKERFILE)
        containers.podman_build(context, context / "Dockerfile", tag, {"BASE": containers.base_image("bookworm")},
                                pip=True, local_wheels=True, timeout=3000)
    return tag


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """This checkout's bundle, unpacked as Gradescope unpacks it (mounted over the image's, whose venv has the
    package installed editable from there)."""
    folder = tmp_path_factory.mktemp("source")
    with zipfile.ZipFile(build_bundle(folder / "autograder.zip")) as zf:
        zf.extractall(folder / "source")
    for script in ("setup.sh", "run_autograder"):
        (folder / "source" / script).chmod(0o755)
    return folder / "source"


def _grade(image, source: Path, tmp_path: Path, notebook: Path) -> tuple[dict, int, str]:
    """(results.json, peak memory in bytes of the whole container, run_autograder's output)."""
    sub = tmp_path / "submission"
    sub.mkdir()
    shutil.copy(notebook, sub / "mlp_lab.ipynb")
    script = ("cp -r /in/submission /autograder/submission && cp /autograder/source/run_autograder /autograder/ "
              "&& /autograder/run_autograder; echo RESULTS-JSON; cat /autograder/results/results.json; echo; "
              "echo PEAK-BYTES $(cat /sys/fs/cgroup/memory.peak 2>/dev/null "
              "|| cat /sys/fs/cgroup/memory/memory.max_usage_in_bytes)")
    run = containers.podman_run(image, ["bash", "-c", script], memory=MEMORY, timeout=900,
                                mounts=[(str(source), "/autograder/source"), (str(sub), "/in/submission", "ro")])
    out = run.stdout
    results = json.loads(out.split("RESULTS-JSON", 1)[1].split("PEAK-BYTES", 1)[0])
    peak = int(out.rsplit("PEAK-BYTES", 1)[1].split()[0])
    return results, peak, out + run.stderr


def _with_cell(notebook: Path, source: str, out: Path) -> Path:
    nb = nbformat.read(notebook, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(source))
    nbformat.write(nb, out)
    return out


@pytest.mark.timeout(3600)     # building the image the first time: about 8 minutes at load 18-20
def test_gradescope_bundle_grades_in_a_default_privilege_container(gradescope_image, source, tmp_path):
    peaks = {}
    solution = REPO / "lab" / "source" / "mlp_lab_solution.ipynb"
    cases = {"solution": solution, "untouched": REPO / "lab" / "mlp_lab.ipynb",
             "hostile": _with_cell(solution, HOSTILE, tmp_path / "hostile.ipynb")}
    got = {}
    for name, notebook in cases.items():
        (tmp_path / name).mkdir()
        got[name], peaks[name], log = _grade(gradescope_image, source, tmp_path / name, notebook)
        validate_results(got[name])
        assert "isolation: container:" in log, log[-3000:]
    print("peak memory of the container (MiB):", {k: v >> 20 for k, v in peaks.items()})
    assert got["solution"]["score"] == 100.0, got["solution"]["output"]
    assert got["untouched"]["score"] == 0.0, got["untouched"]["output"]
    assert {t["visibility"] for t in got["solution"]["tests"]} == {"after_published"}
    hostile = got["hostile"]
    assert hostile["score"] == 100.0, hostile["output"]       # its own work still counts; nothing more
    line = next(l for l in hostile["output"].splitlines() if "HOSTILE" in l)
    tries = json.loads(line.split("HOSTILE ", 1)[1])
    assert tries["read-hidden"] == tries["list-hidden"] == "PermissionError", tries
    assert tries["write-results"] == tries["list-results"] == "PermissionError", tries
    assert not str(tries["read-staging"]).startswith("DONE ['"), tries
    assert all(peak < (3 << 30) for peak in peaks.values())
