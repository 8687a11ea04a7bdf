"""Helpers used by the new lectures (04 backpropagation, 06 initialisation, 07 representation).

The notebooks themselves run under nbval; here only the coursekit conveniences they import.
"""
import matplotlib

matplotlib.use("Agg")

import pytest
from matplotlib import pyplot as plt

from coursekit.compgraph import draw_graph


def test_draw_graph_one_shape_per_node_one_arrow_per_edge():
    nodes = {"x": (0, 0, "param"), "*": (1, 0, "op"), "z": (2, 0, "var"), "w": (1, 1, "param")}
    edges = [("x", "*"), ("w", "*"), ("*", "z")]
    ax = draw_graph(nodes, edges, labels={"x": "$x$"})
    drawn = [t.coursekit_edge for t in ax.texts if hasattr(t, "coursekit_edge")]
    assert drawn == edges
    assert len(ax.patches) == len(nodes)
    assert {t.get_text() for t in ax.texts} >= {"$x$", "*", "z", "w"}
    plt.close(ax.figure)


def test_draw_graph_rejects_unknown_nodes_and_kinds():
    with pytest.raises(ValueError, match="names a node that is not in nodes"):
        draw_graph({"a": (0, 0, "var")}, [("a", "b")])
    with pytest.raises(ValueError, match="unknown node kind"):
        draw_graph({"a": (0, 0, "tensor")}, [])
