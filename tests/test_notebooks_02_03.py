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
