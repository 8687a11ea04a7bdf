"""Shared fixtures. COURSEKIT_REQUIRE_ALL=1 (set by .ci/run) turns every 'missing tool' skip into a failure."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def require_all() -> bool:
    return os.environ.get("COURSEKIT_REQUIRE_ALL") == "1"


def skip_or_fail(reason: str):
    """Skip on a student's machine that lacks an optional tool; fail in CI, where everything must run."""
    if require_all():
        pytest.fail(reason + " (COURSEKIT_REQUIRE_ALL=1: nothing may be skipped)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The folder holding the real Fashion-MNIST files. Tests never download; without the data they fail."""
    from coursekit.data import find_data_dir

    folder = find_data_dir()
    if folder is None:
        pytest.fail("The real Fashion-MNIST files are needed: apt-get install dataset-fashion-mnist, "
                    "or set COURSEKIT_DATA to a folder holding the four original .gz files")
    return folder


def run_in_kernel(*cells: str, timeout: int = 300) -> list:
    """Run code cells in a fresh Jupyter kernel (as a student's notebook would); returns the executed cells."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    NotebookClient(notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    return notebook.cells


@pytest.fixture(scope="session")
def playwright():
    """One Playwright driver for the whole session: its sync API runs an event loop, and a second
    `sync_playwright()` started while the first is alive fails, so every browser test shares this one."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as driver:
        yield driver
