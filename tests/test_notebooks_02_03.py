"""Static checks of the committed notebooks 02 and 03 (nbval re-executes them; this checks what is saved)."""
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["notebooks/02_linearity_collapse.ipynb", "notebooks/03_activation_functions.ipynb"]
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def load(path):
    return nbformat.read(REPO / path, as_version=4)


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def mimes(cell):
    return {mime for out in cell.get("outputs", []) for mime in out.get("data", {})}


@pytest.mark.parametrize("path", NOTEBOOKS)
def test_saved_as_a_fresh_top_to_bottom_run(path):
    cells = code_cells(load(path))
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1))
    errors = [o for c in cells for o in c.outputs if o.output_type == "error"]
    assert not errors, [f"{e.ename}: {e.evalue}" for e in errors]


@pytest.mark.parametrize("path", NOTEBOOKS)
def test_figures_are_png_never_svg(path):
    text = (REPO / path).read_text()
    assert "image/svg+xml" not in text
    assert sum("image/png" in mimes(c) for c in code_cells(load(path))) >= 4


@pytest.mark.parametrize("path", NOTEBOOKS)
def test_no_timings_or_memory_addresses_in_outputs(path):
    for cell in code_cells(load(path)):
        for out in cell.outputs:
            text = out.get("text", "") + out.get("data", {}).get("text/plain", "")
            assert " at 0x" not in text, cell.source
            assert "seconds" not in text and "it/s" not in text, cell.source


@pytest.mark.parametrize("path", NOTEBOOKS)
def test_every_widget_comes_with_a_static_figure(path):
    cells = code_cells(load(path))
    widget_cells = [i for i, c in enumerate(cells) if WIDGET_MIME in mimes(c)]
    assert widget_cells, "each of these notebooks has an interactive explorer"
    for i in widget_cells:
        assert "image/png" in mimes(cells[i - 1]), f"no static figure right before widget cell: {cells[i].source}"


@pytest.mark.parametrize("path", NOTEBOOKS)
def test_claims_are_checked(path):
    nb = load(path)
    asserts = sum(c.source.count("assert ") for c in code_cells(nb))
    assert asserts >= 10
    first = code_cells(nb)[0].source
    assert "import torch" in first and "from d2l import torch as d2l" in first


def test_notebook_03_keeps_the_lecture_code_verbatim():
    source = "\n".join(c.source for c in code_cells(load(NOTEBOOKS[1])))
    for line in [
        "x = torch.arange(-8.0, 8.0, 0.1, requires_grad=True)",
        "y = torch.relu(x)",
        "d2l.plot(x.detach(), y.detach(), 'x', 'relu(x)', figsize=(5, 2.5))",
        "y.backward(torch.ones_like(x), retain_graph=True)",
        "d2l.plot(x.detach(), x.grad, 'x', 'grad of relu', figsize=(5, 2.5))",
        "y = torch.sigmoid(x)",
        "d2l.plot(x.detach(), y.detach(), 'x', 'sigmoid(x)', figsize=(5, 2.5))",
        "d2l.plot(x.detach(), x.grad, 'x', 'grad of sigmoid', figsize=(5, 2.5))",
        "y = torch.tanh(x)",
        "d2l.plot(x.detach(), y.detach(), 'x', 'tanh(x)', figsize=(5, 2.5))",
        "d2l.plot(x.detach(), x.grad, 'x', 'grad of tanh', figsize=(5, 2.5))",
        "x.grad.data.zero_()",
    ]:
        assert line in source, line


# ---------------------------------------------------------------------------------------------------------------
# Lectures 01, 02, 03 and 05 (second edition): exercises, predictions, instructor solutions and the fixed statements.

LECTURES_E = ["notebooks/01_hidden_layers.ipynb", "notebooks/02_linearity_collapse.ipynb",
              "notebooks/03_activation_functions.ipynb", "notebooks/05_training_mlp.ipynb",
              "notebooks/05b_comparing_choices.ipynb"]


def markdown(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def numbered_items(text: str) -> list[int]:
    import re
    return [int(n) for n in re.findall(r"^(\d+)\. ", text, re.M)]


@pytest.mark.parametrize("path", LECTURES_E)
def test_ends_with_exercises_answered_in_instructor_solutions(path):
    nb = load(path)
    last = nb.cells[-1]
    assert last.cell_type == "markdown" and "## Exercises" in last.source, "the lecture must end with exercises"
    exercises = numbered_items(last.source.split("## Exercises", 1)[1])
    assert exercises == list(range(1, len(exercises) + 1)) and len(exercises) >= 3, exercises
    # A "predict, then run" prompt in the body, before the cell that answers it.
    body = [c for c in nb.cells[:-1] if c.cell_type == "markdown" and "*Predict first:*" in c.source]
    assert body, "no predict-first prompt in the body"
    for cell in body:
        following = nb.cells[nb.cells.index(cell) + 1]
        assert following.cell_type == "code", "a prediction prompt must sit right before the cell that answers it"
    solutions = REPO / "instructor" / "exercise_solutions" / (Path(path).stem + ".md")
    assert solutions.is_file(), f"{solutions} is missing"
    assert numbered_items(solutions.read_text()) == exercises, "one solution per exercise, same numbering"
    assert "solution" not in markdown(nb).lower(), "instructor material inside a student notebook"


def test_02_affine_subspace_least_squares_and_announced_adam():
    nb = load(NOTEBOOKS[0])
    text = markdown(nb)
    assert "2-dimensional subspace" not in text and "2-dimensional **affine** subspace" in text
    code = "\n".join(c.source for c in code_cells(nb))
    assert "torch.linalg.lstsq" in code and "distance to the best affine fit" in code
    first_adam_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "optim.Adam" in c.source)
    assert any("**Adam**" in c.source for c in nb.cells[:first_adam_code] if c.cell_type == "markdown")
    assert ".as_module()" in text  # the exercise that puts a coursekit activation into nn.Sequential


def test_03_leaves_vanishing_gradients_and_dead_units_to_06():
    nb = load(NOTEBOOKS[1])
    text = markdown(nb)
    assert "06_initialization" in text
    for gone in ("## Vanishing gradients", "## Dead ReLU units", "never change its weights again"):
        assert gone not in text
    assert "nn.init" not in "\n".join(c.source for c in code_cells(nb))  # no unexplained He initialisation
    assert len(nb.cells) <= 40


def test_05_loop_visible_d2l_argument_order_validation_and_one_test_evaluation():
    # 05 trains and inspects on the validation split; 05b compares over seeds, then looks at the test set once
    code, code_b = ("\n".join(c.source for c in code_cells(load(path))) for path in LECTURES_E[3:5])
    assert "def __init__(self, num_inputs, num_outputs, num_hiddens, lr, sigma=0.01):" in code
    for step in ("loss.backward()", "p -= model.lr * p.grad", "p.grad.zero_()", "torch.no_grad()"):
        assert step in code, step
    assert "val_size=10000" in code and "test_dataloader()" not in code
    assert "val_size=10000, split_seed=0" in code and "val_size=10000, split_seed=0" in code_b   # the same split
    assert code_b.count("test_dataloader()") == 1 and code_b.rstrip().endswith("assert test_acc >= 0.82")
    assert "optim.Adam" not in code + code_b and "nn.init" not in code + code_b
    assert code_b.count("SEEDS = (0, 1, 2)") == 1 and "paired_comparison(" in code_b  # compared seed by seed
