"""The explorers' pure drawing/computing functions (headless) and their ipywidgets wrappers."""
import matplotlib

matplotlib.use("Agg")

import ipywidgets
import pytest
import torch
from matplotlib.figure import Figure

from coursekit import widgets
from coursekit.activations import activation_names, get_activation
from coursekit.widgets import (activation_explorer, collapse_explorer, collapse_verdict, linearity_collapse,
                               plot_activation, plot_linearity_collapse)

NONLINEAR = [name for name in activation_names() if name != "identity"]


@pytest.mark.parametrize("name", ["relu", "sigmoid", "gelu", "swish"])
def test_plot_activation_draws_function_derivative_and_autograd(name):
    fig = plot_activation(name, x_min=-4, x_max=4, num=81)
    assert isinstance(fig, Figure)
    ax_f, ax_d = fig.axes
    act = get_activation(name)
    x, y = ax_f.lines[0].get_data()
    torch.testing.assert_close(torch.as_tensor(y), act(torch.as_tensor(x)))
    x, dy = ax_d.lines[0].get_data()
    torch.testing.assert_close(torch.as_tensor(dy), act.grad(torch.as_tensor(x)))
    xd, dots = ax_d.lines[1].get_data()   # autograd dots sit on the closed-form line
    torch.testing.assert_close(torch.as_tensor(dots), act.grad(torch.as_tensor(xd)))
    assert act.name in ax_f.get_title()
    assert ax_f.get_ylabel() == f"{act.name}(x)" and ax_d.get_ylabel() == f"{act.name}'(x)"
    assert widgets._figure_png(fig)[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_formula_is_valid_mathtext():
    # plot_activation puts the formula in the title; a typo there would only fail when drawn.
    from matplotlib.mathtext import MathTextParser

    parser = MathTextParser("path")
    for name in activation_names():
        formula = get_activation(name).formula
        assert formula.count("$") % 2 == 0 and formula, name
        parser.parse(formula)  # raises ValueError on bad mathtext


def test_plot_activation_rejects_bad_input():
    with pytest.raises(ValueError, match="valid names"):
        plot_activation("nope")
    with pytest.raises(ValueError, match="x_min must be smaller"):
        plot_activation("relu", x_min=1, x_max=1)
    with pytest.raises(ValueError, match="num must be between"):
        plot_activation("relu", num=1)


@pytest.mark.parametrize("depth,width", [(1, 1), (3, 8), (6, 32), (12, 64)])
def test_identity_stack_collapses_exactly(depth, width):
    r = linearity_collapse(depth=depth, width=width, activation="identity", seed=1)
    assert r.max_abs_diff < 1e-12 and r.affine_fit_residual < 1e-12
    assert r.W.shape == (1, 1) and r.b.shape == (1,)
    assert r.x.dtype == torch.float64 and r.deep.shape == r.x.shape


def test_collapsed_map_is_product_of_weights_for_one_hidden_layer():
    # Rebuild the seeded weights by hand: 1 -> 4 -> 1, W = W1 W2, b = b1 W2 + b2.
    gen = torch.Generator().manual_seed(5)
    W1 = torch.randn(1, 4, generator=gen, dtype=torch.float64)
    b1 = 0.5 * torch.randn(4, generator=gen, dtype=torch.float64)
    W2 = torch.randn(4, 1, generator=gen, dtype=torch.float64) / 2
    b2 = 0.5 * torch.randn(1, generator=gen, dtype=torch.float64)
    r = linearity_collapse(depth=1, width=4, activation="relu", seed=5, num=11)
    torch.testing.assert_close(r.W, W1 @ W2)
    torch.testing.assert_close(r.b, b1 @ W2 + b2)
    torch.testing.assert_close(r.deep, (torch.relu(r.x[:, None] @ W1 + b1) @ W2 + b2)[:, 0])


@pytest.mark.parametrize("name", NONLINEAR)
def test_any_nonlinearity_breaks_the_collapse(name):
    r = linearity_collapse(depth=3, width=8, activation=name, seed=0)
    assert r.max_abs_diff > 0.1
    assert r.affine_fit_residual > 1e-3
    assert "no affine map reproduces" in collapse_verdict(r)


def test_verdicts():
    assert "exactly one affine map" in collapse_verdict(linearity_collapse(activation="identity"))
    # A very narrow deep ReLU stack can die completely: it is then constant, hence affine.
    r = linearity_collapse(depth=7, width=2, activation="relu", seed=0)
    assert r.affine_fit_residual < 1e-9
    assert "Try wider layers" in collapse_verdict(r)


def test_linearity_collapse_rejects_bad_input():
    with pytest.raises(ValueError, match="depth must be between 1 and 64"):
        linearity_collapse(depth=0)
    with pytest.raises(TypeError, match="width must be an integer"):
        linearity_collapse(width=2.5)
    with pytest.raises(ValueError, match="valid names"):
        linearity_collapse(activation="relu6")
    with pytest.raises(ValueError, match="x_range"):
        linearity_collapse(x_range=(1, -1))
    with pytest.raises(TypeError, match="not both"):
        plot_linearity_collapse(linearity_collapse(), depth=2)


def test_plot_linearity_collapse_shows_both_curves():
    r = linearity_collapse(depth=2, width=5, activation="tanh")
    fig = plot_linearity_collapse(r)
    (ax,) = fig.axes
    deep, collapsed = ax.lines[0].get_ydata(), ax.lines[1].get_ydata()
    torch.testing.assert_close(torch.as_tensor(deep), r.deep)
    torch.testing.assert_close(torch.as_tensor(collapsed), r.collapsed)
    # The evidence of non-affinity is the distance to the best affine fit (least squares), drawn and in the title.
    best = torch.as_tensor(ax.lines[2].get_ydata())
    torch.testing.assert_close(best, r.best_line)
    design = torch.stack([r.x, torch.ones_like(r.x)], dim=1)
    coef = torch.linalg.lstsq(design, r.deep[:, None]).solution
    torch.testing.assert_close(best, (design @ coef)[:, 0])
    assert r.affine_fit_residual == pytest.approx((r.deep - best).abs().max().item()) and r.affine_fit_residual > 0.01
    assert f"best affine fit = {r.affine_fit_residual:.2g}" in ax.get_title() and ax.get_ylabel()
    fig2 = plot_linearity_collapse(depth=2, width=5, activation="tanh")
    torch.testing.assert_close(torch.as_tensor(fig2.axes[0].lines[0].get_ydata()), r.deep)


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_activation_explorer_redraws_on_change(monkeypatch):
    calls = []
    real = widgets.plot_activation
    monkeypatch.setattr(widgets, "plot_activation", lambda name: calls.append(name) or real(name, num=21))
    box = activation_explorer()
    assert isinstance(box, ipywidgets.VBox)
    controls, image, text, errors = box.children
    (dropdown,) = controls.children
    assert isinstance(image, ipywidgets.Image) and isinstance(errors, ipywidgets.Output)
    assert list(dropdown.options) == activation_names() and dropdown.value == "relu"
    assert image.value[:8] == PNG_MAGIC and get_activation("relu").description in text.value
    # Rendered at 144 dpi, shown at half its pixel width (the size of a 72-dpi figure).
    assert abs(int(image.width) * 2 - widgets._png_width(image.value)) <= 1
    assert 400 < int(image.width) < 700
    first_png = image.value
    dropdown.value = "tanh"
    assert calls == ["relu", "tanh"]
    assert image.value[:8] == PNG_MAGIC and image.value != first_png
    assert get_activation("tanh").description in text.value
    assert errors.outputs == ()  # nothing displayed from the callback
    with pytest.raises(ValueError, match="not among"):
        activation_explorer(names=["relu"], value="tanh")


def test_collapse_explorer_redraws_on_change(monkeypatch):
    seen = []
    real = widgets.linearity_collapse
    monkeypatch.setattr(widgets, "linearity_collapse",
                        lambda **kw: seen.append((kw["depth"], kw["width"], kw["activation"])) or real(**kw, num=21))
    box = collapse_explorer()
    controls, image, text, errors = box.children
    depth, width, act = controls.children
    assert "identity" in act.options and set(NONLINEAR) <= set(act.options)
    assert "exactly one affine map" in text.value and image.value[:8] == PNG_MAGIC
    act.value = "relu"
    assert "no affine map reproduces" in text.value
    depth.value = 5
    assert seen == [(3, 8, "identity"), (3, 8, "relu"), (5, 8, "relu")]


def test_make_explorer_wires_any_controls():
    slider = ipywidgets.IntSlider(value=2, min=1, max=5)
    seen = []

    def render(n):
        seen.append(n)
        fig = Figure(figsize=(2, 1))
        fig.subplots().plot(range(n))
        return fig, f"<b>n = {n}</b>"

    box = widgets.make_explorer({"n": slider}, render)
    controls, image, text, errors = box.children
    assert controls.children == (slider,) and text.value == "<b>n = 2</b>"
    first = image.value
    slider.value = 4
    assert seen == [2, 4] and text.value == "<b>n = 4</b>" and image.value != first
    assert errors.outputs == ()
