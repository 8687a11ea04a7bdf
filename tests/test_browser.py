"""The course as students meet it: JupyterLab in a real (headless) browser.

A session-wide JupyterLab serves a temp copy of notebooks/ and lab/ (the work tree is never touched).
For every lecture notebook and the student lab the test opens it from the file browser, clears and runs all
cells from the menus, then checks what the page shows: no error output, figures drawn as images, widgets
drawn as real controls whose output follows them; in the lab, the self-check's pass/fail feedback.
One screenshot per notebook lands in test-artifacts/screenshots/ for a person to look at.

A small notebook built here (a d2l plot, an interactive slider + dropdown, a one-question self-check) tests
the harness itself, and a second one with planted faults checks that the detectors catch them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

from browser_support import CHROMIUM_PATH, JupyterLabServer, NotebookDriver, launch_chromium
from conftest import skip_or_fail

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
SERVED_FOLDERS = ("notebooks", "lab")
SMOKE_FOLDER = "browser-smoke"
LAB_NOTEBOOK = "lab/mlp_lab.ipynb"
# Notebook 05 trains for a few minutes on 2 busy cores; a slower machine can raise the limit (seconds).
RUN_ALL_TIMEOUT_MS = int(os.environ.get("COURSEKIT_BROWSER_RUN_ALL_TIMEOUT", "600")) * 1000
WIDGET_TIMEOUT_MS = 60_000
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
IMAGE_MIMES = ("image/png", "image/svg+xml", "image/jpeg")
# A cell that calls the self-check (coursekit.selfcheck.check), not one that mentions it in a comment.
SELF_CHECK_CALL = re.compile(r"""^\s*check\(\s*["'](q\d+)["']\s*\)\s*$""", re.M)
# What check("qN") prints: one line per public test, then a summary line.
CHECK_TEST_LINE = re.compile(r"^\s*(PASS|FAIL|TODO)\s{2}\S", re.M)
STUB_RAISE = re.compile(r"""raise NotImplementedError\(\s*["']TODO[^\n]*""")


def course_notebooks() -> list[str]:
    """The lecture notebooks and the student lab present in the work tree, as paths relative to the repo."""
    found = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "notebooks").glob("*.ipynb"))
    if (REPO / LAB_NOTEBOOK).is_file():
        found.append(LAB_NOTEBOOK)
    return found


def tree_hashes() -> dict[str, str]:
    """sha256 of every file under notebooks/ and lab/ (bytecode caches aside: other tests import from lab/)."""
    hashes = {}
    for folder in SERVED_FOLDERS:
        for path in sorted((REPO / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                hashes[path.relative_to(REPO).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


# ------------------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM_PATH.exists():
        skip_or_fail(f"Chromium is not installed at {CHROMIUM_PATH} (apt-get install chromium)")
    return CHROMIUM_PATH


@pytest.fixture(scope="session")
def work_tree_before() -> dict[str, str]:
    return tree_hashes()


SMOKE_STUB = 'def double(x):\n    """2 x, elementwise."""\n    raise NotImplementedError("TODO: implement double")'
SMOKE_SOLUTION = 'def double(x):\n    """2 x, elementwise."""\n    return x + x'


def _write_smoke_notebooks(folder: Path) -> None:
    folder.mkdir(parents=True)
    kernelspec = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    smoke = nbformat.v4.new_notebook(metadata={"kernelspec": kernelspec})
    smoke.cells = [
        nbformat.v4.new_markdown_cell("# Browser harness smoke test"),
        nbformat.v4.new_code_cell("import sys\nprint('kernel prefix:', sys.prefix)"),
        nbformat.v4.new_code_cell(
            "import torch\nfrom d2l import torch as d2l\n"
            "x = torch.arange(0, 6.3, 0.1)\n"
            "d2l.plot(x, [torch.sin(x), torch.cos(x)], 'x', 'f(x)', legend=['sin', 'cos'])"),
        nbformat.v4.new_code_cell(
            "import ipywidgets as widgets\nimport matplotlib.pyplot as plt\n\n"
            "def show(width, kind):\n"
            "    print(f'width={width} kind={kind}')\n"
            "    fig, ax = plt.subplots(figsize=(3, 2))\n"
            "    (ax.plot if kind == 'line' else ax.bar)(range(width), [i * i for i in range(width)])\n"
            "    plt.show()\n\n"
            "widgets.interactive(show, width=widgets.IntSlider(value=4, min=1, max=10),\n"
            "                    kind=widgets.Dropdown(options=['line', 'bar']))"),
        # A one-question lab built like lab/mlp_lab.ipynb (stub, public test, check) for the self-check path.
        nbformat.v4.new_code_cell("from coursekit.selfcheck import check, expect_close"),
        nbformat.v4.new_code_cell(SMOKE_STUB),
        nbformat.v4.new_code_cell(
            "def test_q1_double():\n    \"\"\"double(x) is 2 x\"\"\"\n    x = torch.arange(4.0)\n"
            "    expect_close('double(x)', double(x), 2 * x, inputs=x)"),
        nbformat.v4.new_code_cell('check("q1")'),
    ]
    smoke.cells[-3].id = "q1-solution"
    nbformat.write(smoke, folder / "harness_smoke.ipynb")

    faults = nbformat.v4.new_notebook(metadata={"kernelspec": kernelspec})
    faults.cells = [
        # An error the author meant to show (nbval's tag): neither reported nor stopping run-all.
        nbformat.v4.new_code_cell("raise KeyError('shown on purpose')", metadata={"tags": ["raises-exception"]}),
        nbformat.v4.new_code_cell("display({'text/plain': 'IntSlider(value=3, max=10)'}, raw=True)"),
        nbformat.v4.new_code_cell("display({'text/plain': '<Figure size 640x480 with 1 Axes>'}, raw=True)"),
        nbformat.v4.new_code_cell("raise ValueError('planted fault')"),
        nbformat.v4.new_code_cell("print('never runs: run-all stops at the error')"),
    ]
    nbformat.write(faults, folder / "planted_faults.ipynb")


@pytest.fixture(scope="session")
def served_root(tmp_path_factory, work_tree_before) -> Path:
    root = tmp_path_factory.mktemp("browser-root")
    for folder in SERVED_FOLDERS:
        if (REPO / folder).is_dir():
            shutil.copytree(REPO / folder, root / folder,
                            ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    _write_smoke_notebooks(root / SMOKE_FOLDER)
    return root


@pytest.fixture(scope="session")
def lab_server(chromium_path, served_root, tmp_path_factory):
    # The project's own jupyter, next to the python running the tests (the venv).
    jupyter = Path(sys.executable).parent / "jupyter"
    server = JupyterLabServer(jupyter, served_root, tmp_path_factory.mktemp("jupyter-state"),
                              log_path=ARTIFACTS / "browser" / "jupyter-server.log")
    with server:
        yield server
    assert not server.is_running(), "the JupyterLab server outlived its fixture"
    assert not server.leftover_kernel_pids(), "kernels of the JupyterLab server outlived it"


@pytest.fixture(scope="session")
def browser(chromium_path, playwright):
    chromium = launch_chromium(playwright)
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture()
def driver(browser, lab_server):
    """A fresh page on the session's JupyterLab; its kernels are shut down afterwards."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        yield NotebookDriver(page, lab_server)
    finally:
        context.close()
        lab_server.shutdown_kernels()


# ------------------------------------------------------------------------------------------------ checks

def committed_expectations(path: Path) -> tuple[set[int], set[int]]:
    """Cells that show a figure / a widget in the committed notebook (outputs of a fresh nbclient run)."""
    notebook = nbformat.read(path, as_version=4)
    figures, widgets = set(), set()
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if any(mime in data for mime in IMAGE_MIMES):
                figures.add(index)
            if WIDGET_MIME in data:
                widgets.add(index)
    return figures, widgets


def page_problems(reports, expected_figures=frozenset(), expected_widgets=frozenset()) -> list[str]:
    """Everything wrong with a run-all as the page shows it, one line each."""
    problems = []
    by_index = {r.index: r for r in reports}
    for r in reports:
        if r.errors and not r.expected_error:
            problems.append(f"{r.headline()}: error output {r.errors}")
        elif r.domTracebacks and not r.expected_error:
            problems.append(f"{r.headline()}: shows a traceback: {r.domTracebacks[0][:300]!r}")
        if r.source.strip() and r.executionCount is None:
            problems.append(f"{r.headline()}: did not run")
        if r.imagesLoaded < r.images:
            problems.append(f"{r.headline()}: {r.images - r.imagesLoaded} of {r.images} images failed to load")
        if r.figureTexts:
            problems.append(f"{r.headline()}: a figure shows as its text `<Figure size ...>`, not as an image")
        if r.widgetFallbacks:
            problems.append(f"{r.headline()}: widget shows its text fallback {r.widgetFallbacks[0]!r}")
    for index in sorted(expected_figures):
        r = by_index.get(index)
        if r is not None and r.images == 0 and r.executionCount is not None:
            problems.append(f"{r.headline()}: the committed notebook has a figure here, the page shows none")
    for index in sorted(expected_widgets):
        r = by_index.get(index)
        if r is not None and r.widgetViews == 0 and r.executionCount is not None:
            problems.append(f"{r.headline()}: the committed notebook has a widget here, the page shows no control")
    return problems


def exercise_widgets(driver, reports) -> tuple[list, list[str]]:
    """In every widget cell move its first slider and its first dropdown; each must change what it drives."""
    moves, problems = [], []
    for r in reports:
        if r.widgetViews == 0:
            continue
        if not r.has_controls:
            problems.append(f"{r.headline()}: widget output without a slider or dropdown to move")
            continue
        controls = ["slider"] * bool(r.sliders) + ["dropdown"] * bool(r.dropdowns)
        for control in controls:
            move = driver.move_control(r.index, control, WIDGET_TIMEOUT_MS)
            moves.append(move)
            if move.before_value == move.after_value:
                problems.append(f"{r.headline()}: the {control} did not move (value stays {move.before_value})")
            elif not move.output_changed:
                problems.append(f"{r.headline()}: moving the {control} {move.before_value} -> "
                                f"{move.after_value} did not change its output ({move.detail})")
    after = {r.index: r for r in driver.cell_reports()}
    for move in {m.cell: m for m in moves}.values():
        r = after[move.cell]
        if r.domTracebacks:
            problems.append(f"{r.headline()}: after moving its {move.control}: {r.domTracebacks[0][:300]!r}")
        if r.widgetFallbacks:
            problems.append(f"{r.headline()}: after moving its {move.control}: {r.widgetFallbacks[0]!r}")
    return moves, problems


def write_summary(name: str, data: dict) -> None:
    folder = ARTIFACTS / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(data, indent=2, default=str))


def screenshot_path(relative_path: str) -> Path:
    return SCREENSHOTS / (relative_path.replace("/", "__").removesuffix(".ipynb") + ".png")


# ------------------------------------------------------------------------------------------------ tests

@pytest.mark.timeout(240)
def test_harness_smoke_notebook(driver):
    """The harness on a notebook of known content: venv kernel, a d2l figure, a slider and a dropdown that work."""
    path = f"{SMOKE_FOLDER}/harness_smoke.ipynb"
    driver.open_lab()
    driver.open_from_file_browser(path)
    try:
        driver.clear_and_run_all(RUN_ALL_TIMEOUT_MS)
        reports = driver.cell_reports()
        assert page_problems(reports) == []
        kernel_cell, plot_cell, widget_cell, *_, check_cell = reports
        assert f"kernel prefix: {sys.prefix}" in kernel_cell.text, "the kernel is not the project's venv python"
        assert plot_cell.images == plot_cell.imagesLoaded == 1
        assert all(r.seconds is not None and r.seconds >= 0 for r in reports), "cell timings not recorded"
        assert widget_cell.widgetViews == 1 and widget_cell.sliders == 1 and widget_cell.dropdowns == 1
        assert "width=4 kind=line" in widget_cell.text and widget_cell.images == 1

        slider_move = driver.move_control(widget_cell.index, "slider", WIDGET_TIMEOUT_MS)
        assert (slider_move.control, slider_move.before_value, slider_move.after_value) == ("slider", "4.0", "5.0")
        assert slider_move.output_changed, slider_move.detail
        select = driver.cell(widget_cell.index).locator(".widget-dropdown select")
        before = driver.driven_output(widget_cell.index)
        select.select_option("bar")
        driver.page.wait_for_function(
            "(i) => document.querySelector(`[data-coursekit-cell=\"${i}\"] .widget-output`)"
            ".textContent.includes('width=5 kind=bar')", arg=widget_cell.index, timeout=WIDGET_TIMEOUT_MS)
        driver.wait_kernel_idle()
        assert driver.driven_output(widget_cell.index) != before

        summary = {}
        assert check_self_check(driver, reports, {"q1-solution": SMOKE_SOLUTION}, summary) == []
        assert summary["self_check_cells"] == {"q1": check_cell.index}
        assert "q1: not attempted yet" in summary["self_check_after_run_all"]["q1"]
        assert "FAIL  double(x) is 2 x: double(x) should be a torch.Tensor" in summary["self_check_wrong_answer"]
        assert "q1: 0/1 public tests passed" in summary["self_check_wrong_answer"]
        assert "PASS  double(x) is 2 x" in summary["self_check_right_answer"]
        assert "q1: 1/1 public tests passed" in summary["self_check_right_answer"]
    finally:
        driver.screenshot_whole_notebook(screenshot_path(path))


@pytest.mark.timeout(240)
def test_harness_catches_planted_faults(driver):
    """The detectors flag an error, a widget's text fallback, a figure as text, and the cells run-all skipped;
    an error in a cell tagged raises-exception is let through."""
    path = f"{SMOKE_FOLDER}/planted_faults.ipynb"
    driver.open_lab()
    driver.open_from_file_browser(path)
    driver.clear_and_run_all(RUN_ALL_TIMEOUT_MS)
    problems = page_problems(driver.cell_reports(), expected_widgets={1})
    joined = "\n".join(problems)
    assert "text fallback 'IntSlider(value=3, max=10)'" in joined
    assert "the committed notebook has a widget here" in joined
    assert "`<Figure size ...>`" in joined
    assert "error output ['ValueError: planted fault']" in joined
    assert "cell 4 [None] `print('never runs" in joined and "did not run" in joined
    assert "KeyError" not in joined
    assert len(problems) == 5, joined
    assert driver.execution_state() == "kernel idle; 4 of 5 code cells ran; cell None running, 0 more queued"


@pytest.mark.timeout(RUN_ALL_TIMEOUT_MS // 1000 + 180)
@pytest.mark.parametrize("relative_path", course_notebooks())
def test_notebook_in_jupyterlab(driver, relative_path, served_root):
    """Open, clear, run all; no errors, figures as images, live widgets; the lab's self-check; a screenshot."""
    expected_figures, expected_widgets = committed_expectations(served_root / relative_path)
    driver.open_lab()
    driver.open_from_file_browser(relative_path)
    summary = {"notebook": relative_path}
    problems = []
    screenshot = screenshot_path(relative_path)
    screenshot.unlink(missing_ok=True)
    try:
        summary["run_all_seconds"] = round(driver.clear_and_run_all(RUN_ALL_TIMEOUT_MS), 1)
        reports = driver.cell_reports()
        problems += page_problems(reports, expected_figures, expected_widgets)
        summary["figures"] = sum(r.images for r in reports)
        summary["widget_cells"] = [r.index for r in reports if r.widgetViews]
        moves, widget_problems = exercise_widgets(driver, reports)
        problems += widget_problems
        summary["widget_moves"] = [vars(m) for m in moves]
        if relative_path == LAB_NOTEBOOK:
            problems += check_self_check(driver, reports, solution_sources(served_root), summary)
    finally:
        try:
            summary["execution_state"] = driver.execution_state()
            summary["slowest_cells"] = [(r.headline(), r.seconds) for r in
                                        sorted(driver.cell_reports(), key=lambda r: -(r.seconds or 0))[:6]]
            driver.screenshot_whole_notebook(screenshot)
        except Exception as error:  # never hide the test's own failure behind the picture's
            problems.append(f"no screenshot: {error!r}")
        summary["problems"] = problems
        write_summary(relative_path.replace("/", "__"), summary)
    assert not problems, f"{relative_path} in JupyterLab:\n  " + "\n  ".join(problems)
    assert screenshot.is_file()


def solution_sources(root: Path) -> dict[str, str]:
    """The instructor's solution cells by cell id (the student notebook keeps the source's ids)."""
    source = root / "lab" / "source" / "mlp_lab_solution.ipynb"
    notebook = nbformat.read(source, as_version=4)
    return {cell.id: cell.source for cell in notebook.cells if cell.cell_type == "code"}


def check_self_check(driver, reports, solutions: dict[str, str], summary: dict) -> list[str]:
    """The student's self-check, seen in the browser.

    After run-all every `check("qN")` cell must show its per-test lines (PASS/FAIL/TODO) and its summary.
    Then a student's two attempts at the first question, typed into its stub cell: a wrong answer
    (every TODO `raise` becomes `return None`) must make the re-run check show FAIL, and the instructor's
    solution must make it show PASS for every public test.
    """
    checks = {}
    for r in reports:
        match = SELF_CHECK_CALL.search(r.source)
        if match:
            checks[match.group(1)] = r
    summary["self_check_cells"] = {question: r.index for question, r in checks.items()}
    if not checks:
        return ['the lab notebook has no `check("qN")` self-check cell']
    problems = []
    summary["self_check_after_run_all"] = {}
    for question, r in checks.items():
        summary["self_check_after_run_all"][question] = r.text[:1000]
        if not CHECK_TEST_LINE.search(r.text) or not re.search(rf"^{question}: ", r.text, re.M):
            problems.append(f"{r.headline()}: shows no self-check feedback (output: {r.text[:200]!r})")

    question, check_cell = next(iter(checks.items()))
    stubs = [r for r in reports if r.index < check_cell.index and STUB_RAISE.search(r.source)]
    if not stubs:
        return problems + [f"no `raise NotImplementedError(\"TODO...\")` stub before {check_cell.headline()}"]
    stub = stubs[-1]
    if stub.id not in solutions:
        return problems + [f"{stub.headline()}: no solution cell with id {stub.id!r} in the lab source"]

    def attempt(source: str) -> str:
        driver.set_cell_source(stub.index, source)
        driver.run_cell(stub.index, WIDGET_TIMEOUT_MS)
        driver.run_cell(check_cell.index, WIDGET_TIMEOUT_MS)
        return next(r for r in driver.cell_reports() if r.index == check_cell.index).text

    wrong = attempt(STUB_RAISE.sub("return None", stub.source))
    summary["self_check_wrong_answer"] = wrong[:1000]
    if "FAIL" not in CHECK_TEST_LINE.findall(wrong):
        problems.append(f"{check_cell.headline()}: after a wrong answer it shows no FAIL ({wrong[:300]!r})")
    if not re.search(rf"^{question}: \d+/\d+ public tests passed", wrong, re.M):
        problems.append(f"{check_cell.headline()}: after a wrong answer no `{question}: k/n` summary ({wrong[:300]!r})")

    right = attempt(solutions[stub.id])
    summary["self_check_right_answer"] = right[:1000]
    marks = CHECK_TEST_LINE.findall(right)
    counts = re.search(rf"^{question}: (\d+)/(\d+) public tests passed", right, re.M)
    if not marks or set(marks) != {"PASS"} or not counts or counts.group(1) != counts.group(2):
        problems.append(f"{check_cell.headline()}: after the instructor's solution it does not show every test "
                        f"passing ({right[:400]!r})")
    return problems


SLIDESHOW_LECTURE = "notebooks/01_hidden_layers.ipynb"
# The screen the slide test presents on (a 720p projector); JupyterLab's default theme and fonts (the test's
# JupyterLab has settings of its own, none changed).
SLIDE_SCREEN = {"width": 1280, "height": 720}
SLIDE_STARTS = ("slide", "subslide")


def slide_start_cells(path: Path) -> list[int]:
    """Indices of the cells that start a slide or a sub-slide (RISE's slide metadata), in order."""
    notebook = nbformat.read(path, as_version=4)
    return [index for index, cell in enumerate(notebook.cells)
            if cell.metadata.get("slideshow", {}).get("slide_type") in SLIDE_STARTS]


def slide_title(notebook, first_cell: int) -> str:
    """The heading a slide belongs to: the last markdown heading at or before its first cell; a sub-slide that
    continues a heading's content says so."""
    for index in range(first_cell, -1, -1):
        cell = notebook.cells[index]
        heading = next((line for line in cell.source.splitlines() if re.match(r"#{1,6}\s", line)), None)
        if cell.cell_type == "markdown" and heading and index <= first_cell:
            title = heading.lstrip("#").strip()
            return title if index == first_cell else f"{title} (continued from cell {first_cell})"
    return f"(no heading before cell {first_cell})"


@pytest.mark.timeout(300)
def test_lecture_renders_as_slideshow(driver, served_root):
    """A lecturer's path: open a lecture, View > Render as Reveal Slideshow (RISE, served locally, no internet),
    then step through every slide and sub-slide with PageDown: each starts with the next slide cell."""
    starts = slide_start_cells(served_root / SLIDESHOW_LECTURE)
    notebook = nbformat.read(served_root / SLIDESHOW_LECTURE, as_version=4)
    top_level = [i for i in starts if notebook.cells[i].metadata["slideshow"]["slide_type"] == "slide"]
    assert len(top_level) >= 3, f"{SLIDESHOW_LECTURE} has too few slides for a slideshow: {top_level}"
    driver.open_lab()
    driver.open_from_file_browser(SLIDESHOW_LECTURE)
    frame = driver.open_slideshow()
    seen = [driver.present_slide(frame)]
    assert seen[0]["count"] == len(top_level), (seen[0], top_level)
    frame.locator(".reveal").click()  # keyboard focus in the slides
    for _ in starts[1:]:
        driver.page.keyboard.press("PageDown")  # Reveal's "next": sub-slides too (ArrowRight can skip them)
        frame.wait_for_function("(before) => window.location.hash !== before", arg=seen[-1]["hash"], timeout=10_000)
        seen.append(driver.present_slide(frame))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.page.screenshot(path=str(SCREENSHOTS / "slideshow__01_hidden_layers.png"))
    assert [slide["first_cell"] for slide in seen] == starts, "slides do not start at the slide cells"
    headings = [notebook.cells[i].source.strip().splitlines()[0].lstrip("#").strip() for i in starts]
    shown = [slide["text"].splitlines()[0].strip() if slide["text"] else None for slide in seen]
    titled = [(s, h) for s, h, i in zip(shown, headings, starts) if notebook.cells[i].source.lstrip().startswith("#")]
    assert all(s == h for s, h in titled), f"slides shown vs the heading of their first cell: {titled}"
    assert len({slide["hash"] for slide in seen}) == len(starts), [slide["hash"] for slide in seen]


@pytest.fixture(scope="module")
def slideshow_driver(browser, lab_server):
    """One 1280x720 page for every lecture's slideshow (one browser, RISE loaded afresh per lecture)."""
    context = browser.new_context(viewport=SLIDE_SCREEN)
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        yield NotebookDriver(page, lab_server)
    finally:
        context.close()
        lab_server.shutdown_kernels()


LECTURES = [path for path in course_notebooks() if path.startswith("notebooks/")]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("relative_path", LECTURES)
def test_every_slide_fits_the_screen(slideshow_driver, served_root, relative_path):
    """Every slide and sub-slide of the lecture, presented with RISE on a 1280x720 screen at JupyterLab's default
    font, shows all of its content: nothing runs past the bottom or the right edge, no code or output line hides
    behind a scrollbar. A failure names the slide's heading and the overflow in px."""
    notebook = nbformat.read(served_root / relative_path, as_version=4)
    slideshow_driver.open_slideshow_page(relative_path)
    slides = slideshow_driver.measure_slides()
    summary = {"notebook": relative_path, "screen": SLIDE_SCREEN, "slides": slides}
    problems = []
    starts = slide_start_cells(served_root / relative_path)
    if [slide["cells"][0] if slide["cells"] else None for slide in slides] != starts:
        problems.append(f"the slideshow's slides start at cells {[s['cells'][:1] for s in slides]}, "
                        f"the notebook's slide cells are {starts}")
    for slide in slides:
        title = slide_title(notebook, slide["cells"][0]) if slide["cells"] else "(empty slide)"
        where = f"slide {slide['hash']} '{title}'"
        if slide["overflow_y"] > 0:
            problems.append(f"{where}: {slide['overflow_y']} px too tall (content {slide['height']} px, "
                            f"cells {slide['cells']})")
        if slide["overflow_x"] > 0:
            problems.append(f"{where}: {slide['overflow_x']} px too wide")
        if slide["clipped_x"] > 0:
            problems.append(f"{where}: a code or output line {slide['clipped_x']} px wider than its box")
    summary["problems"] = problems
    write_summary("slides__" + Path(relative_path).stem, summary)
    if problems:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        slideshow_driver.page.screenshot(path=str(SCREENSHOTS / f"slides__{Path(relative_path).stem}__last.png"))
    assert not problems, f"{relative_path} as slides on a 1280x720 screen:\n  " + "\n  ".join(problems)


def test_course_notebooks_present():
    """The browser test covers every lecture notebook in notebooks/ (whatever their number) and the student lab."""
    on_disk = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "notebooks").rglob("*.ipynb")
                     if ".ipynb_checkpoints" not in p.parts)
    lectures = [p for p in course_notebooks() if p.startswith("notebooks/")]
    assert on_disk, "no lecture notebooks in notebooks/"
    assert lectures == on_disk, f"the browser test runs {lectures}, but notebooks/ holds {on_disk}"
    # Lectures are named NN_topic, or NNb_topic for the second part of a split lecture, and read in that order: a
    # duplicate number is a misnamed file.
    numbers = [re.match(r"\d\d[a-z]?_", Path(p).name) for p in lectures]
    assert all(numbers), f"lecture names must start NN_ or NNb_: {lectures}"
    numbers = [n.group() for n in numbers]
    assert len(set(numbers)) == len(numbers), f"two lectures share a number: {lectures}"
    assert LAB_NOTEBOOK in course_notebooks(), f"{LAB_NOTEBOOK} is missing"


def test_work_tree_notebooks_unmodified(work_tree_before, served_root):
    """The browser ran on a copy: the work tree's notebooks/ and lab/ are byte for byte as before."""
    assert REPO not in served_root.parents, f"JupyterLab served {served_root}, inside the work tree"
    after = tree_hashes()
    changed = sorted(p for p, digest in work_tree_before.items() if after.get(p) != digest)
    checkpoints = sorted(p for p in after if ".ipynb_checkpoints" in p and p not in work_tree_before)
    assert not changed, f"the browser test modified {changed}"
    assert not checkpoints, f"the browser test left checkpoints {checkpoints}"
