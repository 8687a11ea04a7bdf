"""Google Colab for the student edition: an "Open in Colab" badge and a first setup cell in each notebook.

``coursekit release --repo-url https://github.com/ORG/REPO`` puts, at the top of every lecture and of the lab:

* a markdown cell with the badge, linking to ``https://colab.research.google.com/github/ORG/REPO/blob/BRANCH/PATH``
  (Colab opens notebooks straight from a public GitHub repository);
* a code cell that, only when it runs on Colab (``"google.colab" in sys.modules``), clones the class repository
  into ``/content/``, makes its ``coursekit`` importable, installs d2l without its 2023 pins (``--no-deps``) and
  the few pinned packages Colab lacks, and moves into the notebook's folder, so relative paths work as on a
  laptop. Colab's own torch, numpy and matplotlib are left alone. Anywhere else the cell does nothing and prints
  nothing, so the notebooks still pass nbval.

On Colab, Fashion-MNIST is downloaded by ``coursekit.load_fashion_mnist`` from the official mirrors, each file
checked by its md5 (coursekit/data.py).
"""
from __future__ import annotations

import json
import re

BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE_CELL_ID = "colab-badge"
SETUP_CELL_ID = "colab-setup"
# Where the class repository is cloned on Colab (the working folder of every Colab session is /content).
COURSE_DIR = "/content/mlp-course"
# Installed on Colab from the edition's requirements.txt: d2l without its dependencies, the rest with theirs
# (Colab has torch, numpy, matplotlib, pandas, requests, IPython and ipywidgets already).
COLAB_NO_DEPS = ("d2l",)
COLAB_WITH_DEPS = ("anywidget",)


class ColabError(ValueError):
    """The repository URL cannot be opened by Colab; the message says what to give instead."""


def github_repo(url: str) -> str:
    """``ORG/REPO`` of a GitHub repository URL (``https://github.com/ORG/REPO``, optionally ``.git`` or ``/``)."""
    match = re.fullmatch(r"https://github\.com/([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+?)(?:\.git)?/?", url.strip())
    if not match:
        raise ColabError(f"Colab opens notebooks from public GitHub repositories only: give the class repository "
                         f"as https://github.com/ORG/REPO (got {url!r})")
    return f"{match[1]}/{match[2]}"


def colab_url(repo_url: str, path: str, branch: str = "main") -> str:
    """The link that opens ``path`` (relative to the repository root) of the class repository in Colab."""
    if not re.fullmatch(r"[A-Za-z0-9._/-]+", branch):
        raise ColabError(f"not a branch name Colab links can carry: {branch!r}")
    return f"https://colab.research.google.com/github/{github_repo(repo_url)}/blob/{branch}/{path}"


def badge_markdown(repo_url: str, path: str, branch: str = "main") -> str:
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(repo_url, path, branch)})"


def pinned(requirements: str, name: str) -> str:
    """``name==version`` from a requirements text (the line without an environment marker, or the only one)."""
    found = re.findall(rf"^{re.escape(name)}==([^;\s]+)", requirements, flags=re.M)
    if len(set(found)) != 1:
        raise ColabError(f"requirements.txt must pin {name} exactly once for Colab's setup cell (found {found})")
    return f"{name}=={found[0]}"


def setup_cell_source(repo_url: str, folder: str, requirements: str, branch: str = "main",
                      course_dir: str = COURSE_DIR) -> str:
    """The first code cell of a notebook that lives in ``folder`` (``notebooks`` or ``lab``) of the edition."""
    clone = ["git", "clone", "--quiet", "--depth", "1", "--branch", branch,
             f"https://github.com/{github_repo(repo_url)}", course_dir]
    no_deps = [pinned(requirements, name) for name in COLAB_NO_DEPS]
    with_deps = [pinned(requirements, name) for name in COLAB_WITH_DEPS]
    return "\n".join([
        "# On Google Colab only: fetch the course and install what Colab lacks (its own torch stays).",
        "# Anywhere else (JupyterLab on your machine, a JupyterHub) this cell does nothing.",
        "import sys",
        'if "google.colab" in sys.modules:',
        "    import importlib, os, subprocess",
        f"    if not os.path.isdir({json.dumps(course_dir)}):",
        f"        subprocess.run({json.dumps(clone)}, check=True)",
        '    pip = [sys.executable, "-m", "pip", "install", "--quiet"]',
        f'    subprocess.run(pip + ["--no-deps", {", ".join(json.dumps(p) for p in no_deps)}], check=True)',
        f'    subprocess.run(pip + [{", ".join(json.dumps(p) for p in with_deps)}], check=True)',
        f"    sys.path.insert(0, {json.dumps(course_dir)})",
        "    importlib.invalidate_caches()",
        f"    os.chdir(os.path.join({json.dumps(course_dir)}, {json.dumps(folder)}))",
    ])


def with_colab_cells(notebook_json: str, path: str, repo_url: str, requirements: str, branch: str = "main") -> str:
    """The notebook (its JSON text) with the badge and the setup cell first; ``path`` is its place in the edition."""
    nb = json.loads(notebook_json)
    if any(c.get("id") in (BADGE_CELL_ID, SETUP_CELL_ID) for c in nb.get("cells", [])):
        raise ColabError(f"{path} already has Colab cells")
    folder = path.rsplit("/", 1)[0] if "/" in path else "."
    badge = {"cell_type": "markdown", "id": BADGE_CELL_ID, "metadata": {},
             "source": badge_markdown(repo_url, path, branch)}
    setup = {"cell_type": "code", "execution_count": None, "id": SETUP_CELL_ID,
             "metadata": {"tags": ["colab-setup"]}, "outputs": [],
             "source": setup_cell_source(repo_url, folder, requirements, branch)}
    nb["cells"] = [badge, setup] + nb.get("cells", [])
    # Cell ids need nbformat 4.5; the course's notebooks are written by a recent nbformat.
    if (nb.get("nbformat"), nb.get("nbformat_minor", 0)) < (4, 5):
        nb["nbformat"], nb["nbformat_minor"] = 4, 5
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
