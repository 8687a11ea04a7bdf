"""The pinned environment: pins agree, are installed, and d2l's plotting and Trainer work (IPython 8 guard)."""
import re
import subprocess
import sys
from importlib.metadata import version

import pytest
from packaging.requirements import Requirement

from conftest import REPO, run_in_kernel

PYTHONS = ("3.11", "3.12", "3.13")


def requirement_lines(text: str) -> list[str]:
    """The requirement lines of requirements.txt or of environment.yml's pip section (markers kept)."""
    lines = []
    for line in text.splitlines():
        line = re.sub(r"^\s*-\s+", "", line).split(" #")[0].strip()
        if re.match(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*\s*==", line):
            lines.append(line)
    return lines


def pins_in(text: str, python: str = "%d.%d" % sys.version_info[:2]) -> dict:
    """{name: version} of the lines whose environment marker holds on the given Python."""
    pins = {}
    for line in requirement_lines(text):
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"python_version": python,
                                                                       "python_full_version": python + ".0"}):
            assert requirement.name not in pins, f"{requirement.name} is pinned twice for Python {python}"
            pins[requirement.name] = str(requirement.specifier).removeprefix("==")
    return pins


def test_requirements_and_environment_yml_name_the_same_pins():
    assert requirement_lines((REPO / "requirements.txt").read_text()) == \
        requirement_lines((REPO / "environment.yml").read_text())
    for python in PYTHONS:
        requirements = pins_in((REPO / "requirements.txt").read_text(), python)
        assert {"torch", "torchvision", "numpy", "matplotlib", "pandas", "scipy", "ipython", "requests",
                "matplotlib-inline", "jupyterlab", "ipywidgets", "nbval", "pytest"} <= set(requirements), python
    assert "python=3.11" in (REPO / "environment.yml").read_text()


def test_every_python_gets_one_exact_version_of_each_pin():
    """Markers split only what must differ (d2l's 2023 pins have no wheels past 3.11); d2l itself is pinned for
    3.11 only, and every installer (Makefile, start.py, Colab) adds `pip install --no-deps d2l==1.0.3`."""
    text = (REPO / "requirements.txt").read_text()
    sets = {python: pins_in(text, python) for python in PYTHONS}
    assert sets["3.11"]["d2l"] == "1.0.3" and "d2l" not in sets["3.12"] and "d2l" not in sets["3.13"]
    # On 3.11 the pins are exactly d2l's own Requires-Dist, so the set installed before markers stays as it was.
    d2l_requires = [Requirement(r) for r in __import__("importlib.metadata").metadata.requires("d2l")]
    assert {r.name: str(r.specifier).removeprefix("==") for r in d2l_requires} == \
        {r.name: sets["3.11"][r.name] for r in d2l_requires}
    assert sets["3.12"] == sets["3.13"]
    assert {n for n in sets["3.11"] if sets["3.11"][n] != sets["3.13"].get(n)} == \
        {"d2l", "numpy", "matplotlib", "pandas", "scipy"}
    assert int(sets["3.13"]["numpy"].split(".")[0]) == 2
    for name in ("Makefile", "edition/Makefile", "edition/start.py"):
        assert "--no-deps" in (REPO / name).read_text() and "d2l" in (REPO / name).read_text(), name
    assert 'requires-python = ">=3.11,<3.14"' in (REPO / "pyproject.toml").read_text()


def test_installed_versions_are_the_pinned_ones():
    requirements = pins_in((REPO / "requirements.txt").read_text())
    installed = {name: version(name) for name in requirements}
    # torch/torchvision report a local build tag ("2.14.1+cu130"): compare the release part.
    assert {n: v.split("+")[0] for n, v in installed.items()} == requirements
    assert sys.version_info[:2] == (3, 11)
    assert version("d2l") == "1.0.3"


def test_ipython_is_below_9():
    """IPython 9 removed backend2gui, which matplotlib 3.7.2 (d2l's pin) imports: every d2l plot dies."""
    assert int(version("ipython").split(".")[0]) == 8


D2L_SMOKE = """
import torch
from d2l import torch as d2l
import coursekit
x = torch.arange(-8.0, 8.0, 0.1)
d2l.plot(x, torch.relu(x), 'x', 'relu(x)', figsize=(5, 2.5))

torch.manual_seed(0)
model = d2l.SoftmaxRegression(num_outputs=10, lr=0.1)
data = coursekit.FashionMNIST(batch_size=256, num_train=2048, num_val=512)
d2l.Trainer(max_epochs=1).fit(model, data)   # draws with d2l's ProgressBoard
print("val acc", coursekit.evaluate_accuracy(model, data.val_dataloader()))
"""


def test_d2l_plot_and_trainer_in_a_plain_process(real_data_dir):
    result = subprocess.run([sys.executable, "-c", D2L_SMOKE], capture_output=True, text=True,
                            cwd=REPO, timeout=300, env={"MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "backend2gui" not in result.stderr
    assert float(result.stdout.split("val acc")[-1]) > 0.5


def test_d2l_plot_and_trainer_in_a_jupyter_kernel(real_data_dir):
    cells = run_in_kernel(D2L_SMOKE)
    outputs = cells[0].outputs
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
    assert images, "d2l drew no figure in the kernel"
    assert not [o for o in outputs if o.output_type == "display_data" and "image/svg+xml" in o.data]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert float(text.split("val acc")[-1]) > 0.5
