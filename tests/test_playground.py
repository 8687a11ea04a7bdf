"""coursekit.Playground: model builder, features, data, regularisation, determinism, the training thread's
play/pause/step semantics and model_fn, without a browser (tests/test_browser_playground.py has that)."""
from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from coursekit import toydata
from coursekit.playground import (FEATURES, Playground, PlaygroundRun, Settings, build_mlp, hidden_outputs,
                                  make_data, make_features, plot_run, regularization_penalty)
from coursekit.playground import widget as widget_module


# ------------------------------------------------------------------------------------------- toydata additions

@pytest.mark.parametrize("generate", [toydata.plane, toydata.bumps])
def test_regression_sets_are_seeded_float_targets(generate):
    X, y = generate(n=50, noise=0.1, seed=3)
    assert X.shape == (50, 2) and y.shape == (50,) and X.dtype == y.dtype == torch.float32
    assert X.abs().max() <= 1
    X2, y2 = generate(n=50, noise=0.1, seed=3)
    assert torch.equal(X, X2) and torch.equal(y, y2)
    assert not torch.equal(y, generate(n=50, noise=0.1, seed=4)[1])
    with pytest.raises(ValueError, match="noise"):
        generate(n=5, noise=-1)


def test_plane_is_linear_without_noise():
    X, y = toydata.plane(n=30, noise=0.0)
    assert torch.allclose(y, (X[:, 0] + X[:, 1]) / 2)


def test_spiral_winding_is_optional_and_checked():
    X, y = toydata.spiral(n=60, classes=2, seed=1)
    X4, y4 = toydata.spiral(n=60, classes=2, seed=1, winding=4.0)
    assert torch.equal(X, X4) and torch.equal(y, y4)  # the default is the old spiral
    X_long, _ = toydata.spiral(n=60, classes=2, seed=1, winding=10.0)
    assert not torch.allclose(X, X_long)
    assert torch.allclose(X.norm(dim=1), X_long.norm(dim=1), atol=1e-6)  # same radii, longer arms
    with pytest.raises(ValueError, match="winding"):
        toydata.spiral(winding=-1.0)


def test_toydata_classification_sets_unchanged():
    """Backwards compatible: DATASETS still lists only the four classification sets."""
    assert list(toydata.DATASETS) == ["xor", "circles", "spiral", "gaussians"]
    assert set(toydata.REGRESSION_DATASETS) == {"plane", "bumps"}


def test_coursekit_exports_playground_lazily():
    """coursekit.Playground is the widget, but `import coursekit` (the grader's too) loads no anywidget."""
    import subprocess
    import sys
    code = ("import sys, coursekit; assert 'anywidget' not in sys.modules; "
            "from coursekit.playground import Playground; assert coursekit.Playground is Playground; "
            "assert 'Playground' in coursekit.__all__; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "ok", result.stderr


# ------------------------------------------------------------------------------------------------ core

def test_features_are_the_playgrounds_seven():
    X = torch.tensor([[2.0, -3.0], [0.5, 1.0]])
    F = make_features(X, list(FEATURES))
    x1, x2 = X[:, 0], X[:, 1]
    expected = torch.stack([x1, x2, x1 ** 2, x2 ** 2, x1 * x2, torch.sin(x1), torch.sin(x2)], 1)
    assert torch.allclose(F, expected)
    assert torch.equal(make_features(X, ["x2^2", "x1"]), torch.stack([x2 ** 2, x1], 1))
    with pytest.raises(ValueError, match="unknown feature"):
        make_features(X, ["x3"])
    with pytest.raises(ValueError, match=r"shape \[n, 2\]"):
        make_features(torch.zeros(3, 3), ["x1"])


@pytest.mark.parametrize("hidden", [(), (1,), (8, 8, 8, 8, 8, 8), (3, 5)])
@pytest.mark.parametrize("activation,module", [("relu", nn.ReLU), ("tanh", nn.Tanh), ("sigmoid", nn.Sigmoid),
                                               ("linear", nn.Identity)])
def test_build_mlp_layers(hidden, activation, module):
    model = build_mlp(3, hidden, activation, 2)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == list(zip((3,) + hidden, hidden + (2,)))
    assert sum(isinstance(m, module) for m in model) == len(hidden)
    assert model(torch.zeros(5, 3)).shape == (5, 2)
    outs = hidden_outputs(model, torch.randn(7, 3))
    assert [o.shape[1] for o in outs] == list(hidden)


def test_linear_activation_collapses_to_one_affine_map():
    torch.manual_seed(0)
    model = build_mlp(2, (4, 3), "linear", 1)
    W = model[0].weight.T @ model[2].weight.T @ model[4].weight.T
    b = (model[0].bias @ model[2].weight.T + model[2].bias) @ model[4].weight.T + model[4].bias
    X = torch.randn(10, 2)
    assert torch.allclose(model(X), X @ W + b, atol=1e-6)


def test_settings_reject_bad_values_with_their_name():
    for changes, match in [({"hidden": (9,)}, "hidden"), ({"hidden": (2,) * 7}, "hidden"),
                           ({"features": ()}, "feature"), ({"features": ("x1", "x1")}, "distinct"),
                           ({"activation": "gelu"}, "activation"), ({"learning_rate": 0}, "learning_rate"),
                           ({"noise": 60}, "noise"), ({"dataset": "plane"}, "not a classification"),
                           ({"regularization": "L3"}, "regularization"), ({"batch_size": 0}, "batch_size"),
                           ({"seed": True}, "seed"), ({"learning_rate": math.nan}, "learning_rate")]:
        with pytest.raises(ValueError, match=match):
            Settings(**changes)
    with pytest.raises(TypeError, match="unknown setting"):
        Settings().with_changes(depth=3)


def test_data_split_and_plane():
    s = Settings(dataset="spiral", train_percent=30, num_points=200)
    d = make_data(s)
    assert len(d.X_train) == 60 and len(d.X_test) == 140
    assert d.X_train.abs().max() <= 6 and set(d.y_train.tolist()) == {0, 1}
    noisy = make_data(s.with_changes(noise=50))
    assert not torch.equal(noisy.X_train, d.X_train)
    reg = make_data(Settings(problem="regression", dataset="bumps"))
    assert reg.y_train.dtype == torch.float32 and reg.num_outputs == 1


def test_regularization_penalty_values():
    model = nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -2.0], [0.0, 3.0]]))
        model[2].weight.copy_(torch.tensor([[-1.0, 1.0]]))
        model[0].bias.fill_(100.0)  # biases are not penalised
    with torch.no_grad():
        assert float(regularization_penalty(model, "L1", 0.1)) == pytest.approx(0.1 * 8)
        assert float(regularization_penalty(model, "L2", 0.1)) == pytest.approx(0.1 * 16 / 2)
    assert float(regularization_penalty(model, "none", 0.1)) == 0
    assert float(regularization_penalty(model, "L2", 0.0)) == 0


def test_l1_regularisation_shrinks_weights():
    plain = PlaygroundRun(Settings(dataset="gaussians", hidden=(4,))).train(30)
    l1 = PlaygroundRun(Settings(dataset="gaussians", hidden=(4,), regularization="L1",
                                regularization_rate=0.03)).train(30)
    size = lambda run: sum(float(w.detach().abs().sum()) for w in run.weight_matrices())
    assert size(l1) < 0.6 * size(plain)


def test_same_settings_same_run_and_seed_matters():
    s = Settings(dataset="xor", hidden=(5, 3), activation="relu", batch_size=7, seed=11)
    a, b = PlaygroundRun(s).train(5), PlaygroundRun(s).train(5)
    assert a.history.train_loss == b.history.train_loss and a.history.test_loss == b.history.test_loss
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))
    c = PlaygroundRun(s.with_changes(seed=12)).train(5)
    assert c.history.train_loss != a.history.train_loss


def test_training_learns_and_history_grows():
    run = PlaygroundRun(Settings(dataset="circle", hidden=(6,), activation="tanh", learning_rate=0.1))
    assert len(run.history) == 1 and run.epoch == 0
    run.train(40)
    h = run.history
    assert len(h) == 41 and h.epoch[-1] == 40
    assert h.test_loss[-1] < 0.5 * h.test_loss[0]
    assert run.accuracy() > 0.9
    assert len(h.grad_norm[-1]) == 2 and all(g > 0 for g in h.grad_norm[-1])
    assert h.dead_share[-1] == []  # dead units are counted for ReLU only


def test_dead_relu_share_counts_units_off_on_every_point():
    run = PlaygroundRun(Settings(hidden=(4,), activation="relu"))
    with torch.no_grad():
        run.model[0].weight.zero_()
        run.model[0].bias.copy_(torch.tensor([-1.0, -1.0, 1.0, -1.0]))
    assert run.dead_shares() == [0.75]


def test_regression_run():
    run = PlaygroundRun(Settings(problem="regression", dataset="plane", hidden=(), learning_rate=0.01)).train(20)
    assert run.history.test_loss[-1] < 0.01
    with pytest.raises(ValueError, match="classification"):
        run.accuracy()


class MLPScratch(nn.Module):
    """The lab's model in d2l's argument order (num_inputs, num_outputs, num_hiddens, lr, sigma)."""

    def __init__(self, num_inputs, num_outputs, num_hiddens, lr, sigma=0.01):
        super().__init__()
        self.num_inputs, self.lr = num_inputs, lr
        self.W1 = nn.Parameter(torch.randn(num_inputs, num_hiddens) * sigma)
        self.b1 = nn.Parameter(torch.zeros(num_hiddens))
        self.W2 = nn.Parameter(torch.randn(num_hiddens, num_outputs) * sigma)
        self.b2 = nn.Parameter(torch.zeros(num_outputs))

    def forward(self, X):
        H = torch.maximum(X.reshape(-1, self.num_inputs) @ self.W1 + self.b1, torch.zeros(()))
        return H @ self.W2 + self.b2


def test_model_fn_trains_a_students_mlp_scratch():
    make = lambda num_inputs, num_outputs: MLPScratch(num_inputs, num_outputs, 16, lr=0.1, sigma=0.5)
    s = Settings(dataset="xor", features=("x1", "x2", "x1*x2"), learning_rate=0.03)
    run = PlaygroundRun(s, model_fn=make)
    assert isinstance(run.model, MLPScratch) and run.model.W1.shape == (3, 16)
    run.train(30)
    assert run.accuracy() > 0.9
    assert len(run.history.grad_norm[-1]) == 2  # W1 and W2
    assert run.grid_values(8)[1] == []  # no neuron maps for a model coursekit did not build
    again = PlaygroundRun(s, model_fn=make).train(30)
    assert again.history.train_loss == run.history.train_loss


@pytest.mark.parametrize("model_fn,match", [
    (lambda i, o: "not a model", "must return a torch.nn.Module"),
    (lambda i, o: nn.Linear(i, 5), r"\[n, 2\] outputs"),
    (lambda i, o: nn.Sequential(), "no parameters"),
    (lambda i, o: nn.Linear(i, o).double(), "failed on a float32 batch of shape \\[3, 2\\].*RuntimeError"),
])
def test_model_fn_errors_are_clear(model_fn, match):
    with pytest.raises((TypeError, ValueError), match=match):
        PlaygroundRun(Settings(), model_fn=model_fn)


class FailsLater(nn.Module):
    """A student's model whose forward breaks after a few calls."""

    def __init__(self, num_inputs, num_outputs):
        super().__init__()
        self.linear, self.calls = nn.Linear(num_inputs, num_outputs), 0

    def forward(self, X):
        self.calls += 1
        if self.calls > 30:
            raise RuntimeError("student bug")
        return self.linear(X)


def test_a_model_that_fails_mid_run_stops_play_with_its_error():
    pg = Playground(model_fn=FailsLater)
    try:
        pg.play()
        deadline = time.monotonic() + 10
        while pg.playing and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pg.playing and "training stopped: RuntimeError: student bug" in pg.message.value
        assert pg._thread.is_alive()  # the thread survives, ready for the next play
        pg.step_button.click()  # the same failure from a button: a message, not an exception
        assert "RuntimeError: student bug" in pg.message.value
    finally:
        pg.close()


def test_divergence_is_reported_not_raised():
    settings = Settings(features=tuple(FEATURES), hidden=(8, 8), activation="linear", learning_rate=3.0)
    run = PlaygroundRun(settings).train(5)
    assert run.diverged and not math.isfinite(run.history.train_loss[-1])
    assert not PlaygroundRun(settings.with_changes(learning_rate=0.003)).train(5).diverged
    pg = Playground(**vars(settings))
    try:
        pg.play()
        deadline = time.monotonic() + 10
        while pg.playing and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pg.playing and "diverged" in pg.message.value  # play stops by itself, with the reason
    finally:
        pg.close()


def test_grid_values_orientation():
    """Row 0 is the top of the plane (x2 = +6), column 0 the left (x1 = -6)."""
    run = PlaygroundRun(Settings(features=("x1",), hidden=()))
    with torch.no_grad():
        run.model[0].weight.copy_(torch.tensor([[0.0], [10.0]]))  # class 1 where x1 > 0
        run.model[0].bias.zero_()
    value, hidden = run.grid_values(9)
    assert value[0, 0] < 0.01 and value[0, -1] > 0.99 and value[-1, -1] > 0.99 and hidden == []
    run2 = PlaygroundRun(Settings(features=("x2",), hidden=()))
    with torch.no_grad():
        run2.model[0].weight.copy_(torch.tensor([[0.0], [10.0]]))
        run2.model[0].bias.zero_()
    assert run2.grid_values(9)[0][0, 4] > 0.99  # top row: x2 > 0


def test_plot_run_draws_neurons():
    run = PlaygroundRun(Settings(hidden=(3, 2))).train(2)
    fig = plot_run(run)
    assert len(fig.axes) == 2 + 3 + 2


# ------------------------------------------------------------------------------------------------ widget

@pytest.fixture()
def playground():
    pg = Playground(dataset="spiral", hidden=(8, 8), activation="tanh")
    yield pg
    pg.close()
    assert not pg._thread or not pg._thread.is_alive()


def test_widget_exposes_model_history_data(playground):
    pg = playground
    assert isinstance(pg.model, nn.Sequential) and pg.history is pg.run.history and pg.data is pg.run.data
    assert pg.frames_sent >= 1 and pg.view.frame["epoch"] == 0
    assert repr(pg) == ("Playground(dataset='spiral', features=['x1', 'x2'], hidden=[8, 8], activation='tanh', "
                        "learning_rate=0.03, seed=0)")


def test_front_end_ships_in_the_package_and_needs_no_network():
    folder = Path(widget_module.__file__).parent
    js, css = (folder / "playground.js").read_text(), (folder / "playground.css").read_text()
    assert "export default" in js and "render" in js
    for text in (js, css):
        assert "http:" not in text and "https:" not in text and "@import" not in text and "import " not in text
    assert str(widget_module.PlaygroundView._esm) == js


def test_frame_is_compact(playground):
    frame = playground.view.frame
    assert len(frame["boundary"]) == widget_module.BOUNDARY_GRID ** 2
    assert len(frame["neuron_maps"]) == 16 * widget_module.NEURON_GRID ** 2
    assert [len(w) for w in frame["weights"]] == [4 * 2 * 8, 4 * 8 * 8, 4 * 8 * 2]
    assert len(frame["feature_maps"]) == len(FEATURES) * widget_module.NEURON_GRID ** 2
    size = sum(len(v) for v in frame.values() if isinstance(v, bytes)) + sum(map(len, frame["weights"]))
    assert size < 12_000


def test_play_runs_in_a_thread_and_pause_stops_at_once(playground):
    pg = playground
    pg.play()
    assert pg.playing
    deadline = time.monotonic() + 10
    while pg.run.epoch < 5 and time.monotonic() < deadline:
        time.sleep(0.05)  # the main thread is free meanwhile: that is the point
    started = time.perf_counter()
    pg.pause()
    paused_in = time.perf_counter() - started
    stopped_at = pg.run.epoch
    assert stopped_at >= 5 and paused_in < 0.5
    time.sleep(0.3)
    assert pg.run.epoch == stopped_at and pg.view.frame["epoch"] == stopped_at and not pg.view.playing
    assert pg.play_button.description == "play"
    pg.step()
    assert pg.run.epoch == stopped_at + 1 and pg.view.frame["epoch"] == stopped_at + 1
    pg.step(3)
    assert pg.run.epoch == stopped_at + 4 and len(pg.history) == stopped_at + 5


def test_one_playground_plays_at_a_time(playground):
    """A cell re-run while its playground plays must not leave the old one training on a core."""
    newer = Playground(dataset="xor")
    try:
        playground.play()
        newer.play()
        assert newer.playing and not playground.playing
        stopped_at = playground.run.epoch
        time.sleep(0.3)
        assert playground.run.epoch == stopped_at
    finally:
        newer.close()


def test_threaded_run_equals_the_same_epochs_run_directly(playground):
    """Determinism holds however many epochs a frame happened to hold."""
    pg = playground
    pg.play()
    time.sleep(0.5)
    pg.pause()
    direct = PlaygroundRun(pg.settings).train(pg.run.epoch)
    assert direct.history.train_loss == pg.history.train_loss


def test_controls_change_the_run(playground):
    pg = playground
    pg.step(2)
    pg.view.hidden = [8, 8, 3]  # what the front end's + buttons do
    assert pg.settings.hidden == (8, 8, 3) and pg.run.epoch == 0
    assert pg.model[4].out_features == 3
    pg.activation.value = "relu"
    assert isinstance(pg.model[1], nn.ReLU)
    pg.view.features = ["x1", "x2", "x1^2"]
    assert pg.model[0].in_features == 3
    pg.view.features = []  # refused with a message; nothing lost
    assert pg.view.features == ["x1", "x2", "x1^2"] and "at least one input feature" in pg.message.value
    old_points = pg.data.X_train
    pg.dataset.value = "xor"
    assert pg.settings.dataset == "xor" and not torch.equal(old_points, pg.data.X_train)
    pg.regenerate_button.click()
    assert pg.settings.seed == 1
    pg.step()
    pg.learning_rate.value = 0.3  # applies to the run in progress, like the Playground
    assert pg.run.epoch == 1 and pg.run.optimizer.param_groups[0]["lr"] == 0.3
    pg.problem.value = "regression"
    assert pg.settings.problem == "regression" and pg.data.num_outputs == 1
    assert pg.dataset.value == "plane"
    pg.reset_button.click()
    assert pg.run.epoch == 0


def test_widget_with_model_fn(playground):
    pg = Playground(model_fn=lambda i, o: MLPScratch(i, o, 8, lr=0.1, sigma=0.5), dataset="xor")
    try:
        assert isinstance(pg.model, MLPScratch) and pg.view.hidden == [] and pg.activation.disabled
        pg.step(2)
        assert pg.run.epoch == 2 and pg.view.frame["neuron_maps"] == b""
        pg.view.hidden = [3]
        assert "model_fn" in pg.message.value and pg.view.hidden == []
    finally:
        pg.close()
