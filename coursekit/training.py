"""A small, honest training loop for classifiers: d2l models and plain ``nn.Module``s alike.

    data = coursekit.FashionMNIST(batch_size=256, val_size=10000)   # a validation split of the training images
    history = coursekit.train(model, data, num_epochs=10, lr=0.1)
    history.val_acc[-1]                                # model selection on the validation split
    coursekit.evaluate_accuracy(model, data.test_dataloader())   # the test set, once, at the end

Per epoch it records the training loss, the training accuracy and the accuracy on the held-out loader
(``data.val_dataloader()``: the validation split, or the test set for d2l's convention without one), each
averaged over *examples* (a last, smaller minibatch counts for what it holds). In JupyterLab it draws one
live figure (loss and accuracy on two axes) updated in place; elsewhere it prints one plain line per epoch.
"""
from __future__ import annotations

import random
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from coursekit.device import get_device


@dataclass
class History:
    """What happened in each epoch (lists indexed by epoch).

    ``val_acc``: accuracy on the held-out loader, which is ``held_out``: ``"validation"`` (a split of the training
    images, ``FashionMNIST(val_size=...)``) or ``"test"`` (d2l's convention: the test set is the held-out set).
    ``test_acc`` is the same list under its honest name when ``held_out == "test"``, and refuses otherwise: with a
    validation split the test set is evaluated once, at the end, not every epoch.
    """
    train_loss: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)
    val_acc: list = field(default_factory=list)
    held_out: str = "test"

    def __len__(self) -> int:
        return len(self.train_loss)

    @property
    def test_acc(self) -> list:
        if self.held_out != "test":
            raise AttributeError("this run evaluated a validation split, not the test set: read history.val_acc, "
                                 "and evaluate the test set once at the end with "
                                 "evaluate_accuracy(model, data.test_dataloader())")
        return self.val_acc

    def as_dict(self) -> dict:
        return asdict(self)


def seed_everything(seed: int) -> None:
    """Seed Python's, torch's (CPU and GPU) random generators, and NumPy's if it is there."""
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    try:
        import numpy
        numpy.random.seed(seed)
    except ImportError:  # pragma: no cover - numpy is a d2l dependency
        pass


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where figures can be displayed and updated)."""
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _loaders(data):
    """Accept a d2l-style DataModule or a pair ``(train_iter, held_out_iter)``; also say what is held out."""
    if hasattr(data, "train_dataloader"):
        return data.train_dataloader(), data.val_dataloader(), getattr(data, "held_out", "test")
    train_iter, held_out_iter = data
    return train_iter, held_out_iter, "test"


def _model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return fallback


def evaluate_accuracy(model: nn.Module, data_iter, device=None) -> float:
    """Fraction of examples in ``data_iter`` whose arg-max prediction equals the label."""
    device = device or _model_device(model, get_device())
    was_training = model.training
    model.eval()
    correct, count = 0, 0
    with torch.no_grad():
        for X, y in data_iter:
            X, y = X.to(device), y.to(device)
            correct += (model(X).argmax(dim=1) == y).sum().item()
            count += y.numel()
    model.train(was_training)
    return correct / max(count, 1)


class LivePlot:
    """One figure in the notebook, redrawn in place at most every ``min_interval`` seconds."""

    def __init__(self, num_epochs: int, min_interval: float = 0.5, figsize=(7.5, 2.8)):
        import matplotlib.pyplot as plt
        from IPython.display import display

        self.num_epochs, self.min_interval = num_epochs, min_interval
        # Loss and accuracy have different units and ranges: each gets its own axis and y-label.
        self.figure, self.axes = plt.subplots(1, 2, figsize=figsize, layout="constrained")
        plt.close(self.figure)  # shown through the display handle only, not again at the end of the cell
        self.handle = display(self.figure, display_id=True)
        self.last_draw = 0.0

    def update(self, history: History, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last_draw < self.min_interval:
            return
        self.last_draw = now
        loss_ax, acc_ax = self.axes
        epochs = range(1, len(history) + 1)
        loss_ax.clear()
        loss_ax.plot(epochs, history.train_loss, "-", label="train")
        loss_ax.set_ylabel("cross-entropy loss")
        acc_ax.clear()
        acc_ax.plot(epochs, history.train_acc, "--", label="train")
        acc_ax.plot(epochs, history.val_acc, "-.", label=history.held_out)
        acc_ax.set_ylabel("accuracy")
        for ax in self.axes:
            ax.set_xlabel("epoch")
            ax.set_xlim(1, max(self.num_epochs, 2))
            ax.grid(True, alpha=0.3)
            ax.legend(loc="best")
        self.handle.update(self.figure)


def train(model: nn.Module, data, num_epochs: int = 10, lr: float = 0.1, optimizer=None, loss_fn=None,
          device=None, seed: int | None = 0, live: bool | None = None, progress: bool = True) -> History:
    """Train a classifier and return its :class:`History`.

    ``model``: any module mapping a batch of inputs to logits (``nn.Sequential``, a ``d2l.Module``, ...).
    ``data``: a ``d2l.DataModule`` (e.g. ``coursekit.FashionMNIST``) or a pair ``(train_iter, test_iter)``;
    each epoch ends with the accuracy on its held-out loader (``history.val_acc``; see :class:`History`).
    ``optimizer``: defaults to minibatch SGD with learning rate ``lr``.
    ``loss_fn``: defaults to cross-entropy; it must return the *mean* loss of a batch.
    ``device``: defaults to the GPU when there is one; the model is moved there.
    ``seed``: seeds the shuffling (seed the model's initialisation yourself, before you build it).
    ``live``: draw a live curve; by default only inside a notebook. ``progress``: print a line per
    epoch outside a notebook.
    """
    if seed is not None:
        seed_everything(seed)
    device = torch.device(device) if device is not None else get_device()
    model.to(device)
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    train_iter, held_out_iter, held_out = _loaders(data)
    notebook = in_notebook()
    plot = LivePlot(num_epochs) if (live if live is not None else notebook) else None
    history = History(held_out=held_out)
    short = "val" if held_out == "validation" else "test"
    for epoch in range(num_epochs):
        model.train()
        loss_sum, correct, count = 0.0, 0, 0
        for X, y in train_iter:
            X, y = X.to(device), y.to(device)
            logits = model(X)
            loss = loss_fn(logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * y.numel()
            correct += (logits.argmax(dim=1) == y).sum().item()
            count += y.numel()
        history.train_loss.append(loss_sum / count)
        history.train_acc.append(correct / count)
        history.val_acc.append(evaluate_accuracy(model, held_out_iter, device))
        if plot is not None:
            plot.update(history, final=epoch == num_epochs - 1)
        elif progress and not notebook:
            print(f"epoch {epoch + 1}/{num_epochs}: train loss {history.train_loss[-1]:.4f}, "
                  f"train acc {history.train_acc[-1]:.4f}, {short} acc {history.val_acc[-1]:.4f}", flush=True)
    return history


def seed_spread(values) -> float:
    """The seed-to-seed spread of one configuration's results: largest minus smallest (0 for one seed)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("seed_spread needs the results of at least one seed")
    return max(values) - min(values)


def differs(a, b) -> bool:
    """Whether two configurations' results (one number per seed each) differ by more than seed noise.

    The rule the lectures use: the means must be further apart than the larger of the two seed-to-seed spreads
    (:func:`seed_spread`). Anything closer is reported as *no measurable difference*, whichever mean is larger.
    With a single seed per side there is no spread to compare with, so nothing can be concluded: it raises.
    """
    a, b = [float(v) for v in a], [float(v) for v in b]
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"differs needs at least 2 seeds per configuration to know the noise, got {len(a)} and "
                         f"{len(b)}")
    gap = abs(sum(a) / len(a) - sum(b) / len(b))
    return gap > max(seed_spread(a), seed_spread(b))
