"""coursekit.widgets' misclassified-images browser (used in notebooks/05_training_mlp)."""
import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from coursekit import widgets

NAMES = ["zero", "one", "two"]


def _data():
    torch.manual_seed(0)
    images = torch.rand(30, 1, 28, 28)
    y_true = torch.tensor([0, 1, 2] * 10)
    y_pred = y_true.clone()
    y_pred[[0, 3, 6, 9]] = torch.tensor([1, 2, 1, 0])   # 0, 3, 6: class 0 taken for one, two, one; 9 (class 0) right
    return images, y_true, y_pred


def test_plot_shows_only_misclassified_images_of_the_class():
    images, y_true, y_pred = _data()
    fig = widgets.plot_misclassified(images, y_true, y_pred, NAMES, true_class=0, ncols=2)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 3  # indices 0, 3, 6 (index 9 was predicted correctly)
    assert [ax.get_title() for ax in shown] == ["-> one", "-> two", "-> one"]
    np.testing.assert_allclose(shown[1].images[0].get_array(), images[3, 0].numpy())
    assert "zero" in fig._suptitle.get_text()


def test_summary_counts_and_most_common_confusion():
    _, y_true, y_pred = _data()
    assert widgets.misclassified_summary(y_true, y_pred, NAMES, 0) == (
        "3 of 10 test images of class zero are misclassified; most often as one (2 times).")
    assert widgets.misclassified_summary(y_true, y_pred, NAMES, 1).startswith("All 10 test images of class one")
    assert widgets.misclassified_summary(y_true, y_pred, NAMES, 0, set_name="validation").startswith(
        "3 of 10 validation images of class zero")
    empty = widgets.plot_misclassified(torch.rand(3, 28, 28), [1, 1, 1], [1, 1, 1], NAMES, true_class=1)
    assert not any(ax.images for ax in empty.axes)


def test_explorer_redraws_when_the_class_changes():
    images, y_true, y_pred = _data()
    box = widgets.misclassified_explorer(images, y_true, y_pred, NAMES)
    dropdown = box.children[0].children[0]
    image, text = box.children[1], box.children[2]
    first = bytes(image.value)
    assert first.startswith(b"\x89PNG") and "class zero" in text.value
    dropdown.value = 2
    assert bytes(image.value) != first and "class two" in text.value


def test_bad_input_is_refused():
    images, y_true, y_pred = _data()
    with pytest.raises(ValueError, match="same length"):
        widgets.plot_misclassified(images[:5], y_true, y_pred, NAMES, 0)
    with pytest.raises(ValueError, match="true_class"):
        widgets.plot_misclassified(images, y_true, y_pred, NAMES, 3)
