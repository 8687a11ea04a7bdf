"""The playground's model, data and training, without any widget: what the tests and the static figures use.

A ``PlaygroundRun`` holds one configuration (``Settings``), its data (``PlaygroundData``), a real
``torch.nn.Module`` and the SGD loop over it, one epoch at a time. Everything random comes from
generators seeded by ``Settings.seed``, so the same settings give the same run, step for step.
Training runs on the CPU on purpose: these networks have at most a few hundred weights, and a GPU's
per-call overhead and copies would only slow each step down.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

import torch
from torch import nn

from coursekit import toydata

__all__ = ["FEATURES", "ACTIVATIONS", "CLASSIFICATION_SETS", "REGRESSION_SETS", "PLANE_RADIUS",
           "Settings", "PlaygroundData", "PlaygroundHistory", "PlaygroundRun",
           "make_data", "make_features", "build_mlp", "regularization_penalty", "hidden_outputs"]

#: Half-width of the input plane shown in the pictures: points and heat maps live in [-6, 6]^2, as in the
#: TensorFlow Playground (so sin x1 goes through about two periods across it).
PLANE_RADIUS = 6.0

#: Input features by name (the Playground's seven), each a function of the two coordinates.
FEATURES = {
    "x1": lambda x1, x2: x1,
    "x2": lambda x1, x2: x2,
    "x1^2": lambda x1, x2: x1 * x1,
    "x2^2": lambda x1, x2: x2 * x2,
    "x1*x2": lambda x1, x2: x1 * x2,
    "sin(x1)": lambda x1, x2: torch.sin(x1),
    "sin(x2)": lambda x1, x2: torch.sin(x2),
}

#: Activation name -> module class; "linear" is the identity (the linearity collapse).
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "linear": nn.Identity}

# Data set name -> (toydata generator, keyword arguments, scale to the plane, noise keyword, its range for
# the Playground's noise 0..50 %). The scales put every set inside [-6, 6]^2 like the Playground's.
CLASSIFICATION_SETS = {
    "circle": (toydata.circles, {"factor": 0.45}, 5.0, "noise", (0.02, 0.2)),
    "xor": (toydata.xor, {}, 3.0, "noise", (0.15, 0.55)),
    "gaussians": (toydata.gaussians, {"classes": 2}, 2.0, "spread", (0.35, 1.0)),
    "spiral": (toydata.spiral, {"classes": 2, "winding": 2 * math.pi}, 5.5, "noise", (0.0, 0.6)),
}
REGRESSION_SETS = {
    "plane": (toydata.plane, {}, 5.5, "noise", (0.0, 0.3)),
    "bumps": (toydata.bumps, {}, 5.5, "noise", (0.0, 0.3)),
}
PROBLEMS = ("classification", "regression")
REGULARIZATIONS = ("none", "L1", "L2")
MAX_LAYERS, MAX_NEURONS = 6, 8


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Settings:
    """Everything that defines a run. ``Settings(**changes)`` checks every field and says what is wrong."""
    dataset: str = "circle"
    problem: str = "classification"
    noise: int = 0                 # percent, 0..50 (the Playground's scale)
    train_percent: int = 50        # share of the points used for training, 10..90
    batch_size: int = 10
    num_points: int = 400
    features: tuple = ("x1", "x2")
    hidden: tuple = (4, 2)         # neurons per hidden layer: 0..6 layers of 1..8
    activation: str = "tanh"
    learning_rate: float = 0.03
    regularization: str = "none"   # "none", "L1" or "L2"
    regularization_rate: float = 0.0
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "hidden", tuple(self.hidden))
        if self.problem not in PROBLEMS:
            raise ValueError(f"problem must be one of {PROBLEMS}, got {self.problem!r}")
        sets = CLASSIFICATION_SETS if self.problem == "classification" else REGRESSION_SETS
        if self.dataset not in sets:
            raise ValueError(f"dataset {self.dataset!r} is not a {self.problem} data set; "
                             f"valid: {', '.join(sets)}")
        for name, low, high in (("noise", 0, 50), ("train_percent", 10, 90), ("batch_size", 1, 1000),
                                ("num_points", 20, 5000), ("seed", 0, 2 ** 31 - 1)):
            value = getattr(self, name)
            if not _is_int(value) or not low <= value <= high:
                raise ValueError(f"{name} must be an int in [{low}, {high}], got {value!r}")
        if not self.features:
            raise ValueError("at least one input feature must be on")
        unknown = [f for f in self.features if f not in FEATURES]
        if unknown or len(set(self.features)) != len(self.features):
            raise ValueError(f"features must be distinct names from {list(FEATURES)}, got {list(self.features)}")
        if len(self.hidden) > MAX_LAYERS or not all(_is_int(h) and 1 <= h <= MAX_NEURONS for h in self.hidden):
            raise ValueError(f"hidden must list 0 to {MAX_LAYERS} layer widths, each an int in "
                             f"[1, {MAX_NEURONS}], got {list(self.hidden)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {self.activation!r}")
        if not _is_number(self.learning_rate) or not 0 < self.learning_rate <= 100:
            raise ValueError(f"learning_rate must be a number in (0, 100], got {self.learning_rate!r}")
        if self.regularization not in REGULARIZATIONS:
            raise ValueError(f"regularization must be one of {REGULARIZATIONS}, got {self.regularization!r}")
        if not _is_number(self.regularization_rate) or not 0 <= self.regularization_rate <= 100:
            raise ValueError(f"regularization_rate must be a number in [0, 100], got {self.regularization_rate!r}")

    def with_changes(self, **changes) -> "Settings":
        names = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(f"unknown setting(s) {unknown}; valid: {sorted(names)}")
        return replace(self, **changes)


def make_features(X: torch.Tensor, names) -> torch.Tensor:
    """The chosen input features of points ``X`` ([n, 2]) as columns, in the order of ``names``."""
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"X must have shape [n, 2], got {list(X.shape)}")
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise ValueError(f"unknown feature(s) {unknown}; valid: {list(FEATURES)}")
    x1, x2 = X[:, 0], X[:, 1]
    return torch.stack([FEATURES[name](x1, x2) for name in names], dim=1)


@dataclass
class PlaygroundData:
    """Train and test points (in plane coordinates) and targets: class ids (int64) or values (float32)."""
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    problem: str

    @property
    def num_outputs(self) -> int:
        return 2 if self.problem == "classification" else 1


def make_data(settings: Settings) -> PlaygroundData:
    """The data set of ``settings``: generated (seeded), scaled to the plane, split into train and test."""
    sets = CLASSIFICATION_SETS if settings.problem == "classification" else REGRESSION_SETS
    generate, kwargs, scale, noise_name, (low, high) = sets[settings.dataset]
    noise = low + (high - low) * settings.noise / 50
    X, y = generate(n=settings.num_points, seed=settings.seed, **{noise_name: noise}, **kwargs)
    X = (X * scale).clamp(-PLANE_RADIUS, PLANE_RADIUS)
    n_train = round(len(X) * settings.train_percent / 100)
    # toydata returns the rows shuffled, so the first n_train are a random split of every class.
    return PlaygroundData(X[:n_train], y[:n_train], X[n_train:], y[n_train:], settings.problem)


def build_mlp(num_inputs: int, hidden, activation: str, num_outputs: int) -> nn.Sequential:
    """``nn.Sequential`` of Linear layers with ``activation`` after each hidden one (none after the output).

    ``hidden=()`` is a linear model. Weights get PyTorch's default initialisation from the global generator
    (seed it, or build inside ``torch.random.fork_rng``, for a reproducible model).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {activation!r}")
    layers, width = [], num_inputs
    for size in hidden:
        layers += [nn.Linear(width, size), ACTIVATIONS[activation]()]
        width = size
    layers.append(nn.Linear(width, num_outputs))
    return nn.Sequential(*layers)


def regularization_penalty(model: nn.Module, kind: str, rate: float) -> torch.Tensor:
    """``rate * sum |w|`` (L1) or ``rate * sum w^2 / 2`` (L2) over the weight matrices (biases are free)."""
    weights = [p for p in model.parameters() if p.ndim >= 2]  # weight matrices; biases are vectors
    zero = torch.zeros(())
    if kind == "none" or rate == 0 or not weights:
        return zero
    if kind == "L1":
        return rate * sum(w.abs().sum() for w in weights)
    if kind == "L2":
        return rate * sum((w * w).sum() for w in weights) / 2
    raise ValueError(f"regularization must be one of {REGULARIZATIONS}, got {kind!r}")


def hidden_outputs(model: nn.Module, inputs: torch.Tensor) -> list[torch.Tensor]:
    """Each hidden layer's output ([n, width], after its activation) of an ``nn.Sequential`` from build_mlp."""
    outputs, h = [], inputs
    for module in list(model)[:-1]:  # the last Linear is the output layer
        h = module(h)
        if not isinstance(module, nn.Linear):  # an activation closes a hidden layer
            outputs.append(h)
    return outputs


@dataclass
class PlaygroundHistory:
    """Per epoch: the losses (without the penalty), gradient norm of each weight matrix, share of dead units."""
    epoch: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    test_loss: list = field(default_factory=list)
    grad_norm: list = field(default_factory=list)   # per epoch: [norm of the last step's gradient per layer]
    dead_share: list = field(default_factory=list)  # per epoch: [share of hidden units dead on all train points]

    def __len__(self) -> int:
        return len(self.epoch)


class PlaygroundRun:
    """One configuration being trained: ``run.train(epochs)``, ``run.model``, ``run.data``, ``run.history``.

    ``model_fn(num_inputs, num_outputs)`` replaces the built-in MLP by any ``nn.Module`` that maps
    ``[n, num_inputs]`` to ``[n, num_outputs]`` (e.g. ``lambda i, o: MLPScratch(i, o, 8, lr=0.1)``);
    the playground trains its parameters with its own SGD at ``settings.learning_rate``.
    """

    def __init__(self, settings: Settings | None = None, model_fn=None, data: PlaygroundData | None = None):
        self.settings = settings or Settings()
        self.model_fn = model_fn
        self.data = data if data is not None else make_data(self.settings)
        s = self.settings
        self.features_train = make_features(self.data.X_train, s.features)
        self.features_test = make_features(self.data.X_test, s.features)
        with torch.random.fork_rng(devices=[]):  # the model's initial weights depend on the seed only
            torch.manual_seed(s.seed)
            if model_fn is None:
                self.model = build_mlp(len(s.features), s.hidden, s.activation, self.data.num_outputs)
            else:
                self.model = model_fn(len(s.features), self.data.num_outputs)
        if not isinstance(self.model, nn.Module):
            raise TypeError(f"model_fn must return a torch.nn.Module, got {type(self.model).__name__}")
        # The playground's networks are tiny: the CPU beats a GPU's per-call overhead, and the data lives there.
        self.model.to("cpu")
        if not any(True for _ in self.model.parameters()):
            raise ValueError("the model has no parameters to train")
        self._check_output_shape()
        self.builtin = model_fn is None
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=s.learning_rate)
        self.shuffle = torch.Generator().manual_seed(s.seed + 1)
        self.history = PlaygroundHistory()
        self.epoch = 0
        self.diverged = False
        self._last_grad_norms: list[float] = []
        self._record()

    # -- the loop ---------------------------------------------------------------------------------------

    def _check_output_shape(self) -> None:
        try:
            with torch.no_grad():
                out = self.model(self.features_train[:3])
        except Exception as error:  # a student's forward: say what it was given
            raise ValueError(f"the model failed on a float32 batch of shape [3, {len(self.settings.features)}] "
                             f"(on the CPU): {type(error).__name__}: {error}") from error
        expected = [min(3, len(self.features_train)), self.data.num_outputs]
        if not isinstance(out, torch.Tensor) or list(out.shape) != expected:
            shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the model must map [n, {len(self.settings.features)}] inputs to "
                             f"[n, {self.data.num_outputs}] outputs; for 3 points it returned {shape}")

    def data_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.data.problem == "classification":
            return nn.functional.cross_entropy(outputs, targets)
        return nn.functional.mse_loss(outputs.squeeze(1), targets)

    def weight_matrices(self) -> list[torch.Tensor]:
        return [p for p in self.model.parameters() if p.ndim == 2]

    def train_epoch(self) -> None:
        """One pass over the training points in minibatches (reshuffled by the seeded generator)."""
        s, model = self.settings, self.model
        model.train()
        order = torch.randperm(len(self.features_train), generator=self.shuffle)
        for start in range(0, len(order), s.batch_size):
            batch = order[start:start + s.batch_size]
            loss = self.data_loss(model(self.features_train[batch]), self.data.y_train[batch])
            loss = loss + regularization_penalty(model, s.regularization, s.regularization_rate)
            self.optimizer.zero_grad(set_to_none=False)
            loss.backward()
            self.optimizer.step()
        self._last_grad_norms = [float(w.grad.norm()) if w.grad is not None else 0.0
                                 for w in self.weight_matrices()]
        self.epoch += 1
        self._record()

    def train(self, epochs: int = 1) -> "PlaygroundRun":
        if not _is_int(epochs) or epochs < 0:
            raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
        for _ in range(epochs):
            self.train_epoch()
        return self

    # -- what is measured ------------------------------------------------------------------------------

    @torch.no_grad()
    def losses(self) -> tuple[float, float]:
        self.model.eval()
        train = float(self.data_loss(self.model(self.features_train), self.data.y_train))
        test = float(self.data_loss(self.model(self.features_test), self.data.y_test)) \
            if len(self.features_test) else float("nan")
        return train, test

    @torch.no_grad()
    def accuracy(self, split: str = "test") -> float:
        """Share of points classified right (classification only)."""
        if self.data.problem != "classification":
            raise ValueError("accuracy is for classification; use losses() for regression")
        F, y = (self.features_train, self.data.y_train) if split == "train" else (self.features_test, self.data.y_test)
        return float((self.model(F).argmax(1) == y).float().mean())

    @torch.no_grad()
    def dead_shares(self) -> list[float]:
        """Per hidden ReLU layer: share of its units that output 0 on every training point (dead units)."""
        if not self.builtin or self.settings.activation != "relu":
            return []
        return [float((h <= 0).all(0).float().mean()) for h in hidden_outputs(self.model, self.features_train)]

    def _record(self) -> None:
        train, test = self.losses()
        if not (math.isfinite(train) and math.isfinite(test if self.data.X_test.numel() else 0.0)):
            self.diverged = True
        h = self.history
        h.epoch.append(self.epoch)
        h.train_loss.append(train)
        h.test_loss.append(test)
        h.grad_norm.append(list(self._last_grad_norms))
        h.dead_share.append(self.dead_shares())

    # -- pictures (numbers for them) ---------------------------------------------------------------------

    @torch.no_grad()
    def grid_values(self, size: int, radius: float = PLANE_RADIUS) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The output over a ``size`` x ``size`` grid of the plane (row 0 at the top, x2 = +radius), and
        each hidden layer's outputs over it ([size, size, width]); hidden outputs only for the built-in MLP.

        Classification: probability of class 1; regression: the predicted value.
        """
        axis = torch.linspace(-radius, radius, size)
        x2, x1 = torch.meshgrid(-axis, axis, indexing="ij")
        points = torch.stack([x1.reshape(-1), x2.reshape(-1)], dim=1)
        inputs = make_features(points, self.settings.features)
        self.model.eval()
        hidden = []
        if self.builtin:  # one pass through the layers gives every hidden output and the output
            out = inputs
            for module in self.model:
                out = module(out)
                if not isinstance(module, nn.Linear):
                    hidden.append(out.reshape(size, size, -1))
        else:
            out = self.model(inputs)
        value = out.softmax(1)[:, 1] if self.data.problem == "classification" else out[:, 0]
        return value.reshape(size, size), hidden
