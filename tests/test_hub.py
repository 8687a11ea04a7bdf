"""The course on a JupyterHub: the nbgitpuller link (`coursekit hub-link`), nbgitpuller's merge of an instructor's
update into a student's copy, and (slow) a real JupyterHub on loopback with three students in Chromium.

The hub test runs deploy/jupyterhub_config.py itself, with what a test machine must change on top: a test-only
authenticator (DummyAuthenticator with a password), local processes instead of systemd (so the memory and CPU
limits of the deploy file are not enforced here), loopback ports and state in a temp folder.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import nbformat
import pytest

from conftest import REPO, skip_or_fail
from coursekit import release
from coursekit.hublink import COURSE_FOLDER, HubLinkError, hub_link
from test_release import course_copy

DEPLOY = REPO / "deploy"
DEPLOY_CONFIG = DEPLOY / "jupyterhub_config.py"
PROXY = Path(os.environ.get("COURSEKIT_CHP", shutil.which("configurable-http-proxy") or
                            "/usr/bin/configurable-http-proxy"))
TARGET = COURSE_FOLDER
# The class repository is named for its year: the link still pulls it into ~/mlp-course, where PYTHONPATH points.
CLASS_REPOSITORY = "mlp-course-2026.git"
# The lightest lecture with a live widget (the collapse explorer); 01_hidden_layers has no widget.
HUB_LECTURE = "notebooks/02_linearity_collapse.ipynb"


# ------------------------------------------------------------------------------------------ the link
def test_hub_link_is_nbgitpullers_format_opening_jupyterlab():
    link = hub_link("https://hub.example.edu/", "https://github.com/cls/mlp-course.git",
                    path="notebooks/01_hidden_layers.ipynb")
    parts = urlsplit(link)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "hub.example.edu", "/hub/user-redirect/git-pull")
    assert parse_qs(parts.query) == {"repo": ["https://github.com/cls/mlp-course.git"], "branch": ["main"],
                                     "targetpath": ["mlp-course"],
                                     "urlpath": ["lab/tree/mlp-course/notebooks/01_hidden_layers.ipynb"]}
    # Every value URL-encoded, slashes included (as nbgitpuller's own link generator does).
    assert "repo=https%3A%2F%2Fgithub.com%2Fcls%2Fmlp-course.git" in parts.query
    assert "urlpath=lab%2Ftree%2Fmlp-course%2Fnotebooks%2F01_hidden_layers.ipynb" in parts.query
    # A hub under a prefix, another branch, the folder itself: always ~/mlp-course, whatever the repository's name.
    other = parse_qs(urlsplit(hub_link("https://uni.edu/jupyter", "git@host:cls/course-2026", branch="spring")).query)
    assert other["targetpath"] == ["mlp-course"] and other["urlpath"] == ["lab/tree/mlp-course"]
    assert other["branch"] == ["spring"]
    assert hub_link("https://uni.edu/jupyter/hub/", "r").startswith("https://uni.edu/jupyter/hub/user-redirect/")


@pytest.mark.parametrize("kwargs, message", [
    (dict(hub="hub.example.edu", repo="r"), "http\\(s\\) address"),
    (dict(hub="https://h?x=1", repo="r"), "without \\?query"),
    (dict(hub="https://h", repo="my repo"), "without spaces"),
    (dict(hub="https://h", repo="r", path="../../etc/passwd"), "inside the repository"),
    (dict(hub="https://h", repo="r", target="../elsewhere"), "plain folder name"),
    (dict(hub="https://h", repo="r", target=""), "plain folder name"),
])
def test_hub_link_rejects_what_cannot_work(kwargs, message):
    with pytest.raises(HubLinkError, match=message):
        hub_link(**kwargs)


def test_cli_hub_link(capsys):
    from coursekit.cli import main
    assert main(["hub-link", "--hub", "https://h.edu", "--repo", "https://g/c/mlp.git", "--path", "lab"]) == 0
    assert capsys.readouterr().out.strip() == hub_link("https://h.edu", "https://g/c/mlp.git", path="lab")
    assert main(["hub-link", "--hub", "ftp://h", "--repo", "r"]) == 2
    assert "http(s) address" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ the merge
def _git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True, text=True).stdout


class ClassRepository:
    """The instructor's side: a course copy, its release, and the class repository (bare) it is pushed to."""

    def __init__(self, root: Path):
        self.course = course_copy(root / "course")
        self.edition = root / "edition"
        self.bare = root / CLASS_REPOSITORY
        release.write_release(self.edition, repo=self.course)
        subprocess.run(["git", "clone", "-q", "--bare", str(self.edition), str(self.bare)], check=True)

    @property
    def url(self) -> str:
        return self.bare.as_uri()

    def update(self, lecture: str, text: str) -> str:
        """The instructor appends a markdown cell to a lecture and a new file, releases again and pushes."""
        path = self.course / lecture
        nb = nbformat.read(path, as_version=4)
        nb.cells.append(nbformat.v4.new_markdown_cell(text))
        nb.cells[-1].id = f"instructor-update-{len(nb.cells)}"
        nbformat.write(nb, path)
        (self.course / "notebooks" / "errata.md").write_text(text + "\n")
        commit = release.write_release(self.edition, repo=self.course)
        subprocess.run(["git", "-C", str(self.edition), "push", "-q", str(self.bare), "main"], check=True)
        return commit


def edit_code_cell(path: Path, index: int, note: str) -> str:
    """What a student does in JupyterLab: change a code cell and save (nbformat writes as JupyterLab does)."""
    nb = nbformat.read(path, as_version=4)
    cell = [c for c in nb.cells if c.cell_type == "code"][index]
    cell.source += f"\n{note}"
    nbformat.write(nb, path)
    return cell.source


def nbgitpuller_pull(url: str, target: Path) -> None:
    from nbgitpuller.pull import GitPuller
    for _ in GitPuller(url, str(target), branch="main").pull():
        pass


def test_a_second_pull_merges_the_instructors_update_and_keeps_the_students_edits(tmp_path):
    repo = ClassRepository(tmp_path)
    home = tmp_path / "home" / TARGET
    nbgitpuller_pull(repo.url, home)
    assert (home / HUB_LECTURE).read_bytes() == (repo.edition / HUB_LECTURE).read_bytes()
    # The student edits a code cell near the top of the lecture and adds a notebook of their own.
    edited = edit_code_cell(home / HUB_LECTURE, 0, "# ada: my own note")
    (home / "notebooks" / "scratch.ipynb").write_text((home / HUB_LECTURE).read_text())
    second = repo.update(HUB_LECTURE, "Update: an extra exercise at the end.")
    nbgitpuller_pull(repo.url, home)
    after = nbformat.read(home / HUB_LECTURE, as_version=4)
    code = [c for c in after.cells if c.cell_type == "code"]
    assert code[0].source == edited                                         # the student's edit survives
    assert after.cells[-1].source == "Update: an extra exercise at the end."  # the instructor's update arrived
    assert (home / "notebooks" / "errata.md").read_text() == "Update: an extra exercise at the end.\n"
    assert (home / "notebooks" / "scratch.ipynb").is_file()
    assert second in _git(home, "rev-list", "HEAD").split()
    # The same cell changed on both sides: nbgitpuller keeps the student's version (git merge -Xours).
    edited_again = edit_code_cell(home / HUB_LECTURE, 0, "# ada: a second note")
    nb = nbformat.read(repo.course / HUB_LECTURE, as_version=4)
    [c for c in nb.cells if c.cell_type == "code"][0].source += "\n# instructor: a fix in the same cell"
    nbformat.write(nb, repo.course / HUB_LECTURE)
    release.write_release(repo.edition, repo=repo.course)
    subprocess.run(["git", "-C", str(repo.edition), "push", "-q", str(repo.bare), "main"], check=True)
    nbgitpuller_pull(repo.url, home)
    code = [c for c in nbformat.read(home / HUB_LECTURE, as_version=4).cells if c.cell_type == "code"]
    assert code[0].source == edited_again
    # A file the student deleted comes back from the class repository.
    (home / "notebooks" / "errata.md").unlink()
    repo.update("notebooks/01_hidden_layers.ipynb", "Another update.")
    nbgitpuller_pull(repo.url, home)
    assert (home / "notebooks" / "errata.md").read_text() == "Another update.\n"


# ------------------------------------------------------------------------------------------ release continuity
def add_markdown_cell(course: Path, lecture: str, text: str) -> None:
    nb = nbformat.read(course / lecture, as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell(text))
    nb.cells[-1].id = "update-" + str(len(nb.cells))
    nbformat.write(nb, course / lecture)


def push(edition: Path, bare: Path) -> subprocess.CompletedProcess:
    """What the instructor types to publish: a plain push, never --force."""
    return subprocess.run(["git", "-C", str(edition), "push", "-q", str(bare), "main"], capture_output=True, text=True)


def test_a_lost_build_folder_still_releases_a_fast_forward_that_students_merge(tmp_path):
    repo = ClassRepository(tmp_path)
    home = tmp_path / "home" / TARGET
    nbgitpuller_pull(repo.url, home)
    edited = edit_code_cell(home / HUB_LECTURE, 0, "# ada: my own note")
    published = _git(repo.bare, "rev-parse", "main").strip()
    shutil.rmtree(repo.edition)                        # build/ is lost
    add_markdown_cell(repo.course, HUB_LECTURE, "Update after the lost build folder.")
    # Without the class repository, a new history is refused (the command line's default)...
    with pytest.raises(release.ReleaseError, match="new history"):
        release.write_release(repo.edition, repo=repo.course, new_history=False)
    assert not repo.edition.exists()
    # ...and what it would have made is a root commit that a plain push cannot publish.
    orphan = release.write_release(tmp_path / "orphan", repo=repo.course)
    refused = push(tmp_path / "orphan", repo.bare)
    assert refused.returncode != 0 and "rejected" in refused.stderr, refused.stderr
    assert _git(repo.bare, "rev-parse", "main").strip() == published != orphan
    # Built on the class repository: one commit on top of what students have, pushed without force.
    commit = release.write_release(repo.edition, repo=repo.course, class_repo=repo.url, new_history=False)
    assert _git(repo.edition, "rev-list", "HEAD").split() == [commit, published]
    done = push(repo.edition, repo.bare)
    assert done.returncode == 0, done.stderr
    assert _git(repo.bare, "rev-parse", "main").strip() == commit
    # The student's copy with a local edit merges the update.
    nbgitpuller_pull(repo.url, home)
    after = nbformat.read(home / HUB_LECTURE, as_version=4)
    assert [c for c in after.cells if c.cell_type == "code"][0].source == edited
    assert after.cells[-1].source == "Update after the lost build folder."
    assert commit in _git(home, "rev-list", "HEAD").split()


def test_a_release_folder_behind_the_class_repository_catches_up_and_a_diverged_one_is_refused(tmp_path):
    repo = ClassRepository(tmp_path)
    laptop = tmp_path / "laptop"        # a second machine of the instructor's, cloned from the class repository
    assert release.write_release(laptop, repo=repo.course, class_repo=repo.url) == _git(repo.bare, "rev-parse",
                                                                                         "main").strip()
    pushed = repo.update(HUB_LECTURE, "Published from the first machine.")
    # Behind: fast-forwarded to the published commit; the same sources add nothing.
    assert release.write_release(laptop, repo=repo.course, class_repo=repo.url) == pushed
    # Diverged: the laptop commits something unpublished while the first machine publishes again.
    add_markdown_cell(repo.course, "notebooks/01_hidden_layers.ipynb", "Only on the laptop.")
    local = release.write_release(laptop, repo=repo.course)
    repo.update(HUB_LECTURE, "Published again from the first machine.")
    with pytest.raises(release.ReleaseError, match="diverged"):
        release.write_release(laptop, repo=repo.course, class_repo=repo.url)
    assert _git(laptop, "rev-parse", "HEAD").strip() == local     # nothing was written
    # A class repository that is not a student edition is not built on.
    other = tmp_path / "other"
    subprocess.run(["git", "init", "-q", "-b", "main", str(other)], check=True)
    (other / "notes.txt").write_text("not an edition\n")
    subprocess.run(["git", "-C", str(other), "add", "."], check=True)
    subprocess.run(["git", "-C", str(other), "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qm", "x"],
                   check=True)
    with pytest.raises(release.ReleaseError, match="not a student edition"):
        release.write_release(tmp_path / "from-other", repo=repo.course, class_repo=other.as_uri())
    # An empty class repository (just created): the first release starts the history, and a plain push publishes it.
    empty = tmp_path / "empty.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(empty)], check=True)
    first = release.write_release(tmp_path / "first", repo=repo.course, class_repo=empty.as_uri(), new_history=False)
    assert push(tmp_path / "first", empty).returncode == 0
    assert _git(empty, "rev-parse", "main").strip() == first


def load_deploy_config(tmp_path: Path, **settings: str):
    """deploy/jupyterhub_config.py as the hub loads it, with these COURSE_* environment variables."""
    from traitlets.config import Config
    c = Config()
    env = {"COURSE_HUB_STATE": str(tmp_path), **settings}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        exec(compile(DEPLOY_CONFIG.read_text(), str(DEPLOY_CONFIG), "exec"), {"get_config": lambda: c})
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return c


class FakeSpawner:
    home_dir = "/home/ada"


def test_deploy_config_loads_and_sets_what_the_course_needs(tmp_path):
    c = load_deploy_config(tmp_path, COURSE_ENV="/opt/course/.venv", COURSE_MEM_LIMIT="3G", COURSE_CPU_LIMIT="2",
                           COURSE_IDLE_TIMEOUT="1800")
    assert c.Spawner.cmd == ["/opt/course/.venv/bin/jupyterhub-singleuser"]
    assert c.Spawner.default_url == "/lab"
    assert (c.Spawner.mem_limit, c.Spawner.cpu_limit) == ("3G", 2.0)
    assert c.Spawner.environment["PATH"].startswith("/opt/course/.venv/bin:")
    assert c.Spawner.environment["OMP_NUM_THREADS"] == "2"
    assert c.JupyterHub.spawner_class == "systemdspawner.SystemdSpawner"
    assert c.JupyterHub.authenticator_class == "pam"
    culler = next(s for s in c.JupyterHub.services if s["name"] == "jupyterhub-idle-culler")
    assert culler["command"][1:3] == ["-m", "jupyterhub_idle_culler"] and "--timeout=1800" in culler["command"]
    assert any(role["services"] == [culler["name"]] for role in c.JupyterHub.load_roles)
    assert c.Spawner.environment["PYTHONPATH"](FakeSpawner()) == "/home/ada/mlp-course"
    # Zero to JupyterHub: the image installs exactly requirements.txt; the values match the one-server setup.
    import yaml
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "COPY requirements.txt /tmp/requirements.txt" in dockerfile
    assert "pip install --no-cache-dir -r /tmp/requirements.txt" in dockerfile
    assert "COPY . " not in dockerfile and "lab/" not in dockerfile     # no solutions, no grader in the image
    values = yaml.safe_load((DEPLOY / "z2jh-values.yaml").read_text())
    single = values["singleuser"]
    assert single["defaultUrl"] == "/lab" and single["cmd"] == "jupyterhub-singleuser"
    assert single["memory"]["limit"] == "4G" and single["cpu"]["limit"] == 1
    assert single["storage"]["type"] == "dynamic" and single["storage"]["capacity"]
    assert single["storage"]["homeMountPath"] == "/home/jovyan"
    assert values["cull"]["enabled"] is True and values["cull"]["timeout"] == 3600
    for name in ("jupyterhub", "nbgitpuller", "jupyterhub-idle-culler"):
        assert name in requirement_pins(), name


# ------------------------------------------------------------------------------------------ versions, HTTPS, folder
def requirement_pins(text: str | None = None) -> dict[str, str]:
    text = (REPO / "requirements.txt").read_text() if text is None else text
    return {m[1].lower(): m[2] for m in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)\s*$", text, re.M)}


def version_mismatches(values_text: str, requirements_text: str, helm_texts: dict[str, str]) -> list[str]:
    """What keeps the image from running under the chart the values name: the image's jupyterhub (the pin in
    requirements.txt, which deploy/Dockerfile installs) of another major version than the chart's hub (z2jh docs:
    "Custom Docker Images: JupyterHub version match"), or a helm command that does not pin that chart version."""
    import yaml
    checked = yaml.safe_load(values_text)["custom"]["checkedAgainst"]
    chart, hub = str(checked["chartVersion"]), str(checked["jupyterhubVersion"])
    image = requirement_pins(requirements_text).get("jupyterhub")
    problems = []
    if image is None or image.split(".")[0] != hub.split(".")[0]:
        problems.append(f"the image's jupyterhub=={image} is not the major version of chart {chart}'s JupyterHub {hub}")
    for where, text in helm_texts.items():
        commands = re.findall(r"helm (?:upgrade|install)\b(?:[^\n]*\\\n)*[^\n]*", text)
        if not commands:
            problems.append(f"{where}: no helm command")
        problems += [f"{where}: {cmd!r} does not pin --version {chart}" for cmd in commands
                     if not re.search(rf"--version[ =]{re.escape(chart)}(\s|$)", cmd)]
    return problems


def test_the_images_jupyterhub_has_the_major_version_of_the_charts_hub():
    values = (DEPLOY / "z2jh-values.yaml").read_text()
    requirements = (REPO / "requirements.txt").read_text()
    helm_texts = {"deploy/README.md": (DEPLOY / "README.md").read_text(), "deploy/z2jh-values.yaml": values}
    assert version_mismatches(values, requirements, helm_texts) == []
    # The hub test runs what the image would: the environment holds exactly the pinned jupyterhub.
    assert importlib.metadata.version("jupyterhub") == requirement_pins()["jupyterhub"]
    # Nothing in the image installs another jupyterhub over the pinned one.
    assert re.findall(r"jupyterhub[=<>]", (DEPLOY / "Dockerfile").read_text()) == []
    # The check can fail: the 6.x pin this file once had, an unpinned chart.
    wrong = re.sub(r"^jupyterhub==\S+", "jupyterhub==6.1.1", requirements, flags=re.M)
    assert [p for p in version_mismatches(values, wrong, {}) if "not the major version" in p]
    unpinned = {"README": "helm upgrade --install mlp-course jupyterhub/jupyterhub \\\n  -f values.yaml\n"}
    assert [p for p in version_mismatches(values, requirements, unpinned) if "does not pin" in p]


def test_z2jh_values_serve_https_at_the_oauth_callbacks_host():
    import yaml
    values = yaml.safe_load((DEPLOY / "z2jh-values.yaml").read_text())
    https = values["proxy"]["https"]
    assert https["enabled"] is True and https["letsencrypt"]["contactEmail"]
    authenticator = values["hub"]["config"]["JupyterHub"]["authenticator_class"]
    callback = urlsplit(values["hub"]["config"]["GitHubOAuthenticator"]["oauth_callback_url"])
    assert authenticator == "github"
    assert callback.scheme == "https" and callback.path == "/hub/oauth_callback"
    assert https["hosts"] == [callback.netloc]


def test_the_course_folder_is_named_once(tmp_path):
    """hub-link's targetpath, the one-server hub's PYTHONPATH and the image's PYTHONPATH name the same folder; the
    values leave PYTHONPATH to the image."""
    import yaml
    link = parse_qs(urlsplit(hub_link("https://h.edu", "https://g/c/anything-else.git")).query)
    assert link["targetpath"] == [COURSE_FOLDER]
    c = load_deploy_config(tmp_path)
    assert c.Spawner.environment["PYTHONPATH"](FakeSpawner()) == f"/home/ada/{COURSE_FOLDER}"
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^ARG COURSE_FOLDER=(\S+)$", dockerfile, re.M)[1] == COURSE_FOLDER
    assert "PYTHONPATH=/home/jovyan/${COURSE_FOLDER}" in dockerfile
    values = yaml.safe_load((DEPLOY / "z2jh-values.yaml").read_text())
    assert "PYTHONPATH" not in (values["singleuser"].get("extraEnv") or {})
    assert values["singleuser"]["storage"]["homeMountPath"] == "/home/jovyan"


def test_a_class_repository_named_for_its_year_still_imports_coursekit_in_a_notebook(tmp_path):
    """mlp-course-2026.git, pulled through the link as nbgitpuller does, then a notebook of it run by a kernel with
    the hub's environment: coursekit comes from the student's copy (not from this checkout's installed package)."""
    repo = ClassRepository(tmp_path / "instructor")
    assert repo.bare.name == "mlp-course-2026.git"
    target = parse_qs(urlsplit(hub_link("https://h.edu", repo.url)).query)["targetpath"][0]
    home = tmp_path / "home" / "ada"
    nbgitpuller_pull(repo.url, home / target)
    c = load_deploy_config(tmp_path / "state")

    class Spawner:
        home_dir = str(home)
    env = dict(os.environ, PYTHONPATH=c.Spawner.environment["PYTHONPATH"](Spawner()), OMP_NUM_THREADS="1")
    notebook = home / target / "notebooks" / "where.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import coursekit\nprint(coursekit.__file__)")]), notebook)
    done = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                           "--stdout", str(notebook)], cwd=notebook.parent, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = nbformat.reads(done.stdout, as_version=4).cells[0].outputs[0]["text"].strip()
    assert printed == str(home / "mlp-course" / "coursekit" / "__init__.py")


def test_non_local_logins_get_a_unix_account_for_systemdspawner(tmp_path):
    """Any authenticator other than PAM becomes a LocalAuthenticator that makes the student's account at the first
    login (SystemdSpawner runs the server as it); names of system accounts are refused. The account command is
    replaced by a recorder here (this test must not add users to the machine)."""
    import asyncio
    import inspect
    from concurrent.futures import ThreadPoolExecutor
    from jupyterhub.auth import DummyAuthenticator, LocalAuthenticator

    def run(coroutine):
        """asyncio.run in a thread of its own: the session's Playwright (an earlier browser test) keeps an event
        loop running in this one, where asyncio.run refuses to start."""
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, coroutine).result()
    c = load_deploy_config(tmp_path, COURSE_AUTHENTICATOR="dummy")
    cls = c.JupyterHub.authenticator_class
    assert issubclass(cls, LocalAuthenticator) and issubclass(cls, DummyAuthenticator)
    assert c.LocalAuthenticator.create_system_users is True
    assert {"root", "daemon", "nobody"} <= c.Authenticator.blocked_users
    record = tmp_path / "adduser.log"
    recorder = tmp_path / "adduser"
    recorder.write_text(f"#!/bin/sh\necho \"$@\" >> {record}\n")
    recorder.chmod(0o755)
    c.LocalAuthenticator.add_user_cmd = [str(recorder), "--disabled-password"]
    authenticator = cls(config=c)

    class User:
        name = "new-student-h5"
    run(authenticator.add_user(User()))
    assert record.read_text().split() == ["--disabled-password", "new-student-h5"]
    blocked = authenticator.check_blocked_users("root", None)
    assert (run(blocked) if inspect.isawaitable(blocked) else blocked) is False
    # PAM (the default) makes no accounts: they are the server's own.
    assert load_deploy_config(tmp_path).LocalAuthenticator.get("create_system_users") is None
    with pytest.raises(ValueError, match="no installed authenticator"):
        load_deploy_config(tmp_path, COURSE_AUTHENTICATOR="no-such-login")


# ------------------------------------------------------------------------------------------ the hub
STUDENTS = ("ada", "bob", "cy")
PASSWORD = "course-test-password"


def _free_port() -> int:
    from browser_support import free_loopback_port
    return free_loopback_port()


class Hub:
    """deploy/jupyterhub_config.py on loopback with the test-only pieces on top. Use as a context manager."""

    def __init__(self, root: Path, data_dir: Path):
        self.root = root
        self.homes = root / "homes"
        self.port, self.hub_port, self.api_port = _free_port(), _free_port(), _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "hub.log"
        self.data_dir = data_dir
        self.process = None

    def write_config(self) -> Path:
        self.homes.mkdir(parents=True)
        for user in STUDENTS:
            # Each home: JupyterLab without the news popup that would cover the page.
            labconfig = self.homes / user / ".jupyter" / "labconfig"
            labconfig.mkdir(parents=True)
            (labconfig / "page_config.json").write_text(json.dumps(
                {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
        args = ["--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                "--ServerApp.shutdown_no_activity_timeout=900"]
        if os.geteuid() == 0:
            args.append("--allow-root")
        config = self.root / "jupyterhub_config.py"
        config.write_text(f"""
c = get_config()
load_subconfig({str(DEPLOY_CONFIG)!r})
# Test-only: a shared password, local processes with a home per student under the temp folder, loopback.
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = {PASSWORD!r}
c.Authenticator.allow_all = False
c.Authenticator.allowed_users = {set(STUDENTS)!r}
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {str(self.homes / "{username}")!r}
c.Spawner.args = {args!r}
c.Spawner.environment["COURSEKIT_DATA"] = {str(self.data_dir)!r}
c.Spawner.environment["OMP_NUM_THREADS"] = "1"
c.JupyterHub.bind_url = {self.url!r}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {self.hub_port}
c.ConfigurableHTTPProxy.command = [{str(PROXY)!r}]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{self.api_port}"
c.JupyterHub.pid_file = {str(self.root / "hub.pid")!r}
""")
        return config

    def start(self, timeout: float = 90) -> "Hub":
        config = self.write_config()
        env = dict(os.environ, COURSE_ENV=sys.prefix, COURSE_HUB_STATE=str(self.root), COURSE_IDLE_TIMEOUT="900",
                   OMP_NUM_THREADS="1")
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        # Debian's proxy finds its modules in /usr/share/nodejs; a node from another source (NodeSource's
        # repack, as on this machine) does not look there by itself.
        env["NODE_PATH"] = os.pathsep.join(p for p in (env.get("NODE_PATH"), "/usr/share/nodejs") if p)
        jupyterhub = Path(sys.executable).parent / "jupyterhub"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen([str(jupyterhub), "-f", str(config)], cwd=self.root, env=env,
                                        stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyterhub exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/hub/api/", timeout=5) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        raise TimeoutError(f"jupyterhub did not answer on {self.url} in {timeout} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 5000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def leftover_pids(self) -> list[int]:
        """Single-user servers and kernels of this hub: their HOME lies under our homes folder."""
        marker = f"HOME={self.homes}/".encode()
        pids = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit() and int(proc.name) != os.getpid():
                try:
                    if marker in (proc / "environ").read_bytes():
                        pids.append(int(proc.name))
                except OSError:
                    continue
        return pids

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)   # the hub stops the servers it started and the proxy
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        for pid in self.leftover_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> "Hub":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def log_in_through_link(page, link: str, user: str, timeout_ms: int = 180_000) -> None:
    """Follow the nbgitpuller link as a student: the hub's login form, then the spawn and the pull, JupyterLab."""
    page.goto(link, timeout=timeout_ms)
    if page.locator("#username_input").count():
        page.fill("#username_input", user)
        page.fill("#password_input", PASSWORD)
        page.click("#login_submit")
    page.wait_for_function("() => !!window.jupyterapp", timeout=timeout_ms)


@pytest.mark.slow
def test_three_students_on_a_real_hub(tmp_path, real_data_dir, playwright):
    if not PROXY.exists():
        skip_or_fail(f"configurable-http-proxy not found at {PROXY} (apt-get install node-configurable-http-proxy)")
    from browser_support import CHROMIUM_PATH, NotebookDriver, launch_chromium
    if not CHROMIUM_PATH.exists():
        skip_or_fail(f"Chromium not found at {CHROMIUM_PATH} (apt-get install chromium)")

    repo = ClassRepository(tmp_path / "instructor")
    timings = {}
    with Hub(tmp_path / "hub", real_data_dir) as hub:
        link = hub_link(hub.url, repo.url, path=HUB_LECTURE)
        browser = launch_chromium(playwright)
        pages, notes = {}, {}
        try:
            for user in STUDENTS:
                started = time.monotonic()
                context = browser.new_context(viewport={"width": 1400, "height": 1000})
                page = pages[user] = context.new_page()
                log_in_through_link(page, link, user)
                assert page.url.startswith(f"{hub.url}/user/{user}/lab"), page.url
                driver = NotebookDriver(page, server=None)
                driver.wait_kernel_idle(f"{TARGET}/{HUB_LECTURE}", timeout_ms=120_000)
                driver.clear_and_run_all(timeout_ms=300_000)
                reports = driver.cell_reports()
                errors = [(r.headline(), r.errors + r.domTracebacks) for r in reports
                          if (r.errors or r.domTracebacks) and not r.expected_error]
                assert not errors, errors
                assert all(r.executionCount is not None for r in reports if r.source.strip())
                widget_cells = [r for r in reports if r.has_controls]
                assert widget_cells and all(r.widgetFallbacks == [] for r in widget_cells), widget_cells
                cell = widget_cells[0]
                move = driver.move_control(cell.index, "slider" if cell.sliders else "dropdown")
                assert move.output_changed, move
                # The student changes the first code cell (it imports coursekit), runs it and saves: the kernel
                # imports coursekit from the student's own copy of the edition (PYTHONPATH of the deploy config).
                first = next(r for r in reports if r.source.strip())
                assert "import coursekit" in first.source
                notes[user] = f"# note of {user}: only in {user}'s home"
                driver.set_cell_source(first.index, first.source + "\nprint('coursekit from', coursekit.__file__)  "
                                       + notes[user])
                driver.run_cell(first.index, timeout_ms=60_000)
                printed = next(r for r in driver.cell_reports() if r.index == first.index).text
                assert f"coursekit from {hub.homes / user / TARGET / 'coursekit' / '__init__.py'}" in printed, printed
                page.keyboard.press("ControlOrMeta+s")
                saved = hub.homes / user / TARGET / HUB_LECTURE
                deadline = time.monotonic() + 30
                while notes[user] not in saved.read_text() and time.monotonic() < deadline:
                    time.sleep(0.3)
                assert notes[user] in saved.read_text()
                timings[user] = round(time.monotonic() - started, 1)

            # Three homes, each with its own copy and only its own student's edit.
            for user in STUDENTS:
                text = (hub.homes / user / TARGET / HUB_LECTURE).read_text()
                assert [u for u in STUDENTS if notes[u] in text] == [user]
            # ada's login does not open bob's server.
            answer = pages["ada"].request.get(f"{hub.url}/user/bob/api/contents/{TARGET}/{HUB_LECTURE}")
            assert notes["bob"] not in answer.text() and '"nbformat"' not in answer.text(), answer.status

            # The instructor publishes an update; ada follows the link again: her edit stays, the update arrives.
            repo.update(HUB_LECTURE, "Update from the instructor: one more exercise.")
            log_in_through_link(pages["ada"], link, "ada")
            NotebookDriver(pages["ada"], server=None).wait_kernel_idle(f"{TARGET}/{HUB_LECTURE}", timeout_ms=120_000)
            on_disk = nbformat.read(hub.homes / "ada" / TARGET / HUB_LECTURE, as_version=4)
            assert any(notes["ada"] in c.source for c in on_disk.cells)
            assert on_disk.cells[-1].source == "Update from the instructor: one more exercise."
            shown = pages["ada"].evaluate("""() => {
                const w = window.jupyterapp.shell.currentWidget;
                return w.content.widgets.map(c => c.model.sharedModel.getSource()); }""")
            assert any(notes["ada"] in s for s in shown) and shown[-1] == on_disk.cells[-1].source
            assert (hub.homes / "ada" / TARGET / "notebooks" / "errata.md").is_file()
            assert not (hub.homes / "bob" / TARGET / "notebooks" / "errata.md").exists()   # bob has not pulled
        except Exception:
            print(hub.log_tail())
            raise
        finally:
            browser.close()
    print(f"per student (login, spawn, pull, run {HUB_LECTURE}, widget, edit): {timings}")
