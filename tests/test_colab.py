"""Colab: `coursekit release --colab-repo URL` gives every notebook an Open-in-Colab badge with the right link and
a setup cell that installs what Colab lacks only on Colab (simulated here: Colab cannot be reached) and does
nothing elsewhere. Without a URL the release has no Colab cells at all."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest

from conftest import REPO
from coursekit import colab, release

CLASS_REPO = "https://github.com/example-university/mlp-course"


@pytest.fixture(scope="module")
def colab_edition(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("colab") / "edition"
    release.write_release(out, colab_repo=CLASS_REPO + ".git")
    return out


def _notebooks(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.ipynb") if ".git" not in p.parts)


def test_every_notebook_starts_with_its_own_colab_link_and_the_setup_cell(colab_edition):
    notebooks = _notebooks(colab_edition)
    assert "lab/mlp_lab.ipynb" in notebooks and sum(n.startswith("notebooks/") for n in notebooks) >= 8
    for rel in notebooks:
        nb = nbformat.read(colab_edition / rel, as_version=4)
        nbformat.validate(nb)
        badge, setup = nb.cells[0], nb.cells[1]
        assert badge.cell_type == "markdown" and badge.id == "colab-badge"
        assert badge.source == ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
                                f"(https://colab.research.google.com/github/example-university/mlp-course/blob/main/{rel})")
        assert setup.cell_type == "code" and setup.id == "colab-setup" and setup.outputs == []
        folder = rel.split("/")[0]
        assert f'os.chdir(os.path.join("/content/mlp-course", "{folder}"))' in setup.source
        # The rest of the notebook is the course's, unchanged.
        original = nbformat.read(REPO / rel, as_version=4)
        assert [c.source for c in nb.cells[2:]] == [c.source for c in original.cells]
        assert [c.get("outputs") for c in nb.cells[2:]] == [c.get("outputs") for c in original.cells]


def test_without_a_url_there_are_no_colab_cells(tmp_path):
    files = release.edition_files()
    for rel in (r for r in files if r.endswith(".ipynb")):
        assert b"colab" not in files[rel][0].lower(), rel
        assert files[rel][0] == (REPO / rel).read_bytes()


@pytest.mark.parametrize("url, repo", [
    ("https://github.com/org/course", "org/course"), ("https://github.com/org/course.git", "org/course"),
    ("https://github.com/Org-1/my.course/", "Org-1/my.course"),
])
def test_github_urls(url, repo):
    assert colab.github_repo(url) == repo
    assert colab.colab_url(url, "lab/mlp_lab.ipynb", "spring") == \
        f"https://colab.research.google.com/github/{repo}/blob/spring/lab/mlp_lab.ipynb"


@pytest.mark.parametrize("url", ["git@github.com:org/course.git", "https://gitlab.com/org/course",
                                 "https://github.com/org", "/srv/class.git", "https://github.com/org/course/tree/x"])
def test_a_repository_colab_cannot_open_is_refused_clearly(url, tmp_path):
    with pytest.raises(release.ReleaseError, match="Colab opens notebooks from public GitHub repositories only"):
        release.write_release(tmp_path / "out", colab_repo=url)
    assert not (tmp_path / "out").exists()


class Recorder:
    """Stands in for subprocess.run: records each command; `git clone` creates the folder it clones into."""

    def __init__(self):
        self.commands = []

    def __call__(self, command, check=False, **kwargs):
        self.commands.append(list(command))
        if command[:2] == ["git", "clone"]:
            Path(command[-1], "lab").mkdir(parents=True)
            Path(command[-1], "notebooks").mkdir()
        return subprocess.CompletedProcess(command, 0)


def _run_cell(source: str, monkeypatch, on_colab: bool) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(subprocess, "run", recorder)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(os.getcwd())          # restored after the test, whatever the cell does
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(compile(source, "<colab setup cell>", "exec"), {})
    return recorder


def test_setup_cell_on_colab_clones_installs_without_touching_torch_and_moves_in(monkeypatch, tmp_path):
    course = tmp_path / "content" / "mlp-course"
    requirements = (REPO / "requirements.txt").read_text()
    source = colab.setup_cell_source(CLASS_REPO, "lab", requirements, course_dir=str(course))
    recorder = _run_cell(source, monkeypatch, on_colab=True)
    pip = [sys.executable, "-m", "pip", "install", "--quiet"]
    assert recorder.commands == [
        ["git", "clone", "--quiet", "--depth", "1", "--branch", "main", CLASS_REPO, str(course)],
        pip + ["--no-deps", "d2l==1.0.3"],
        pip + ["anywidget==0.11.0"],
    ]
    assert not any("torch" in arg or "numpy" in arg for command in recorder.commands for arg in command)
    assert sys.path[0] == str(course) and Path.cwd() == course / "lab"
    # Run again (Run all twice): no second clone.
    os.chdir(tmp_path)
    again = _run_cell(source, monkeypatch, on_colab=True)
    assert [c[:2] for c in again.commands] == [pip[:2], pip[:2]] and Path.cwd() == course / "lab"


def test_setup_cell_does_nothing_off_colab(monkeypatch, tmp_path):
    source = colab.setup_cell_source(CLASS_REPO, "notebooks", (REPO / "requirements.txt").read_text(),
                                     course_dir=str(tmp_path / "mlp-course"))
    before_path, before_cwd = list(sys.path), Path.cwd()
    recorder = _run_cell(source, monkeypatch, on_colab=False)
    assert recorder.commands == [] and sys.path == before_path and Path.cwd() == before_cwd
    assert not (tmp_path / "mlp-course").exists()


def test_setup_cell_prints_nothing_in_a_kernel_off_colab(colab_edition):
    """In a real kernel (not on Colab) the cell runs without output, so nbval still compares the notebook."""
    from conftest import run_in_kernel
    nb = nbformat.read(colab_edition / "notebooks" / "01_hidden_layers.ipynb", as_version=4)
    cells = run_in_kernel(nb.cells[1].source + "\nprint(sorted(m for m in sys.modules if m.startswith('google')))")
    texts = [o.get("text", "") for o in cells[0].outputs]
    assert texts == ["[]\n"], cells[0].outputs


def test_cli_colab_repo(tmp_path, capsys):
    from coursekit.cli import main
    assert main(["release", "--out", str(tmp_path / "a"), "--new-history", "--colab-repo", CLASS_REPO]) == 0
    first = json.loads((tmp_path / "a" / "notebooks" / "01_hidden_layers.ipynb").read_text())["cells"][0]
    assert first["id"] == "colab-badge" and "github/example-university/mlp-course/blob/main/" in "".join(first["source"])
    assert main(["release", "--out", str(tmp_path / "b"), "--new-history", "--colab-repo", "https://gitlab.com/o/r"]) == 2
    assert "Colab opens notebooks from public GitHub repositories only" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
