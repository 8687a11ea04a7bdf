"""The single-user image of Zero to JupyterHub (deploy/Dockerfile), built and run here.

No registry is reachable, so the image is built by podman on a Debian bookworm made by debootstrap
(tests/containers.py; ``--build-arg BASE_IMAGE=`` that local image instead of the default python:3.11-slim).
Then, as on the chart: the server runs in the image as uid 1000 with an empty home mounted at /home/jovyan (the
chart's per-user volume), a student follows the nbgitpuller link of a class repository named mlp-course-2026, and
lecture 02 runs in Chromium with its widget moved; the kernel imports coursekit from ~/mlp-course (the image's
PYTHONPATH). The server is JupyterLab with a token (jupyterhub-singleuser needs a hub to talk to; the hub side is
tests/test_hub.py's).

The image is kept between runs under a tag made from the Dockerfile, requirements.txt and the base image, so a
second run on the same machine skips the build; a fresh machine (CI) builds it.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import REPO, skip_or_fail
from test_hub import CLASS_REPOSITORY, HUB_LECTURE, TARGET, ClassRepository, requirement_pins
from coursekit.hublink import hub_link

DOCKERFILE = REPO / "deploy" / "Dockerfile"
IMAGE_NAME = "localhost/mlp-course-singleuser"
HOME_IN_IMAGE = "/home/jovyan"


def image_tag(base: str) -> str:
    digest = hashlib.sha256(DOCKERFILE.read_bytes() + (REPO / "requirements.txt").read_bytes() + base.encode())
    return f"{IMAGE_NAME}:{digest.hexdigest()[:12]}"


def image_size_bytes(image: str) -> int:
    done = subprocess.run(["podman", "image", "inspect", "--format", "{{.Size}}", image], capture_output=True,
                          text=True, check=True)
    return int(done.stdout.strip())


@pytest.fixture(scope="module")
def singleuser_image(tmp_path_factory):
    import containers
    containers.require_podman()
    base = containers.base_image("bookworm")
    tag = image_tag(base)
    if containers.image_exists(tag):
        print(f"{tag}: built earlier on this machine, reused")
    else:
        # Only what the Dockerfile copies goes in the context (not this checkout with its venv and solutions).
        context = tmp_path_factory.mktemp("image-context")
        shutil.copy(REPO / "requirements.txt", context / "requirements.txt")
        started = time.monotonic()
        containers.podman_build(context, DOCKERFILE, tag, {"BASE_IMAGE": base}, pip=True, local_wheels=True,
                                timeout=3000)
        print(f"{tag}: built in {time.monotonic() - started:.0f} s")
        # Earlier builds (another Dockerfile or pins) are several GB each: keep only this one.
        listed = subprocess.run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}", IMAGE_NAME],
                                capture_output=True, text=True).stdout.split()
        for old in set(listed) - {tag}:
            containers.remove_image(old)
    print(f"{tag}: {image_size_bytes(tag) / 1e9:.2f} GB")
    return tag


def in_image(image: str, *argv: str) -> str:
    import containers
    return containers.podman_run(image, list(argv), timeout=300).stdout.strip()


@pytest.mark.slow
def test_the_image_has_the_pinned_jupyterhub_and_the_course_environment(singleuser_image):
    script = ("import jupyterhub, nbgitpuller, os, shutil, sys; print(jupyterhub.__version__); "
              "print(shutil.which('jupyterhub-singleuser')); print(sys.prefix); print(os.getuid()); "
              "print(os.environ['PYTHONPATH']); print(os.environ['NBGITPULLER_APP'])")
    lines = in_image(singleuser_image, "python", "-c", script).splitlines()
    # The chart's hub is JupyterHub 5.5.0: the image's must be the pinned one, of the same major version.
    assert lines == [requirement_pins()["jupyterhub"], "/opt/mlp-course/bin/jupyterhub-singleuser",
                     "/opt/mlp-course", "1000", f"{HOME_IN_IMAGE}/{TARGET}", "lab"]
    # No solutions, grader or course package in the image: students' code arrives through the link.
    import containers
    missing = containers.podman_run(singleuser_image, ["python", "-c", "import coursekit"], check=False, timeout=300)
    assert missing.returncode == 1 and "ModuleNotFoundError" in missing.stderr, missing.stderr


def wait_for_server(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server in the image exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.5)
    raise TimeoutError(f"no answer from {url} in {timeout} s")


@pytest.mark.slow
def test_the_image_serves_lecture_02_with_live_widgets_through_the_link(singleuser_image, tmp_path, playwright):
    import containers
    from browser_support import CHROMIUM_PATH, NotebookDriver, free_loopback_port, launch_chromium
    if not CHROMIUM_PATH.exists():
        skip_or_fail(f"Chromium not found at {CHROMIUM_PATH} (apt-get install chromium)")
    repo = ClassRepository(tmp_path / "instructor")
    # The chart's home volume: empty but for JupyterLab's news popup switched off, owned by the server's uid.
    home = tmp_path / "home"
    labconfig = home / ".jupyter" / "labconfig"
    labconfig.mkdir(parents=True)
    (labconfig / "page_config.json").write_text(
        '{"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": true}}')
    for path in [home, *home.rglob("*"), repo.bare, *repo.bare.rglob("*")]:
        os.chown(path, 1000, 1000, follow_symlinks=False)
    port, token = free_loopback_port(), secrets.token_hex(16)
    name = f"coursekit-singleuser-{secrets.token_hex(6)}"
    server = subprocess.Popen(
        ["podman", "run", "--rm", "--name", name, "--runtime", "runc", "--network=host", *containers.ulimit_args(),
         "-v", f"{home}:{HOME_IN_IMAGE}", "-v", f"{repo.bare}:/srv/{CLASS_REPOSITORY}:ro", singleuser_image,
         "jupyter", "lab", "--ip=127.0.0.1", f"--port={port}", "--no-browser", f"--ServerApp.token={token}",
         "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        stdout=open(tmp_path / "server.log", "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    try:
        wait_for_server(f"{base}/api/status?token={token}", server)
        # The link a student gets, pointed at this server instead of a hub: the same query (targetpath mlp-course).
        query = urlsplit(hub_link("https://hub.invalid", f"file:///srv/{CLASS_REPOSITORY}", path=HUB_LECTURE)).query
        browser = launch_chromium(playwright)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.goto(f"{base}/git-pull?{query}&token={token}", timeout=180_000)
            page.wait_for_function("() => !!window.jupyterapp", timeout=180_000)
            driver = NotebookDriver(page, server=None)
            driver.wait_kernel_idle(f"{TARGET}/{HUB_LECTURE}", timeout_ms=180_000)
            driver.clear_and_run_all(timeout_ms=400_000)
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
            first = next(r for r in reports if r.source.strip())
            assert "import coursekit" in first.source
            driver.set_cell_source(first.index, first.source + "\nimport sys\nprint('coursekit from', "
                                   "coursekit.__file__, 'python', sys.executable)")
            driver.run_cell(first.index, timeout_ms=60_000)
            printed = next(r for r in driver.cell_reports() if r.index == first.index).text
            assert (f"coursekit from {HOME_IN_IMAGE}/{TARGET}/coursekit/__init__.py python "
                    f"/opt/mlp-course/bin/python") in printed, printed
        finally:
            browser.close()
        assert (home / TARGET / HUB_LECTURE).is_file()          # the pull landed in the home volume
    except Exception:
        print((tmp_path / "server.log").read_text(errors="replace")[-5000:])
        raise
    finally:
        subprocess.run(["podman", "rm", "--force", "--time", "5", name], capture_output=True, timeout=120)
        server.wait(timeout=60)
    print(f"link, pull, lecture 02 run and widget moved in the image: {time.monotonic() - started:.0f} s")
