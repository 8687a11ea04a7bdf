"""``coursekit.Playground()``: the TensorFlow Playground in JupyterLab, trained by PyTorch.

Controls are ordinary ipywidgets (dropdowns, sliders, buttons); the pictures are one anywidget
(``PlaygroundView``) whose small JavaScript module (``playground.js``, shipped in this package: no CDN,
no network) draws on ``<canvas>`` from compact frames: heat maps as small uint8 grids that the browser
upscales, weights and loss curves as float32 arrays. A frame is a few kB, so the kernel can send 20 a second.

Training runs in a background thread (one torch thread), not on the kernel's main loop: the notebook stays
responsive while it plays, and pause stops it between two epochs (a few milliseconds).
"""
from __future__ import annotations

import html
import threading
import time
import weakref
from pathlib import Path

import anywidget
import ipywidgets as widgets
import numpy as np
import torch
import traitlets

from coursekit.playground.core import (CLASSIFICATION_SETS, FEATURES, PLANE_RADIUS, REGRESSION_SETS,
                                       PlaygroundRun, Settings, make_features)

__all__ = ["Playground", "PlaygroundView"]

_HERE = Path(__file__).parent
LEARNING_RATES = (0.00001, 0.0001, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
REGULARIZATION_RATES = (0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
BOUNDARY_GRID = 48   # output heat map: 48 x 48 values, upscaled by the browser
NEURON_POOL = 3      # each neuron's picture: the same grid averaged over 3 x 3 blocks, 16 x 16
NEURON_GRID = BOUNDARY_GRID // NEURON_POOL
CURVE_POINTS = 200   # the loss curve is sent with at most this many points
FRAME_SECONDS = 0.03  # train this long between two frames (about 30 frames a second at most)


_INSTANCES: "weakref.WeakSet[Playground]" = weakref.WeakSet()


class PlaygroundView(anywidget.AnyWidget):
    """The canvas part: network (features, neurons, weights), output heat map with points, loss curve."""
    _esm = _HERE / "playground.js"
    _css = _HERE / "playground.css"
    frame = traitlets.Dict().tag(sync=True)
    points = traitlets.Dict().tag(sync=True)
    all_features = traitlets.List(traitlets.Unicode(), default_value=list(FEATURES)).tag(sync=True)
    features = traitlets.List(traitlets.Unicode()).tag(sync=True)
    hidden = traitlets.List(traitlets.Int()).tag(sync=True)
    playing = traitlets.Bool(False).tag(sync=True)
    show_test = traitlets.Bool(True).tag(sync=True)


def _to_uint8(values: torch.Tensor, low: float, high: float) -> bytes:
    scaled = ((values.clamp(low, high) - low) / (high - low) * 255).round()
    return scaled.to(torch.uint8).numpy().tobytes()


def _neuron_bytes(maps: torch.Tensor) -> bytes:
    """[size, size, k] -> k grids, each scaled by its own largest |value| to [-1, 1] (0 stays in the middle)."""
    flat = maps.permute(2, 0, 1).reshape(maps.shape[2], -1)
    scale = flat.abs().amax(1, keepdim=True).clamp_min(1e-6)
    return _to_uint8(flat / scale, -1.0, 1.0)


_FEATURE_MAPS: list = []


def _feature_maps() -> bytes:
    """Every input feature over the plane (the pictures in the features column): the same for every run."""
    if not _FEATURE_MAPS:
        axis = torch.linspace(-PLANE_RADIUS, PLANE_RADIUS, NEURON_GRID)
        x2, x1 = torch.meshgrid(-axis, axis, indexing="ij")
        plane = torch.stack([x1.reshape(-1), x2.reshape(-1)], 1)
        _FEATURE_MAPS.append(_neuron_bytes(make_features(plane, list(FEATURES)).reshape(NEURON_GRID, NEURON_GRID, -1)))
    return _FEATURE_MAPS[0]


def _curve(values: list) -> bytes:
    array = np.asarray(values, dtype=np.float32)
    if len(array) > CURVE_POINTS:
        array = array[np.linspace(0, len(array) - 1, CURVE_POINTS).round().astype(int)]
    return array.tobytes()


class Playground(widgets.VBox):
    """Pick a data set, shape the network, press play: a real ``nn.Module`` trains and every picture updates.

    ``pg.model`` (the ``nn.Module``), ``pg.data`` (train/test points), ``pg.history`` (losses, gradient
    norms, dead-unit shares per epoch) and ``pg.run`` are there for the next cell. ``model_fn(num_inputs,
    num_outputs)`` puts your own model in the built-in MLP's place. The same settings (seed included) give the
    same run. Keyword arguments are ``Settings`` fields, e.g. ``Playground(dataset="spiral", hidden=(8, 8))``.
    Python-side controls: ``play()``, ``pause()``, ``step(epochs=1)``, ``reset()``, ``set(**settings)``.
    """

    def __init__(self, model_fn=None, **settings):
        self.model_fn = model_fn
        self._lock = threading.RLock()
        self._playing = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._quiet = False
        self.frames_sent = 0
        self.run = PlaygroundRun(Settings(**settings), model_fn=model_fn)
        _INSTANCES.add(self)
        s = self.settings
        self.view = PlaygroundView(features=list(s.features), hidden=list(s.hidden))
        if model_fn is not None:
            self.view.hidden = []
        self._build_controls()
        super().__init__([self._top, self._row2, self.view, self.message])
        self.add_class("coursekit-playground")
        self.view.observe(self._on_shape, names=["features", "hidden"])
        self._send_points()
        self._send_frame()

    # -- public ------------------------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self.run.settings

    @property
    def model(self):
        return self.run.model

    @property
    def data(self):
        return self.run.data

    @property
    def history(self):
        return self.run.history

    @property
    def playing(self) -> bool:
        return self._playing.is_set()

    def play(self) -> None:
        """Train in the background thread until ``pause()``. One playground plays at a time in a kernel: a cell
        re-run while its playground played leaves the old one behind, and it must not keep a core busy."""
        if self._closing:
            raise RuntimeError("this playground was closed")
        for other in list(_INSTANCES):
            if other is not self and other.playing:
                other.pause()
        self._playing.set()
        self._show_playing()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="coursekit-playground", daemon=True)
            self._thread.start()

    def pause(self) -> None:
        """Stop training; returns once the running epoch is over, so the counter stands still afterwards."""
        self._playing.clear()
        with self._lock:  # waits for the epoch in progress
            self._show_playing()
            self._send_frame()

    def step(self, epochs: int = 1) -> None:
        """Pause, then train ``epochs`` more epochs here and now (the Playground's single step is one epoch)."""
        self.pause()
        with self._lock:
            self.run.train(epochs)
            self._send_frame()

    def reset(self) -> None:
        """Same settings, fresh start: new initial weights from the seed, epoch 0 (data unchanged)."""
        self.set()

    def set(self, **changes) -> None:
        """Change settings (``Settings`` fields) like the controls do. Learning rate and regularisation apply
        to the run in progress; anything else starts a new run (paused)."""
        new = self.settings.with_changes(**changes)
        live = {"learning_rate", "regularization", "regularization_rate"}
        if changes and set(changes) <= live:
            with self._lock:
                self.run.settings = new
                for group in self.run.optimizer.param_groups:
                    group["lr"] = new.learning_rate
            self._sync_controls()
            return
        self.pause()
        with self._lock:
            same_data = all(getattr(new, k) == getattr(self.settings, k) for k in
                            ("dataset", "problem", "noise", "train_percent", "num_points", "seed"))
            self.run = PlaygroundRun(new, model_fn=self.model_fn, data=self.run.data if same_data else None)
            self._sync_controls()
            if not same_data:
                self._send_points()
            self._send_frame()

    def regenerate(self) -> None:
        """New points: the next seed, everything else the same (the Playground's 'regenerate')."""
        self.set(seed=(self.settings.seed + 1) % (2 ** 31))

    def close(self) -> None:
        self._closing = True
        self._playing.clear()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.view.close()
        super().close()

    def __repr__(self) -> str:  # stable text (nbval compares a widget cell's text/plain)
        s = self.settings
        network = (f"hidden={list(s.hidden)}, activation={s.activation!r}" if self.model_fn is None
                   else f"model_fn={getattr(self.model_fn, '__qualname__', type(self.model_fn).__name__)}")
        return (f"Playground(dataset={s.dataset!r}, features={list(s.features)}, {network}, "
                f"learning_rate={s.learning_rate}, seed={s.seed})")

    def figure(self, **kwargs):
        """A static matplotlib figure of the current state (see ``coursekit.playground.plot_run``)."""
        from coursekit.playground.figures import plot_run
        with self._lock:
            return plot_run(self.run, **kwargs)

    # -- training thread ---------------------------------------------------------------------------------

    def _loop(self) -> None:
        torch.set_num_threads(1)  # tiny matrices: one thread is fastest and leaves the other core free
        while not self._closing:
            if not self._playing.wait(timeout=0.5):
                continue
            started = time.perf_counter()
            with self._lock:
                try:
                    while self._playing.is_set() and not self.run.diverged:
                        self.run.train_epoch()
                        if time.perf_counter() - started >= FRAME_SECONDS:
                            break
                except Exception as error:  # e.g. a model_fn's forward failing mid-run: stop and say why
                    self._playing.clear()
                    self._show_playing()
                    self.message.value = html.escape(f"training stopped: {type(error).__name__}: {error}")
                    continue
                if self.run.diverged:
                    self._playing.clear()
                    self._show_playing()
                    self.message.value = "training diverged (the loss is not finite): lower the learning rate"
                if self._playing.is_set():
                    self._send_frame()
            # Leave the GIL to the kernel and the comm for a moment between frames.
            time.sleep(max(0.0, FRAME_SECONDS - (time.perf_counter() - started)) + 0.002)

    # -- frames ------------------------------------------------------------------------------------------

    def _send_points(self) -> None:
        d = self.run.data
        as_float = lambda t: t.to(torch.float32).contiguous().numpy().tobytes()
        self.view.points = {"radius": PLANE_RADIUS, "problem": d.problem,
                            "train_x": as_float(d.X_train), "train_y": as_float(d.y_train),
                            "test_x": as_float(d.X_test), "test_y": as_float(d.y_test)}

    def _frame(self) -> dict:
        run = self.run
        boundary, hidden = run.grid_values(BOUNDARY_GRID)  # one forward pass over the grid per frame
        low, high = (0.0, 1.0) if run.data.problem == "classification" else (-1.0, 1.0)
        hidden_small = [torch.nn.functional.avg_pool2d(h.permute(2, 0, 1), NEURON_POOL).permute(1, 2, 0)
                        for h in hidden]
        h = run.history
        return {
            "epoch": run.epoch,
            "train_loss": h.train_loss[-1], "test_loss": h.test_loss[-1],
            "grad_norm": h.grad_norm[-1], "dead_share": h.dead_share[-1],
            "features": list(run.settings.features),
            "hidden": list(run.settings.hidden) if run.builtin else [],
            "boundary_grid": BOUNDARY_GRID, "boundary": _to_uint8(boundary, low, high),
            "neuron_grid": NEURON_GRID,
            "feature_maps": _feature_maps(),
            "neuron_maps": _neuron_bytes(torch.cat(hidden_small, 2)) if hidden_small else b"",
            "weights": [w.detach().to(torch.float32).contiguous().numpy().tobytes()
                        for w in run.weight_matrices()] if run.builtin else [],
            "train_curve": _curve(h.train_loss), "test_curve": _curve(h.test_loss),
        }

    def _send_frame(self) -> None:
        with self._lock:
            frame = self._frame()
        self.view.frame = frame
        self.frames_sent += 1
        self.epoch_label.value = f"epoch {self.run.epoch}"

    # -- controls ----------------------------------------------------------------------------------------

    def _build_controls(self) -> None:
        s = self.settings
        layout = widgets.Layout(width="auto")
        self.play_button = widgets.Button(description="play", icon="play", tooltip="play / pause",
                                          layout=widgets.Layout(width="90px"))
        self.step_button = widgets.Button(description="step", icon="step-forward", tooltip="train one epoch",
                                          layout=widgets.Layout(width="80px"))
        self.reset_button = widgets.Button(description="reset", icon="undo", tooltip="start again from epoch 0",
                                           layout=widgets.Layout(width="90px"))
        self.regenerate_button = widgets.Button(description="regenerate", tooltip="new points (next seed)",
                                                layout=widgets.Layout(width="110px"))
        self.epoch_label = widgets.HTML(f"epoch {self.run.epoch}", layout=widgets.Layout(width="90px"))
        style = {"description_width": "initial"}
        self.noise = widgets.IntSlider(value=s.noise, min=0, max=50, step=5, description="noise %", style=style)
        self.train_percent = widgets.IntSlider(value=s.train_percent, min=10, max=90, step=10,
                                               description="train %", style=style)
        self.batch_size = widgets.IntSlider(value=s.batch_size, min=1, max=30, description="batch size",
                                            style=style)
        self.problem = widgets.Dropdown(options=["classification", "regression"], value=s.problem,
                                        description="problem", style=style, layout=layout)
        self.dataset = widgets.Dropdown(options=self._dataset_options(s.problem), value=s.dataset,
                                        description="data", style=style, layout=layout)
        self.activation = widgets.Dropdown(options=["relu", "tanh", "sigmoid", "linear"], value=s.activation,
                                           description="activation", style=style, layout=layout)
        self.learning_rate = widgets.Dropdown(options=self._with(LEARNING_RATES, s.learning_rate),
                                              value=s.learning_rate, description="learning rate", style=style,
                                              layout=layout)
        self.regularization = widgets.Dropdown(options=["none", "L1", "L2"], value=s.regularization,
                                               description="regularization", style=style, layout=layout)
        self.regularization_rate = widgets.Dropdown(
            options=self._with(REGULARIZATION_RATES, s.regularization_rate), value=s.regularization_rate,
            description="rate", style=style, layout=layout)
        self.seed = widgets.BoundedIntText(value=s.seed, min=0, max=2 ** 31 - 1, description="seed",
                                           style=style, layout=widgets.Layout(width="130px"))
        self.show_test = widgets.Checkbox(value=True, description="show test points", indent=False,
                                          layout=layout)
        self.message = widgets.HTML("")
        self._top = widgets.HBox([self.play_button, self.step_button, self.reset_button, self.epoch_label,
                                  self.problem, self.dataset, self.regenerate_button, self.seed])
        self._row2 = widgets.HBox([
            widgets.VBox([self.noise, self.train_percent, self.batch_size]),
            widgets.VBox([self.activation, self.learning_rate]),
            widgets.VBox([self.regularization, self.regularization_rate, self.show_test])])
        if self.model_fn is not None:
            self.activation.disabled = True
            self.activation.tooltip = "your model_fn decides the activation"
        self.play_button.on_click(lambda _: self.pause() if self.playing else self.play())
        self.step_button.on_click(lambda _: self._guard(self.step))
        self.reset_button.on_click(lambda _: self._guard(self.reset))
        self.regenerate_button.on_click(lambda _: self._guard(self.regenerate))
        self.show_test.observe(lambda change: setattr(self.view, "show_test", change["new"]), names="value")
        for name in ("noise", "train_percent", "batch_size", "dataset", "activation", "learning_rate",
                     "regularization", "regularization_rate", "seed"):
            getattr(self, name).observe(self._on_control(name), names="value")
        self.problem.observe(self._on_problem, names="value")

    @staticmethod
    def _with(options, value) -> list:
        return sorted(set(options) | {value})

    @staticmethod
    def _dataset_options(problem: str) -> list:
        return list(CLASSIFICATION_SETS if problem == "classification" else REGRESSION_SETS)

    def _guard(self, action, *args, **kwargs) -> None:
        """Run a control's action; a bad value shows its message instead of breaking the widget."""
        try:
            action(*args, **kwargs)
            self.message.value = ""
        except Exception as error:  # bad settings, or a model_fn's own failure: shown, nothing lost
            text = str(error) if isinstance(error, (ValueError, TypeError)) else f"{type(error).__name__}: {error}"
            self.message.value = f"<span style='color:#b00'>{html.escape(text)}</span>"
            self._sync_controls()

    def _on_control(self, name):
        def handler(change):
            if not self._quiet and change["new"] != getattr(self.settings, name):
                self._guard(self.set, **{name: change["new"]})
        return handler

    def _on_problem(self, change) -> None:
        if self._quiet:
            return
        dataset = self._dataset_options(change["new"])[0]
        self._guard(self.set, problem=change["new"], dataset=dataset)

    def _on_shape(self, change) -> None:
        if self._quiet:
            return
        if self.model_fn is not None and change["name"] == "hidden":
            self.message.value = "the network's shape comes from your model_fn"
            self._sync_controls()
            return
        value = tuple(change["new"])
        self._guard(self.set, **{change["name"]: value})

    def _sync_controls(self) -> None:
        """Show the run's settings in every control without triggering their handlers."""
        s = self.settings
        self._quiet = True
        try:
            self.problem.value = s.problem
            self.dataset.options = self._dataset_options(s.problem)
            self.dataset.value = s.dataset
            for name in ("noise", "train_percent", "batch_size", "activation", "regularization", "seed"):
                getattr(self, name).value = getattr(s, name)
            self.learning_rate.options = self._with(LEARNING_RATES, s.learning_rate)
            self.learning_rate.value = s.learning_rate
            self.regularization_rate.options = self._with(REGULARIZATION_RATES, s.regularization_rate)
            self.regularization_rate.value = s.regularization_rate
            self.view.features = list(s.features)
            self.view.hidden = list(s.hidden) if self.run.builtin else []
        finally:
            self._quiet = False

    def _show_playing(self) -> None:
        playing = self.playing
        self.play_button.description = "pause" if playing else "play"
        self.play_button.icon = "pause" if playing else "play"
        self.view.playing = playing
