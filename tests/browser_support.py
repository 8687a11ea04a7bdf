"""Drive the course's JupyterLab in headless Chromium, the way a student uses it.

Two parts:

* ``JupyterLabServer`` starts the project's own ``jupyter lab`` on loopback (a free port, a random token),
  with every Jupyter directory (config, data, runtime, settings, workspaces) in a temp folder so nothing from
  ``~/.jupyter`` leaks in, and stops it again (process group, then any kernel it left behind).
* ``NotebookDriver`` works one notebook through the JupyterLab UI with Playwright: open it from the file
  browser, clear and run all cells from the menus, wait for the kernel, then report what the page shows
  (errors, figures, widgets) and move widget controls.

The page is read from the DOM (what the student sees). The notebook model, reached through
``window.jupyterapp`` (``--expose-app-in-browser``, the hook JupyterLab's own UI tests use), is used only to
know when a run is over, to map DOM nodes to cells and to name the exception of an error output.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

# Debian's chromium (Playwright's own browser downloads are not used); COURSEKIT_CHROMIUM points elsewhere.
CHROMIUM_PATH = Path(os.environ.get("COURSEKIT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",  # we run as root in containers; Chromium's sandbox refuses that
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Plugins that would put a popup over the page on a first start ("Jupyter news?").
DISABLED_LAB_PLUGINS = ["@jupyterlab/apputils-extension:announcements"]


def _end_with_parent() -> None:
    """In the child before exec (Linux): get SIGTERM when the test process dies, even by SIGKILL."""
    try:
        import ctypes
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not glibc Linux: the server's own inactivity timeout is the fallback


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class JupyterLabServer:
    """The project's JupyterLab serving ``root_dir``, isolated under ``state_dir``. Use as a context manager."""

    def __init__(self, jupyter: Path, root_dir: Path, state_dir: Path, log_path: Path, start_timeout: float = 90):
        if not Path(jupyter).is_file():
            raise FileNotFoundError(f"jupyter executable not found: {jupyter} (run `make setup` first)")
        self.jupyter = Path(jupyter)
        self.root_dir = Path(root_dir)
        self.state_dir = Path(state_dir)
        self.log_path = Path(log_path)
        self.start_timeout = start_timeout
        self.port = free_loopback_port()
        self.token = secrets.token_hex(24)
        self.process: subprocess.Popen | None = None
        self._log_file = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def lab_url(self) -> str:
        # `reset` starts from an empty workspace: no tab or folder remembered from an earlier page.
        return f"{self.base_url}/lab?reset&token={self.token}"

    def _environment(self) -> dict[str, str]:
        dirs = {name: self.state_dir / name for name in ("config", "data", "runtime", "settings", "workspaces")}
        for path in dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        labconfig = dirs["config"] / "labconfig"
        labconfig.mkdir(exist_ok=True)
        page_config = {"disabledExtensions": {name: True for name in DISABLED_LAB_PLUGINS}}
        (labconfig / "page_config.json").write_text(json.dumps(page_config))
        # Per-cell timings in the cell metadata (JupyterLab's own "Recording timing" setting), for the summary.
        notebook_settings = dirs["settings"] / "@jupyterlab" / "notebook-extension"
        notebook_settings.mkdir(parents=True, exist_ok=True)
        (notebook_settings / "tracker.jupyterlab-settings").write_text(json.dumps({"recordTiming": True}))
        env = dict(os.environ)
        env.update(
            JUPYTER_CONFIG_DIR=str(dirs["config"]),
            JUPYTER_DATA_DIR=str(dirs["data"]),
            JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
            JUPYTERLAB_SETTINGS_DIR=str(dirs["settings"]),
            JUPYTERLAB_WORKSPACES_DIR=str(dirs["workspaces"]),
        )
        # Chromium shares the 2 cores with the kernel: torch's two OpenMP threads then spin against it and an
        # epoch of notebook 05 goes from about 1 s to tens of seconds. One thread per kernel stays steady.
        env["OMP_NUM_THREADS"] = "1"
        env.pop("JUPYTER_PATH", None)
        env.pop("JUPYTER_CONFIG_PATH", None)
        return env

    def start(self, attempts: int = 3) -> "JupyterLabServer":
        """Start the server and wait until it answers; a port taken meanwhile by another process means a retry."""
        for attempt in range(attempts):
            if attempt:
                self.port = free_loopback_port()
            if self._start_once():
                return self
        raise RuntimeError(f"jupyter lab could not bind a free port in {attempts} attempts; "
                           f"log tail:\n{self.log_tail()}")

    def _start_once(self) -> bool:
        command = [
            str(self.jupyter), "lab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--port-retries=0",
            f"--ServerApp.root_dir={self.root_dir}",
            f"--IdentityProvider.token={self.token}",
            "--expose-app-in-browser",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--ServerApp.shutdown_no_activity_timeout=900",  # a server orphaned by a killed test run ends itself
            "--MappingKernelManager.cull_idle_timeout=900",
        ]
        if os.geteuid() == 0:
            command.append("--allow-root")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "wb")
        # A session of its own: stop() can signal the server and everything it spawned in its group.
        self.process = subprocess.Popen(
            command, cwd=self.root_dir, env=self._environment(), stdout=self._log_file,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_end_with_parent if sys.platform.startswith("linux") else None,
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._log_file.close()
                if "already in use" in self.log_tail():
                    return False
                raise RuntimeError(f"jupyter lab exited with code {self.process.returncode} while starting; "
                                   f"log tail:\n{self.log_tail()}")
            try:
                self.api("GET", "/api/status")
                return True
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"jupyter lab did not answer on {self.base_url} within {self.start_timeout} s; "
                           f"log tail:\n{self.log_tail()}")

    def api(self, method: str, path: str, timeout: float = 10):
        request = urllib.request.Request(self.base_url + path, method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Shut every running kernel down, so one notebook's kernel does not eat the next one's CPU."""
        try:
            for kernel in self.api("GET", "/api/kernels"):
                self.api("DELETE", f"/api/kernels/{kernel['id']}", timeout=30)
        except (urllib.error.URLError, ConnectionError, OSError):
            pass  # server already gone; stop() cleans up what is left

    def leftover_kernel_pids(self) -> list[int]:
        """Kernels of this server still alive: their command line names a connection file in our runtime dir."""
        runtime = str(self.state_dir / "runtime")
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if runtime in cmdline and int(proc.name) != os.getpid():
                pids.append(int(proc.name))
        return pids

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.shutdown_kernels()
            # SIGTERM lets the server shut its kernels down; SIGKILL the group if it hangs.
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        else:
            try:  # the server is gone; its group may not be
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # Kernels run in sessions of their own (jupyter_client), so the group kill does not reach them.
        for pid in self.leftover_kernel_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> "JupyterLabServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def launch_chromium(playwright):
    if not CHROMIUM_PATH.exists():
        raise FileNotFoundError(f"Chromium not found at {CHROMIUM_PATH}")
    return playwright.chromium.launch(executable_path=str(CHROMIUM_PATH), args=CHROMIUM_ARGS, headless=True)


# ---------------------------------------------------------------------------------------------- page scripts

_CURRENT_PANEL_JS = """
() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  return (w && w.content && w.content.model && w.sessionContext) ? w : null;
}
"""

# The current notebook is loaded and its kernel is connected and idle.
_KERNEL_IDLE_JS = f"""
(path) => {{
  const w = ({_CURRENT_PANEL_JS})();
  if (!w || !w.context.isReady || (path && w.context.path !== path)) return false;
  const k = w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.connectionStatus === 'connected' && k.status === 'idle';
}}
"""

# A run-all is over: kernel idle, no cell queued ([*]), and every non-empty code cell ran -- or one raised
# (JupyterLab stops a run-all at an error, except in cells tagged raises-exception).
_RUN_FINISHED_JS = f"""
() => {{
  const w = ({_CURRENT_PANEL_JS})();
  if (!w) return false;
  const k = w.sessionContext.session && w.sessionContext.session.kernel;
  if (!k || k.status !== 'idle') return false;
  const prompts = Array.from(w.content.node.querySelectorAll('.jp-CodeCell .jp-InputPrompt'));
  if (prompts.some(p => p.textContent.includes('*'))) return false;
  const cells = w.content.model.cells;
  let allRan = true, sawError = false;
  for (let i = 0; i < cells.length; i++) {{
    const c = cells.get(i);
    if (c.type !== 'code') continue;
    const tags = c.getMetadata('tags') || [];
    for (let j = 0; j < c.outputs.length; j++)
      if (c.outputs.get(j).type === 'error' && !tags.includes('raises-exception')) sawError = true;
    if (c.sharedModel.getSource().trim() && c.executionCount === null) allRan = false;
  }}
  return allRan || sawError;
}}
"""

# Per code cell: what the model holds (source, count, output types, errors) and what the DOM shows.
_CELL_REPORT_JS = f"""
() => {{
  const w = ({_CURRENT_PANEL_JS})();
  const FALLBACK = /^\\s*(Loading widget\\.\\.\\.|Error displaying widget|(interactive|IntSlider|FloatSlider|IntRangeSlider|FloatLogSlider|SelectionSlider|Dropdown|VBox|HBox|Box|Output|Tab|Accordion|Button|Checkbox|ToggleButtons|RadioButtons)\\()/;
  const FIGURE_TEXT = /^\\s*<Figure size [0-9.]+x[0-9.]+ with \\d+ Axes>\\s*$/;
  const TRACEBACK = /Traceback \\(most recent call last\\)|^\\w*(Error|Exception)\\b.*$/m;
  const report = [];
  w.content.widgets.forEach((cellWidget, index) => {{
    cellWidget.node.setAttribute('data-coursekit-cell', String(index));
    const model = cellWidget.model;
    if (model.type !== 'code') return;
    const outputs = [];
    const errors = [];
    for (let j = 0; j < model.outputs.length; j++) {{
      const out = model.outputs.get(j);
      outputs.push({{type: out.type, mimes: Object.keys(out.data || {{}})}});
      if (out.type === 'error') {{
        const raw = out.toJSON();
        errors.push(`${{raw.ename}}: ${{raw.evalue}}`);
      }}
    }}
    const area = cellWidget.node.querySelector('.jp-Cell-outputArea') || cellWidget.node;
    const leafOutputs = Array.from(area.querySelectorAll('.jp-OutputArea-output'))
      .filter(o => !o.querySelector('.jp-OutputArea-output'));
    const images = Array.from(area.querySelectorAll('.jp-OutputArea-output img'));
    report.push({{
      index,
      id: model.id,
      source: model.sharedModel.getSource(),
      tags: model.getMetadata('tags') || [],
      executionCount: model.executionCount,
      seconds: (t => t && t['iopub.execute_input'] && t['shell.execute_reply']
                ? (Date.parse(t['shell.execute_reply']) - Date.parse(t['iopub.execute_input'])) / 1000 : null)(
                model.getMetadata('execution')),
      outputs,
      errors,
      domTracebacks: leafOutputs
        .filter(o => o.getAttribute('data-mime-type') === 'application/vnd.jupyter.stderr' && TRACEBACK.test(o.textContent))
        .map(o => o.textContent.slice(0, 600)),
      images: images.length,
      imagesLoaded: images.filter(img => img.complete && img.naturalWidth > 0).length,
      figureTexts: leafOutputs.filter(o => FIGURE_TEXT.test(o.textContent)).length,
      widgetViews: area.querySelectorAll('.jp-OutputArea-output > .jupyter-widgets').length,
      sliders: area.querySelectorAll('.widget-slider .noUi-handle').length,
      dropdowns: area.querySelectorAll('.widget-dropdown select').length,
      widgetFallbacks: leafOutputs.filter(o => !o.querySelector('.jupyter-widgets') && FALLBACK.test(o.textContent))
        .map(o => o.textContent.trim().slice(0, 120)),
      text: area.textContent.slice(0, 4000),
    }});
  }});
  return report;
}}
"""

# What a widget cell's controls drive: the text of its Output/HTML widgets and plain outputs, and its images.
_DRIVEN_OUTPUT_JS = """
async (area) => {
  const parts = [];
  area.querySelectorAll('.widget-output, .widget-html-content, .widget-htmlmath-content').forEach(
    el => parts.push('text:' + el.textContent));
  for (const img of area.querySelectorAll('img')) {
    let src = img.getAttribute('src') || '';
    // An ipywidgets.Image gets a new blob: URL on every update, even for the same bytes: compare the bytes.
    if (src.startsWith('blob:')) {
      try {
        const digest = await crypto.subtle.digest('SHA-256', await (await fetch(src)).arrayBuffer());
        src = 'blob-sha256:' + Array.from(new Uint8Array(digest), b => b.toString(16).padStart(2, '0')).join('');
      } catch (e) {
        src = 'blob-unreadable:' + src;  // revoked mid-update; the caller polls again
      }
    }
    parts.push('img:' + src);
  }
  area.querySelectorAll('canvas').forEach(c => { try { parts.push('canvas:' + c.toDataURL()); } catch (e) {} });
  return parts;
}
"""


# The slide on screen (the innermost present section), measured against the window. Hidden parts (a folded cell's
# source, off-screen editors) have no client rects and do not count.
_MEASURE_SLIDE_JS = """
() => {
  const all = document.querySelectorAll('.reveal .slides section.present');
  const slide = all[all.length - 1];
  const box = document.querySelector('.reveal .slides').getBoundingClientRect();
  const top = box.top + slide.offsetTop;
  const visible = e => e.getClientRects().length > 0 && getComputedStyle(e).visibility !== 'hidden';
  let right = 0, clipped = 0;
  slide.querySelectorAll('img, canvas, svg, .jp-OutputArea-output, .jp-RenderedMarkdown, .jp-InputArea, .cm-scroller')
    .forEach(e => { if (visible(e)) right = Math.max(right, e.getBoundingClientRect().right); });
  slide.querySelectorAll('.cm-scroller, .jp-OutputArea-output pre, .jp-RenderedMarkdown pre, .jp-RenderedMarkdown table')
    .forEach(e => { if (visible(e)) clipped = Math.max(clipped, e.scrollWidth - e.clientWidth); });
  return {
    hash: window.location.hash,
    cells: Array.from(slide.querySelectorAll('.jp-Cell')).map(c => Number(c.getAttribute('data-windowed-list-index'))),
    height: slide.scrollHeight,
    overflow_y: Math.ceil(top + slide.scrollHeight - window.innerHeight),
    overflow_x: Math.ceil(right - window.innerWidth),
    clipped_x: clipped,
    slides: document.querySelectorAll('.reveal .slides section:not(.stack)').length,
  };
}
"""


@dataclass
class CellReport:
    index: int
    id: str
    source: str
    tags: list
    executionCount: int | None
    seconds: float | None  # how long the kernel took (JupyterLab's recorded timing), None if not recorded
    outputs: list
    errors: list
    domTracebacks: list
    images: int
    imagesLoaded: int
    figureTexts: int
    widgetViews: int
    sliders: int
    dropdowns: int
    widgetFallbacks: list
    text: str

    @property
    def expected_error(self) -> bool:
        return "raises-exception" in self.tags

    @property
    def has_controls(self) -> bool:
        return self.sliders + self.dropdowns > 0

    def headline(self) -> str:
        first_line = next((line for line in self.source.splitlines() if line.strip()), "")
        return f"cell {self.index} [{self.executionCount}] `{first_line[:70]}`"


@dataclass
class WidgetMove:
    cell: int
    control: str
    before_value: str
    after_value: str
    output_changed: bool
    seconds: float
    changed_parts: list = field(default_factory=list)  # which of the driven outputs changed: text, img, canvas
    detail: str = field(default="")


def normalise_driven_output(parts: list[str]) -> list[str]:
    """Drop what changes between two renders of the same figure (SVG date and random ids), keep the rest."""
    normalised = []
    for part in parts:
        if part.startswith("img:data:image/svg+xml"):
            from urllib.parse import unquote
            svg = unquote(part)
            svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
            svg = re.sub(r"[0-9a-f]{10,}", "#", svg)
            part = svg
        normalised.append(part)
    return normalised


class NotebookDriver:
    """One notebook in one JupyterLab page, worked through the UI."""

    def __init__(self, page, server: JupyterLabServer):
        self.page = page
        self.server = server

    # -- opening ---------------------------------------------------------------------------------------

    def open_lab(self, timeout_ms: int = 90_000) -> None:
        self.page.goto(self.server.lab_url(), timeout=timeout_ms)
        self.page.wait_for_selector(".jp-DirListing-item", timeout=timeout_ms)
        self.page.wait_for_function("() => !!window.jupyterapp", timeout=timeout_ms)

    def _dir_listing_item(self, name: str):
        exact = re.compile(rf"^{re.escape(name)}$")
        return self.page.locator(".jp-DirListing-item").filter(
            has=self.page.locator(".jp-DirListing-itemText", has_text=exact))

    def open_from_file_browser(self, relative_path: str, timeout_ms: int = 90_000) -> None:
        """Double-click through the file browser from its root folder to the notebook, wait for its kernel."""
        *folders, filename = relative_path.split("/")
        self.page.locator(".jp-BreadCrumbs-home").click()
        for folder in folders:
            item = self._dir_listing_item(folder)
            item.wait_for(timeout=timeout_ms)
            item.dblclick()
            self.page.locator(".jp-BreadCrumbs").filter(has_text=folder).wait_for(timeout=timeout_ms)
        item = self._dir_listing_item(filename)
        item.wait_for(timeout=timeout_ms)
        item.dblclick()
        # Either the kernel comes up, or JupyterLab asks which kernel to use (no kernelspec in the notebook).
        self.page.wait_for_function(
            f"(path) => ({_KERNEL_IDLE_JS})(path) || !!document.querySelector('.jp-Dialog')",
            arg=relative_path, timeout=timeout_ms, polling=250)
        if self.page.locator(".jp-Dialog").count():
            dialog = self.page.locator(".jp-Dialog").first.inner_text()
            raise AssertionError(f"opening {relative_path} shows a dialog instead of starting its kernel "
                                 f"(kernelspec metadata missing or unknown?): {dialog[:300]!r}")

    def wait_kernel_idle(self, path: str | None = None, timeout_ms: int = 90_000) -> None:
        self.page.wait_for_function(_KERNEL_IDLE_JS, arg=path, timeout=timeout_ms, polling=250)

    # -- running ---------------------------------------------------------------------------------------

    def _menu(self, menu: str, item: str) -> None:
        self.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(rf"^{re.escape(menu)}$")).click()
        entry = self.page.locator(".lm-Menu-item:not(.lm-mod-disabled) .lm-Menu-itemLabel",
                                  has_text=re.compile(rf"^{re.escape(item)}$"))
        entry.first.click()

    def clear_and_run_all(self, timeout_ms: int) -> float:
        """Edit > Clear Outputs of All Cells, Run > Run All Cells, wait for the end; return the seconds taken."""
        self._menu("Edit", "Clear Outputs of All Cells")
        # What is checked afterwards must come from this run, not from the outputs saved in the file.
        self.page.wait_for_function(
            f"""() => ({_CURRENT_PANEL_JS})().content.widgets.every(
                c => c.model.type !== 'code' || (c.model.outputs.length === 0 && c.model.executionCount === null))""",
            timeout=10_000)
        self._menu("Run", "Run All Cells")
        started = time.monotonic()
        try:
            self.page.wait_for_function(_RUN_FINISHED_JS, timeout=timeout_ms, polling=500)
        except Exception as error:
            if "Timeout" not in type(error).__name__:
                raise
            raise AssertionError(f"Run All Cells not finished after {timeout_ms / 1000:.0f} s: "
                                 f"{self.execution_state()}") from None
        # Widgets and images render after the kernel reply; give the page a moment to settle.
        self.page.wait_for_timeout(1500)
        return time.monotonic() - started

    def execution_state(self) -> str:
        """Where a run stands: the cells that ran, the one running or queued next, the kernel's status."""
        state = self.page.evaluate(f"""() => {{
            const w = ({_CURRENT_PANEL_JS})();
            const k = w.sessionContext.session && w.sessionContext.session.kernel;
            const prompts = w.content.widgets.map((c, i) => [i, c.model.type,
                (c.node.querySelector('.jp-InputPrompt') || {{textContent: ''}}).textContent.trim()]);
            return {{kernel: k ? k.status : 'no kernel', prompts}};
        }}""")
        code = [(i, prompt) for i, kind, prompt in state["prompts"] if kind == "code"]
        ran = sum(1 for _, prompt in code if re.search(r"\[\d+\]", prompt))
        waiting = [i for i, prompt in code if "*" in prompt]
        return (f"kernel {state['kernel']}; {ran} of {len(code)} code cells ran; "
                f"cell {waiting[0] if waiting else None} running, {max(0, len(waiting) - 1)} more queued")

    def run_cell(self, index: int, timeout_ms: int) -> None:
        """Select a cell by clicking its prompt and press Shift+Enter, as a student would; wait for the kernel."""
        cell = self.cell(index)
        before = self.page.evaluate(
            f"(i) => ({_CURRENT_PANEL_JS})().content.widgets[i].model.executionCount", index)
        cell.locator(".jp-InputPrompt").first.click()
        self.page.keyboard.press("Shift+Enter")
        self.page.wait_for_function(
            f"""([i, before]) => {{
                const w = ({_CURRENT_PANEL_JS})();
                const n = w.content.widgets[i].model.executionCount;
                const k = w.sessionContext.session.kernel;
                return n !== null && n !== before && k.status === 'idle';
            }}""", arg=[index, before], timeout=timeout_ms, polling=250)
        self.page.wait_for_timeout(500)

    def set_cell_source(self, index: int, source: str) -> None:
        """Replace a code cell's text the way a student does: click into its editor, select all, type."""
        editor = self.cell(index).locator(".jp-InputArea-editor .cm-content").first
        editor.click()
        self.page.keyboard.press("ControlOrMeta+a")
        # insert_text enters the text as one input (like a paste): no auto-indent or auto-closed brackets.
        self.page.keyboard.insert_text(source)
        typed = self.page.evaluate(
            f"(i) => ({_CURRENT_PANEL_JS})().content.widgets[i].model.sharedModel.getSource()", index)
        if typed != source:
            raise AssertionError(f"cell {index}: the editor holds {typed[:200]!r}, not the typed {source[:200]!r}")

    # -- reading ---------------------------------------------------------------------------------------

    def cell_reports(self) -> list[CellReport]:
        return [CellReport(**row) for row in self.page.evaluate(_CELL_REPORT_JS)]

    def cell(self, index: int):
        return self.page.locator(f'[data-coursekit-cell="{index}"]')

    def driven_output(self, index: int) -> list[str]:
        area = self.cell(index).locator(".jp-Cell-outputArea").first
        return normalise_driven_output(area.evaluate(_DRIVEN_OUTPUT_JS))

    # -- widgets ---------------------------------------------------------------------------------------

    def move_control(self, index: int, control: str, timeout_ms: int = 60_000) -> WidgetMove:
        """Move the cell's first slider one step, or pick another option of its first dropdown; wait for the output.

        ``control`` is "slider" (keyboard: ArrowRight, or ArrowLeft at the maximum) or "dropdown".
        """
        cell = self.cell(index)
        before = self.driven_output(index)
        started = time.monotonic()
        if control == "slider":
            handle = cell.locator(".widget-slider .noUi-handle").first
            handle.scroll_into_view_if_needed()
            value = handle.get_attribute("aria-valuenow")
            at_max = float(value) >= float(handle.get_attribute("aria-valuemax"))
            handle.press("ArrowLeft" if at_max else "ArrowRight")
            after_value = handle.get_attribute("aria-valuenow")
        elif control == "dropdown":
            select = cell.locator(".widget-dropdown select").first
            select.scroll_into_view_if_needed()
            value = select.input_value()
            options = [o for o in select.locator("option").evaluate_all("os => os.map(o => o.value)") if o != value]
            if not options:
                raise AssertionError(f"cell {index}: its dropdown has a single option, nothing to move")
            select.select_option(options[0])
            after_value = select.input_value()
        else:
            raise ValueError(f"control must be 'slider' or 'dropdown', got {control!r}")
        # The kernel answers the change, then the page redraws: poll until the output differs and is stable.
        deadline = time.monotonic() + timeout_ms / 1000
        changed, after = False, before
        while time.monotonic() < deadline:
            self.page.wait_for_timeout(300)
            try:
                self.wait_kernel_idle(None, timeout_ms=int(max(1, deadline - time.monotonic()) * 1000))
            except Exception:
                break
            after = self.driven_output(index)
            if after and after != before and not any(p.startswith("img:blob-unreadable") for p in after):
                self.page.wait_for_timeout(500)
                again = self.driven_output(index)
                if again == after:
                    changed = True
                    break
        changed_parts = sorted({a.split(":", 1)[0] for a, b in zip(after, before) if a != b})
        return WidgetMove(cell=index, control=control, before_value=str(value), after_value=str(after_value),
                          output_changed=changed, seconds=round(time.monotonic() - started, 2),
                          changed_parts=changed_parts,
                          detail="" if changed else f"output before: {str(before)[:300]!r}; after: {str(after)[:300]!r}")

    # -- slideshow (RISE) ------------------------------------------------------------------------------

    def open_slideshow(self, timeout_ms: int = 90_000):
        """View > Render as Reveal Slideshow (jupyterlab-rise) on the current notebook; return the slides' frame."""
        self._menu("View", "Render as Reveal Slideshow")
        deadline = time.monotonic() + timeout_ms / 1000
        while time.monotonic() < deadline:
            frames = [f for f in self.page.frames if "/rise/" in f.url]
            if frames:
                frames[0].wait_for_selector(".reveal .slides > section.present", timeout=timeout_ms)
                return frames[0]
            self.page.wait_for_timeout(250)
        raise AssertionError(f"no RISE slideshow frame after {timeout_ms / 1000:.0f} s; frames: "
                             f"{[f.url for f in self.page.frames]}")

    @staticmethod
    def present_slide(frame) -> dict:
        """The slide on screen (the innermost present section: a sub-slide inside a vertical stack), its Reveal
        indices (the URL hash), its text, the notebook index of its first cell, and how many top-level slides exist."""
        return frame.evaluate("""() => {
            const all = document.querySelectorAll('.reveal .slides section.present');
            const present = all.length ? all[all.length - 1] : null;
            const first = present && present.querySelector('.jp-Cell');
            return {hash: window.location.hash,
                    text: present ? present.innerText.trim() : null,
                    first_cell: first ? Number(first.getAttribute('data-windowed-list-index')) : null,
                    count: document.querySelectorAll('.reveal .slides > section').length};
        }""")

    def open_slideshow_page(self, relative_path: str, timeout_ms: int = 90_000) -> None:
        """Load the RISE app itself (``/rise/<path>``: the page "Render as Reveal Slideshow" puts in its frame) as
        the whole page, as a lecturer presents full screen; its slide transitions are switched off so that every
        slide is measured where it comes to rest."""
        self.page.goto(f"{self.server.base_url}/rise/{relative_path}?token={self.server.token}", timeout=timeout_ms)
        self.page.wait_for_selector(".reveal .slides > section.present .jp-Cell", timeout=timeout_ms)
        self.page.add_style_tag(content=".reveal .slides section { transition: none !important; }")
        # Math is typeset after the cells are drawn (and changes their height): wait until the count of typeset
        # formulas has held still for a second.
        deadline, last, steady_since = time.monotonic() + timeout_ms / 1000, -1, time.monotonic()
        while time.monotonic() < deadline:
            count = self.page.evaluate("() => document.querySelectorAll('.reveal mjx-container').length")
            if count != last:
                last, steady_since = count, time.monotonic()
            elif time.monotonic() - steady_since >= 1.0:
                break
            self.page.wait_for_timeout(250)
        self.page.locator(".reveal").click()  # keyboard focus in the slides

    def measure_slides(self, timeout_ms: int = 10_000) -> list[dict]:
        """Step through every slide and sub-slide with PageDown and measure each where it rests.

        Per slide: its Reveal hash, the notebook indices of its cells, and by how many px its content runs past the
        window: ``overflow_y`` (the slide's top plus its content height, past the bottom), ``overflow_x`` (the right
        edge of anything visible, past the right side) and ``clipped_x`` (the widest code or output line hidden
        behind a horizontal scrollbar).
        """
        slides = [self.page.evaluate(_MEASURE_SLIDE_JS)]
        total = slides[0]["slides"]
        while len(slides) < total:
            # PageDown is Reveal's "next" (what a presenter's clicker sends): slides and sub-slides in reading order.
            # ArrowRight moves between top-level slides only, skipping sub-slides when a markdown cell has focus.
            self.page.keyboard.press("PageDown")
            self.page.wait_for_function("(before) => window.location.hash !== before", arg=slides[-1]["hash"],
                                        timeout=timeout_ms)
            self.page.wait_for_timeout(100)  # Reveal lays the slide out on the next frame
            slides.append(self.page.evaluate(_MEASURE_SLIDE_JS))
        return slides

    # -- pictures --------------------------------------------------------------------------------------

    def screenshot_whole_notebook(self, path: Path, max_height: int = 16_000) -> None:
        """Grow the window until the whole notebook fits (up to ``max_height`` px), take one picture, shrink back.

        Off-screen cells have only estimated heights until drawn, so the window grows in a few rounds.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        original = self.page.viewport_size
        # How far the last cell's bottom lies below the visible part (scrollHeight also counts the padding
        # that lets a notebook scroll past its end, which grows with the window).
        overflow_js = (f"() => {{ const w = ({_CURRENT_PANEL_JS})();"
                       f" const n = w.content.node.querySelector('.jp-WindowedPanel-outer') || w.content.node;"
                       f" n.scrollTo(0, 0); const cells = w.content.widgets;"
                       f" const last = cells[cells.length - 1].node.getBoundingClientRect().bottom;"
                       f" return Math.ceil(last + 24 - n.getBoundingClientRect().bottom); }}")
        height = original["height"]
        for _ in range(5):
            overflow = self.page.evaluate(overflow_js)
            if overflow <= 0 or height >= max_height:
                break
            height = int(min(max_height, height + overflow))
            self.page.set_viewport_size({"width": original["width"], "height": height})
            self.page.wait_for_timeout(700)
        self.page.screenshot(path=str(path))
        self.page.set_viewport_size(original)
