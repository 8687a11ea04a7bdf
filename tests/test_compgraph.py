"""coursekit.compgraph: the computational-graph figure tells node kinds apart without colour (issue 21).

In the spirit of tests/test_plotting.py: every pair of node kinds differs in at least two encodings, one of which
is not colour (shape or outline style), so the figure reads the same in greyscale and to a colour-blind student.
"""
import itertools

import matplotlib

matplotlib.use("Agg")  # headless

import pytest
from matplotlib import colors
from matplotlib import pyplot as plt
from matplotlib.patches import Circle, FancyBboxPatch

from coursekit.compgraph import NODE_STYLE, draw_graph
from coursekit.plotting import OKABE_ITO

NODES = {"x": (0, 0, "var"), "W": (0, 1, "param"), "mul": (1, 0.5, "op"), "z": (2, 0.5, "var")}
EDGES = [("x", "mul"), ("W", "mul"), ("mul", "z")]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def outline_style(patch):
    """None for a solid outline, else its dash pattern (on, off lengths) as drawn.

    Read from the dash pattern itself: a legend swatch copies a patch's dashes but reports its style as "solid".
    """
    _, dashes = patch._unscaled_dash_pattern  # matplotlib has no public getter for a patch's dashes
    return tuple(dashes) if dashes else None


def drawn_look(patch) -> dict:
    """What a reader sees of one node: its shape, its outline's dash pattern, its fill and outline colours."""
    if isinstance(patch, Circle):
        shape = "circle"
    else:
        assert isinstance(patch, FancyBboxPatch), type(patch)
        shape = type(patch.get_boxstyle()).__name__.lower()
    return {"shape": shape, "dashes": outline_style(patch),
            "fill": colors.to_hex(patch.get_facecolor()), "edge": colors.to_hex(patch.get_edgecolor())}


def looks_by_kind(ax) -> dict:
    looks = {}
    for patch in ax.patches:
        look = drawn_look(patch)
        assert looks.setdefault(patch.coursekit_kind, look) == look, "two nodes of one kind drawn differently"
    return looks


def test_every_pair_of_kinds_differs_without_colour():
    ax = draw_graph(NODES, EDGES)
    looks = looks_by_kind(ax)
    assert set(looks) == {"var", "param", "op"}
    for a, b in itertools.combinations(looks, 2):
        non_colour = [k for k in ("shape", "dashes") if looks[a][k] != looks[b][k]]
        colour = [k for k in ("fill", "edge") if looks[a][k] != looks[b][k]]
        assert non_colour, f"{a} and {b} differ by colour only: {looks[a]} vs {looks[b]}"
        assert len(non_colour) + bool(colour) >= 2, f"{a} and {b} differ in one encoding only"


def test_variables_and_parameters_differ_in_shape_and_outline():
    """The pair the old figure told apart by blue vs orange fill alone."""
    looks = looks_by_kind(draw_graph(NODES, EDGES))
    assert looks["var"]["shape"] != looks["param"]["shape"]
    assert looks["var"]["dashes"] is None and looks["param"]["dashes"] is not None  # solid vs dashed outline


def test_outline_colours_come_from_the_colour_blind_safe_palette():
    looks = looks_by_kind(draw_graph(NODES, EDGES))
    palette = {c.lower() for c in OKABE_ITO}
    assert looks["var"]["edge"] in palette and looks["param"]["edge"] in palette
    assert looks["var"]["edge"] != looks["param"]["edge"]


def test_key_names_the_kinds_drawn_beside_the_graph():
    ax = draw_graph(NODES, EDGES, key=True)
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["variable", "parameter", "operator"]
    # The key's swatches are styled like the nodes they name (dashed outline for parameters).
    swatch_dashes = [outline_style(h) for h in legend.legend_handles]
    assert swatch_dashes == [None, looks_by_kind(ax)["param"]["dashes"], None]
    assert swatch_dashes[1] is not None
    # Beside the axes, not over the graph: the legend's box starts right of the axes' box.
    ax.figure.canvas.draw()
    renderer = ax.figure.canvas.get_renderer()
    assert legend.get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1


def test_key_lists_only_the_kinds_present_and_is_off_by_default():
    assert draw_graph(NODES, EDGES).get_legend() is None
    ax = draw_graph({"a": (0, 0, "var"), "f": (1, 0, "op")}, [("a", "f")], key=True)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["variable", "operator"]


def test_style_table_covers_exactly_the_documented_kinds():
    assert set(NODE_STYLE) == {"var", "param", "op"}
    with pytest.raises(ValueError, match="unknown node kind"):
        draw_graph({"a": (0, 0, "tensor")}, [])
