"""Activation functions with their derivatives written out by hand.

An activation is the elementwise nonlinearity ``sigma`` applied after each affine layer of an MLP,
``H = sigma(X W + b)``. Without it a stack of layers collapses into one affine map (see notebook 02).

Every entry of the registry pairs the function with its closed-form derivative, so that you can
compare the formula from the lecture with what autograd computes::

    from coursekit.activations import ACTIVATIONS, get_activation
    relu = get_activation("relu")
    x = torch.linspace(-3, 3, 7)
    relu(x), relu.grad(x)              # values and derivative d relu / dx at each point
    get_activation("prelu", a=0.1)     # parametrised activations take their parameter by name

Conventions at kinks (points where the function has no derivative) follow PyTorch's autograd, so
``relu.grad(0) == 0`` like ``torch.relu``; leaky ReLU and pReLU use their negative-side slope at 0.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

__all__ = [
    "Activation",
    "ActivationModule",
    "ACTIVATIONS",
    "ALIASES",
    "activation_names",
    "get_activation",
]


@dataclass(frozen=True, eq=False)  # eq=False: compared and hashed by identity (fn is a function)
class Activation:
    """One activation function: ``fn(x)`` its values, ``grad(x)`` its derivative, elementwise.

    Calling the object itself (``act(x)``) is the same as ``act.fn(x)``. Plain numbers and lists
    are turned into tensors first. ``params`` records parameter values (e.g. pReLU's slope ``a``).
    """

    name: str
    fn: Callable[[Tensor], Tensor]
    grad: Callable[[Tensor], Tensor]
    description: str
    formula: str = ""
    params: dict = field(default_factory=dict)

    def __call__(self, x) -> Tensor:
        return self.fn(_as_tensor(x))

    def derivative(self, x) -> Tensor:
        """The closed-form derivative at ``x`` (same as ``grad``, accepting plain numbers too)."""
        return self.grad(_as_tensor(x))

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v}" for k, v in self.params.items())
        return f"Activation({self.name!r}{extra})"

    def as_module(self) -> "ActivationModule":
        """This activation as an ``nn.Module``, so that it can sit in ``nn.Sequential`` like ``nn.ReLU()``::

            nn.Sequential(nn.Linear(2, 16), get_activation("tanh").as_module(), nn.Linear(16, 2))
        """
        return ActivationModule(self)


class ActivationModule(torch.nn.Module):
    """An :class:`Activation` as a layer without parameters (see :meth:`Activation.as_module`)."""

    def __init__(self, activation: Activation):
        super().__init__()
        if not isinstance(activation, Activation):
            raise TypeError(f"ActivationModule wraps a coursekit Activation, got {type(activation).__name__}")
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        return self.activation.fn(x)

    def extra_repr(self) -> str:
        return "".join([repr(self.activation.name)] + [f", {k}={v}" for k, v in self.activation.params.items()])


def _as_tensor(x) -> Tensor:
    if isinstance(x, Tensor):
        return x
    t = torch.as_tensor(x)
    # Integers would make sigmoid & co. fail or round; activations live on real numbers.
    return t if t.is_floating_point() else t.to(torch.get_default_dtype())


def _check_number(name: str, value, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"parameter {name!r} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"parameter {name!r} must be > 0, got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------------------------
# One factory per activation. Parametrised ones take keyword arguments with defaults.

def _identity() -> Activation:
    return Activation(
        "identity",
        fn=lambda x: x.clone(),
        grad=lambda x: torch.ones_like(x),
        description="Leaves its input unchanged. A network using it everywhere is one affine map, "
                    "however many layers it has.",
        formula=r"$x$",
    )


def _relu() -> Activation:
    return Activation(
        "relu",
        fn=torch.relu,
        # x > 0 (strictly): the derivative at the kink x = 0 is taken as 0, as in torch.relu.
        grad=lambda x: (x > 0).to(x.dtype),
        description="Rectified linear unit max(0, x): keeps positive inputs, zeroes the rest. Its "
                    "derivative is 0 or 1, so gradients pass through active units undiminished.",
        formula=r"$\max(0, x)$",
    )


def _sigmoid() -> Activation:
    def grad(x):
        s = torch.sigmoid(x)
        return s * (1 - s)

    return Activation(
        "sigmoid",
        fn=torch.sigmoid,
        grad=grad,
        description="Squashes any input into (0, 1). Its derivative s(1 - s) is at most 0.25, so "
                    "deep sigmoid stacks shrink gradients layer after layer.",
        formula=r"$1 / (1 + e^{-x})$",
    )


def _tanh() -> Activation:
    return Activation(
        "tanh",
        fn=torch.tanh,
        grad=lambda x: 1 - torch.tanh(x) ** 2,
        description="Squashes into (-1, 1) and is centred on 0; tanh(x) = 2 sigmoid(2x) - 1. Its "
                    "derivative 1 - tanh^2 peaks at 1 at x = 0 and vanishes for large |x|.",
        formula=r"$(1 - e^{-2x}) / (1 + e^{-2x})$",
    )


def _leaky_relu(negative_slope: float = 0.01) -> Activation:
    slope = _check_number("negative_slope", negative_slope)
    return Activation(
        "leaky_relu",
        fn=lambda x: F.leaky_relu(x, slope),
        grad=lambda x: torch.where(x > 0, torch.ones_like(x), torch.full_like(x, slope)),
        description="Like ReLU but lets a small fixed fraction of negative inputs through "
                    f"(slope {slope:g}), so a unit never has an exactly zero gradient.",
        formula=r"$\max(0, x) + \alpha \min(0, x)$",
        params={"negative_slope": slope},
    )


def _prelu(a: float = 0.25) -> Activation:
    a = _check_number("a", a)

    def fn(x):
        return torch.prelu(x, torch.tensor([a], dtype=x.dtype, device=x.device))

    return Activation(
        "prelu",
        fn=fn,
        grad=lambda x: torch.where(x > 0, torch.ones_like(x), torch.full_like(x, a)),
        description="Parametrised ReLU: the negative-side slope a is a parameter (learned in "
                    f"torch.nn.PReLU; here a = {a:g}).",
        formula=r"$\max(0, x) + a \min(0, x)$",
        params={"a": a},
    )


def _elu(alpha: float = 1.0) -> Activation:
    alpha = _check_number("alpha", alpha, positive=True)
    return Activation(
        "elu",
        fn=lambda x: F.elu(x, alpha),
        # At x = 0 autograd takes the negative branch: alpha * exp(0) = alpha.
        grad=lambda x: torch.where(x > 0, torch.ones_like(x), alpha * torch.exp(torch.clamp(x, max=0))),
        description="Exponential linear unit: identity for x > 0, a smooth curve alpha(e^x - 1) "
                    "that saturates at -alpha for x < 0; pushes mean activations towards 0.",
        formula=r"$x$ if $x>0$ else $\alpha(e^x - 1)$",
        params={"alpha": alpha},
    )


_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _gelu() -> Activation:
    def grad(x):
        cdf = 0.5 * (1 + torch.erf(x / _SQRT2))
        pdf = _INV_SQRT_2PI * torch.exp(-0.5 * x * x)
        return cdf + x * pdf

    return Activation(
        "gelu",
        fn=lambda x: F.gelu(x),  # exact erf form (approximate='none')
        grad=grad,
        description="Gaussian error linear unit x * Phi(x), Phi the standard normal CDF: a smooth "
                    "ReLU used in Transformers (exact erf form, not the tanh approximation).",
        formula=r"$x\,\Phi(x)$",
    )


def _silu() -> Activation:
    def grad(x):
        s = torch.sigmoid(x)
        return s * (1 + x * (1 - s))

    return Activation(
        "silu",
        fn=F.silu,
        grad=grad,
        description="Sigmoid linear unit x * sigmoid(x), also called Swish: smooth, non-monotonic "
                    "(dips slightly below 0), close to ReLU for large |x|.",
        formula=r"$x \cdot \mathrm{sigmoid}(x)$",
    )


def _softplus() -> Activation:
    return Activation(
        "softplus",
        fn=F.softplus,
        grad=torch.sigmoid,
        description="log(1 + e^x): a smooth, always-positive version of ReLU whose derivative is "
                    "exactly the sigmoid.",
        formula=r"$\log(1 + e^{x})$",
    )


_FACTORIES: dict[str, Callable[..., Activation]] = {
    "identity": _identity,
    "relu": _relu,
    "sigmoid": _sigmoid,
    "tanh": _tanh,
    "leaky_relu": _leaky_relu,
    "prelu": _prelu,
    "elu": _elu,
    "gelu": _gelu,
    "silu": _silu,
    "softplus": _softplus,
}

#: Other names students meet in papers and libraries, mapped to the registry's name.
ALIASES: dict[str, str] = {"swish": "silu"}

#: name -> Activation with default parameters (canonical names only; see ALIASES).
ACTIVATIONS: dict[str, Activation] = {name: make() for name, make in _FACTORIES.items()}


def activation_names(include_aliases: bool = False) -> list[str]:
    """The registry's names in a fixed teaching order (optionally followed by the aliases)."""
    names = list(_FACTORIES)
    return names + list(ALIASES) if include_aliases else names


def get_activation(name: str, **params) -> Activation:
    """Look an activation up by name (case-insensitive; ``-`` and ``_`` are the same).

    Parameters go by keyword: ``get_activation("prelu", a=0.1)``,
    ``get_activation("leaky_relu", negative_slope=0.2)``, ``get_activation("elu", alpha=0.5)``.
    """
    if not isinstance(name, str):
        raise TypeError(f"activation name must be a string, got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in _FACTORIES:
        valid = ", ".join(activation_names())
        aliases = ", ".join(f"{a} -> {t}" for a, t in ALIASES.items())
        raise ValueError(f"unknown activation {name!r}; valid names: {valid} (aliases: {aliases})")
    if not params:
        return ACTIVATIONS[key]
    accepted = list(inspect.signature(_FACTORIES[key]).parameters)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"activation {key!r} does not take parameter(s) {unknown}; "
            f"it accepts: {', '.join(accepted) if accepted else 'no parameters'}"
        )
    return _FACTORIES[key](**params)
