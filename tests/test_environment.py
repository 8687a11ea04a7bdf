"""The pinned environment: pins agree, are installed, and d2l's plotting and Trainer work (IPython 8 guard)."""
import re
import subprocess
import sys
from importlib.metadata import version

import pytest

from conftest import REPO, run_in_kernel


def pins_in(text: str) -> dict:
    return dict(re.findall(r"^\s*(?:-\s*)?([A-Za-z0-9_.\-]+)==([^\s#]+)", text, flags=re.M))


def test_requirements_and_environment_yml_name_the_same_pins():
    requirements = pins_in((REPO / "requirements.txt").read_text())
    conda = pins_in((REPO / "environment.yml").read_text())
    assert requirements == conda
    assert {"torch", "torchvision", "d2l", "numpy", "matplotlib", "pandas", "scipy", "ipython",
            "jupyterlab", "ipywidgets", "nbval", "pytest"} <= set(requirements)
    assert "python=3.11" in (REPO / "environment.yml").read_text()


def test_installed_versions_are_the_pinned_ones():
    requirements = pins_in((REPO / "requirements.txt").read_text())
    installed = {name: version(name) for name in requirements}
    # torch/torchvision report a local build tag ("2.14.1+cu130"): compare the release part.
    assert {n: v.split("+")[0] for n, v in installed.items()} == requirements
    assert sys.version_info[:2] == (3, 11)


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
