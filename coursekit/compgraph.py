"""Draw a small computational graph: variables as boxes, operators as circles, arrows for data flow.

Used by the backpropagation lecture to draw the graph of a one-hidden-layer MLP with weight decay::

    nodes = {"x": (0, 0, "var"), "*": (1, 0, "op"), "z": (2, 0, "var")}
    ax = draw_graph(nodes, [("x", "*"), ("*", "z")])
    len(ax.patches)   # one patch per node; one arrow annotation per edge in ax.texts

Positions are in data coordinates; the figure is PNG like every course figure (see coursekit.plotting).
Node kinds differ by shape and outline as well as by colour (readable in grey and with any colour-vision
deficiency): variables are rounded boxes with a solid outline, parameters square boxes with a dashed outline,
operators circles; ``key=True`` adds a legend naming the three beside the graph.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from matplotlib import pyplot as plt
from matplotlib.patches import Circle, FancyBboxPatch, Patch

from coursekit.plotting import OKABE_ITO, legend_beside, use_png

__all__ = ["draw_graph", "NODE_STYLE"]

# Per kind: a pale fill from the Okabe-Ito palette, its full colour as the outline, and a shape and outline style of
# its own, so that no two kinds differ by colour alone.
NODE_STYLE = {
    "var": dict(shape="round", linestyle="-", facecolor="#cce3f0", edgecolor=OKABE_ITO[0], name="variable"),
    "param": dict(shape="square", linestyle="--", facecolor="#fbe6bf", edgecolor=OKABE_ITO[3], name="parameter"),
    "op": dict(shape="circle", linestyle="-", facecolor="white", edgecolor="0.3", name="operator"),
}


def _node_patch(x: float, y: float, kind: str, **extra):
    style = NODE_STYLE[kind]
    common = dict(facecolor=style["facecolor"], edgecolor=style["edgecolor"], linestyle=style["linestyle"],
                  lw=1.4, **extra)
    if style["shape"] == "circle":
        return Circle((x, y), 0.2, **common)
    half_w, half_h = 0.32, 0.22
    return FancyBboxPatch((x - half_w, y - half_h), 2 * half_w, 2 * half_h,
                          boxstyle=f"{style['shape']},pad=0.02", **common)


def draw_graph(nodes: Mapping[str, tuple[float, float, str]], edges: Sequence[tuple[str, str]],
               labels: Mapping[str, str] | None = None, ax=None, figsize=(8, 3), key: bool = False):
    """Draw ``nodes`` ({name: (x, y, kind)}, kind one of "var", "param", "op") joined by ``edges``.

    labels: optional text per node (default: its name, e.g. a LaTeX string such as ``"$W^{(1)}$"``).
    Returns the axes: ``ax.patches`` holds one shape per node, and each edge is one arrow annotation
    whose ``coursekit_edge`` attribute is the pair ``(source, target)``; each node patch carries its kind as
    ``coursekit_kind``. key: add a legend beside the axes naming the node kinds drawn (variable, parameter, operator).
    """
    unknown = {kind for (_, _, kind) in nodes.values()} - set(NODE_STYLE)
    if unknown:
        raise ValueError(f"draw_graph: unknown node kind(s) {sorted(unknown)}; use var, param or op")
    for a, b in edges:
        if a not in nodes or b not in nodes:
            raise ValueError(f"draw_graph: edge ({a!r}, {b!r}) names a node that is not in nodes")
    labels = dict(labels or {})
    use_png()
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    for name, (x, y, kind) in nodes.items():
        patch = _node_patch(x, y, kind, zorder=2)
        patch.coursekit_kind = kind
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
    if key:
        kinds = [kind for kind in NODE_STYLE if kind in {k for (_, _, k) in nodes.values()}]
        # Legend handles are plain patches (not drawn on the axes), styled like the nodes they name.
        handles = [Patch(facecolor=NODE_STYLE[k]["facecolor"], edgecolor=NODE_STYLE[k]["edgecolor"],
                         linestyle=NODE_STYLE[k]["linestyle"], lw=1.4, label=NODE_STYLE[k]["name"]) for k in kinds]
        legend_beside(ax, handles=handles)
    return ax
