"""coursekit: the reusable parts of the MLP course (data, activations, plotting, widgets, training, grading).

Students mostly need::

    import coursekit
    data = coursekit.FashionMNIST(batch_size=256)     # a d2l DataModule, offline and fast; validates on a
                                                      # split of the training images, not the test set
    history = coursekit.train(model, data, num_epochs=10, lr=0.1)
"""
from coursekit.device import get_device
from coursekit.data import TEXT_LABELS, DatasetError, FashionMNIST, load_fashion_mnist
from coursekit.training import History, evaluate_accuracy, seed_everything, train
from coursekit.layers import Standardize
from coursekit.activations import ACTIVATIONS, Activation, get_activation
from coursekit import toydata, widgets
from coursekit import plotting  # importing it makes d2l figures PNG (see coursekit.plotting)
from coursekit.plotting import draw_mlp, plot_confusion_matrix, plot_decision_boundary, show_images, use_png

__all__ = ["get_device", "FashionMNIST", "load_fashion_mnist", "DatasetError", "TEXT_LABELS",
           "train", "evaluate_accuracy", "History", "seed_everything", "Standardize",
           "ACTIVATIONS", "Activation", "get_activation", "toydata", "widgets",
           "plotting", "use_png", "show_images", "draw_mlp", "plot_decision_boundary", "plot_confusion_matrix",
           "Playground"]
__version__ = "0.1.0"


def __getattr__(name):
    # Loaded on first use: the playground imports anywidget and ipywidgets, which the grader never needs.
    if name == "Playground":
        from coursekit.playground import Playground
        return Playground
    raise AttributeError(f"module 'coursekit' has no attribute {name!r}")
