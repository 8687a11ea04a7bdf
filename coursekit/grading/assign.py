"""One source, two outputs: the student notebook and the autograder, generated from the solution notebook.

The instructor edits only ``lab/source/mlp_lab_solution.ipynb``. In it:

* a markdown heading ``## Question N: Title (P points)`` starts question ``qN``;
* code between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` lines is the solution: the student notebook
  gets ``raise NotImplementedError("TODO: implement <function>")`` there instead (the ``def`` line, the
  docstring and any code outside the markers stay);
* code cells tagged ``public-tests`` define ``test_qN_*`` functions that ``check("qN")`` runs; they stay in
  the student notebook (collapsed, read-only);
* code cells tagged ``hidden-tests`` hold the autograder's tests (see :mod:`coursekit.grading.labspec`); they
  are removed from the student notebook and written to ``lab/autograder/hidden_tests.py``;
* code cells tagged ``grader-skip`` (the ``check("qN")`` self-checks, the training run) are cells whose effects
  the grade never uses: they stay in the student notebook (without the tag), and ``spec.json`` records their
  exact template source (``grader_skip``) with a *stand-in*, the cell's top-level literal assignments (e.g.
  ``LR = 0.1``). The grader runs the stand-in instead of a submitted cell whose source is still the template's
  (trailing whitespace aside); a cell the student edited runs as written.

Run ``python -m coursekit.grading.assign`` (or ``coursekit assign``) after editing the source. It writes

* ``lab/mlp_lab.ipynb``: the student notebook, executed once with its stubs, so that its committed outputs
  (the "not attempted yet" lines of each ``check``) are what a fresh run produces (nbval compares them);
* ``lab/autograder/hidden_tests.py`` and ``lab/autograder/spec.json`` (questions, points per hidden test).

The output is deterministic: fixed cell ids (the source's), sorted JSON, no timings, fixed metadata.
``--check`` regenerates into memory and fails if the committed files differ; ``--refresh-source`` re-runs
the solution notebook in place to refresh its outputs.
"""
from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

from coursekit.grading.labspec import normalized_source
from coursekit.paths import LAB as DEFAULT_OUT, LAB_SOURCE as DEFAULT_SOURCE

STUDENT_NAME = "mlp_lab.ipynb"
AUTOGRADER_DIR = "autograder"

BEGIN = re.compile(r"^(?P<indent>[ \t]*)### BEGIN SOLUTION[ \t]*$")
END = re.compile(r"^[ \t]*### END SOLUTION[ \t]*$")
HEADING = re.compile(r"^##\s+Question\s+(?P<number>\d+):\s*(?P<title>.+?)\s*\((?P<points>\d+)\s+points?\)\s*$",
                     re.MULTILINE)
TOTAL = re.compile(r"\*\*Total:\s*(?P<points>\d+)\s+points\.?\*\*")
DEFINITION = re.compile(r"^(?P<indent>[ \t]*)(?:async\s+)?(?P<kind>def|class)\s+(?P<name>\w+)")
PUBLIC_TAG, HIDDEN_TAG, SKIP_TAG = "public-tests", "hidden-tests", "grader-skip"
KEPT_CELL_METADATA = ("tags", "jupyter", "editable", "deletable")
NOTEBOOK_METADATA = {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
                     "language_info": {"name": "python"}}


class AssignError(ValueError):
    """The source notebook breaks a rule of the format above; the message says where."""


@dataclass(frozen=True)
class Question:
    name: str            # "q1"
    title: str
    points: int          # from the heading
    cell_ids: tuple      # the cells from this heading up to the next


def _tags(cell) -> list:
    return list(cell.get("metadata", {}).get("tags", []))


def read_source(path: str | Path = DEFAULT_SOURCE):
    path = Path(path)
    if not path.is_file():
        raise AssignError(f"the source notebook {path} does not exist")
    nb = nbformat.read(path, as_version=4)
    ids = [cell.get("id") for cell in nb.cells]
    if None in ids or len(set(ids)) != len(ids):
        raise AssignError(f"{path}: every cell needs its own id (nbformat 4.5) so that the output is stable")
    return nb


def questions(nb) -> list[Question]:
    """The questions, in order, from the ``## Question N: Title (P points)`` headings."""
    found, current = [], None
    for cell in nb.cells:
        match = HEADING.search(cell.source) if cell.cell_type == "markdown" else None
        if match:
            name = f"q{int(match['number'])}"
            if any(q["name"] == name for q in found):
                raise AssignError(f"question {name} has two headings")
            current = {"name": name, "title": match["title"], "points": int(match["points"]), "cells": []}
            found.append(current)
        if current is not None:
            current["cells"].append(cell.id)
    return [Question(q["name"], q["title"], q["points"], tuple(q["cells"])) for q in found]


def _enclosing_name(lines: list[str], index: int, indent: str) -> str:
    """'relu' or 'MLPScratch.forward': the def (and class) around line ``index``."""
    names, limit = [], len(indent)
    for line in reversed(lines[:index]):
        match = DEFINITION.match(line)
        if match and len(match["indent"]) < limit:
            names.append(match["name"])
            limit = len(match["indent"])
            if limit == 0:
                break
    return ".".join(reversed(names)) or "this cell"


def strip_solutions(source: str, where: str = "a cell") -> str:
    """Replace each ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` block by a ``NotImplementedError`` stub."""
    lines = source.split("\n")
    out, i = [], 0
    while i < len(lines):
        begin = BEGIN.match(lines[i])
        if END.match(lines[i]):
            raise AssignError(f"{where}, line {i + 1}: '### END SOLUTION' without a BEGIN before it")
        if not begin:
            out.append(lines[i])
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if END.match(lines[j]) or BEGIN.match(lines[j])), None)
        if end is None or BEGIN.match(lines[end]):
            raise AssignError(f"{where}, line {i + 1}: '### BEGIN SOLUTION' is not closed by '### END SOLUTION'")
        name = _enclosing_name(lines, i, begin["indent"])
        out.append(f'{begin["indent"]}raise NotImplementedError("TODO: implement {name}")')
        i = end + 1
    return "\n".join(out)


def _clean_cell(cell):
    cell = copy.deepcopy(cell)
    cell.metadata = {k: cell.metadata[k] for k in KEPT_CELL_METADATA if k in cell.metadata}
    if SKIP_TAG in cell.metadata.get("tags", []):      # the grader's business, not the student's
        cell.metadata["tags"] = [t for t in cell.metadata["tags"] if t != SKIP_TAG]
        if not cell.metadata["tags"]:
            del cell.metadata["tags"]
    if cell.cell_type == "code":
        cell.outputs = []
        cell.execution_count = None
    return cell


def student_notebook(source_nb, keep_solutions_for=()):
    """The student notebook (outputs cleared). ``keep_solutions_for``: question names whose solutions stay
    (used by the tests to build 'one question solved' notebooks)."""
    qs = questions(source_nb)
    owner = {cell_id: q.name for q in qs for cell_id in q.cell_ids}
    unknown = set(keep_solutions_for) - {q.name for q in qs}
    if unknown:
        raise AssignError(f"no such question(s): {sorted(unknown)}")
    nb = nbformat.v4.new_notebook()
    nb.nbformat_minor = 5
    nb.metadata = copy.deepcopy(NOTEBOOK_METADATA)
    for cell in source_nb.cells:
        if HIDDEN_TAG in _tags(cell):
            continue
        cell = _clean_cell(cell)
        if cell.cell_type == "code" and owner.get(cell.id) not in keep_solutions_for:
            cell.source = strip_solutions(cell.source, where=f"cell {cell.id!r}")
        elif cell.cell_type == "code":
            cell.source = "\n".join(line for line in cell.source.split("\n")
                                    if not (BEGIN.match(line) or END.match(line)))
        nb.cells.append(cell)
    return nb


def hidden_tests_source(source_nb) -> str:
    """The autograder's ``hidden_tests.py``: the hidden-test cells, in order, under a header."""
    parts = [cell.source.strip("\n") for cell in source_nb.cells if HIDDEN_TAG in _tags(cell)]
    if not parts:
        raise AssignError(f"the source has no cell tagged {HIDDEN_TAG!r}")
    header = ('"""Hidden tests of the MLP lab: GENERATED by `python -m coursekit.grading.assign` from\n'
              'lab/source/mlp_lab_solution.ipynb. Edit the source notebook, not this file."""\n')
    text = header + "\n\n\n".join(parts) + "\n"
    try:
        ast.parse(text)
    except SyntaxError as exc:
        raise AssignError(f"the hidden-test cells are not valid Python together: {exc}") from exc
    return text


def stand_in(source: str, where: str = "a cell") -> str:
    """What the grader runs instead of an unchanged ``grader-skip`` cell: its top-level assignments of literals
    to names (``LR = 0.1``), so that the names the harvest may read are what the notebook's run gives them."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise AssignError(f"{where} (tagged {SKIP_TAG!r}) is not valid Python: {exc}") from exc
    kept = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
            try:
                ast.literal_eval(node.value)
            except (ValueError, TypeError):
                continue
            kept.append(ast.get_source_segment(source, node))
    return "\n".join(kept) + ("\n" if kept else "")


def grader_skip_cells(source_nb) -> list[dict]:
    """``[{"id", "source", "stand_in"}]`` for each ``grader-skip`` code cell, source as in the student notebook."""
    cells = []
    for cell in source_nb.cells:
        if SKIP_TAG not in _tags(cell):
            continue
        where = f"cell {cell.id!r}"
        if cell.cell_type != "code" or HIDDEN_TAG in _tags(cell) or PUBLIC_TAG in _tags(cell):
            raise AssignError(f"{where}: only a plain code cell of the student notebook can be tagged {SKIP_TAG!r}")
        if "### BEGIN SOLUTION" in cell.source:
            raise AssignError(f"{where}: a cell tagged {SKIP_TAG!r} cannot hold a solution (the grader would skip it)")
        if any(DEFINITION.match(line) for line in cell.source.split("\n")):
            raise AssignError(f"{where}: a cell tagged {SKIP_TAG!r} cannot define functions or classes "
                              "(the grader would skip them)")
        cells.append({"id": cell.id, "source": normalized_source(cell.source),
                      "stand_in": stand_in(cell.source, where)})
    return cells


def source_digest(source_nb) -> str:
    """sha256 of the cells' types and sources (outputs do not count)."""
    content = json.dumps([[c.cell_type, c.source] for c in source_nb.cells], sort_keys=True)
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def spec_dict(source_nb, hidden_source: str) -> dict:
    """spec.json: the questions with the points of each hidden test; checked against the headings."""
    declared = {}
    for node in ast.parse(hidden_source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                and re.fullmatch(r"Q\d+", node.targets[0].id):
            try:
                value = ast.literal_eval(node.value)
            except ValueError as exc:
                raise AssignError(f"{node.targets[0].id} in the hidden tests must be a literal dict") from exc
            declared[value.get("name")] = value
    entries = []
    qs = questions(source_nb)
    if not qs:
        raise AssignError("the source has no '## Question N: Title (P points)' heading")
    for q in qs:
        d = declared.get(q.name)
        if d is None:
            raise AssignError(f"the hidden tests declare no Q{q.name[1:]} = {{'name': '{q.name}', ...}}")
        points = d.get("points")
        if not isinstance(points, dict) or not points or not all(isinstance(v, int) and v > 0 for v in points.values()):
            raise AssignError(f"Q{q.name[1:]}['points'] must map each hidden test to positive integer points")
        if sum(points.values()) != q.points:
            raise AssignError(f"question {q.name}: the heading says {q.points} points, its hidden tests add up "
                              f"to {sum(points.values())} ({points})")
        for prefix in ("inputs_", "harvest_", "score_"):
            if not re.search(rf"^def {prefix}{q.name}\(", hidden_source, re.MULTILINE):
                raise AssignError(f"the hidden tests of {q.name} need a function {prefix}{q.name}")
        if not any(PUBLIC_TAG in _tags(c) and f"def test_{q.name}_" in c.source for c in source_nb.cells):
            raise AssignError(f"question {q.name} has no public test (def test_{q.name}_... in a "
                              f"cell tagged {PUBLIC_TAG!r})")
        entries.append({"name": q.name, "title": q.title, "max_points": q.points,
                        "tests": [[test, pts] for test, pts in points.items()]})
    total = sum(e["max_points"] for e in entries)
    for cell in source_nb.cells:
        match = TOTAL.search(cell.source) if cell.cell_type == "markdown" else None
        if match and int(match["points"]) != total:
            raise AssignError(f"the notebook says 'Total: {match['points']} points' but the questions add up to {total}")
    return {"lab": "mlp_lab", "source": "lab/source/mlp_lab_solution.ipynb", "source_sha256": source_digest(source_nb),
            "questions": entries, "total": total, "grader_skip": grader_skip_cells(source_nb)}


def execute(nb, cwd: Path, timeout: int = 600):
    """Run every cell of ``nb`` in a fresh kernel in ``cwd`` and return it with outputs, ready to commit.

    Any error stops it: a generated or solution notebook must run from top to bottom.
    """
    from nbclient import NotebookClient
    from nbconvert.preprocessors import CoalesceStreamsPreprocessor
    nb = copy.deepcopy(nb)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=False, record_timing=False,
                            resources={"metadata": {"path": str(cwd)}})
    client.execute()
    # a cell's prints can come back in several stream chunks, more of them on a busy machine: merged, the
    # committed outputs do not depend on the load they were made under
    nb, _ = CoalesceStreamsPreprocessor().preprocess(nb, {})
    nb.metadata = copy.deepcopy(NOTEBOOK_METADATA)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    return nb


def _without_outputs(nb):
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def dumps(nb) -> str:
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


def generate(source: str | Path = DEFAULT_SOURCE, run: bool = True, cwd: str | Path = DEFAULT_OUT) -> dict[str, str]:
    """Everything ``assign`` writes, as ``{path relative to the lab folder: text}``.

    ``run``: execute the student notebook (in ``cwd``, where it will live) to record its outputs."""
    source_nb = read_source(source)
    hidden = hidden_tests_source(source_nb)
    spec = spec_dict(source_nb, hidden)
    student = student_notebook(source_nb)
    if run:
        student = execute(student, cwd=Path(cwd))
    return {STUDENT_NAME: dumps(student),
            f"{AUTOGRADER_DIR}/hidden_tests.py": hidden,
            f"{AUTOGRADER_DIR}/spec.json": json.dumps(spec, indent=1, sort_keys=True) + "\n"}


def refresh_source(source: str | Path = DEFAULT_SOURCE) -> None:
    """Re-run the solution notebook in place, so that its committed outputs are those of a fresh run."""
    source = Path(source)
    nb = execute(read_source(source), cwd=source.parent)
    source.write_text(dumps(nb), encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coursekit.grading.assign", description=__doc__.split("\n")[0])
    parser.add_argument("--source", default=str(DEFAULT_SOURCE), help="the solution notebook (default: %(default)s)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="the lab folder to write into (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the files there differ")
    parser.add_argument("--refresh-source", action="store_true", help="also re-run the source notebook in place")
    parser.add_argument("--no-run", action="store_true",
                        help="do not execute the student notebook (no outputs; with --check, outputs are not compared)")
    args = parser.parse_args(argv)
    try:
        if args.refresh_source and not args.check:
            refresh_source(args.source)
        files = generate(args.source, run=not args.no_run, cwd=args.out)
    except AssignError as exc:
        print(f"assign: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    stale = []
    for rel, text in files.items():
        path = out / rel
        if args.check:
            committed = path.read_text(encoding="utf-8") if path.is_file() else None
            if args.no_run and rel == STUDENT_NAME and committed is not None:
                committed = dumps(_without_outputs(nbformat.reads(committed, as_version=4)))
            if committed != text:
                stale.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    if stale:
        print("assign --check: these differ from a fresh regeneration (run `python -m coursekit.grading.assign`):\n  "
              + "\n  ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
