"""The playground as a student uses it, in JupyterLab in headless Chromium (slow; about a minute).

Opens notebooks/08_playground.ipynb (a temp copy), runs its first cells up to the playground, presses play and
measures 5 s of play: the epoch counter must advance, the test loss fall, the output picture change, and the
page must draw at least 10 frames a second. Then it pauses (the counter stops), adds a layer and a neuron,
switches the activation and the data set, steps once, and takes a screenshot
(test-artifacts/screenshots/playground.png; docs/playground.png is a copy of one). The figures measured go
to test-artifacts/browser/playground.json.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from browser_support import CHROMIUM_PATH, JupyterLabServer, NotebookDriver, launch_chromium
from conftest import skip_or_fail

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = "notebooks/08_playground.ipynb"
ARTIFACTS = REPO / "test-artifacts"
PLAY_SECONDS = 5.0
MIN_FRAMES_PER_SECOND = 10


def _playground_cell(driver) -> int:
    """Index of the first code cell whose source creates the playground widget."""
    for report in driver.cell_reports():
        if "Playground(" in report.source and "pg =" in report.source:
            return report.index
    raise AssertionError(f"{NOTEBOOK} has no `pg = ...Playground(...)` cell")


class PlaygroundPage:
    """The playground's view in one cell, read and driven through the DOM."""

    def __init__(self, driver: NotebookDriver, index: int):
        self.driver, self.page = driver, driver.page
        self.cell = driver.cell(index)
        self.root = self.cell.locator(".cpg").first

    def state(self) -> dict:
        return self.root.evaluate("""(root) => ({
            epoch: Number(root.dataset.epoch), frames: Number(root.dataset.frames),
            testLoss: Number(root.dataset.testLoss),
            epochText: root.querySelector('.cpg-epoch').textContent,
            layers: root.querySelector('.cpg-layercount').textContent,
            neurons: Array.from(root.querySelectorAll('.cpg-neuroncount'), e => e.textContent),
            output: root.querySelector('.cpg-output').toDataURL(),
            network: root.querySelector('.cpg-netcanvas').toDataURL(),
        })""")

    def button(self, label: str):
        return self.cell.locator(".widget-button", has_text=label).first

    def dropdown(self, description: str):
        return self.cell.locator(".widget-dropdown", has=self.page.locator("label", has_text=description)) \
            .locator("select").first

    def wait_for(self, condition_js: str, arg=None, timeout_ms: int = 30_000) -> None:
        self.page.wait_for_function(
            f"([root, arg]) => {{ const d = root.dataset; return {condition_js}; }}",
            arg=[self.root.element_handle(), arg], timeout=timeout_ms, polling=100)


@pytest.fixture()
def playground_page(tmp_path_factory, playwright):
    if not CHROMIUM_PATH.exists():
        skip_or_fail(f"Chromium is not installed at {CHROMIUM_PATH} (apt-get install chromium)")
    root = tmp_path_factory.mktemp("playground-root")
    (root / "notebooks").mkdir()
    shutil.copy(REPO / NOTEBOOK, root / NOTEBOOK)
    jupyter = Path(sys.executable).parent / "jupyter"
    server = JupyterLabServer(jupyter, root, tmp_path_factory.mktemp("jupyter-state"),
                              log_path=ARTIFACTS / "browser" / "jupyter-server-playground.log")
    with server:
        browser = launch_chromium(playwright)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 1000})
            page = context.new_page()
            page.set_default_timeout(30_000)
            yield NotebookDriver(page, server)
            context.close()
        finally:
            browser.close()
    assert not server.leftover_kernel_pids(), "kernels of the JupyterLab server outlived it"


@pytest.mark.timeout(240)
def test_playground_in_jupyterlab(playground_page):
    try:
        _drive_playground(playground_page)
    except Exception:
        shot = ARTIFACTS / "screenshots" / "playground-failure.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        playground_page.page.screenshot(path=str(shot))
        raise


def _drive_playground(driver: NotebookDriver) -> None:
    page_errors = []  # uncaught exceptions in the page (the front end's JavaScript among them)
    driver.page.on("pageerror", lambda error: page_errors.append(str(error)))
    driver.open_lab()
    driver.open_from_file_browser(NOTEBOOK)
    driver.cell_reports()  # numbers the cells in the DOM
    index = _playground_cell(driver)
    # The imports and the playground itself, run cell by cell as a student does (E's test runs them all).
    # Clear the saved outputs first: the page must show this run's widget, and execution counts start afresh.
    driver._menu("Edit", "Clear Outputs of All Cells")
    reports = [r for r in driver.cell_reports() if r.index <= index and r.source.strip()]
    for report in reports:
        driver.run_cell(report.index, timeout_ms=120_000)
    errors = [r.errors for r in driver.cell_reports() if r.index <= index and r.errors]
    assert not errors, errors
    pg = PlaygroundPage(driver, index)
    pg.root.wait_for(timeout=30_000)
    pg.wait_for("Number(d.frames) >= 1")
    before = pg.state()
    assert before["epoch"] == 0 and before["epochText"] == "000000"
    summary = {"notebook": NOTEBOOK, "load_average_before": os.getloadavg()}

    # -- play for 5 s: the counter advances, the test loss falls, the picture changes, >= 10 frames/s
    pg.button("play").click()
    pg.wait_for("Number(d.epoch) > 0", timeout_ms=15_000)
    start = pg.state()
    started = time.monotonic()
    driver.page.wait_for_timeout(PLAY_SECONDS * 1000)
    end = pg.state()
    seconds = time.monotonic() - started
    frames_per_second = (end["frames"] - start["frames"]) / seconds
    epochs_per_second = (end["epoch"] - start["epoch"]) / seconds
    summary.update(seconds=round(seconds, 2), frames=end["frames"] - start["frames"],
                   epochs=end["epoch"] - start["epoch"], frames_per_second=round(frames_per_second, 1),
                   epochs_per_second=round(epochs_per_second, 1), test_loss_start=before["testLoss"],
                   test_loss_after_play=end["testLoss"], load_average_after=os.getloadavg())
    _write_summary(summary)
    assert end["epoch"] > start["epoch"] + 10, summary
    assert end["testLoss"] < 0.8 * before["testLoss"], summary
    assert end["output"] != before["output"] and end["network"] != before["network"]
    assert frames_per_second >= MIN_FRAMES_PER_SECOND, (
        f"the playground drew {frames_per_second:.1f} frames/s while playing (floor {MIN_FRAMES_PER_SECOND}): {summary}")

    # -- pause: the counter stops
    pg.button("pause").click()
    pg.button("play").wait_for(timeout=10_000)
    driver.page.wait_for_timeout(300)
    paused = pg.state()
    driver.page.wait_for_timeout(1000)
    assert pg.state()["epoch"] == paused["epoch"], "the epoch counter moved after pause"
    assert pg.state()["frames"] == paused["frames"], "frames kept coming after pause"

    # -- add a layer and a neuron (a new network: epoch 0 again)
    assert paused["layers"] == "2 hidden layers", paused["layers"]
    pg.cell.locator(".cpg-add-layer").click()
    pg.wait_for("d.epoch === '0'")
    assert pg.state()["layers"] == "3 hidden layers"
    assert pg.state()["neurons"][2] == "2 neurons"
    pg.cell.locator(".cpg-add-neuron").nth(2).click()
    driver.page.wait_for_function("(c) => c.textContent === '3 neurons'",
                                  arg=pg.cell.locator(".cpg-neuroncount").nth(2).element_handle())
    driver.wait_kernel_idle()
    grown = pg.state()
    assert grown["neurons"] == [paused["neurons"][0], paused["neurons"][1], "3 neurons"], grown["neurons"]

    # -- switch the activation and the data set: new pictures
    pg.dropdown("activation").select_option("relu")
    driver.wait_kernel_idle()
    driver.page.wait_for_timeout(500)
    relu = pg.state()
    assert relu["network"] != grown["network"], "switching to ReLU did not redraw the neurons"
    pg.dropdown("data").select_option("spiral")
    driver.wait_kernel_idle()
    driver.page.wait_for_timeout(500)
    spiral = pg.state()
    assert spiral["output"] != relu["output"], "switching the data set did not redraw the points"
    assert spiral["epoch"] == 0
    assert pg.root.get_attribute("data-hidden") == "4,2,3"

    # -- one step: exactly one epoch
    pg.button("step").click()
    pg.wait_for("d.epoch === '1'")
    driver.page.wait_for_timeout(500)
    assert pg.state()["epoch"] == 1

    # -- switch the sine features on by clicking their pictures, as in the Playground
    canvas = pg.cell.locator(".cpg-netcanvas").first
    for row in (5, 6):  # sin(x1), sin(x2): the 6th and 7th feature boxes (playground.js: LEFT 70, TOP 24,
        # a box of NODE 30 px every NODE + GAP = 38 px); clicked in their middle
        canvas.click(position={"x": 70 + 15, "y": 24 + row * 38 + 15})
        driver.wait_kernel_idle()
    pg.wait_for("d.features === 'x1,x2,sin(x1),sin(x2)'")

    # -- a few seconds of play on the spiral, then the screenshot
    pg.button("play").click()
    driver.page.wait_for_timeout(4000)
    pg.button("pause").click()
    pg.button("play").wait_for(timeout=10_000)
    driver.page.wait_for_timeout(500)
    shot = ARTIFACTS / "screenshots" / "playground.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    widget = pg.cell.locator(".coursekit-playground").first
    widget.scroll_into_view_if_needed()
    widget.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    summary["final_epoch"] = pg.state()["epoch"]
    _write_summary(summary)

    # -- regression: the plane's values as colours, one step of training
    before_regression = pg.state()
    pg.dropdown("problem").select_option("regression")
    driver.wait_kernel_idle()
    pg.button("step").click()
    pg.wait_for("d.epoch === '1'")
    driver.page.wait_for_timeout(500)
    regression = pg.state()
    assert regression["output"] != before_regression["output"]
    assert pg.dropdown("data").input_value() == "plane"
    assert not page_errors, page_errors


def _write_summary(summary: dict) -> None:
    folder = ARTIFACTS / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "playground.json").write_text(json.dumps(summary, indent=2))
