"""Interactive explorers for the lecture notebooks.

Each explorer has two layers:

* a pure function that computes and/or draws for one choice of parameters and returns a
  ``matplotlib.figure.Figure`` (or a result object). It needs no Jupyter, so tests and the
  notebooks' static figures use it directly;
* a thin ``ipywidgets`` wrapper (``*_explorer``) that puts sliders/dropdowns in front of it
  (``ipywidgets.interactive_output``) and returns the widget. The figure is shown in an
  ``ipywidgets.Image`` (PNG) that is updated in place, so executing a notebook adds no
  output besides the widget itself and the saved notebook compares cleanly under nbval.
  A widget is not visible on GitHub: show a static figure from the pure function next to it.

Figures are built with ``matplotlib.figure.Figure`` rather than ``pyplot``, so drawing one does not
leave a stray figure behind for Jupyter to show a second time. In a notebook, a Figure that is the
last expression of a cell is displayed once (as PNG after ``coursekit.plotting.use_png()``).
"""
from __future__ import annotations

import io
import numbers
from dataclasses import dataclass

import torch
from matplotlib.figure import Figure

from coursekit.activations import activation_names, get_activation

__all__ = [
    "make_explorer",
    "plot_activation",
    "activation_explorer",
    "CollapseResult",
    "linearity_collapse",
    "plot_linearity_collapse",
    "collapse_verdict",
    "collapse_explorer",
]


# Widget figures are rendered at twice the 72 dpi they are shown at, like inline 'retina' PNGs:
# sharp on high-resolution screens, and the same size on the page as the notebook's static figures.
_SHOWN_DPI = 72
_RENDER_DPI = 2 * _SHOWN_DPI


def _figure_png(fig: Figure, dpi: float | None = None) -> bytes:
    """Render ``fig`` to PNG bytes (works without any GUI or inline backend)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi or fig.dpi, bbox_inches="tight")
    return buffer.getvalue()


def _png_width(png: bytes) -> int:
    """Pixel width stored in a PNG's header (bytes 16-19 of the IHDR chunk, big-endian)."""
    return int.from_bytes(png[16:20], "big")


def make_explorer(controls: dict, render):
    """Wire ``controls`` (name -> widget) to ``render(**values) -> (Figure, html_text)``.

    The figure goes into an ``ipywidgets.Image`` (PNG) and the text into an ``HTML`` widget, both
    updated in place on every change. Nothing is *displayed* from the callback, so executing a
    notebook leaves only the widget itself as the cell's output (nbval-friendly); an exception in
    the callback still shows up, in the small Output area below. New explorers should use this
    rather than ``display`` figures from a callback, which nbval would see as extra cell outputs.
    """
    import ipywidgets as widgets

    image = widgets.Image(format="png")
    text = widgets.HTML()

    def update(**values):
        fig, html = render(**values)
        png = _figure_png(fig, dpi=_RENDER_DPI)
        image.width = str(round(_png_width(png) * _SHOWN_DPI / _RENDER_DPI))
        image.value = png
        text.value = html

    errors = widgets.interactive_output(update, controls)
    return widgets.VBox([widgets.HBox(list(controls.values())), image, text, errors])


# ----------------------------------------------------------------------------------------------
# Activation explorer

def plot_activation(name: str = "relu", x_min: float = -6.0, x_max: float = 6.0, num: int = 601,
                    figsize=(8.0, 2.8)) -> Figure:
    """Draw activation ``name`` (left) and its derivative (right) on ``[x_min, x_max]``.

    The derivative panel shows the closed-form derivative as a line and, as dots on a coarser
    grid, what autograd computes: they must lie on the line.
    """
    if not x_min < x_max:
        raise ValueError(f"x_min must be smaller than x_max, got x_min={x_min}, x_max={x_max}")
    num = _check_int("num", num, 2, 100_000)
    act = get_activation(name)
    x = torch.linspace(x_min, x_max, num, dtype=torch.float64)
    # Autograd on a coarse grid that contains 0 when the range does (kinks sit at 0).
    x_dots = torch.linspace(x_min, x_max, 25, dtype=torch.float64).requires_grad_(True)
    act(x_dots).sum().backward()

    fig = Figure(figsize=figsize, layout="constrained")
    ax_f, ax_d = fig.subplots(1, 2)
    ax_f.plot(x.numpy(), act(x).numpy(), color="C0")
    ax_f.set_title(f"{act.name}(x) = {act.formula}" if act.formula else f"{act.name}(x)")
    ax_f.set_xlabel("x")
    ax_f.set_ylabel(f"{act.name}(x)")
    ax_d.plot(x.numpy(), act.grad(x).numpy(), color="C1", label="closed form")
    ax_d.plot(x_dots.detach().numpy(), x_dots.grad.numpy(), "k.", markersize=4, label="autograd")
    ax_d.set_title(f"derivative of {act.name}")
    ax_d.set_xlabel("x")
    ax_d.set_ylabel(f"{act.name}'(x)")
    ax_d.legend(loc="best", fontsize="small")
    for ax in (ax_f, ax_d):
        ax.grid(True, alpha=0.4)
        ax.axhline(0, color="gray", linewidth=0.6)
        ax.axvline(0, color="gray", linewidth=0.6)
    return fig


def activation_explorer(names=None, value: str = "relu"):
    """A dropdown of activation names; picking one draws it, its derivative and a description."""
    import ipywidgets as widgets

    names = list(names) if names is not None else activation_names()
    if value not in names:
        raise ValueError(f"value {value!r} is not among the offered names {names}")
    dropdown = widgets.Dropdown(options=names, value=value, description="activation")

    def render(name):
        return plot_activation(name), f"<p>{get_activation(name).description}</p>"

    return make_explorer({"name": dropdown}, render)


# ----------------------------------------------------------------------------------------------
# Linearity collapse: a deep stack of affine layers vs. the single affine map it "should" equal

@dataclass
class CollapseResult:
    """What :func:`linearity_collapse` computed (all tensors float64).

    x [N], deep [N]: the inputs and the deep network's outputs.
    W [1, 1], b [1]: the collapsed affine map x W + b, from multiplying the layers' weights
        (``W = W1 W2 ... Wk``) and pushing the biases through (``b = (b1 W2 + b2) W3 + ...``).
    collapsed [N]: x W + b, the deep network's output IF the activation were the identity.
    max_abs_diff: max |deep(x) - collapsed(x)| over x.
    best_line [N]: the least-squares straight line through (x, deep(x)), the best affine map there is.
    affine_fit_residual: max |deep(x) - best_line(x)|, the distance to the best affine fit: zero
        exactly when the deep network is affine on the range, whatever its weights. (max_abs_diff is not
        that evidence: it only says the network differs from one particular affine map.)
    """

    depth: int
    width: int
    activation: str
    x: torch.Tensor
    deep: torch.Tensor
    collapsed: torch.Tensor
    W: torch.Tensor
    b: torch.Tensor
    max_abs_diff: float
    affine_fit_residual: float
    best_line: torch.Tensor | None = None


def _check_int(name: str, value, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return int(value)


def linearity_collapse(depth: int = 3, width: int = 8, activation: str = "identity", seed: int = 0,
                       x_range=(-3.0, 3.0), num: int = 401) -> CollapseResult:
    """Build a random MLP from 1 input to 1 output with ``depth`` hidden layers of ``width`` units,
    ``activation`` after each hidden layer, and compare it with its collapsed affine map.

    With the identity activation the two agree up to rounding (~1e-15); any nonlinearity breaks
    the equality. Weights are Gaussian with variance 1/fan_in (seeded), biases Gaussian with
    standard deviation 0.5, all float64, in the lecture's row convention ``H = X W + b``.
    """
    depth = _check_int("depth", depth, 1, 64)
    width = _check_int("width", width, 1, 1024)
    num = _check_int("num", num, 2, 100_000)
    act = get_activation(activation)
    lo, hi = x_range
    if not lo < hi:
        raise ValueError(f"x_range must be (low, high) with low < high, got {x_range}")

    gen = torch.Generator().manual_seed(seed)
    sizes = [1] + [width] * depth + [1]
    weights, biases = [], []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        weights.append(torch.randn(fan_in, fan_out, generator=gen, dtype=torch.float64) / fan_in ** 0.5)
        biases.append(0.5 * torch.randn(fan_out, generator=gen, dtype=torch.float64))

    x = torch.linspace(lo, hi, num, dtype=torch.float64)
    H = x[:, None]
    for i, (W_i, b_i) in enumerate(zip(weights, biases)):
        H = H @ W_i + b_i
        if i < len(weights) - 1:  # no activation after the output layer
            H = act(H)
    deep = H[:, 0]

    W, b = weights[0], biases[0]
    for W_i, b_i in zip(weights[1:], biases[1:]):
        W, b = W @ W_i, b @ W_i + b_i
    collapsed = (x[:, None] @ W + b)[:, 0]

    design = torch.stack([x, torch.ones_like(x)], dim=1)
    coef = torch.linalg.lstsq(design, deep[:, None]).solution
    best_line = (design @ coef)[:, 0]
    return CollapseResult(
        depth=depth, width=width, activation=act.name, x=x, deep=deep, collapsed=collapsed, W=W, b=b,
        max_abs_diff=(deep - collapsed).abs().max().item(),
        affine_fit_residual=(deep - best_line).abs().max().item(), best_line=best_line,
    )


def plot_linearity_collapse(result: CollapseResult | None = None, figsize=(5.5, 3.2), **params) -> Figure:
    """Plot the deep network's output and its collapsed affine map (computes them from ``params``,
    e.g. ``depth=4, activation="relu"``, when no ``result`` is given)."""
    if result is None:
        result = linearity_collapse(**params)
    elif params:
        raise TypeError("give either a CollapseResult or parameters for linearity_collapse, not both")
    x = result.x.numpy()
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.subplots()
    ax.plot(x, result.deep.numpy(), color="C0", linewidth=2.5, label="deep network")
    ax.plot(x, result.collapsed.numpy(), "--", color="C3", label="x W + b (collapsed)")
    if result.best_line is not None:
        ax.plot(x, result.best_line.numpy(), ":", color="k", label="best straight line (least squares)")
    ax.set_xlabel("x")
    ax.set_ylabel("network output")
    ax.set_title(f"{result.depth} hidden layer(s) x {result.width} units, {result.activation}\n"
                 f"distance to the best affine fit = {result.affine_fit_residual:.2g}", fontsize="medium")
    ax.grid(True, alpha=0.4)
    ax.legend(loc="best", fontsize="small")
    return fig


def collapse_verdict(result: CollapseResult, tol: float = 1e-6) -> str:
    """One sentence for students saying what ``result`` shows."""
    gaps = (f"max |deep - collapsed| = {result.max_abs_diff:.3g}, distance to the best straight "
            f"line = {result.affine_fit_residual:.3g}")
    if result.activation == "identity":
        return f"{gaps}: identity everywhere, so the stack is exactly one affine map (up to rounding)."
    if result.affine_fit_residual > tol:
        return f"{gaps}: with {result.activation} no affine map reproduces the network."
    return (f"{gaps}: on this range the network is (numerically) a straight line anyway: with "
            f"{result.width} unit(s) per layer every {result.activation} unit stays on one almost "
            f"straight piece (dead, saturated or always on). Try wider layers.")


def collapse_explorer(depth: int = 3, width: int = 8, activation: str = "identity", seed: int = 0):
    """Sliders for depth and width and a dropdown of activations (identity included): shows the
    deep network next to its collapsed affine map and the largest gap between them."""
    import ipywidgets as widgets

    controls = {
        "depth": widgets.IntSlider(value=depth, min=1, max=12, description="depth"),
        "width": widgets.IntSlider(value=width, min=1, max=64, description="width"),
        "activation": widgets.Dropdown(options=activation_names(), value=get_activation(activation).name,
                                       description="activation"),
    }

    def render(depth, width, activation):
        result = linearity_collapse(depth=depth, width=width, activation=activation, seed=seed)
        return plot_linearity_collapse(result), f"<p>{collapse_verdict(result)}</p>"

    return make_explorer(controls, render)


# ----------------------------------------------------------------------------------------------
# Misclassified images, browsed by true class (appended by notebooks-B for notebooks/05_training_mlp)

def misclassified_summary(y_true, y_pred, class_names, true_class: int, set_name: str = "test") -> str:
    """One sentence: how many images of ``true_class`` are wrong, and what they are taken for most.

    ``set_name``: which images these are, as the sentence names them (``"test"``, ``"validation"``)."""
    y_true, y_pred = torch.as_tensor(y_true).reshape(-1), torch.as_tensor(y_pred).reshape(-1)
    of_class = y_true == true_class
    wrong = of_class & (y_pred != y_true)
    name = class_names[true_class]
    if not wrong.any():
        return f"All {int(of_class.sum())} {set_name} images of class {name} are classified correctly."
    counts = torch.bincount(y_pred[wrong], minlength=len(class_names))
    most = int(counts.argmax())
    return (f"{int(wrong.sum())} of {int(of_class.sum())} {set_name} images of class {name} are misclassified; "
            f"most often as {class_names[most]} ({int(counts[most])} times).")


def plot_misclassified(images, y_true, y_pred, class_names, true_class: int, max_images: int = 16,
                       ncols: int = 8, scale: float = 1.3) -> Figure:
    """The first ``max_images`` misclassified images whose true class is ``true_class``, each titled
    with the class it was taken for. ``images``: [N, 28, 28] or [N, 1, 28, 28]; labels: [N]."""
    images = torch.as_tensor(images)
    y_true, y_pred = torch.as_tensor(y_true).reshape(-1), torch.as_tensor(y_pred).reshape(-1)
    if not (len(images) == len(y_true) == len(y_pred)):
        raise ValueError(f"images, y_true and y_pred must have the same length, got "
                         f"{len(images)}, {len(y_true)} and {len(y_pred)}")
    true_class = _check_int("true_class", true_class, 0, len(class_names) - 1)
    max_images = _check_int("max_images", max_images, 1, 256)
    ncols = _check_int("ncols", ncols, 1, 64)
    index = ((y_true == true_class) & (y_pred != y_true)).nonzero().reshape(-1)[:max_images]
    n = max(len(index), 1)
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    fig = Figure(figsize=(ncols * scale, nrows * (scale + 0.3) + 0.4), layout="constrained")
    fig.suptitle(f"true class: {class_names[true_class]}", fontsize=10)
    axes = fig.subplots(nrows, ncols, squeeze=False).reshape(-1)
    for ax in axes:
        ax.set_axis_off()
    if len(index) == 0:
        axes[0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    for ax, i in zip(axes, index.tolist()):
        ax.imshow(images[i].reshape(images.shape[-2:]).detach().cpu().numpy(), cmap="gray")
        ax.set_title(f"-> {class_names[int(y_pred[i])]}", fontsize=8, color="tab:red")
    return fig


def misclassified_explorer(images, y_true, y_pred, class_names, true_class: int = 0, max_images: int = 16,
                           set_name: str = "test"):
    """A dropdown of classes; picking one shows that class's misclassified images and a summary."""
    import ipywidgets as widgets

    options = [(name, i) for i, name in enumerate(class_names)]
    dropdown = widgets.Dropdown(options=options, value=true_class, description="true class")

    def render(true_class):
        fig = plot_misclassified(images, y_true, y_pred, class_names, true_class, max_images=max_images)
        return fig, f"<p>{misclassified_summary(y_true, y_pred, class_names, true_class, set_name)}</p>"

    return make_explorer({"true_class": dropdown}, render)


__all__ += ["misclassified_summary", "plot_misclassified", "misclassified_explorer"]
