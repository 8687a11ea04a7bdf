"""The similarity report: planted near-copies rank at the top, independent correct solutions do not, and the
template's own code never counts as shared."""
import csv
import io
from pathlib import Path

import nbformat

import coursekit
from coursekit.grading.similarity import similarity_report, solution_code, write_similarity

REPO = Path(coursekit.__file__).resolve().parent.parent
TEMPLATE_CELLS = [c.source for c in nbformat.read(REPO / "lab" / "mlp_lab.ipynb", as_version=4).cells
                  if c.cell_type == "code"]

# Four students who solved the lab on their own, each in their own style.
ALICE = '''
def relu(x):
    return torch.where(x > 0, x, torch.zeros_like(x))


def sigmoid(x):
    z = torch.exp(-torch.abs(x))
    return torch.where(x >= 0, 1 / (1 + z), z / (1 + z))


def tanh(x):
    z = torch.exp(-2 * torch.abs(x))
    return torch.sign(x) * (1 - z) / (1 + z)


def relu_grad(x):
    return (x > 0).to(x.dtype)


def sigmoid_grad(x):
    s = sigmoid(x)
    return s * (1 - s)


def tanh_grad(x):
    t = tanh(x)
    return 1 - t * t


def collapse(W1, b1, W2, b2):
    return W1 @ W2, b1 @ W2 + b2


def train_mlp(model, data, num_epochs, lr):
    device = next(model.parameters()).device
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    losses = []
    for epoch in range(num_epochs):
        total, count = 0.0, 0
        for X, y in data.train_dataloader():
            X, y = X.to(device), y.to(device)
            loss = F.cross_entropy(model(X), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(y)
            count += len(y)
        losses.append(total / count)
    return losses
'''

BO = '''
def relu(x):
    out = x.clone()
    out[out < 0] = 0
    return out


def sigmoid(x):
    # split by sign so exp never sees a large positive number
    pos = x >= 0
    e = torch.exp(torch.where(pos, -x, x))
    return torch.where(pos, 1.0 / (1.0 + e), e / (1.0 + e))


def tanh(x):
    return 2.0 * sigmoid(2.0 * x) - 1.0


def relu_grad(x):
    return torch.heaviside(x, torch.tensor(0.0, dtype=x.dtype))


def sigmoid_grad(x):
    return sigmoid(x) - sigmoid(x) ** 2


def tanh_grad(x):
    return 1.0 - tanh(x) ** 2


def collapse(W1, b1, W2, b2):
    W = torch.matmul(W1, W2)
    b = torch.matmul(b1, W2) + b2
    return W, b


def train_mlp(model, data, num_epochs, lr):
    opt = torch.optim.SGD(model.parameters(), lr)
    history = []
    for _ in range(num_epochs):
        batch_losses = [0.0, 0]
        model.train()
        for inputs, labels in data.train_dataloader():
            opt.zero_grad()
            l = torch.nn.functional.cross_entropy(model(inputs), labels, reduction="sum")
            l.backward()
            opt.step()
            batch_losses[0] += float(l)
            batch_losses[1] += labels.numel()
        history.append(batch_losses[0] / batch_losses[1])
    return history
'''

CY = '''
import math


def relu(x):
    return x.clamp(min=0)


def sigmoid(x):
    return 0.5 * (1 + tanh(0.5 * x))


def tanh(x):
    a = torch.abs(x)
    e = torch.exp(-2 * a)
    mag = (1 - e) / (1 + e)
    return torch.copysign(mag, x)


def relu_grad(x):
    g = torch.zeros_like(x)
    g[x > 0] = 1
    return g


def sigmoid_grad(x):
    value = sigmoid(x)
    one = torch.ones_like(value)
    return value * (one - value)


def tanh_grad(x):
    return (1 - tanh(x)) * (1 + tanh(x))


def collapse(W1, b1, W2, b2):
    return torch.einsum("ij,jk->ik", W1, W2), torch.einsum("j,jk->k", b1, W2) + b2


def train_mlp(model, data, num_epochs, lr):
    loss_fn = nn.CrossEntropyLoss()
    params = list(model.parameters())
    means = []
    for ep in range(num_epochs):
        seen = 0
        running = 0.0
        for batch in data.train_dataloader():
            Xb, yb = batch
            for p in params:
                p.grad = None
            loss = loss_fn(model(Xb), yb)
            loss.backward()
            with torch.no_grad():
                for p in params:
                    p -= lr * p.grad
            running += loss.item() * yb.shape[0]
            seen += yb.shape[0]
        means.append(running / max(seen, 1))
    return means
'''

DEE = '''
def relu(x):
    return (x + torch.abs(x)) / 2


def sigmoid(x):
    safe = torch.clamp(x, -60, 60)
    return torch.reciprocal(1 + torch.exp(-safe))


def tanh(x):
    y = torch.clamp(x, -30, 30)
    p, m = torch.exp(y), torch.exp(-y)
    return (p - m) / (p + m)


def relu_grad(x):
    return torch.where(x > 0, torch.ones_like(x), torch.zeros_like(x))


def sigmoid_grad(x):
    s = sigmoid(x)
    return s - s * s


def tanh_grad(x):
    c = torch.cosh(torch.clamp(x, -30, 30))
    return 1 / (c * c)


def collapse(W1, b1, W2, b2):
    W = W1.mm(W2)
    return W, b1.unsqueeze(0).mm(W2).squeeze(0) + b2


def train_mlp(model, data, num_epochs, lr):
    trainer = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=0.0)
    result = []
    for epoch_index in range(num_epochs):
        losses_this_epoch = []
        sizes = []
        for features, targets in iter(data.train_dataloader()):
            logits = model(features)
            batch_loss = F.cross_entropy(logits, targets)
            trainer.zero_grad(set_to_none=True)
            batch_loss.backward()
            trainer.step()
            losses_this_epoch.append(batch_loss.detach() * len(targets))
            sizes.append(len(targets))
        result.append(float(sum(losses_this_epoch) / sum(sizes)))
    return result
'''


def _renamed_and_reordered(code: str) -> str:
    """Mallory's copy of Alice: every local name changed, the functions in another order, comments added."""
    for old, new in [("optimizer", "my_opt"), ("losses", "epoch_losses"), ("total", "loss_sum"),
                     ("count", "n_seen"), ("device", "where"), ("epoch", "ep"), ("z", "expo"), ("s", "sig"),
                     ("t", "th")]:
        code = __import__("re").sub(rf"\b{old}\b", new, code)
    blocks = [b for b in code.strip().split("\n\n\n")]
    blocks = blocks[::-1]
    return "\n\n\n".join(f"# my own work\n{b}" for b in blocks) + "\n"


def _notebook_cells(code: str) -> list[str]:
    """The template's cells, with the student's code in place of the TODO cells (as handed in)."""
    cells = [c for c in TEMPLATE_CELLS if not c.startswith("# TODO")]
    return cells[:3] + [code] + cells[3:]


def _codes() -> dict[str, str]:
    students = {"alice": ALICE, "bo": BO, "cy": CY, "dee": DEE, "mallory": _renamed_and_reordered(ALICE)}
    return {name: solution_code(_notebook_cells(code), TEMPLATE_CELLS) for name, code in students.items()}


def test_near_copies_rank_first_and_independent_solutions_do_not():
    pairs = similarity_report(_codes(), "\n\n".join(TEMPLATE_CELLS))
    assert len(pairs) == 10                                       # every pair of 5
    top = pairs[0]
    assert {top.a, top.b} == {"alice", "mallory"}, pairs[:3]
    assert top.similarity > 0.6
    independent = [p for p in pairs if {p.a, p.b} != {"alice", "mallory"}]
    assert max(p.similarity for p in independent) < 0.25, independent[:3]
    assert top.similarity > 2 * max(p.similarity for p in independent)


def test_the_template_never_counts_as_shared():
    """Two students who handed in the template untouched share nothing of their own."""
    untouched = solution_code(TEMPLATE_CELLS, TEMPLATE_CELLS)
    assert untouched.strip() == ""
    # students who kept the template's TODO cells (signatures, docstrings) around code of their own
    todo = [c for c in TEMPLATE_CELLS if c.startswith("# TODO")]
    handed_in = {"a": todo + ["x = 1"], "b": todo + ["y = [2, 3]"]}
    raw = similarity_report({k: "\n\n".join(v) for k, v in handed_in.items()})
    assert raw[0].similarity > 0.5               # what the template alone would make them share
    pairs = similarity_report({k: solution_code(v, TEMPLATE_CELLS) for k, v in handed_in.items()},
                              "\n\n".join(TEMPLATE_CELLS))
    assert pairs[0].similarity == 0 and pairs[0].shared_tokens == 0


def test_reports_are_written_ranked_and_safe_for_spreadsheets(tmp_path):
    written = {}
    codes = _codes()
    codes["=HYPERLINK(1)"] = codes.pop("dee")
    pairs = write_similarity(codes, "\n\n".join(TEMPLATE_CELLS), written.__setitem__,
                             sanitize=lambda cell: "'" + cell if cell[:1] in "=+-@" else cell)
    rows = list(csv.DictReader(io.StringIO(written["similarity.csv"])))
    assert len(rows) == len(pairs) == 10
    assert {rows[0]["student_a"], rows[0]["student_b"]} == {"alice", "mallory"}
    assert [float(r["similarity"]) for r in rows] == sorted((float(r["similarity"]) for r in rows), reverse=True)
    assert all(not cell.startswith("=") for r in rows for cell in r.values())
    page = written["similarity.html"]
    assert "mallory" in page and "alice" in page and "/tmp" not in page
    one = {}
    write_similarity({"solo": ALICE}, "", one.__setitem__)
    assert "nothing to compare" in one["similarity.html"] and one["similarity.csv"].count("\n") == 1
