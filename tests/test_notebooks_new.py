"""Helpers used by the new lectures (04 backpropagation, 06/06b initialisation and dead units, 07 representation).

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


NEW_LECTURES = ["04_backpropagation", "06_initialization", "06b_dead_relu_units", "07_representation"]
ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("stem", NEW_LECTURES)
def test_new_lecture_ends_with_exercises_and_has_instructor_solutions(stem):
    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
    markdown = [c.source for c in nb.cells if c.cell_type == "markdown"]
    assert "## Exercises" in markdown[-1], f"{stem}: the last markdown cell must hold the exercises"
    assert nb.cells[-1].cell_type == "markdown", f"{stem}: nothing may follow the exercises"
    # predict-then-run prompts placed before the code cell that answers them, not only at the end
    prompts = [i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and "Predict, then run" in c.source
               and "## Exercises" not in c.source]
    assert prompts and all(nb.cells[i + 1].cell_type == "code" for i in prompts)
    solutions = ROOT / "instructor" / "exercise_solutions" / f"{stem}.md"
    n_exercises = markdown[-1].split("## Exercises", 1)[1].count("\n1. ") + \
        sum(markdown[-1].split("## Exercises", 1)[1].count(f"\n{k}. ") for k in range(2, 10))
    text = solutions.read_text()
    assert all(f"\n{k}. " in "\n" + text for k in range(1, n_exercises + 1)), f"{solutions}: a solution per exercise"
    # code cells produce their outputs and every figure is a PNG (nbval compares text, not images)
    for cell in nb.cells:
        if cell.cell_type == "code":
            for out in cell.get("outputs", []):
                assert out.get("output_type") != "error"
                assert "image/svg+xml" not in out.get("data", {})
