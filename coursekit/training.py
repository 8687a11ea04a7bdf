"""A small, honest training loop for classifiers: d2l models and plain ``nn.Module``s alike.

    history = coursekit.train(model, coursekit.FashionMNIST(batch_size=256), num_epochs=10, lr=0.1)
    history.test_acc[-1]

Per epoch it records the training loss, the training accuracy and the test accuracy, each
averaged over *examples* (a last, smaller minibatch counts for what it holds). In JupyterLab
it draws one live figure that is updated in place; elsewhere it prints one plain line per epoch.
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
    """What happened in each epoch (lists indexed by epoch)."""
    train_loss: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)
    test_acc: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.train_loss)

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
    """Accept a d2l-style DataModule or a pair ``(train_iter, test_iter)``."""
    if hasattr(data, "train_dataloader"):
        return data.train_dataloader(), data.val_dataloader()
    train_iter, test_iter = data
    return train_iter, test_iter


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

    def __init__(self, num_epochs: int, min_interval: float = 0.5, figsize=(5, 3)):
        import matplotlib.pyplot as plt
        from IPython.display import display

        self.num_epochs, self.min_interval = num_epochs, min_interval
        self.figure, self.axes = plt.subplots(figsize=figsize)
        plt.close(self.figure)  # shown through the display handle only, not again at the end of the cell
        self.handle = display(self.figure, display_id=True)
        self.last_draw = 0.0

    def update(self, history: History, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last_draw < self.min_interval:
            return
        self.last_draw = now
        ax = self.axes
        ax.clear()
        epochs = range(1, len(history) + 1)
        ax.plot(epochs, history.train_loss, "-", label="train loss")
        ax.plot(epochs, history.train_acc, "--", label="train acc")
        ax.plot(epochs, history.test_acc, "-.", label="test acc")
        ax.set_xlabel("epoch")
        ax.set_xlim(1, max(self.num_epochs, 2))
        ax.grid(True, alpha=0.3)
        ax.legend(loc="center right")
        self.handle.update(self.figure)


def train(model: nn.Module, data, num_epochs: int = 10, lr: float = 0.1, optimizer=None, loss_fn=None,
          device=None, seed: int | None = 0, live: bool | None = None, progress: bool = True) -> History:
    """Train a classifier and return its :class:`History`.

    ``model``: any module mapping a batch of inputs to logits (``nn.Sequential``, a ``d2l.Module``, ...).
    ``data``: a ``d2l.DataModule`` (e.g. ``coursekit.FashionMNIST``) or a pair ``(train_iter, test_iter)``.
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
    train_iter, test_iter = _loaders(data)
    notebook = in_notebook()
    plot = LivePlot(num_epochs) if (live if live is not None else notebook) else None
    history = History()
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
        history.test_acc.append(evaluate_accuracy(model, test_iter, device))
        if plot is not None:
            plot.update(history, final=epoch == num_epochs - 1)
        elif progress and not notebook:
            print(f"epoch {epoch + 1}/{num_epochs}: train loss {history.train_loss[-1]:.4f}, "
                  f"train acc {history.train_acc[-1]:.4f}, test acc {history.test_acc[-1]:.4f}", flush=True)
    return history
