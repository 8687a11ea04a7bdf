"""Figures for the course: d2l-style line plots, image grids, MLP drawings, decision boundaries.

Why PNG: ``d2l.plot`` (and ``d2l.Animator``, ``d2l.ProgressBoard``) call ``d2l.use_svg_display()`` on
every call. SVG output is XML text full of generated ids, so a notebook's saved figure differs from a
fresh run's and nbval (which compares notebook outputs as text) fails. PNG outputs are not compared.

So, once, when this module is imported, ``d2l.use_svg_display`` is replaced by a function that selects
PNG instead (see :func:`patch_d2l`), and PNG is selected right away. After ``import coursekit.plotting`` (``import coursekit`` does it),
every d2l figure is PNG, however often d2l asks for SVG. :func:`use_png` does the same by hand.

Colour-blind-safe defaults: importing this module also sets matplotlib's colour cycle to the Okabe-Ito palette
(distinguishable with the common colour-vision deficiencies) *and* cycles the line style together with the colour,
so that any two of the first eight series differ in two encodings and a figure stays readable in grey
(:func:`use_colorblind_safe_style`). ``d2l.plot``, whose default formats are magenta/green/red, is replaced by
:func:`plot` (same signature) for the same reason. Legends go beside the axes (:func:`legend_beside`), not over
the data; class scatter plots give every class its own marker as well as its colour.

All functions here work in JupyterLab (inline figures) and headless (e.g. the ``Agg`` backend in tests),
and return the matplotlib axes they drew on so that a caller (or a test) can inspect them.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable, Sequence

import matplotlib as mpl
import numpy as np
import torch
from cycler import cycler
from matplotlib import pyplot as plt
from matplotlib.colors import ListedColormap
from matplotlib.patches import Circle

__all__ = [
    "use_png", "patch_d2l", "use_colorblind_safe_style", "legend_beside", "plot", "show_images", "draw_mlp",
    "plot_decision_boundary", "plot_confusion_matrix", "plot_seed_comparison", "CLASS_COLORS",
]

# Okabe & Ito (2008), "Color Universal Design": eight colours told apart with every common colour-vision deficiency.
# Ordered for lines on white: the pale yellow comes late, black last.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
# One dash pattern per colour, cycled together with it: series differ in colour *and* line style.
LINE_STYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 1)), (0, (5, 1)), (0, (3, 4, 1, 4)))
# One marker per class for scatter plots (shape as well as colour).
CLASS_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<")
# Hatch per class for decision regions (texture as well as colour).
CLASS_HATCHES = ("", "//", "..", "\\\\", "xx", "--", "++", "oo", "||", "**")
RIGHT_COLOR, WRONG_COLOR = OKABE_ITO[0], OKABE_ITO[3]
# One colour per class (up to 10), used for points and, lightened, for decision regions.
CLASS_COLORS = OKABE_ITO + ("#999999", "#882255")


def use_colorblind_safe_style() -> None:
    """Set matplotlib's defaults: the Okabe-Ito colours cycled together with line styles, labelled-axis friendly grid.

    Called once when this module is imported; call it again after ``plt.style.use`` or ``rcdefaults``.
    """
    mpl.rcParams["axes.prop_cycle"] = cycler(color=OKABE_ITO) + cycler(linestyle=LINE_STYLES)
    mpl.rcParams["legend.framealpha"] = 0.9


def legend_beside(ax, *args, **kwargs):
    """A legend to the right of ``ax``, outside the axes, where it cannot hide data. Returns the legend."""
    kwargs.setdefault("loc", "upper left")
    kwargs.setdefault("bbox_to_anchor", (1.02, 1.0))
    kwargs.setdefault("borderaxespad", 0.0)
    kwargs.setdefault("fontsize", "small")
    return ax.legend(*args, **kwargs)


def _ipython_shell():
    """The running IPython shell, or None (plain Python, pytest, a script)."""
    try:
        from IPython import get_ipython
    except ImportError:  # IPython is optional outside notebooks
        return None
    return get_ipython()


def use_png(retina: bool = True) -> bool:
    """Make inline figures PNG (sharp ``'retina'`` PNG by default) instead of SVG.

    Returns True when a running IPython/Jupyter shell was switched, False when there is
    none (a script or a test: nothing is displayed inline, so there is nothing to switch).
    """
    shell = _ipython_shell()
    if shell is None:
        return False
    from matplotlib_inline.backend_inline import set_matplotlib_formats
    set_matplotlib_formats("retina" if retina else "png")
    return True


def _use_png_instead_of_svg():
    """Stand-in for ``d2l.use_svg_display``: selects PNG (see the module docstring for why)."""
    use_png()


_use_png_instead_of_svg.coursekit_patched = True


def patch_d2l() -> None:
    """Replace ``d2l.use_svg_display`` by a PNG switch, so every d2l figure comes out as PNG.

    ``d2l.set_figsize``, ``d2l.Animator`` and ``d2l.ProgressBoard`` look the name up in the
    ``d2l.torch`` module each time they run, so replacing the module attribute is enough.
    Safe to call many times; called once when this module is imported.
    """
    from d2l import torch as d2l_torch
    if not getattr(d2l_torch.use_svg_display, "coursekit_patched", False):
        d2l_torch.use_svg_display = _use_png_instead_of_svg
    d2l_torch.plot = plot  # d2l's own default formats are magenta, green and red




def _to_numpy(a):
    """Tensors (also ones that need grad or live on a GPU), lists and arrays -> numpy."""
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _has_one_axis(a) -> bool:
    """True for one curve (a 1-D tensor/array or a flat list of numbers), as in d2l.plot."""
    if hasattr(a, "ndim"):
        return a.ndim == 1
    return isinstance(a, (list, tuple)) and len(a) > 0 and not hasattr(a[0], "__len__")


def set_axes(axes, xlabel, ylabel, xlim, ylim, xscale, yscale, legend):
    """Label, scale and limit ``axes``; add a legend and a grid (as ``d2l.set_axes``)."""
    axes.set_xlabel(xlabel), axes.set_ylabel(ylabel)
    axes.set_xscale(xscale), axes.set_yscale(yscale)
    axes.set_xlim(xlim), axes.set_ylim(ylim)
    if legend:
        legend_beside(axes, legend)
    axes.grid()
    return axes


def plot(X, Y=None, xlabel=None, ylabel=None, legend=None, xlim=None,
         ylim=None, xscale="linear", yscale="linear",
         fmts=("-", "--", "-.", ":"), figsize=(3.5, 2.5), axes=None):
    """Plot one or more curves; a drop-in for ``d2l.plot`` that returns the axes.

    ``X`` and ``Y`` are one curve (1-D tensor, array or list) or a list of curves. With ``Y=None``
    the curves in ``X`` are plotted against their index. One ``X`` with several ``Y`` curves is
    shared by all of them. Differences from d2l: tensors that require grad are fine (detached),
    the figure is PNG, with more curves than ``fmts`` the formats repeat instead of curves
    being silently dropped, colours come from the colour-blind-safe cycle (d2l's default formats are
    magenta/green/red), and the legend sits beside the axes instead of over the curves.
    """
    if _has_one_axis(X):
        X = [X]
    if Y is None:
        X, Y = [[]] * len(X), X
    elif _has_one_axis(Y):
        Y = [Y]
    if len(X) != len(Y):
        if len(X) != 1:
            raise ValueError(f"plot: got {len(X)} x-curves for {len(Y)} y-curves; "
                             "give one x for all curves or one x per curve")
        X = X * len(Y)
    if not fmts:
        raise ValueError("plot: fmts must hold at least one format string, e.g. ('-',)")
    use_png()
    plt.rcParams["figure.figsize"] = figsize
    if axes is None:
        axes = plt.gca()
    axes.cla()
    for x, y, fmt in zip(X, Y, itertools.cycle(fmts)):
        x, y = _to_numpy(x), _to_numpy(y)
        if len(x):
            if len(x) != len(y):
                raise ValueError(f"plot: a curve has {len(x)} x values but {len(y)} y values")
            axes.plot(x, y, fmt)
        else:
            axes.plot(y, fmt)
    return set_axes(axes, xlabel, ylabel, xlim, ylim, xscale, yscale, legend)


def _image_to_numpy(img) -> np.ndarray:
    """One image as [H, W] (grey) or [H, W, 3|4] (colour) numpy; accepts [1, H, W] and [C, H, W]."""
    a = _to_numpy(img)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # channels first (torch) -> channels last (matplotlib)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3):
        raise ValueError(f"show_images: each image must be [H, W], [1, H, W] or [H, W, C]; got shape {a.shape}")
    return a


def show_images(images, labels=None, ncols=8, scale=1.5, correct=None, cmap="gray"):
    """Show images in a grid with an optional title (label) above each one.

    images:  a tensor [N, H, W] / [N, 1, H, W] / [N, H, W, C], or a list of single images.
    labels:  N titles (strings or numbers), e.g. ``"true: shirt\\npred: coat"``.
    correct: optional N booleans: titles are blue where True (right), bold vermillion where False (wrong).
    Returns the flat array of the N axes that hold images (unused grid cells are hidden).
    """
    images = list(images)
    n = len(images)
    if n == 0:
        raise ValueError("show_images: no images given")
    if ncols < 1:
        raise ValueError(f"show_images: ncols must be >= 1, got {ncols}")
    if labels is not None:
        labels = list(labels)
        if len(labels) != n:
            raise ValueError(f"show_images: {n} images but {len(labels)} labels")
    if correct is not None:
        correct = [bool(c) for c in _to_numpy(correct).reshape(-1)]
        if len(correct) != n:
            raise ValueError(f"show_images: {n} images but {len(correct)} entries in correct")
    use_png()
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    extra_height = 0.35 * (max(str(t).count("\n") for t in labels) + 1) if labels else 0
    fig, axes = plt.subplots(nrows, ncols, squeeze=False,
                             figsize=(ncols * scale, nrows * (scale + extra_height)))
    axes = axes.reshape(-1)
    for ax in axes[n:]:
        ax.set_visible(False)
    for i, (ax, img) in enumerate(zip(axes, images)):
        ax.imshow(_image_to_numpy(img), cmap=cmap)
        ax.set_xticks([]), ax.set_yticks([])
        if labels is not None:
            # right/wrong: Okabe-Ito blue/vermillion, and wrong ones bold (readable without colour)
            style = {} if correct is None else (
                {"color": RIGHT_COLOR} if correct[i] else {"color": WRONG_COLOR, "fontweight": "bold"})
            ax.set_title(str(labels[i]), fontsize=9, **style)
    fig.tight_layout()
    return axes[:n]


def draw_mlp(layer_sizes: Sequence[int] = (4, 5, 3), labels: Sequence[str] | None = None,
             unit_names: Sequence[str] | None = None, ax=None, figsize=None):
    """Draw a fully connected network: one row of circles per layer, an edge for every connection.

    layer_sizes: units per layer from input to output, e.g. the lecture's (4, 5, 3).
    labels:      one caption per layer; default "Input layer", "Hidden layer(s)", "Output layer".
    unit_names:  one letter per layer for the unit names (x1.., h1.., o1..); default x, h, o
                 ($h^{(1)}_1$.. when there are several hidden layers).
    The input layer is at the bottom and the output layer on top, as in the d2l figure.
    Returns the axes; ``ax.lines`` holds exactly one line per connection and ``ax.patches``
    one circle per unit.
    """
    sizes = [int(s) for s in layer_sizes]
    if len(sizes) < 2 or any(s < 1 for s in sizes):
        raise ValueError(f"draw_mlp: need at least two layers of at least one unit each, got {tuple(layer_sizes)}")
    n_layers = len(sizes)
    if labels is None:
        hidden = ["Hidden layer"] if n_layers == 3 else [f"Hidden layer {i}" for i in range(1, n_layers - 1)]
        labels = ["Input layer", *hidden, "Output layer"]
    if len(labels) != n_layers:
        raise ValueError(f"draw_mlp: {n_layers} layers but {len(labels)} labels")
    if unit_names is None:
        unit_names = ["x", *(["h"] * (n_layers - 2)), "o"]
    if len(unit_names) != n_layers:
        raise ValueError(f"draw_mlp: {n_layers} layers but {len(unit_names)} unit names")
    use_png()
    width = max(sizes)
    radius, spacing = 0.22, 1.3  # unit circle size and distance between layers
    if ax is None:
        _, ax = plt.subplots(figsize=figsize or (0.55 * (width + 3), 0.55 * spacing * n_layers + 0.2))
    # Centre each layer horizontally; layer i sits at height i * spacing.
    positions = [[(j - (s - 1) / 2, i * spacing) for j in range(s)] for i, s in enumerate(sizes)]
    for lower, upper in zip(positions[:-1], positions[1:]):
        for (x0, y0) in lower:
            for (x1, y1) in upper:
                ax.plot([x0, x1], [y0 + radius, y1 - radius], color="0.45", lw=0.8, zorder=1)
    several_hidden = n_layers > 3
    for i, layer in enumerate(positions):
        for j, (x, y) in enumerate(layer, start=1):
            ax.add_patch(Circle((x, y), radius, facecolor="#cfe2f3", edgecolor="#1f4e79", lw=1.2, zorder=2))
            name = unit_names[i]
            layer_mark = f"^{{({i})}}" if several_hidden and 0 < i < n_layers - 1 else ""
            ax.text(x, y, f"${name}{layer_mark}_{{{j}}}$", ha="center", va="center", fontsize=9, zorder=3)
        ax.text(width / 2 + 0.4, i * spacing, labels[i], ha="left", va="center", fontsize=10)
    ax.set_xlim(-width / 2 - 0.2, width / 2 + 2.6)
    ax.set_ylim(-0.45, (n_layers - 1) * spacing + 0.45)
    ax.set_aspect("equal")
    ax.axis("off")
    return ax


def _predict_labels(predict, points: torch.Tensor) -> np.ndarray:
    """Class labels for ``points`` [M, 2] from a model/callable returning logits or labels."""
    was_training = None
    if isinstance(predict, torch.nn.Module):
        was_training = predict.training
        predict.eval()  # dropout/batch norm must not change the picture
        try:
            first = next(predict.parameters())
            points = points.to(device=first.device, dtype=first.dtype)
        except StopIteration:
            pass
    try:
        with torch.no_grad():
            out = predict(points)
    finally:
        if was_training:
            predict.train()
    out = torch.as_tensor(out).detach().cpu()
    m = points.shape[0]
    if out.ndim == 2 and out.shape[0] == m and out.shape[1] > 1:
        return out.argmax(dim=1).numpy()          # logits or probabilities per class
    if out.ndim == 2 and out.shape == (m, 1):
        out = out[:, 0]
    if out.ndim == 1 and out.shape[0] == m:
        if out.dtype.is_floating_point:
            return (out > 0).long().numpy()       # one logit for a two-class problem
        return out.long().numpy()                 # labels already
    raise ValueError(f"plot_decision_boundary: predict must map [N, 2] to logits [N, C], one logit [N] / [N, 1] "
                     f"or labels [N]; for N={m} it returned shape {tuple(out.shape)}")


def plot_decision_boundary(predict: Callable | torch.nn.Module, X, y, ax=None, title=None,
                           resolution: int = 200, margin: float = 0.1):
    """Colour the plane by the class ``predict`` gives each point, and show the data on top.

    predict:    an ``nn.Module`` or a callable mapping a float tensor [N, 2] to logits [N, C]
                (class = argmax), one logit [N] or [N, 1] (class = logit > 0), or integer labels [N].
                A module is evaluated in eval mode under ``torch.no_grad`` and its mode is restored.
    X, y:       the data, [N, 2] and [N] (tensors or arrays).
    resolution: grid points per axis; the region image has exactly ``resolution**2`` cells whose
                centres are the points that were classified (``ax.images[0]``).
    Classes differ in colour (Okabe-Ito), region hatching and point marker. Returns the axes.
    """
    X = torch.as_tensor(_to_numpy(X), dtype=torch.float32)
    y = np.asarray(_to_numpy(y)).reshape(-1)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"plot_decision_boundary: X must have shape [N, 2], got {tuple(X.shape)}")
    if len(y) != X.shape[0]:
        raise ValueError(f"plot_decision_boundary: X has {X.shape[0]} points but y has {len(y)} labels")
    if not callable(predict):
        raise TypeError("plot_decision_boundary: predict must be an nn.Module or a callable")
    if int(resolution) != resolution or resolution < 2:
        raise ValueError(f"plot_decision_boundary: resolution must be an integer >= 2, got {resolution}")
    resolution = int(resolution)
    lo, hi = X.min(dim=0).values.numpy(), X.max(dim=0).values.numpy()
    pad = margin * np.maximum(hi - lo, 1e-3)
    lo, hi = lo - pad, hi + pad
    xs = np.linspace(lo[0], hi[0], resolution)
    ys = np.linspace(lo[1], hi[1], resolution)
    gx, gy = np.meshgrid(xs, ys)                      # row r <-> ys[r], column c <-> xs[c]
    grid = torch.tensor(np.stack([gx.ravel(), gy.ravel()], axis=1), dtype=torch.float32)
    regions = _predict_labels(predict, grid).reshape(resolution, resolution)

    n_classes = int(max(regions.max(), y.max() if len(y) else 0)) + 1
    colors = [CLASS_COLORS[i % len(CLASS_COLORS)] for i in range(n_classes)]
    use_png()
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    dx, dy = xs[1] - xs[0], ys[1] - ys[0]
    # Cells centred on the grid points: the extent reaches half a cell beyond the outer points.
    ax.imshow(regions, origin="lower", interpolation="nearest", aspect="auto", alpha=0.35,
              cmap=ListedColormap(colors), vmin=-0.5, vmax=n_classes - 0.5,
              extent=(xs[0] - dx / 2, xs[-1] + dx / 2, ys[0] - dy / 2, ys[-1] + dy / 2))
    # Texture as well as colour: each class's region gets its own hatch (readable without colour vision).
    ax.contourf(gx, gy, regions, levels=np.arange(n_classes + 1) - 0.5, colors="none",
                hatches=[CLASS_HATCHES[i % len(CLASS_HATCHES)] for i in range(n_classes)])
    Xn = X.numpy()
    for c in range(n_classes):
        mask = y == c
        if mask.any():
            ax.scatter(Xn[mask, 0], Xn[mask, 1], s=14, color=colors[c], edgecolors="k",
                       marker=CLASS_MARKERS[c % len(CLASS_MARKERS)], linewidths=0.3, label=f"class {c}")
    ax.set_xlabel("$x_1$"), ax.set_ylabel("$x_2$")
    if title is not None:
        ax.set_title(title)
    return ax


def plot_confusion_matrix(cm, class_names: Sequence[str], ax=None, title=None, cmap="Blues"):
    """Show a confusion matrix: row = true class, column = predicted class, count in every cell.

    cm: a square [C, C] tensor/array of counts; class_names: C names. Returns the axes.
    """
    cm = _to_numpy(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"plot_confusion_matrix: cm must be square [C, C], got shape {cm.shape}")
    names = list(class_names)
    if len(names) != cm.shape[0]:
        raise ValueError(f"plot_confusion_matrix: cm has {cm.shape[0]} classes but {len(names)} class_names")
    use_png()
    if ax is None:
        size = max(4.0, 0.55 * len(names) + 1.5)
        _, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap=cmap, interpolation="nearest")
    threshold = cm.max() / 2 if cm.size else 0
    integral = np.issubdtype(cm.dtype, np.integer) or np.all(np.mod(cm, 1) == 0)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            value = cm[i, j]
            text = f"{int(value)}" if integral else f"{value:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="white" if value > threshold else "black")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted class"), ax.set_ylabel("true class")
    if title is not None:
        ax.set_title(title)
    return ax


def plot_seed_comparison(labels: Sequence[str], results, xlabel: str, ylabel: str, ylim=(0.0, 1.0),
                         reference: float | None = None, reference_label: str = "chance", ax=None,
                         figsize=(4.5, 3)):
    """Configurations side by side: every seed's result as a dot, the mean with an error bar (the seed range).

    ``results[i]``: the results (one per seed) of configuration ``labels[i]``. ``ylim`` defaults to the whole range
    of an accuracy, [0, 1], so that a gap of a point looks like a point and not like a cliff; ``reference`` draws a
    dashed line (e.g. chance level, 0.1 for ten classes).
    """
    values = [np.asarray([float(v) for v in r]) for r in results]
    if len(values) != len(labels) or any(len(v) == 0 for v in values):
        raise ValueError(f"plot_seed_comparison needs one non-empty list of results per label: {len(labels)} labels, "
                         f"{[len(v) for v in values]} results")
    if not xlabel or not ylabel:
        raise ValueError("plot_seed_comparison needs an x-label and a y-label")
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    positions = np.arange(len(labels))
    means = np.array([v.mean() for v in values])
    low = means - np.array([v.min() for v in values])
    high = np.array([v.max() for v in values]) - means
    for x, v in zip(positions, values):
        ax.plot(np.full(len(v), x, dtype=float), v, "o", color="0.6", markersize=3, zorder=1)
    ax.errorbar(positions, means, yerr=[low, high], fmt="s", color=CLASS_COLORS[0], capsize=5, zorder=2,
                label=f"mean, bar: seed range ({len(values[0])} seeds)")
    if reference is not None:
        ax.axhline(reference, color="0.5", linestyle="--", linewidth=1, label=reference_label)
    ax.set_xticks(positions, [str(label) for label in labels])
    ax.set_xlim(-0.5, len(labels) - 0.5)
    ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    legend_beside(ax)
    return ax


patch_d2l()
use_colorblind_safe_style()
use_png()  # in a notebook: PNG from now on, even if some d2l figure switched to SVG before this import
