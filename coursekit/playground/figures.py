"""A playground run drawn with matplotlib: the static figure beside the widget (reads on GitHub)."""
from __future__ import annotations

from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure

from coursekit.playground.core import PLANE_RADIUS, PlaygroundRun

__all__ = ["PLAYGROUND_CMAP", "plot_run", "plot_runs"]

# The widget's colours: orange for negative / class 0, blue for positive / class 1.
PLAYGROUND_CMAP = LinearSegmentedColormap.from_list("playground", ["#f59322", "#e8eaeb", "#0877bd"])


def _draw_output(ax, run: PlaygroundRun, grid: int = 80, test: bool = True) -> None:
    value, _ = run.grid_values(grid)
    classification = run.data.problem == "classification"
    vmin, vmax = (0, 1) if classification else (-1, 1)
    extent = (-PLANE_RADIUS, PLANE_RADIUS, -PLANE_RADIUS, PLANE_RADIUS)
    ax.imshow(value.numpy(), extent=extent, cmap=PLAYGROUND_CMAP, vmin=vmin, vmax=vmax, interpolation="bilinear")
    d = run.data
    ax.scatter(d.X_train[:, 0], d.X_train[:, 1], c=d.y_train.float(), cmap=PLAYGROUND_CMAP, vmin=vmin, vmax=vmax,
               s=9, edgecolors="white", linewidths=0.5)
    if test and len(d.X_test):
        ax.scatter(d.X_test[:, 0], d.X_test[:, 1], c=d.y_test.float(), cmap=PLAYGROUND_CMAP, vmin=vmin, vmax=vmax,
                   s=9, edgecolors="black", linewidths=0.5)
    ax.set_xticks([])
    ax.set_yticks([])


def _describe(run: PlaygroundRun) -> str:
    s = run.settings
    shape = "-".join(map(str, s.hidden)) if s.hidden else "no hidden layer"
    return f"{s.dataset}, {shape}, {s.activation}, lr {s.learning_rate:g}"


def plot_run(run: PlaygroundRun, title: str | None = None, neurons: bool = True, figsize=None) -> Figure:
    """Output heat map with train (white rim) and test (black rim) points, the loss curves, and each hidden
    neuron's output over the plane (one small map per neuron, a row per layer) when ``neurons``."""
    layers = [h for h in run.grid_values(24)[1]] if neurons else []
    rows = max(1, len(layers))
    width = max([h.shape[2] for h in layers], default=0)
    fig = Figure(figsize=figsize or (4.2 + 0.55 * width + 3.2, 3.4), layout="constrained")
    outer = fig.add_gridspec(1, 3 if layers else 2, width_ratios=[1, 1] + ([0.16 * width] if layers else []))
    ax_out = fig.add_subplot(outer[0])
    _draw_output(ax_out, run)
    ax_out.set_title(title or _describe(run), fontsize=9)
    ax_loss = fig.add_subplot(outer[1])
    h = run.history
    ax_loss.plot(h.epoch, h.train_loss, color="0.55", label="train")
    ax_loss.plot(h.epoch, h.test_loss, color="black", label="test")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_title(f"loss (test {h.test_loss[-1]:.3f})", fontsize=9)
    ax_loss.legend(fontsize=8)
    ax_loss.grid(True, alpha=0.4)
    if layers:
        grid = outer[2].subgridspec(rows, width)
        for l, maps in enumerate(layers):
            for j in range(maps.shape[2]):
                ax = fig.add_subplot(grid[l, j])
                m = maps[:, :, j]
                scale = float(m.abs().max().clamp_min(1e-6))
                ax.imshow(m.numpy(), cmap=PLAYGROUND_CMAP, vmin=-scale, vmax=scale, interpolation="bilinear")
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(f"layer {l + 1}", fontsize=7)
    return fig


def plot_runs(runs: list, titles: list | None = None, per_row: int = 4) -> Figure:
    """Several runs' output heat maps side by side (one panel each), e.g. depth 0..3 with the same activation."""
    cols = min(per_row, len(runs))
    rows = -(-len(runs) // cols)
    fig = Figure(figsize=(2.3 * cols, 2.4 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for i, ax in enumerate(axes):
        if i >= len(runs):
            ax.axis("off")
            continue
        _draw_output(ax, runs[i])
        ax.set_title(titles[i] if titles else _describe(runs[i]), fontsize=8)
    return fig
