"""coursekit.plotting: figures have the parts they claim, and d2l figures come out as PNG."""
import matplotlib

matplotlib.use("Agg")  # headless

import numpy as np
import pytest
import torch
from matplotlib import pyplot as plt
from matplotlib.patches import Circle

from coursekit import plotting
from conftest import run_in_kernel


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_importing_patches_d2l_svg_switch():
    from d2l import torch as d2l
    assert getattr(d2l.use_svg_display, "coursekit_patched", False)
    plotting.patch_d2l()  # idempotent
    assert d2l.use_svg_display is plotting._use_png_instead_of_svg
    assert plotting.use_png() is False  # no IPython shell under pytest


def test_d2l_plot_in_a_kernel_gives_png_not_svg():
    """d2l.plot asks for SVG on every call; after importing coursekit.plotting it must be PNG."""
    cells = run_in_kernel(
        "import torch\nfrom d2l import torch as d2l\nimport coursekit.plotting\n"
        "d2l.plot(torch.arange(5.0), torch.arange(5.0) ** 2, 'x', 'y')",
        "d2l.use_svg_display()\ncoursekit.plotting.plot(torch.arange(3.0))")
    for cell in cells:
        mimes = [m for out in cell.outputs for m in out.get("data", {})]
        assert "image/png" in mimes, cell.outputs
        assert "image/svg+xml" not in mimes


def test_plot_matches_d2l_curves_and_returns_axes():
    x = torch.arange(-2.0, 2.0, 0.5, requires_grad=True)  # needs detaching, d2l.plot would fail
    ax = plotting.plot(x, [torch.relu(x), torch.sigmoid(x), torch.tanh(x)], "x", "f(x)",
                       legend=["relu", "sigmoid", "tanh"], xlim=(-2, 2))
    assert len(ax.lines) == 3
    np.testing.assert_allclose(ax.lines[0].get_ydata(), torch.relu(x).detach().numpy())
    np.testing.assert_allclose(ax.lines[2].get_xdata(), x.detach().numpy())
    assert ax.lines[1].get_linestyle() == "--"  # second default format '--'
    colours = [matplotlib.colors.to_hex(line.get_color()) for line in ax.lines]
    assert colours == [c.lower() for c in plotting.OKABE_ITO[:3]]  # not d2l's magenta/green/red
    assert ax.get_xlabel() == "x" and ax.get_ylabel() == "f(x)"
    assert ax.get_xlim() == (-2, 2)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["relu", "sigmoid", "tanh"]


def test_plot_y_only_log_scale_and_redraw_on_given_axes():
    _, ax = plt.subplots()
    plotting.plot([1.0, 10.0, 100.0], yscale="log", axes=ax)
    assert plotting.plot([[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]], axes=ax) is ax
    assert len(ax.lines) == 5  # cla() cleared the first curve; 5 curves > 4 fmts all drawn
    np.testing.assert_array_equal(ax.lines[4].get_xdata(), [0, 1])
    with pytest.raises(ValueError, match="x values"):
        plotting.plot([0, 1, 2], [1, 2])


def test_show_images_grid_titles_and_colours():
    images = torch.rand(10, 1, 28, 28)
    labels = [f"img {i}" for i in range(10)]
    correct = [i % 3 != 0 for i in range(10)]
    axes = plotting.show_images(images, labels, ncols=4, correct=correct)
    assert len(axes) == 10
    fig = axes[0].figure
    assert len(fig.axes) == 12 and sum(a.get_visible() for a in fig.axes) == 10  # 3 rows x 4
    assert axes[3].get_title() == "img 3"
    np.testing.assert_allclose(axes[3].images[0].get_array(), images[3, 0].numpy())
    red, green = matplotlib.colors.to_rgba(plotting.WRONG_COLOR), matplotlib.colors.to_rgba(plotting.RIGHT_COLOR)
    assert matplotlib.colors.to_rgba(axes[3].title.get_color()) == red
    assert axes[3].title.get_fontweight() == "bold"  # wrong: colour and weight
    assert matplotlib.colors.to_rgba(axes[4].title.get_color()) == green
    assert axes[4].title.get_fontweight() != "bold"
    plain = plotting.show_images(images[:3, 0], ["a", "b", "c"])  # no colours asked for: default title colour
    assert [a.get_title() for a in plain] == ["a", "b", "c"]
    assert matplotlib.colors.to_rgba(plain[0].title.get_color()) not in (red, green)
    with pytest.raises(ValueError, match="10 images but 2 labels"):
        plotting.show_images(images, ["a", "b"])


def test_draw_mlp_has_every_unit_and_connection():
    ax = plotting.draw_mlp((4, 5, 3))
    assert len(ax.lines) == 4 * 5 + 5 * 3
    circles = [p for p in ax.patches if isinstance(p, Circle)]
    assert len(circles) == 4 + 5 + 3
    texts = {t.get_text() for t in ax.texts}
    assert {"Input layer", "Hidden layer", "Output layer", "$x_{4}$", "$h_{5}$", "$o_{3}$"} <= texts
    # each hidden unit is connected to all 4 inputs below it and 3 outputs above it
    heights = sorted({c.center[1] for c in circles})
    assert [sum(c.center[1] == h for c in circles) for h in heights] == [4, 5, 3]  # inputs at the bottom
    hidden = [c.center for c in circles if c.center[1] == heights[1]]
    assert len(hidden) == 5
    for hx, hy in hidden:
        ends = [ln for ln in ax.lines
                if any(np.isclose(px, hx) and abs(py - hy) < 0.3 for px, py in ln.get_xydata())]
        assert len(ends) == 4 + 3  # all inputs below it, all outputs above it
    deep = plotting.draw_mlp((3, 2, 10, 1))
    assert len(deep.lines) == 3 * 2 + 2 * 10 + 10 * 1
    with pytest.raises(ValueError, match="at least two layers"):
        plotting.draw_mlp((4,))


def _grid_centres(image):
    x0, x1, y0, y1 = image.get_extent()
    rows, cols = image.get_array().shape
    xs = x0 + (np.arange(cols) + 0.5) * (x1 - x0) / cols
    ys = y0 + (np.arange(rows) + 0.5) * (y1 - y0) / rows
    gx, gy = np.meshgrid(xs, ys)
    return torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float32)


def test_decision_regions_are_the_models_predictions():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    model.train()
    X = torch.randn(60, 2) * 2
    y = torch.randint(0, 3, (60,))
    ax = plotting.plot_decision_boundary(model, X, y, title="mlp", resolution=37)
    image = ax.images[0]
    regions = np.asarray(image.get_array())
    assert regions.shape == (37, 37)
    with torch.no_grad():
        expected = model(_grid_centres(image)).argmax(1).numpy().reshape(37, 37)
    np.testing.assert_array_equal(regions, expected)
    assert len(set(expected.ravel())) > 1  # a real boundary is drawn
    assert model.training  # mode restored
    assert ax.get_title() == "mlp"
    xmin, xmax, ymin, ymax = image.get_extent()
    assert xmin < X[:, 0].min() and xmax > X[:, 0].max() and ymin < X[:, 1].min() and ymax > X[:, 1].max()
    scatters = [c for c in ax.collections if c.get_label().startswith("class ")]
    plotted = np.concatenate([c.get_offsets() for c in scatters])
    assert len(plotted) == 60
    # every class differs in two encodings: colour and marker (points), colour and hatch (regions)
    assert len({tuple(c.get_facecolor()[0]) for c in scatters}) == len(scatters) == 3
    assert len({c.get_paths()[0].vertices.tobytes() for c in scatters}) == 3  # three marker shapes
    hatches = [c.get_hatch() for c in ax.collections if not c.get_label().startswith("class ")]
    assert len(set(hatches)) == 3, hatches


def test_decision_boundary_callables_labels_and_single_logit():
    X = np.array([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    y = np.array([0, 1, 1])
    ax = plotting.plot_decision_boundary(lambda P: P[:, 0] > 0.25, X, y, resolution=20)  # bool labels
    image = ax.images[0]
    expected = (_grid_centres(image)[:, 0] > 0.25).numpy().reshape(20, 20)
    np.testing.assert_array_equal(np.asarray(image.get_array()), expected.astype(int))
    ax = plotting.plot_decision_boundary(lambda P: (P[:, 1] - 0.5)[:, None], X, y, resolution=20)  # one logit
    image = ax.images[0]
    expected = (_grid_centres(image)[:, 1] > 0.5).numpy().reshape(20, 20)
    np.testing.assert_array_equal(np.asarray(image.get_array()), expected.astype(int))
    with pytest.raises(ValueError, match=r"shape \[N, 2\]"):
        plotting.plot_decision_boundary(lambda P: P[:, 0], np.zeros((5, 3)), np.zeros(5))
    with pytest.raises(ValueError, match="returned shape"):
        plotting.plot_decision_boundary(lambda P: P.sum(), X, y, resolution=5)


def test_confusion_matrix_cells_and_labels():
    cm = torch.tensor([[5, 1, 0], [2, 7, 1], [0, 0, 9]])
    names = ["a", "b", "c"]
    ax = plotting.plot_confusion_matrix(cm, names)
    np.testing.assert_array_equal(ax.images[0].get_array(), cm.numpy())
    assert sorted(t.get_text() for t in ax.texts) == sorted(str(v) for v in cm.flatten().tolist())
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert ax.get_ylabel() == "true class"
    with pytest.raises(ValueError, match="3 classes but 2"):
        plotting.plot_confusion_matrix(cm, names[:2])


def test_seed_comparison_shows_each_seed_mean_and_range_on_an_honest_axis():
    ax = plotting.plot_seed_comparison(["a", "b"], [[0.80, 0.82, 0.81], [0.5, 0.7, 0.6]], "config", "val accuracy",
                                       reference=0.1)
    assert ax.get_ylim() == (0.0, 1.0) and ax.get_ylabel() == "val accuracy" and ax.get_xlabel() == "config"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    dots = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert sorted(np.round(np.concatenate([d.get_ydata() for d in dots]), 2)) == [0.5, 0.6, 0.7, 0.8, 0.81, 0.82]
    bars = ax.containers[0]
    assert np.allclose(bars.lines[0].get_ydata(), [0.81, 0.6])  # the means
    segments = bars.lines[2][0].get_segments()  # the error bars span each seed range
    assert np.allclose([(s[0][1], s[1][1]) for s in segments], [(0.80, 0.82), (0.5, 0.7)])
    assert any(line.get_linestyle() == "--" and list(line.get_ydata()) == [0.1, 0.1] for line in ax.get_lines())
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="one non-empty list"):
        plotting.plot_seed_comparison(["a", "b"], [[0.8]], "x", "y")
    with pytest.raises(ValueError, match="y-label"):
        plotting.plot_seed_comparison(["a"], [[0.8]], "x", "")


# ---- colour-blind-safe defaults ----------------------------------------------------------------------------------

def _luminance(colour):
    r, g, b = matplotlib.colors.to_rgb(colour)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_default_cycle_is_okabe_ito_with_a_line_style_per_colour():
    cycle = list(matplotlib.rcParams["axes.prop_cycle"])
    assert [c["color"] for c in cycle] == list(plotting.OKABE_ITO)
    styles = [str(c["linestyle"]) for c in cycle]
    assert len(set(styles)) == len(cycle) == 8  # any two of the first 8 series differ in colour AND line style
    assert "#FF0000" not in plotting.OKABE_ITO and "#00FF00" not in plotting.OKABE_ITO
    _, ax = plt.subplots()
    lines = [ax.plot([0, 1], [i, i + 1])[0] for i in range(8)]
    assert len({line.get_color() for line in lines}) == 8  # a plain ax.plot gets the cycle
    assert [line.get_linestyle() for line in lines[:4]] == ["-", "--", "-.", ":"]


def test_d2l_plot_is_the_colour_blind_safe_plot():
    from d2l import torch as d2l
    assert d2l.plot is plotting.plot
    ax = d2l.plot(torch.arange(4.0), [torch.arange(4.0), torch.arange(4.0) ** 2], "x", "y", legend=["a", "b"])
    assert [line.get_linestyle() for line in ax.lines] == ["-", "--"]
    assert matplotlib.colors.to_hex(ax.lines[1].get_color()) != matplotlib.colors.to_hex("m")


def _points_in_display(ax):
    pts = [line.get_xydata() for line in ax.get_lines() if len(line.get_xydata())]
    pts += [c.get_offsets() for c in ax.collections if len(c.get_offsets())]
    return ax.transData.transform(np.concatenate(pts))


def test_legend_sits_off_the_data_and_axes_are_labelled():
    """A sample figure whose data fill the whole axes: the legend must not cover a single point."""
    x = np.linspace(0, 1, 50)
    ax = plotting.plot(x, [x, 1 - x, 0.5 + 0 * x, x ** 2], "x", "y", legend=["rise", "fall", "flat", "square"])
    fig = ax.figure
    fig.canvas.draw()
    legend_box = ax.get_legend().get_window_extent()
    points = _points_in_display(ax)
    inside = (points[:, 0] >= legend_box.x0) & (points[:, 0] <= legend_box.x1) & \
             (points[:, 1] >= legend_box.y0) & (points[:, 1] <= legend_box.y1)
    assert not inside.any(), f"{inside.sum()} data points under the legend"
    assert ax.get_xlabel() == "x" and ax.get_ylabel() == "y"
    # the seed comparison's legend too
    ax = plotting.plot_seed_comparison(["a", "b"], [[0.1, 0.5, 0.9], [0.95, 0.05, 0.5]], "config", "accuracy",
                                       reference=0.5)
    ax.figure.canvas.draw()
    box = ax.get_legend().get_window_extent()
    points = _points_in_display(ax)
    assert not ((points[:, 0] >= box.x0) & (points[:, 0] <= box.x1) &
                (points[:, 1] >= box.y0) & (points[:, 1] <= box.y1)).any()
    assert ax.get_xlabel() and ax.get_ylabel()


def test_palette_is_readable_in_grey_with_its_line_styles():
    """Okabe-Ito is not uniform in luminance, which is why the line style carries the second encoding: check both
    that the colours are not all alike in grey and that no two lines of the cycle share a dash pattern."""
    lum = sorted(_luminance(c) for c in plotting.OKABE_ITO)
    assert lum[-1] - lum[0] > 0.5
    assert len({str(s) for s in plotting.LINE_STYLES}) == len(plotting.OKABE_ITO)
    assert len(set(plotting.CLASS_MARKERS)) == len(plotting.CLASS_MARKERS) == 10
    assert len(set(plotting.CLASS_HATCHES)) == len(plotting.CLASS_HATCHES) == len(plotting.CLASS_COLORS)
