"""The closed-form derivatives in coursekit.activations agree with autograd and with finite differences."""
import math

import pytest
import torch

from coursekit.activations import ACTIVATIONS, ALIASES, Activation, activation_names, get_activation

EXPECTED_NAMES = ["identity", "relu", "sigmoid", "tanh", "leaky_relu", "prelu", "elu", "gelu", "silu",
                  "softplus"]
# Points where the function is not differentiable (central differences straddle the kink there).
KINKS = {"relu": [0.0], "leaky_relu": [0.0], "prelu": [0.0]}
# A dense float64 grid from -12 to 12 in steps of 0.002 that contains 0.0 exactly (linspace would not).
GRID = torch.arange(-6000, 6001, dtype=torch.float64) / 500


def autograd_derivative(act: Activation, x: torch.Tensor) -> torch.Tensor:
    x = x.detach().clone().requires_grad_(True)
    act(x).sum().backward()  # elementwise, so d(sum)/dx_i = act'(x_i)
    return x.grad


def test_registry_has_exactly_the_contract_names():
    assert activation_names() == EXPECTED_NAMES
    assert list(ACTIVATIONS) == EXPECTED_NAMES
    for name, act in ACTIVATIONS.items():
        assert act.name == name
        assert len(act.description) > 30, f"{name} needs a student-readable description"


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_closed_form_matches_autograd_everywhere_including_kinks(name):
    act = get_activation(name)
    assert 0.0 in GRID.tolist()
    torch.testing.assert_close(act.grad(GRID), autograd_derivative(act, GRID), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_closed_form_matches_central_differences(name):
    h = 1e-6
    act = get_activation(name)
    x = GRID
    for kink in KINKS.get(name, []):
        x = x[(x - kink).abs() > 10 * h]
    numeric = (act(x + h) - act(x - h)) / (2 * h)
    torch.testing.assert_close(act.grad(x), numeric, rtol=1e-6, atol=1e-7)


def test_relu_derivative_at_zero_is_zero_like_torch_relu():
    zero = torch.zeros(1, dtype=torch.float64)
    relu = get_activation("relu")
    assert relu.grad(zero).item() == 0.0
    assert autograd_derivative(relu, zero).item() == 0.0
    x = zero.clone().requires_grad_(True)
    torch.relu(x).backward()
    assert x.grad.item() == relu.grad(zero).item()


def test_d2l_scratch_relu_splits_the_gradient_at_zero():
    # d2l's from-scratch relu uses torch.max against zeros; at a tie torch.max hands half the
    # gradient to each argument, so the derivative at 0 comes out as 0.5, not 0.
    X = torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64, requires_grad=True)
    torch.max(X, torch.zeros_like(X)).sum().backward()
    assert X.grad.tolist() == [0.0, 0.5, 1.0]
    assert X.grad[1].item() != get_activation("relu").grad(torch.zeros(1)).item()


def test_leaky_prelu_elu_values_at_kink_follow_autograd():
    zero = torch.zeros(1, dtype=torch.float64)
    assert get_activation("leaky_relu").grad(zero).item() == pytest.approx(0.01)
    assert get_activation("prelu").grad(zero).item() == pytest.approx(0.25)
    assert get_activation("elu", alpha=0.5).grad(zero).item() == pytest.approx(0.5)
    for name, params in [("leaky_relu", {"negative_slope": 0.2}), ("prelu", {"a": 0.1}), ("elu", {"alpha": 0.5})]:
        act = get_activation(name, **params)
        torch.testing.assert_close(act.grad(GRID), autograd_derivative(act, GRID))


def test_prelu_parameter():
    x = torch.tensor([-2.0, -1.0, 0.0, 3.0], dtype=torch.float64)
    assert get_activation("prelu")(x).tolist() == [-0.5, -0.25, 0.0, 3.0]
    p = get_activation("prelu", a=0.1)
    assert p.params == {"a": 0.1}
    torch.testing.assert_close(p(x), torch.tensor([-0.2, -0.1, 0.0, 3.0], dtype=torch.float64))
    torch.testing.assert_close(p(x), torch.nn.functional.leaky_relu(x, 0.1))


def test_function_values_match_textbook_formulas():
    x = GRID
    torch.testing.assert_close(get_activation("relu")(x), torch.maximum(x, torch.zeros_like(x)))
    torch.testing.assert_close(get_activation("sigmoid")(x), 1 / (1 + torch.exp(-x)))
    torch.testing.assert_close(get_activation("tanh")(x), (1 - torch.exp(-2 * x)) / (1 + torch.exp(-2 * x)))
    torch.testing.assert_close(get_activation("softplus")(x), torch.log1p(torch.exp(x)))
    phi = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    torch.testing.assert_close(get_activation("gelu")(x), x * phi)
    torch.testing.assert_close(get_activation("silu")(x), x / (1 + torch.exp(-x)))
    torch.testing.assert_close(get_activation("elu")(x), torch.where(x > 0, x, torch.exp(x) - 1))
    torch.testing.assert_close(get_activation("identity")(x), x)


def test_gelu_is_the_exact_erf_form_not_tanh_approximation():
    x = torch.tensor([1.0], dtype=torch.float64)
    exact = get_activation("gelu")(x)
    approx = torch.nn.functional.gelu(x, approximate="tanh")
    assert exact.item() == pytest.approx(0.5 * (1 + math.erf(1 / math.sqrt(2))), abs=1e-15)
    assert abs(exact.item() - approx.item()) > 1e-5


def test_sigmoid_derivative_peaks_at_a_quarter():
    d = get_activation("sigmoid").grad(GRID)
    assert d.max().item() == pytest.approx(0.25, abs=1e-15)
    assert GRID[d.argmax()].item() == 0.0


def test_tanh_derivative_peaks_at_one():
    d = get_activation("tanh").grad(GRID)
    assert d.max().item() == pytest.approx(1.0, abs=1e-15)
    assert GRID[d.argmax()].item() == 0.0
    assert d.min().item() < 1e-9  # saturates far from 0


def test_tanh_is_a_rescaled_sigmoid():
    sig, tanh = get_activation("sigmoid"), get_activation("tanh")
    torch.testing.assert_close(tanh(GRID), 2 * sig(2 * GRID) - 1, rtol=0, atol=1e-14)


def test_softplus_derivative_is_sigmoid():
    torch.testing.assert_close(get_activation("softplus").grad(GRID), get_activation("sigmoid")(GRID))


def test_swish_alias_and_name_normalisation():
    assert ALIASES == {"swish": "silu"}
    assert get_activation("swish") is get_activation("silu")
    assert get_activation(" Leaky-ReLU ") is ACTIVATIONS["leaky_relu"]
    assert "swish" in activation_names(include_aliases=True)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        get_activation("rleu")
    msg = str(err.value)
    assert "'rleu'" in msg
    for name in EXPECTED_NAMES + ["swish"]:
        assert name in msg


def test_bad_arguments_give_specific_errors():
    with pytest.raises(TypeError, match="string"):
        get_activation(3)
    with pytest.raises(ValueError, match="does not take parameter.*'alpha'.*accepts: a"):
        get_activation("prelu", alpha=0.3)
    with pytest.raises(ValueError, match="no parameters"):
        get_activation("relu", a=1.0)
    with pytest.raises(ValueError, match="'a' must be a finite number"):
        get_activation("prelu", a=float("nan"))
    with pytest.raises(ValueError, match="'alpha' must be > 0"):
        get_activation("elu", alpha=0)


def test_plain_numbers_and_float32_work():
    assert get_activation("relu")(-3).item() == 0.0
    assert get_activation("sigmoid").derivative(0).item() == pytest.approx(0.25)
    y = get_activation("gelu")(torch.ones(3))
    assert y.dtype == torch.float32


def test_activations_are_hashable():
    assert len({act for act in ACTIVATIONS.values()}) == len(ACTIVATIONS)


def test_prelu_keeps_dtype():
    x = torch.linspace(-1, 1, 5, dtype=torch.float64)
    assert get_activation("prelu")(x).dtype == torch.float64


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_as_module_works_in_sequential(name):
    """notebook 02's exercise: a coursekit activation between two nn.Linear layers, trained by autograd."""
    from torch import nn

    act = get_activation(name)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 4), act.as_module(), nn.Linear(4, 2))
    x = torch.randn(5, 2)
    expected = net[2](act(net[0](x)))
    assert torch.equal(net(x), expected)
    net(x).sum().backward()
    assert net[0].weight.grad is not None and not list(net[1].parameters())
    assert name in repr(net[1])


def test_activation_module_refuses_other_things():
    from coursekit.activations import ActivationModule

    with pytest.raises(TypeError, match="coursekit Activation"):
        ActivationModule(torch.relu)
