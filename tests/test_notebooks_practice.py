"""Structure of the lectures on generalization, regularization and training in practice (09-11) and lecture 04.

nbval runs the notebooks themselves and compares their committed outputs (every claim is an assert in a cell);
here: what a lecture must have around its content, read from the committed notebook.
"""
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
LECTURES = ["04_backpropagation", "09_generalization", "10_regularization", "11_training_in_practice"]


def _notebook(stem):
    return nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)


@pytest.mark.parametrize("stem", LECTURES)
def test_goals_first_summary_and_exercises_last(stem):
    cells = _notebook(stem).cells
    headings = [(i, c.source.splitlines()[0]) for i, c in enumerate(cells) if c.cell_type == "markdown"]
    goals = [i for i, h in headings if h.strip() == "## Learning goals"]
    assert goals and goals[0] <= 2, f"{stem}: '## Learning goals' must be one of the first three cells"
    n_goals = len(re.findall(r"^\d+\. ", cells[goals[0]].source, flags=re.M))
    assert 2 <= n_goals <= 4, f"{stem}: {n_goals} learning goals (2-4 expected)"
    assert cells[-1].cell_type == "markdown" and cells[-1].source.startswith("## Exercises")
    assert cells[-2].cell_type == "markdown" and cells[-2].source.startswith("## Summary")
    n_points = cells[-2].source.count("\n* ")
    assert n_points >= n_goals - 1, f"{stem}: the summary has {n_points} points for {n_goals} goals"


@pytest.mark.parametrize("stem", LECTURES)
def test_every_heading_starts_its_own_cell(stem):
    # a slide starts at a cell; a heading in the middle of a cell would be hidden in the previous slide
    for i, cell in enumerate(_notebook(stem).cells):
        if cell.cell_type == "markdown":
            inner = [line for line in cell.source.splitlines()[1:] if re.match(r"#{1,3} ", line)]
            assert not inner, f"{stem} cell {i}: heading {inner[0]!r} must start its own cell"


@pytest.mark.parametrize("stem", LECTURES)
def test_exercises_have_solutions_and_predict_prompts(stem):
    cells = _notebook(stem).cells
    exercises = cells[-1].source
    numbers = [int(n) for n in re.findall(r"^(\d+)\. ", exercises, flags=re.M)]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 3
    assert "Predict, then run" in exercises
    prompts = [i for i, c in enumerate(cells[:-1]) if c.cell_type == "markdown" and "Predict, then run" in c.source]
    assert prompts and all(cells[i + 1].cell_type == "code" for i in prompts), \
        f"{stem}: a predict-then-run prompt must come right before the cell that answers it"
    solutions = (ROOT / "instructor" / "exercise_solutions" / f"{stem}.md").read_text()
    assert all(re.search(rf"^{n}\. \*\*", solutions, flags=re.M) for n in numbers), f"{stem}: a solution per exercise"


@pytest.mark.parametrize("stem", LECTURES[1:])
def test_new_lectures_ran_cleanly_with_png_figures_and_one_thread(stem):
    cells = _notebook(stem).cells
    code = [c for c in cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), f"{stem}: committed without running every cell"
    outputs = [o for c in code for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert not [o for o in outputs if "image/svg+xml" in o.get("data", {})]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{stem}: no figure"
    # torch's threads spin on busy cores: on a shared 2-core machine two threads made a cell 20x slower
    assert "torch.set_num_threads(1)" in "".join(c.source for c in code[:2])
    # every claim is computed: each notebook asserts, and states comparisons paired by seed
    assert sum(c.source.count("assert ") for c in code) >= 10
    assert "paired" in "".join(c.source for c in code)
