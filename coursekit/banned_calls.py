"""The one rule for "torch's own activation functions are not allowed" (lab question 1).

Used twice, with the same verdict: by the student's ``check("q1")`` (imported normally) and by the grader's
harvest in the student's process (where :mod:`coursekit.grading.labspec` runs this file's source afresh, so a
notebook that replaced the imported module changes nothing).

A call of ``torch.relu``/``sigmoid``/``tanh`` or a relative is seen at three levels, so that no single
indirection hides it:

1. **torch functions** (``TorchFunctionMode``): ``torch.relu``, ``F.relu``, ``x.relu()``, ``x.relu_()``,
   ``torch.special.expit``, ... by the name torch reports;
2. **the dispatcher** (``TorchDispatchMode``): the ATen operator that really runs (``aten::relu``,
   ``aten::sigmoid_``, ...), whatever Python path led there: a ``__torch_function__`` subclass, a
   ``TorchFunctionMode`` of the notebook's own, ``torch.fx`` or ``torch.jit`` code, ``nn.ReLU()``,
   ``torch._C._DisableTorchFunction``;
3. **the autograd graph**: the function is also called on a float64 input that requires grad, and the graph
   of its result is read (``ReluBackward0``, ``SigmoidBackward0``, ...). This sees calls made while Python
   dispatch was disabled. A result cut off from its input (``.numpy()``, ``.tolist()``, ``.item()``,
   ``.detach()``, ``torch.no_grad()``) or made by a custom ``torch.autograd.Function`` is not allowed either:
   both are the way to hide a call from the graph.

Limit: code in the same process can always defeat checks made in that process (e.g. a custom autograd
Function whose forward disables Python dispatch *and* torch functions); the grader's values are computed
from the returned numbers, so such code still has to be right to score.
"""
from __future__ import annotations

import re

import torch

# Canonical names (see :func:`canonical`) of everything that computes an activation for you.
BANNED = frozenset({
    "relu", "relu6", "sigmoid", "expit", "tanh", "hardtanh", "threshold", "softplus", "silu", "gelu", "elu",
    "selu", "celu", "leakyrelu", "logsigmoid", "hardsigmoid", "hardswish", "mish", "rrelu", "softmax",
    "logsoftmax", "tanhshrink", "softsign", "glu", "prelu",
})
# Leaving torch for Python or numpy numbers (question 1 must stay tensor code).
OFF_TENSOR = frozenset({"numpy", "tolist", "item"})
NOT_CONNECTED = "a result detached from autograd (.numpy(), .tolist(), .item(), .detach() or torch.no_grad())"
CUSTOM_FUNCTION = "a custom torch.autograd.Function"
_SUFFIXES = ("backward", "forward", "withnoise", "default", "out", "tensor", "scalar", "functional")


def canonical(name: str) -> str:
    """'aten::relu_' / 'ReluBackward0' / 'relu' / 'leaky_relu' / 'aten::_softmax' -> 'relu' ... 'softmax'."""
    text = str(name).lower().split("::")[-1].split(".")[0]
    text = re.sub(r"\d+$", "", text).replace("_", "")
    changed = True
    while changed:
        changed = False
        for suffix in _SUFFIXES:
            if text.endswith(suffix) and len(text) > len(suffix):
                text, changed = text[: -len(suffix)], True
    if text.startswith("special") and len(text) > len("special"):
        text = text[len("special"):]
    return text


def display(name: str) -> str:
    """How the student is told: 'torch.relu', 'Tensor.numpy'."""
    if name in (NOT_CONNECTED, CUSTOM_FUNCTION):
        return name
    base = canonical(name)
    if base in OFF_TENSOR:
        return f"Tensor.{base}"
    return {"leakyrelu": "torch.nn.functional.leaky_relu", "logsigmoid": "torch.nn.functional.logsigmoid",
            "logsoftmax": "torch.log_softmax", "expit": "torch.special.expit"}.get(base, f"torch.{base}")


def banned(names) -> list[str]:
    """The banned calls among ``names`` (any level's names), as the student is told them, sorted and unique."""
    found = set()
    for name in names:
        if name in (NOT_CONNECTED, CUSTOM_FUNCTION):
            found.add(name)
        elif canonical(name) in BANNED or canonical(name) in OFF_TENSOR:
            found.add(display(name))
    return sorted(found)


class CallTrace:
    """A context manager recording what torch runs inside it: ``names`` holds the torch functions called
    (``relu``) and the ATen operators dispatched (``aten::relu``)."""

    def __init__(self):
        from torch.overrides import TorchFunctionMode
        from torch.utils._python_dispatch import TorchDispatchMode
        names = self.names = set()
        counts = self.counts = {"operators": 0}     # ATen operators dispatched (a finite difference needs many)

        class _Functions(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                names.add(str(getattr(func, "__name__", "?"))[:60])
                return func(*args, **(kwargs or {}))

        class _Operators(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                names.add(str(getattr(getattr(func, "_schema", None), "name", func))[:60])
                counts["operators"] += 1
                return func(*args, **(kwargs or {}))

        self._modes = (_Functions(), _Operators())

    def __enter__(self):
        self._modes[1].__enter__()
        self._modes[0].__enter__()
        return self

    def __exit__(self, *exc):
        self._modes[0].__exit__(*exc)
        self._modes[1].__exit__(*exc)
        return False


def graph_names(fn) -> list[str]:
    """Call ``fn`` on a small float64 input that requires grad; the names of the autograd nodes of its result.

    Also :data:`NOT_CONNECTED` if a tensor result does not depend on the input through autograd, and
    :data:`CUSTOM_FUNCTION` for a node made by a ``torch.autograd.Function``. Empty if ``fn`` raised or did not
    return a tensor (the other tests say what is wrong then).
    """
    leaf = torch.linspace(-3.0, 3.0, 13, dtype=torch.float64).requires_grad_(True)
    probe = leaf * 1.0  # not a leaf: in-place code (x[x < 0] = 0) works on it as on any tensor
    try:
        with torch.enable_grad():
            out = fn(probe)
    except Exception:  # noqa: BLE001 - student code; its errors are reported by the value tests
        return []
    if not isinstance(out, torch.Tensor):
        return []
    node = torch._C.TensorBase.grad_fn.__get__(out)
    if node is None:
        return [NOT_CONNECTED]
    names, stack, seen = set(), [node], set()
    while stack and len(seen) < 10_000:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        names.add(type(node).__name__)
        if isinstance(node, torch.autograd.function.BackwardCFunction):
            names.add(CUSTOM_FUNCTION)
        stack.extend(next_node for next_node, _ in getattr(node, "next_functions", ()))
    return sorted(names)


def _traced_calls(fn, inputs, also=None) -> set[str]:
    """What :class:`CallTrace` sees while ``fn`` runs on each of ``inputs`` (a raising call still counts what it
    called before raising), plus what ``also()`` returns when run inside the same trace."""
    trace = CallTrace()
    with trace:
        for x in inputs:
            try:
                fn(x)
            except Exception:  # noqa: BLE001
                pass
        extra = set(also()) if also is not None else set()
    return trace.names | extra


def calls_of(fn, inputs=()) -> set[str]:
    """Everything :class:`CallTrace` and :func:`graph_names` see when ``fn`` runs on each of ``inputs`` and on
    the autograd probe."""
    return _traced_calls(fn, inputs, also=lambda: graph_names(fn))


def banned_calls_of(fn, inputs=()) -> list[str]:
    """The banned calls ``fn`` makes (as the student is told them); [] if none."""
    return banned(calls_of(fn, inputs))


def not_allowed(function: str, used) -> str:
    """The message both the public check and the grader give."""
    used = list(used)
    return (f"the grader will not count this: {used[0]} is not allowed" + (f" (nor {', '.join(used[1:])})"
            if len(used) > 1 else "") + f" in {function}; write it from elementary operations "
            "(torch.exp, torch.where, torch.abs, torch.clamp, arithmetic)")


# ------------------------------------------------------------------------ question 2: derivatives by hand
# Function-level names of autograd's entry points (torch.autograd.grad, Tensor.backward, torch.func.*).
AUTOGRAD = frozenset({"backward", "grad", "vjp", "jvp", "jacobian", "hessian", "jacrev", "jacfwd", "hvp"})


def autograd_used(names) -> list[str]:
    """The autograd entry points among ``names``; also 'autograd' when an operator only autograd's backward
    pass runs (``aten::sigmoid_backward``, ``aten::threshold_backward``, ...) was dispatched."""
    found = set()
    for name in names:
        name = str(name)
        if name in AUTOGRAD:
            found.add({"grad": "torch.autograd.grad", "backward": "Tensor.backward"}.get(name, f"torch.func.{name}"))
        elif name.startswith("aten::") and name.split(".")[0].endswith("_backward"):
            found.add("autograd")
    return sorted(found)


def autograd_calls_of(fn, inputs=()) -> list[str]:
    """The autograd ``fn`` uses when called on each of ``inputs``; [] if none."""
    return autograd_used(_traced_calls(fn, inputs))


def uses_autograd(function: str, used) -> str:
    """The message both the public check and the grader give for a derivative computed by autograd."""
    return (f"the grader will not count this: {function} uses autograd ({', '.join(used)}); write the "
            "derivative in closed form")
