"""No lab solution is a lecture line: the lab asks students to use what the lectures showed, not to copy it.

A line of the lab's solution code (between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` in
lab/source/mlp_lab_solution.ipynb) of ``MIN_CHARS`` or more characters must not appear in the code of any lecture
notebook (notebooks/*.ipynb). The lines and the lecture lines come from tests/test_release.py (``solution_lines``,
``lecture_code_lines``), which only reports this overlap (its concern is leaks into the student edition); this test
fails on it.

Boilerplate that may repeat a lecture, and why (``boilerplate`` below):

* ``import ...`` / ``from ... import ...``: naming a module teaches nothing and solves nothing;
* ``check("qN")``: the lab's self-check calls, the same in every question;
* comments (``# ...``): prose, not code (a comment that restates a lecture is judged by a reader);
* lines of d2l or Python's standard library (``commonplace_lines``): what every course's code repeats.
"""
from __future__ import annotations

import re

import pytest

from coursekit.grading.assign import read_source
from test_release import SOURCE, commonplace_lines, lecture_code_lines, solution_lines

MIN_CHARS = 30
SELF_CHECK = re.compile(r'^check\("q\d+"\)$')


def boilerplate(line: str, commonplace: set[str]) -> bool:
    return (line.startswith(("import ", "from ", "#")) or SELF_CHECK.match(line) is not None
            or line in commonplace)


def transcribed(solutions: dict[str, str], lectures: dict[str, str], commonplace: set[str]) -> list[str]:
    """'line (cell; lecture)' for each solution line of MIN_CHARS or more that a lecture's code holds."""
    return sorted(f"{line!r} ({where}; {lectures[line]})" for line, where in solutions.items()
                  if len(line) >= MIN_CHARS and not boilerplate(line, commonplace) and line in lectures)


@pytest.fixture(scope="module")
def commonplace() -> set[str]:
    return commonplace_lines()


def test_no_solution_line_is_a_lecture_line(commonplace):
    solutions = solution_lines(read_source(SOURCE))
    assert sum(len(line) >= MIN_CHARS for line in solutions) >= 10, solutions  # something to check
    found = transcribed(solutions, lecture_code_lines(), commonplace)
    assert found == [], "lab solution lines that a lecture's code holds:\n  " + "\n  ".join(found)


def test_the_check_finds_a_transcribed_line_and_spares_boilerplate(commonplace):
    lectures = {"loss = F.cross_entropy(net(X), y) + lambd * penalty": "10_regularization.ipynb",
                "from torch.nn import functional as F  # the loss": "04_backpropagation.ipynb",
                "# the loss of each minibatch, averaged over one epoch": "05_training_mlp.ipynb"}
    solutions = {line: "solution in cell q6-solution" for line in lectures}
    solutions['check("q6")'] = "solution in cell q6-check"
    assert transcribed(solutions, lectures, commonplace) == [
        "'loss = F.cross_entropy(net(X), y) + lambd * penalty' (solution in cell q6-solution; 10_regularization.ipynb)"]
    assert transcribed({"x = 1": "solution in cell q1-solution"}, {"x = 1": "01.ipynb"}, commonplace) == []
