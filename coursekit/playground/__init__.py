"""The playground: TensorFlow Playground's experience in JupyterLab, with PyTorch doing the training.

``coursekit.Playground()`` is the widget (``widget.py``); ``core.py`` holds the model builder, features,
data and the training loop without any widget (tests and static figures use it); ``figures.py`` draws a
run's state with matplotlib for figures that read on GitHub.
"""
from coursekit.playground.core import (ACTIVATIONS, FEATURES, PlaygroundData, PlaygroundHistory, PlaygroundRun,
                                       Settings, build_mlp, hidden_outputs, make_data, make_features,
                                       regularization_penalty)
from coursekit.playground.figures import plot_run
from coursekit.playground.widget import Playground, PlaygroundView

__all__ = ["Playground", "PlaygroundView", "PlaygroundRun", "Settings", "PlaygroundData", "PlaygroundHistory",
           "FEATURES", "ACTIVATIONS", "build_mlp", "make_features", "make_data", "regularization_penalty",
           "hidden_outputs", "plot_run"]
