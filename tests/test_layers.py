"""coursekit.Standardize: a parameter-free first layer that centres and scales the inputs."""
import pytest
import torch
from torch import nn

import coursekit
from coursekit import Standardize


def test_training_pixels_come_out_centred_and_scaled(real_data_dir):
    images = coursekit.load_fashion_mnist(real_data_dir).train_images
    pixels = images.float() / 255
    layer = Standardize(pixels.mean().item(), pixels.std().item())
    out = layer(pixels)
    assert out.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert out.std().item() == pytest.approx(1.0, abs=1e-4)
    # Fashion-MNIST's raw pixels are far from centred: that is why the lecture standardizes.
    assert 0.28 < layer.mean < 0.29 and 0.35 < layer.std < 0.36


def test_it_is_a_fixed_map_without_parameters():
    layer = Standardize(0.5, 0.25)
    assert list(layer.parameters()) == [] and layer.state_dict() == {}
    X = torch.tensor([[0.0, 0.5, 1.0]], dtype=torch.float64)
    assert torch.equal(layer(X), torch.tensor([[-2.0, 0.0, 2.0]], dtype=torch.float64))  # keeps the dtype
    assert "mean=0.5, std=0.25" in repr(layer)
    # Gradients flow through it to the layers behind, scaled by 1/std.
    X = torch.ones(2, 3, requires_grad=True)
    layer(X).sum().backward()
    assert torch.equal(X.grad, torch.full((2, 3), 4.0))


def test_first_layer_of_a_model_counts_no_parameters():
    net = nn.Sequential(Standardize(0.3, 0.4), nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    assert sum(p.numel() for p in net.parameters()) == 784 * 256 + 256 + 256 * 10 + 10
    assert net(torch.rand(5, 1, 28, 28)).shape == (5, 10)


@pytest.mark.parametrize("std", [0.0, -1.0, float("nan")])
def test_a_useless_std_is_refused(std):
    with pytest.raises(ValueError, match="positive standard deviation"):
        Standardize(0.3, std)
