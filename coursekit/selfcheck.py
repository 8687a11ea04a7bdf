"""The student's self-check: ``check("q1")`` runs a question's public tests and prints one line per test.

Public tests are small functions defined in the lab notebook (the collapsed "public tests" cells),
named ``test_<question>_<something>``; their docstring says what they check. Inside them, the
``expect_*`` helpers below raise :class:`CheckFailed` with a message that says what was expected and
what came back (type, shape, dtype, device, nan/inf, values). ``check`` never shows a traceback:

* a test that passes prints ``PASS``;
* a test whose code raises ``NotImplementedError`` (the TODO stubs) prints ``not attempted yet``;
* a failed expectation prints ``FAIL`` and its message;
* any other error prints ``FAIL`` with the error and the line of *your* code that raised it.

This runs in the student's own kernel and only gives feedback: the grade comes from the hidden
tests, which the autograder runs separately (``coursekit.grading.labspec``).
"""
from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass

import torch

from coursekit import banned_calls
from coursekit.paths import PACKAGE

__all__ = ["CheckFailed", "Outcome", "check", "run_public_tests", "expect", "expect_tensor", "expect_close",
           "expect_allowed", "expect_closed_form", "expect_no_autograd", "expect_training_loop", "describe"]


class CheckFailed(AssertionError):
    """A public test's expectation was not met; the message is shown to the student as is."""


@dataclass(frozen=True)
class Outcome:
    """One public test's result: ``status`` is "pass", "fail" or "todo" (not attempted yet)."""
    name: str
    status: str
    message: str = ""


# --------------------------------------------------------------------------------------------- helpers
def describe(value, max_items: int = 6) -> str:
    """A short, readable description of a value: tensors show dtype, shape, device and a few numbers."""
    if isinstance(value, torch.Tensor):
        t = value.detach()
        head = f"tensor(dtype={str(t.dtype).replace('torch.', '')}, shape={tuple(t.shape)}"
        if t.device.type != "cpu":
            head += f", device={t.device}"
        if t.numel() == 0:
            return head + ", empty)"
        flat = t.flatten()[:max_items].cpu().tolist()
        numbers = ", ".join(_number(v) for v in flat)
        more = ", ..." if t.numel() > max_items else ""
        return f"{head}, values [{numbers}{more}])"
    if isinstance(value, (tuple, list)):
        kind = type(value).__name__
        return f"{kind} of {len(value)}: (" + ", ".join(describe(v, 3) for v in value[:3]) + \
            (", ..." if len(value) > 3 else "") + ")"
    text = repr(value)
    return f"{type(value).__name__} {text[:80]}{'...' if len(text) > 80 else ''}"


def _number(v) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def expect(condition: bool, message: str) -> None:
    """Fail with ``message`` unless ``condition`` holds."""
    if not condition:
        raise CheckFailed(message)


def expect_tensor(what: str, got, *, shape=None, dtype=None, device=None, finite: bool = True) -> torch.Tensor:
    """Check that ``got`` is a real ``torch.Tensor`` with the given shape/dtype/device, free of nan/inf.

    ``what`` names the value in the message, e.g. ``"relu(x)"``.
    """
    if not isinstance(got, torch.Tensor):
        raise CheckFailed(f"{what} should be a torch.Tensor, but it is a {describe(got)}")
    if shape is not None and tuple(got.shape) != tuple(shape):
        raise CheckFailed(f"{what} should have shape {tuple(shape)}, but it has shape {tuple(got.shape)}")
    if dtype is not None and got.dtype != dtype:
        raise CheckFailed(f"{what} should have dtype {str(dtype).replace('torch.', '')} (the input's), "
                          f"but it has dtype {str(got.dtype).replace('torch.', '')}")
    if device is not None and got.device != torch.device(device):
        raise CheckFailed(f"{what} should be on device {device} (the input's), but it is on {got.device}")
    if finite and got.is_floating_point():
        bad = ~torch.isfinite(got.detach())
        if bad.any():
            kinds = []
            if torch.isnan(got.detach()).any():
                kinds.append("nan")
            if torch.isinf(got.detach()).any():
                kinds.append("inf")
            where = bad.nonzero()[:3].tolist()
            raise CheckFailed(f"{what} contains {' and '.join(kinds)} ({int(bad.sum())} of {got.numel()} values, "
                              f"first at index {', '.join(str(tuple(i)) for i in where)})")
    return got


def expect_close(what: str, got, expected: torch.Tensor, *, rtol: float = 1e-5, atol: float = 1e-6,
                 inputs: torch.Tensor | None = None) -> None:
    """Check type, shape, dtype, device, finiteness, then values within ``atol + rtol * |expected|``.

    ``inputs`` (optional) is shown next to the first wrong value to make the message concrete.
    """
    expected = expected.detach()
    expect_tensor(what, got, shape=expected.shape, dtype=expected.dtype, device=expected.device,
                  finite=bool(torch.isfinite(expected).all()) if expected.is_floating_point() else True)
    got = got.detach()
    if got.numel() == 0:
        return
    diff = (got.double() - expected.double()).abs()
    allowed = atol + rtol * expected.double().abs()
    wrong = ~(diff <= allowed)  # also catches nan
    if wrong.any():
        index = tuple(wrong.nonzero()[0].tolist())
        at = f" at input {_number(inputs.detach()[index].item())}" if inputs is not None and \
            tuple(inputs.shape) == tuple(got.shape) else ""
        raise CheckFailed(f"{what} is wrong at {int(wrong.sum())} of {got.numel()} positions; first at index "
                          f"{index}{at}: expected {_number(expected[index].item())}, got {_number(got[index].item())} "
                          f"(tolerance {atol:g} + {rtol:g}*|expected|)")


def expect_allowed(what: str, fn, *inputs: torch.Tensor) -> None:
    """Fail if ``fn`` (called on each of ``inputs``) uses what the grader does not count: torch's own activation
    functions, however reached (the grader's rule, :mod:`coursekit.banned_calls`)."""
    for x in inputs:
        fn(x)  # its own errors (a TODO stub included) are reported as such, not as "allowed"
    used = banned_calls.banned_calls_of(fn, inputs)
    if used:
        raise CheckFailed(banned_calls.not_allowed(what, used))


def expect_closed_form(what: str, fn, *inputs: torch.Tensor) -> None:
    """Fail, as the grader would, if the derivative ``fn`` changes the dtype of an input (a float32 result for a
    float64 input) or computes its result with autograd."""
    for x in inputs:
        got = fn(x)
        if isinstance(got, torch.Tensor) and got.dtype != x.dtype:
            raise CheckFailed(f"the grader will not count this: {what}(x) should have dtype "
                              f"{str(x.dtype).replace('torch.', '')} (the input's), but it has dtype "
                              f"{str(got.dtype).replace('torch.', '')}")
    expect_no_autograd(what, fn, *inputs)


def expect_no_autograd(what: str, fn, *inputs) -> None:
    """Fail, as the grader would, if ``fn`` (called on each of ``inputs``) computes with autograd."""
    used = banned_calls.autograd_calls_of(fn, inputs)
    if used:
        raise CheckFailed(banned_calls.uses_autograd(what, used))


class _SmallMLP(torch.nn.Module):
    """A 784-16-10 MLP that records whether a gradient reached a parameter that still held an older one."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.W1 = torch.nn.Parameter(torch.randn(784, 16, generator=gen) * 0.1)
        self.b1 = torch.nn.Parameter(torch.zeros(16))
        self.W2 = torch.nn.Parameter(torch.randn(16, 10, generator=gen) * 0.1)
        self.b2 = torch.nn.Parameter(torch.zeros(10))
        self.accumulated = False
        for p in self.parameters():
            p.register_hook(lambda grad, p=p: self._arriving(p))

    def _arriving(self, p):
        if p.grad is not None and bool((p.grad != 0).any()):
            self.accumulated = True

    def forward(self, X):
        return torch.clamp(X.reshape(-1, 784) @ self.W1 + self.b1, min=0) @ self.W2 + self.b2


class _RandomImages:
    """Three minibatches of 8 random 28x28 images with labels, as data.train_dataloader() gives them."""
    batch_size = 8

    def __init__(self):
        gen = torch.Generator().manual_seed(0)
        self.batches = [(torch.rand(8, 1, 28, 28, generator=gen), torch.randint(0, 10, (8,), generator=gen))
                        for _ in range(3)]

    def train_dataloader(self):
        return list(self.batches)


def expect_training_loop(train_mlp, num_epochs: int = 2) -> None:
    """Run ``train_mlp`` for ``num_epochs`` on a few random minibatches with a small MLP; fail with a targeted
    hint for the common mistakes: a softmax before ``F.cross_entropy``, gradients not zeroed between steps,
    not one Python float per epoch (also graded), parameters that do not change."""
    model, data = _SmallMLP(), _RandomImages()
    before = [p.detach().clone() for p in model.parameters()]
    trace = banned_calls.CallTrace()
    with trace:
        returned = train_mlp(model, data, num_epochs=num_epochs, lr=0.1)
    if "softmax" in trace.names or "aten::_softmax" in trace.names:
        raise CheckFailed("train_mlp applies a softmax: F.cross_entropy takes the logits model(X) and applies the "
                          "softmax itself; a softmax before it squashes the gradients and slows training down")
    if model.accumulated:
        raise CheckFailed("the gradients are not set to zero between minibatches: loss.backward() adds to the "
                          "gradients already there; call optimizer.zero_grad() (or p.grad.zero_()) before it")
    if not (isinstance(returned, list) and len(returned) == num_epochs and all(type(v) is float for v in returned)):
        raise CheckFailed(f"train_mlp(model, data, num_epochs={num_epochs}, lr) should return a list of {num_epochs} "
                          f"Python floats, one mean loss per epoch (use loss.item()); it returned {describe(returned)}"
                          " (the grader checks this too)")
    if all(torch.equal(b, p.detach()) for b, p in zip(before, model.parameters())):
        raise CheckFailed("train_mlp did not change the model's parameters: update them with the gradients "
                          "(optimizer.step(), or p -= lr * p.grad under torch.no_grad())")


# ------------------------------------------------------------------------------------------- running
def _tests_for(question: str, namespace: dict) -> list:
    prefix = f"test_{question}_"
    return [(name, fn) for name, fn in list(namespace.items()) if name.startswith(prefix) and callable(fn)]


def _where_in_student_code(exc: BaseException) -> str:
    """' (in relu, line 3 of its cell)': the last frame that is the student's code, not torch or coursekit."""
    here = str(PACKAGE)
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        name = frame.filename
        if name.startswith(here) or "site-packages" in name or name.startswith(sys.prefix) or name.startswith("<frozen"):
            continue
        if frame.name.startswith("test_"):
            return ""
        return f" (in {frame.name}, line {frame.lineno} of its cell)"
    return ""


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text and text.strip() else ""


def run_public_tests(question: str, namespace: dict) -> list[Outcome]:
    """Run the public tests of ``question`` found in ``namespace``; never raises for a student's error."""
    outcomes = []
    for name, fn in _tests_for(question, namespace):
        title = _first_line(getattr(fn, "__doc__", None) or "") or name
        try:
            fn()
        except NotImplementedError as exc:
            detail = _first_line(str(exc)) or "a function still raises NotImplementedError"
            outcomes.append(Outcome(title, "todo", detail))
        except CheckFailed as exc:
            outcomes.append(Outcome(title, "fail", str(exc)))
        except Exception as exc:  # the student's code raised: say what and where, without a traceback
            outcomes.append(Outcome(title, "fail", f"your code raised {type(exc).__name__}: "
                                    f"{_first_line(str(exc))[:300]}{_where_in_student_code(exc)}"))
        else:
            outcomes.append(Outcome(title, "pass"))
    return outcomes


_MARK = {"pass": "PASS", "fail": "FAIL", "todo": "TODO"}


def check(question: str, namespace: dict | None = None) -> None:
    """Run the public tests of ``question`` (e.g. ``"q1"``) and print one line per test.

    ``namespace`` defaults to the caller's globals, i.e. the notebook's variables.
    """
    if namespace is None:
        namespace = sys._getframe(1).f_globals
    outcomes = run_public_tests(question, namespace)
    if not outcomes:
        print(f"{question}: no public tests found. Run the collapsed 'public tests' cell above this one "
              f"(or Run > Run All Cells), then check again.")
        return
    for outcome in outcomes:
        if outcome.status == "todo":
            detail = outcome.message[len("TODO:"):].strip() if outcome.message.startswith("TODO:") else outcome.message
            line = f"  TODO  {outcome.name} -- not attempted yet ({detail})"
        else:
            line = f"  {_MARK[outcome.status]}  {outcome.name}"
            if outcome.message:
                line += f": {outcome.message}"
        print(line)
    passed = sum(o.status == "pass" for o in outcomes)
    todo = sum(o.status == "todo" for o in outcomes)
    summary = f"{question}: {passed}/{len(outcomes)} public tests passed"
    if todo == len(outcomes):
        summary = f"{question}: not attempted yet"
    elif passed == len(outcomes):
        summary += ". The graded (hidden) tests try more inputs: edge cases, other shapes and dtypes."
    print(summary)
