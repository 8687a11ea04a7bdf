"""Question 3 of the lab (a deep MLP, initialised from its fans): the numbers its grading rests on.

* the per-layer std range is computed (Wilson-Hilferty chi-square quantiles), not guessed: checked against scipy's
  exact chi-square law, and the public check uses the grader's range;
* every typical wrong scale is caught for sure (disjoint ranges) on every grader seed tried;
* the text's numbers are the grader's; the experiment's output supports the questions the student answers;
* hidden tests on hand-made mistakes, in process (the graded notebooks are in tests/test_lab_mistakes.py).
"""
from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
import torch
from scipy import stats

from coursekit.grading import assign
from coursekit.selfcheck import run_public_tests
from coursekit.grading.labspec import load_spec
from test_lab import LAB, SOURCE, _grade, _namespace, _stub_train


@pytest.fixture(scope="module")
def spec():
    return load_spec(LAB / "autograder")


@pytest.fixture(scope="module")
def solved():
    return _namespace({"q1", "q3"})


def _cell(cell_id):
    return next(c.source for c in assign.read_source(SOURCE).cells if c.id == cell_id)


@pytest.mark.parametrize("count", [96, 200, 1_000, 16_384, 784 * 256])
def test_std_range_holds_a_correct_draw_except_with_probability_about_1e_10(spec, solved, count):
    low, high = spec.module.std_range(1.0, count)
    assert (low, high) == solved["std_range"](1.0, count)        # the public check's range is the grader's
    # the root mean square of `count` normal(0, 1) draws: count * rms**2 follows chi-square with `count` dof
    below, above = stats.chi2.cdf(count * low ** 2, count), stats.chi2.sf(count * high ** 2, count)
    assert 2e-11 < below < 5e-11 and 2e-11 < above < 5e-11, (below, above)


def test_text_states_the_graders_tolerances(spec):
    text = " ".join(_cell("q3").split())     # line breaks aside
    low, high = spec.module.std_range(1.0, 784 * 256)
    assert round(100 * (high - 1), 1) == round(100 * (1 - low), 1) == 1.0
    assert "within about 1.0 % of the target" in text and "except with probability below $10^{-10}$" in text
    for dtype, tol in spec.module.MLP_TOLERANCES.items():
        assert f"`rtol={tol['rtol']:.0e}, atol={tol['atol']:.0e}` in {dtype}".replace("e-0", "e-") in text
    assert f"`rtol={spec.module.RMS_RTOL:.0e}`".replace("e-0", "e-") in text
    points = spec.module.Q3["points"]
    for test, words in (("parameters", "parameters (5 points"), ("initialisation", "initialisation (5 points"),
                        ("forward", "forward pass (6 points"), ("hidden_rms", "`hidden_rms` (4 points")):
        assert words in text and f"{points[test]} points" in words


# a wrong scale: (init, fan_in, fan_out) -> the std it gives instead of the right one
WRONG_SCALES = {
    "fan_out instead of fan_in": lambda init, fi, fo: (2 / fo) ** 0.5 if init == "he" else None,
    "Xavier for He": lambda init, fi, fo: (2 / (fi + fo)) ** 0.5 if init == "he" else None,
    "He for Xavier": lambda init, fi, fo: (2 / fi) ** 0.5 if init == "xavier" else None,
    "sqrt(1/fan_in) for He": lambda init, fi, fo: (1 / fi) ** 0.5 if init == "he" else None,
    "fixed 0.01": lambda init, fi, fo: 0.01,
    "sigma ignored (He)": lambda init, fi, fo: (2 / fi) ** 0.5 if not isinstance(init, str) else None,
}


@pytest.mark.parametrize("mistake", sorted(WRONG_SCALES))
def test_every_wrong_scale_is_caught_for_sure_on_every_seed(spec, mistake):
    """Caught for sure: in some layer of some model, the range of the wrong draw and the accepted range are disjoint."""
    module, wrong = spec.module, WRONG_SCALES[mistake]
    for seed in range(100):
        inputs = module.inputs_q3(np.random.default_rng(seed))
        caught = False
        for case in ("deep", "fashion", "linear", "sigma"):
            _, widths, init, _, _ = module.mlp_case(inputs, case)
            for fan_in, fan_out in zip(widths, widths[1:]):
                std = wrong(init, fan_in, fan_out)
                if std is None:
                    continue
                count = fan_in * fan_out
                right_low, right_high = module.std_range(module.init_rule(init, fan_in, fan_out)[1], count)
                wrong_low, wrong_high = module.std_range(std, count)
                caught |= wrong_high < right_low or wrong_low > right_high
        assert caught, (mistake, seed)


def test_experiment_output_supports_the_questions(solved):
    """He keeps the RMS near 1 in all ten layers; sigma = 0.01 shrinks it per layer by about the factor the formula
    predicts for a fan-in of 256, 0.01 * sqrt(256 / 2)."""
    ns = dict(solved)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(compile(_cell("q3-experiment"), "<q3-experiment>", "exec"), ns)
    he, small = ns["rms_by_init"]["he"], ns["rms_by_init"][0.01]
    assert len(he) == len(small) == 10 and "hidden layer" in out.getvalue()
    assert all(0.7 < value < 1.4 for value in he), he
    predicted = 0.01 * math.sqrt(256 / 2)
    factors = [b / a for a, b in zip(small, small[1:])]
    assert all(abs(f / predicted - 1) < 0.15 for f in factors), factors
    assert abs((small[-1] / small[0]) ** (1 / 9) / predicted - 1) < 0.05


def test_student_notebook_runs_the_experiment_cell_without_an_error():
    ns = _namespace(set())
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(compile(_cell("q3-experiment"), "<q3-experiment>", "exec"), ns)
    assert "Not run yet: TODO: implement" in out.getvalue()


MISTAKES = {  # name: (edit of the solution, the hidden tests it fails, words of the grader, words of the check)
    "plain list": ("params_in_a_list", {"parameters", "forward"}, "is a list, not an nn.ParameterList",
                   "is a list, not an nn.ParameterList: the grader will not count this"),
    "fan_out": ("std_from_fan_out", {"initialisation"}, "is sqrt(2/fan_out), the fan of the other dimension",
                "is sqrt(2/fan_out), the fan of the other dimension"),
    "output activation": ("activation_on_output", {"forward"}, "it matches the activation applied to the logits",
                          "applies the activation to the logits: the grader will not count this"),
    "rms tensors": ("rms_as_tensors", {"hidden_rms"}, "hidden_rms should return Python floats (.item())",
                    "hidden_rms should return Python floats (.item())"),
}
EDITS = {
    "params_in_a_list": ("self.params = nn.ParameterList()", "self.params = []"),
    "std_from_fan_out": ("(2 / fan_in) ** 0.5", "(2 / fan_out) ** 0.5"),
    "activation_on_output": ("            if layer < num_layers - 1:\n                H = self.activation(H)",
                             "            H = self.activation(H)"),
    "rms_as_tensors": ("values.append(H.square().mean().sqrt().item())", "values.append(H.square().mean().sqrt())"),
}


@pytest.mark.parametrize("case", sorted(MISTAKES))
def test_hidden_tests_and_check_agree_on_a_mistake(spec, tmp_path, case):
    edit, failing, grader_words, check_words = MISTAKES[case]
    old, new = EDITS[edit]
    source = "\n".join(line for line in _cell("q3-solution").split("\n")
                        if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION"))
    assert source.count(old) == 1
    ns = _namespace({"q1", "q3"})
    ns["train_mlp"] = _stub_train
    exec(compile(source.replace(old, new), "<q3 mistake>", "exec"), ns)
    q3 = _grade(spec, ns, tmp_path)["q3"]
    points = spec.module.Q3["points"]
    assert q3.points == sum(points.values()) - sum(points[t] for t in failing), q3.failed
    assert {line.split(" (0/")[0] for line in q3.failed} == failing
    assert any(grader_words in line for line in q3.failed), q3.failed
    outcomes = [o for o in run_public_tests("q3", ns) if o.status == "fail"]
    assert outcomes and any(check_words in o.message for o in outcomes), outcomes


def test_hidden_rms_is_called_on_the_graders_own_model(spec, tmp_path):
    """A hidden_rms that reads attributes other than params and activation fails on the grader's model, and
    check("q3") says so."""
    ns = _namespace({"q1", "q3"})
    ns["train_mlp"] = _stub_train
    solution = ns["hidden_rms"]
    ns["hidden_rms"] = lambda model, X: solution(model, X.reshape(-1, model.num_inputs))
    q3 = _grade(spec, ns, tmp_path)["q3"]
    (line,) = q3.failed
    assert line.startswith("hidden_rms (0/") and "AttributeError" in line, line
    (outcome,) = [o for o in run_public_tests("q3", ns) if o.status != "pass"]
    assert outcome.status == "fail" and "the grader will not count this: hidden_rms on a model that has only params " \
        "and activation raised AttributeError" in outcome.message, outcome
