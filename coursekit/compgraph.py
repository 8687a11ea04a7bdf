"""Draw a small computational graph: variables as boxes, operators as circles, arrows for data flow.

Used by the backpropagation lecture to draw the graph of a one-hidden-layer MLP with weight decay::

    nodes = {"x": (0, 0, "var"), "*": (1, 0, "op"), "z": (2, 0, "var")}
    ax = draw_graph(nodes, [("x", "*"), ("*", "z")])
    len(ax.patches)   # one patch per node; one arrow annotation per edge in ax.texts

Positions are in data coordinates; the figure is PNG like every course figure (see coursekit.plotting).
"""
from __future__ import annotations

from typing import Mapping, Sequence

from matplotlib import pyplot as plt
from matplotlib.patches import Circle, FancyBboxPatch

from coursekit.plotting import use_png

__all__ = ["draw_graph"]

_STYLE = {"var": dict(facecolor="#cfe2f3", edgecolor="#1f4e79"),
          "param": dict(facecolor="#fce5cd", edgecolor="#b45f06"),
          "op": dict(facecolor="white", edgecolor="0.3")}


def draw_graph(nodes: Mapping[str, tuple[float, float, str]], edges: Sequence[tuple[str, str]],
               labels: Mapping[str, str] | None = None, ax=None, figsize=(8, 3)):
    """Draw ``nodes`` ({name: (x, y, kind)}, kind one of "var", "param", "op") joined by ``edges``.

    labels: optional text per node (default: its name, e.g. a LaTeX string such as ``"$W^{(1)}$"``).
    Returns the axes: ``ax.patches`` holds one shape per node, and each edge is one arrow annotation
    whose ``coursekit_edge`` attribute is the pair ``(source, target)``.
    """
    unknown = {kind for (_, _, kind) in nodes.values()} - set(_STYLE)
    if unknown:
        raise ValueError(f"draw_graph: unknown node kind(s) {sorted(unknown)}; use var, param or op")
    for a, b in edges:
        if a not in nodes or b not in nodes:
            raise ValueError(f"draw_graph: edge ({a!r}, {b!r}) names a node that is not in nodes")
    labels = dict(labels or {})
    use_png()
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    half_w, half_h, radius = 0.32, 0.22, 0.2
    for name, (x, y, kind) in nodes.items():
        if kind == "op":
            patch = Circle((x, y), radius, lw=1.2, zorder=2, **_STYLE[kind])
        else:
            patch = FancyBboxPatch((x - half_w, y - half_h), 2 * half_w, 2 * half_h,
                                   boxstyle="round,pad=0.02", lw=1.2, zorder=2, **_STYLE[kind])
        ax.add_patch(patch)
        ax.text(x, y, labels.get(name, name), ha="center", va="center", fontsize=10, zorder=3)
    for a, b in edges:
        (xa, ya, _), (xb, yb, _) = nodes[a], nodes[b]
        arrow = ax.annotate("", xy=(xb, yb), xytext=(xa, ya),
                            arrowprops=dict(arrowstyle="-|>", color="0.35", lw=1.0,
                                            shrinkA=14, shrinkB=14), zorder=1)
        arrow.coursekit_edge = (a, b)
    xs = [x for x, _, _ in nodes.values()]
    ys = [y for _, y, _ in nodes.values()]
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_ylim(min(ys) - 0.5, max(ys) + 0.5)
    ax.set_aspect("equal")
    ax.axis("off")
    return ax
